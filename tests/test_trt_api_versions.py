"""Rerun the TensorRT-facing tests against NVIDIA's real TensorRT Python API of several versions,
in both package layouts a pip user can have.

Each variant lives in ${XDG_CACHE_HOME:-~/.cache}/yolov10-trt-toolkit/trt-api/ (made by
scripts/dev/install-trt-apis.sh from ../shared/trt-stubs: real bindings, stand-in native libraries):
  <version>/{site,lib}           ``tensorrt`` front end + bindings  (pip install tensorrt-cuXX)
  <version>-bindings/{site,lib}  bindings only, ``tensorrt_bindings`` (pip install tensorrt-cuXX-bindings)
Per variant, a subprocess pytest runs the TensorRT-facing modules with YOLO_TRT_TEST_BACKEND=tensorrt,
YOLO_TRT_TEST_LAYOUT=<layout> and that variant's PYTHONPATH / LD_LIBRARY_PATH; Builder, OnnxParser and
Runtime are the test double there, everything else is the real API of that version.
No network here: a variant that is not installed is skipped with the command that installs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERSIONS = ("10.7.0", "10.13.3.9", "11.4.0.106")
LAYOUTS = {"frontend": ("", "tensorrt"), "bindings": ("-bindings", "tensorrt_bindings")}
MODULES = (
    "tests/test_trt_conformance.py",
    "tests/test_trt_runtime.py",
    "tests/test_trt_runner.py",
    "tests/test_trt_smoke.py",
    "tests/test_trt_build_choices.py",
    "tests/test_trt_edge_cases.py",
    "tests/test_trt_double_refusals.py",
)
# The evaluator comparisons and the GPU pre-processing pipeline run once, in the main session (tensorrt-rtx API):
# they exercise the pipeline, not version-dependent TensorRT calls, and cost ~30 s per run.
DESELECT = (
    "not reproduces_ort_evaluator and not dynamic_batch_matches_ort and not device_preprocessing "
    "and not lanes_0_runs_one_plain_runner"
)


def api_dir(version: str, layout: str = "frontend") -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "yolov10-trt-toolkit" / "trt-api" / (version + LAYOUTS[layout][0])


def variant_env(version: str, layout: str) -> dict[str, str]:
    d = api_dir(version, layout)
    return {
        **os.environ,
        "YOLO_TRT_TEST_BACKEND": "tensorrt",
        "YOLO_TRT_TEST_LAYOUT": layout,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(d / "site"), os.environ.get("PYTHONPATH")) if p),
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in (str(d / "lib"), os.environ.get("LD_LIBRARY_PATH")) if p),
    }


def require_variant(version: str, layout: str) -> dict[str, str]:
    """The environment of one installed variant, or skip with the command that installs it."""
    d = api_dir(version, layout)
    module = LAYOUTS[layout][1]
    if not (d / "site" / module).exists() or not (d / "lib").is_dir():
        pytest.skip(
            f"tensorrt API {version} ({layout}) not installed in {d}; run: "
            f"PYTHON={sys.executable} bash scripts/dev/install-trt-apis.sh"
        )
    env = variant_env(version, layout)
    probe = subprocess.run(
        [sys.executable, "-c", f"import {module}; print({module}.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"tensorrt API {version} in {d} does not import with {sys.executable} (installed for another "
            f"Python? rerun PYTHON={sys.executable} bash scripts/dev/install-trt-apis.sh): "
            f"{probe.stderr.strip()[-200:]}"
        )
    assert probe.stdout.strip() == version
    return env


@pytest.mark.slow
@pytest.mark.skipif("YOLO_TRT_TEST_BACKEND" in os.environ, reason="already inside a per-version run")
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("version", VERSIONS)
def test_trt_facing_tests_pass_on_real_api(version, layout):
    env = require_variant(version, layout)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", DESELECT, *MODULES],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
    assert proc.returncode == 0, (
        f"TensorRT-facing tests failed on tensorrt {version} ({layout}):\n{tail}\n{proc.stderr[-2000:]}"
    )
    assert " passed" in tail and " failed" not in tail
    print(f"tensorrt {version} ({layout}): {tail.splitlines()[-1]}")
