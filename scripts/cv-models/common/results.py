"""Atomic writes, latency statistics and run directories.

Every artifact we write (metrics JSON, detections, engines, caches) goes through
``atomic_output``: it is written to a temporary file beside the target and renamed
over it only when complete, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError

METRICS_SCHEMA_VERSION = 1


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` lets writers that insist on an extension (``np.save`` adds ``.npy``) work.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}; choose a writable output path") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def latency_stats(samples_s: Sequence[float], skip: int = 0, items_per_sample: int = 1) -> dict[str, float]:
    """Latency figures (ms) of per-call timings given in seconds.

    Keys keep the users' contract (``mean_ms``, ``median_ms``, ``p90_ms``,
    ``throughput_fps``) and add ``p95_ms``, ``p99_ms``, ``min_ms``, ``max_ms`` and ``count``.
    ``throughput_fps`` counts items (images), so a batch of 8 per sample counts 8.
    """
    arr = np.asarray(list(samples_s)[max(int(skip), 0) :], dtype=np.float64)
    if arr.size == 0:
        keys = ("mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "throughput_fps")
        return {**dict.fromkeys(keys, 0.0), "count": 0}
    ms = arr * 1000.0
    mean = float(arr.mean())
    return {
        "mean_ms": float(ms.mean()),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "throughput_fps": float(items_per_sample / mean) if mean > 0 else 0.0,
        "count": int(arr.size),
    }


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def run_dir(task: str, root: str | os.PathLike[str] = "tmp", stamp: str | None = None) -> Path:
    """``tmp/<task>/<timestamp>/``, created; a clear error when it cannot be."""
    path = Path(root) / task / (stamp or timestamp())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise UserError(f"run directory {path} is not writable; pass another output location")
    return path


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
