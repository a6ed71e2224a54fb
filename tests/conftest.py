"""Shared test helpers: where the repo and the shared fixtures are, how to run a script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "cv-models"
FIXTURES = Path(os.environ.get("YOLO_FIXTURES", REPO.parent / "shared" / "fixtures"))
MINI = REPO / "datasets" / "synthcoco-mini"
DEMO_MODEL = REPO / "models" / "cv-models" / "yolov10n-synth" / "yolov10n-synth.onnx"


def fixture_path(*parts: str) -> Path:
    """A file under ../shared/fixtures, or skip the test when it is absent (users lack them)."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixture not present: {path}")
    return path


def cuda_device_count() -> int:
    """GPUs cuda-python sees (0 without cuda-python, a driver or a device)."""
    try:
        from cuda.bindings import runtime

        err, n = runtime.cudaGetDeviceCount()
    except Exception:
        return 0
    return int(n) if int(err) == 0 else 0


def nvrtc_or_skip() -> None:
    """Skip where NVRTC can't compile (no cuda-python or no libnvrtc); compiling needs no GPU."""
    try:
        from cuda.bindings import nvrtc

        nvrtc.nvrtcVersion()
    except Exception as exc:
        pytest.skip(f"NVRTC not usable here: {exc}")


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run scripts/cv-models/<script> in a fresh interpreter and capture its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def mini_coco():
    from common.data.coco import open_dataset

    return open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 0)


@pytest.fixture
def api():
    """The TensorRT API under test (tensorrt_rtx here; a real tensorrt version in the per-version runs)."""
    import trt_double as D

    return D.api_under_test()


@pytest.fixture
def double(monkeypatch, api):
    """The runtime double installed over that API's Runtime/Builder factories."""
    import trt_double as D

    return D.use_double(monkeypatch, api)
