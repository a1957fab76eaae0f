"""``robot-rl data``: inspect, check, merge and convert episode stores.

    robot-rl data info STORE [--json]                  summary table (or JSON) of a store
    robot-rl data validate STORE                       decode every chunk; exit 1 and list problems if any
    robot-rl data merge OUT IN [IN ...] [--only-successful] [--source SRC ...]
    robot-rl data export-lerobot STORE OUT [--repo-id NAME] [--images video|image] [--overwrite]
    robot-rl data import-rosbag BAG [BAG ...] OUT --map MAP.yaml

A user mistake (missing path, not a store, schema mismatch, bad mapping) prints one line
``robot-rl data: error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robot_rl.data.store import COMMIT_FILE, SOURCES, EpisodeStore, StoreError

PROG = "robot-rl data"


class UsageError(Exception):
    """A bad command line or input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become one-line :class:`UsageError` naming the subcommand's help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def human_bytes(n: float) -> str:
    """``n`` bytes as e.g. '3.2 MiB'."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def check_store_path(path: str, what: str = "STORE") -> Path:
    """``path`` as a Path if it holds an episode store; otherwise a UsageError saying what to give instead."""
    p = Path(path)
    if not p.exists():
        raise UsageError(
            f"{what} {path!r} does not exist; give the directory of an episode store "
            "(e.g. runs/pick_cube/<run>/demos.zarr)"
        )
    if not (p / COMMIT_FILE).is_file():
        raise UsageError(
            f"{what} {path!r} is not an episode store (no {COMMIT_FILE}); give a directory written by "
            "robot-rl (train's demos.zarr, record, merge or import-rosbag)"
        )
    return p


def open_store(path: str, what: str = "STORE") -> EpisodeStore:
    """Open an existing store for reading (quick structural check); see :func:`check_store_path`."""
    return EpisodeStore.open(check_store_path(path, what), verify="quick")


# ------------------------------------------------------------------ info
def store_info(store: EpisodeStore) -> dict[str, Any]:
    """:meth:`EpisodeStore.info` plus the schema and a readable size."""
    info = store.info()
    info["size"] = human_bytes(info["size_bytes"])
    info["schema"] = store.schema.to_json()
    return info


def format_info(info: dict[str, Any]) -> str:
    """The table ``robot-rl data info`` prints."""
    s, e = info["schema"], info["episodes"]
    rows = [("store", f"{info['path']}  ({info['size']} on disk)")]
    if e:
        ln = info["length"]
        rows.append(
            (
                "episodes",
                f"{e}  ({info['steps']} steps; length min {ln['min']} / mean {ln['mean']:.1f} / max {ln['max']})",
            )
        )
        rows.append(("success rate", f"{info['success_rate']:.1%}  ({round(info['success_rate'] * e)} of {e})"))
        rows.append(("sources", ", ".join(f"{k} {v}" for k, v in info["sources"].items())))
        rows.append(("interventions", f"{info['intervention_fraction']:.1%} of steps"))
        rows.append(("tasks", ", ".join(f"{k or '(none)'!s} {v}" for k, v in info["tasks"].items())))
    else:
        rows.append(("episodes", "0 (empty store)"))
    rows.append(("control", f"{s['control_hz']:g} Hz, schema v{s['schema_version']}"))
    rows.append(("action", f"dim {s['action_dim']}" + (f": {s['action_semantics']}" if s["action_semantics"] else "")))
    obs = s["observations"]
    width = max((len(k) for k in obs), default=0)
    for i, (k, v) in enumerate(obs.items()):
        rows.append(("observations" if i == 0 else "", f"{k:<{width}}  {tuple(v['shape'])} {v['dtype']}"))
    return "\n".join(f"{a:<14} {b}" for a, b in rows)


def cmd_info(args: argparse.Namespace) -> int:
    info = store_info(open_store(args.store))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


# ------------------------------------------------------------------ validate
def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 if every committed chunk decodes with a good checksum, 1 listing every problem otherwise (a store
    too broken to open is a failed check too)."""
    path = check_store_path(args.store)
    try:
        store = EpisodeStore.open(path, verify="none")
        problems = store.validate(deep=True)
    except StoreError as exc:
        problems, store = [str(exc)], None
    if problems:
        print(f"FAILED {args.store}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p}")
        return 1
    print(
        f"OK {args.store}: {len(store)} episodes, {store.num_steps} steps; every committed chunk decoded and "
        "its checksum verified"
    )
    return 0


# ------------------------------------------------------------------ merge
def merge(
    out: str,
    inputs: Sequence[str],
    *,
    only_successful: bool = False,
    sources: Sequence[str] | None = None,
    batch: int = 4,
) -> dict[str, Any]:
    """Copy the episodes of ``inputs`` (in order) into the store ``out`` (created if absent), with metadata.

    Every input's schema must equal the first's (and an existing ``out``'s). Streams ``batch`` episodes at a
    time; each appended episode is committed atomically. Returns counts: copied, skipped, steps, total.
    """
    if Path(out).resolve() in {Path(p).resolve() for p in inputs}:
        raise UsageError(f"OUT {out!r} is also an input; merge into a new or another store")
    stores = [open_store(p, "input") for p in inputs]
    ref = stores[0].schema
    for p, s in zip(inputs[1:], stores[1:]):
        if diff := ref.mismatches(s.schema):
            raise UsageError(
                f"input {p!r} does not match the first input {inputs[0]!r} ("
                + "; ".join(d.replace("store has", f"{p} has") for d in diff)
                + "); merge only stores with the same observations and actions"
            )
    if (Path(out) / COMMIT_FILE).is_file():
        existing = EpisodeStore.open(out, verify="quick")
        if diff := existing.schema.mismatches(ref):
            raise UsageError(
                f"OUT {out!r} already holds a store that does not match the inputs ("
                + "; ".join(d.replace("expected", "OUT has").replace("store has", "inputs have") for d in diff)
                + "); choose a new OUT"
            )
    wanted = set(sources or SOURCES)
    dst = EpisodeStore.open(out, "a", schema=ref, image_chunk=_image_chunk(stores[0]))
    copied = steps = unsuccessful = other_source = 0
    try:
        for s in stores:
            for ep in s.iter_episodes(batch=batch):
                m = ep["metadata"]
                if only_successful and not m["success"]:
                    unsuccessful += 1
                    continue
                if m["source"] not in wanted:
                    other_source += 1
                    continue
                dst.append_episode(
                    ep["obs"],
                    ep["final_obs"],
                    ep["action"],
                    ep["reward"],
                    ep["terminated"],
                    ep["truncated"],
                    ep["is_intervention"],
                    ep["timestamp"],
                    success=m["success"],
                    source=m["source"],
                    task=m["task"],
                    notes=m["notes"],
                    start_time=m["start_time"],
                )
                copied += 1
                steps += len(ep["reward"])
        return {
            "copied": copied,
            "steps": steps,
            "skipped_unsuccessful": unsuccessful,
            "skipped_source": other_source,
            "episodes": len(dst),
            "total_steps": dst.num_steps,
        }
    finally:
        dst.close()


def _image_chunk(store: EpisodeStore) -> int:
    """Frames per chunk of the first camera array of ``store`` (32 if it has no camera)."""
    import zarr

    for k, (shape, dtype) in store.schema.obs.items():
        if dtype == "uint8" and len(shape) == 3:
            return int(zarr.open_array(store.root, path=f"data/{k}", mode="r").chunks[0])
    return 32


def cmd_merge(args: argparse.Namespace) -> int:
    sources = [s for group in args.source for s in group] if args.source else None
    r = merge(args.out, args.inputs, only_successful=args.only_successful, sources=sources)
    skipped = r["skipped_unsuccessful"] + r["skipped_source"]
    print(
        f"merged {r['copied']} episodes ({r['steps']} steps) from {len(args.inputs)} input(s) into {args.out}; "
        f"it now holds {r['episodes']} episodes, {r['total_steps']} steps"
        + (
            f" (skipped {skipped}: {r['skipped_unsuccessful']} unsuccessful, {r['skipped_source']} by source)"
            if skipped
            else ""
        )
    )
    return 0


# ------------------------------------------------------------------ conversions
def _needs(exc: ImportError, sub: str) -> UsageError:
    return UsageError(
        f"{sub} needs the Python package {exc.name!r}, which is not installed: "
        f"pip install {({'PIL': 'pillow', 'yaml': 'pyyaml'}).get(exc.name, exc.name)}"
    )


def cmd_export_lerobot(args: argparse.Namespace) -> int:
    try:
        from robot_rl.data.lerobot import LeRobotError, export_lerobot
    except ImportError as exc:
        raise _needs(exc, "export-lerobot") from None

    open_store(args.store).close()
    try:
        r = export_lerobot(args.store, args.out, repo_id=args.repo_id, images=args.images, overwrite=args.overwrite)
    except LeRobotError as exc:
        raise UsageError(str(exc)) from None
    print(
        f"wrote LeRobot v3.0 dataset {r['repo_id']} to {r['out']}: {r['episodes']} episodes, {r['frames']} frames, "
        f"{r['tasks']} task(s), images as {r['images']}, {human_bytes(r['bytes'])}"
    )
    return 0


def cmd_import_rosbag(args: argparse.Namespace) -> int:
    from robot_rl.data.rosbag import MappingError, format_report, import_rosbags

    for b in args.bags:
        if not Path(b).exists():
            raise UsageError(f"BAG {b!r} does not exist; give a rosbag2 directory (with metadata.yaml)")
    if not Path(args.map).is_file():
        raise UsageError(
            f"--map {args.map!r} does not exist; give the mapping YAML (format: python -m pydoc robot_rl.data.rosbag)"
        )
    try:
        print(format_report(import_rosbags(args.bags, args.out, args.map)))
    except MappingError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        raise _needs(exc, "import-rosbag") from None
    return 0


# ------------------------------------------------------------------ entry point
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Inspect, check, merge and convert episode stores.")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)
    i = sub.add_parser(
        "info",
        help="summary of a store: episodes, lengths, success, sources, schema, size",
        description="Summary of an episode store.",
    )
    i.add_argument("store", metavar="STORE", help="episode store directory")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v = sub.add_parser(
        "validate",
        help="decode every chunk and check checksums; exit 1 on any problem",
        description="Deep check of an episode store: structure, episode table and every chunk "
        "(checksums). Prints OK or every problem naming the array and episodes; "
        "exit 1 on problems.",
    )
    v.add_argument("store", metavar="STORE", help="episode store directory")
    m = sub.add_parser(
        "merge",
        help="copy episodes of stores with the same schema into one store",
        description="Copy the episodes (with success, source, task, notes, start time) of one or "
        "more stores into OUT, created if absent. All schemas must match.",
    )
    m.add_argument("out", metavar="OUT", help="destination store (new or existing with the same schema)")
    m.add_argument("inputs", metavar="IN", nargs="+", help="source stores, copied in order")
    m.add_argument("--only-successful", action="store_true", help="copy successful episodes only")
    m.add_argument(
        "--source",
        nargs="+",
        action="append",
        choices=SOURCES,
        metavar="SRC",
        help=f"copy only episodes from these sources ({', '.join(SOURCES)})",
    )
    e = sub.add_parser(
        "export-lerobot",
        help="write a LeRobot v3.0 dataset (parquet + mp4 or PNG)",
        description="Write the store as a LeRobot dataset, format v3.0 (see robot_rl/data/lerobot.py "
        "for the layout). Read it back with robot_rl.data.lerobot.read_lerobot.",
    )
    e.add_argument("store", metavar="STORE", help="episode store directory")
    e.add_argument("out", metavar="OUT", help="new dataset directory")
    e.add_argument("--repo-id", help="dataset name for the card, e.g. lab/pick_cube (default local/<store name>)")
    e.add_argument(
        "--images",
        choices=("video", "image"),
        default="video",
        help="video: H.264 mp4 per camera (default, lossy, like LeRobot); image: PNG in the parquet (lossless)",
    )
    e.add_argument("--overwrite", action="store_true", help="replace OUT if it holds an earlier export")
    r = sub.add_parser(
        "import-rosbag",
        help="resample rosbag2 recordings into a store (mapping YAML)",
        description="Read rosbag2 directories (sqlite3 or MCAP) and append their episodes to OUT, "
        "resampled at the mapping's control rate. The mapping format is documented in "
        "robot_rl/data/rosbag.py.",
    )
    r.add_argument("bags", metavar="BAG", nargs="+", help="rosbag2 directories")
    r.add_argument("out", metavar="OUT", help="episode store (created if absent)")
    r.add_argument("--map", required=True, metavar="MAP.yaml", help="topic mapping (see robot_rl/data/rosbag.py)")
    return p


COMMANDS = {
    "info": cmd_info,
    "validate": cmd_validate,
    "merge": cmd_merge,
    "export-lerobot": cmd_export_lerobot,
    "import-rosbag": cmd_import_rosbag,
}


def main(argv: list[str] | None = None) -> int:
    """Run ``robot-rl data ARGS``; returns the exit status (0 ok, 1 validation failed, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        if not args.command:
            parser.print_help()
            return 0
        return COMMANDS[args.command](args)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (UsageError, StoreError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
