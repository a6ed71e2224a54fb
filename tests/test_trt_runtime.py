"""TrtSession / TrtBackend / infer_trt_engine.py / eval_yolov10m_trt_coco.py against the runtime double.

TensorRT-facing: tests/test_trt_api_versions.py reruns this module against NVIDIA's real
``tensorrt`` Python API of 10.7, 10.13 and 11.4 (YOLO_TRT_TEST_BACKEND=tensorrt). Only the
factories Builder / OnnxParser / Runtime are the double; enums and base classes are real.
The double executes the ONNX with ONNX Runtime, so the numbers are real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import trt_double as D

from common.core.cli import run_main
from common.core.errors import UserError
from common.eval.protocols import Backend
from common.throughput.trt_lanes import TrtBackend
from common.trt.build import BuildOptions, build_or_reuse, metadata_path, parse_shapes
from common.trt.runtime import TrtSession

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "datasets" / "synthcoco-mini"
DEMO_MODEL = REPO / "models" / "cv-models" / "yolov10n-synth" / "yolov10n-synth.onnx"


def _engine(tmp_path, api, onnx, options=None, name="e.engine"):
    return build_or_reuse(onnx, tmp_path / name, options or BuildOptions(), api, verbosity="error").engine_path


def _ort(onnx, feeds):
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


@pytest.fixture
def multi(tmp_path, api, double):
    onnx = D.tiny_model(tmp_path / "multi.onnx", dynamic=True, extra_outputs=True)
    engine = _engine(tmp_path, api, onnx, BuildOptions(min_batch=1, opt_batch=2, max_batch=4))
    return onnx, engine


def test_session_enumerates_io_and_matches_ort_for_every_dtype_and_batch(multi, api, double):
    onnx, engine = multi
    state, mem = double
    with TrtSession(engine, api) as s:
        assert [t.name for t in s.inputs] == ["x"]
        assert {t.name: str(t.dtype) for t in s.outputs} == {
            "y": "float32",
            "y_half": "float16",
            "y_argmax": "int64",
            "y_argmax32": "int32",
            "y_pos": "bool",
        }
        assert s.inputs[0].shape == (-1, 3, 8, 8) and s.inputs[0].profile == ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
        rng = np.random.default_rng(1)
        for batch in (1, 4, 2):  # grow, then shrink (buffers are reused)
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            got = s.run({"x": x})
            want = _ort(onnx, {"x": x})
            assert set(got) == set(want)
            for name, arr in want.items():
                assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
                np.testing.assert_array_equal(got[name], arr)
            t = s.last_timing
            assert t["latency_ms"] >= t["compute_ms"] >= 0 and t["h2d_ms"] >= 0 and t["d2h_ms"] >= 0
        assert state.executions == 3
    assert mem.live == 0  # every buffer freed


def test_session_rejects_bad_inputs_with_one_line(multi, api, double):
    _, engine = multi
    with TrtSession(engine, api) as s:
        ok = np.zeros((1, 3, 8, 8), np.float32)
        cases = [
            ({"x": ok.astype(np.float64)}, "dtype float64, but the engine expects float32"),
            ({"x": ok[0]}, "rank 3"),
            ({"x": np.zeros((1, 3, 9, 8), np.float32)}, r"expects \[-1, 3, 8, 8\]"),
            ({"x": np.zeros((5, 3, 8, 8), np.float32)}, r"outside the engine profile range 1\.\.4"),
            ({"x": ok, "z": ok}, "no input 'z'"),
            ({}, "input 'x' is not given"),
        ]
        for feeds, msg in cases:
            with pytest.raises(UserError, match=msg) as info:
                s.run(feeds)
            assert "\n" not in str(info.value)


RTX_NATIVE = (
    "TensorRT-RTX: CUDA graphs through its runtime config (tests/test_trt_edge_cases.py); user capture "
    "is tested per full-TensorRT version (tests/test_trt_api_versions.py)"
)


def test_cuda_graph_capture_replay_recapture(multi, api, double):
    if api.is_rtx:
        pytest.skip(RTX_NATIVE)
    onnx, engine = multi
    _, mem = double
    rng = np.random.default_rng(2)
    with TrtSession(engine, api, cuda_graph=True) as s:
        outs = []
        for batch in (2, 2, 2, 3, 3):
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            got = s.run({"x": x})
            np.testing.assert_array_equal(got["y"], _ort(onnx, {"x": x})["y"])  # replay reads the new input
            outs.append(s.last_timing["cuda_graph"])
        assert outs == [0.0, 1.0, 1.0, 0.0, 1.0]  # capture after the first run of each shape, then replay
        assert mem.captures == 2 and mem.graph_launches == 3
        assert s.cuda_graph_status == "captured"


def test_cuda_graph_capture_failure_falls_back(multi, api, double):
    if api.is_rtx:
        pytest.skip(RTX_NATIVE)
    onnx, engine = multi
    state, mem = double
    state.capture_fails = True
    x = np.ones((2, 3, 8, 8), np.float32)
    with TrtSession(engine, api, cuda_graph=True) as s:
        for _ in range(3):
            np.testing.assert_array_equal(s.run({"x": x})["y"], _ort(onnx, {"x": x})["y"])
        assert s.cuda_graph_status.startswith("fallback:") and mem.graph_launches == 0
    mem.begin_capture_error = RuntimeError("cudaStreamBeginCapture: cudaErrorStreamCaptureUnsupported")
    state.capture_fails = False
    with TrtSession(engine, api, cuda_graph=True) as s:
        s.run({"x": x})
        s.run({"x": x})
        assert "cudaErrorStreamCaptureUnsupported" in s.cuda_graph_status


def test_backend_protocol_and_fp16_io(tmp_path, api, double):
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True, extra_outputs=True)
    engine = _engine(tmp_path, api, onnx, BuildOptions(max_batch=3))
    backend = TrtBackend.open(engine, api)
    try:
        assert isinstance(backend, Backend)
        assert backend.name == api.name
        assert backend.input.shape == (None, 3, 8, 8) and backend.input.dtype == np.float32
        assert [o.name for o in backend.outputs] == ["y", "y_half", "y_argmax", "y_argmax32", "y_pos"]
        x = np.random.default_rng(3).random((3, 3, 8, 8), dtype=np.float32)
        got = backend.infer(x)
        want = _ort(onnx, {"x": x})
        for arr, spec in zip(got, backend.outputs, strict=True):
            np.testing.assert_array_equal(arr, want[spec.name])
        meta = backend.metadata()
        assert meta["backend"] == api.name and meta["build"]["cache_key"]
        assert meta["outputs"][1]["dtype"] == "float16"
        assert meta["gpu_order"].startswith("serial")  # auto: TensorRT's enqueue returns at once, trtexec's order
        assert backend.gpu_overlap is False
        assert meta["lane_wait"] == "spin"  # CUDA's default wait (trtexec --useSpinWait)
    finally:
        backend.close()
    sleeping = TrtBackend.open(engine, api, lanes=2, spin_wait=False)
    try:
        assert sleeping.metadata()["lane_wait"] == "sleep"
        assert [lane.spin_wait for lane in sleeping._lanes.lanes] == [False, False]
    finally:
        sleeping.close()


def test_engine_from_another_version_is_refused(multi, api, double, monkeypatch):
    _, engine = multi
    meta_file = metadata_path(engine)
    meta = json.loads(meta_file.read_text())
    meta["backend_version"] = "0.0.1"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"was built by .* 0\.0\.1, but this is .*rebuild with build_trt_engine"):
        TrtSession(engine, api)
    meta_file.unlink()  # without metadata, the runtime's own version check speaks
    monkeypatch.setattr(api.module, "__version__", "99.0.0")
    with pytest.raises(UserError, match=r"cannot deserialize this engine .*expecting library version 99\.0\.0"):
        TrtSession(engine, api)


# ----------------------------------------------------------------------------- weak typing and build (double)


def test_weak_typing_flags_follow_the_real_api(tmp_path, api, double):
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    engine = tmp_path / "w.engine"
    weak = api.name == "tensorrt" and hasattr(api.module.BuilderFlag, "FP16")
    assert weak == (api.name == "tensorrt" and api.major == 10)
    if weak:
        result = build_or_reuse(onnx, engine, BuildOptions(fp16=True), api, verbosity="error")
        header = json.loads(engine.read_bytes()[len(D.ENGINE_MAGIC) :].partition(b"\n")[0])
        assert "FP16" in header["flags"] and header["strongly_typed"] is False
        assert result.metadata["strongly_typed"] is False
    else:
        with pytest.raises(UserError, match=r"--fp16: .*quantize_onnx\.py --mode fp16"):
            build_or_reuse(onnx, engine, BuildOptions(fp16=True), api, verbosity="error")
        assert not engine.exists()
    # a reduced-precision ONNX is always built strongly typed, and refuses the flag
    half = D.tiny_model(tmp_path / "half.onnx", precision="fp16")
    with pytest.raises(UserError, match="--fp16"):
        build_or_reuse(half, engine, BuildOptions(fp16=True), api, verbosity="error", force=True)
    result = build_or_reuse(half, engine, BuildOptions(), api, verbosity="error", force=True)
    header = json.loads(engine.read_bytes()[len(D.ENGINE_MAGIC) :].partition(b"\n")[0])
    assert header["strongly_typed"] is True and result.metadata["strongly_typed"] is True


def test_int8_qdq_onnx_is_strongly_typed_on_every_version(tmp_path, api, double):
    onnx = D.tiny_model(tmp_path / "q.onnx", precision="int8")
    result = build_or_reuse(onnx, tmp_path / "q.engine", BuildOptions(), api, verbosity="error")
    assert result.metadata["strongly_typed"] is True and result.metadata["onnx_precision"]["qdq"] is True


def test_timing_cache_round_trip_or_skip(tmp_path, api, double):
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    cache = tmp_path / "tc" / "timing.cache"
    first = build_or_reuse(onnx, tmp_path / "a.engine", BuildOptions(), api, verbosity="error", timing_cache=cache)
    if api.is_rtx:
        assert first.metadata["timing_cache"]["used"] is False and "no-ops" in first.metadata["timing_cache"]["reason"]
        assert not cache.exists()
        return
    assert first.metadata["timing_cache"] == {
        "used": True,
        "path": str(cache),
        "file_bytes": 0,
        "loaded_bytes": 0,
        "saved_bytes": cache.stat().st_size,
    }
    saved = cache.read_bytes()
    second = build_or_reuse(onnx, tmp_path / "b.engine", BuildOptions(), api, verbosity="error", timing_cache=cache)
    assert second.metadata["timing_cache"]["loaded_bytes"] == len(saved)
    # the loaded entries came back out, updated by the second build
    assert json.loads(cache.read_bytes()[len(D.TIMING_MAGIC) :]) == {"layers:2": 2}


def test_cache_hit_builds_nothing_and_progress_monitor_runs(tmp_path, api, double):
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    first = build_or_reuse(onnx, tmp_path / "e.engine", BuildOptions(), api, verbosity="error", progress=True)
    assert D.FakeBuilder.builds == 1 and not first.cache_hit
    again = build_or_reuse(onnx, tmp_path / "e.engine", BuildOptions(), api, verbosity="error", progress=True)
    assert D.FakeBuilder.builds == 1 and again.cache_hit


# ----------------------------------------------------------------------------- infer_trt_engine.py


def _infer(argv, capsys):
    import infer_trt_engine

    code = run_main(infer_trt_engine.main, argv)
    return code, capsys.readouterr()


def test_infer_cli_end_to_end_on_yolov10n(tmp_path, api, double, capsys):
    onnx = D.fixtures_dir() / "models" / "yolov10n-synth.onnx"
    if not onnx.is_file():
        onnx = DEMO_MODEL
    engine = _engine(tmp_path, api, onnx)
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    code, cap = _infer(
        [
            "--engine",
            str(engine),
            "--backend",
            api.name,
            "--input",
            f"images={tmp_path / 'x.npy'}",
            "--output-dir",
            str(out),
            "--benchmark",
            "--warmup",
            "1",
            "--iterations",
            "3",
        ],
        capsys,
    )
    assert code == 0, cap.err
    got = np.load(out / "output0.npy")
    np.testing.assert_array_equal(got, _ort(onnx, {"images": x})["output0"])
    report = json.loads((out / "infer.json").read_text())
    assert report["outputs"]["output0"] == {"file": "output0.npy", "shape": [1, 300, 6], "dtype": "float32"}
    bench = report["benchmark"]
    for key in ("gpu_compute", "h2d", "d2h", "enqueue", "latency", "end_to_end_host"):
        assert {"mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms"} <= set(bench[key]) and bench[key]["count"] == 3
    assert bench["throughput_qps"] > 0
    assert "throughput:" in cap.out


def test_infer_cli_random_dynamic_multi_output_with_cuda_graph(multi, tmp_path, api, double, capsys):
    onnx, engine = multi
    _, mem = double
    out = tmp_path / "out"
    code, cap = _infer(
        [
            "--engine",
            str(engine),
            "--backend",
            api.name,
            "--shape",
            "x:3x3x8x8",
            "--seed",
            "7",
            "--output-dir",
            str(out),
            "--benchmark",
            "--iterations",
            "4",
            "--warmup",
            "1",
            "--cuda-graph",
        ],
        capsys,
    )
    assert code == 0, cap.err
    x = np.random.default_rng(7).random((3, 3, 8, 8), dtype=np.float32)
    want = _ort(onnx, {"x": x})
    for name, arr in want.items():
        got = np.load(out / f"{name}.npy")
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)
    report = json.loads((out / "infer.json").read_text())
    if api.is_rtx:  # TensorRT-RTX captures and replays itself (its runtime config's strategy)
        state = D._current_state
        assert mem.captures == 0 and state.native_graph_captures == 1 and state.native_graph_replays >= 4
        assert report["engine"]["cuda_graph"] == "tensorrt-rtx runtime config: cuda_graph_strategy=WHOLE_GRAPH_CAPTURE"
        return
    assert report["benchmark"]["cuda_graph_replays"] == 4 and mem.graph_launches >= 4
    assert report["engine"]["cuda_graph"] == "captured"


@pytest.mark.parametrize("case", ["missing", "shape", "dtype", "name", "not-npy"])
def test_infer_cli_bad_input_one_line_and_nothing_written(multi, tmp_path, api, double, capsys, case):
    _, engine = multi
    arrays = {"shape": np.zeros((1, 3, 7, 8), np.float32), "dtype": np.zeros((1, 3, 8, 8), np.int32)}
    path = tmp_path / "in.npy"
    if case in arrays:
        np.save(path, arrays[case])
    elif case == "not-npy":
        path.write_text("hello")
    elif case == "name":
        np.save(path, np.zeros((1, 3, 8, 8), np.float32))
    name = "nope" if case == "name" else "x"
    out = tmp_path / "out"
    code, cap = _infer(
        ["--engine", str(engine), "--backend", api.name, "--input", f"{name}={path}", "--output-dir", str(out)], capsys
    )
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), cap.err
    expect = {
        "missing": "no such file",
        "shape": "engine expects",
        "dtype": "dtype int32",
        "name": "no input 'nope'",
        "not-npy": "not a readable .npy",
    }[case]
    assert expect in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- eval_yolov10m_trt_coco.py


def _eval_args(out: Path, *extra: str) -> list[str]:
    return [
        "--data-root",
        str(MINI),
        "--instances",
        str(MINI / "annotations" / "instances_val2017.json"),
        "--images-dir",
        str(MINI / "val2017"),
        "--max-images",
        "0",
        "--workers",
        "2",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _stats(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_trt_evaluator_reproduces_ort_evaluator(tmp_path, api, double, capsys):
    if not DEMO_MODEL.is_file() or not MINI.is_dir():
        pytest.skip("needs the bundled demo model and synthcoco-mini")
    import eval_yolov10m_onnx_coco
    import eval_yolov10m_trt_coco

    assert (
        run_main(
            eval_yolov10m_onnx_coco.main,
            ["--onnx-path", str(DEMO_MODEL), "--providers", "CPUExecutionProvider", *_eval_args(tmp_path / "ort.json")],
        )
        == 0
    )
    engine = tmp_path / "demo.engine"
    code = run_main(
        eval_yolov10m_trt_coco.main,
        [
            "--onnx-path",
            str(DEMO_MODEL),
            "--engine-path",
            str(engine),
            "--backend",
            api.name,
            "--trt-verbosity",
            "error",
            "--cuda-graph",
            *_eval_args(tmp_path / "trt.json"),
        ],
    )
    assert code == 0, capsys.readouterr().err
    ort_m, trt_m = _stats(tmp_path / "ort.json"), _stats(tmp_path / "trt.json")
    assert trt_m["metrics"] == ort_m["metrics"]
    assert trt_m["metrics"]["mAP_50_95"] > 0.1  # a real evaluation, not two empty ones
    assert set(trt_m) == set(ort_m) and trt_m["schema_version"] == ort_m["schema_version"]
    backend = trt_m["run"]["backend"]
    assert backend["backend"] == api.name and backend["engine_sha256"]
    assert backend["cuda_graph"] == (
        "tensorrt-rtx runtime config: cuda_graph_strategy=WHOLE_GRAPH_CAPTURE" if api.is_rtx else "captured"
    )
    assert trt_m["run"]["trt"]["engine_cache_hit"] is False
    # the same call again reuses the engine through the cache
    code = run_main(
        eval_yolov10m_trt_coco.main,
        [
            "--onnx-path",
            str(DEMO_MODEL),
            "--engine-path",
            str(engine),
            "--backend",
            api.name,
            *_eval_args(tmp_path / "trt2.json", "--max-images", "5"),
        ],
    )
    assert code == 0 and _stats(tmp_path / "trt2.json")["run"]["trt"]["engine_cache_hit"] is True


@pytest.mark.slow
def test_trt_evaluator_dynamic_batch_matches_ort(tmp_path, api, double, capsys):
    onnx = D.fixtures_dir() / "models" / "yolov10n-synth-dynbatch.onnx"
    if not onnx.is_file() or not MINI.is_dir():
        pytest.skip("needs ../shared/fixtures (dynbatch model) and synthcoco-mini")
    import eval_yolov10m_onnx_coco
    import eval_yolov10m_trt_coco

    common = _eval_args(tmp_path / "x.json", "--max-images", "12", "--batch-size", "4")
    assert (
        run_main(
            eval_yolov10m_onnx_coco.main,
            [
                "--onnx-path",
                str(onnx),
                "--providers",
                "CPUExecutionProvider",
                *common,
                "--out",
                str(tmp_path / "ort.json"),
            ],
        )
        == 0
    )
    engine = _engine(
        tmp_path, api, onnx, BuildOptions(shapes=parse_shapes(["images:1x3x640x640,4x3x640x640,4x3x640x640"]))
    )
    code = run_main(
        eval_yolov10m_trt_coco.main,
        ["--engine-path", str(engine), "--backend", api.name, *common, "--out", str(tmp_path / "trt.json")],
    )
    assert code == 0, capsys.readouterr().err
    assert _stats(tmp_path / "trt.json")["metrics"] == _stats(tmp_path / "ort.json")["metrics"]
    assert _stats(tmp_path / "trt.json")["batch_size"] == 4


@pytest.mark.parametrize("mode", ["gpu-normalize", "gpu-letterbox"])
def test_trt_backend_with_device_preprocessing(tmp_path, api, double, mode):
    """--preprocess gpu-*: the kernels (their NumPy reference on the fake memory) write the engine's
    input buffer; both give the CPU path's detections exactly (the same input, byte for byte)."""
    from common.data.coco import open_dataset
    from common.eval.pipeline import EvalOptions, evaluate

    _, mem = double
    ds = open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 12)
    session = TrtSession(_engine(tmp_path, api, DEMO_MODEL), api)
    backend = TrtBackend(session, prep_factory=lambda: D.FakeGpuPreprocessor(mem))
    try:
        ref = evaluate(backend, ds, EvalOptions(progress=False, workers=2))
        got = evaluate(backend, ds, EvalOptions(progress=False, workers=2, preprocess=mode))
    finally:
        backend.close()
    assert got.timings["preprocess_mode"] == mode
    assert got.detections == ref.detections and got.stats == ref.stats
    assert mem.live == 0


def test_eval_cli_needs_a_model(capsys):
    import eval_yolov10m_trt_coco

    assert run_main(eval_yolov10m_trt_coco.main, ["--max-images", "1"]) == 2
    assert "give --engine-path" in capsys.readouterr().err


# ----------------------------------------------------------------------------- lanes, GPU post-processing, latency


def _post_double(monkeypatch, mem):
    """GPU post-processing kernels -> their host double (tests/post_double.py) on the runtime double's memory."""
    from post_double import FakePostprocessKernels

    from common.throughput import gpu_postprocess as gpu_post

    kernels = FakePostprocessKernels(mem)
    monkeypatch.setattr(gpu_post, "postprocess_kernels", lambda device=0: kernels)
    return kernels


@pytest.mark.slow
def test_trt_evaluator_with_gpu_postprocess_matches_ort_evaluator(tmp_path, api, double, monkeypatch, capsys):
    """The acceptance test of issue 14 in CI: TensorRT (runtime double) on 2 lanes, decode + NMS by the
    post-processing kernels' host double on each lane's stream, gives the ORT evaluator's metrics
    (CPU post-processing) on the bundled mini set; metrics.json says what ran and how it was timed."""
    if not DEMO_MODEL.is_file() or not MINI.is_dir():
        pytest.skip("needs the bundled demo model and synthcoco-mini")
    import eval_yolov10m_onnx_coco
    import eval_yolov10m_trt_coco

    _, mem = double
    kernels = _post_double(monkeypatch, mem)
    assert (
        run_main(
            eval_yolov10m_onnx_coco.main,
            [
                "--onnx-path",
                str(DEMO_MODEL),
                "--providers",
                "CPUExecutionProvider",
                "--warmup-runs",
                "0",
                *_eval_args(tmp_path / "ort.json"),
            ],
        )
        == 0
    )
    code = run_main(
        eval_yolov10m_trt_coco.main,
        [
            "--onnx-path",
            str(DEMO_MODEL),
            "--engine-path",
            str(tmp_path / "e.engine"),
            "--backend",
            api.name,
            "--trt-verbosity",
            "error",
            "--postprocess",
            "gpu",
            "--lanes",
            "2",
            "--warmup-runs",
            "2",
            "--latency-runs",
            "4",
            *_eval_args(tmp_path / "trt.json"),
        ],
    )
    assert code == 0, capsys.readouterr().err
    ort_m, trt_m = _stats(tmp_path / "ort.json"), _stats(tmp_path / "trt.json")
    assert trt_m["metrics"] == ort_m["metrics"] and trt_m["metrics"]["mAP_50_95"] > 0.1
    assert "e2e_select" in kernels.launches  # the GPU path ran (the demo model is e2e), not the NumPy one
    assert (ort_m["postprocess"], trt_m["postprocess"]) == ("cpu", "gpu")
    assert ort_m["timings"]["postprocess_fallback"]  # auto chose cpu and says why
    assert trt_m["latency_timing"].startswith("gpu-lane-events") and ort_m["latency_timing"].startswith("host")
    backend = trt_m["run"]["backend"]
    assert backend["lanes"] == 2 and backend["in_flight"] == 3 and backend["postprocess"]["layout"] == "e2e"
    n_batches = len(trt_m["image_ids"])
    assert trt_m["latency"]["count"] == n_batches == backend["gpu_compute_ms"]["count"]
    lp = trt_m["latency_pass"]
    assert lp["runs"] == 4 and lp["gpu"]["count"] == lp["host"]["count"] == 4 and lp["batch_size"] == 1
    assert "latency_pass" not in ort_m


@pytest.mark.parametrize(
    ("model", "batch", "lanes", "kernel"),
    [
        ("yolov10n-synth-dynbatch", 2, 3, "e2e_select"),  # e2e, 2 images a batch, a partial last batch
        ("yolov10n-synth-raw84", 1, 1, "greedy_nms"),
        ("yolov10n-synth-dfl144", 1, 2, "greedy_nms"),
    ],
)
def test_trt_backend_gpu_postprocess_equals_numpy_on_the_lanes(
    tmp_path, api, double, monkeypatch, model, batch, lanes, kernel
):
    """Every lane's post-processor gives what the NumPy path gives, for each layout, whichever lane a
    batch lands on, with several batches in flight."""
    from common.data.coco import open_dataset
    from common.eval.pipeline import EvalOptions, evaluate

    onnx = D.fixtures_dir() / "models" / f"{model}.onnx"
    if not onnx.is_file() or not MINI.is_dir():
        pytest.skip(f"needs ../shared/fixtures ({model}) and synthcoco-mini")
    _, mem = double
    kernels = _post_double(monkeypatch, mem)
    ds = open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 5)
    options = None
    if batch > 1:
        options = BuildOptions(shapes=parse_shapes([f"images:1x3x640x640,{batch}x3x640x640,{batch}x3x640x640"]))
    backend = TrtBackend(TrtSession(_engine(tmp_path, api, onnx, options), api), lanes=lanes)
    try:
        got = evaluate(
            backend, ds, EvalOptions(progress=False, workers=2, batch_size=batch, postprocess="gpu", warmup_runs=1)
        )
        launched = len(kernels.launches)
        ref = evaluate(backend, ds, EvalOptions(progress=False, workers=2, batch_size=batch, postprocess="cpu"))
    finally:
        backend.close()
    assert kernel in kernels.launches
    assert len(kernels.launches) == launched  # the same backend, then --postprocess cpu: the NumPy path ran
    assert got.timings["postprocess_mode"] == "gpu" and ref.timings["postprocess_mode"] == "cpu"
    assert got.layout == ref.layout
    assert got.detections == ref.detections and got.stats == ref.stats
    assert got.timings["latency"]["count"] == -(-5 // batch) and got.timings["latency_timing"].startswith("gpu-lane")
    assert mem.live == 0


@pytest.mark.parametrize(
    ("model", "batch", "lanes", "threads"),
    [
        ("yolov10n-synth-dynbatch", 2, 3, "per-lane"),
        ("yolov10n-synth-dfl144", 1, 2, "per-lane"),
        ("yolov10n-synth-dfl144", 1, 3, "main"),
    ],
)
def test_trt_lanes_are_stream_ordered_when_the_gpu_runs_work_as_late_as_it_may(
    tmp_path, api, monkeypatch, model, batch, lanes, threads
):
    """TensorRT lanes with the GPU letterbox and GPU post-processing on ``DeferredCudaMemory`` (each copy, kernel
    and engine run happens only once the host waits for it): the detections of the CPU path on the same engine,
    with a thread per lane or the lanes driven by the evaluator's thread (``--lane-threads main``)."""
    from common.data.coco import open_dataset
    from common.eval.pipeline import EvalOptions, evaluate

    onnx = D.fixtures_dir() / "models" / f"{model}.onnx"
    if not onnx.is_file() or not MINI.is_dir():
        pytest.skip(f"needs ../shared/fixtures ({model}) and synthcoco-mini")
    _, mem = D.use_double(monkeypatch, api, D.DeferredCudaMemory())
    _post_double(monkeypatch, mem)
    ds = open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 5)
    options = None
    if batch > 1:
        options = BuildOptions(shapes=parse_shapes([f"images:1x3x640x640,{batch}x3x640x640,{batch}x3x640x640"]))
    session = TrtSession(_engine(tmp_path, api, onnx, options), api)
    backend = TrtBackend(session, prep_factory=lambda: D.FakeGpuPreprocessor(mem), lanes=lanes, lane_threads=threads)
    try:
        kw = dict(progress=False, workers=2, batch_size=batch, warmup_runs=1)
        got = evaluate(backend, ds, EvalOptions(preprocess="gpu-letterbox", postprocess="gpu", **kw))
        ref = evaluate(backend, ds, EvalOptions(preprocess="cpu", postprocess="cpu", **kw))
        meta = backend.metadata()
    finally:
        backend.close()
    assert (got.timings["preprocess_mode"], got.timings["postprocess_mode"]) == ("gpu-letterbox", "gpu")
    assert got.detections == ref.detections and got.stats == ref.stats
    assert meta["lane_threads"] == threads
    assert mem.live == 0


def test_postprocess_gpu_needs_a_device_backend_and_auto_falls_back():
    from common.eval.modes import resolve_postprocess
    from common.model.yolov10 import PostprocessOptions
    from common.ort.session import OrtBackend

    plain = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    with pytest.raises(UserError, match="--postprocess gpu needs a backend with device output buffers"):
        resolve_postprocess(plain, "gpu", None, 640, PostprocessOptions())
    mode, layout, why = resolve_postprocess(plain, "auto", None, 640, PostprocessOptions())
    assert (mode, layout) == ("cpu", None) and "no device post-processing" in why
    assert resolve_postprocess(plain, "cpu", None, 640, PostprocessOptions()) == ("cpu", None, None)


def test_trt_backend_auto_postprocess_without_kernels_is_cpu(tmp_path, api, double):
    """No GPU here: the real kernels cannot load, so auto runs the NumPy path and records why."""
    from common.eval.modes import resolve_postprocess
    from common.model.yolov10 import PostprocessOptions

    backend = TrtBackend(TrtSession(_engine(tmp_path, api, DEMO_MODEL), api), lanes=2)
    try:
        mode, _, why = resolve_postprocess(backend, "auto", None, 640, PostprocessOptions())
        assert mode == "cpu" and "GPU post-processing" in why
        with pytest.raises(UserError, match="GPU post-processing"):
            resolve_postprocess(backend, "gpu", None, 640, PostprocessOptions())
        assert backend.metadata()["postprocess"] is None
    finally:
        backend.close()
