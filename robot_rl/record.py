"""``robot-rl record``: record demonstrations from a teleop device (or the scripted expert) into an episode store.

One episode: reset the env, wait for the operator's start mark (the scripted expert starts at once), then each
control step read the device, execute its action and keep the transition, until the env terminates or truncates or
the operator marks success, failure or discard. Human devices are paced at the env's control rate, and their
episodes get 10x the task's time limit unless ``max_episode_steps`` says otherwise (the task's limit is tuned to the
expert); the scripted expert runs as fast as the env steps. A discarded episode is dropped and re-recorded; a failed
one is kept only with ``keep_failures`` (negatives for a reward classifier). Success is the operator's mark when
given, else whether the env reported ``info["success"]`` during the episode.

An episode the operator ends by a mark has its last step marked ``terminated`` (success: the task is done, and its
reward becomes ``success_reward``) or ``truncated`` (failure: stopped by hand, so value targets bootstrap). Each
episode's notes hold a JSON object: reset ``seed``, ``device``, ``end`` (env_terminated, env_truncated,
operator_success, operator_failure), ``env_success`` and ``late_steps`` (control periods overrun).

Episodes reach the store whole or not at all (``robot_rl/data/store.py``): Ctrl+C stops cleanly with every completed
episode kept and the one in progress dropped (exit status 130), and even a SIGKILL leaves only whole episodes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_rl.collect import Collected, Collector, Pacer
from robot_rl.data.store import EpisodeStore, StoreError, StoreSchema
from robot_rl.envs.contract import ACTION_SEMANTICS, image_keys
from robot_rl.envs.make import control_dt, make_env
from robot_rl.hil.devices import DeviceError, TeleopDevice, make_device
from robot_rl.utils.signals import signals_deferred

# Same text as the trainer writes into its demo stores, so both kinds of store compare equal.
VIEW_MODES = ("auto", "on", "off")
EXIT_INTERRUPTED = 130
HUMAN_TIME_LIMIT_FACTOR = 10  # default time limit for a human operator: this many times the task's own


class RecordError(ValueError):
    """A setting, the store or the device rules the recording out; the message says what to change."""


def run_record(cfg: DictConfig) -> int:
    """Record ``cfg.episodes`` episodes of ``cfg.task`` with ``cfg.teleop`` into the store at ``cfg.out``.

    Returns the exit status: 0 done (or the operator quit), 1 ``max_attempts`` reached or the device failed
    mid-recording (completed episodes kept), 130 Ctrl+C. Bad settings, a store of another schema and an unusable
    device raise :class:`RecordError` (a ValueError: the CLI prints its one line and exits with status 2).
    """
    opts = _check(cfg)
    dev_cfg = (
        OmegaConf.to_container(cfg.teleop, resolve=True)
        if isinstance(cfg.teleop, DictConfig)
        else {"name": str(cfg.teleop)}
    )
    dev_name = str(dev_cfg.pop("name", "keyboard"))
    human = dev_name != "scripted"
    want_view = _view_possible(opts["view"])
    limit, task_limit = opts["max_episode_steps"], (cfg.task.get("env_kwargs") or {}).get("max_episode_steps")
    if limit is None and human and isinstance(task_limit, int):
        limit = HUMAN_TIME_LIMIT_FACTOR * task_limit  # a person needs longer than the expert the limit is set for
    env = _make_env(cfg.task, render=want_view and human, **({} if limit is None else {"max_episode_steps": limit}))
    store = device = view = None
    try:
        store = _open_store(Path(opts["out"]), env, cfg)
        try:
            device = make_device(dev_name, env, **dev_cfg)
        except (DeviceError, ValueError) as e:
            raise RecordError(str(e)) from None
        view = _make_view(opts["view"], want_view, env, human)
        real_time = human if opts["real_time"] is None else opts["real_time"]
        max_attempts = opts["max_attempts"] or (None if human else 3 * opts["episodes"] + 10)
        rec = Recorder(
            env,
            device,
            store,
            task=str(cfg.task.name),
            episodes=opts["episodes"],
            seed=_next_seed(store, opts["seed"]),
            keep_failures=opts["keep_failures"],
            success_reward=opts["success_reward"],
            real_time=real_time,
            max_attempts=max_attempts,
            view=view,
        )
        try:
            status = rec.run()
        except KeyboardInterrupt:
            rec.close_progress()
            print("\ninterrupted: the episode in progress was dropped, every completed one is kept")
            rec.print_summary()
            return EXIT_INTERRUPTED
        except DeviceError as e:  # e.g. unplugged mid-episode: that episode is lost, the completed ones are kept
            rec.close_progress()
            print(f"robot-rl: error: {e}", file=sys.stderr)
            rec.print_summary()
            return 1
        rec.print_summary()
        if status == "gave_up":
            print(
                f"robot-rl: error: gave up after {rec.attempts} attempted episodes with only {rec.kept} kept "
                f"(max_attempts={max_attempts}; does the expert solve this task?)",
                file=sys.stderr,
            )
            return 1
        return 0
    except KeyboardInterrupt:  # during setup (e.g. opening a device)
        print("\ninterrupted before recording started")
        return EXIT_INTERRUPTED
    finally:
        for thing in (view, device, store, env):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()


def _check(cfg: DictConfig) -> dict[str, Any]:
    """The validated top-level settings; raises :class:`RecordError` with one line naming the bad key."""

    def integer(key: str, low: int | None) -> int:
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or (low is not None and v < low):
            raise RecordError(f"{key}={v!r} must be an integer" + (f" >= {low}" if low is not None else ""))
        return v

    def flag(key: str, allow_none: bool = False) -> bool | None:
        v = cfg.get(key)
        if v is None and allow_none:
            return None
        if not isinstance(v, bool):
            raise RecordError(f"{key}={v!r} must be true or false" + (" (or null)" if allow_none else ""))
        return v

    out = cfg.get("out")
    if not out or not str(out).strip():
        raise RecordError("out= must name the episode store to write, e.g. out=demos.zarr")
    view = cfg.get("view", "auto")
    view = {True: "on", False: "off"}[view] if isinstance(view, bool) else str(view).lower()  # YAML on/off
    if view not in VIEW_MODES:
        raise RecordError(f"view={cfg.get('view')!r} must be one of {', '.join(VIEW_MODES)}")
    reward = cfg.get("success_reward")
    if reward is not None and (
        isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward)
    ):
        raise RecordError(f"success_reward={reward!r} must be a finite number or null")
    attempts = None if cfg.get("max_attempts") is None else integer("max_attempts", 1)
    limit = None if cfg.get("max_episode_steps") is None else integer("max_episode_steps", 1)
    return {
        "out": str(out),
        "view": view,
        "episodes": integer("episodes", 1),
        "seed": integer("seed", None),
        "keep_failures": flag("keep_failures"),
        "real_time": flag("real_time", allow_none=True),
        "success_reward": None if reward is None else float(reward),
        "max_attempts": attempts,
        "max_episode_steps": limit,
    }


def _make_env(task: Mapping[str, Any], render: bool, **overrides: Any) -> Any:
    """The task's env (``overrides`` replace env kwargs); with ``render``, one that can also draw a frame (for the
    view in state mode) if it can."""
    if render:
        with contextlib.suppress(ValueError, TypeError):
            return make_env(task, render_mode="rgb_array", **overrides)
    return make_env(task, **overrides)


def _open_store(out: Path, env: Any, cfg: DictConfig) -> EpisodeStore:
    """Open ``out`` for appending (created if absent). Refuses a store whose observations or actions differ."""
    expected = StoreSchema.from_spaces(env.observation_space, env.action_space, 1.0 / control_dt(env), ACTION_SEMANTICS)
    try:
        if not (out / "commit.json").exists():
            return EpisodeStore.open(out, "a", schema=expected)
        store = EpisodeStore.open(out, "a")
    except StoreError as e:
        raise RecordError(f"cannot record into out={out}: {e}") from None
    # action_semantics is free text (the trainer ignores it too); everything else must match exactly.
    diff = dataclasses.replace(expected, action_semantics=store.schema.action_semantics).mismatches(store.schema)
    if diff:
        store.close()
        raise RecordError(
            f"out={out} holds episodes of another schema than task {cfg.task.name} with "
            f"obs={cfg.get('obs')} records: {'; '.join(diff)}; pick another out= or the store's task/obs"
        )
    return store


def _next_seed(store: EpisodeStore, seed: int) -> int:
    """First reset seed: ``seed``, or just past the last recorded episode's seed when appending, so none repeats."""
    if len(store):
        with contextlib.suppress(Exception):
            last = json.loads(store.metadata(-1)["notes"]).get("seed")
            if isinstance(last, int):
                return max(seed, last + 1)
    return seed


class Recorder:
    """The record loop over an env, a device and an open store (see the module docstring).

    Args:
        task: task name written with each episode.
        episodes: episodes to keep.
        seed: reset seed of the first attempt (+1 per attempt).
        keep_failures: also keep failed episodes.
        success_reward: reward of the last step of an operator-marked success (None: the env's).
        real_time: pace steps at the env's control period (s).
        max_attempts: stop after this many started episodes (None: no limit).
        view: a :class:`LiveView` or None.
        progress: show a tqdm bar (episodes kept, success rate, mean length) on stderr.
    """

    def __init__(
        self,
        env: Any,
        device: TeleopDevice,
        store: EpisodeStore,
        *,
        task: str,
        episodes: int,
        seed: int,
        keep_failures: bool,
        success_reward: float | None,
        real_time: bool,
        max_attempts: int | None,
        view: LiveView | None = None,
        progress: bool = True,
    ):
        self.env, self.device, self.store, self.view = env, device, store, view
        self.task, self.episodes, self.seed = task, episodes, seed
        self.keep_failures, self.success_reward, self.max_attempts = keep_failures, success_reward, max_attempts
        self.dt = control_dt(env)
        self.pacer = Pacer(self.dt, real_time)
        self.real_time = real_time
        self.source = "teleop" if device.is_human else "scripted"
        self._t0 = 0.0  # when the running episode's start mark came
        self.collector = Collector(
            env,
            task=task,
            source=self.source,
            store=store,
            clock=(lambda: time.monotonic() - self._t0) if real_time else None,
        )
        self.action_shape = tuple(env.action_space.shape)
        self.kept = self.kept_success = self.attempts = self.discarded = self.dropped = 0
        self.lengths: list[int] = []
        self.store_start = len(store)
        self._progress = progress
        self._bar = None

    # ------------------------------------------------------------------ loop
    def run(self) -> str:
        """Record until ``episodes`` are kept ("done"), the operator quits ("quit") or ``max_attempts`` is reached
        ("gave_up"). KeyboardInterrupt propagates with every completed episode already committed."""
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.episodes,
            unit="ep",
            desc=f"record {self.task}",
            disable=not self._progress,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
        )
        if self.device.is_human:
            self._say(f"{self.device.help}")
        try:
            while self.kept < self.episodes:
                if self.max_attempts is not None and self.attempts >= self.max_attempts:
                    return "gave_up"
                seed = self.seed + self.attempts
                self.attempts += 1
                outcome, c = self._record_episode(seed)
                if outcome == "quit":
                    return "quit"
                if outcome == "discard":
                    self.discarded += 1
                    self._say(f"episode discarded; re-recording ({self.kept}/{self.episodes} kept)")
                    continue
                if not c.success and not self.keep_failures:
                    self.dropped += 1
                    if self.device.is_human:
                        self._say("failed episode dropped (keep_failures=false); re-recording")
                    continue
                self._commit(c)
            return "done"
        finally:
            self.close_progress()

    def _record_episode(self, seed: int) -> tuple[str, Collected | None]:
        dev, collector = self.device, self.collector
        obs = collector.reset(seed=seed)
        dev.reset()
        polls = 0
        if dev.is_human:
            self._say(f"episode {self.kept + 1}/{self.episodes} (seed {seed}): ready, press start")
        self.pacer.restart()
        while True:  # wait for the start mark
            st = dev.read()
            polls += 1
            if "quit" in st.events:
                return "quit", None
            if "start" in st.events:
                break
            self._show(obs, "waiting for start", 0)
            self.pacer.wait() if self.pacer.enabled else time.sleep(self.dt)
        if polls > 1:  # the scene may have changed while waiting (a real operator rearranges it): observe it anew
            collector.reset(seed=seed)
            dev.reset()
        self._t0, start_wall = time.monotonic(), time.time()
        late0 = self.pacer.late
        self.pacer.restart()
        env_success, mark = False, None
        while True:
            st = dev.read()
            if st.events & {"quit", "discard"}:
                collector.discard()
                return "quit" if "quit" in st.events else "discard", None
            if st.events & {"success", "failure"}:
                if len(collector):
                    mark = "failure" if "failure" in st.events else "success"
                    break
                self._say("nothing recorded yet: mark ignored")
            action = np.asarray(st.action, np.float32)
            if action.shape != self.action_shape:
                raise DeviceError(
                    f"{dev.name} gave an action of shape {action.shape}; the env takes {self.action_shape}"
                )
            step = collector.step(action)
            env_success = env_success or bool(step.info.get("success", False))
            self._show(step.next_obs, "recording" + (" (operator)" if st.active else ""), len(collector))
            if step.done:
                break
            self.pacer.wait()
        success = mark == "success" if mark else env_success
        c = collector.take(success)
        episode = c.episode
        if mark == "success":
            episode["terminated"][-1] = True
            if self.success_reward is not None:
                episode["reward"][-1] = self.success_reward
        elif mark == "failure":
            episode["truncated"][-1] = True
        end = f"operator_{mark}" if mark else ("env_terminated" if episode["terminated"][-1] else "env_truncated")
        c.notes = json.dumps(
            {
                "seed": int(seed),
                "device": dev.name,
                "end": end,
                "env_success": env_success,
                "late_steps": self.pacer.late - late0,
            }
        )
        c.start_time = start_wall
        if dev.is_human:
            self._say(f"episode ended: {end.replace('_', ' ')}, {'success' if success else 'failure'}, {c.steps} steps")
        return "done", c

    def _commit(self, c: Collected) -> None:
        with signals_deferred():  # the episode and its bookkeeping land together
            self.collector.file(c)
            self.kept += 1
            self.kept_success += int(c.success)
            self.lengths.append(c.steps)
            if self._bar is not None:
                self._bar.update(1)
                self._bar.set_postfix(self.stats(), refresh=False)

    # ------------------------------------------------------------- reporting
    def stats(self) -> dict[str, str]:
        """Episodes kept, success rate and mean length (steps) of the kept episodes, as short strings."""
        rate = f"{self.kept_success / self.kept:.0%}" if self.kept else "-"
        length = f"{np.mean(self.lengths):.1f}" if self.lengths else "-"
        return {"kept": str(self.kept), "success": rate, "len": length}

    def print_summary(self) -> None:
        """One paragraph: what was recorded in this run and what the store now holds."""
        s = self.stats()
        failed = self.kept - self.kept_success
        print(
            f"recorded {self.kept} episode(s) into {self.store.root} from {self.device.name}: {self.kept_success} "
            f"successful, {failed} failed kept, {self.dropped} failed dropped, {self.discarded} discarded | "
            f"success rate {s['success']} | mean length {s['len']} steps ({self.dt:g} s each)"
        )
        if self.pacer.late:
            print(
                f"{self.pacer.late} control step(s) overran {self.dt:g} s (the loop ran slower than the control rate)"
            )
        print(
            f"store: {len(self.store)} episodes ({len(self.store) - self.store_start} new), "
            f"{self.store.num_steps} steps"
        )

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _say(self, msg: str) -> None:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stdout)

    def _show(self, obs: Mapping[str, np.ndarray], status: str, step: int) -> None:
        if self.view is None:
            return
        s = self.stats()
        lines = [
            f"{self.task} | episode {self.kept + 1}/{self.episodes} | {status} | step {step}",
            f"kept {s['kept']} | success {s['success']} | mean length {s['len']}",
        ]
        self.view.show(obs, self.env, lines)


# -------------------------------------------------------------------------------------------------------- view
def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _view_possible(mode: str) -> bool:
    """Whether a window could be shown: a display and OpenCV. ``mode="on"`` raises :class:`RecordError` when not."""
    if mode == "off":
        return False
    try:
        import cv2  # noqa: F401
    except ImportError:
        if mode == "on":
            raise RecordError("view=on needs OpenCV: pip install opencv-python (or view=off)") from None
        return False
    if not _has_display():
        if mode == "on":
            raise RecordError("view=on needs a display (DISPLAY is unset); set DISPLAY or use view=off")
        return False
    return True


def _make_view(mode: str, possible: bool, env: Any, human: bool) -> LiveView | None:
    """The live view, or None: auto shows the obs cameras, or the env's own frame to a human operator."""
    if not possible:
        return None
    cams = image_keys(env.observation_space)
    can_render = getattr(env.unwrapped, "render_mode", None) == "rgb_array"
    if not cams and not (can_render and (human or mode == "on")):
        if mode == "on":
            raise RecordError("view=on: the env has no cameras in its observations and cannot render a frame")
        return None
    try:
        return LiveView(cams, use_render=not cams)
    except Exception as e:  # e.g. opencv-python-headless, or a display that refuses windows
        if mode == "on":
            raise RecordError(f"view=on: OpenCV cannot open a window ({e}); use view=off") from None
        print(f"no live view: OpenCV cannot open a window ({str(e).splitlines()[0]})", file=sys.stderr)
        return None


class LiveView:
    """An OpenCV window showing the camera images side by side (or the env's render), with status lines on top.

    Args:
        cameras: observation keys of the images to show (uint8 (H, W, 3) RGB each).
        use_render: show ``env.render()`` instead (state observations).
        height: displayed height of each image (px).
    """

    def __init__(self, cameras: list[str], use_render: bool = False, height: int = 384, title: str = "robot-rl record"):
        import cv2

        self.cv2, self.cameras, self.use_render, self.height, self.title = cv2, cameras, use_render, height, title
        fonts = next((d for d in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts") if os.path.isdir(d)), None)
        if fonts:  # OpenCV's Qt ships no fonts and warns at every window without a font directory
            os.environ.setdefault("QT_QPA_FONTDIR", fonts)
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | getattr(cv2, "WINDOW_GUI_NORMAL", 0))

    def show(self, obs: Mapping[str, np.ndarray], env: Any, lines: list[str]) -> None:
        """Draw one frame: ``obs`` images (or ``env.render()``) and ``lines`` of text."""
        cv2 = self.cv2
        images = [env.render()] if self.use_render else [obs[k] for k in self.cameras]
        images = [im for im in images if im is not None]
        if not images:
            return
        scaled = [
            cv2.resize(
                im, (round(im.shape[1] * self.height / im.shape[0]), self.height), interpolation=cv2.INTER_NEAREST
            )
            for im in images
        ]
        frame = cv2.cvtColor(np.concatenate(scaled, axis=1), cv2.COLOR_RGB2BGR)
        band = 10 + 22 * len(lines)
        frame[:band] = frame[:band] // 3  # darken behind the text
        for i, text in enumerate(lines):
            cv2.putText(frame, text, (8, 24 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.imshow(self.title, frame)
        cv2.waitKey(1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cv2.destroyWindow(self.title)
            self.cv2.waitKey(1)
