"""Where TensorRT lives on this machine: library search, version parsing, trtexec lookup.

Shared by ``trt_doctor.py`` and ``setup_tensorrt.py``. Every function takes the
environment and the folders to search as arguments, so tests can point them at a
fake filesystem layout; the module-level constants are the real defaults.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

__all__ = [
    "CONTAINER_LIB_DIRS",
    "CUDA_LIB_DIRS",
    "SOURCE_CONTAINER",
    "SOURCE_HOME",
    "SOURCE_LD",
    "SOURCE_PIP",
    "SYSTEM_LOADER_DIRS",
    "TRTEXEC_DIRS",
    "LibFile",
    "SearchDir",
    "cuda_major_from_env",
    "cuda_majors_from_libs",
    "decode_trt_int_version",
    "default_cuda_major_for_trt",
    "detect_cuda_major",
    "distinct_versions",
    "find_libs",
    "find_trtexec",
    "loader_visible",
    "parse_trtexec_version",
    "parse_version",
    "pep440",
    "primary_lib",
    "run_command",
    "same_release",
    "search_dirs",
    "so_version",
    "split_path_list",
    "trt_package",
    "trt_requirement",
    "version_major",
    "version_pin",
]

# The NGC TensorRT container this toolkit targets first, then the layout of other NGC images.
CONTAINER_LIB_DIRS: tuple[str, ...] = (
    "/usr/local/tensorrt/targets/x86_64-linux-gnu/lib",
    "/usr/local/tensorrt/lib",
    "/usr/lib/x86_64-linux-gnu",
)
TRTEXEC_DIRS: tuple[str, ...] = ("/opt/tensorrt/bin", "/usr/src/tensorrt/bin")
# Folders the dynamic loader searches without LD_LIBRARY_PATH (ld.so.conf on Debian/Ubuntu).
SYSTEM_LOADER_DIRS: tuple[str, ...] = (
    "/lib",
    "/usr/lib",
    "/lib64",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
)
CUDA_LIB_DIRS: tuple[str, ...] = ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib")

SOURCE_LD = "LD_LIBRARY_PATH"
SOURCE_HOME = "TENSORRT_HOME"
SOURCE_CONTAINER = "container"
SOURCE_PIP = "pip tensorrt_libs"

_SO_RE = re.compile(r"^(?P<stem>lib[A-Za-z0-9_+-]+)\.so(?:\.(?P<ver>\d+(?:\.\d+)*))?$")


@dataclass(frozen=True)
class SearchDir:
    path: str
    source: str  # one of the SOURCE_* names


@dataclass(frozen=True)
class LibFile:
    """One shared library found on disk, with the version read from its file name."""

    stem: str  # "libnvinfer"
    path: str  # the file found (may be a symlink such as libnvinfer.so.10)
    real_path: str
    version: str | None  # "10.13.3", or "10" when only the SONAME is known
    dir: str
    source: str

    @property
    def major(self) -> int | None:
        return version_major(self.version)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pep440(text: str | None) -> Version | None:
    """``text`` as a PEP 440 version (``10.7.0.post1``, ``10.13.3.9``, ``1.7.0rc1``), or None."""
    if not text:
        return None
    try:
        return Version(str(text).strip())
    except InvalidVersion:
        return None


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """The release numbers of a PEP 440 version: ``"10.13.3"`` -> ``(10, 13, 3)``,
    ``"10.7.0.post1"`` -> ``(10, 7, 0)`` (PyPI's post-releases are the same TensorRT); None when unparsable."""
    v = pep440(text)
    return tuple(v.release) if v is not None else None


def version_major(text: str | None) -> int | None:
    parts = parse_version(text)
    return parts[0] if parts else None


def so_version(filename: str, stem: str) -> str | None:
    """The version in a shared-library file name of ``stem``, e.g.

    ``so_version("libnvinfer.so.10.13.3", "libnvinfer") == "10.13.3"``; ``None`` for another
    library (``libnvinfer_plugin.so.10``) or an unversioned ``libnvinfer.so``.
    """
    m = _SO_RE.match(filename)
    if not m or m.group("stem") != stem:
        return None
    return m.group("ver")


def same_release(a: str | None, b: str | None, parts: int = 3) -> bool:
    """True when both versions agree on their first ``parts`` numbers (as far as both go)."""
    pa, pb = parse_version(a), parse_version(b)
    if pa is None or pb is None:
        return False
    n = min(parts, len(pa), len(pb))
    return pa[:n] == pb[:n]


def split_path_list(value: str | None) -> list[str]:
    return [p for p in (value or "").split(os.pathsep) if p]


def search_dirs(
    env: Mapping[str, str],
    container_dirs: Sequence[str] = CONTAINER_LIB_DIRS,
    pip_libs_dirs: Sequence[str] = (),
) -> list[SearchDir]:
    """The folders to look for TensorRT libraries in, in loader order, without duplicates.

    LD_LIBRARY_PATH first (what the loader uses), then ``$TENSORRT_HOME/lib`` (and its
    ``targets/x86_64-linux-gnu/lib``), the container paths, and pip's ``tensorrt_libs``.
    """
    out: list[SearchDir] = []
    seen: set[str] = set()

    def add(path: str, source: str) -> None:
        norm = os.path.normpath(path)
        if norm not in seen:
            seen.add(norm)
            out.append(SearchDir(norm, source))

    for p in split_path_list(env.get("LD_LIBRARY_PATH")):
        add(p, SOURCE_LD)
    home = env.get("TENSORRT_HOME")
    if home:
        add(os.path.join(home, "lib"), SOURCE_HOME)
        add(os.path.join(home, "targets", "x86_64-linux-gnu", "lib"), SOURCE_HOME)
    for p in container_dirs:
        add(p, SOURCE_CONTAINER)
    for p in pip_libs_dirs:
        add(p, SOURCE_PIP)
    return out


def find_libs(dirs: Iterable[SearchDir], stem: str = "libnvinfer") -> list[LibFile]:
    """Every ``<stem>.so.*`` in ``dirs``: one entry per real file per folder, best-named first.

    The version comes from the longest version found in the link name or the file it
    points to (``libnvinfer.so.10 -> libnvinfer.so.10.13.3`` gives ``10.13.3``).
    """
    found: list[LibFile] = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d.path))
        except OSError:
            continue
        by_real: dict[str, LibFile] = {}
        for name in names:
            ver = so_version(name, stem)
            if ver is None:
                continue
            path = os.path.join(d.path, name)
            real = os.path.realpath(path)
            real_ver = so_version(os.path.basename(real), stem)
            best = max((v for v in (ver, real_ver) if v), key=lambda v: len(parse_version(v) or ()))
            prev = by_real.get(real)
            if prev is None or len(parse_version(best) or ()) > len(parse_version(prev.version) or ()):
                by_real[real] = LibFile(stem, path, real, best, d.path, d.source)
        found.extend(by_real.values())
    return found


def distinct_versions(libs: Iterable[LibFile]) -> list[str]:
    """Full versions (at least major.minor) seen, in order of first appearance."""
    out: list[str] = []
    for lib in libs:
        v = lib.version
        if v and len(parse_version(v) or ()) >= 2 and v not in out:
            out.append(v)
    return out


def primary_lib(libs: Sequence[LibFile], prefer_non_pip: bool = True) -> LibFile | None:
    """The libnvinfer the container provides: the first fully versioned one in loader order."""
    pool = [lib for lib in libs if lib.source != SOURCE_PIP] if prefer_non_pip else list(libs)
    pool = pool or list(libs)
    for lib in pool:
        if len(parse_version(lib.version) or ()) >= 2:
            return lib
    return pool[0] if pool else None


def loader_visible(dir_path: str, env: Mapping[str, str], loader_dirs: Sequence[str] = SYSTEM_LOADER_DIRS) -> bool:
    """Whether the dynamic loader searches ``dir_path`` (LD_LIBRARY_PATH or a default folder)."""
    norm = os.path.normpath(dir_path)
    dirs = split_path_list(env.get("LD_LIBRARY_PATH")) + list(loader_dirs)
    return any(os.path.normpath(d) == norm for d in dirs)


# ----------------------------------------------------------------------------- trtexec

_BANNER_INT_RE = re.compile(r"\[TensorRT v(\d{4,6})\]")
_BANNER_DOT_RE = re.compile(r"\[TensorRT v(\d+\.\d+(?:\.\d+)*)\]")
_VERSION_LINE_RE = re.compile(r"TensorRT version:\s*(\d+\.\d+(?:\.\d+)*)")


def decode_trt_int_version(n: int) -> str:
    """TensorRT's integer version (NV_TENSORRT_VERSION) as text.

    Since TensorRT 10 it is ``major*10000 + minor*100 + patch`` (101303 -> 10.13.3);
    TensorRT 8 used ``major*1000 + minor*100 + patch`` (8601 -> 8.6.1).
    """
    if n >= 100000:
        return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"
    return f"{n // 1000}.{(n // 100) % 10}.{n % 100}"


def parse_trtexec_version(text: str) -> str | None:
    """The TensorRT version in ``trtexec`` output (its ``&&&& RUNNING TensorRT.trtexec`` banner)."""
    m = _VERSION_LINE_RE.search(text) or _BANNER_DOT_RE.search(text)
    if m:
        return m.group(1)
    m = _BANNER_INT_RE.search(text)
    if m:
        return decode_trt_int_version(int(m.group(1)))
    return None


def find_trtexec(env: Mapping[str, str], known_dirs: Sequence[str] = TRTEXEC_DIRS) -> list[tuple[str, str]]:
    """``(path, where)`` for each trtexec found: on PATH first, then the known folders."""
    out: list[tuple[str, str]] = []
    on_path = shutil.which("trtexec", path=env.get("PATH", ""))
    if on_path:
        out.append((os.path.normpath(on_path), "PATH"))
    extra = list(known_dirs)
    if env.get("TENSORRT_HOME"):
        extra.append(os.path.join(env["TENSORRT_HOME"], "bin"))
    for d in extra:
        cand = os.path.join(d, "trtexec")
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            norm = os.path.normpath(cand)
            if all(os.path.realpath(norm) != os.path.realpath(p) for p, _ in out):
                out.append((norm, d))
    return out


# ----------------------------------------------------------------------------- CUDA


def cuda_major_from_env(env: Mapping[str, str]) -> int | None:
    """NGC images set ``CUDA_VERSION`` (e.g. ``12.8.1.012``)."""
    return version_major((env.get("CUDA_VERSION") or "").strip() or None)


def cuda_majors_from_libs(dirs: Iterable[str]) -> list[int]:
    """Majors of the ``libcudart.so.<major>`` files in ``dirs``, first-found first."""
    out: list[int] = []
    for lib in find_libs((SearchDir(d, "cuda") for d in dirs), stem="libcudart"):
        major = lib.major
        if major is not None and major not in out:
            out.append(major)
    return out


def default_cuda_major_for_trt(trt_major: int) -> int:
    """TensorRT 11 packages in NGC containers are built for CUDA 13; TensorRT 10 for CUDA 12."""
    return 13 if trt_major >= 11 else 12


def detect_cuda_major(
    env: Mapping[str, str], trt_major: int | None, cuda_lib_dirs: Iterable[str] = CUDA_LIB_DIRS
) -> tuple[int, str]:
    """The CUDA major of this machine's TensorRT: ``(major, how it was found)``.

    ``CUDA_VERSION`` (set by NGC images), else the ``libcudart.so.<major>`` found in
    ``cuda_lib_dirs``, else the CUDA TensorRT packages are built for (11 -> 13, 10 -> 12).
    """
    major = cuda_major_from_env(env)
    if major:
        return major, f"CUDA_VERSION={env.get('CUDA_VERSION')}"
    majors = cuda_majors_from_libs(cuda_lib_dirs)
    if majors:
        return majors[0], f"libcudart.so.{majors[0]}"
    if trt_major is None:
        return 12, "default"
    return default_cuda_major_for_trt(trt_major), f"default for TensorRT {trt_major}"


def trt_package(cuda_major: int, full: bool = False) -> str:
    """``tensorrt-cu12-bindings`` (bindings only) or ``tensorrt-cu12`` (bindings + ~2 GB of libs)."""
    return f"tensorrt-cu{cuda_major}" + ("" if full else "-bindings")


def version_pin(version: str) -> str:
    """A pip specifier matching a library version: ``10.13.3`` -> ``==10.13.3.*`` (any build, and
    PyPI's post-releases such as ``10.13.3.9.post1``); a full or post/pre version is pinned exactly."""
    v = pep440(version)
    if v is None or len(v.release) < 2:
        raise ValueError(f"need at least major.minor, got {version!r}")
    exact = len(v.release) >= 4 or v.is_postrelease or v.is_prerelease or v.is_devrelease or v.local
    return f"=={version}" if exact else f"=={version}.*"


def trt_requirement(version: str, cuda_major: int, full: bool = False) -> str:
    return trt_package(cuda_major, full) + version_pin(version)


def run_command(cmd: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    """Run ``cmd``; ``(exit code, stdout+stderr)``. 127: not found, 124: timed out."""
    try:
        proc = subprocess.run(
            list(cmd), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False, errors="replace"
        )
    except FileNotFoundError as exc:
        return 127, str(exc)
    except PermissionError as exc:
        return 126, str(exc)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")
