"""setup-tensorrt: the exact pip commands it plans for TensorRT 10/11 layouts and CUDA 12/13."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import setup_tensorrt

from common.core.cli import run_main

PY = "/env/bin/python"
NV = "https://pypi.nvidia.com"


def make_libs(d: Path, version: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"libnvinfer.so.{version}").write_bytes(b"x")
    os.symlink(f"libnvinfer.so.{version}", d / f"libnvinfer.so.{version.split('.')[0]}")
    return d


class FakePython:
    """Answers setup-tensorrt's probes of the target Python; records commands it would run.

    ``after``: the version ``import tensorrt`` gives once an install ran (a wheel with the front end);
    ``after_bindings``: the version of ``tensorrt_bindings`` once an install ran, without a front end
    (what ``pip install tensorrt-cuXX-bindings`` really leaves).
    """

    def __init__(
        self,
        trt_version: str | None = None,
        dists: Sequence[str] = (),
        after: str | None = None,
        bindings: str | None = None,
        after_bindings: str | None = None,
    ):
        self.trt_version = trt_version
        self.bindings = bindings if bindings is not None else trt_version
        self.after = after
        self.after_bindings = after_bindings
        self.dists = list(dists)
        self.executed: list[list[str]] = []
        self.frontends: list[tuple[str, str]] = []

    def query(self, cmd: Sequence[str], env: Mapping[str, str]) -> tuple[int, str]:
        if "sysconfig" in cmd[2]:  # setup-tensorrt writes the front end: (snippet, version, init text)
            assert self.trt_version is None and self.bindings is not None
            self.frontends.append((cmd[3], cmd[4]))
            self.trt_version = self.bindings
            return 0, json.dumps({"file": "/env/site/tensorrt/__init__.py"}) + "\n"
        code = cmd[-1]
        if "import json, tensorrt;" in code:
            if self.trt_version is None:
                return 1, "Traceback...\nModuleNotFoundError: No module named 'tensorrt'\n"
            return 0, json.dumps({"version": self.trt_version, "file": "/env/tensorrt/__init__.py"}) + "\n"
        if "import json, tensorrt_bindings" in code:
            if self.bindings is None:
                return 1, "Traceback...\nModuleNotFoundError: No module named 'tensorrt_bindings'\n"
            return 0, json.dumps({"version": self.bindings, "file": "/env/tensorrt_bindings/__init__.py"}) + "\n"
        if "distributions" in code:
            return 0, json.dumps(self.dists) + "\n"
        raise AssertionError(f"unexpected query {cmd}")

    def execute(self, cmd: Sequence[str], env: Mapping[str, str]) -> int:
        self.executed.append(list(cmd))
        if self.after:
            self.trt_version = self.bindings = self.after
        if self.after_bindings:
            self.bindings = self.after_bindings
        return 0


def world(tmp_path: Path, env: dict[str, str], fake: FakePython, libs: Sequence[Path] = (), pyproject: str = ""):
    pp = tmp_path / "pyproject.toml"
    pp.write_text(pyproject)
    lines: list[str] = []
    w = setup_tensorrt.World(
        env=env,
        python=PY,
        container_lib_dirs=[str(p) for p in libs],
        cuda_lib_dirs=(),
        pyproject=pp,
        query=fake.query,
        execute=fake.execute,
        log=lines.append,
    )
    return w, lines


def would_run(lines: list[str]) -> list[list[str]]:
    return [shlex.split(ln.removeprefix("would run: ")) for ln in lines if ln.startswith("would run: ")]


@pytest.mark.parametrize(
    ("trt", "cuda_version", "layout", "package"),
    [
        ("10.13.3", "12.8.1.012", "usr/local/tensorrt/targets/x86_64-linux-gnu/lib", "tensorrt-cu12-bindings"),
        ("10.13.3", "13.0.1", "usr/lib/x86_64-linux-gnu", "tensorrt-cu13-bindings"),
        ("11.4.0", "13.0.2", "usr/local/tensorrt/targets/x86_64-linux-gnu/lib", "tensorrt-cu13-bindings"),
    ],
)
def test_dry_run_bindings_command(tmp_path: Path, trt: str, cuda_version: str, layout: str, package: str) -> None:
    lib = make_libs(tmp_path / layout, trt)
    fake = FakePython()
    w, lines = world(tmp_path, {"CUDA_VERSION": cuda_version}, fake, libs=[lib])
    assert setup_tensorrt.main(["--dry-run", "--index-url", NV], world=w) == 0
    assert would_run(lines) == [[PY, "-m", "pip", "install", "--extra-index-url", NV, f"{package}=={trt}.*"]]
    assert fake.executed == []


def test_cuda_major_defaults_by_trt_major_without_cuda_hints(tmp_path: Path) -> None:
    for trt, package in (("11.2.1", "tensorrt-cu13-bindings"), ("10.9.0", "tensorrt-cu12-bindings")):
        lib = make_libs(tmp_path / trt, trt)
        w, lines = world(tmp_path, {}, FakePython(), libs=[lib])
        assert setup_tensorrt.main(["--dry-run", "--index-url", NV], world=w) == 0
        assert would_run(lines)[-1][-1] == f"{package}=={trt}.*"


def test_ld_library_path_comes_before_container_dirs(tmp_path: Path) -> None:
    first = make_libs(tmp_path / "ld", "10.13.3")
    container = make_libs(tmp_path / "container", "10.8.0")
    w, lines = world(tmp_path, {"LD_LIBRARY_PATH": str(first), "CUDA_VERSION": "12.8"}, FakePython(), libs=[container])
    assert setup_tensorrt.main(["--dry-run", "--index-url", NV], world=w) == 0
    assert would_run(lines)[-1][-1] == "tensorrt-cu12-bindings==10.13.3.*"
    assert any(ln.startswith("note: other libnvinfer versions found too (10.8.0)") for ln in lines)


def test_full_wheels_pinned(tmp_path: Path) -> None:
    w, lines = world(tmp_path, {}, FakePython())
    argv = ["--dry-run", "--full", "--trt-version", "10.13.3", "--cuda-major", "12", "--index-url", NV]
    assert setup_tensorrt.main(argv, world=w) == 0
    assert would_run(lines) == [[PY, "-m", "pip", "install", "--extra-index-url", NV, "tensorrt-cu12==10.13.3.*"]]


def test_index_url_read_from_pyproject(tmp_path: Path) -> None:
    lib = make_libs(tmp_path / "lib", "10.13.3")
    toml = '[tool.pixi.feature.rtx5090.pypi-options]\nextra-index-urls = ["https://pypi.nvidia.com/"]\n'
    w, lines = world(tmp_path, {"CUDA_VERSION": "12.8"}, FakePython(), libs=[lib], pyproject=toml)
    assert setup_tensorrt.main(["--dry-run"], world=w) == 0
    assert would_run(lines)[-1][:6] == [PY, "-m", "pip", "install", "--extra-index-url", "https://pypi.nvidia.com/"]


def test_no_index_url_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = make_libs(tmp_path / "lib", "10.13.3")
    fake = FakePython()
    w, _ = world(tmp_path, {}, fake, libs=[lib], pyproject="[tool.pixi]\n")
    assert run_main(lambda argv: setup_tensorrt.main(argv, world=w), []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no NVIDIA package index: pass --index-url") and err.count("\n") == 1
    assert fake.executed == []


def test_dry_run_without_index_url_shows_the_command(tmp_path: Path) -> None:
    """--dry-run only prints, so outside Pixi (no --index-url, no pyproject entry) it still shows the pip command."""
    lib = make_libs(tmp_path / "lib", "10.13.3")
    fake = FakePython()
    w, lines = world(tmp_path, {"CUDA_VERSION": "12.8"}, fake, libs=[lib], pyproject="[tool.pixi]\n")
    assert setup_tensorrt.main(["--dry-run"], world=w) == 0
    install = would_run(lines)[-1]
    assert install[:6] == [PY, "-m", "pip", "install", "--extra-index-url", setup_tensorrt.INDEX_PLACEHOLDER]
    assert any("--index-url" in ln for ln in lines) and fake.executed == []


def test_already_at_right_version_does_nothing(tmp_path: Path) -> None:
    lib = make_libs(tmp_path / "lib", "10.13.3")
    fake = FakePython(trt_version="10.13.3.9")
    w, lines = world(tmp_path, {"CUDA_VERSION": "12.8"}, fake, libs=[lib])
    assert setup_tensorrt.main(["--index-url", NV], world=w) == 0
    assert fake.executed == []
    assert any("nothing to do" in ln for ln in lines)


def test_mismatched_pip_tensorrt_is_replaced(tmp_path: Path) -> None:
    """A full pip TensorRT 10.7.0 (libs included) gives way to bindings for the container's 10.13.3."""
    lib = make_libs(tmp_path / "lib", "10.13.3")
    dists = ["numpy", "tensorrt", "tensorrt-cu12", "tensorrt-cu12-bindings", "tensorrt-cu12-libs"]
    fake = FakePython(trt_version="10.7.0", dists=dists)
    w, lines = world(tmp_path, {"CUDA_VERSION": "12.8"}, fake, libs=[lib])
    assert setup_tensorrt.main(["--dry-run", "--index-url", NV], world=w) == 0
    assert would_run(lines) == [
        [PY, "-m", "pip", "uninstall", "-y", "tensorrt", "tensorrt-cu12", "tensorrt-cu12-libs"],
        [PY, "-m", "pip", "install", "--extra-index-url", NV, "tensorrt-cu12-bindings==10.13.3.*"],
    ]


def test_real_install_runs_and_verifies(tmp_path: Path) -> None:
    lib = make_libs(tmp_path / "lib", "11.4.0")
    fake = FakePython(trt_version=None, after="11.4.0.106")
    w, lines = world(tmp_path, {"CUDA_VERSION": "13.0"}, fake, libs=[lib])
    assert setup_tensorrt.main(["--index-url", NV], world=w) == 0
    assert fake.executed == [[PY, "-m", "pip", "install", "--extra-index-url", NV, "tensorrt-cu13-bindings==11.4.0.*"]]
    assert lines[-1].startswith("ok: tensorrt 11.4.0.106 imports")


def test_install_that_does_not_import_is_an_error(tmp_path: Path) -> None:
    lib = make_libs(tmp_path / "lib", "10.13.3")
    fake = FakePython(trt_version=None, after=None)
    w, _ = world(tmp_path, {"CUDA_VERSION": "12.8"}, fake, libs=[lib])
    with pytest.raises(setup_tensorrt.UserError, match=r"import tensorrt` (fails|nor)"):
        setup_tensorrt.main(["--index-url", NV], world=w)


def test_no_libs_found_asks_for_version(tmp_path: Path) -> None:
    w, _ = world(tmp_path, {}, FakePython(), libs=[tmp_path / "nothing"])
    with pytest.raises(setup_tensorrt.UserError, match=r"no libnvinfer\.so\.\* found .*--trt-version"):
        setup_tensorrt.main(["--dry-run", "--index-url", NV], world=w)
    with pytest.raises(setup_tensorrt.UserError, match="full version"):
        setup_tensorrt.main(["--dry-run", "--index-url", NV, "--trt-version", "10"], world=w)


# ----------------------------------------------------------------------------- issue 11: bindings-only layout


def test_bindings_wheel_without_front_end_ends_with_import_tensorrt(tmp_path: Path) -> None:
    """pip install tensorrt-cu12-bindings gives only `tensorrt_bindings`: setup writes the front end."""
    lib = make_libs(tmp_path / "lib", "10.13.3")
    fake = FakePython(trt_version=None, after_bindings="10.13.3.9")
    w, lines = world(tmp_path, {"CUDA_VERSION": "12.8"}, fake, libs=[lib])
    assert setup_tensorrt.main(["--index-url", NV], world=w) == 0
    assert fake.executed == [[PY, "-m", "pip", "install", "--extra-index-url", NV, "tensorrt-cu12-bindings==10.13.3.*"]]
    assert len(fake.frontends) == 1
    version, init = fake.frontends[0]
    assert version == "10.13.3.9"
    assert "from tensorrt_bindings import *" in init and "from tensorrt_bindings import __version__" in init
    assert lines[-1].startswith("ok: tensorrt 10.13.3.9 imports")


def test_bindings_already_there_only_front_end_written(tmp_path: Path) -> None:
    lib = make_libs(tmp_path / "lib", "11.4.0")
    fake = FakePython(trt_version=None, bindings="11.4.0.106")
    w, lines = world(tmp_path, {"CUDA_VERSION": "13.0"}, fake, libs=[lib])
    assert setup_tensorrt.main(["--index-url", NV], world=w) == 0
    assert fake.executed == [] and len(fake.frontends) == 1
    assert lines[-1].startswith("ok: tensorrt 11.4.0.106 imports")


def test_full_install_removes_our_front_end_first(tmp_path: Path) -> None:
    fake = FakePython(trt_version="10.13.3.9", dists=["tensorrt-frontend-shim", "tensorrt-cu12-bindings"])
    w, lines = world(tmp_path, {}, fake)
    argv = ["--dry-run", "--full", "--trt-version", "10.8.0", "--cuda-major", "12", "--index-url", NV]
    assert setup_tensorrt.main(argv, world=w) == 0
    assert would_run(lines)[0] == [PY, "-m", "pip", "uninstall", "-y", "tensorrt-frontend-shim"]


@pytest.mark.parametrize("installed", ["10.7.0.post1", "10.13.3.9.post1"])
def test_post_release_bindings_are_the_right_version(tmp_path: Path, installed: str) -> None:
    """PyPI's X.Y.Z.post1 wheels, picked by ==X.Y.Z.*, are that release: nothing to do."""
    lib_version = ".".join(installed.split(".")[:3])
    lib = make_libs(tmp_path / "lib", lib_version)
    fake = FakePython(trt_version=None, after=installed)
    w, lines = world(tmp_path, {"CUDA_VERSION": "12.8"}, fake, libs=[lib])
    assert setup_tensorrt.main(["--index-url", NV], world=w) == 0
    assert lines[-1].startswith(f"ok: tensorrt {installed} imports")
    again = FakePython(trt_version=installed)
    w, lines = world(tmp_path, {"CUDA_VERSION": "12.8"}, again, libs=[lib])
    assert setup_tensorrt.main(["--index-url", NV], world=w) == 0
    assert again.executed == [] and any("nothing to do" in ln for ln in lines)


def test_post_release_version_pins() -> None:
    from common.trt import env as trtenv

    assert trtenv.version_pin("10.7.0.post1") == "==10.7.0.post1"
    assert trtenv.parse_version("10.13.3.9.post1") == (10, 13, 3, 9)
    assert trtenv.same_release("10.7.0.post1", "10.7.0")
    assert trtenv.version_major("10.14.1.48.post1") == 10
    assert trtenv.parse_version("not-a-version") is None


@pytest.mark.slow
@pytest.mark.parametrize("version", ["10.7.0", "10.13.3.9", "11.4.0.106"])
def test_real_bindings_only_python_gets_import_tensorrt(tmp_path: Path, version: str) -> None:
    """A real Python with NVIDIA's real bindings wheel only (the FRONTEND=0 stand-in): setup-tensorrt, for
    real (no fakes, no pip run since the bindings are there), ends with `import tensorrt` giving that version,
    and the doctor's probe then reports it."""
    import subprocess
    import sys

    from test_trt_api_versions import api_dir, require_variant

    env = require_variant(version, "bindings")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    # a container-style lib folder: libnvinfer.so.<X.Y.Z> (the stand-in) beside its SONAME link
    release = ".".join(version.split(".")[:3])
    libs = tmp_path / "trt-lib"
    libs.mkdir()
    stub = api_dir(version, "bindings") / "lib"
    major = version.split(".")[0]
    os.symlink(stub / f"libnvinfer.so.{major}", libs / f"libnvinfer.so.{release}")
    env = {**env, "LD_LIBRARY_PATH": f"{libs}:{stub}"}
    env.pop("YOLO_TRT_TEST_BACKEND", None)
    before = subprocess.run([py, "-c", "import tensorrt"], env=env, capture_output=True, text=True)
    assert "No module named 'tensorrt'" in before.stderr
    lines: list[str] = []

    def no_pip(cmd: Sequence[str], env: Mapping[str, str]) -> int:  # the bindings are there: nothing to install
        pytest.fail(f"setup-tensorrt ran {cmd}")

    w = setup_tensorrt.World(
        env=env,
        python=py,
        container_lib_dirs=(),
        cuda_lib_dirs=(),
        pyproject=tmp_path / "none.toml",
        execute=no_pip,
        log=lines.append,
    )
    assert setup_tensorrt.main(["--index-url", NV], world=w) == 0, lines
    assert lines[-1].startswith(f"ok: tensorrt {version} imports from {venv}"), lines
    after = subprocess.run(
        [py, "-c", "import tensorrt as trt; print(trt.__version__, trt.Logger, trt.BuilderFlag)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert after.returncode == 0 and after.stdout.startswith(version), after.stderr
    listed = subprocess.run(
        [py, "-c", "import importlib.metadata as m; print(m.version('tensorrt-frontend-shim'))"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert listed.stdout.strip() == version
    # idempotent: a second run does nothing
    lines.clear()
    assert setup_tensorrt.main(["--index-url", NV], world=w) == 0 and "nothing to do" in lines[-1]
    import trt_doctor

    probe = trt_doctor.run_probe(trt_doctor.DoctorInputs(env=env, python=py, session=False))
    assert probe["tensorrt"]["ok"] and probe["tensorrt"]["version"] == version
