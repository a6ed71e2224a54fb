"""validate_e2e.py: the CI run (ORT CPU + real TensorRT-RTX build + runtime double), bad input, the pieces.

The CI run uses the bundled yolov10n-synth and an INT8 Q/DQ candidate made here with ONNX Runtime's
static quantizer (CI has no nvidia-modelopt; the --quantize path through modelopt is tested when
.venv-quant exists).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_MODEL, MINI, REPO, run_script

from common.core.errors import UserError
from common.eval.options import DataOptions, EvalOptions
from common.report import validate as V
from common.report.compare import precision_of
from common.report.validate_run import ValidateOptions, validate

TESTS = Path(__file__).resolve().parent
FAST = ["--data-root", str(MINI), "--workers", "2", "--warmup-runs", "0"]


def _need_demo() -> None:
    if not DEMO_MODEL.is_file() or not MINI.is_dir():
        pytest.skip("needs the bundled demo model and datasets/synthcoco-mini")


@pytest.fixture(scope="module")
def int8_candidate(tmp_path_factory) -> Path:
    """yolov10n-synth with INT8 Q/DQ on its convolutions (ONNX Runtime's quantizer, 6 calibration images).

    Biases stay float: TensorRT refuses an int32 bias DequantizeLinear (validate reported exactly that).
    """
    _need_demo()
    q = pytest.importorskip("onnxruntime.quantization")
    from common.data.coco import open_dataset
    from common.data.images import load_image_rgb, preprocess

    ds = open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 0)
    calib = [preprocess(load_image_rgb(ds.image_path(i)), 640)[0][None] for i in ds.image_ids[-6:]]

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"images": x}

    out = tmp_path_factory.mktemp("cand") / "yolov10n-synth.int8.onnx"
    q.quantize_static(
        str(DEMO_MODEL),
        str(out),
        Reader(),
        quant_format=q.QuantFormat.QDQ,
        activation_type=q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv"],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )  # TensorRT refuses int32 bias Q/DQ
    return out


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ----------------------------------------------------------------------------- the CI run


@pytest.mark.slow
def test_ci_validate_baseline_and_int8_candidate(tmp_path, int8_candidate, capsys):
    assert precision_of(int8_candidate) == "int8" and precision_of(DEMO_MODEL) == "fp32"
    opts = ValidateOptions(
        onnx_path=DEMO_MODEL,
        candidate=int8_candidate,
        data=DataOptions(MINI, max_images=4),
        eval=EvalOptions(workers=2, warmup_runs=0, progress=False),
        tensor_samples=2,
        out=tmp_path,
    )
    # the TensorRT-RTX rows' evaluation runs in a worker that installs the runtime double in its own process
    code = validate(opts, simulated_rtx_worker=TESTS / "validate_double_worker.py")
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-3000:]
    (root,) = list((tmp_path / "validate").iterdir())
    val = json.loads((root / "validation.json").read_text())
    assert val["verdict"] == {"pass": True, "problems": [], "inconclusive": []}
    runs = {(r["model"], r["backend"]): r for r in val["runs"]}
    models = [m["label"] for m in val["models"]]
    assert models == ["yolov10n-synth", "yolov10n-synth.int8"]
    assert [m["precision"] for m in val["models"]] == ["fp32", "int8"]
    rtx_importable = val["availability"]["trt-rtx"]["ok"]
    for model in models:
        assert len([k for k in runs if k[0] == model]) == len(V.BACKEND_KEYS)  # nothing silently dropped
        assert runs[(model, "ort-cpu")]["status"] == "ok"
        for key in V.BACKEND_KEYS:
            r = runs[(model, key)]
            assert r["status"] in ("ok", "skipped")
            if r["status"] == "skipped":
                assert r["reason"], f"{key} skipped without a reason"
            status = json.loads((root / model / key / "status.json").read_text())
            assert status["status"] == r["status"]
        rtx = runs[(model, "trt-rtx")]
        if rtx_importable:
            assert rtx["status"] == "ok" and rtx["runtime_double"] is True
            assert [s["name"] for s in rtx["steps"]] == ["build", "eval"]
            engine_json = next((root / model / "trt-rtx" / "engine").glob("*.tensorrt-rtx.engine.json"))
            meta = json.loads(engine_json.read_text())
            assert meta["backend"] == "tensorrt-rtx" and meta["engine_bytes"] > 0  # the real builder ran
        else:
            assert "tensorrt_rtx" in rtx["reason"]
    # the JSON summary
    summary = json.loads((root / "summary.json").read_text())
    rows = {(r["model"], r["backend"]): r for r in summary["rows"]}
    assert summary["reference"]["backend"] == "ort-cpu" and summary["reference"]["model"] == "yolov10n-synth"
    base, cand = rows[("yolov10n-synth", "ort-cpu")], rows[("yolov10n-synth.int8", "ort-cpu")]
    assert base["delta_ap"] == 0.0 and base["parity"]["status"] == "reference"
    assert cand["precision"] == "int8" and cand["delta_ap"] == pytest.approx(cand["mAP_50_95"] - base["mAP_50_95"])
    assert 0.05 < base["mAP_50_95"] <= 1.0 and base["num_images"] == 4
    if rtx_importable:
        for model in models:
            r = rows[(model, "trt-rtx")]
            assert r["runtime_double"] is True and r["parity"]["status"] == "pass"
            assert r["parity"]["reference"].startswith("ort-cpu")
            # the double runs the same ONNX with ONNX Runtime: detections and raw outputs agree exactly
            assert r["parity"]["matched_fraction"] == 1.0 and r["parity"]["dropped"] == r["parity"]["extra"] == 0
            assert r["tensor_errors"] and r["tensor_errors"][0]["max_abs"] == 0.0
            assert r["tensor_errors"][0]["shape"] == [2, 300, 6]
    skipped = {(n["model"], n["backend"]) for n in summary["not_run"]}
    assert ("yolov10n-synth", "ort-cuda") in skipped
    md = (root / "summary.md").read_text()
    assert "| backend | precision | mAP_50_95 | ΔAP vs reference |" in md and "skipped" in md
    assert (root / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(root.rglob("raw_outputs.npz"))  # dropped unless --keep-tensors


def test_explicitly_requested_backend_that_cannot_run_fails_the_run(tmp_path, monkeypatch):
    """--backends ort-cpu ort-cuda on a machine without ORT CUDA: ort-cuda recorded skipped, exit 1."""
    _need_demo()
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has ORT CUDA")
    proc = run_script(
        "validate_e2e.py",
        "--onnx-path",
        str(DEMO_MODEL),
        *FAST,
        "--max-images",
        "2",
        "--tensor-samples",
        "0",
        "--backends",
        "ort-cpu",
        "ort-cuda",
        "--output-root",
        str(tmp_path),
    )
    assert proc.returncode == 1, proc.stderr
    assert "requested but skipped" in proc.stderr and "ort-cuda" in proc.stderr
    (root,) = list((tmp_path / "validate").iterdir())
    val = json.loads((root / "validation.json").read_text())
    assert {r["backend"]: r["status"] for r in val["runs"]} == {"ort-cpu": "ok", "ort-cuda": "skipped"}
    assert (root / "summary.md").is_file()


# ----------------------------------------------------------------------------- bad input


def test_run_root_not_writable(tmp_path):
    _need_demo()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _one_error_line(run_script("validate_e2e.py", "--onnx-path", str(DEMO_MODEL), *FAST, "--out", str(blocker)))
    assert "--out" in line and str(blocker) in line


def test_candidate_with_another_input_is_refused(tmp_path):
    _need_demo()
    import trt_double as D

    other = D.tiny_model(tmp_path / "tiny.onnx")  # input x [1,3,8,8]
    line = _one_error_line(
        run_script(
            "validate_e2e.py",
            "--onnx-path",
            str(DEMO_MODEL),
            "--candidate",
            str(other),
            *FAST,
            "--output-root",
            str(tmp_path / "out"),
        )
    )
    assert "--candidate" in line and "differs from the baseline" in line and "images" in line
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_missing_candidate_and_unknown_dataset(tmp_path):
    _need_demo()
    line = _one_error_line(
        run_script("validate_e2e.py", "--onnx-path", str(DEMO_MODEL), "--candidate", str(tmp_path / "nope.onnx"), *FAST)
    )
    assert "--candidate" in line and "no such file" in line
    line = _one_error_line(run_script("validate_e2e.py", "--onnx-path", str(DEMO_MODEL), "--data-root", str(tmp_path)))
    assert "images directory not found" in line or "instances file not found" in line


def test_quantize_without_modelopt_is_explained(tmp_path):
    _need_demo()
    probe = subprocess.run([sys.executable, "-c", "import modelopt"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("modelopt is importable by this interpreter")
    line = _one_error_line(
        run_script(
            "validate_e2e.py",
            "--onnx-path",
            str(DEMO_MODEL),
            "--quantize",
            "int8",
            *FAST,
            "--output-root",
            str(tmp_path),
        )
    )
    assert "nvidia-modelopt is not importable" in line and "--quantize-python" in line


def test_help_has_examples_and_no_test_flag():
    proc = run_script("validate_e2e.py", "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout
    assert "double" not in proc.stdout
    refused = run_script("validate_e2e.py", "--onnx-path", str(DEMO_MODEL), "--trt-runtime-double", "x.py")
    assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr


QUANT_PY = Path(os.environ.get("YOLO_QUANT_PYTHON", REPO / ".venv-quant" / "bin" / "python"))


@pytest.mark.slow
def test_quantize_int8_through_modelopt_venv(tmp_path):
    """--quantize int8 runs quantize_onnx.py in the quant venv (skipped where there is none, e.g. CI)."""
    _need_demo()
    if not QUANT_PY.exists():
        pytest.skip(f"no quant interpreter at {QUANT_PY}")
    proc = run_script(
        "validate_e2e.py",
        "--onnx-path",
        str(DEMO_MODEL),
        "--quantize",
        "int8",
        "--quantize-python",
        str(QUANT_PY),
        "--calib-images",
        "4",
        *FAST,
        "--max-images",
        "2",
        "--tensor-samples",
        "0",
        "--backends",
        "ort-cpu",
        "--output-root",
        str(tmp_path),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (root,) = list((tmp_path / "validate").iterdir())
    val = json.loads((root / "validation.json").read_text())
    assert val["quantize"]["rc"] == 0
    assert [m["precision"] for m in val["models"]] == ["fp32", "int8"]
    assert (root / "quantize" / "yolov10n-synth.int8.onnx").is_file()
    assert {r["status"] for r in val["runs"]} == {"ok"}


# ----------------------------------------------------------------------------- pieces


def _doctor(providers, eps=None, gpu=True, trt_ok=False, rtx_ok=True, ready=False):
    return {
        "onnxruntime": {"ok": True, "version": "1.23.0", "available_providers": providers, "eps": eps or {}},
        "gpu": {"devices": [{"name": "NVIDIA H100", "compute_capability": "9.0"}]} if gpu else {"error": "none"},
        "tensorrt": {"bindings": {"ok": trt_ok, "error": "ModuleNotFoundError: No module named 'tensorrt'"}},
        "tensorrt_rtx": {"ok": rtx_ok, "error": None if rtx_ok else "ModuleNotFoundError: tensorrt_rtx"},
        "checks": [
            {"check": "import tensorrt", "status": "FAIL", "detail": "ModuleNotFoundError: No module named 'tensorrt'"},
            {"check": "GPU", "status": "ok" if gpu else "FAIL", "detail": "NVIDIA H100" if gpu else "no GPU seen"},
            {"check": "ORT TensorRT EP", "status": "warn", "detail": "libnvinfer.so.10: cannot open shared object"},
        ],
        "recommendations": [
            {
                "severity": "FAIL",
                "message": "container has libnvinfer 10.13.3 but /usr/bin/python3 "
                "cannot import tensorrt (ModuleNotFoundError); run `pixi run -e rtx5090 setup-tensorrt` "
                "to install tensorrt-cu12-bindings==10.13.3.*",
            }
        ],
        "ready": ready,
    }


def test_availability_follows_the_doctor():
    gpu_eps = {
        "CUDAExecutionProvider": {"session_ok": True},
        "TensorrtExecutionProvider": {"session_ok": False, "library_loads": False},
    }
    doc = _doctor(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], gpu_eps)
    a = V.availability(doc, V.BACKEND_KEYS, rtx_ep_available=False)
    assert a["ort-cpu"].ok and a["ort-cuda"].ok and a["trt-rtx"].ok
    assert not a["ort-trt-ep"].ok and "libnvinfer.so.10" in a["ort-trt-ep"].reason
    assert not a["trt"].ok and "No module named 'tensorrt'" in a["trt"].reason and "setup-tensorrt" in a["trt"].reason
    assert not a["ort-rtx-ep"].ok and "NvTensorRTRTXExecutionProvider" in a["ort-rtx-ep"].reason
    cpu_only = V.availability(_doctor(["CPUExecutionProvider"], gpu=False), V.BACKEND_KEYS, rtx_ep_available=False)
    assert cpu_only["ort-cpu"].ok and not cpu_only["ort-cuda"].ok
    assert "CUDAExecutionProvider" in cpu_only["ort-cuda"].reason
    assert not cpu_only["trt-rtx"].ok and "no GPU seen" in cpu_only["trt-rtx"].reason
    assert V.availability(_doctor(["CPUExecutionProvider"], gpu=False), ["trt-rtx"], runtime_double=True)["trt-rtx"].ok


def test_a_crashing_backend_is_recorded_and_the_next_one_runs(tmp_path):
    """A subprocess that dies of SIGSEGV marks that backend failed (with the log); the loop carries on."""
    crasher = tmp_path / "crash.py"
    crasher.write_text(
        "import os, signal, sys\nprint('loading the engine')\nsys.stdout.flush()\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    model = V.ModelInfo("m", tmp_path / "m.onnx", "baseline", "fp32", "0" * 64, [])
    cfg = V.RunConfig(root=tmp_path / "root", python=sys.executable, log=lambda *_: None)
    original = V.plan_steps

    def crash_first(cfg_, spec, model_, folder):
        if spec.key == "ort-cpu":
            return [V.Step("eval", [sys.executable, str(crasher)])], False
        return [V.Step("eval", [sys.executable, "-c", "print('fine')"])], False

    V.plan_steps = crash_first
    try:
        first = V.run_backend(cfg, "ort-cpu", model, V.Availability(True))
        second = V.run_backend(cfg, "ort-cuda", model, V.Availability(True))
    finally:
        V.plan_steps = original
    assert first.status == "failed" and "crashed with SIGSEGV" in first.reason and "eval.log" in first.reason
    assert json.loads((tmp_path / "root" / "m" / "ort-cpu" / "status.json").read_text())["status"] == "failed"
    # exit 0 but no metrics.json is a failure too, not a silent pass
    assert second.status == "failed" and "no metrics.json" in second.reason
    skipped = V.run_backend(cfg, "trt", model, V.Availability(False, "doctor says no"))
    assert skipped.status == "skipped" and skipped.reason == "doctor says no"


def test_error_from_log_prefers_the_error_line():
    assert V.error_from_log("a\nerror: --engine x: no such file\n", 2) == "exit code 2: --engine x: no such file"
    assert V.error_from_log("one\ntwo\n", 124).startswith("timed out: one | two")


def test_raw_output_dump_round_trip(tmp_path):
    class Fake:
        def __init__(self) -> None:
            self.outputs = [type("S", (), {"name": "/model.23/out"})()]

        def infer(self, batch):
            return [batch.sum(axis=(2, 3)) * 2]

    x = np.random.default_rng(0).random((3, 3, 4, 4), dtype=np.float32)
    info = V.dump_raw_outputs(Fake(), x, tmp_path / "r.npz")
    assert info["names"] == ["/model.23/out"] and info["images"] == 3
    got = V.load_raw(tmp_path / "r.npz")
    np.testing.assert_allclose(got["/model.23/out"], x.sum(axis=(2, 3)) * 2, rtol=1e-6)


def test_check_candidate_accepts_same_io(tmp_path):
    _need_demo()
    base = V.model_info(DEMO_MODEL, "baseline", "--onnx-path", "b")
    V.check_candidate(base, base, "--candidate")
    with pytest.raises(UserError, match="not a readable ONNX"):
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"\x00garbage")
        V.model_info(bad, "candidate", "--candidate", "c")


def test_worker_job_round_trips_through_json(tmp_path):
    """The job a worker process reads is the job validate planned, typed options included."""
    from common.eval.options import OutputOptions
    from common.model.yolov10 import PostprocessOptions

    job = V.WorkerJob(
        backend="ort-trt-ep",
        model=tmp_path / "m.onnx",
        data=DataOptions(tmp_path, images_dir=tmp_path / "imgs", max_images=7),
        eval=EvalOptions(imgsz=320, workers=3, warmup_runs=2, post=PostprocessOptions(0.01, 0.6, 50), progress=False),
        out=OutputOptions("validate", tmp_path / "metrics.json", tmp_path / "det.json"),
        engine=tmp_path / "m.engine",
        provider_options={"TensorrtExecutionProvider": {"trt_engine_cache_enable": "True"}},
        require_accelerator=True,
        tensor_inputs=tmp_path / "t.npy",
        tensor_out=tmp_path / "r.npz",
    )
    assert V.WorkerJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job


def test_a_baseline_with_nothing_to_compare_against_is_inconclusive(tmp_path):
    """Only the reference backend ran and there is no candidate: never VALIDATION PASSED; exit code 3."""
    _need_demo()
    proc = run_script(
        "validate_e2e.py",
        "--onnx-path",
        str(DEMO_MODEL),
        *FAST,
        "--max-images",
        "2",
        "--tensor-samples",
        "0",
        "--backends",
        "ort-cpu",
        "--output-root",
        str(tmp_path),
    )
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "VALIDATION INCONCLUSIVE" in proc.stderr and "nothing was compared" in proc.stderr
    assert "PASSED" not in proc.stdout
    (root,) = list((tmp_path / "validate").iterdir())
    verdict = json.loads((root / "validation.json").read_text())["verdict"]
    assert verdict["pass"] is False and verdict["problems"] == [] and verdict["inconclusive"]
