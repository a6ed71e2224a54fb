"""The double refuses what TensorRT refuses, and our TensorRT code copes with each refusal.

Each test has two halves: the double's behaviour (what the real runtime does, stated in tests/trt_double.py's
docstring) and what our product code does about it. TensorRT-facing: tests/test_trt_api_versions.py reruns
this module against the real ``tensorrt`` Python API of 10.7, 10.13 and 11.4 (both pip layouts); here it runs
against the ``tensorrt_rtx`` API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import trt_double as D

from common.core.errors import UserError
from common.throughput.trt_lanes import TrtBackend
from common.trt.api import make_logger
from common.trt.build import BuildOptions, build_or_reuse, metadata_path
from common.trt.runner import TrtRunner
from common.trt.runtime import TrtSession


def _engine(tmp_path: Path, api: Any, onnx: Path, options: BuildOptions | None = None) -> Path:
    return build_or_reuse(onnx, tmp_path / "e.engine", options or BuildOptions(), api, verbosity="error").engine_path


def _save_unchecked(model: Any, path: Path) -> Path:
    """Plugin ops are unknown to onnx.checker: write the model as exporters do, without checking."""
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def nms_model(path: Path) -> Path:
    """boxes [1,100,4] + scores [1,100,3] -> EfficientNMS_TRT (TensorRT's plugin, as YOLO exporters emit it)."""
    from onnx import TensorProto as T
    from onnx import helper as h

    node = h.make_node(
        "EfficientNMS_TRT",
        ["boxes", "scores"],
        ["num_dets", "det_boxes", "det_scores", "det_classes"],
        name="nms",
        plugin_version="1",
        background_class=-1,
        max_output_boxes=10,
        score_threshold=0.25,
        iou_threshold=0.45,
        score_activation=0,
        box_coding=0,
    )
    graph = h.make_graph(
        [node],
        "nms",
        [
            h.make_tensor_value_info("boxes", T.FLOAT, [1, 100, 4]),
            h.make_tensor_value_info("scores", T.FLOAT, [1, 100, 3]),
        ],
        [
            h.make_tensor_value_info("num_dets", T.INT32, [1, 1]),
            h.make_tensor_value_info("det_boxes", T.FLOAT, [1, 10, 4]),
            h.make_tensor_value_info("det_scores", T.FLOAT, [1, 10]),
            h.make_tensor_value_info("det_classes", T.INT32, [1, 10]),
        ],
    )
    return _save_unchecked(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)


def nonzero_model(path: Path) -> Path:
    """x [N,4] -> indices of the positive entries [2, K]: K is known only once the engine ran."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    graph = h.make_graph(
        [
            h.make_node("Greater", ["x", "zero"], ["pos"], name="greater"),
            h.make_node("NonZero", ["pos"], ["idx"], name="nonzero"),
            h.make_node("Relu", ["x"], ["y"], name="relu"),
        ],
        "dds",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4]), h.make_tensor_value_info("idx", T.INT64, [2, "K"])],
        initializer=[nh.from_array(np.array(0.0, np.float32), "zero")],
    )
    return D._save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)


# ----------------------------------------------------------------------------- 1. plugin registry


def test_plugin_op_parses_only_once_plugins_are_registered(tmp_path, api, double):
    """The double's parser: an EfficientNMS_TRT node fails with "Plugin not found" until init_libnvinfer_plugins
    ran (full TensorRT); TensorRT-RTX ships no plugin library and never finds it."""
    blob = nms_model(tmp_path / "nms.onnx").read_bytes()
    logger = make_logger(api, "error")

    def parse() -> Any:
        network = api.module.Builder(logger).create_network(0)
        parser = api.module.OnnxParser(network, logger)
        return parser, parser.parse(blob)

    parser, ok = parse()
    assert not ok and parser.num_errors == 1
    err = parser.get_error(0)
    assert "Plugin not found" in err.desc() and err.node() == 0 and err.code() == api.module.ErrorCode.UNSUPPORTED_NODE
    assert api.module.init_libnvinfer_plugins(logger, "")
    parser, ok = parse()
    if api.is_rtx:  # its registry holds no EfficientNMS_TRT, registered or not
        assert not ok and "Plugin not found" in parser.get_error(0).desc()
    else:
        assert ok and parser.num_errors == 0


def test_plugin_engines_build_and_load_only_with_registered_plugins(tmp_path, api, double, monkeypatch):
    """Our build registers the plugins before parsing; loading an engine that holds one fails while the process has
    not registered them. TensorRT-RTX: the build is refused in one line that says it has no EfficientNMS."""
    state, _ = double
    onnx = nms_model(tmp_path / "nms.onnx")
    if api.is_rtx:
        with pytest.raises(UserError, match="Plugin not found") as info:
            _engine(tmp_path, api, onnx)
        assert "TensorRT-RTX ships no plugin library (no EfficientNMS_TRT)" in str(info.value)
        assert "\n" not in str(info.value) and not (tmp_path / "e.engine").exists()
        return
    engine = _engine(tmp_path, api, onnx)
    assert state.plugin_namespaces == {""}
    state.plugin_namespaces.clear()  # a fresh process that has not registered them
    from common.trt import runtime as trt_runtime

    with monkeypatch.context() as m:
        m.setattr(trt_runtime, "register_plugins", lambda api, logger: "skipped by the test")
        with pytest.raises(UserError, match="Plugin Registry") as info:
            TrtRunner.open(engine, api, image_input=False)
    assert "holds a plugin this runtime cannot create" in str(info.value) and "\n" not in str(info.value)
    with TrtRunner.open(engine, api, image_input=False) as runner:  # our runtime registers them itself
        assert runner.metadata()["plugins"] == "registered (init_libnvinfer_plugins)"
        assert [o.name for o in runner.session.outputs] == ["num_dets", "det_boxes", "det_scores", "det_classes"]


# ----------------------------------------------------------------------------- 2. capture needs a plain enqueue


def test_capture_is_refused_until_an_enqueue_flushed_the_shapes(tmp_path, api, double):
    """The double: an enqueue in capture right after set_input_shape fails; after one plain enqueue it captures."""
    if api.is_rtx:
        pytest.skip("TensorRT-RTX: CUDA graphs through its runtime config, not user capture")
    state, mem = double
    engine = _engine(tmp_path, api, D.tiny_model(tmp_path / "d.onnx", dynamic=True), BuildOptions(max_batch=4))
    with TrtSession(engine, api) as s:
        s.run({"x": np.zeros((3, 3, 8, 8), np.float32)})  # buffers for batch 3
        s.run({"x": np.zeros((2, 3, 8, 8), np.float32)})
        assert s.context.set_input_shape("x", (3, 3, 8, 8))
        mem.begin_capture(s.stream)
        ok = s.context.execute_async_v3(s.stream.handle)
        mem.end_capture(s.stream).close()
        assert not ok and "call enqueueV3() once before capturing" in s.logger.errors[-1]
        assert state.capture_refusals == 1
        assert s.context.execute_async_v3(s.stream.handle)  # the plain enqueue that flushes the shape change
        mem.begin_capture(s.stream)
        assert s.context.execute_async_v3(s.stream.handle)
        mem.end_capture(s.stream).close()


def test_graphs_are_captured_only_after_a_plain_enqueue_of_the_shape(tmp_path, api, double):
    """Our session: after a shape change it runs the key plainly once more before capturing, so alternating shapes
    never hit TensorRT's refusal (before, the capture failed and CUDA graphs were switched off for good)."""
    if api.is_rtx:
        pytest.skip("TensorRT-RTX: CUDA graphs through its runtime config, not user capture")
    state, mem = double
    onnx = D.tiny_model(tmp_path / "d.onnx", dynamic=True)
    engine = _engine(tmp_path, api, onnx, BuildOptions(max_batch=4))
    rng = np.random.default_rng(3)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    graphs = []
    with TrtSession(engine, api, cuda_graph=True) as s:
        for batch in (2, 3, 2, 2, 2, 3, 3):
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            np.testing.assert_array_equal(s.run({"x": x})["y"], session.run(None, {"x": x})[0])
            graphs.append(s.last_timing["cuda_graph"])
        assert s.cuda_graph_status == "captured" and state.capture_refusals == 0
    assert graphs == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert mem.captures == 2 and mem.graph_launches == 3


# ----------------------------------------------------------------------------- 3. data-dependent output shapes


def test_data_dependent_output_shape_is_minus_one_until_execution(tmp_path, api, double):
    engine = _engine(tmp_path, api, nonzero_model(tmp_path / "dds.onnx"), BuildOptions(max_batch=4))
    with TrtSession(engine, api) as s:
        assert tuple(s.engine.get_tensor_shape("idx")) == (2, -1)
        assert s.context.set_input_shape("x", (2, 4)) and s.context.infer_shapes() == []
        assert tuple(s.context.get_tensor_shape("y")) == (2, 4)
        assert tuple(s.context.get_tensor_shape("idx")) == (2, -1)  # shape inference cannot know K


def test_data_dependent_outputs_are_refused_in_one_line(tmp_path, api, double):
    engine = _engine(tmp_path, api, nonzero_model(tmp_path / "dds.onnx"), BuildOptions(max_batch=4))
    state, _ = double
    with TrtRunner.open(engine, api, image_input=False) as runner:
        with pytest.raises(UserError, match=r"output 'idx' has a data-dependent shape \[2, -1\]") as info:
            runner.run({"x": np.ones((2, 4), np.float32)})
    msg = str(info.value)
    assert msg.startswith(str(engine)) and "does not support" in msg and "\n" not in msg
    assert state.executions == 0  # refused before anything ran


# ----------------------------------------------------------------------------- 4. 256-byte tensor addresses


def test_misaligned_tensor_address_is_refused(tmp_path, api, double):
    engine = _engine(tmp_path, api, D.tiny_model(tmp_path / "m.onnx"))
    with TrtSession(engine, api) as s:
        s.run({"x": np.zeros((1, 3, 8, 8), np.float32)})
        ptr = s.context.get_tensor_address("x")
        assert ptr % 256 == 0
        assert not s.context.set_tensor_address("x", ptr + 4)
        assert "not aligned to 256 bytes" in s.logger.errors[-1]
        assert s.context.get_tensor_address("x") == ptr  # the refused address was not taken
        assert s.context.set_tensor_address("x", ptr + 256 * 3)  # any multiple of 256 is fine


def test_our_code_passes_only_aligned_addresses(tmp_path, api, double, monkeypatch):
    """Every address our sessions give TensorRT is a buffer's own start (cudaMalloc aligns to >= 256 bytes; the
    double's buffers do too), through growth, shape changes, CUDA graphs and lanes."""
    addresses: list[tuple[int, bool]] = []
    real = D.FakeContext.set_tensor_address

    def recording(self: Any, name: str, memory: int) -> bool:
        ok = real(self, name, memory)
        addresses.append((int(memory), ok))
        return ok

    monkeypatch.setattr(D.FakeContext, "set_tensor_address", recording)
    onnx = D.tiny_model(tmp_path / "x.onnx", dynamic=True, extra_outputs=True)  # fp16/int64/int32/bool outputs
    engine = _engine(tmp_path, api, onnx, BuildOptions(max_batch=4))
    batches = [np.ones((b, 3, 8, 8), np.float32) for b in (1, 4, 3, 1, 4)]
    with TrtRunner.open(engine, api, cuda_graph=True) as runner:
        for x in batches:
            runner.infer(x)
    backend = TrtBackend.open(engine, api, lanes=2)
    try:
        for token in [backend.submit(x) for x in batches]:
            backend.wait(token)
    finally:
        backend.close()
    assert len(addresses) >= 5 * 2 and all(ok for _, ok in addresses)
    assert all(ptr % 256 == 0 for ptr, _ in addresses)


# ----------------------------------------------------------------------------- 5. compute capability


def test_engine_of_another_compute_capability_is_refused(tmp_path, api, double):
    """TensorRT checks the plan's compute capability itself, whatever our metadata says (here: no metadata, as
    for a trtexec engine)."""
    state, _ = double
    engine = _engine(tmp_path, api, D.tiny_model(tmp_path / "m.onnx"))
    metadata_path(engine).unlink()
    state.compute_capability = "12.0"
    with pytest.raises(UserError, match=r"expecting compute 12\.0 got compute 8\.9") as info:
        TrtSession(engine, api)
    assert "rebuild it on this GPU" in str(info.value) and "\n" not in str(info.value)
    state.compute_capability = D.FAKE_CC
    TrtSession(engine, api).close()


def test_rtx_engine_runs_on_its_compute_capability_targets(tmp_path, api, double):
    if not api.is_rtx:
        pytest.skip(f"{api.describe()}: compute-capability targets are TensorRT-RTX's")
    state, _ = double
    onnx = D.tiny_model(tmp_path / "m.onnx")
    engine = _engine(tmp_path, api, onnx, BuildOptions(compute_capabilities=("SM89", "SM120")))
    state.compute_capability = "12.0"
    TrtSession(engine, api).close()
    state.compute_capability = "8.6"
    with pytest.raises(UserError, match="incompatible device"):
        TrtSession(engine, api)
