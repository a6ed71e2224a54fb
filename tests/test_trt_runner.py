"""The plain TensorRT runner (``common.trt.runner.TrtRunner``) and the lanes made of runners, against the double.

TensorRT-facing: tests/test_trt_api_versions.py reruns this module against the real ``tensorrt`` Python API
of 10.7, 10.13 and 11.4 (both pip layouts); here it runs against the ``tensorrt_rtx`` API.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import trt_double as D

from common.core.cli import run_main
from common.core.errors import UserError
from common.eval.protocols import AsyncBackend, Backend, Warmup
from common.throughput.lane_backend import LaneBackend
from common.throughput.lanes import Lane
from common.throughput.trt_lanes import TrtBackend
from common.trt.build import BuildOptions, build_or_reuse, metadata_path, parse_shapes
from common.trt.runner import TrtRunner

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "datasets" / "synthcoco-mini"
RTX_NATIVE = "TensorRT-RTX: CUDA graphs through its runtime config, not user capture"


def _engine(tmp_path: Path, api, onnx: Path, options: BuildOptions | None = None) -> Path:
    return build_or_reuse(onnx, tmp_path / "e.engine", options or BuildOptions(), api, verbosity="error").engine_path


def _ort(onnx: Path, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.fixture
def dyn(tmp_path, api, double):
    onnx = D.tiny_model(tmp_path / "dyn.onnx", dynamic=True)
    return onnx, _engine(tmp_path, api, onnx, BuildOptions(min_batch=1, opt_batch=2, max_batch=4))


def test_runner_is_a_plain_backend_without_threads(dyn, api, double):
    onnx, engine = dyn
    _, mem = double
    threads = threading.active_count()
    with TrtRunner.open(engine, api) as runner:
        assert isinstance(runner, Backend) and isinstance(runner, Warmup)
        assert not isinstance(runner, AsyncBackend) and not isinstance(runner, LaneBackend)
        assert runner.name == api.name and runner.input.shape == (None, 3, 8, 8)
        rng = np.random.default_rng(0)
        for batch in (1, 4, 3):
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            got = runner.infer(x)
            np.testing.assert_array_equal(got[0], _ort(onnx, x)[0])
        assert threading.active_count() == threads  # no thread was started
        meta = runner.metadata()
        assert meta["lanes"] == 0 and meta["runner"].startswith("plain")
    assert mem.live == 0


def test_lanes_compose_runners_and_match_the_plain_runner(dyn, api, double):
    _, engine = dyn
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((b, 3, 8, 8)).astype(np.float32) for b in (4, 4, 2, 4, 1)]
    with TrtRunner.open(engine, api) as runner:
        plain = [runner.infer(x) for x in batches]
    backend = TrtBackend.open(engine, api, lanes=3)
    try:
        assert all(isinstance(lane.worker.runner, TrtRunner) for lane in backend._lanes.lanes)
        tokens = [backend.submit(x) for x in batches]
        laned = [backend.wait(t) for t in tokens]
    finally:
        backend.close()
    for a, b in zip(plain, laned, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_shape_change_drops_the_cuda_graphs_and_a_one_off_partial_batch_is_never_captured(dyn, api, double):
    """A graph holds its context's state as captured: after a partial batch (another input shape) the full
    batch's graph is never replayed; back at the full shape the context runs plainly, then captures again. The
    partial batch's single run is not captured. The double fails a replay after a shape change."""
    if api.is_rtx:
        pytest.skip(RTX_NATIVE)
    onnx, engine = dyn
    _, mem = double
    full, part = np.ones((4, 3, 8, 8), np.float32), np.full((3, 3, 8, 8), 0.5, np.float32)
    with TrtRunner.open(engine, api, cuda_graph=True) as runner:
        runner.warmup(4, 3)
        assert runner.session.graph_captures == 1 and mem.captures == 1
        replays = mem.graph_launches
        for x in (full, full, part, full, full, full):
            np.testing.assert_array_equal(runner.infer(x)[0], _ort(onnx, x)[0])
        # two replays before the partial batch; after it, one plain run, then a capture (launched) and a replay
        assert mem.captures == 2 and mem.graph_launches - replays == 4
        assert runner.timed_captures == 1 and runner.metadata()["cuda_graph_captures_after_warmup"] == 1
        for x in (part, part, part):  # a shape seen twice is captured once, and replayed from then on
            np.testing.assert_array_equal(runner.infer(x)[0], _ort(onnx, x)[0])
        assert mem.captures == 3


def test_lanes_report_captures_after_warmup(dyn, api, double):
    if api.is_rtx:
        pytest.skip(RTX_NATIVE)
    _, engine = dyn
    backend = TrtBackend.open(engine, api, lanes=2, cuda_graph=True)
    try:
        backend.warmup(4, 2)
        for b in (4, 4, 4, 4, 3):
            backend.infer(np.ones((b, 3, 8, 8), np.float32))
        meta = backend.metadata()
        assert meta["cuda_graph_captures"] == 2 and meta["cuda_graph_captures_after_warmup"] == 0
    finally:
        backend.close()


def test_lane_stages_the_host_copy_before_its_turn_on_the_gpu(dyn, api, double, monkeypatch):
    """With CPU pre-processing the batch is copied into pinned memory before the lane's start event, so the
    lane's GPU span (gpu_compute_ms) holds no host copy."""
    _, engine = dyn
    log: list[str] = []
    copyto, begin = np.copyto, Lane.begin
    monkeypatch.setattr(np, "copyto", lambda *a, **k: (log.append("host copy"), copyto(*a, **k))[1])
    monkeypatch.setattr(Lane, "begin", lambda self, *a, **k: (log.append("lane start"), begin(self, *a, **k))[1])
    backend = TrtBackend.open(engine, api, lanes=1)
    try:
        for _ in range(2):
            backend.infer(np.ones((2, 3, 8, 8), np.float32))
    finally:
        backend.close()
    assert log == ["host copy", "lane start"] * 2


def test_open_closes_the_session_when_the_backend_refuses(tmp_path, api, double):
    """A backend that refuses its engine after loading it closes what it loaded (no leaked context/buffers)."""
    _, mem = double
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    engine = _engine(tmp_path, api, onnx, BuildOptions(max_batch=2))
    live = mem.live
    with pytest.raises(UserError, match="--lanes"):
        TrtBackend.open(engine, api, lanes=-1)
    assert mem.live == live and not mem.streams  # the first lane's stream was closed too


def _eval(tmp_path: Path, api, engine: Path, name: str, *extra: str) -> dict:
    import eval_yolov10m_trt_coco

    out, dets = tmp_path / f"{name}.json", tmp_path / f"{name}-detections.json"
    data = ["--data-root", str(MINI), "--instances", str(MINI / "annotations" / "instances_val2017.json")]
    argv = [
        *("--engine-path", str(engine), "--backend", api.name, "--trt-verbosity", "error", *data),
        *("--images-dir", str(MINI / "val2017"), "--max-images", "5", "--batch-size", "2", "--no-progress"),
        *("--out", str(out), "--detections-out", str(dets), "--cuda-graph", *extra),
    ]
    assert run_main(eval_yolov10m_trt_coco.main, argv) == 0
    return {"metrics": json.loads(out.read_text()), "detections": json.loads(dets.read_text())}


@pytest.mark.slow
def test_eval_trt_lanes_0_runs_one_plain_runner_with_the_lanes_detections(tmp_path, api, double):
    """5 images in batches of 2: the partial last batch is captured by nobody (zero captures after warm-up)."""
    onnx = D.fixtures_dir() / "models" / "yolov10n-synth-dynbatch.onnx"
    if not onnx.is_file() or not MINI.is_dir():
        pytest.skip("needs ../shared/fixtures (dynbatch model) and synthcoco-mini")
    shapes = parse_shapes(["images:1x3x640x640,2x3x640x640,2x3x640x640"])
    engine = _engine(tmp_path, api, onnx, BuildOptions(shapes=shapes))
    plain = _eval(tmp_path, api, engine, "plain", "--lanes", "0")
    lanes = _eval(tmp_path, api, engine, "lanes")
    plain_run, lanes_run = plain["metrics"]["run"]["backend"], lanes["metrics"]["run"]["backend"]
    assert plain_run["lanes"] == 0 and lanes_run["lanes"] == 2
    assert plain["detections"] and plain["detections"] == lanes["detections"]
    assert plain["metrics"]["metrics"] == lanes["metrics"]["metrics"]
    assert plain_run["cuda_graph_captures_after_warmup"] == lanes_run["cuda_graph_captures_after_warmup"] == 0


def _rewrite_meta(engine: Path, **changes: object) -> None:
    path = metadata_path(engine)
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_engine_origin_compares_the_release_not_the_string(dyn, api, double):
    _, engine = dyn
    _rewrite_meta(engine, backend_version=f"{api.version}.post1")  # a PyPI post-release: the same TensorRT
    with TrtRunner.open(engine, api) as runner:
        assert runner.infer(np.ones((1, 3, 8, 8), np.float32))
    major = int(api.version.split(".")[0])
    _rewrite_meta(engine, backend_version=f"{major + 1}.0.0")
    with pytest.raises(UserError, match=rf"was built by {api.name} {major + 1}\.0\.0"):
        TrtRunner.open(engine, api)


def test_engine_from_another_gpu_architecture_is_refused(dyn, api, double, monkeypatch):
    _, engine = dyn
    _, mem = double
    _rewrite_meta(engine, gpu={"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    monkeypatch.setattr(mem, "device_info", lambda: {"name": "NVIDIA GeForce RTX 5090", "compute_capability": "12.0"})
    with pytest.raises(UserError, match=r"built on NVIDIA H100 .*compute capability 9\.0.*this GPU is compute capa"):
        TrtRunner.open(engine, api)
    assert not mem.streams  # refused before a context or a stream was made
    monkeypatch.setattr(mem, "device_info", lambda: {"name": "NVIDIA H100 PCIe", "compute_capability": "9.0"})
    with TrtRunner.open(engine, api) as runner:  # another card of the same architecture is fine
        assert runner.session.build_meta["gpu"]["compute_capability"] == "9.0"


def test_a_failing_enqueue_is_one_line_with_tensorrt_s_last_error(dyn, api, double, monkeypatch, capsys, tmp_path):
    import infer_trt_engine

    _, engine = dyn

    def fail(self, stream_handle: int) -> bool:
        self._error("IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (an illegal memory access)")
        return False

    monkeypatch.setattr(D.FakeContext, "execute_async_v3", fail)
    code = run_main(infer_trt_engine.main, ["--engine-path", str(engine), "--trt-verbosity", "error"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "execute_async_v3 failed" in err and "an illegal memory access" in err


def test_a_cuda_error_is_one_line(monkeypatch, capsys):
    from common.gpu.cuda_mem import CudaError

    def main(argv: object) -> int:
        raise CudaError("cudaMalloc", 2, "cudaErrorMemoryAllocation", "out of memory")

    assert run_main(main, []) == 1
    assert capsys.readouterr().err == "error: cudaMalloc: cudaErrorMemoryAllocation (out of memory)\n"


def test_plugins_are_registered_before_parsing_and_deserializing(tmp_path, api, double, monkeypatch):
    """Full TensorRT: init_libnvinfer_plugins runs before the ONNX parser and before deserialization (an
    EfficientNMS_TRT node or an engine holding a plugin needs it). TensorRT-RTX ships no plugin library."""
    order: list[str] = []
    if not api.is_rtx:
        assert callable(api.module.init_libnvinfer_plugins)  # the real API has it
        monkeypatch.setattr(api.module, "init_libnvinfer_plugins", lambda logger, ns: order.append("plugins") or True)
    parse, deserialize = D.FakeOnnxParser.parse_from_file, D.FakeRuntime.deserialize_cuda_engine
    monkeypatch.setattr(D.FakeOnnxParser, "parse_from_file", lambda self, p: order.append("parse") or parse(self, p))
    monkeypatch.setattr(
        D.FakeRuntime, "deserialize_cuda_engine", lambda self, b: order.append("deserialize") or deserialize(self, b)
    )
    engine = _engine(tmp_path, api, D.tiny_model(tmp_path / "m.onnx"))
    order.append("run")
    with TrtRunner.open(engine, api) as runner:
        plugins = runner.metadata()["plugins"]
    run = order[order.index("run") :]
    built = json.loads(metadata_path(engine).read_text())["plugins"]
    if api.is_rtx:
        assert "plugins" not in order and "no EfficientNMS" in plugins and "no EfficientNMS" in built
    else:
        assert order[:2] == ["plugins", "parse"] and run == ["run", "plugins", "deserialize"]
        assert plugins == built == "registered (init_libnvinfer_plugins)"


def test_rtx_lanes_share_one_runtime_cache_without_a_file(dyn, api, double):
    """TensorRT-RTX JIT-compiles kernels when a context is made: the lanes share one in-memory runtime cache
    (no --runtime-cache), so the kernels compile once, not once per lane."""
    if not api.is_rtx:
        pytest.skip(f"{api.describe()}: no runtime cache (TensorRT-RTX only)")
    state, _ = double
    _, engine = dyn
    backend = TrtBackend.open(engine, api, lanes=3)
    try:
        configs = [lane.worker.runner.session._runtime_config for lane in backend._lanes.lanes]
        caches = {id(c.get_runtime_cache()) for c in configs}
        assert len(configs) == 3 and len(caches) == 1 and None not in [c.get_runtime_cache() for c in configs]
        assert state.jit_compiles == 1
    finally:
        backend.close()
