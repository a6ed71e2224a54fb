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

from common.core.errors import UserError

__all__ = [
    "METRICS_SCHEMA_VERSION",
    "METRICS_SCHEMA_VERSIONS_READ",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "check_output_paths",
    "current_umask",
    "dumps_json",
    "image_ids_sha256",
    "latency_stats",
    "remove_if_empty",
    "run_dir",
    "sha256_file",
    "timestamp",
]

# 2: latency.* is the backend's own per-batch time (CUDA events on its lane where it has lanes, host time
# otherwise), named by the top-level key latency_timing; in 1 it was host time, queueing included.
METRICS_SCHEMA_VERSION = 2
METRICS_SCHEMA_VERSIONS_READ = (1, 2)


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
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a written file follows the umask
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
    """Strict JSON (``allow_nan=False``): a NaN/Inf is a bug upstream, never a value written silently."""
    return atomic_write_text(path, dumps_json(obj, indent=indent) + "\n")


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """``json.dumps`` for everything we write: NumPy/Path aware, and NaN/Inf refused (strict parsers reject them)."""
    try:
        return json.dumps(obj, indent=indent, default=_json_default, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"refusing to write non-finite numbers into JSON ({exc})") from exc


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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

    Keys keep the metrics.json contract (``mean_ms``, ``median_ms``, ``p90_ms``,
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
    """``tmp/<task>/<timestamp>/``, created exclusively: two runs started in the same second get
    ``<timestamp>`` and ``<timestamp>-2``, never one shared folder. A clear error when it cannot be made."""
    parent = Path(root) / task
    base = stamp or timestamp()
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = parent / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            break
        else:  # pragma: no cover - 10 000 runs in one second
            raise UserError(f"cannot find a free run directory name under {parent}")
    except OSError as exc:
        raise UserError(f"cannot create run directory under {parent}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK):
        raise UserError(f"run directory {path} is not writable; pass another output location")
    return path


def remove_if_empty(folder: Path | None) -> None:
    """Remove a run folder we created when a run ended before writing anything into it."""
    if folder is not None:
        with contextlib.suppress(OSError):
            folder.rmdir()


# ----------------------------------------------------------------------------- output-path guard


def _same_path(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        with contextlib.suppress(OSError):
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _writable_folder(path: Path) -> tuple[Path, str | None]:
    """(the nearest existing ancestor of ``path``, why we cannot create files below it or None)."""
    folder = path.parent.resolve() if str(path.parent) else Path.cwd()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return folder, f"{folder} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
    except OSError as exc:
        return folder, f"folder {folder} is not writable ({exc.strerror or exc})"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return folder, None


def check_output_paths(
    outputs: dict[str, str | os.PathLike[str] | None],
    inputs: dict[str, str | os.PathLike[str] | None],
    *,
    protected_dirs: dict[str, str | os.PathLike[str] | None] | None = None,
) -> None:
    """The one output-path guard every CLI calls before any work.

    ``outputs`` / ``inputs`` map a label (the flag, e.g. ``--out``) to a path (None: not given).
    An output may not be an input, may not be another output, may not be an existing
    directory, and its folder must be writable. An output may not replace an existing file
    inside one of ``protected_dirs`` (e.g. the image folder). UserError naming the flag otherwise.
    """
    outs = [(flag, Path(p)) for flag, p in outputs.items() if p is not None]
    ins = [(flag, Path(p)) for flag, p in inputs.items() if p is not None]
    for i, (flag, out) in enumerate(outs):
        for in_flag, src in ins:
            if _same_path(out, src):
                raise UserError(
                    f"{flag} {out} is the same file as {in_flag} {src}; it would be overwritten: choose another path"
                )
        for other_flag, other in outs[:i]:
            if _same_path(out, other):
                raise UserError(f"{flag} {out} is also {other_flag}: give each output its own path")
        if out.is_dir():
            raise UserError(f"{flag} {out} is an existing directory; pass a file path, not a folder")
        for dir_flag, d in (protected_dirs or {}).items():
            if d is not None and out.exists() and Path(d).is_dir() and _same_path(out.parent, Path(d)):
                raise UserError(f"{flag} {out} would overwrite a file in the {dir_flag} folder; choose another path")
        _, why = _writable_folder(out)
        if why:
            raise UserError(f"{flag} {out}: {why}; choose a writable output location")


def check_output_dir(flag: str, folder: str | os.PathLike[str] | None) -> None:
    """An output *folder*: not an existing file, and it (or its nearest existing ancestor) writable."""
    if folder is None:
        return
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise UserError(f"{flag} {d} is an existing file, not a folder; pass a folder path")
    _, why = _writable_folder(d / "probe")
    if why:
        raise UserError(f"{flag} {d}: {why}; choose a writable output location")


def image_ids_sha256(ids: Sequence[int]) -> str:
    """The fingerprint of an evaluated image set (order and duplicates ignored): sha256 of the sorted
    distinct ids written as ``1,2,3``. Two runs with the same value scored the same images."""
    import hashlib

    text = ",".join(str(int(i)) for i in sorted(set(ids)))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
