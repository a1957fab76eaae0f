"""Checkpoints as safetensors + JSON: no pickle anywhere.

A nested state (dicts and lists of tensors, numbers, strings, such as an optimizer's ``state_dict()``) is split into
a flat ``{path: tensor}`` map saved with safetensors and a JSON tree holding everything else, with every tensor
replaced by a ``{"__tensor__": path}`` reference. :func:`load_state` rebuilds the exact structure, including integer
dict keys (optimizer state is keyed by parameter index).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_INT_KEY = "__int__:"


def _split(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, (torch.Tensor, np.ndarray)) and path in tensors:
        raise ValueError(f"checkpoint key {path!r} is ambiguous (two entries flatten to it)")
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"__ndarray__": path}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = f"{_INT_KEY}{k}" if isinstance(k, int) else str(k)
            out[key] = _split(v, f"{path}.{key}" if path else key, tensors)
        return out
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint {path!r} of type {type(obj).__name__}")


def _join(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        if set(tree) == {"__ndarray__"}:
            return tensors[tree["__ndarray__"]].numpy()
        return {(int(k[len(_INT_KEY) :]) if k.startswith(_INT_KEY) else k): _join(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    return tree


def save_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path.safetensors`` + ``path.json`` atomically (temp files renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, "", tensors)
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    save_file(tensors, str(st) + ".tmp")
    js_tmp = str(js) + ".tmp"
    with open(js_tmp, "w") as f:
        json.dump(tree, f, indent=1)
    os.replace(str(st) + ".tmp", st)
    os.replace(js_tmp, js)


def load_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Inverse of :func:`save_state`. ``path`` may be given with or without a suffix."""
    path = Path(path)
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for p in (st, js):
        if not p.exists():
            raise FileNotFoundError(f"checkpoint file {p} does not exist")
    with open(js) as f:
        tree = json.load(f)
    return _join(tree, load_file(str(st), device=str(device)))


def replace_dir(tmp: Path, path: Path) -> None:
    """Put the complete directory ``tmp`` in the place of ``path`` (a checkpoint). Directories cannot be swapped in
    one rename: ``path`` goes aside to ``<path>.old`` first, so a crash between the two renames leaves ``path``
    missing, which :func:`checkpoint_path` repairs."""
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_path(path: str | Path) -> Path:
    """``path``, with a :func:`replace_dir` that a crash interrupted finished first: ``path`` missing while
    ``<path>.old`` exists means the process died between the two renames, after ``<path>.tmp`` was complete."""
    path = Path(path)
    old, tmp = path.with_name(path.name + ".old"), path.with_name(path.name + ".tmp")
    if not path.exists() and old.exists():
        os.replace(tmp if tmp.exists() else old, path)
        shutil.rmtree(old, ignore_errors=True)
    return path


def find_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A checkpoint directory (one holding ``agent.safetensors``), or a run directory, then its
    ``checkpoints/<prefer>``, falling back to the other of ``best`` and ``latest``. Raises FileNotFoundError."""
    path = Path(path)
    if (path / "agent.safetensors").exists():
        return path
    for name in (prefer, "latest" if prefer == "best" else "best"):
        cand = checkpoint_path(path / "checkpoints" / name)
        if (cand / "agent.safetensors").exists():
            return cand
    raise FileNotFoundError(
        f"no checkpoint at {path} (expected agent.safetensors in it or in {path}/checkpoints/{prefer})"
    )
