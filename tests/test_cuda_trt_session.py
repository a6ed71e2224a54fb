"""TrtSession with the REAL cuda-python memory layer (GPU machines only).

TensorRT itself is the runtime double (the ONNX runs with ONNX Runtime on the host, its tensors
copied from / to the device pointers the session bound), so this checks our CUDA side for real:
device + pinned buffers, async copies and events on a non-default stream, buffer growth on
dynamic shapes, and the CUDA-graph fallback. Skipped without a CUDA device.
Set YOLO_CUDA_MEM_REPORT_SESSION=path.json to record the timings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import cuda_device_count

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda.bindings) not installed")
ort = pytest.importorskip("onnxruntime")

import trt_double as D  # noqa: E402

from common.trt.build import BuildOptions, build_or_reuse  # noqa: E402
from common.trt.runtime import TrtSession  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "cv-models" / "yolov10n-synth" / "yolov10n-synth.onnx"


pytestmark = pytest.mark.skipif(cuda_device_count() == 0, reason="no CUDA device")


@pytest.fixture
def api(monkeypatch):
    api = D.api_under_test()
    state = D.install(monkeypatch, api.module, memory=None)
    state.device_io = True
    return api


def _ort(onnx, feeds):
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def test_real_cuda_session_multi_output_dynamic_batch(tmp_path, api):
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True, extra_outputs=True)
    engine = build_or_reuse(onnx, tmp_path / "m.engine", BuildOptions(max_batch=8), api, verbosity="error").engine_path
    rng = np.random.default_rng(0)
    with TrtSession(engine, api, cuda_graph=True) as s:
        assert s.mem.name == "cuda-python"
        for batch in (1, 8, 3, 3):  # a shape is captured on its second run
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            got = s.run({"x": x})
            for name, want in _ort(onnx, {"x": x}).items():
                assert got[name].dtype == want.dtype
                np.testing.assert_array_equal(got[name], want)
        if api.is_rtx:  # TensorRT-RTX: its runtime config's CUDA-graph strategy, no capture of our own
            assert s.cuda_graph_status.startswith("tensorrt-rtx runtime config")
        else:  # the double cannot be captured on a real stream: the session must have fallen back cleanly
            assert s.cuda_graph_status.startswith("fallback:")


def test_real_cuda_session_yolov10n_timings(tmp_path, api):
    if not DEMO_MODEL.is_file():
        pytest.skip("bundled demo model absent")
    engine = build_or_reuse(DEMO_MODEL, tmp_path / "y.engine", BuildOptions(), api, verbosity="error").engine_path
    x = np.random.default_rng(1).random((1, 3, 640, 640), dtype=np.float32)
    want = _ort(DEMO_MODEL, {"images": x})["output0"]
    timings = []
    with TrtSession(engine, api) as s:
        for _ in range(5):
            got = s.run({"images": x})["output0"]
            np.testing.assert_array_equal(got, want)
            timings.append(dict(s.last_timing))
    t = timings[-1]
    assert t["h2d_ms"] > 0 and t["d2h_ms"] > 0 and t["latency_ms"] >= t["h2d_ms"] + t["d2h_ms"] * 0.5
    path = os.environ.get("YOLO_CUDA_MEM_REPORT_SESSION")
    if path:
        Path(path).write_text(json.dumps({"yolov10n_1x3x640x640_session_timings_ms": timings}, indent=2))
