"""Atomic writes, the output policy, latency statistics and run directories.

Every artifact we write (metrics JSON, detections, engines, caches) goes through
``atomic_output``: it is written to a temporary file beside the target and renamed
over it only when complete, so an interrupted run never leaves a half-written file, and an
I/O error while writing (a full disk) is a ``UserError`` naming the file, with nothing left behind.

The output policy, one rule for every CLI (``check_output_paths``, before any work):

- an output may not be an input, another output, or an existing folder, and its folder must be writable;
- an existing file is replaced only when this toolkit wrote it -- a JSON object whose first key is
  ``"written_by": "yolov10-trt-toolkit"`` (``stamp``), or a file whose sha256 such a JSON records under
  ``written_files`` (its ``<file>.json`` sidecar, or a JSON the CLI names, e.g. the metrics.json of its
  detections) -- or when the user passes ``--force``;
- each output is claimed for the run (an exclusive lock keyed by its absolute path, in the system's
  temporary folder): a second run writing the same path at the same time is refused at once instead of
  silently replacing the first one's result. ``release_outputs`` (called by ``run_main``) frees them.

A path given with a trailing ``/`` names a folder (``common.core.cli.output_file``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    "claim_output",
    "current_umask",
    "dumps_json",
    "file_digests",
    "image_ids_sha256",
    "latency_stats",
    "release_outputs",
    "remove_if_empty",
    "run_dir",
    "sha256_file",
    "stamp",
    "timestamp",
    "write_error",
    "written_by_us",
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
    made = _missing_parents(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as exc:
        _remove_empty(made)
        raise UserError(f"cannot write {target}: {exc.strerror or exc}; choose a writable output path") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a written file follows the umask
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _remove_empty(made)
        if isinstance(exc, OSError):
            raise UserError(write_error(target, exc)) from exc
        raise


def write_error(target: Path, exc: OSError) -> str:
    """One line for an I/O error while writing ``target`` (a full disk, a quota, a vanished folder)."""
    why = exc.strerror or str(exc)
    hint = "free some space or choose another output location" if exc.errno in _FULL else "choose another path"
    return f"cannot write {target}: {why}; nothing was written there: {hint}"


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _missing_parents(folder: Path) -> list[Path]:
    """The folders that writing into ``folder`` would create (deepest first)."""
    made: list[Path] = []
    f = folder
    while not f.exists() and f != f.parent:
        made.append(f)
        f = f.parent
    return made


def _remove_empty(folders: Iterable[Path]) -> None:
    for f in folders:
        with contextlib.suppress(OSError):
            f.rmdir()


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
    force: bool = False,
    vouchers: Iterable[str | os.PathLike[str] | None] = (),
    caches: Iterable[str] = (),
) -> None:
    """The one output-path guard every CLI calls before any work (the module doc states the policy).

    ``outputs`` / ``inputs`` map a label (the flag, e.g. ``--out``) to a path (None: not given).
    An output may not be an input, may not be another output, may not be an existing
    directory, and its folder must be writable. An output may not replace an existing file
    inside one of ``protected_dirs`` (e.g. the image folder), nor, unless ``force``, an existing
    file this toolkit did not write (``written_by_us``; ``vouchers``: JSON files of ours that may
    record it). ``caches``: the flags of files read and then updated (TensorRT timing/runtime caches, which are
    replaced only where TensorRT accepted their contents), exempt from that rule. Then every output is
    claimed for this run (``claim_output``).
    UserError naming the flag otherwise.
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
        exempt = force or flag in set(caches)
        if not exempt and out.is_file() and not written_by_us(out, [Path(v) for v in vouchers if v is not None]):
            raise UserError(
                f"{flag} {out} exists and was not written by this toolkit; choose another path, or pass --force "
                "to replace it"
            )
    for flag, out in outs:
        claim_output(flag, out)


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
    text = ",".join(str(int(i)) for i in sorted(set(ids)))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- what we wrote

OWNER_KEY = "written_by"
OWNER = "yolov10-trt-toolkit"
FILES_KEY = "written_files"


def stamp(payload: Mapping[str, Any], written: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``payload`` marked as written by this toolkit (its first key), recording ``written`` ({file name:
    sha256}: files written with it, which are then recognisably ours too)."""
    out: dict[str, Any] = {OWNER_KEY: OWNER, **{k: v for k, v in payload.items() if k != OWNER_KEY}}
    if written:
        out[FILES_KEY] = dict(written)
    return out


def file_digests(*paths: str | os.PathLike[str]) -> dict[str, str]:
    """``{name: sha256}`` of files just written, for ``stamp``."""
    return {Path(p).name: sha256_file(p) for p in paths}


def _our_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path`` when this toolkit wrote it (``stamp``), else None."""
    try:
        with open(path, "rb") as fh:
            if f'"{OWNER_KEY}"'.encode() not in fh.read(4096):  # stamped JSON starts with the marker
                return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get(OWNER_KEY) == OWNER else None


def written_by_us(path: str | os.PathLike[str], vouchers: Iterable[str | os.PathLike[str]] = ()) -> bool:
    """Whether the existing file ``path`` was written by this toolkit: a stamped JSON, or a file whose
    sha256 its ``<path>.json`` sidecar or one of ``vouchers`` (stamped JSONs) records."""
    p = Path(path)
    if _our_json(p) is not None:
        return True
    digest = None
    for v in (p.with_name(p.name + ".json"), *map(Path, vouchers)):
        want = ((_our_json(v) or {}).get(FILES_KEY) or {}).get(p.name)
        if want:
            digest = digest or sha256_file(p)
            if want == digest:
                return True
    return False


# ----------------------------------------------------------------------------- one writer per output

_CLAIMS: dict[str, int] = {}  # lock file -> its open descriptor (flock held)


def _lock_dir() -> Path | None:
    folder = Path(tempfile.gettempdir()) / f"{OWNER}-output-locks"
    try:
        folder.mkdir(exist_ok=True)
        if folder.stat().st_uid == os.getuid():
            os.chmod(folder, 0o1777)  # every user's runs share it (sticky: each removes only its own)
    except OSError:
        return None
    return folder


def claim_output(flag: str, path: str | os.PathLike[str]) -> None:
    """Claim ``path`` for this process until ``release_outputs``: UserError when another running process
    claimed it (two runs writing one file at once). Best effort where no lock folder can be made."""
    import fcntl

    key = hashlib.sha256(str(Path(path).absolute().resolve()).encode()).hexdigest()[:32]
    folder = _lock_dir()
    if folder is None:
        return
    lock = str(folder / f"{key}.lock")
    if lock in _CLAIMS:
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"{flag} {path} is being written by another run (process {other}); wait for it to finish or "
                "choose another path"
            ) from None
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:  # not a lock file its last holder just removed
                break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _CLAIMS[lock] = fd


def release_outputs() -> None:
    """Free every output this process claimed (the run is over)."""
    for lock, fd in list(_CLAIMS.items()):
        with contextlib.suppress(OSError):
            os.unlink(lock)
        with contextlib.suppress(OSError):
            os.close(fd)
        del _CLAIMS[lock]
