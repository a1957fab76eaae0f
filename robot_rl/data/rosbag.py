"""Import rosbag2 recordings (sqlite3 or MCAP storage, read with ``rosbags``) into an episode store.

Every stream is resampled at ``control_hz`` by zero-order hold: at tick t each stream contributes its newest
message stamped at or before t (header stamps; messages without a header use the bag's receive time). A tick where
a required stream (state, cameras, action) has no message yet, or only one older than ``max_staleness_s``, is
dropped and counted per stream. Ticks run from the first time every required stream has a message to the last
time all still have one. Step t of an episode pairs tick t's observation with tick t's action; the observation at
the tick after the last step is the episode's final observation.

The mapping YAML (``--map``)::

    control_hz: 10                  # required: output rate (Hz)
    max_staleness_s: 0.15           # optional: drop a tick when a stream's newest message is older than this (s);
                                    #   default 1.5 / control_hz
    stamp: header                   # optional: header (default: header.stamp where the message has one) | bag
    task: pick the red cube         # optional text stored with every episode
    source: teleop                  # optional: scripted | teleop | policy | intervention (default teleop)
    action_semantics: ee twist xyz rpy (m/s, rad/s), gripper 0..1   # optional text stored in the schema
    state:                          # required: concatenated in this order into obs["state"] (float32)
      - topic: /joint_states        # sensor_msgs/JointState
        fields: [position, velocity]  #   any of position, velocity, effort (default: position, velocity)
      - /ee_pose                    # geometry_msgs/PoseStamped: position xyz + orientation xyzw (7 values)
    cameras:                        # optional: observation key -> camera
      front:
        topic: /front/image_raw     # sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage
        size: [64, 64]              # optional [height, width]: resized (bilinear); default: as recorded
    action:                         # required: concatenated in this order into the action (float32)
      - topic: /cmd_twist           # geometry_msgs/TwistStamped: linear xyz + angular xyz
      - /gripper_cmd                # std_msgs/Float32: one value
    intervention: /human_active     # optional std_msgs/Bool: is_intervention of each step (held; False before any)
    success: /success               # optional std_msgs/Bool: the first True ends the episode: the step into the
                                    #   first tick at or after it gets reward 1 and terminated; without one the
                                    #   episode is truncated with reward 0
    episodes:                       # optional: how a recording splits into episodes
      split: bag                    #   bag (default): each bag is one episode; topic: cut at each message on
      topic: /episode_start         #   this topic (a std_msgs/Bool cuts only when True)

Topics in ``state`` / ``action`` may be written as the bare name or as ``{topic, fields, type}``; ``type`` (e.g.
``sensor_msgs/msg/JointState``), when given, is checked against the bag. Vector types and their fields:
JointState (position, velocity, effort), Pose[Stamped] (position, orientation), Twist[Stamped] (linear,
angular), Wrench[Stamped] (force, torque), Float32/Float64MultiArray (data), Float32 / Float64 / Bool (data).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.store import SOURCES, EpisodeStore, StoreError, StoreSchema

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
BOOL_TYPE = "std_msgs/msg/Bool"
_ENCODINGS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True), "mono8": (1, False)}
_KEYS = {
    "control_hz",
    "max_staleness_s",
    "stamp",
    "task",
    "source",
    "action_semantics",
    "state",
    "cameras",
    "action",
    "intervention",
    "success",
    "episodes",
}


class MappingError(ValueError):
    """The mapping YAML is malformed, or does not fit the bag (unknown topic, wrong type, missing field)."""


# ------------------------------------------------------------------ message -> vector
def _xyz(v: Any) -> list[float]:
    return [v.x, v.y, v.z]


def _of_field(getter, field: str):
    """A getter of a stamped message: ``getter`` applied to its ``field`` (the unstamped message inside)."""
    return lambda msg: getter(getattr(msg, field))


def _vector_types() -> dict[str, tuple[tuple[str, ...], dict[str, Callable[[Any], Any]]]]:
    """ROS type -> (default fields, {field: message -> values})."""
    out: dict[str, tuple[tuple[str, ...], dict[str, Callable[[Any], Any]]]] = {
        "sensor_msgs/msg/JointState": (
            ("position", "velocity"),
            {"position": lambda m: m.position, "velocity": lambda m: m.velocity, "effort": lambda m: m.effort},
        ),
        "std_msgs/msg/Float32MultiArray": (("data",), {"data": lambda m: m.data}),
        "std_msgs/msg/Float64MultiArray": (("data",), {"data": lambda m: m.data}),
        "std_msgs/msg/Float32": (("data",), {"data": lambda m: [m.data]}),
        "std_msgs/msg/Float64": (("data",), {"data": lambda m: [m.data]}),
        "std_msgs/msg/Bool": (("data",), {"data": lambda m: [float(m.data)]}),
    }
    parts = {
        "Pose": (
            "pose",
            {
                "position": lambda p: _xyz(p.position),
                "orientation": lambda p: [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w],
            },
        ),
        "Twist": ("twist", {"linear": lambda t: _xyz(t.linear), "angular": lambda t: _xyz(t.angular)}),
        "Wrench": ("wrench", {"force": lambda w: _xyz(w.force), "torque": lambda w: _xyz(w.torque)}),
    }
    for name, (inner, getters) in parts.items():
        fields = tuple(getters)
        out[f"geometry_msgs/msg/{name}"] = (fields, getters)
        out[f"geometry_msgs/msg/{name}Stamped"] = (
            fields,
            {f: _of_field(g, inner) for f, g in getters.items()},
        )
    return out


VECTOR_TYPES = _vector_types()


def _norm_type(t: str) -> str:
    """'sensor_msgs/JointState' -> 'sensor_msgs/msg/JointState'."""
    parts = t.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else t


# ------------------------------------------------------------------ mapping
@dataclass
class VectorSource:
    """One topic feeding part of the state or the action."""

    where: str  # e.g. "state[1]", for messages
    topic: str
    fields: tuple[str, ...] | None = None
    type: str | None = None
    msgtype: str = ""  # filled from the bag


@dataclass
class Camera:
    key: str
    topic: str
    size: tuple[int, int] | None = None  # (height, width)
    type: str | None = None
    msgtype: str = ""


@dataclass
class Mapping:
    """A parsed mapping YAML (see the module docstring)."""

    control_hz: float
    state: list[VectorSource]
    action: list[VectorSource]
    cameras: list[Camera] = field(default_factory=list)
    max_staleness_s: float | None = None
    stamp: str = "header"
    task: str = ""
    source: str = "teleop"
    action_semantics: str = ""
    intervention: str | None = None
    success: str | None = None
    split: str = "bag"
    split_topic: str | None = None

    @property
    def staleness_s(self) -> float:
        return self.max_staleness_s if self.max_staleness_s is not None else 1.5 / self.control_hz


def _sources(d: dict[str, Any], key: str, required: bool) -> list[VectorSource]:
    items = d.get(key)
    if items is None and not required:
        return []
    if not isinstance(items, list) or not items:
        raise MappingError(f"mapping {key}: expected a non-empty list of topics (e.g. {key}: [/joint_states])")
    out = []
    for i, it in enumerate(items):
        where = f"{key}[{i}]"
        if isinstance(it, str):
            it = {"topic": it}
        if not isinstance(it, dict) or not isinstance(it.get("topic"), str):
            raise MappingError(f"mapping {where}: expected a topic name or {{topic: NAME, fields: [...]}}, got {it!r}")
        if extra := set(it) - {"topic", "fields", "type"}:
            raise MappingError(f"mapping {where}: unknown key(s) {sorted(extra)}; valid: topic, fields, type")
        fields = it.get("fields")
        if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)):
            raise MappingError(f"mapping {where}: fields must be a list of names, got {fields!r}")
        out.append(
            VectorSource(
                where,
                it["topic"],
                tuple(fields) if fields else None,
                _norm_type(it["type"]) if it.get("type") else None,
            )
        )
    return out


def load_mapping(path: str | Path) -> Mapping:
    """Parse and check the mapping YAML at ``path`` (structure only; :func:`bind` checks it against a bag)."""
    import yaml

    try:
        d = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise MappingError(f"mapping {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise MappingError(f"mapping {path}: expected a YAML mapping at the top level")
    if extra := set(d) - _KEYS:
        raise MappingError(f"mapping {path}: unknown key(s) {sorted(extra)}; valid: {', '.join(sorted(_KEYS))}")
    hz = d.get("control_hz")
    if not isinstance(hz, (int, float)) or isinstance(hz, bool) or hz <= 0:
        raise MappingError(f"mapping control_hz: {hz!r}; give the output rate in Hz, e.g. control_hz: 10")
    stale = d.get("max_staleness_s")
    if stale is not None and (not isinstance(stale, (int, float)) or stale <= 0):
        raise MappingError(f"mapping max_staleness_s: {stale!r}; give a positive number of seconds")
    if d.get("stamp", "header") not in ("header", "bag"):
        raise MappingError(f"mapping stamp: {d['stamp']!r}; choose header or bag")
    if d.get("source", "teleop") not in SOURCES:
        raise MappingError(f"mapping source: {d['source']!r}; choose one of {', '.join(SOURCES)}")
    cams = []
    cam_d = d.get("cameras") or {}
    if not isinstance(cam_d, dict):
        raise MappingError("mapping cameras: expected observation key -> {topic, size}")
    for key, c in cam_d.items():
        if isinstance(c, str):
            c = {"topic": c}
        if not isinstance(c, dict) or not isinstance(c.get("topic"), str):
            raise MappingError(f"mapping cameras.{key}: expected {{topic: NAME, size: [H, W]}}, got {c!r}")
        if extra := set(c) - {"topic", "size", "type"}:
            raise MappingError(f"mapping cameras.{key}: unknown key(s) {sorted(extra)}; valid: topic, size, type")
        size = c.get("size")
        if size is not None and not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)
        ):
            raise MappingError(f"mapping cameras.{key}.size: {size!r}; give [height, width] in pixels")
        if key == "state":
            raise MappingError("mapping cameras.state: 'state' is the proprioception key; name the camera otherwise")
        cams.append(
            Camera(
                str(key), c["topic"], tuple(size) if size else None, _norm_type(c["type"]) if c.get("type") else None
            )
        )
    ep = d.get("episodes") or {}
    if not isinstance(ep, dict) or ep.get("split", "bag") not in ("bag", "topic") or set(ep) - {"split", "topic"}:
        raise MappingError(f"mapping episodes: {ep!r}; use {{split: bag}} or {{split: topic, topic: NAME}}")
    if ep.get("split") == "topic" and not isinstance(ep.get("topic"), str):
        raise MappingError("mapping episodes.topic: missing; split: topic needs the boundary topic's name")
    for k in ("intervention", "success"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise MappingError(f"mapping {k}: {d[k]!r}; give a std_msgs/Bool topic name")
    return Mapping(
        float(hz),
        _sources(d, "state", True),
        _sources(d, "action", True),
        cams,
        float(stale) if stale is not None else None,
        d.get("stamp", "header"),
        str(d.get("task") or ""),
        d.get("source", "teleop"),
        str(d.get("action_semantics") or ""),
        d.get("intervention"),
        d.get("success"),
        ep.get("split", "bag"),
        ep.get("topic") if ep.get("split") == "topic" else None,
    )


def bind(mapping: Mapping, topics: dict[str, str], bag: str) -> None:
    """Check every mapped topic against the bag's {topic: type}; fill in message types. Raises MappingError."""

    def find(where: str, topic: str, want: Iterable[str], what: str, declared: str | None) -> str:
        if topic not in topics:
            raise MappingError(
                f"mapping {where}: topic {topic!r} is not in bag {bag} (its topics: "
                f"{', '.join(sorted(topics)) or 'none'})"
            )
        t = topics[topic]
        if declared and declared != t:
            raise MappingError(
                f"mapping {where}: topic {topic!r} has type {t} in bag {bag}, the mapping says {declared}"
            )
        if t not in want:
            raise MappingError(f"mapping {where}: topic {topic!r} has type {t}; {what} take {', '.join(sorted(want))}")
        return t

    for src in (*mapping.state, *mapping.action):
        src.msgtype = find(src.where, src.topic, VECTOR_TYPES, "state and action topics", src.type)
        valid = VECTOR_TYPES[src.msgtype][1]
        if src.fields and (bad := [f for f in src.fields if f not in valid]):
            raise MappingError(f"mapping {src.where}: field(s) {bad} not in {src.msgtype} (valid: {', '.join(valid)})")
    for cam in mapping.cameras:
        cam.msgtype = find(f"cameras.{cam.key}", cam.topic, IMAGE_TYPES, "cameras", cam.type)
    for k in ("intervention", "success"):
        if (topic := getattr(mapping, k)) is not None:
            find(k, topic, (BOOL_TYPE,), k, None)
    if mapping.split == "topic":
        find("episodes.topic", mapping.split_topic, set(topics.values()), "episode boundaries", None)


# ------------------------------------------------------------------ reading
@dataclass
class _Stream:
    """One resampled input: sorted stamps (ns) and per-message values (a vector, or the key of a camera frame)."""

    name: str
    stamps: np.ndarray
    values: np.ndarray | list

    def index_at(self, ticks: np.ndarray) -> np.ndarray:
        """Index of the newest message at or before each tick; -1 where there is none."""
        return np.searchsorted(self.stamps, ticks, side="right") - 1


def _stamp(msg: Any, bag_ns: int, use_header: bool) -> int:
    """Message time (ns): its header stamp when it has one (and it is set), else the bag's receive time."""
    h = getattr(msg, "header", None) if use_header else None
    t = int(h.stamp.sec) * 1_000_000_000 + int(h.stamp.nanosec) if h is not None else 0
    return t if t > 0 else int(bag_ns)


def _values(src: VectorSource, msg: Any, t_ns: int) -> np.ndarray:
    getters = VECTOR_TYPES[src.msgtype][1]
    parts = []
    for f in src.fields or VECTOR_TYPES[src.msgtype][0]:
        v = np.asarray(getters[f](msg), dtype=np.float64).reshape(-1)
        if v.size == 0:
            raise MappingError(
                f"mapping {src.where}: topic {src.topic!r} field {f!r} is empty in the message at "
                f"{t_ns / 1e9:.3f} s (the publisher does not fill it); drop it from fields"
            )
        parts.append(v)
    return np.concatenate(parts)


def _frame(msg: Any, cam: Camera) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image / CompressedImage message, resized to ``cam.size`` if given."""
    from PIL import Image

    if cam.msgtype == "sensor_msgs/msg/CompressedImage":
        img = np.asarray(Image.open(io.BytesIO(bytes(msg.data))).convert("RGB"))
    else:
        if msg.encoding not in _ENCODINGS:
            raise MappingError(
                f"mapping cameras.{cam.key}: topic {cam.topic!r} has encoding {msg.encoding!r}; "
                f"supported: {', '.join(_ENCODINGS)}"
            )
        c, bgr = _ENCODINGS[msg.encoding]
        rows = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.step)
        img = rows[:, : msg.width * c].reshape(msg.height, msg.width, c)
        img = np.repeat(img, 3, axis=2) if c == 1 else img[..., :3]
        img = img[..., ::-1] if bgr else img
    if cam.size and img.shape[:2] != cam.size:
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(cam.size[::-1], Image.BILINEAR))
    return np.ascontiguousarray(img)


def _read_streams(reader: Any, mapping: Mapping) -> tuple[dict[str, _Stream], dict[str, Any]]:
    """Pass 1 over the bag: stamps and values of every mapped stream (camera frames are decoded later)."""
    use_header = mapping.stamp == "header"
    wanted: dict[str, list[Any]] = {}
    for src in (*mapping.state, *mapping.action):
        wanted.setdefault(src.topic, []).append(src)
    for cam in mapping.cameras:
        wanted.setdefault(cam.topic, []).append(cam)
    for k in ("intervention", "success", "split_topic"):
        if (topic := getattr(mapping, k)) is not None:
            wanted.setdefault(topic, []).append(k)
    conns = [c for c in reader.connections if c.topic in wanted]
    acc: dict[str, tuple[list[int], list[Any]]] = {}
    first_size: dict[str, tuple[int, int]] = {}
    for conn, bag_ns, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        t = _stamp(msg, bag_ns, use_header)
        for role in wanted[conn.topic]:
            if isinstance(role, VectorSource):
                name, val = role.where, _values(role, msg, t)
            elif isinstance(role, Camera):
                name, val = f"cameras.{role.key}", (conn.topic, int(bag_ns))
                if name not in first_size:
                    first_size[name] = role.size or _frame(msg, role).shape[:2]
            elif role == "split_topic":
                if conn.msgtype == BOOL_TYPE and not msg.data:
                    continue
                name, val = role, None
            else:
                name, val = role, bool(msg.data)
            stamps, vals = acc.setdefault(name, ([], []))
            stamps.append(t)
            vals.append(val)
    streams = {}
    for name, (stamps, vals) in acc.items():
        order = np.argsort(np.asarray(stamps, np.int64), kind="stable")
        st = np.asarray(stamps, np.int64)[order]
        if name.startswith(("state[", "action[")):
            lens = {len(v) for v in vals}
            if len(lens) > 1:
                raise MappingError(
                    f"mapping {name}: messages carry {sorted(lens)} values at different times; "
                    "every message of a topic must have the same length"
                )
            streams[name] = _Stream(name, st, np.stack(vals)[order])
        else:
            streams[name] = _Stream(name, st, [vals[i] for i in order])
    return streams, first_size


# ------------------------------------------------------------------ resampling
@dataclass
class _Episode:
    ticks: np.ndarray  # (K + 1,) ns: K steps, then the final observation's tick
    success: bool


def _segments(streams: dict[str, _Stream], mapping: Mapping) -> list[tuple[int, int]]:
    """[start, stop) ns of each episode before resampling."""
    big = np.iinfo(np.int64).max
    if mapping.split == "bag" or "split_topic" not in streams:
        return [(-big, big)]
    cuts = sorted(set(streams["split_topic"].stamps.tolist()))
    bounds = [-big, *cuts, big]
    return list(zip(bounds[:-1], bounds[1:]))


def _plan(
    streams: dict[str, _Stream], mapping: Mapping, required: dict[str, str], report: dict[str, Any]
) -> list[_Episode]:
    """Tick times of every episode of one bag; counts drops into ``report``. ``required``: stream -> topic."""
    if missing := [n for n in required if n not in streams]:
        raise MappingError(f"mapping {missing[0]}: topic {required[missing[0]]!r} has no messages in this bag")
    period = 1e9 / mapping.control_hz
    stale_ns = mapping.staleness_s * 1e9
    lo = max(int(streams[n].stamps[0]) for n in required)
    hi = min(int(streams[n].stamps[-1]) for n in required)
    if hi < lo:
        return []
    grid = lo + np.round(np.arange(int((hi - lo) // period) + 1) * period).astype(np.int64)
    keep = np.ones(len(grid), bool)
    for n in required:
        s = streams[n]
        idx = s.index_at(grid)
        age = grid - s.stamps[np.maximum(idx, 0)]
        bad = (idx < 0) | (age > stale_ns)
        topic = required[n]
        report["dropped_stale"][topic] = report["dropped_stale"].get(topic, 0) + int(np.sum(bad & keep))
        keep &= ~bad
    report["ticks"] += len(grid)
    success = streams.get("success")
    episodes = []
    for a, b in _segments(streams, mapping):
        ticks = grid[keep & (grid >= a) & (grid < b)]
        won = False
        if success is not None:
            hits = success.stamps[
                (success.stamps >= max(a, lo)) & (success.stamps < b) & np.asarray(success.values, bool)
            ]
            if hits.size:
                j = int(np.searchsorted(ticks, hits[0], side="left"))
                if j < len(ticks):
                    report["dropped_after_success"] += len(ticks) - j - 1
                    ticks, won = ticks[: j + 1], True
        if len(ticks) < 2:
            report["skipped_short"] += 1
            continue
        episodes.append(_Episode(ticks, won))
    return episodes


def _held(stream: _Stream | None, ticks: np.ndarray) -> np.ndarray:
    """A Bool stream held at ``ticks`` (False before its first message)."""
    if stream is None:
        return np.zeros(len(ticks), bool)
    idx = stream.index_at(ticks)
    vals = np.asarray(stream.values, bool)
    return np.where(idx >= 0, vals[np.maximum(idx, 0)], False)


def _frames(reader: Any, mapping: Mapping, streams: dict[str, _Stream], ticks: np.ndarray) -> dict[str, np.ndarray]:
    """Pass 2 for one episode: decode the camera frames held at ``ticks``, reading only the bag window needed."""
    need: dict[str, list[tuple[str, int]]] = {}
    for cam in mapping.cameras:
        s = streams[f"cameras.{cam.key}"]
        need[cam.key] = [s.values[i] for i in s.index_at(ticks)]
    keys = {k for ks in need.values() for k in ks}
    if not keys:
        return {}
    lo, hi = min(k[1] for k in keys), max(k[1] for k in keys)
    by_topic = {cam.topic: cam for cam in mapping.cameras}
    conns = [c for c in reader.connections if c.topic in by_topic]
    decoded: dict[tuple[str, str, int], np.ndarray] = {}
    for conn, bag_ns, raw in reader.messages(connections=conns, start=lo, stop=hi + 1):
        for cam in mapping.cameras:
            if cam.topic == conn.topic and (conn.topic, int(bag_ns)) in keys:
                decoded[(cam.key, conn.topic, int(bag_ns))] = _frame(reader.deserialize(raw, conn.msgtype), cam)
    return {key: np.stack([decoded[(key, *k)] for k in ks]) for key, ks in need.items()}


# ------------------------------------------------------------------ import
def import_rosbags(
    bags: Sequence[str | Path], out: str | Path, mapping: Mapping | str | Path, typestore: str = "ROS2_HUMBLE"
) -> dict[str, Any]:
    """Append the episodes of every bag in ``bags`` to the store at ``out`` (created if absent).

    ``mapping``: a :class:`Mapping` or the path of its YAML. ``typestore``: the ``rosbags`` type store used for
    bags that carry no message definitions. Returns a report: bags, episodes, steps, ticks, dropped_stale
    {stream: ticks}, dropped_after_success, skipped_short (episodes under two ticks), out.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    m = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
    report: dict[str, Any] = {
        "bags": 0,
        "episodes": 0,
        "steps": 0,
        "ticks": 0,
        "dropped_stale": {},
        "dropped_after_success": 0,
        "skipped_short": 0,
        "out": str(out),
    }
    required = {s.where: s.topic for s in (*m.state, *m.action)}
    required.update({f"cameras.{c.key}": c.topic for c in m.cameras})
    store: EpisodeStore | None = None
    try:
        for bag in bags:
            try:
                reader = AnyReader([Path(bag)], default_typestore=get_typestore(getattr(Stores, typestore)))
                reader.open()
            except (AnyReaderError, FileNotFoundError) as exc:
                raise MappingError(f"bag {bag}: cannot read it as a rosbag2 directory: {exc}") from None
            try:
                bind(m, {c.topic: c.msgtype for c in reader.connections}, str(bag))
                streams, sizes = _read_streams(reader, m)
                plan = _plan(streams, m, required, report)
                if plan and store is None:
                    try:
                        store = EpisodeStore.open(out, "a", schema=_schema(m, streams, sizes))
                    except StoreError as exc:
                        raise StoreError(
                            f"{exc}; import into a new OUT, or change the mapping to match that store"
                        ) from None
                for ep in plan:
                    try:
                        _append(store, reader, m, streams, ep)
                    except StoreError as exc:
                        raise MappingError(f"bag {bag}: does not fit store {out}: {exc}") from None
                    report["episodes"] += 1
                    report["steps"] += len(ep.ticks) - 1
            finally:
                reader.close()
            report["bags"] += 1
    finally:
        if store is not None:
            store.close()
    return report


def _schema(m: Mapping, streams: dict[str, _Stream], sizes: dict[str, tuple[int, int]]) -> StoreSchema:
    state_dim = sum(streams[s.where].values.shape[1] for s in m.state)
    action_dim = sum(streams[s.where].values.shape[1] for s in m.action)
    obs = {"state": ((state_dim,), "float32")}
    obs.update({c.key: ((*sizes[f"cameras.{c.key}"], 3), "uint8") for c in m.cameras})
    return StoreSchema(obs, action_dim, m.control_hz, m.action_semantics)


def _append(store: EpisodeStore, reader: Any, m: Mapping, streams: dict[str, _Stream], ep: _Episode) -> None:
    ticks = ep.ticks
    T = len(ticks) - 1

    def vec(sources: list[VectorSource]) -> np.ndarray:
        return np.concatenate(
            [streams[s.where].values[streams[s.where].index_at(ticks)] for s in sources], axis=1
        ).astype(np.float32)

    state, action = vec(m.state), vec(m.action)[:T]
    frames = _frames(reader, m, streams, ticks)
    obs = {"state": state[:T], **{k: v[:T] for k, v in frames.items()}}
    final = {"state": state[T], **{k: v[T] for k, v in frames.items()}}
    last = np.arange(T) == T - 1
    reward = np.where(last & ep.success, 1.0, 0.0).astype(np.float32)
    store.append_episode(
        obs,
        final,
        action,
        reward,
        last & ep.success,
        last & (not ep.success),
        _held(streams.get("intervention"), ticks[:T]),
        ticks[:T] / 1e9,
        success=ep.success,
        source=m.source,
        task=m.task,
        start_time=float(ticks[0] / 1e9),
    )


def format_report(r: dict[str, Any]) -> str:
    """The summary ``robot-rl data import-rosbag`` prints."""
    lines = [f"imported {r['episodes']} episodes ({r['steps']} steps) from {r['bags']} bag(s) into {r['out']}"]
    stale = {k: v for k, v in r["dropped_stale"].items() if v}
    lines.append(
        f"ticks: {r['ticks']}, dropped as stale: {sum(stale.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in stale.items())})" if stale else "")
    )
    if r["dropped_after_success"]:
        lines.append(f"ticks after success (not kept): {r['dropped_after_success']}")
    if r["skipped_short"]:
        lines.append(f"episodes skipped (fewer than 2 ticks): {r['skipped_short']}")
    return "\n".join(lines)
