"""Rerun the TensorRT-facing tests against NVIDIA's real ``tensorrt`` Python API of several versions.

Each version lives in ${XDG_CACHE_HOME:-~/.cache}/yolov10-trt-toolkit/trt-api/<version>/{site,lib}
(made by scripts/dev/install-trt-apis.sh from ../shared/trt-stubs: real bindings, stand-in native
libraries). Per version, a subprocess pytest runs the TensorRT-facing modules with
YOLO_TRT_TEST_BACKEND=tensorrt and that version's PYTHONPATH / LD_LIBRARY_PATH; Builder, OnnxParser
and Runtime are the test double there, everything else is the real API of that version.
No network here: a version that is not installed is skipped with the command that installs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERSIONS = ("10.7.0", "10.13.3.9", "11.4.0.106")
MODULES = ("tests/test_trt_conformance.py", "tests/test_trt_runtime.py")
# The 50-image ORT-vs-TRT evaluator comparison runs once, in the main session (tensorrt-rtx API):
# it exercises the pipeline, not version-dependent TensorRT calls, and costs ~30 s per run.
DESELECT = "not reproduces_ort_evaluator"


def api_dir(version: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "yolov10-trt-toolkit" / "trt-api" / version


@pytest.mark.slow
@pytest.mark.skipif("YOLO_TRT_TEST_BACKEND" in os.environ, reason="already inside a per-version run")
@pytest.mark.parametrize("version", VERSIONS)
def test_trt_facing_tests_pass_on_real_api(version):
    d = api_dir(version)
    if not (d / "site" / "tensorrt").exists() or not (d / "lib").is_dir():
        pytest.skip(f"tensorrt API {version} not installed in {d}; run: "
                    f"PYTHON={sys.executable} bash scripts/dev/install-trt-apis.sh")
    env = {**os.environ, "YOLO_TRT_TEST_BACKEND": "tensorrt", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(d / "site"), os.environ.get("PYTHONPATH")) if p),
           "LD_LIBRARY_PATH": os.pathsep.join(p for p in (str(d / "lib"), os.environ.get("LD_LIBRARY_PATH")) if p)}
    probe = subprocess.run([sys.executable, "-c", "import tensorrt; print(tensorrt.__version__)"],
                           env=env, capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"tensorrt API {version} in {d} does not import with {sys.executable} (installed for another "
                    f"Python? rerun PYTHON={sys.executable} bash scripts/dev/install-trt-apis.sh): "
                    f"{probe.stderr.strip()[-200:]}")
    assert probe.stdout.strip() == version
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", DESELECT,
                           *MODULES], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
    assert proc.returncode == 0, f"TensorRT-facing tests failed on tensorrt {version}:\n{tail}\n{proc.stderr[-2000:]}"
    assert " passed" in tail and " failed" not in tail
    print(f"tensorrt {version}: {tail.splitlines()[-1]}")
