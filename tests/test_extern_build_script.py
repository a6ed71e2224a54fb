"""extern/build-onnxruntime-cuda-12_8.sh: shellcheck and the build.sh command lines of --dry-run."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "extern" / "build-onnxruntime-cuda-12_8.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not on PATH")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def toolchain(tmp_path: Path) -> dict[str, str]:
    """Fake CUDA / cuDNN homes and a source dir that does not exist (nothing may be cloned)."""
    touch(tmp_path / "cuda/include/cuda.h")
    touch(tmp_path / "cudnn/include/cudnn.h")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "CUDA_HOME": str(tmp_path / "cuda"),
        "CUDNN_HOME": str(tmp_path / "cudnn"),
        "ONNXR_SRC_DIR": str(tmp_path / "src/onnxruntime"),
        "ONNXR_JOBS": "3",
        "PYTHON": "python-that-does-not-exist",
    }


def fake_trt_home(root: Path, version: str = "10.13.3", targets: bool = False) -> Path:
    base = root / "targets/x86_64-linux-gnu" if targets else root
    touch(base / "include/NvInfer.h")
    touch(base / f"lib/libnvinfer.so.{version}")
    return base


def dry_run(env: dict[str, str], *args: str) -> tuple[list[str], str]:
    proc = subprocess.run(
        [BASH, str(SCRIPT), "--dry-run", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return shlex.split(lines[-1]), proc.stdout


def value(cmd: list[str], flag: str) -> str:
    assert flag in cmd, f"{flag} missing from {cmd}"
    return cmd[cmd.index(flag) + 1]


def test_shellcheck_clean() -> None:
    sc = shutil.which("shellcheck")
    if sc is None:
        pytest.skip("shellcheck not on PATH (apt-get install -y shellcheck)")
    proc = subprocess.run([sc, "-x", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cuda_ep_only(tmp_path: Path, toolchain: dict[str, str]) -> None:
    cmd, out = dry_run(toolchain, "-o", str(tmp_path / "out"))
    assert cmd[0] == f"{toolchain['ONNXR_SRC_DIR']}/build.sh"
    for flag in ("--update", "--build", "--build_wheel", "--skip_tests", "--use_cuda"):
        assert flag in cmd
    assert value(cmd, "--config") == "Release"
    assert value(cmd, "--build_dir") == str(tmp_path / "out/build")
    assert value(cmd, "--parallel") == "3"
    assert value(cmd, "--cuda_home") == toolchain["CUDA_HOME"]
    assert value(cmd, "--cudnn_home") == toolchain["CUDNN_HOME"]
    assert value(cmd, "--cmake_extra_defines") == "CMAKE_CUDA_ARCHITECTURES=120"
    assert "--use_tensorrt" not in cmd and "--tensorrt_home" not in cmd
    assert ("--allow_running_as_root" in cmd) == (os.geteuid() == 0)
    # a dry run neither clones nor creates anything
    assert "would clone" in out
    assert not Path(toolchain["ONNXR_SRC_DIR"]).exists()
    assert not (tmp_path / "out").exists()


def test_use_tensorrt_from_tensorrt_home(tmp_path: Path, toolchain: dict[str, str]) -> None:
    home = fake_trt_home(tmp_path / "TensorRT-10.13.3")
    env = {**toolchain, "TENSORRT_HOME": str(home)}
    cmd, out = dry_run(env, "-o", "tmp/ort-build", "--use-tensorrt")
    assert "--use_cuda" in cmd and "--use_tensorrt" in cmd
    assert value(cmd, "--tensorrt_home") == str(home)
    assert value(cmd, "--build_dir") == str(REPO / "tmp/ort-build/build")  # relative -o is under the repo
    assert value(cmd, "--cmake_extra_defines") == "CMAKE_CUDA_ARCHITECTURES=120"
    assert "at v1.23.2" in out


def test_tensorrt_home_found_through_ld_library_path(tmp_path: Path, toolchain: dict[str, str]) -> None:
    base = fake_trt_home(tmp_path / "usr/local/tensorrt", version="11.4.0", targets=True)
    env = {**toolchain, "LD_LIBRARY_PATH": f"/nonexistent:{base / 'lib'}"}
    cmd, out = dry_run(env, "-o", str(tmp_path / "o"), "--use-tensorrt")
    assert value(cmd, "--tensorrt_home") == str(base)
    assert "at v1.27.0" in out  # TensorRT 11 needs ORT >= 1.27


def test_custom_archs_and_extra_args(tmp_path: Path, toolchain: dict[str, str]) -> None:
    home = fake_trt_home(tmp_path / "trt")
    args = ["-o", str(tmp_path / "o"), "--use-tensorrt", "--tensorrt-home", str(home), "--cuda-archs", "90;120"]
    cmd, _ = dry_run(toolchain, *args, "--ort-ref", "v1.22.0", "-j", "7", "--", "--cmake_extra_defines", "A=B")
    assert value(cmd, "--tensorrt_home") == str(home)
    assert value(cmd, "--parallel") == "7"
    assert cmd[cmd.index("--cmake_extra_defines") + 1] == "CMAKE_CUDA_ARCHITECTURES=90;120"
    assert cmd[-2:] == ["--cmake_extra_defines", "A=B"]


def _real_trt_present() -> bool:
    for p in ("/usr/local/tensorrt", "/opt/tensorrt", "/usr", "/usr/local/tensorrt/targets/x86_64-linux-gnu"):
        for inc in ("include", "include/x86_64-linux-gnu", "targets/x86_64-linux-gnu/include"):
            if Path(p, inc, "NvInfer.h").exists():
                return True
    return False


@pytest.mark.skipif(_real_trt_present(), reason="this machine has TensorRT headers in a default location")
def test_missing_tensorrt_is_a_clear_error(tmp_path: Path, toolchain: dict[str, str]) -> None:
    proc = subprocess.run(
        [BASH, str(SCRIPT), "-o", str(tmp_path / "o"), "--use-tensorrt", "--dry-run"],
        env=toolchain,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--tensorrt-home" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "missing -o/--output-dir"),
        (["-o", "x", "--bogus"], "unknown argument: --bogus"),
        (["-o", "x", "--tensorrt-home"], "--tensorrt-home needs a value"),
        (["-o", "x", "-j", "many"], "--jobs must be a positive number"),
        (["-o", "x", "--cuda-archs", "90 120"], "--cuda-archs must look like"),
    ],
)
def test_usage_errors(toolchain: dict[str, str], args: list[str], needle: str) -> None:
    proc = subprocess.run(
        [BASH, str(SCRIPT), "--dry-run", *args], env=toolchain, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert needle in proc.stderr


def test_help_has_examples() -> None:
    proc = subprocess.run([BASH, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "examples:" in proc.stdout and "--use-tensorrt" in proc.stdout
