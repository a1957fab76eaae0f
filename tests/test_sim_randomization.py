"""Visual domain randomisation of the MuJoCo Panda tasks (sim/randomize.py): seeded looks, nominal images when off,
untouched physics, validated config, sampled values inside their ranges."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest

import sim  # noqa: F401  (registers the env ids, sets MUJOCO_GL before mujoco makes a context)
from robot_rl.envs.make import make_gym_env
from sim.model import TABLE_MATERIALS
from sim.panda_env import quat_to_rotvec
from sim.randomize import DEFAULTS, RandomizeConfig, geom_groups

TASKS = {"reach": "robot_rl/Reach-v0", "pick_cube": "robot_rl/PickCube-v0", "peg_insert": "robot_rl/PegInsert-v0"}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "task"
SIZE = 32  # px: enough to see every change, cheap to render
# Model fields randomisation may write; every other field must stay equal to the compiled model's.
VISUAL_FIELDS = {
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
}


def make(task: str, **kwargs):
    return make_gym_env(f"sim:{TASKS[task]}", **kwargs).unwrapped


def images(env, seed: int | None) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    return np.stack([obs["front"], obs["wrist"]])


@pytest.fixture(scope="module")
def pixel_envs():
    """One nominal and one randomised pick_cube env in pixels mode, shared by the image tests."""
    envs = {
        "off": make("pick_cube", obs_mode="pixels", image_size=SIZE),
        "on": make("pick_cube", obs_mode="pixels", image_size=SIZE, randomize=True),
    }
    yield envs
    for env in envs.values():
        env.close()


def test_same_seed_same_images_different_seeds_differ(pixel_envs):
    env = pixel_envs["on"]
    a, b = images(env, 3), images(env, 3)
    assert np.array_equal(a, b)
    others = [images(env, s) for s in (4, 5, 6)]
    for o in others:
        for cam in range(2):  # both cameras change, not just the table seen by one of them
            assert np.abs(o[cam].astype(int) - a[cam]).mean() > 2.0
    # Unseeded resets continue the seeded stream: a different look each time, reproduced by reseeding.
    env.reset(seed=9)
    seq1 = [images(env, None) for _ in range(2)]
    env.reset(seed=9)
    seq2 = [images(env, None) for _ in range(2)]
    assert np.array_equal(seq1[0], seq2[0]) and np.array_equal(seq1[1], seq2[1])
    assert not np.array_equal(seq1[0], seq1[1])


def test_off_gives_nominal_images(pixel_envs):
    off, on = pixel_envs["off"], pixel_envs["on"]
    assert off.visual_randomizer is None
    nominal = images(off, 2)
    assert not np.array_equal(images(on, 2), nominal)
    # The randomised env edits its own model copy: the nominal env still renders nominal images afterwards.
    assert on.model is not off.model
    assert np.array_equal(images(off, 2), nominal)
    # Restoring puts every visual field back: the randomised env then renders exactly the nominal images.
    on.reset(seed=2)
    on.visual_randomizer.restore()
    mujoco.mj_forward(on.model, on.data)
    restored = np.stack([on._render_camera(cam, SIZE) for cam in ("front", "wrist")])
    assert np.array_equal(restored, nominal)
    # A config given but disabled is off too.
    env = make("pick_cube", obs_mode="pixels", image_size=SIZE, randomize={"enabled": False, "light": {"tint": 0.3}})
    assert env.visual_randomizer is None and np.array_equal(images(env, 2), nominal)
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_physics_bit_identical_with_randomisation(task):
    envs = [make(task), make(task, randomize={"camera": {"front": {"pos_cm": 5.0}}})]
    actions = np.random.default_rng(1).uniform(-1, 1, (6, *envs[0].action_space.shape)).astype(np.float32)

    def rollout(env):
        out = []
        for seed in (11, None):  # the unseeded reset checks that the env's random stream was not advanced
            obs, info = env.reset(seed=seed)
            out += [obs["state"], info]
            for a in actions:
                out += list(env.step(a))
            for _ in range(3):  # the noisy expert draws from a generator seeded at reset
                out += list(env.step(env.expert_action(noise=0.3)))
        return out, env.data.qpos.copy(), env.data.qvel.copy(), env.data.qacc.copy()

    (a, *sa), (b, *sb) = rollout(envs[0]), rollout(envs[1])
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, dict):  # observation or info
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        else:
            assert np.array_equal(x, y)
    for x, y in zip(sa, sb):
        assert np.array_equal(x, y)
    # Only visual model fields differ from the shared compiled model.
    ref, rnd = envs[0].model, envs[1].model
    changed = {
        k
        for k in dir(ref)
        if not k.startswith("_")
        and isinstance(getattr(ref, k), np.ndarray)
        and not np.array_equal(getattr(ref, k), getattr(rnd, k))
    }
    assert changed and changed <= VISUAL_FIELDS, changed - VISUAL_FIELDS


def test_sampled_values_stay_in_range():
    cfg = {
        "light": {
            "dir_deg": 30.0,
            "pos_cm": 10.0,
            "diffuse": [0.2, 0.5],
            "tint": 0.2,
            "ambient": [0.1, 0.3],
            "headlight": [0.4, 0.45],
            "fill_prob": 0.5,
            "fill_diffuse": [0.2, 0.3],
        },
        "color": {"table": 0.3, "robot": 0.05, "objects": 0.4},
        "camera": {"front": {"pos_cm": 3.0, "rot_deg": 4.0, "fovy_deg": 5.0}, "wrist": {"pos_cm": 1.0}},
    }
    env = make("peg_insert", randomize=cfg)  # state mode: no rendering needed to inspect the model
    m, nom = env.model, env.visual_randomizer._nominal
    over, fill = m.light("overhead").id, m.light("fill").id
    front, wrist = m.camera("front").id, m.camera("wrist").id
    table_mats = {m.material(n).id for n in TABLE_MATERIALS}
    groups = geom_groups(m, object_geoms=("peg",))
    assert m.geom("peg").id in groups["objects"] and m.geom("palm").id in groups["robot"]
    seen = {"cam": [], "rot": [], "fovy": [], "tilt": [], "fill": [], "mats": set()}
    for seed in range(40):
        env.reset(seed=seed)
        # Cameras: shift per axis (m), rotation about the camera's own axes (rad), fovy (deg).
        for cam, pos_cm, rot_deg, fovy_deg in ((front, 3.0, 4.0, 5.0), (wrist, 1.0, 2.0, 2.0)):
            shift = m.cam_pos[cam] - nom["cam_pos"][cam]
            rel = np.zeros(4)
            mujoco.mju_mulQuat(rel, np.array([1.0, -1, -1, -1]) * nom["cam_quat"][cam], m.cam_quat[cam])
            rot = np.rad2deg(quat_to_rotvec(rel))
            dfovy = m.cam_fovy[cam] - nom["cam_fovy"][cam]
            assert np.all(np.abs(shift) <= pos_cm / 100 + 1e-12) and np.all(np.abs(rot) <= rot_deg + 1e-9)
            assert abs(dfovy) <= fovy_deg + 1e-9
            if cam == front:
                seen["cam"].append(np.abs(shift).max() / 0.03)
                seen["rot"].append(np.abs(rot).max() / 4.0)
                seen["fovy"].append(abs(dfovy) / 5.0)
        # Lights.
        d = m.light_dir[over] / np.linalg.norm(m.light_dir[over])
        tilt = np.rad2deg(np.arccos(np.clip(-d[2], -1, 1)))  # nominal: straight down
        seen["tilt"].append(tilt / 30.0)
        assert tilt <= 30.0 + 1e-9 and np.all(np.abs(m.light_pos[over] - nom["light_pos"][over]) <= 0.1 + 1e-12)
        assert np.all(m.light_diffuse[over] >= 0.2 * 0.8 - 1e-6) and np.all(m.light_diffuse[over] <= 0.5 * 1.2 + 1e-6)
        assert 0.1 <= m.vis.headlight.ambient[0] <= 0.3 and 0.4 <= m.vis.headlight.diffuse[0] <= 0.45
        seen["fill"].append(bool(m.light_active[fill]))
        if m.light_active[fill]:
            assert np.all(m.light_diffuse[fill] <= 0.3 * 1.2 + 1e-6) and np.all(m.light_diffuse[fill] >= 0.16 - 1e-6)
            assert m.light_dir[fill][2] < 0, "the fill light shines down onto the table"
        # Colours: RGB within the jitter of each group, alpha untouched, table material from the variants.
        for geoms, amount in ((groups["robot"], 0.05), (groups["objects"], 0.4)):
            for g in geoms:
                mat = m.geom_matid[g]
                now, was = (
                    (m.mat_rgba[mat], nom["mat_rgba"][mat]) if mat >= 0 else (m.geom_rgba[g], nom["geom_rgba"][g])
                )
                assert np.all(np.abs(now[:3] - was[:3]) <= amount + 1e-6) and now[3] == was[3]
        table = m.geom("table_visual").id
        assert m.geom_matid[table] in table_mats
        seen["mats"].add(int(m.geom_matid[table]))
        walls = m.geom_rgba[[m.geom(f"block_wall{i}").id for i in range(4)]]
        assert np.all(walls == walls[0]), "the block's walls share one colour"
    # The ranges are used, not just respected.
    for key in ("cam", "rot", "fovy", "tilt"):
        assert max(seen[key]) > 0.6, key
    assert 5 <= sum(seen["fill"]) <= 35 and len(seen["mats"]) >= 4
    env.close()


def test_switched_off_parts_stay_nominal():
    env = make("reach", randomize={"light": False, "color": False, "camera": {"wrist": False}})
    env.reset(seed=0)
    m, nom = env.model, env.visual_randomizer._nominal
    for k in ("light_pos", "light_dir", "light_diffuse", "light_active", "geom_rgba", "geom_matid", "mat_rgba"):
        assert np.array_equal(getattr(m, k), nom[k]), k
    wrist, front = m.camera("wrist").id, m.camera("front").id
    assert np.array_equal(m.cam_pos[wrist], nom["cam_pos"][wrist])
    assert not np.array_equal(m.cam_pos[front], nom["cam_pos"][front])


@pytest.mark.parametrize(
    "cfg,match",
    [
        ("yes", r"randomize='yes' is invalid"),
        ({"enabeld": True}, r"randomize: unknown key\(s\) \['enabeld'\]"),
        ({"enabled": "true"}, r"randomize.enabled='true' must be true or false"),
        ({"light": {"dir": 10}}, r"randomize.light: unknown key\(s\) \['dir'\].*dir_deg"),
        ({"light": {"dir_deg": 90}}, r"randomize.light.dir_deg=90 is out of range; valid range is \[0.0, 60.0\]"),
        ({"light": {"diffuse": [0.8, 0.2]}}, r"randomize.light.diffuse=\[0.8, 0.2\] must be \[lo, hi\] with lo <= hi"),
        ({"light": {"ambient": 0.5}}, r"randomize.light.ambient=0.5 must be an interval"),
        ({"light": {"fill_prob": float("nan")}}, r"randomize.light.fill_prob=nan is out of range"),
        ({"color": {"table": -0.1}}, r"randomize.color.table=-0.1 is out of range"),
        ({"color": {"table_texture": 1}}, r"randomize.color.table_texture=1 must be true or false"),
        ({"color": {"floor": 0.1}}, r"randomize.color: unknown key\(s\) \['floor'\]"),
        (
            {"camera": {"front": {"pos_cm": 50}}},
            r"randomize.camera.front.pos_cm=50 is out of range; valid range is "
            r"\[0.0, 10.0\]",
        ),
        ({"camera": {"front": {"pos": 1}}}, r"randomize.camera.front: unknown key\(s\) \['pos'\]"),
        ({"camera": {"side": {"pos_cm": 1}}}, r"randomize.camera.side: the model has no camera 'side'"),
        ({"camera": "front"}, r"randomize.camera='front' must be false or a mapping"),
    ],
)
def test_bad_config_raises_clear_error(cfg, match):
    with pytest.raises(ValueError, match=match):
        make("pick_cube", randomize=cfg)


@pytest.mark.parametrize("task", TASKS)
def test_task_configs_document_the_defaults(task):
    omegaconf = pytest.importorskip("omegaconf")
    block = omegaconf.OmegaConf.to_container(omegaconf.OmegaConf.load(CONFIG_DIR / f"{task}.yaml"))
    block = block["env_kwargs"]["randomize"]
    assert block["enabled"] is False
    assert RandomizeConfig.parse(block) == RandomizeConfig.parse({**DEFAULTS, "enabled": False})
    assert RandomizeConfig.parse({**block, "enabled": True}) == RandomizeConfig.parse(True)
