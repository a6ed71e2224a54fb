"""compare_runs.py / common.report.compare: rows from metrics.json files, ΔAP, parity, warnings, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_script

from common.core.cli import run_main


def _payload(model: str, sha: str, backend: dict, ap: float, median: float, gpu: str | None, n: int = 4) -> dict:
    """A metrics.json of the evaluators' schema (version 1), with only the facts compare reads filled in."""
    return {
        "schema_version": 1,
        "model_path": model,
        "metrics": {"mAP_50_95": ap, "mAP_50": ap + 0.1, "num_images": n, "num_detections": 10},
        "image_ids": list(range(1, n + 1)),
        "latency": {
            "mean_ms": median,
            "median_ms": median,
            "p90_ms": median * 1.1,
            "p99_ms": median * 1.5,
            "throughput_fps": 1000.0 / median,
        },
        "run": {
            "model_sha256": sha,
            "output_layout": "e2e",
            "backend": backend,
            "host": {"hostname": "h"},
            "gpu": {"name": gpu} if gpu else None,
        },
    }


ORT_CPU = {"backend": "onnxruntime", "providers_used": ["CPUExecutionProvider"]}
ORT_CUDA = {"backend": "onnxruntime", "providers_used": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
TRT = {"backend": "tensorrt"}


def _dets(shift: float = 0.0, drop: int = 0) -> list[dict]:
    rows = [
        {"image_id": i, "category_id": 1, "bbox": [10.0 * k + shift, 5.0, 8.0, 8.0], "score": 0.9}
        for i in (1, 2)
        for k in range(0, 60, 10)
    ]
    return rows[drop:]


def _write(folder: Path, payload: dict, dets: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(payload))
    if dets is not None:
        (folder / "detections.json").write_text(json.dumps(dets))
    return folder / "metrics.json"


def _main(argv, capsys):
    import compare_runs

    code = run_main(compare_runs.main, [str(a) for a in argv])
    return code, capsys.readouterr()


def test_summary_from_metrics_files(tmp_path, capsys):
    a = _write(tmp_path / "a", _payload("m.onnx", "aa", ORT_CUDA, 0.50, 4.0, "NVIDIA H100"), _dets())
    b = _write(tmp_path / "b", _payload("m.onnx", "aa", TRT, 0.49, 2.0, "NVIDIA H100"), _dets(drop=1))
    c = _write(tmp_path / "c", _payload("m.onnx", "aa", ORT_CPU, 0.50, 40.0, "NVIDIA H100"), _dets())
    out = tmp_path / "out"
    code, _ = _main([a, b, c, "--out-dir", out, "--check"], capsys)
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["backend"]: r for r in summary["rows"]}
    assert set(rows) == {"ort-cuda", "trt", "ort-cpu"}
    assert summary["reference"]["backend"] == "ort-cuda"  # ORT CUDA is preferred as the reference
    assert rows["trt"]["delta_ap"] == pytest.approx(0.49 - 0.50)
    assert rows["ort-cuda"]["parity"]["status"] == "reference"
    # trt lost 1 of 12 detections: 11/12 matched < the fp32 minimum -> FAIL, and --check makes it exit 1
    assert rows["trt"]["parity"]["dropped"] == 1
    assert rows["trt"]["parity"]["matched_fraction"] == pytest.approx(11 / 12)
    assert rows["trt"]["parity"]["status"] == "FAIL" and code == 1
    assert rows["ort-cpu"]["parity"]["status"] == "pass"
    assert summary["warnings"] == []
    md = (out / "summary.md").read_text()
    header = "| backend | precision | mAP_50_95 | ΔAP vs reference | median ms | p99 ms | throughput img/s | parity |"
    assert header in md
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # looser limits pass
    code, _ = _main([a, b, c, "--out-dir", out, "--check", "--min-matched", "0.9"], capsys)
    assert code == 0


def test_warns_on_different_gpu_and_model_hash(tmp_path, capsys):
    a = _write(tmp_path / "h100", _payload("yolo.onnx", "a" * 64, ORT_CUDA, 0.5, 4.0, "NVIDIA H100 80GB HBM3"))
    b = _write(tmp_path / "5090", _payload("yolo.onnx", "b" * 64, ORT_CUDA, 0.5, 3.0, "NVIDIA GeForce RTX 5090"))
    code, cap = _main([a, b, "--out-dir", tmp_path / "o"], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    text = " ".join(summary["warnings"])
    assert "different GPUs" in text and "RTX 5090" in text and "H100" in text
    assert "different sha256" in text
    assert "warning:" in cap.err
    # different models: no parity across them
    assert all(r["parity"]["status"] in ("reference", "n/a") for r in summary["rows"])


@pytest.mark.parametrize(
    "case, expect",
    [
        ("version", "schema_version 7"),
        ("missing", "missing key 'latency.p99_ms'"),
        ("list", "not a metrics.json"),
        ("garbage", "not readable JSON"),
    ],
)
def test_wrong_schema_is_one_clear_line(tmp_path, capsys, case, expect):
    good = _payload("m.onnx", "aa", ORT_CPU, 0.5, 4.0, None)
    bad_path = tmp_path / "bad" / "metrics.json"
    bad_path.parent.mkdir()
    if case == "version":
        bad_path.write_text(json.dumps({**good, "schema_version": 7}))
    elif case == "missing":
        del good["latency"]["p99_ms"]
        bad_path.write_text(json.dumps(good))
    elif case == "list":
        bad_path.write_text("[1, 2]")
    else:
        bad_path.write_text("{not json")
    code, cap = _main([bad_path, "--out-dir", tmp_path / "o"], capsys)
    lines = cap.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), cap.err
    assert str(bad_path) in lines[0] and expect in lines[0]
    assert not (tmp_path / "o" / "summary.md").exists()


def test_missing_path_and_empty_folder(tmp_path, capsys):
    code, cap = _main([tmp_path / "nope.json"], capsys)
    assert code == 2 and "no such file or folder" in cap.err
    (tmp_path / "empty").mkdir()
    code, cap = _main([tmp_path / "empty"], capsys)
    assert code == 2 and "no metrics.json below" in cap.err


def test_help_has_examples():
    proc = run_script("compare_runs.py", "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout


def test_not_run_keeps_the_backend_key_in_summary_json():
    from common.report.compare import NotRun

    d = NotRun("ort-cuda", "yolov10m", "fp32", "skipped", "no GPU").to_dict()
    assert d == {
        "backend": "ort-cuda",
        "model": "yolov10m",
        "precision": "fp32",
        "status": "skipped",
        "reason": "no GPU",
    }


def test_rows_whose_latency_measures_different_things_get_a_warning(tmp_path, capsys):
    """Schema 1 latency was host time with queueing; schema 2 names its timing (latency_timing): mixing them warns."""
    from common.eval.timing import HOST_TIMING, LANE_TIMING

    old = _payload("m.onnx", "aa", ORT_CUDA, 0.50, 9.0, "NVIDIA H100")
    lane = {
        **_payload("m.onnx", "aa", TRT, 0.50, 3.0, "NVIDIA H100"),
        "schema_version": 2,
        "latency_timing": LANE_TIMING,
    }
    host = {
        **_payload("m.onnx", "aa", ORT_CPU, 0.50, 30.0, "NVIDIA H100"),
        "schema_version": 2,
        "latency_timing": HOST_TIMING,
    }
    a, b = _write(tmp_path / "a", old), _write(tmp_path / "b", lane)
    code, _ = _main([a, b, "--out-dir", tmp_path / "o1"], capsys)
    warnings = json.loads((tmp_path / "o1" / "summary.json").read_text())["warnings"]
    assert code == 0 and any("latency columns measure different things" in w and "schema 1" in w for w in warnings)
    c = _write(tmp_path / "c", host)
    d = _write(tmp_path / "d", {**host, "run": {**host["run"], "model_sha256": "bb"}})  # another model: compared
    code, _ = _main([c, d, "--out-dir", tmp_path / "o2"], capsys)
    warnings = json.loads((tmp_path / "o2" / "summary.json").read_text())["warnings"]
    assert code == 0 and not any("latency columns" in w for w in warnings)


# ----------------------------------------------------------------------------- only comparable runs


def test_rows_over_other_images_are_inconclusive_not_compared(tmp_path, capsys):
    a = _write(tmp_path / "a", _payload("m.onnx", "aa", ORT_CPU, 0.50, 4.0, None), _dets())
    other = {**_payload("m.int8.onnx", "bb", ORT_CPU, 0.30, 4.0, None), "image_ids": [7, 8, 9, 10]}  # same count
    b = _write(tmp_path / "b", other, _dets())
    code, cap = _main([a, b, "--out-dir", tmp_path / "o", "--check"], capsys)
    assert code == 3 and "INCONCLUSIVE" in cap.err and "evaluated other images" in cap.err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["m.int8"]["delta_ap"] is None  # never a ΔAP between different image sets
    assert summary["verdict"]["conclusive"] is False
    assert "INCONCLUSIVE" in (tmp_path / "o" / "summary.md").read_text()


@pytest.mark.parametrize(
    "rows, why",
    [
        ([("m.onnx", "aa", ORT_CPU)], "only one run"),
        ([("m.onnx", "aa", ORT_CPU), ("copy/m.onnx", "aa", ORT_CPU)], "nothing was compared"),
    ],
    ids=["one-run", "the-candidate-is-the-baseline"],
)
def test_nothing_compared_is_inconclusive(tmp_path, capsys, rows, why):
    paths = [_write(tmp_path / str(i), _payload(m, sha, be, 0.5, 4.0, None)) for i, (m, sha, be) in enumerate(rows)]
    code, cap = _main([*paths, "--out-dir", tmp_path / "o"], capsys)
    assert code == 3 and why in cap.err, cap.err


def test_rows_without_image_ids_are_inconclusive(tmp_path, capsys):
    old = {k: v for k, v in _payload("m.onnx", "aa", ORT_CPU, 0.5, 4.0, None).items() if k != "image_ids"}
    a = _write(tmp_path / "a", old)
    b = _write(tmp_path / "b", _payload("m.onnx", "aa", TRT, 0.5, 4.0, None))
    code, cap = _main([a, b, "--out-dir", tmp_path / "o"], capsys)
    assert code == 3 and "does not record which images" in cap.err


def test_the_same_images_in_another_order_are_comparable(tmp_path, capsys):
    a = _write(tmp_path / "a", _payload("m.onnx", "aa", ORT_CPU, 0.5, 4.0, None))
    b = _write(tmp_path / "b", {**_payload("m.onnx", "aa", TRT, 0.5, 4.0, None), "image_ids": [4, 3, 2, 1]})
    code, cap = _main([a, b, "--out-dir", tmp_path / "o"], capsys)
    assert code == 0, cap.err
