"""The TensorRT evaluator on a GPU, end to end, with only the engine simulated (GPU machines only).

``tests/trt_device_double.py`` serves ``execute_async_v3(stream)`` with ONNX Runtime's CUDA EP through
IO binding on the device addresses our TensorRT code set, on our stream. Everything else is real:
cuda-python buffers, streams, events, copies and our kernels. The TensorRT evaluator must give the
ORT CUDA evaluator's detections on the fixture valA set (both with their defaults; ORT with --io-binding,
the users' fast path, so both run the same pre-/post-processing code on device buffers). This is the
closest we can come to running our TensorRT code for real without TensorRT (no real engine is executed).

Skipped without a CUDA device, ORT's CUDA EP or the fixtures. YOLO_DEVICE_DOUBLE_MODEL picks the
fixture model (default yolov10n-synth-raw84.onnx); YOLO_DEVICE_DOUBLE_REPORT=path.json records the
comparison; YOLO_DEVICE_DOUBLE_MAX_IMAGES limits the images (default 0: all 300).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import cuda_device_count, fixture_path

pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda.bindings) not installed")
ort = pytest.importorskip("onnxruntime")

pytestmark = [
    pytest.mark.skipif(cuda_device_count() == 0, reason="no CUDA device"),
    pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="no ORT CUDA EP"),
]

import trt_double as D  # noqa: E402
from trt_device_double import install_device_double  # noqa: E402

from common.core.cli import run_main  # noqa: E402


def _data_args(max_images: str) -> list[str]:
    valA = fixture_path("synthcoco", "valA")
    instances = fixture_path("synthcoco", "annotations", "instances_valA.json")
    return [
        "--data-root",
        str(valA.parent),
        "--instances",
        str(instances),
        "--images-dir",
        str(valA),
        "--max-images",
        max_images,
        "--no-progress",
    ]


def _by_image(path: Path) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in json.loads(path.read_text()):
        out.setdefault(int(row["image_id"]), []).append(row)
    return out


def compare_detections(a: dict[int, list[dict]], b: dict[int, list[dict]]) -> dict:
    """Per image: same number of rows, same categories in the same order; the largest box / score gap."""
    worst_box = worst_score = 0.0
    mismatched = [
        i
        for i in sorted(set(a) | set(b))
        if [r["category_id"] for r in a.get(i, [])] != [r["category_id"] for r in b.get(i, [])]
    ]
    for i in set(a) & set(b):
        if i in mismatched:
            continue
        ba = np.array([r["bbox"] for r in a[i]], np.float64).reshape(-1, 4)
        bb = np.array([r["bbox"] for r in b[i]], np.float64).reshape(-1, 4)
        sa = np.array([r["score"] for r in a[i]], np.float64)
        sb = np.array([r["score"] for r in b[i]], np.float64)
        if ba.size:
            worst_box = max(worst_box, float(np.abs(ba - bb).max()))
            worst_score = max(worst_score, float(np.abs(sa - sb).max()))
    return {
        "images": len(set(a) | set(b)),
        "rows": sum(map(len, a.values())),
        "identical": a == b,
        "images_with_other_rows": mismatched,
        "max_abs_box_px": worst_box,
        "max_abs_score": worst_score,
    }


def _run_pair(tmp_path: Path, monkeypatch, extra: list[str]) -> tuple[dict, dict, dict, object]:
    """ORT CUDA --io-binding and the TensorRT evaluator on the device double, with the same ``extra`` flags."""
    import eval_yolov10m_onnx_coco
    import eval_yolov10m_trt_coco

    model = fixture_path("models", os.environ.get("YOLO_DEVICE_DOUBLE_MODEL", "yolov10n-synth-raw84.onnx"))
    data = _data_args(os.environ.get("YOLO_DEVICE_DOUBLE_MAX_IMAGES", "0"))
    api = D.api_under_test()
    state = install_device_double(monkeypatch, api.module)

    ort_out, trt_out = tmp_path / "ort", tmp_path / "trt"
    ort_args = [
        "--onnx-path",
        str(model),
        "--providers",
        "CUDAExecutionProvider",
        "--io-binding",
        *data,
        *extra,
        "--out",
        str(ort_out / "metrics.json"),
        "--detections-out",
        str(ort_out / "detections.json"),
    ]
    assert run_main(eval_yolov10m_onnx_coco.main, ort_args) == 0
    trt_args = [
        "--onnx-path",
        str(model),
        "--engine-path",
        str(tmp_path / "model.engine"),
        "--backend",
        api.name,
        "--trt-verbosity",
        "error",
        *data,
        *extra,
        "--out",
        str(trt_out / "metrics.json"),
        "--detections-out",
        str(trt_out / "detections.json"),
    ]
    assert run_main(eval_yolov10m_trt_coco.main, trt_args) == 0

    ort_m = json.loads((ort_out / "metrics.json").read_text())
    trt_m = json.loads((trt_out / "metrics.json").read_text())
    got = compare_detections(_by_image(trt_out / "detections.json"), _by_image(ort_out / "detections.json"))
    report = {
        "model": model.name,
        "api": api.describe(),
        "flags": extra,
        "device_executions": state.device_executions,
        "ort_sessions_playing_the_engine": state.sessions,
        "streams": len(state.streams),
        "trt_backend": trt_m["run"]["backend"],
        "ort_metrics": ort_m["metrics"],
        "trt_metrics": trt_m["metrics"],
        "comparison": got,
    }
    return ort_m, trt_m, report, state


def _check_pair(ort_m: dict, trt_m: dict, report: dict, state) -> None:
    got = report["comparison"]
    # our TensorRT code ran on the GPU: the real cuda-python layer, the engine served on our stream
    assert trt_m["run"]["backend"]["memory_layer"] == "cuda-python"
    assert state.device_executions >= 1 and state.sessions >= 1
    # the detections are the ORT CUDA evaluator's: same rows per image and order; two CUDA sessions may pick
    # different cuDNN algorithms, so boxes/scores may differ in the last float bits, no more
    assert got["images_with_other_rows"] == [], got
    assert got["max_abs_box_px"] <= 1e-2 and got["max_abs_score"] <= 1e-4, got
    for k, v in ort_m["metrics"].items():
        if isinstance(v, float):
            assert abs(trt_m["metrics"][k] - v) <= 1e-4, (k, v, trt_m["metrics"][k])


def _report(report: dict, suffix: str = "") -> None:
    path = os.environ.get("YOLO_DEVICE_DOUBLE_REPORT")
    if path:
        Path(path + suffix).write_text(json.dumps(report, indent=1, default=str))


def test_trt_evaluator_on_device_double_matches_ort_cuda_on_valA(tmp_path, monkeypatch):
    ort_m, trt_m, report, state = _run_pair(tmp_path, monkeypatch, [])
    _report(report)
    _check_pair(ort_m, trt_m, report, state)


def test_trt_evaluator_decode_gpu_on_device_double_matches_ort_cuda_on_valA(tmp_path, monkeypatch):
    """--decode gpu (nvImageCodec on each lane's stream, the letterbox kernel reading the decoded images in
    place) through both evaluators: the same detections, as with OpenCV decoding."""
    pytest.importorskip("nvidia.nvimgcodec", reason="nvImageCodec not installed")
    flags = ["--preprocess", "gpu-letterbox", "--decode", "gpu"]
    ort_m, trt_m, report, state = _run_pair(tmp_path, monkeypatch, flags)
    _report(report, ".decode-gpu.json")
    assert ort_m["timings"]["decode"] == trt_m["timings"]["decode"] == "gpu"
    _check_pair(ort_m, trt_m, report, state)


def _find(tree: object, key: str) -> list:
    """Every value stored under ``key`` anywhere in a metrics.json tree."""
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == key] + [x for v in tree.values() for x in _find(v, key)]
    if isinstance(tree, list):
        return [x for v in tree for x in _find(v, key)]
    return []


def _run_trt(tmp_path: Path, name: str, model: Path, data: list[str], api, extra: list[str]) -> tuple[dict, dict]:
    import eval_yolov10m_trt_coco

    out = tmp_path / name
    args = ["--onnx-path", str(model), "--engine-path", str(tmp_path / "model.engine"), "--backend", api.name]
    args += ["--trt-verbosity", "error", "--batch-size", "4", *data, *extra, "--out", str(out / "metrics.json")]
    assert run_main(eval_yolov10m_trt_coco.main, [*args, "--detections-out", str(out / "detections.json")]) == 0
    return json.loads((out / "metrics.json").read_text()), _by_image(out / "detections.json")


def test_plain_lanes_and_cuda_graph_runs_on_the_device_double(tmp_path, monkeypatch):
    """On the GPU, in one run: --lanes 0, the default lanes and --cuda-graph on 30 images at batch 4 (a partial
    last batch) all pass; the plain runner and the lanes give the same detections; no CUDA graph is captured
    after warm-up; gpu_compute_ms is recorded with --preprocess cpu. ONNX Runtime serves the engine here and
    cannot run inside a stream capture: the capture refusal is recorded in the report, not a failure."""
    model = fixture_path("models", "yolov10n-synth-dynbatch.onnx")  # batch 4 needs a dynamic batch axis
    data = [*_data_args("30"), "--shapes", "images:1x3x640x640,4x3x640x640,4x3x640x640"]
    api = D.api_under_test()
    install_device_double(monkeypatch, api.module)
    runs = {
        "plain": ["--lanes", "0", "--preprocess", "cpu"],
        "lanes": ["--preprocess", "cpu"],
        "cuda_graph": ["--cuda-graph", "--preprocess", "cpu"],
    }
    got = {name: _run_trt(tmp_path, name, model, data, api, flags) for name, flags in runs.items()}
    report: dict = {"api": api.describe(), "runs": {}}
    for name, (metrics, _) in got.items():
        backend = metrics["run"]["backend"]
        report["runs"][name] = {
            "flags": runs[name],
            "lanes": backend.get("lanes"),
            "cuda_graph_status": _find(metrics, "cuda_graph_status"),
            "captures_after_warmup": _find(metrics, "cuda_graph_captures_after_warmup"),
            "gpu_compute_ms": _find(metrics, "gpu_compute_ms"),
        }
    _report(report, ".plain-lanes-graph.json")
    print(json.dumps(report, indent=1, default=str))
    assert got["plain"][0]["run"]["backend"]["lanes"] == 0
    assert got["plain"][1] and got["plain"][1] == got["lanes"][1] == got["cuda_graph"][1]
    for name, row in report["runs"].items():
        assert row["captures_after_warmup"] and all(n == 0 for n in row["captures_after_warmup"]), (name, row)
    assert report["runs"]["lanes"]["gpu_compute_ms"], report["runs"]["lanes"]
