"""``trt-doctor --smoke``: build a one-layer engine, run it with the plain runner, compare with NumPy.

TensorRT-facing: tests/test_trt_api_versions.py reruns this module against the real ``tensorrt`` Python API
of 10.7, 10.13 and 11.4 (both pip layouts); here it runs against ``tensorrt_rtx``. The pass path and each
failure run through the runtime double; ``test_real_smoke_here`` runs the real library of this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trt_doctor
import trt_double as D
from test_trt_doctor import healthy, run_doctor, status

from common.core.errors import UserError
from common.trt import runtime as trt_runtime
from common.trt import smoke

REPO = Path(__file__).resolve().parents[1]


def doctor_with(tmp_path: Path, result: smoke.SmokeResult | None) -> tuple[dict[str, Any], Any, str]:
    """The doctor of a healthy fake machine whose smoke check gave ``result`` (None: --smoke not given)."""
    inp = healthy(tmp_path)
    if result is not None:
        inp.smoke, inp.smoke_run = True, result.to_dict
    report, dx = run_doctor(inp)
    return report, dx, trt_doctor.render_table(report, dx)


def test_smoke_passes_through_the_plain_runner(tmp_path, api, double):
    state, _ = double
    result = smoke.smoke_check(api.name, tmp_path)
    assert result.passed, result
    assert state.executions == 1  # it really ran the engine once
    assert result.summary().startswith("smoke: built OK; ran; output matches NumPy")
    report, dx, text = doctor_with(tmp_path, result)
    assert dx.ready and status(dx, "smoke build") == "ok" and status(dx, "smoke run") == "ok"
    assert text.splitlines()[-1].startswith("READY for TensorRT (smoke check passed")
    assert report["smoke"]["passed"] is True


def test_ready_without_smoke_says_it_was_skipped(tmp_path):
    report, dx, text = doctor_with(tmp_path, None)
    assert dx.ready and report["smoke"] is None
    assert "smoke build" not in text
    assert text.splitlines()[-1] == (
        "READY for TensorRT (smoke check skipped: no engine was built or run; `trt-doctor --smoke` does)"
    )


def test_no_tensorrt_is_not_ready(tmp_path, monkeypatch):
    def no_trt(name: str | None = None) -> Any:
        raise UserError("neither tensorrt nor tensorrt_rtx can be imported (tensorrt: ModuleNotFoundError)")

    monkeypatch.setattr("common.trt.api.load_api", no_trt)
    result = smoke.smoke_check(None, tmp_path)
    assert result.stage == "import" and not result.built
    _, dx, text = doctor_with(tmp_path, result)
    assert not dx.ready and status(dx, "smoke build") == "FAIL"
    assert "smoke run" not in text
    assert "NOT READY" in text.splitlines()[-1]
    assert any("neither tensorrt nor tensorrt_rtx" in r["message"] for r in dx.recommendations)


def test_builder_that_cannot_start_cuda_fails_the_build(tmp_path, api, double, monkeypatch):
    """The real TensorRT-RTX 1.7 library logs this once a builder touches CUDA on an old driver."""

    def builder(logger: Any) -> None:
        logger.log(api.module.ILogger.Severity.ERROR, "cudaError 35: driver version is insufficient")
        return None  # the bindings: "factory function returned nullptr"

    monkeypatch.setattr(api.module, "Builder", builder)
    result = smoke.smoke_check(api.name, tmp_path)
    assert result.stage == "build" and "cudaError 35: driver version is insufficient" in result.detail
    _, dx, text = doctor_with(tmp_path, result)
    assert not dx.ready and status(dx, "smoke build") == "FAIL" and "smoke run" not in text
    assert "cudaError 35" in text


def test_no_cuda_device_is_built_ok_run_failed(tmp_path, api, double, monkeypatch):
    def no_device() -> Any:  # what common.gpu.cuda_mem.CudaMemory raises on this CPU machine
        raise UserError("no usable CUDA device (cudaGetDeviceCount: cudaErrorNoDevice)")

    monkeypatch.setattr(trt_runtime, "default_memory", no_device)
    result = smoke.smoke_check(api.name, tmp_path)
    assert result.built and result.stage == "run"
    assert result.summary() == "smoke: built OK; run: no usable CUDA device (cudaGetDeviceCount: cudaErrorNoDevice)"
    _, dx, _ = doctor_with(tmp_path, result)
    assert not dx.ready and status(dx, "smoke build") == "ok" and status(dx, "smoke run") == "FAIL"


def test_runtime_without_this_gpus_sm_fails_the_run(tmp_path, api, double, monkeypatch):
    msg = "IRuntime::deserializeCudaEngine: the engine was built for compute capability 8.9, this GPU is 12.0"

    def refuse(self: Any, blob: bytes) -> None:
        self._error(msg)
        return None

    monkeypatch.setattr(D.FakeRuntime, "deserialize_cuda_engine", refuse)
    result = smoke.smoke_check(api.name, tmp_path)
    assert result.stage == "run" and "compute capability 8.9" in result.detail
    _, dx, _ = doctor_with(tmp_path, result)
    assert not dx.ready and status(dx, "smoke run") == "FAIL"


def test_wrong_output_fails_the_compare(tmp_path, api, double, monkeypatch):
    """An engine that computes the identity instead of Relu (a broken kernel) is caught by the NumPy check."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(smoke.SMOKE_SHAPE))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(smoke.SMOKE_SHAPE))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "broken", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    broken = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    monkeypatch.setattr(D.FakeEngine, "_ort", lambda self: broken)
    result = smoke.smoke_check(api.name, tmp_path)
    assert result.stage == "compare" and "max |error|" in result.detail
    assert float(result.detail.split("max |error| ")[1].split()[0]) == float(np.max(-smoke.smoke_input()))
    _, dx, text = doctor_with(tmp_path, result)
    assert not dx.ready and status(dx, "smoke run") == "FAIL" and "output wrong" in text


@pytest.mark.skipif(
    __import__("os").environ.get("YOLO_TRT_TEST_BACKEND") is not None, reason="the real library of this machine"
)
def test_real_smoke_here():
    """The real library of this Python, in the child the doctor runs: whatever it says is one JSON line, and a
    failure names its step (here: the TensorRT-RTX builder builds; with no GPU the run says why)."""
    proc = subprocess.run(
        [sys.executable, str(trt_doctor.SMOKE_SCRIPT)], capture_output=True, text=True, timeout=300, check=True
    )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["stage"] in smoke.STAGES and data["summary"].startswith("smoke: ")
    if data["passed"]:
        assert data["built"]
    elif data["built"]:
        assert data["summary"].startswith("smoke: built OK; ")
