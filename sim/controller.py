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

    def __init__(self, model: mujoco.MjModel, site: str, dof_ids: np.ndarray, actuator_ids: np.ndarray,
                 home_qpos: np.ndarray, kp_pos: float = 600.0, kp_rot: float = 300.0, damping_ratio: float = 1.0,
                 kp_null: float = 10.0, singular_eps: float = 1e-4) -> None:
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
        ids = self.dof_ids
        # Arm dofs are normally contiguous: slicing is much cheaper than fancy indexing at 500 Hz.
        contiguous = len(ids) > 0 and np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids)))
        self._dofs = slice(int(ids[0]), int(ids[0]) + len(ids)) if contiguous else ids
        qids = self.qpos_ids
        contiguous = np.array_equal(qids, np.arange(qids[0], qids[0] + len(qids)))
        self._qpos = slice(int(qids[0]), int(qids[0]) + len(qids)) if contiguous else qids
        self._jac = np.zeros((6, nv))
        self._minv_jt = np.zeros((6, nv))
        self._t0 = np.zeros(nv)
        self._quat = np.zeros(4)
        self._rot_err = np.zeros(3)
        self._err_rot_world = np.zeros(3)
        self._err = np.zeros(6)
        self._wrench = np.zeros(6)

    def compute(self, data: mujoco.MjData, target_pos: np.ndarray, target_quat: np.ndarray) -> np.ndarray:
        """Joint torques (n,) in N m, clamped to the actuator limits, to move the site toward the target pose.

        Args:
            data: state after ``mj_step1`` (or ``mj_forward``): kinematics, ``qM`` factor and ``qfrc_bias`` current.
            target_pos: (3,) target site position, world frame (m).
            target_quat: (4,) target site orientation, unit quaternion (w, x, y, z), world frame.
        """
        m, jac, sid = self.model, self._jac, self.site_id
        mujoco.mj_jacSite(m, data, jac[:3], jac[3:], sid)
        mujoco.mj_solveM(m, data, self._minv_jt, jac)  # rows of M^-1 J^T, i.e. J M^-1 (M is symmetric)
        lam_inv = jac @ self._minv_jt.T + self.eps  # (6, 6) inverse task-space inertia
        mujoco.mju_cholFactor(lam_inv, 0.0)
        err = self._err
        err[:3] = target_pos - data.site_xpos[sid]
        mujoco.mju_mat2Quat(self._quat, data.site_xmat[sid])
        mujoco.mju_subQuat(self._rot_err, target_quat, self._quat)  # rotation error in the site frame
        mujoco.mju_rotVecQuat(self._err_rot_world, self._rot_err, self._quat)
        err[3:] = self._err_rot_world
        qd, t0, dofs = data.qvel, self._t0, self._dofs
        t0[dofs] = self.kp_null * (self.home_qpos - data.qpos[self._qpos]) - self.kd_null * qd[dofs]
        mujoco.mju_cholSolve(self._wrench, lam_inv, self.kp * err - self.kd * (jac @ qd) - self._minv_jt @ t0)
        tau = (jac.T @ self._wrench + t0 + data.qfrc_bias)[dofs]
        return np.minimum(np.maximum(tau, -self.torque_limit), self.torque_limit)
