"""The backend capabilities are declared protocols (common.eval.protocols), and every backend
the evaluators build matches exactly the ones it implements: the pipeline asks ``isinstance``."""

from __future__ import annotations

import pytest
import trt_double as D
from conftest import DEMO_MODEL
from test_gpu_preprocess import HostDevicePrep
from test_pipeline_invariance import AsyncWrapper

from common.core.errors import UserError
from common.eval import protocols as P
from common.eval.modes import check_preprocess
from common.eval.pipeline import in_flight_depth
from common.ort.session import OrtBackend

CAPABILITIES = (P.AsyncBackend, P.DeviceDecoding, P.DevicePreprocessing, P.DevicePostprocessing, P.LaneTiming, P.Warmup)
EVERYTHING = {"AsyncBackend", "DeviceDecoding", "DevicePreprocessing", "DevicePostprocessing", "LaneTiming", "Warmup"}


def _capabilities(backend: object) -> set[str]:
    assert isinstance(backend, P.Backend)
    return {c.__name__ for c in CAPABILITIES if isinstance(backend, c)}


def test_ort_backend_is_a_plain_backend() -> None:
    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    assert _capabilities(backend) == set()
    assert in_flight_depth(backend) == 1
    with pytest.raises(UserError, match="--preprocess gpu-normalize needs a backend with GPU input buffers"):
        check_preprocess(backend, "gpu-normalize")


def test_io_binding_backend_has_every_capability(monkeypatch) -> None:
    """OrtCudaBackend on the runtime double's host memory, its lanes' sessions on the CPU EP
    (construction binds nothing yet, so no GPU is needed to see what it is)."""
    from common.throughput import ort_lanes as ort_cuda

    mem = D.FakeCudaMemory()
    lanes_asked: list[dict] = []

    def lane_session(path, providers, options, **kwargs):
        lanes_asked.append({"providers": providers, **kwargs})
        return OrtBackend(path, ["CPUExecutionProvider"])

    monkeypatch.setattr(ort_cuda, "CudaMemory", lambda device_id: mem)
    monkeypatch.setattr(ort_cuda, "OrtBackend", lane_session)
    backend = ort_cuda.OrtCudaBackend(str(DEMO_MODEL), lanes=2, disable_cpu_fallback=True)
    try:
        assert _capabilities(backend) == EVERYTHING
        assert in_flight_depth(backend) == backend.max_in_flight == 5  # two lanes overlap at batch 1: 1 + 2 queued
    finally:
        backend.close()
    assert mem.live == 0
    # every lane is a CUDA EP session that must initialise; --disable-cpu-fallback reaches each one
    assert [(a["providers"], a["require_accelerator"], a["disable_cpu_fallback"]) for a in lanes_asked] == [
        (["CUDAExecutionProvider"], True, True)
    ] * 2


@pytest.mark.parametrize("lanes", [1, 2])
def test_trt_backend_runs_on_the_shared_lanes(tmp_path, monkeypatch, lanes: int) -> None:
    """TensorRT gets the ORT IO-binding backend's capabilities through common.throughput.lanes:
    ``lanes + 1`` batches in flight (it ran one batch at a time before)."""
    from common.throughput.trt_lanes import TrtBackend
    from common.trt.build import BuildOptions, build_or_reuse

    api = D.api_under_test()
    D.use_double(monkeypatch, api)
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    engine = build_or_reuse(onnx, tmp_path / "m.engine", BuildOptions(max_batch=2), api, verbosity="error")
    backend = TrtBackend.open(engine.engine_path, api, lanes=lanes)
    try:
        assert _capabilities(backend) == EVERYTHING
        assert in_flight_depth(backend) == backend.max_in_flight == lanes + 1
    finally:
        backend.close()


def test_the_test_doubles_declare_what_they_do() -> None:
    inner = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    assert _capabilities(AsyncWrapper(inner)) == {"AsyncBackend"}
    assert _capabilities(HostDevicePrep(inner)) == {"DevicePreprocessing"}


class SubmitOnly:
    """Has submit/wait but never says how deep: not an AsyncBackend, so it runs through ``infer``
    (the old getattr probe took it for async with a made-up depth of 2)."""

    name = "submit-only"

    def __init__(self, inner: OrtBackend) -> None:
        self.inner, self.input, self.outputs = inner, inner.input, inner.outputs

    def infer(self, batch):
        return self.inner.infer(batch)

    def submit(self, batch):  # pragma: no cover - must not be called
        raise AssertionError("submit() called on a backend that is not an AsyncBackend")

    def wait(self, token):  # pragma: no cover
        raise AssertionError("wait() called")

    def metadata(self):
        return {}

    def close(self) -> None:
        pass


def test_pipeline_asks_the_protocol_not_the_attributes() -> None:
    backend = SubmitOnly(OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"]))
    assert _capabilities(backend) == set()
    assert in_flight_depth(backend) == 1


def test_plain_session_refuses_a_uint8_batch() -> None:
    from common.throughput.gpu_preprocess import U8Batch

    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    with pytest.raises(UserError, match="needs --io-binding"):
        backend.infer(U8Batch("gpu-normalize", [], [], 640))
