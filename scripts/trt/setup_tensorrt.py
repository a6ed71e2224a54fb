#!/usr/bin/env python3
"""setup-tensorrt: install TensorRT Python bindings matching the container's libnvinfer.

Finds the machine's TensorRT (the same library search as trt-doctor), then installs
only ``tensorrt-cu<CUDA major>-bindings==<that version>.*`` from NVIDIA's index, so
``import tensorrt`` uses the container's libraries instead of pulling ~2 GB of pip
libs that may not match them. ``--full`` installs the full ``tensorrt-cu<major>`` wheels
(libs included) pinned to the same version instead. Idempotent: when ``import tensorrt``
already gives that version, nothing is done. The index URL comes from ``--index-url``
(the Pixi task passes it) or from ``extra-index-urls`` in pyproject.toml's Pixi
``pypi-options``.

The bindings wheel holds only the module ``tensorrt_bindings``; the name ``tensorrt`` comes from
NVIDIA's front-end package ``tensorrt-cu<major>``, whose ``__init__`` re-exports ``tensorrt_bindings``
and which also depends on ``tensorrt-cu<major>-libs`` (the ~2 GB of pip libraries we avoid). So,
after installing the bindings, setup-tensorrt writes that same two-line front end itself
(``tensorrt/__init__.py`` plus a ``tensorrt_frontend_shim`` dist-info, so ``pip uninstall
tensorrt-frontend-shim`` removes it): no network, no extra libraries, ``import tensorrt`` works.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# first: one line, not a traceback, when this Python lacks the toolkit's dependencies (common.core.envguard)
try:
    import common.core.envguard
except ModuleNotFoundError:  # a Python that has not installed the toolkit: its shared package, to say what to run
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cv-models"))
    import common.core.envguard  # noqa: F401

from common.core.cli import make_parser, run_main, setup_logging
from common.core.errors import UserError
from common.trt import env as trtenv

REPO_ROOT = Path(__file__).resolve().parents[2]
PIXI_FEATURE = "rtx5090"
_IMPORT_SNIPPET = (
    "import json, tensorrt; print(json.dumps({'version': tensorrt.__version__, 'file': tensorrt.__file__}))"
)
_BINDINGS_SNIPPET = (
    "import json, tensorrt_bindings as t; print(json.dumps({'version': t.__version__, 'file': t.__file__}))"
)
# The dist that owns the front end setup-tensorrt writes (pip can list and uninstall it).
SHIM_DIST = "tensorrt-frontend-shim"
SHIM_INIT = """\
# The `tensorrt` front end, written by setup-tensorrt (yolov10-trt-toolkit): the same re-export as
# NVIDIA's tensorrt-cuXX package, without its tensorrt-cuXX-libs, so that the bindings
# (tensorrt-cuXX-bindings) use the container's libnvinfer. Remove: pip uninstall tensorrt-frontend-shim
from tensorrt_bindings import *  # noqa: F403
from tensorrt_bindings import __version__  # noqa: F401
"""
# Runs in the target Python: writes tensorrt/__init__.py and its dist-info into purelib (never over
# an existing tensorrt package). argv: version, init text. Prints the file written as JSON.
_WRITE_SHIM_SNIPPET = r"""
import base64, hashlib, json, os, sys, sysconfig
version, init = sys.argv[1], sys.argv[2]
site = sysconfig.get_paths()["purelib"]
pkg = os.path.join(site, "tensorrt")
if os.path.exists(os.path.join(pkg, "__init__.py")):
    sys.exit("refusing to overwrite " + os.path.join(pkg, "__init__.py"))
info = os.path.join(site, "tensorrt_frontend_shim-%s.dist-info" % version)
os.makedirs(pkg, exist_ok=True)
os.makedirs(info, exist_ok=True)
def put(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    data = text.encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (os.path.relpath(path, site), digest, len(data))
NL = chr(10)
meta = NL.join(["Metadata-Version: 2.1", "Name: tensorrt-frontend-shim", "Version: " + version,
                "Summary: the tensorrt front end over tensorrt_bindings (written by setup-tensorrt)", ""])
rows = [put(os.path.join(pkg, "__init__.py"), init), put(os.path.join(info, "METADATA"), meta),
        put(os.path.join(info, "INSTALLER"), "setup-tensorrt" + NL)]
rows.append(os.path.relpath(os.path.join(info, "RECORD"), site) + ",,")
put(os.path.join(info, "RECORD"), NL.join(rows) + NL)
print(json.dumps({"file": os.path.join(pkg, "__init__.py")}))
"""
_DISTS_SNIPPET = (
    "import json, importlib.metadata as m; "
    "print(json.dumps(sorted({(d.metadata['Name'] or '') for d in m.distributions()})))"
)


def normalize_dist(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


@dataclass
class ImportResult:
    ok: bool
    version: str | None = None
    file: str | None = None
    error: str | None = None


def _default_runner(cmd: Sequence[str], env: Mapping[str, str]) -> tuple[int, str]:
    return trtenv.run_command(cmd, env, timeout=120)


@dataclass
class World:
    """What setup-tensorrt looks at and acts on; tests replace every part."""

    env: Mapping[str, str]
    python: str = sys.executable
    container_lib_dirs: Sequence[str] = trtenv.CONTAINER_LIB_DIRS
    cuda_lib_dirs: Sequence[str] = trtenv.CUDA_LIB_DIRS
    pyproject: Path = REPO_ROOT / "pyproject.toml"
    query: Callable[[Sequence[str], Mapping[str, str]], tuple[int, str]] = _default_runner
    execute: Callable[[Sequence[str], Mapping[str, str]], int] | None = None
    log: Callable[[str], None] = print

    def probe_import(self, snippet: str = _IMPORT_SNIPPET) -> ImportResult:
        rc, out = self.query([self.python, "-c", snippet], self.env)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if rc == 0 and lines:
            data = json.loads(lines[-1])
            return ImportResult(True, str(data.get("version")), data.get("file"))
        tail = [ln for ln in out.strip().splitlines() if ln.strip()]
        return ImportResult(False, error=tail[-1] if tail else f"exit {rc}")

    def probe_bindings(self) -> ImportResult:
        """``import tensorrt_bindings`` (the module of the tensorrt-cuXX-bindings wheel)."""
        return self.probe_import(_BINDINGS_SNIPPET)

    def write_frontend(self, version: str) -> tuple[int, str]:
        """Write the ``tensorrt`` front end into the target Python's site-packages."""
        return self.query([self.python, "-c", _WRITE_SHIM_SNIPPET, version, SHIM_INIT], self.env)

    def installed_dists(self) -> set[str]:
        rc, out = self.query([self.python, "-c", _DISTS_SNIPPET], self.env)
        lines = [ln for ln in out.splitlines() if ln.startswith("[")]
        if rc != 0 or not lines:
            return set()
        return {normalize_dist(n) for n in json.loads(lines[-1]) if n}

    def run(self, cmd: Sequence[str]) -> int:
        if self.execute is not None:
            return self.execute(cmd, self.env)
        return subprocess.run(list(cmd), env=dict(self.env), check=False).returncode


@dataclass
class Plan:
    trt_version: str
    trt_source: str
    cuda_major: int
    cuda_source: str
    requirement: str
    index_url: str
    commands: list[list[str]] = field(default_factory=list)
    current: ImportResult | None = None
    nothing_to_do: bool = False
    frontend: bool = False  # bindings layout: make sure `tensorrt` (the front end) exists afterwards

    def describe(self) -> dict[str, Any]:
        return {
            "trt_version": self.trt_version,
            "trt_source": self.trt_source,
            "cuda_major": self.cuda_major,
            "cuda_source": self.cuda_source,
            "requirement": self.requirement,
            "commands": [shlex.join(c) for c in self.commands],
            "frontend": self.frontend,
        }


def read_index_url(pyproject: Path) -> str | None:
    """The NVIDIA index from pyproject.toml: the rtx5090 feature's ``pypi-options``, then the workspace's."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return None
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pixi = data.get("tool", {}).get("pixi", {})
    scopes = [pixi.get("feature", {}).get(PIXI_FEATURE, {}).get("pypi-options", {}), pixi.get("pypi-options", {})]
    for opts in scopes:
        urls = [*(opts.get("extra-index-urls") or []), opts.get("index-url") or ""]
        for url in urls:
            if "nvidia" in url:
                return url
    return None


def detect_trt_version(world: World) -> tuple[str, str]:
    """``(version, where)`` of the machine's libnvinfer (pip's tensorrt_libs is not the machine's)."""
    dirs = trtenv.search_dirs(world.env, world.container_lib_dirs)
    libs = trtenv.find_libs(dirs, "libnvinfer")
    lib = trtenv.primary_lib(libs)
    if lib is None:
        searched = ", ".join(d.path for d in dirs)
        raise UserError(
            f"no libnvinfer.so.* found in {searched}; run inside the NGC TensorRT container, set TENSORRT_HOME, "
            "or pass --trt-version X.Y.Z (with --full to get the libraries from pip)"
        )
    if len(trtenv.parse_version(lib.version) or ()) < 2:
        raise UserError(
            f"cannot tell the TensorRT version of {lib.path} (no full version in its name); pass --trt-version X.Y.Z"
        )
    others = [
        v for v in trtenv.distinct_versions([x for x in libs if x.source != trtenv.SOURCE_PIP]) if v != lib.version
    ]
    if others:
        world.log(f"note: other libnvinfer versions found too ({', '.join(others)}); using the first: {lib.path}")
    return str(lib.version), lib.path


INDEX_PLACEHOLDER = "INDEX_URL"


def make_plan(
    world: World,
    trt_version: str | None,
    cuda_major: int | None,
    full: bool,
    index_url: str | None,
    force: bool = False,
    dry_run: bool = False,
) -> Plan:
    url = index_url or read_index_url(world.pyproject)
    if not url and dry_run:  # it only prints: show where the index goes instead of refusing
        world.log(f"no --index-url given: the commands below show {INDEX_PLACEHOLDER} where a real run needs one")
        url = INDEX_PLACEHOLDER
    if not url:
        raise UserError(
            f"no NVIDIA package index: pass --index-url https://pypi.nvidia.com or add it to extra-index-urls of "
            f"[tool.pixi.feature.{PIXI_FEATURE}.pypi-options] in {world.pyproject}"
        )
    if trt_version:
        if len(trtenv.parse_version(trt_version) or ()) < 3:
            raise UserError(f"--trt-version {trt_version!r}: give the full version, e.g. 10.13.3")
        version, source = trt_version, "--trt-version"
    else:
        version, source = detect_trt_version(world)
    major = trtenv.version_major(version) or 10
    if cuda_major:
        cuda, cuda_source = cuda_major, "--cuda-major"
    else:
        lib_dirs = [d.path for d in trtenv.search_dirs(world.env, world.container_lib_dirs)]
        cuda, cuda_source = trtenv.detect_cuda_major(world.env, major, lib_dirs + list(world.cuda_lib_dirs))
    requirement = trtenv.trt_requirement(version, cuda, full=full)
    plan = Plan(version, source, cuda, cuda_source, requirement, url)

    plan.current = world.probe_import()
    plan.frontend = not full
    if plan.current.ok and trtenv.same_release(plan.current.version, version) and not force:
        plan.nothing_to_do = True
        return plan
    if not full and not force and not plan.current.ok and _no_tensorrt_module(plan.current):
        bindings = world.probe_bindings()
        if bindings.ok and trtenv.same_release(bindings.version, version):
            return plan  # the right bindings are there; only the front end is missing

    py = [world.python, "-m", "pip"]
    other = {12: 13, 13: 12}.get(cuda, 12)
    conflicts = {f"tensorrt-cu{other}", f"tensorrt-cu{other}-libs", f"tensorrt-cu{other}-bindings", "tensorrt-bindings"}
    if full:
        conflicts.add(SHIM_DIST)  # tensorrt-cuXX brings its own front end
    else:
        # pip's own libnvinfer would shadow the container's: remove it with the meta packages that pull it in
        conflicts |= {"tensorrt", "tensorrt-libs", f"tensorrt-cu{cuda}", f"tensorrt-cu{cuda}-libs"}
    present = sorted(conflicts & world.installed_dists())
    if present:
        plan.commands.append([*py, "uninstall", "-y", *present])
    install = [*py, "install", "--extra-index-url", url]
    if force:
        install.append("--force-reinstall")
    plan.commands.append([*install, requirement])
    return plan


def _no_tensorrt_module(result: ImportResult) -> bool:
    """The import failed because there is no module ``tensorrt`` at all (not a broken one)."""
    return "No module named 'tensorrt'" in (result.error or "")


def ensure_frontend(world: World, plan: Plan) -> ImportResult:
    """``import tensorrt`` after a bindings install: write the front end when only ``tensorrt_bindings`` exists."""
    after = world.probe_import()
    if after.ok or not plan.frontend or not _no_tensorrt_module(after):
        return after
    bindings = world.probe_bindings()
    if not bindings.ok:
        raise UserError(
            f"installed {plan.requirement} but neither `import tensorrt` nor `import tensorrt_bindings` works: "
            f"{bindings.error}; make sure LD_LIBRARY_PATH holds the TensorRT lib folder (run through "
            "`pixi run -e rtx5090`) and run `pixi run -e rtx5090 trt-doctor`"
        )
    world.log(
        f"tensorrt_bindings {bindings.version} imports ({bindings.file}) but `import tensorrt` does not: the "
        "bindings wheel has no front end; writing it (the two lines of NVIDIA's tensorrt-cuXX, without its libs)"
    )
    rc, out = world.write_frontend(str(bindings.version))
    if rc != 0:
        tail = " ".join(out.strip().splitlines()[-1:]) or f"exit {rc}"
        raise UserError(f"could not write the tensorrt front end into {world.python}'s site-packages: {tail}")
    return world.probe_import()


def main(argv: Sequence[str] | None = None, world: World | None = None) -> int:
    parser = make_parser(
        __doc__.splitlines()[1],
        [
            "pixi run -e rtx5090 setup-tensorrt --dry-run",
            "pixi run -e rtx5090 setup-tensorrt",
            "pixi run -e rtx5090 setup-tensorrt --full --trt-version 10.13.3 --cuda-major 12",
        ],
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    parser.add_argument("--full", action="store_true", help="install the full tensorrt-cuXX wheels (libs, ~2 GB)")
    parser.add_argument("--trt-version", help="TensorRT version to match (default: read from the libnvinfer file name)")
    parser.add_argument("--cuda-major", type=int, choices=(12, 13), help="CUDA major of the packages (default: detect)")
    parser.add_argument("--index-url", help="NVIDIA package index (default: from pyproject.toml pypi-options)")
    parser.add_argument("--force", action="store_true", help="reinstall even when the right version imports")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    world = world or World(env=dict(os.environ))

    plan = make_plan(world, args.trt_version, args.cuda_major, args.full, args.index_url, args.force, args.dry_run)
    world.log(
        f"TensorRT {plan.trt_version} (from {plan.trt_source}), CUDA {plan.cuda_major} (from {plan.cuda_source}) "
        f"-> {plan.requirement}"
    )
    if plan.nothing_to_do:
        assert plan.current is not None
        world.log(f"tensorrt {plan.current.version} already importable ({plan.current.file}); nothing to do")
        return 0
    if plan.current and plan.current.ok:
        world.log(f"currently importable: tensorrt {plan.current.version} ({plan.current.file})")
    for cmd in plan.commands:
        if args.dry_run:
            world.log(f"would run: {shlex.join(cmd)}")
            continue
        world.log(f"running: {shlex.join(cmd)}")
        rc = world.run(cmd)
        if rc != 0:
            raise UserError(
                f"`{shlex.join(cmd)}` failed (exit {rc}); check access to {plan.index_url} (see pip's output above)"
            )
    if args.dry_run:
        if plan.frontend:
            world.log("would write the tensorrt front end over tensorrt_bindings if `import tensorrt` then fails")
        world.log(f"would verify: {world.python} -c 'import tensorrt'")
        return 0
    after = ensure_frontend(world, plan)
    if not after.ok:
        raise UserError(
            f"installed {plan.requirement} but `import tensorrt` fails: {after.error}; make sure LD_LIBRARY_PATH "
            "holds the TensorRT lib folder (run through `pixi run -e rtx5090`) and run `pixi run -e rtx5090 trt-doctor`"
        )
    if not trtenv.same_release(after.version, plan.trt_version):
        raise UserError(
            f"`import tensorrt` gives {after.version} ({after.file}), not {plan.trt_version}; another tensorrt "
            "package shadows it: run `pixi run -e rtx5090 trt-doctor`"
        )
    world.log(f"ok: tensorrt {after.version} imports from {after.file}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
