"""setup-tensorrt: the exact pip commands it plans for TensorRT 10/11 layouts and CUDA 12/13."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import setup_tensorrt

from common.cli import run_main

PY = "/env/bin/python"
NV = "https://pypi.nvidia.com"


def make_libs(d: Path, version: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"libnvinfer.so.{version}").write_bytes(b"x")
    os.symlink(f"libnvinfer.so.{version}", d / f"libnvinfer.so.{version.split('.')[0]}")
    return d


class FakePython:
    """Answers setup-tensorrt's probes of the target Python; records commands it would run."""

    def __init__(self, trt_version: str | None = None, dists: Sequence[str] = (), after: str | None = None):
        self.trt_version = trt_version
        self.after = after  # version importable once an install ran
        self.dists = list(dists)
        self.executed: list[list[str]] = []

    def query(self, cmd: Sequence[str], env: Mapping[str, str]) -> tuple[int, str]:
        code = cmd[-1]
        if "import json, tensorrt" in code:
            if self.trt_version is None:
                return 1, "Traceback...\nModuleNotFoundError: No module named 'tensorrt'\n"
            return 0, json.dumps({"version": self.trt_version, "file": "/env/tensorrt/__init__.py"}) + "\n"
        if "distributions" in code:
            return 0, json.dumps(self.dists) + "\n"
        raise AssertionError(f"unexpected query {cmd}")

    def execute(self, cmd: Sequence[str], env: Mapping[str, str]) -> int:
        self.executed.append(list(cmd))
        if self.after:
            self.trt_version = self.after
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
    w, _ = world(tmp_path, {}, FakePython(), libs=[lib], pyproject="[tool.pixi]\n")
    assert run_main(lambda argv: setup_tensorrt.main(argv, world=w), ["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no NVIDIA package index: pass --index-url") and err.count("\n") == 1


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
    with pytest.raises(setup_tensorrt.UserError, match="import tensorrt` fails"):
        setup_tensorrt.main(["--index-url", NV], world=w)


def test_no_libs_found_asks_for_version(tmp_path: Path) -> None:
    w, _ = world(tmp_path, {}, FakePython(), libs=[tmp_path / "nothing"])
    with pytest.raises(setup_tensorrt.UserError, match=r"no libnvinfer\.so\.\* found .*--trt-version"):
        setup_tensorrt.main(["--dry-run", "--index-url", NV], world=w)
    with pytest.raises(setup_tensorrt.UserError, match="full version"):
        setup_tensorrt.main(["--dry-run", "--index-url", NV, "--trt-version", "10"], world=w)
