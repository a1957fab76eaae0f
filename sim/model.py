"""Builds the MuJoCo Franka Panda scene with :class:`mujoco.MjSpec`.

The arm (kinematics, inertias, visual meshes) is the MuJoCo Menagerie Panda shipped inside the ``gym-hil`` wheel;
it is loaded read-only from site-packages and edited in memory:

* The Robotiq 2F-85 (a closed kinematic chain with equality constraints, a tendon and ~20 mesh collision geoms) is
  replaced by a simple Franka-Hand-like **parallel-jaw gripper built from primitives**: a box palm and two box
  fingers on independent prismatic joints, each driven by a force-limited position servo. This is ~4x cheaper to
  simulate than the Robotiq chain and grasps a 4-5 cm cube more robustly (flat, high-friction pads, no linkage slop).
* Arm-link collision meshes are deleted (the workspace box keeps the arm away from the table); only the palm,
  fingers, held tools and objects collide. No noslip, ``implicitfast`` integrator, timestep 2 ms.
* All sensors of the original file are removed (the env reads ``MjData`` directly).

Frames: the robot base is the world origin, the table top is the plane ``z = 0``. The ``tcp`` site lies between
the finger pads; its axes coincide with the base axes when the gripper points straight down (x forward, y left,
z up), so EE targets in that orientation are the identity rotation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mujoco
import numpy as np

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
ARM_ACTUATORS = tuple(f"actuator{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
FINGER_ACTUATORS = ("finger_left", "finger_right")
FINGER_MAX = 0.04  # m of travel per finger; opening = sum of both, 0..0.08 m
TCP_IN_HAND_Z = 0.1034  # m from the flange to the pad centres (as on the Franka Hand)
# Joint configuration with the gripper pointing down near the workspace centre (used as IK seed and posture).
HOME_QPOS = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def gym_hil_assets() -> Path:
    """Directory holding ``panda.xml`` and the Menagerie meshes inside the installed gym-hil wheel (no import)."""
    spec = importlib.util.find_spec("gym_hil")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("gym-hil is not installed; it ships the Franka Panda meshes (pip install gym-hil)")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets"
    if not (path / "panda.xml").exists():
        raise FileNotFoundError(f"{path}/panda.xml not found; is the gym-hil wheel complete?")
    return path


def _strip_robotiq(spec: mujoco.MjSpec, visual_meshes: str) -> None:
    """Delete the Robotiq gripper, its constraints/actuator and all sensors; make every arm mesh visual-only.

    ``visual_meshes="coarse"`` draws the arm with its convex collision meshes (~2k triangles, fast software
    rendering: ~126k fine triangles cost ~30 ms per 128 px frame on a CPU); ``"fine"`` keeps the detailed meshes.
    """
    for eq in list(spec.equalities):
        spec.delete(eq)
    for ten in list(spec.tendons):
        spec.delete(ten)
    for sen in list(spec.sensors):
        spec.delete(sen)
    for act in list(spec.actuators):
        if act.name not in ARM_ACTUATORS:
            spec.delete(act)
    for ex in list(spec.excludes):
        spec.delete(ex)
    spec.delete(spec.body("base_mount"))
    for cam in list(spec.cameras):
        spec.delete(cam)
    drop = "panda/visual" if visual_meshes == "coarse" else "panda/collision"
    for geom in list(spec.geoms):
        if geom.classname.name == drop:
            spec.delete(geom)
        elif geom.classname.name == "panda/collision":
            geom.contype, geom.conaffinity, geom.group = 0, 0, 2
            geom.material = "dark_grey" if geom.parent.name == "link7" else "white"
    used = {g.meshname for g in spec.geoms}
    for mesh in list(spec.meshes):  # unnamed meshes are named after their file at compile time
        if (mesh.name or Path(mesh.file).stem) not in used:
            spec.delete(mesh)


def _add_gripper(spec: mujoco.MjSpec, finger_force: float) -> mujoco.MjsBody:
    """Add the primitive parallel-jaw hand to the flange; return the hand body (z axis = approach direction)."""
    hand = spec.body("attachment").add_body(name="hand", quat=[0, 0, 0, 1])
    hand.add_geom(
        name="palm",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.02, 0.09, 0.025],
        pos=[0, 0, 0.028],
        rgba=[0.9, 0.9, 0.9, 1],
        mass=0.6,
        group=1,
    )
    hand.add_site(name="tcp", pos=[0, 0, TCP_IN_HAND_Z], quat=[0, 1, 0, 0], size=[0.004], group=4)
    # Wrist camera ahead of the palm, looking at the point just beyond the fingertips; image right = hand +y.
    hand.add_camera(name="wrist", pos=[0.06, 0, 0.02], fovy=70, xyaxes=[0, 1, 0, 0.878, 0, 0.479])
    hand.add_geom(
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.012, 0.012, 0.012],
        pos=[0.06, 0, 0.005],
        rgba=[0.15, 0.15, 0.15, 1],
        contype=0,
        conaffinity=0,
        group=2,
        mass=0,
    )
    for name, sign in zip(FINGER_JOINTS, (1.0, -1.0)):
        f = hand.add_body(name=name, pos=[0, 0, 0.053])
        f.add_joint(
            name=name,
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=[0, sign, 0],
            range=[0, FINGER_MAX],
            armature=0.01,
            damping=2.0,
        )
        f.add_geom(
            name=f"{name}_geom",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.011, 0.006, 0.029],
            pos=[0, sign * 0.006, 0.029],
            rgba=[0.25, 0.25, 0.25, 1],
            mass=0.03,
            condim=4,
            friction=[1.5, 0.02, 0.0005],
            solref=[0.005, 1],
            solimp=[0.95, 0.99, 0.001, 0.5, 2],
            priority=1,
        )
        act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=3000.0, kv=50.0)
        act.ctrlrange = [0, FINGER_MAX]
        act.forcerange = [-finger_force, finger_force]
    spec.add_exclude(bodyname1=FINGER_JOINTS[0], bodyname2=FINGER_JOINTS[1])
    return hand


def look_at(pos: np.ndarray, target: np.ndarray) -> list[float]:
    """Camera ``xyaxes`` (6,) for a camera at ``pos`` looking at ``target`` (m) with the image up roughly +z."""
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return [*right, *np.cross(right, fwd)]


TABLE_MATERIALS = ("table", "table_speckle", "table_tiles", "table_wood", "table_rubber")
"""Materials the table can be drawn with: the nominal checker first, then the variants visual randomisation
picks from. Only the first is used unless randomisation is on."""


def _procedural_texture(kind: str, size: int = 128) -> np.ndarray:
    """uint8 (size, size, 3) texture image, deterministic: ``"wood"`` (wavy brown grain) or ``"rubber"`` (smooth
    dark grey-blue blotches)."""
    rng = np.random.default_rng(7)
    u, v = np.meshgrid(np.linspace(0, 1, size, endpoint=False), np.linspace(0, 1, size, endpoint=False))
    # Periodic low-frequency noise (sum of a few random Fourier modes) keeps the texture seamless when repeated.
    noise = np.zeros_like(u)
    for _ in range(12):
        kx, ky = rng.integers(1, 5, 2)
        noise += np.sin(2 * np.pi * (kx * u + ky * v) + rng.uniform(0, 2 * np.pi)) / (kx + ky)
    noise = (noise - noise.min()) / np.ptp(noise)
    if kind == "wood":
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (6 * v + 1.5 * noise))
        fine = rng.uniform(-0.04, 0.04, u.shape)
        base = np.array([0.62, 0.45, 0.28])
        img = base * (0.75 + 0.25 * grain + fine)[..., None]
    elif kind == "rubber":
        img = np.array([0.20, 0.22, 0.27]) * (0.7 + 0.6 * noise)[..., None]
    else:
        raise ValueError(f"kind={kind!r} is invalid; choose one of ['wood', 'rubber']")
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _add_table_variants(spec: mujoco.MjSpec) -> None:
    """Add the alternative table materials of :data:`TABLE_MATERIALS` (unused by the nominal scene)."""
    tex2d, flat = mujoco.mjtTexture.mjTEXTURE_2D, mujoco.mjtBuiltin.mjBUILTIN_FLAT
    spec.add_texture(
        name="speckle",
        type=tex2d,
        builtin=flat,
        width=128,
        height=128,
        rgb1=[0.78, 0.77, 0.74],
        mark=mujoco.mjtMark.mjMARK_RANDOM,
        markrgb=[0.45, 0.45, 0.45],
        random=0.08,
    )
    spec.add_texture(
        name="tiles",
        type=tex2d,
        builtin=flat,
        width=64,
        height=64,
        rgb1=[0.85, 0.83, 0.8],
        mark=mujoco.mjtMark.mjMARK_EDGE,
        markrgb=[0.35, 0.35, 0.35],
    )
    for kind in ("wood", "rubber"):
        img = _procedural_texture(kind)
        spec.add_texture(
            name=kind, type=tex2d, width=img.shape[1], height=img.shape[0], nchannel=3, data=img.ravel().tolist()
        )
    repeat = {"speckle": 4, "tiles": 12, "wood": 2, "rubber": 3}  # texture repeats per metre of table (texuniform)
    for name, (tex, n) in zip(TABLE_MATERIALS[1:], repeat.items()):
        mat = spec.add_material(name=name, texrepeat=[n, n], texuniform=True)
        mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = tex


def build_panda_spec(finger_force: float = 30.0, visual_meshes: str = "coarse") -> mujoco.MjSpec:
    """Panda + primitive gripper on a table plane, with lights and the ``front`` camera; tasks add objects.

    Args:
        finger_force: maximum squeezing force of each finger servo (N).
        visual_meshes: "coarse" (fast to render) or "fine" (Menagerie visual meshes, ~15x slower to render).
    """
    if visual_meshes not in ("coarse", "fine"):
        raise ValueError(f"visual_meshes={visual_meshes!r} is invalid; choose one of ['coarse', 'fine']")
    spec = mujoco.MjSpec.from_file(str(gym_hil_assets() / "panda.xml"))
    spec.meshdir = str(gym_hil_assets())
    _strip_robotiq(spec, visual_meshes)
    _add_gripper(spec, finger_force)
    spec.option.timestep = 0.002
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.noslip_iterations = 0
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 5.0
    spec.stat.center = [0.4, 0, 0.2]
    spec.stat.extent = 0.8
    vis = spec.visual
    vis.headlight.ambient = [0.5, 0.5, 0.5]
    vis.headlight.diffuse = [0.5, 0.5, 0.5]
    vis.quality.shadowsize = 0
    vis.quality.offsamples = 0
    world = spec.worldbody
    spec.add_texture(
        name="grid",
        type=mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        width=256,
        height=256,
        rgb1=[0.55, 0.45, 0.35],
        rgb2=[0.5, 0.4, 0.3],
    )
    mat = spec.add_material(name="table", texrepeat=[8, 8], texuniform=True)
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "grid"
    # Collide with an (invisible) plane; draw a thin box instead: llvmpipe renders a plane as a fine grid of quads
    # (~8 ms per 128 px frame), a box as 12 triangles.
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.5, 1.5, 0.01], group=3)
    world.add_geom(
        name="table_visual",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.9, 0.9, 0.01],
        pos=[0.3, 0, -0.01],
        material="table",
        contype=0,
        conaffinity=0,
        group=2,
    )
    _add_table_variants(spec)
    world.add_light(name="overhead", pos=[0.4, 0, 2.0], dir=[0, 0, -1], diffuse=[0.6, 0.6, 0.6], castshadow=False)
    # Second light, off unless visual randomisation switches it on (see sim.randomize); an inactive light is
    # skipped by the renderer, so nominal images and rendering cost are those of the single-light scene.
    world.add_light(
        name="fill",
        type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
        pos=[0.4, 0, 1.5],
        dir=[0, 0, -1],
        diffuse=[0.3, 0.3, 0.3],
        castshadow=False,
        active=False,
    )
    # Front camera: in front of the robot and a little to its left, looking back at the workspace.
    world.add_camera(name="front", pos=[1.0, 0.3, 0.5], fovy=50, xyaxes=look_at([1.0, 0.3, 0.5], [0.47, 0, 0.17]))
    return spec


def add_box_body(
    parent: mujoco.MjsBody,
    name: str,
    half_size: float | tuple[float, float, float],
    rgba: tuple[float, float, float, float],
    *,
    free: bool = False,
    mocap: bool = False,
    mass: float = 0.1,
    collide: bool = True,
) -> mujoco.MjsBody:
    """Add a body with one box geom (``half_size`` in m), optionally with a free joint or as a mocap body."""
    hs = [half_size] * 3 if np.isscalar(half_size) else list(half_size)
    body = parent.add_body(name=name, mocap=mocap)
    if free:
        body.add_freejoint(name=name)
    body.add_geom(
        name=name,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=hs,
        rgba=list(rgba),
        mass=mass,
        contype=int(collide),
        conaffinity=int(collide),
        condim=4 if free else 3,
    )
    return body
