"""TensorRT build/runtime edge cases (issue 11) against the double; TensorRT-facing: rerun per TensorRT
version and package layout by tests/test_trt_api_versions.py (there, ``Builder``/``Runtime`` not replaced
by the double are NVIDIA's real factories over stand-in libraries, which return nullptr)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import trt_double as D

from common.core.cli import run_main
from common.core.errors import UserError
from common.trt.build import BuildOptions, build_or_reuse
from common.trt.runtime import TrtSession

NULLPTR = "pybind11::init(): factory function returned nullptr"


def _engine(tmp_path: Path, api, onnx: Path, options: BuildOptions | None = None, name: str = "e.engine") -> Path:
    return build_or_reuse(onnx, tmp_path / name, options or BuildOptions(), api, verbosity="error").engine_path


def _ort(onnx: Path, feeds: dict) -> dict:
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def _nullptr_factories(monkeypatch, api) -> None:
    """What the real bindings do when the native library cannot start (the stand-ins do exactly this)."""
    try:
        api.module.Builder(api.module.Logger())
    except TypeError as exc:
        assert "nullptr" in str(exc)
        return  # the real factories already fail here (stand-in libnvinfer)

    def fail(logger):
        raise TypeError(NULLPTR)

    monkeypatch.setattr(api.module, "Builder", fail)
    monkeypatch.setattr(api.module, "Runtime", fail)


# ----------------------------------------------------------------------------- 12: Builder / Runtime nullptr


def test_builder_that_cannot_be_created_is_one_line_exit_2_no_engine(tmp_path, api, monkeypatch, capsys):
    import build_trt_engine

    _nullptr_factories(monkeypatch, api)
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    engine = tmp_path / "out" / "e.engine"
    code = run_main(
        build_trt_engine.main,
        ["--onnx-path", str(onnx), "--engine-path", str(engine), "--backend", api.name, "--no-build-progress"],
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "could not create its Builder" in err[0] and "trt-doctor" in err[0] and "no usable GPU" in err[0]
    assert not engine.exists() and not (tmp_path / "out" / "e.engine.json").exists()


def test_runtime_that_cannot_be_created_is_a_user_error(tmp_path, api, monkeypatch):
    _nullptr_factories(monkeypatch, api)
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"whatever")
    with pytest.raises(UserError, match=r"could not create its Runtime .*run `pixi run -e rtx5090 trt-doctor`"):
        TrtSession(engine, api, memory=D.FakeCudaMemory())


# ----------------------------------------------------------------------------- 5: TensorRT-RTX CUDA graphs


def test_rtx_cuda_graph_uses_the_runtime_config_strategy(tmp_path, api, double):
    """TensorRT-RTX: --cuda-graph sets IRuntimeConfig.cuda_graph_strategy = WHOLE_GRAPH_CAPTURE (its documented
    mechanism) instead of capturing execute_async_v3 ourselves, and the runtime config lives with the context."""
    import gc

    if not api.is_rtx or not hasattr(api.module, "CudaGraphStrategy"):
        pytest.skip(f"{api.describe()} has no IRuntimeConfig.cuda_graph_strategy (full TensorRT: user capture)")
    state, mem = double
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    engine = _engine(tmp_path, api, onnx, BuildOptions(max_batch=4))
    rng = np.random.default_rng(5)
    with TrtSession(engine, api, cuda_graph=True) as s:
        gc.collect()  # a runtime config held by nobody would be gone now
        for batch in (2, 2, 2, 3):
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            np.testing.assert_array_equal(s.run({"x": x})["y"], _ort(onnx, {"x": x})["y"])
        assert s.describe()["cuda_graph"] == "tensorrt-rtx runtime config: cuda_graph_strategy=WHOLE_GRAPH_CAPTURE"
    assert mem.captures == 0 and mem.graph_launches == 0  # no capture of our own
    assert state.native_graph_captures == 2 and state.native_graph_replays == 2


def test_double_refuses_user_capture_of_rtx_engines_without_user_allocation(tmp_path, api, double):
    """What TensorRT-RTX's release notes say: stream capture needs BuilderFlag.REQUIRE_USER_ALLOCATION."""
    if not api.is_rtx:
        pytest.skip("TensorRT-RTX rule")
    _, mem = double
    onnx = D.tiny_model(tmp_path / "m.onnx")
    engine = _engine(tmp_path, api, onnx)
    runtime = api.module.Runtime(api.module.Logger())
    cuda_engine = runtime.deserialize_cuda_engine(engine.read_bytes())
    config = cuda_engine.create_runtime_config()
    ctx = cuda_engine.create_execution_context(config)
    stream = mem.stream()
    assert ctx.is_stream_capturable(stream.handle) is False
    mem.begin_capture(stream)
    assert ctx.execute_async_v3(stream.handle) is False
    mem.end_capture(stream)
    with pytest.raises(TypeError):
        config.cuda_graph_strategy = 1  # the real binding takes only the enum


# ----------------------------------------------------------------------------- 6: I/O formats


def _set_io_format(engine: Path, tensor: str, fmt: str) -> None:
    blob = engine.read_bytes()
    header_raw, _, rest = blob[len(D.ENGINE_MAGIC) :].partition(b"\n")
    header = json.loads(header_raw)
    for t in header["io"]:
        if t["name"] == tensor:
            t["format"] = fmt
    engine.write_bytes(D.ENGINE_MAGIC + json.dumps(header).encode() + b"\n" + rest)


@pytest.mark.parametrize(("tensor", "fmt"), [("x", "CHW16"), ("y", "HWC8")])
def test_vectorised_io_format_is_refused(tmp_path, api, double, tensor, fmt):
    """An engine built elsewhere with e.g. trtexec --inputIOFormats=fp16:chw16: refused, not mis-sized."""
    assert hasattr(api.module.ICudaEngine, "get_tensor_format")  # the real API of every version has it
    onnx = D.tiny_model(tmp_path / "m.onnx")
    engine = _engine(tmp_path, api, onnx)
    _set_io_format(engine, tensor, fmt)
    with pytest.raises(UserError, match=rf"tensor '{tensor}' has I/O format {fmt}, not LINEAR.*rebuild") as info:
        TrtSession(engine, api)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- 7: views over pinned memory


def test_output_views_keep_their_buffer_alive(tmp_path, api, double):
    """run(copy_outputs=False) views stay valid when the buffers grow and after close (the double poisons
    freed host memory, as a real free would leave garbage)."""
    import gc

    _, mem = double
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    engine = _engine(tmp_path, api, onnx, BuildOptions(max_batch=4))
    rng = np.random.default_rng(7)
    x1 = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    x4 = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    s = TrtSession(engine, api)
    v1 = s.run({"x": x1}, copy_outputs=False)["y"]
    want1 = _ort(onnx, {"x": x1})["y"]
    np.testing.assert_array_equal(v1, want1)
    v4 = s.run({"x": x4}, copy_outputs=False)["y"]  # grows every buffer: the old ones are released
    np.testing.assert_array_equal(v1, want1)
    s.close()
    np.testing.assert_array_equal(v4, _ort(onnx, {"x": x4})["y"])
    assert mem.live > 0  # the two output buffers the views hold
    del v1, v4
    gc.collect()
    assert mem.live == 0


# ----------------------------------------------------------------------------- 8: progress monitor


def test_progress_monitor_callbacks_are_serialised(api, monkeypatch):
    """TensorRT may call IProgressMonitor from several threads: every callback runs under the monitor's lock."""
    import sys
    import threading
    import types

    from common.trt.build import make_progress_monitor

    if not api.has_progress_monitor:
        pytest.skip(f"{api.describe()} has no IProgressMonitor")
    box: dict = {}

    class Bar:
        def __init__(self, total=0, **kw):
            self.n, self.total = 0, total
            self._check()

        def _check(self):
            lock = box["monitor"].lock
            assert not lock.acquire(blocking=False), "tqdm touched outside the monitor's lock"

        def update(self, k):
            self._check()
            self.n += k

        def close(self):
            self._check()

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=Bar))
    monitor = box["monitor"] = make_progress_monitor(api, True)
    assert isinstance(monitor, api.module.IProgressMonitor)
    monitor.phase_start("build", None, 64)
    threads = [
        threading.Thread(target=lambda k=k: [monitor.step_complete("build", i) for i in range(k, 64, 8)])
        for k in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert monitor.bars["build"].n == 64
    monitor.phase_finish("build")
    assert monitor.bars == {}


# ----------------------------------------------------------------------------- 9: --fp8 on TensorRT 10


def test_fp8_flag_is_recorded_as_what_the_engine_is(tmp_path, api, double, caplog):
    import logging

    if not api.has_weak_typing or not hasattr(api.module.BuilderFlag, "FP8"):
        pytest.skip(f"{api.describe()} has no weak-typing BuilderFlag.FP8 (strongly typed only)")
    onnx = D.tiny_model(tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING):
        meta = build_or_reuse(onnx, tmp_path / "e.engine", BuildOptions(fp8=True), api, verbosity="error").metadata
    prec = meta["precision"]
    assert prec["typing"] == "weak" and prec["builder_flags"] == ["FP8"]
    assert prec["engine"] == "FP32/TF32" and "FP8" not in prec["engine"]
    assert any("only enables plugins with FP8" in n for n in prec["notes"])
    assert "the engine is FP32/TF32" in caplog.text
    meta16 = build_or_reuse(
        onnx, tmp_path / "h.engine", BuildOptions(fp16=True, tf32=False), api, verbosity="error"
    ).metadata
    assert meta16["precision"]["engine"] == "FP32/FP16" and meta16["precision"]["notes"] == []


def test_strongly_typed_precision_comes_from_the_onnx(tmp_path, api, double):
    meta = build_or_reuse(
        D.tiny_model(tmp_path / "q.onnx", precision="int8"),
        tmp_path / "q.engine",
        BuildOptions(),
        api,
        verbosity="error",
    ).metadata
    assert meta["precision"]["typing"] == "strong" and "Q/DQ" in meta["precision"]["engine"]


# ----------------------------------------------------------------------------- 10: external data


def _external_model(tmp_path: Path) -> tuple[Path, Path]:
    import onnx

    src = D.tiny_model(tmp_path / "src.onnx")
    model = onnx.load(str(src))
    onnx_path = tmp_path / "ext" / "m.onnx"
    onnx_path.parent.mkdir()
    onnx.save_model(
        model,
        str(onnx_path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    return onnx_path, onnx_path.parent / "m.onnx.data"


def test_changed_external_data_is_not_a_cache_hit(tmp_path, api, double):
    onnx_path, data = _external_model(tmp_path)
    engine = tmp_path / "e.engine"
    first = build_or_reuse(onnx_path, engine, BuildOptions(), api, verbosity="error")
    assert not first.cache_hit and list(first.metadata["onnx_external_data"]) == ["m.onnx.data"]
    assert build_or_reuse(onnx_path, engine, BuildOptions(), api, verbosity="error").cache_hit
    weights = np.frombuffer(data.read_bytes(), np.float32).copy()
    data.write_bytes((weights * -1.0).tobytes())  # same size, same .onnx, other weights
    again = build_or_reuse(onnx_path, engine, BuildOptions(), api, verbosity="error")
    assert not again.cache_hit
    x = np.random.default_rng(10).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with TrtSession(engine, api) as s:  # the engine carries the new weights
        np.testing.assert_array_equal(s.run({"x": x})["y"], _ort(onnx_path, {"x": x})["y"])


def test_missing_external_data_is_refused_before_building(tmp_path, api, double):
    onnx_path, data = _external_model(tmp_path)
    data.unlink()
    with pytest.raises(UserError, match=r"external data file 'm\.onnx\.data' is missing"):
        build_or_reuse(onnx_path, tmp_path / "e.engine", BuildOptions(), api, verbosity="error")
    assert D.FakeBuilder.builds == 0 and not (tmp_path / "e.engine").exists()
