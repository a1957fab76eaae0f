"""Export an episode store as a LeRobot dataset (format v3.0), and read such a dataset back.

Layout written under OUT (the v3.0 layout: many episodes per file, located through the episode table)::

    meta/info.json                 codebase_version "v3.0", fps, features, totals, chunks_size, file sizes (MB),
                                   splits, data_path / video_path templates
    meta/stats.json                per feature: min, max, mean, std, count (images per channel, scaled to [0, 1])
    meta/tasks.parquet             the task text (pandas index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet
                                   one row per episode: episode_index, tasks, length, data/chunk_index,
                                   data/file_index, dataset_from_index, dataset_to_index,
                                   videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp},
                                   meta/episodes/{chunk_index, file_index}, stats/<feature>/<stat>; and ours:
                                   success, source, notes, start_time (unix s), final/<feature> (the episode's final
                                   next-observation; images as PNG bytes), so nothing of the store is lost
    data/chunk-000/file-000.parquet
                                   one row per step; a new file past ``data_files_size_in_mb``, a new chunk
                                   directory every ``chunks_size`` files
    videos/observation.images.<cam>/chunk-000/file-000.mp4
                                   (``images="video"``) the episodes' frames back to back, H.264 yuv420p; episode e
                                   spans [from_timestamp, to_timestamp) of its file
    meta/robot_rl.json             ours: the store's schema (StoreSchema.to_json), so a read gives back exact shapes
    README.md                      a dataset card naming the repo id

Per-step columns: ``observation.state`` (the store's ``state``), ``observation.<key>`` for other vector
observations, ``observation.images.<cam>`` (``images="image"``: PNG bytes, lossless), ``action``, ``next.reward``,
``next.done`` (terminated or truncated, as LeRobot records it), ``next.terminated``, ``next.truncated``,
``complementary_info.is_intervention``, ``complementary_info.store_timestamp`` (the store's clock, s),
``timestamp`` (frame_index / fps, s: what LeRobot seeks video frames by), ``frame_index``, ``episode_index``,
``index`` (global frame), ``task_index``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robot_rl.data.store import EpisodeStore, StoreSchema

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILE_MB = 100
VIDEO_FILE_MB = 500
VIDEO_CODEC, VIDEO_CRF, VIDEO_GOP = "libx264", 18, 2  # GOP 2: any frame decodes after at most one other
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STATE_KEY = "state"


class LeRobotError(ValueError):
    """The store cannot be exported as asked, or a directory is not a readable LeRobot v3.0 dataset."""


# ------------------------------------------------------------------ names and features
def _is_image(shape: tuple[int, ...], dtype: str) -> bool:
    return dtype == "uint8" and len(shape) == 3 and shape[2] == 3


def feature_name(key: str, shape: tuple[int, ...], dtype: str) -> str:
    """LeRobot feature name of store observation ``key``: state -> observation.state, a camera ->
    observation.images.<key>, any other vector -> observation.<key>."""
    if _is_image(shape, dtype):
        return f"observation.images.{key}"
    return "observation.state" if key == STATE_KEY else f"observation.{key}"


def _store_key(feature: str, ft: dict[str, Any]) -> str:
    if ft["dtype"] in ("image", "video"):
        return feature.removeprefix("observation.images.")
    return STATE_KEY if feature == "observation.state" else feature.removeprefix("observation.")


def _features(schema: StoreSchema, images: str, fps: float) -> dict[str, dict[str, Any]]:
    """info.json ``features`` for a store schema. Raises :class:`LeRobotError` for observations LeRobot cannot hold."""
    out: dict[str, dict[str, Any]] = {}
    for key, (shape, dtype) in schema.obs.items():
        name = feature_name(key, shape, dtype)
        if _is_image(shape, dtype):
            h, w, _ = shape
            out[name] = {"dtype": images, "shape": [h, w, 3], "names": ["height", "width", "channels"]}
            if images == "video":
                if h % 2 or w % 2:
                    raise LeRobotError(
                        f"camera {key!r} is {h}x{w}: H.264 yuv420p video needs even sizes; "
                        "export with --images image instead"
                    )
                out[name]["info"] = {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": "h264",
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": fps,
                    "video.channels": 3,
                    "has_audio": False,
                }
        elif len(shape) <= 1 and np.dtype(dtype).kind in "fiub":
            out[name] = {"dtype": dtype, "shape": list(shape) or [1], "names": None}
        else:
            raise LeRobotError(
                f"observation {key!r} has shape {shape} dtype {dtype}: LeRobot export takes vectors "
                "and HxWx3 uint8 images only"
            )
    out["action"] = {"dtype": "float32", "shape": [schema.action_dim], "names": None}
    for name, dtype in (
        ("next.reward", "float32"),
        ("next.done", "bool"),
        ("next.terminated", "bool"),
        ("next.truncated", "bool"),
        ("complementary_info.is_intervention", "bool"),
        ("complementary_info.store_timestamp", "float64"),
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        out[name] = {"dtype": dtype, "shape": [1], "names": None}
    return out


def _arrow_type(ft: dict[str, Any]) -> pa.DataType:
    if ft["dtype"] == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    base = pa.from_numpy_dtype(np.dtype(ft["dtype"]))
    return base if ft["shape"] == [1] else pa.list_(base, ft["shape"][0])


def _hf_feature(ft: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature of a column, so ``datasets`` decodes images and fixed-length lists."""
    if ft["dtype"] == "image":
        return {"_type": "Image"}
    value = {"dtype": ft["dtype"], "_type": "Value"}
    return value if ft["shape"] == [1] else {"feature": value, "length": ft["shape"][0], "_type": "Sequence"}


def _data_schema(features: dict[str, dict[str, Any]]) -> pa.Schema:
    cols = {k: ft for k, ft in features.items() if ft["dtype"] != "video"}
    meta = {"huggingface": json.dumps({"info": {"features": {k: _hf_feature(ft) for k, ft in cols.items()}}})}
    return pa.schema([(k, _arrow_type(ft)) for k, ft in cols.items()], metadata=meta)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _unpng(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ------------------------------------------------------------------ statistics
def _stats(x: np.ndarray, image: bool) -> dict[str, np.ndarray]:
    """min, max, mean, std, count of one episode's column: over time for vectors ((T, D) -> (D,), (T,) -> (1,)),
    over time and pixels per channel for images ((T, H, W, 3) uint8 -> (3, 1, 1), scaled to [0, 1])."""
    if image:
        flat = x.reshape(-1, 3)
        mean = flat.mean(axis=0, dtype=np.float64)
        std = np.sqrt(np.maximum((flat.astype(np.float32) ** 2).mean(axis=0, dtype=np.float64) - mean**2, 0.0))
        out = {
            "min": flat.min(axis=0) / 255.0,
            "max": flat.max(axis=0) / 255.0,
            "mean": mean / 255.0,
            "std": std / 255.0,
        }
        out = {k: v.astype(np.float64).reshape(3, 1, 1) for k, v in out.items()}
    else:
        f = x.astype(np.float64).reshape(len(x), -1)
        out = {"min": f.min(axis=0), "max": f.max(axis=0), "mean": f.mean(axis=0), "std": f.std(axis=0)}
    out["count"] = np.array([len(x)], dtype=np.int64)
    return out


def _aggregate(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Statistics of the union of the episodes whose statistics are ``stats`` (exact for mean and std)."""
    n = np.array([s["count"][0] for s in stats], dtype=np.float64)
    w = (n / n.sum()).reshape(-1, *([1] * stats[0]["mean"].ndim))
    means = np.stack([s["mean"] for s in stats])
    mean = (w * means).sum(axis=0)
    var = (w * (np.stack([s["std"] for s in stats]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    return {
        "min": np.min([s["min"] for s in stats], axis=0),
        "max": np.max([s["max"] for s in stats], axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(n.sum())], dtype=np.int64),
    }


# ------------------------------------------------------------------ writers
def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file + 1 >= CHUNKS_SIZE else (chunk, file + 1)


class _ParquetFiles:
    """Writes tables into ``template`` files, starting the next file once one passes ``max_mb``."""

    def __init__(self, root: Path, template: str, schema: pa.Schema | None, max_mb: float):
        self.root, self.template, self.schema, self.max_bytes = root, template, schema, max_mb * 2**20
        self.chunk = self.file = 0
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> tuple[int, int]:
        """Append ``table``; returns the (chunk_index, file_index) it went to."""
        if self.schema is None:
            self.schema = table.schema
        if self._writer is None:
            path = self.root / self.template.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pq.ParquetWriter(self._sink, self.schema, compression="snappy")
        self._writer.write_table(table.cast(self.schema) if table.schema != self.schema else table)
        where = (self.chunk, self.file)
        if self._sink.tell() >= self.max_bytes:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
        return where

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


class _VideoFiles:
    """One camera's mp4 files: frames are appended back to back; a new file starts past ``max_mb``."""

    def __init__(self, root: Path, key: str, height: int, width: int, fps: float, max_mb: float):
        self.root, self.key, self.size, self.fps, self.max_bytes = root, key, (width, height), fps, max_mb * 2**20
        self.chunk = self.file = 0
        self.frames = 0  # frames in the open file
        self._gen: Any = None
        self._path: Path | None = None

    def write(self, frames: np.ndarray) -> dict[str, Any]:
        """Append (T, H, W, 3) uint8 frames; returns this episode's videos/<key>/* episode-table entries."""
        import imageio_ffmpeg

        if self._gen is None:
            self._path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._gen = imageio_ffmpeg.write_frames(
                str(self._path),
                self.size,
                fps=self.fps,
                codec=VIDEO_CODEC,
                pix_fmt_out="yuv420p",
                quality=None,
                macro_block_size=2,
                ffmpeg_log_level="error",
                output_params=["-crf", str(VIDEO_CRF), "-g", str(VIDEO_GOP), "-bf", "0"],
            )
            self._gen.send(None)
            self.frames = 0
        start = self.frames
        for f in frames:
            self._gen.send(np.ascontiguousarray(f))
        self.frames += len(frames)
        p = f"videos/{self.key}/"
        entry = {
            p + "chunk_index": self.chunk,
            p + "file_index": self.file,
            p + "from_timestamp": start / self.fps,
            p + "to_timestamp": self.frames / self.fps,
        }
        if (self._path.stat().st_size if self._path.exists() else 0) >= self.max_bytes:  # ffmpeg writes late
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
        return entry

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None


def _pandas_index_metadata(index: str, column: str) -> bytes:
    """The pandas metadata that makes ``pandas.read_parquet`` restore ``index`` as the frame's index (as LeRobot
    reads meta/tasks.parquet), written by hand so the export needs no pandas."""
    cols = [
        {"name": column, "field_name": column, "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": index, "field_name": index, "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
    ]
    return json.dumps(
        {
            "index_columns": [index],
            "column_indexes": [],
            "columns": cols,
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.0",
        }
    ).encode()


# ------------------------------------------------------------------ export
def export_lerobot(
    store_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    repo_id: str | None = None,
    images: str = "video",
    overwrite: bool = False,
    batch: int = 8,
) -> dict[str, Any]:
    """Write the episode store at ``store_path`` as a LeRobot v3.0 dataset in the new directory ``out``.

    ``images``: "video" (H.264 mp4, lossy, like LeRobot's default) or "image" (PNG bytes in the parquet, lossless).
    Episodes stream through ``batch`` at a time; the dataset is built in a sibling temp directory and renamed into
    place at the end, so ``out`` never holds half an export. Returns a summary (episodes, frames, tasks, out, bytes).
    """
    if images not in ("video", "image"):
        raise LeRobotError(f"images={images!r}: choose video or image")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise LeRobotError(
                f"output {str(out)!r} exists and is not empty: name a new directory "
                "(or pass --overwrite to replace an earlier export)"
            )
        if not (out / "meta" / "info.json").is_file():
            raise LeRobotError(
                f"output {str(out)!r} is not a LeRobot dataset (no meta/info.json); refusing to replace it"
            )
    store = EpisodeStore.open(store_path, verify="quick")
    schema = store.schema
    fps: float = int(schema.control_hz) if float(schema.control_hz).is_integer() else schema.control_hz
    features = _features(schema, images, fps)
    repo_id = repo_id or f"local/{Path(store_path).resolve().name.removesuffix('.zarr')}"
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir(parents=True)
    try:
        summary = _write_dataset(store, tmp, features, images, fps, batch)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": None,
            "total_episodes": summary["episodes"],
            "total_frames": summary["frames"],
            "total_tasks": summary["tasks"],
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": fps,
            "splits": {"train": f"0:{summary['episodes']}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if any(ft["dtype"] == "video" for ft in features.values()) else None,
            "features": features,
        }
        (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=4))
        (tmp / "meta" / "robot_rl.json").write_text(json.dumps({"store_schema": schema.to_json()}, indent=2))
        card = (
            f"---\ntags: [LeRobot]\ntask_categories: [robotics]\nconfigs:\n- config_name: default\n"
            f"  data_files: data/*/*.parquet\n---\n# {repo_id}\n\nExported by robot_rl from the episode store "
            f"`{Path(store_path).name}` (action: {schema.action_semantics or 'see meta/info.json'}).\n\n"
            f"```json\n{json.dumps(info, indent=2)}\n```\n"
        )
        (tmp / "README.md").write_text(card)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.update(out=str(out), repo_id=repo_id, bytes=sum(f.stat().st_size for f in out.rglob("*") if f.is_file()))
    return summary


def _write_dataset(
    store: EpisodeStore, root: Path, features: dict[str, dict[str, Any]], images: str, fps: float, batch: int
) -> dict[str, Any]:
    schema = store.schema
    obs_names = {k: feature_name(k, s, d) for k, (s, d) in schema.obs.items()}
    cams = [k for k, (s, d) in schema.obs.items() if _is_image(s, d)]
    data = _ParquetFiles(root, DATA_PATH, _data_schema(features), DATA_FILE_MB)
    episodes = _ParquetFiles(root, EPISODES_PATH, None, DATA_FILE_MB)
    videos = (
        {k: _VideoFiles(root, obs_names[k], *schema.obs[k][0][:2], fps, VIDEO_FILE_MB) for k in cams}
        if images == "video"
        else {}
    )
    tasks: dict[str, int] = {}
    all_stats: list[dict[str, dict[str, np.ndarray]]] = []
    rows: list[dict[str, Any]] = []
    frames = 0
    try:
        for ep in store.iter_episodes(batch=batch):
            m, t = ep["metadata"], len(ep["reward"])
            task_index = tasks.setdefault(m["task"], len(tasks))
            fi = np.arange(t, dtype=np.int64)
            cols: dict[str, np.ndarray | list] = {}
            for k, name in obs_names.items():
                x = ep["obs"][k]
                if k not in cams:
                    cols[name] = x
                elif images == "image":
                    cols[name] = [{"bytes": _png(f), "path": None} for f in x]
            cols.update(
                {
                    "action": ep["action"],
                    "next.reward": ep["reward"],
                    "next.done": ep["terminated"] | ep["truncated"],
                    "next.terminated": ep["terminated"],
                    "next.truncated": ep["truncated"],
                    "complementary_info.is_intervention": ep["is_intervention"],
                    "complementary_info.store_timestamp": ep["timestamp"],
                    "timestamp": (fi / fps).astype(np.float32),
                    "frame_index": fi,
                    "episode_index": np.full(t, m["episode"], np.int64),
                    "index": frames + fi,
                    "task_index": np.full(t, task_index, np.int64),
                }
            )
            table = pa.table({k: _column(v, data.schema.field(k).type) for k, v in cols.items()}, schema=data.schema)
            chunk, file = data.write(table)
            stats = {name: _stats(ep["obs"][k], k in cams) for k, name in obs_names.items()}
            stats.update({k: _stats(np.asarray(cols[k]), False) for k in cols if not k.startswith("observation.")})
            all_stats.append(stats)
            row: dict[str, Any] = {
                "episode_index": m["episode"],
                "tasks": [m["task"]],
                "length": t,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": frames,
                "dataset_to_index": frames + t,
            }
            for k, vid in videos.items():
                row.update(vid.write(ep["obs"][k]))
            row.update(
                {"success": m["success"], "source": m["source"], "notes": m["notes"], "start_time": m["start_time"]}
            )
            for k, name in obs_names.items():
                x = ep["final_obs"][k]
                row[f"final/{name}"] = _png(x) if k in cams else np.atleast_1d(x).tolist()
            for name, st in stats.items():
                row.update({f"stats/{name}/{s}": v.tolist() for s, v in st.items()})
            rows.append(row)
            frames += t
            if len(rows) >= 64:
                _flush_episodes(episodes, rows)
        _flush_episodes(episodes, rows)
    finally:
        data.close()
        episodes.close()
        for vid in videos.values():
            vid.close()
    if not all_stats:
        raise LeRobotError(f"{store.root}: the store has no episodes; nothing to export")
    stats = {
        name: {s: v.tolist() for s, v in _aggregate([st[name] for st in all_stats]).items()} for name in all_stats[0]
    }
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    names = list(tasks)
    task_table = pa.table(
        {"task_index": pa.array([tasks[n] for n in names], pa.int64()), "task": pa.array(names, pa.string())}
    )
    task_table = task_table.replace_schema_metadata({"pandas": _pandas_index_metadata("task", "task_index")})
    pq.write_table(task_table, root / "meta" / "tasks.parquet")
    return {"episodes": len(all_stats), "frames": frames, "tasks": len(tasks), "images": images}


def _column(v: Any, typ: pa.DataType) -> pa.Array:
    """One parquet column from an episode's values: a list of image structs, (T,) / (T, 1) scalars, or (T, D)."""
    if isinstance(v, list):
        return pa.array(v, typ)
    v = np.asarray(v)
    if not pa.types.is_fixed_size_list(typ):
        return pa.array(v.reshape(len(v)), typ)
    flat = pa.array(np.ascontiguousarray(v).reshape(-1), typ.value_type)
    return pa.FixedSizeListArray.from_arrays(flat, typ.list_size)


def _flush_episodes(files: _ParquetFiles, rows: list[dict[str, Any]]) -> None:
    """Write buffered episode-table rows, filling in where each lands (meta/episodes/*)."""
    if not rows:
        return
    where = (files.chunk, files.file)
    for r in rows:
        r["meta/episodes/chunk_index"], r["meta/episodes/file_index"] = where
    files.write(pa.Table.from_pylist(rows, schema=files.schema))
    rows.clear()


# ------------------------------------------------------------------ reading
class _VideoReader:
    """Sequential frames of one mp4 as (H, W, 3) uint8; reading backwards reopens the file."""

    def __init__(self, path: Path):
        self.path, self._gen, self.pos = path, None, 0

    def _open(self) -> None:
        import imageio_ffmpeg

        if self._gen is not None:
            self._gen.close()
        self._gen = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
        meta = next(self._gen)
        self.width, self.height = meta["size"]
        self.pos = 0

    def read(self, start: int, n: int) -> np.ndarray:
        if self._gen is None or start < self.pos:
            self._open()
        out = np.empty((n, self.height, self.width, 3), np.uint8)
        while self.pos < start + n:
            try:
                raw = next(self._gen)
            except StopIteration:
                raise LeRobotError(
                    f"{self.path}: ends at frame {self.pos}, expected frames up to {start + n}"
                ) from None
            if self.pos >= start:
                out[self.pos - start] = np.frombuffer(raw, np.uint8).reshape(self.height, self.width, 3)
            self.pos += 1
        return out

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None


def read_lerobot_info(path: str | os.PathLike) -> dict[str, Any]:
    """meta/info.json of the LeRobot dataset at ``path``; raises :class:`LeRobotError` unless it is v3.x."""
    p = Path(path) / "meta" / "info.json"
    try:
        info = json.loads(p.read_text())
    except FileNotFoundError:
        raise LeRobotError(f"{path}: no meta/info.json; not a LeRobot dataset") from None
    except ValueError as exc:
        raise LeRobotError(f"{p}: not JSON: {exc}") from None
    if not str(info.get("codebase_version", "")).startswith("v3."):
        raise LeRobotError(
            f"{p}: codebase_version {info.get('codebase_version')!r}; this reader takes v3.x "
            "(convert older datasets with LeRobot's v2.1 -> v3.0 converter)"
        )
    return info


def read_lerobot(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the episodes of a LeRobot v3.x dataset in episode order, in the episode store's own format.

    Each episode: obs {store key: (T, ...)} (observation.state -> "state", observation.images.<cam> -> <cam>
    uint8 (T, H, W, 3), observation.<k> -> <k>), final_obs {key: shape} (only where the dataset kept it, as this
    module's exports do), action (T, A) float32, reward (T,) float32, terminated / truncated / is_intervention
    (T,) bool, timestamp (T,) float64 s (the store's clock if exported by us, else LeRobot's), and metadata
    {episode, task, success, source, notes, start_time, length} (None where the dataset has no such field).
    Datasets from elsewhere lack our extras: terminated is then next.done, truncated and is_intervention False.
    """
    root = Path(path)
    info = read_lerobot_info(root)
    features, fps = info["features"], float(info["fps"])
    tasks_t = pq.read_table(root / "meta" / "tasks.parquet")
    text_col = "task" if "task" in tasks_t.column_names else next(c for c in tasks_t.column_names if c != "task_index")
    tasks = dict(zip(tasks_t["task_index"].to_pylist(), tasks_t[text_col].to_pylist()))
    ep_files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not ep_files:
        raise LeRobotError(f"{root}: no meta/episodes/*/*.parquet")
    obs_feats = {k: ft for k, ft in features.items() if k.startswith("observation.")}
    ours = root / "meta" / "robot_rl.json"
    shapes = (
        {k: tuple(v["shape"]) for k, v in json.loads(ours.read_text())["store_schema"]["observations"].items()}
        if ours.is_file()
        else {}
    )
    readers: dict[tuple[str, int, int], _VideoReader] = {}
    data_key: tuple[int, int] | None = None
    data: dict[str, Any] = {}
    try:
        for ep_file in ep_files:
            table = pq.read_table(ep_file)
            cols = [c for c in table.column_names if not c.startswith("stats/")]
            for row in table.select(cols).to_pylist():
                key = (row["data/chunk_index"], row["data/file_index"])
                if key != data_key:
                    t = pq.read_table(root / info["data_path"].format(chunk_index=key[0], file_index=key[1]))
                    data = {c: t[c] for c in t.column_names}
                    data["_episode"] = t["episode_index"].to_numpy()
                    data_key = key
                yield _episode(root, info, row, data, obs_feats, shapes, tasks, readers, fps)
    finally:
        for r in readers.values():
            r.close()


def _episode(
    root: Path,
    info: dict[str, Any],
    row: dict[str, Any],
    data: dict[str, Any],
    obs_feats: dict[str, dict[str, Any]],
    shapes: dict[str, tuple[int, ...]],
    tasks: dict[int, str],
    readers: dict,
    fps: float,
) -> dict[str, Any]:
    e = row["episode_index"]
    sel = np.flatnonzero(data["_episode"] == e)
    if len(sel) != row["length"]:
        raise LeRobotError(
            f"{root}: episode {e} has {len(sel)} rows in its data file, the episode table says {row['length']}"
        )
    a, b = int(sel[0]), int(sel[-1]) + 1

    def col(name: str, dtype: Any, default: Any = None) -> np.ndarray:
        if name not in data:
            return np.full(b - a, default, dtype)
        c = data[name].slice(a, b - a).combine_chunks()
        if pa.types.is_fixed_size_list(c.type) or pa.types.is_list(c.type):
            return np.asarray(c.flatten().to_numpy(zero_copy_only=False), dtype).reshape(b - a, -1)
        return np.asarray(c.to_numpy(zero_copy_only=False), dtype)

    obs, final = {}, {}
    for name, ft in obs_feats.items():
        k = _store_key(name, ft)
        if ft["dtype"] == "video":
            vkey = (name, row[f"videos/{name}/chunk_index"], row[f"videos/{name}/file_index"])
            if vkey not in readers:
                readers[vkey] = _VideoReader(
                    root / info["video_path"].format(video_key=name, chunk_index=vkey[1], file_index=vkey[2])
                )
            obs[k] = readers[vkey].read(round(row[f"videos/{name}/from_timestamp"] * fps), b - a)
        elif ft["dtype"] == "image":
            obs[k] = np.stack([_unpng(x["bytes"]) for x in data[name].slice(a, b - a).to_pylist()])
        else:
            shape = shapes.get(k, () if ft["shape"] == [1] else tuple(ft["shape"]))
            obs[k] = col(name, ft["dtype"]).reshape(b - a, *shape)
        if (fin := row.get(f"final/{name}")) is not None:
            final[k] = (
                _unpng(fin)
                if ft["dtype"] in ("image", "video")
                else np.asarray(fin, ft["dtype"]).reshape(obs[k].shape[1:])
            )
    done = col("next.done", bool, False)
    terminated = col("next.terminated", bool, False) if "next.terminated" in data else done
    timestamp = (
        col("complementary_info.store_timestamp", np.float64)
        if "complementary_info.store_timestamp" in data
        else col("timestamp", np.float64)
    )
    task_index = col("task_index", np.int64, 0)
    task = row.get("tasks", [None])[0] if row.get("tasks") else tasks.get(int(task_index[0]))
    return {
        "obs": obs,
        "final_obs": final,
        "action": col("action", np.float32).reshape(b - a, -1),
        "reward": col("next.reward", np.float32, 0.0),
        "terminated": terminated,
        "truncated": col("next.truncated", bool, False),
        "is_intervention": col("complementary_info.is_intervention", bool, False),
        "timestamp": timestamp,
        "metadata": {
            "episode": e,
            "task": task,
            "success": row.get("success"),
            "source": row.get("source"),
            "notes": row.get("notes"),
            "start_time": row.get("start_time"),
            "length": b - a,
        },
    }


__all__ = ["LeRobotError", "export_lerobot", "read_lerobot", "read_lerobot_info", "feature_name"]
