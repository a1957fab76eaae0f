"""Visual domain randomisation for the Panda tasks: lighting, colours and textures, camera pose and field of view.

At every ``reset()`` (when enabled) :class:`VisualRandomizer` first restores the nominal look, then writes freshly
sampled values into fields of the env's own ``mjModel`` copy that only the renderer reads: ``light_pos``,
``light_dir``, ``light_diffuse``, ``light_active``, ``vis.headlight``, ``geom_rgba``, ``geom_matid``, ``mat_rgba``,
``cam_pos``, ``cam_quat`` and ``cam_fovy``. Nothing is recompiled and no physics field is touched, so states and
dynamics are bit-identical with randomisation on or off, and rendering a step costs what it did.

Samples come from a generator derived from the env's ``np_random`` *without advancing it*
(:meth:`VisualRandomizer.randomize`): ``reset(seed=s)`` reproduces the same look, and the physics draws (start pose,
object placement, expert noise) are the same whether randomisation is on or off.

Configuration (``randomize`` env kwarg; ``configs/task/*.yaml`` document the same block)::

    randomize:
      enabled: false             # a mapping without this key counts as enabled; True = all defaults
      light:                     # `light: false` keeps the nominal lighting
        dir_deg: 25.0            # deg, max tilt of the overhead light away from its nominal (straight down)
        pos_cm: 20.0             # cm, max shift of the overhead light per axis
        diffuse: [0.35, 0.85]    # overhead light diffuse intensity, uniform in [lo, hi] (nominal 0.6)
        tint: 0.1                # max relative change per RGB channel of both lights (colour temperature)
        ambient: [0.3, 0.6]      # headlight ambient, i.e. the scene's ambient level (nominal 0.5)
        headlight: [0.3, 0.6]    # headlight diffuse intensity (nominal 0.5)
        fill_prob: 0.5           # probability of a second, directional light from a random side
        fill_diffuse: [0.1, 0.4] # its diffuse intensity
      color:                     # `color: false` keeps the nominal colours
        table: 0.2               # max change per RGB channel (0..1) of the table colour; clipped to [0, 1]
        robot: 0.1               # same for every robot part (links, hand, fingers)
        objects: 0.15            # same for task objects (cube, peg, block, goal marker)
        table_texture: true      # draw the table with one of sim.model.TABLE_MATERIALS (nominal included)
      camera:                    # per camera name; `front: false` keeps that camera nominal
        front: {pos_cm: 2.0, rot_deg: 2.0, fovy_deg: 2.0}
        wrist: {pos_cm: 0.5, rot_deg: 2.0, fovy_deg: 2.0}

Camera jitter: ``pos_cm`` is the max shift per axis in the camera's parent-body frame (world for ``front``, hand
for ``wrist``), ``rot_deg`` the max rotation about each of the camera's own axes (a rotation vector with uniform
components), ``fovy_deg`` the max change of the vertical field of view. Every range is sampled uniformly.
Values given override the defaults above key by key; unknown keys and out-of-range values raise ``ValueError``
naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from sim.model import TABLE_MATERIALS

DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "light": {
        "dir_deg": 25.0,
        "pos_cm": 20.0,
        "diffuse": (0.35, 0.85),
        "tint": 0.1,
        "ambient": (0.3, 0.6),
        "headlight": (0.3, 0.6),
        "fill_prob": 0.5,
        "fill_diffuse": (0.1, 0.4),
    },
    "color": {"table": 0.2, "robot": 0.1, "objects": 0.15, "table_texture": True},
    "camera": {
        "front": {"pos_cm": 2.0, "rot_deg": 2.0, "fovy_deg": 2.0},
        "wrist": {"pos_cm": 0.5, "rot_deg": 2.0, "fovy_deg": 2.0},
    },
}
# Valid range of every scalar, and of both ends of every [lo, hi] interval.
_BOUNDS: dict[str, tuple[float, float]] = {
    "light.dir_deg": (0.0, 60.0),
    "light.pos_cm": (0.0, 100.0),
    "light.diffuse": (0.0, 1.0),
    "light.tint": (0.0, 0.5),
    "light.ambient": (0.0, 1.0),
    "light.headlight": (0.0, 1.0),
    "light.fill_prob": (0.0, 1.0),
    "light.fill_diffuse": (0.0, 1.0),
    "color.table": (0.0, 1.0),
    "color.robot": (0.0, 1.0),
    "color.objects": (0.0, 1.0),
    "camera.pos_cm": (0.0, 10.0),
    "camera.rot_deg": (0.0, 15.0),
    "camera.fovy_deg": (0.0, 20.0),
}
_INTERVALS = ("diffuse", "ambient", "headlight", "fill_diffuse")
_WORKSPACE_CENTRE = np.array([0.45, 0.0, 0.1])  # m, point the fill light shines at
_FILL_DISTANCE = 1.5  # m from the workspace centre (only drawn in debug views: a directional light has no origin)
_FILL_ELEVATION_DEG = (20.0, 70.0)  # deg above the table plane


@dataclass(frozen=True)
class CameraJitter:
    """Pose and field-of-view jitter of one camera: max |shift| per axis (cm), max |rotation| about each camera
    axis (deg), max |change| of the vertical field of view (deg)."""

    pos_cm: float = 0.0
    rot_deg: float = 0.0
    fovy_deg: float = 0.0


@dataclass(frozen=True)
class RandomizeConfig:
    """Validated ``randomize`` block; see the module docstring for the meaning and units of every field.

    ``light`` / ``color`` are None when that part is switched off; ``cameras`` holds only jittered cameras.
    """

    enabled: bool = False
    light: dict[str, Any] | None = None
    color: dict[str, Any] | None = None
    cameras: dict[str, CameraJitter] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> RandomizeConfig:
        """Validate ``value`` (None / bool / mapping, as in a task config) into a config.

        Raises:
            ValueError: naming the offending key (``randomize.light.dir_deg`` ...) and the valid keys or range.
        """
        if value is None or value is False:
            return cls(enabled=False)
        if value is True:
            value = {"enabled": True}
        if not isinstance(value, Mapping):
            raise ValueError(
                f"randomize={value!r} is invalid; give true/false or a mapping with keys {sorted(DEFAULTS)}"
            )
        _check_keys("randomize", value, DEFAULTS)
        enabled = _check_bool("randomize.enabled", value.get("enabled", True))
        light = _section("light", value.get("light", {}))
        color = _section("color", value.get("color", {}))
        cameras: dict[str, CameraJitter] = {}
        cam_cfg = value.get("camera", {})
        if cam_cfg is False or cam_cfg is None:
            cam_cfg = {name: False for name in DEFAULTS["camera"]}
        if not isinstance(cam_cfg, Mapping):
            raise ValueError(
                f"randomize.camera={cam_cfg!r} must be false or a mapping camera name -> {{pos_cm, rot_deg, fovy_deg}}"
            )
        for name in {**DEFAULTS["camera"], **cam_cfg}:
            given = cam_cfg.get(name, {})
            if given is False or given is None:
                continue
            key = f"randomize.camera.{name}"
            if not isinstance(given, Mapping):
                raise ValueError(f"{key}={given!r} must be false or a mapping with keys [fovy_deg, pos_cm, rot_deg]")
            base = DEFAULTS["camera"].get(name, {"pos_cm": 0.0, "rot_deg": 0.0, "fovy_deg": 0.0})
            _check_keys(key, given, base)
            merged = {**base, **given}
            cameras[name] = CameraJitter(
                **{k: _check_number(f"{key}.{k}", v, *_BOUNDS[f"camera.{k}"]) for k, v in merged.items()}
            )
        return cls(enabled=enabled, light=light, color=color, cameras=cameras)


def _check_keys(where: str, given: Mapping, allowed: Mapping) -> None:
    unknown = sorted(str(k) for k in given if k not in allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(allowed)}")


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{key}={value!r} must be true or false")
    return bool(value)


def _check_number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{key}={value!r} must be a number in [{low}, {high}]")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r} must be a number in [{low}, {high}]") from None
    if not low <= v <= high:  # also rejects NaN
        raise ValueError(f"{key}={value!r} is out of range; valid range is [{low}, {high}]")
    return v


def _check_interval(key: str, value: Any, low: float, high: float) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{key}={value!r} must be an interval [lo, hi] inside [{low}, {high}]")
    lo, hi = (_check_number(key, v, low, high) for v in value)
    if lo > hi:
        raise ValueError(f"{key}={list(value)} must be [lo, hi] with lo <= hi")
    return lo, hi


def _section(name: str, given: Any) -> dict[str, Any] | None:
    """Validate the ``light`` or ``color`` section merged over its defaults; None when switched off."""
    key = f"randomize.{name}"
    if given is False or given is None:
        return None
    if not isinstance(given, Mapping):
        raise ValueError(f"{key}={given!r} must be false or a mapping with keys {sorted(DEFAULTS[name])}")
    _check_keys(key, given, DEFAULTS[name])
    out: dict[str, Any] = {}
    for k, v in {**DEFAULTS[name], **given}.items():
        if k == "table_texture":
            out[k] = _check_bool(f"{key}.{k}", v)
        elif k in _INTERVALS:
            out[k] = _check_interval(f"{key}.{k}", v, *_BOUNDS[f"{name}.{k}"])
        else:
            out[k] = _check_number(f"{key}.{k}", v, *_BOUNDS[f"{name}.{k}"])
    return out


def _perpendicular_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (3,) orthogonal to the unit vector ``d`` and to each other."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(d, e1)


def geom_groups(
    model: mujoco.MjModel, robot_root: str = "link0", object_geoms: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Visible geoms (geom group 0-2, what the cameras draw) split into ``table`` (world-body geoms), ``robot``
    (the arm's body tree) and ``objects`` (everything else, plus ``object_geoms``: tools attached to the robot,
    such as a held peg). Returns geom ids per group."""
    root = model.body(robot_root).id
    extra = {model.geom(name).id for name in object_geoms}
    groups: dict[str, list[int]] = {"table": [], "robot": [], "objects": []}
    for g in range(model.ngeom):
        if model.geom_group[g] > 2:
            continue
        body = model.geom_bodyid[g]
        if g in extra:
            groups["objects"].append(g)
        elif body == 0:
            groups["table"].append(g)
        elif model.body_rootid[body] == root:
            groups["robot"].append(g)
        else:
            groups["objects"].append(g)
    return {k: np.array(v, dtype=int) for k, v in groups.items()}


class VisualRandomizer:
    """Writes randomised visual parameters into ``model`` (the env's private copy) and restores the nominal ones.

    Args:
        model: compiled model with the ``overhead`` and ``fill`` lights of :func:`sim.model.build_panda_spec`;
            its current visual fields are taken as the nominal look.
        config: validated :class:`RandomizeConfig`.
        groups: geom ids per colour group (:func:`geom_groups`).

    Raises:
        ValueError: when ``config`` names a camera the model does not have.
    """

    _DEFAULT_RGBA = np.array([0.5, 0.5, 0.5, 1.0])  # geom rgba that lets the material colour through

    def __init__(self, model: mujoco.MjModel, config: RandomizeConfig, groups: Mapping[str, np.ndarray]):
        self.model, self.config = model, config
        m = model
        cam_names = [m.camera(i).name for i in range(m.ncam)]
        for name in config.cameras:
            if name not in cam_names:
                raise ValueError(f"randomize.camera.{name}: the model has no camera {name!r}; cameras are {cam_names}")
        self._nominal = {
            k: getattr(m, k).copy()
            for k in (
                "light_pos",
                "light_dir",
                "light_diffuse",
                "light_active",
                "geom_rgba",
                "geom_matid",
                "mat_rgba",
                "cam_pos",
                "cam_quat",
                "cam_fovy",
            )
        }
        self._head = (m.vis.headlight.ambient.copy(), m.vis.headlight.diffuse.copy())
        try:
            self._overhead, self._fill = m.light("overhead").id, m.light("fill").id
        except KeyError:
            raise ValueError(
                "randomize needs the 'overhead' and 'fill' lights that sim.model.build_panda_spec "
                "adds; this model lacks them"
            ) from None
        d = m.light_dir[self._overhead] / np.linalg.norm(m.light_dir[self._overhead])
        self._overhead_frame = np.stack([d, *_perpendicular_basis(d)])  # (3, 3): nominal direction, two normals
        # Cameras: ids and per-axis jitter amplitudes (m, rad, deg), one row per jittered camera.
        self._cam_ids = np.array([m.camera(n).id for n in config.cameras], dtype=int)
        self._cam_amp = np.array(
            [[j.pos_cm / 100, np.deg2rad(j.rot_deg), j.fovy_deg] for j in config.cameras.values()]
        ).reshape(-1, 3)
        # Table: geoms drawn with a table material can switch to any of the variants.
        self._table_mats = np.array([m.material(n).id for n in TABLE_MATERIALS])
        table = groups.get("table", np.zeros(0, int))
        self._table_geoms = table[np.isin(m.geom_matid[table], self._table_mats)]
        # Colour targets: a material used by a group's geoms, or the set of a group's geoms that share one colour
        # (the four walls of the block, the two fingers), so that parts that look alike stay alike.
        mat_targets: list[tuple[int, float]] = []  # (material id, jitter)
        geom_targets: list[tuple[list[int], float]] = []  # (geom ids, jitter)
        amounts = config.color or {}
        for name, geoms in groups.items():
            amount = float(amounts.get(name, 0.0))
            geoms = np.setdiff1d(geoms, self._table_geoms)
            uses_mat = (m.geom_matid[geoms] >= 0) & np.all(m.geom_rgba[geoms] == self._DEFAULT_RGBA, axis=1)
            mat_targets += [(int(i), amount) for i in np.unique(m.geom_matid[geoms[uses_mat]])]
            colours: dict[tuple, list[int]] = {}
            for g in geoms[~uses_mat]:
                colours.setdefault(tuple(m.geom_rgba[g]), []).append(int(g))
            geom_targets += [(ids, amount) for ids in colours.values()]
        self._mat_ids = np.array([i for i, _ in mat_targets], dtype=int)
        self._geom_ids = np.array([g for ids, _ in geom_targets for g in ids], dtype=int)
        self._geom_target = np.array([t for t, (ids, _) in enumerate(geom_targets) for _ in ids], dtype=int)
        self._target_amp = np.array([a for _, a in mat_targets] + [a for _, a in geom_targets])
        # Draws per reset are fixed by the config (never by earlier outcomes): 18 light, 4 + 3 per colour target,
        # 7 per camera.
        self._n_draws = 18 + 4 + 3 * len(self._target_amp) + 7 * len(self._cam_ids)
        self._derived_bits: np.random.BitGenerator | None = None  # reused by randomize(): no allocation per reset
        self._derived: np.random.Generator | None = None

    def randomize(self, np_random: np.random.Generator) -> None:
        """:meth:`apply` with a generator derived from the env's ``np_random``, which is left unchanged.

        The derived stream starts 2**127 draws ahead of ``np_random``'s current state (PCG64 and the other bit
        generators with ``advance``), far beyond anything an env draws, so it never overlaps the physics draws. The
        same ``reset(seed=s)`` therefore gives the same look, and the start pose, object placement and expert noise
        are the same with randomisation on or off.
        """
        bit_gen = np_random.bit_generator
        if not hasattr(bit_gen, "advance"):  # e.g. SFC64: seed from a clone of the state instead
            clone = type(bit_gen)()
            clone.state = bit_gen.state
            self.apply(np.random.default_rng([int(np.random.Generator(clone).integers(2**63)), 0x5649535541]))
            return
        if type(self._derived_bits) is not type(bit_gen):
            self._derived_bits = type(bit_gen)()
            self._derived = np.random.Generator(self._derived_bits)
        self._derived_bits.state = bit_gen.state  # a copy: advancing it leaves np_random alone
        self._derived_bits.advance(2**127)
        self.apply(self._derived)

    def restore(self) -> None:
        """Write the nominal visual parameters back (the look of an env without randomisation)."""
        m = self.model
        for k, v in self._nominal.items():
            np.copyto(getattr(m, k), v)
        m.vis.headlight.ambient, m.vis.headlight.diffuse = self._head

    def apply(self, rng: np.random.Generator) -> None:
        """Restore the nominal look, then sample a new one from ``rng``. ``mj_forward`` (or ``mj_kinematics``) must
        run afterwards so the data's camera and light poses follow the model. Costs ~0.15 ms on a slow CPU."""
        self.restore()
        if not self.config.enabled:
            return
        u = rng.random(self._n_draws)  # one call: uniform [0, 1) numbers consumed in a fixed order
        if self.config.light is not None:
            self._lights(u[:18], self.config.light)
        if self.config.color is not None:
            self._colours(u[18 : 22 + 3 * len(self._target_amp)], self.config.color)
        if len(self._cam_ids):
            self._cameras(u[self._n_draws - 7 * len(self._cam_ids) :].reshape(-1, 7))

    def _lights(self, u: np.ndarray, c: dict[str, Any]) -> None:
        """Overhead light pose, intensity and tint, headlight levels, optional fill light, from 18 uniforms."""
        m, i = self.model, self._overhead
        lerp = lambda lo_hi, x: lo_hi[0] + (lo_hi[1] - lo_hi[0]) * x  # noqa: E731
        m.light_pos[i] += (2 * u[0:3] - 1) * (c["pos_cm"] / 100)
        tilt, azimuth = np.deg2rad(c["dir_deg"]) * u[3], 2 * np.pi * u[4]
        m.light_dir[i] = (
            np.array([np.cos(tilt), np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth)])
            @ self._overhead_frame
        )
        tints = 1 + (2 * u[6:9] - 1) * c["tint"]
        m.light_diffuse[i] = np.minimum(lerp(c["diffuse"], u[5]) * tints, 1.0)
        m.vis.headlight.ambient = [lerp(c["ambient"], u[9])] * 3
        m.vis.headlight.diffuse = [lerp(c["headlight"], u[10])] * 3
        if u[11] < c["fill_prob"]:
            f = self._fill
            azimuth = 2 * np.pi * u[12]
            elevation = np.deg2rad(lerp(_FILL_ELEVATION_DEG, u[13]))
            towards = np.array(
                [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
            )
            m.light_active[f] = 1
            m.light_pos[f] = _WORKSPACE_CENTRE + _FILL_DISTANCE * towards
            m.light_dir[f] = -towards
            m.light_diffuse[f] = np.minimum(lerp(c["fill_diffuse"], u[14]) * (1 + (2 * u[15:18] - 1) * c["tint"]), 1.0)

    def _colours(self, u: np.ndarray, c: dict[str, Any]) -> None:
        """Table material (texture) and colour, then every colour target, from 4 + 3 per target uniforms."""
        m = self.model
        if len(self._table_geoms):
            if c["table_texture"]:
                mat = self._table_mats[min(int(u[0] * len(self._table_mats)), len(self._table_mats) - 1)]
                m.geom_matid[self._table_geoms] = mat
            else:
                mat = m.geom_matid[self._table_geoms[0]]
            m.mat_rgba[mat, :3] = np.clip(m.mat_rgba[mat, :3] + (2 * u[1:4] - 1) * c["table"], 0.0, 1.0)
        if len(self._target_amp):
            delta = (2 * u[4:].reshape(-1, 3) - 1) * self._target_amp[:, None]  # (targets, 3); alpha stays nominal
            n_mat = len(self._mat_ids)
            m.mat_rgba[self._mat_ids, :3] = np.clip(m.mat_rgba[self._mat_ids, :3] + delta[:n_mat], 0.0, 1.0)
            m.geom_rgba[self._geom_ids, :3] = np.clip(
                m.geom_rgba[self._geom_ids, :3] + delta[n_mat:][self._geom_target], 0.0, 1.0
            )

    def _cameras(self, u: np.ndarray) -> None:
        """Camera position, orientation (about the camera's own axes) and fovy, from 7 uniforms per camera."""
        m, ids, amp = self.model, self._cam_ids, self._cam_amp
        m.cam_pos[ids] += (2 * u[:, 0:3] - 1) * amp[:, :1]
        m.cam_fovy[ids] += (2 * u[:, 6] - 1) * amp[:, 2]
        rotvecs = (2 * u[:, 3:6] - 1) * amp[:, 1:2]  # (n, 3), rad, in each camera's frame
        for cam, rotvec in zip(ids, rotvecs):
            mujoco.mju_quatIntegrate(m.cam_quat[cam], rotvec, 1.0)  # cam_quat <- cam_quat * exp(rotvec), in place


__all__ = ["DEFAULTS", "CameraJitter", "RandomizeConfig", "VisualRandomizer", "geom_groups"]
