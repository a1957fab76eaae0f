"""Operational-space (Cartesian impedance) controller for the simulated Panda.

Every physics substep it maps an end-effector pose target to joint torques:

    F   = Lambda (Kp e - Kd J qd)                       task-space force with decoupled unit-mass dynamics
    t0  = Kn (q_home - q) - Dn qd                        nullspace posture torque
    tau = J^T (F - Lambda J M^-1 t0) + t0 + c(q, qd)     = J^T F + N^T t0 + gravity/Coriolis compensation

with ``Lambda = (J M^-1 J^T)^-1`` the task-space inertia and ``N^T = I - J^T Lambda J M^-1`` the dynamically
consistent nullspace projector (evaluated as a matrix-vector product, never formed). Torques are clamped to the
actuator limits. Call :meth:`OpSpaceController.compute` between ``mj_step1`` and ``mj_step2`` so it sees the
current kinematics, mass matrix and bias forces.
"""

from __future__ import annotations

import mujoco
import numpy as np


class OpSpaceController:
    """Tracks a site's position (m, world frame) and orientation (unit quaternion wxyz) with joint torques.

    Args:
        model: compiled model; ``dof_ids`` and ``actuator_ids`` index the arm joints and their torque motors.
        site: name of the controlled site (the TCP).
        home_qpos: (n,) nullspace posture target (rad).
        kp_pos: translational stiffness (1/s^2, acts on unit-mass decoupled dynamics).
        kp_rot: rotational stiffness (1/s^2).
        damping_ratio: task-space damping ratio (1 = critical).
        kp_null: nullspace posture stiffness (N m / rad); damping is critical for unit inertia.
        singular_eps: regulariser added to ``J M^-1 J^T`` before inversion.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site: str,
        dof_ids: np.ndarray,
        actuator_ids: np.ndarray,
        home_qpos: np.ndarray,
        kp_pos: float = 600.0,
        kp_rot: float = 300.0,
        damping_ratio: float = 1.0,
        kp_null: float = 10.0,
        singular_eps: float = 1e-4,
    ) -> None:
        for name, val in (("kp_pos", kp_pos), ("kp_rot", kp_rot), ("damping_ratio", damping_ratio)):
            if not val > 0:
                raise ValueError(f"{name}={val} must be > 0")
        self.model = model
        self.site_id = model.site(site).id
        self.dof_ids = np.asarray(dof_ids)
        self.qpos_ids = model.jnt_qposadr[model.dof_jntid[self.dof_ids]]
        self.actuator_ids = np.asarray(actuator_ids)
        self.home_qpos = np.asarray(home_qpos, dtype=np.float64).copy()
        self.kp = np.array([kp_pos] * 3 + [kp_rot] * 3)
        self.kd = 2.0 * damping_ratio * np.sqrt(self.kp)
        self.kp_null, self.kd_null = kp_null, 2.0 * np.sqrt(kp_null)
        self.eps = singular_eps * np.eye(6)
        self.torque_limit = model.actuator_ctrlrange[self.actuator_ids, 1].copy()
        nv = model.nv
        # Slices (views) are much cheaper than fancy indexing at 500 Hz: require contiguous arm dofs (a serial arm).
        for name, ids in (("dof_ids", self.dof_ids), ("qpos ids", self.qpos_ids)):
            if len(ids) == 0 or not np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
                raise ValueError(f"arm {name} {list(ids)} must be contiguous")
        self._dofs = slice(int(self.dof_ids[0]), int(self.dof_ids[0]) + len(self.dof_ids))
        self._qpos = slice(int(self.qpos_ids[0]), int(self.qpos_ids[0]) + len(self.qpos_ids))
        self._jac = np.zeros((6, nv))
        self._minv_jt = np.zeros((6, nv))
        self._t0 = np.zeros(nv)
        self._quat = np.zeros(4)
        self._rot_err = np.zeros(3)
        self._err = np.zeros(6)
        self._err_pos, self._err_rot = self._err[:3], self._err[3:]
        self._wrench = np.zeros(6)
        self._jacp, self._jacr = self._jac[:3], self._jac[3:]
        self._jac_arm_t = self._jac[:, self._dofs].T  # view
        self._neg_limit = -self.torque_limit
        self._bound: mujoco.MjData | None = None

    def compute(self, data: mujoco.MjData, target_pos: np.ndarray, target_quat: np.ndarray) -> np.ndarray:
        """Joint torques (n,) in N m, clamped to the actuator limits, to move the site toward the target pose.

        Args:
            data: state after ``mj_step1`` (or ``mj_forward``): kinematics, ``qM`` factor and ``qfrc_bias`` current.
            target_pos: (3,) target site position, world frame (m).
            target_quat: (4,) target site orientation, unit quaternion (w, x, y, z), world frame.
        """
        if data is not self._bound:
            self._bind(data)
        m, jac, minv_jt, err = self.model, self._jac, self._minv_jt, self._err
        mujoco.mj_jacSite(m, data, self._jacp, self._jacr, self.site_id)
        mujoco.mj_solveM(m, data, minv_jt, jac)  # rows of M^-1 J^T, i.e. J M^-1 (M is symmetric)
        lam_inv = jac @ minv_jt.T  # (6, 6) inverse task-space inertia
        lam_inv += self.eps
        mujoco.mju_cholFactor(lam_inv, 0.0)
        np.subtract(target_pos, self._xpos, out=self._err_pos)
        mujoco.mju_mat2Quat(self._quat, self._xmat)
        mujoco.mju_subQuat(self._rot_err, target_quat, self._quat)  # rotation error in the site frame
        mujoco.mju_rotVecQuat(self._err_rot, self._rot_err, self._quat)  # ... in the world frame
        t0 = self.kp_null * (self.home_qpos - self._q) - self.kd_null * self._qd
        self._t0[self._dofs] = t0
        mujoco.mju_cholSolve(self._wrench, lam_inv, self.kp * err - self.kd * (jac @ self._qvel) - minv_jt @ self._t0)
        tau = self._jac_arm_t @ self._wrench + t0 + self._bias
        return np.minimum(np.maximum(tau, self._neg_limit), self.torque_limit)

    def _bind(self, data: mujoco.MjData) -> None:
        """Cache views into ``data`` (MjData buffers never move), saving ~10 us of lookups per call."""
        self._bound = data
        self._xpos, self._xmat = data.site_xpos[self.site_id], data.site_xmat[self.site_id]
        self._q, self._qvel = data.qpos[self._qpos], data.qvel
        self._qd, self._bias = data.qvel[self._dofs], data.qfrc_bias[self._dofs]
