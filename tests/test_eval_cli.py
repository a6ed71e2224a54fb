"""The ONNX evaluator as a user runs it: the demo, and bad input -> one line, exit 2, no output files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import DEMO_MODEL, MINI, run_script

from common.data.coco import STAT_NAMES

BASE = ["--data-root", str(MINI), "--providers", "CPUExecutionProvider", "--workers", "2"]


def assert_clean_failure(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: ")
    for needle in needles:
        assert needle in last, last


def test_demo_writes_metrics_under_tmp(tmp_path: Path) -> None:
    proc = run_script("demo.py", "--workers", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Average Precision" in proc.stdout
    (metrics_path,) = tmp_path.glob("tmp/demo/*/metrics.json")
    data = json.loads(metrics_path.read_text())
    m = data["metrics"]
    assert set(m) >= {
        "mAP_50_95",
        "mAP_50",
        "mAP_75",
        "mAP_small",
        "mAP_medium",
        "mAP_large",
        "num_images",
        "num_detections",
        "coco_stats",
    }
    assert list(m["coco_stats"]) == list(STAT_NAMES)
    assert m["num_images"] == 50 and m["mAP_50_95"] > 0.2
    assert set(data["latency"]) >= {"mean_ms", "median_ms", "p90_ms", "throughput_fps", "p99_ms"}
    assert set(data["timings"]) >= {"preprocess", "inference", "postprocess", "eval_seconds", "end_to_end_images_per_s"}
    run = data["run"]
    assert run["output_layout"] == "e2e" and len(run["model_sha256"]) == 64
    # the command line's record names the model and the providers the demo chose (no flag of its own)
    assert data["args"]["onnx_path"].endswith("yolov10n-synth.onnx")
    assert data["args"]["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert run["backend"]["providers_used"] == ["CPUExecutionProvider"]
    assert "onnxruntime" in run["packages"]
    dets = json.loads((metrics_path.parent / "detections.json").read_text())
    assert len(dets) == m["num_detections"]


def test_missing_onnx(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    proc = run_script("eval_yolov10m_onnx_coco.py", "--onnx-path", str(tmp_path / "x.onnx"), *BASE, "--out", str(out))
    assert_clean_failure(proc, "x.onnx", "--onnx-path")
    assert not out.exists()


def test_corrupt_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    out = tmp_path / "m.json"
    proc = run_script("eval_yolov10m_onnx_coco.py", "--onnx-path", str(bad), *BASE, "--out", str(out))
    assert_clean_failure(proc, "bad.onnx")
    assert not out.exists()


def test_missing_instances(tmp_path: Path) -> None:
    proc = run_script(
        "eval_yolov10m_onnx_coco.py",
        "--onnx-path",
        str(DEMO_MODEL),
        *BASE,
        "--instances",
        str(tmp_path / "none.json"),
        "--out",
        str(tmp_path / "m.json"),
    )
    assert_clean_failure(proc, "none.json")


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_bad_image_names_its_id(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "coco"
    shutil.copytree(MINI, root)
    victim = root / "val2017" / "000000000003.jpg"
    if damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes(b"not a jpeg")
    out = tmp_path / "m.json"
    proc = run_script(
        "eval_yolov10m_onnx_coco.py",
        "--onnx-path",
        str(DEMO_MODEL),
        "--data-root",
        str(root),
        "--providers",
        "CPUExecutionProvider",
        "--max-images",
        "5",
        "--out",
        str(out),
    )
    assert_clean_failure(proc, "image id 3", "000000000003.jpg")
    assert not out.exists()
    assert not list(tmp_path.glob("**/.m.json.*"))


def test_unknown_provider(tmp_path: Path) -> None:
    proc = run_script(
        "eval_yolov10m_onnx_coco.py",
        "--onnx-path",
        str(DEMO_MODEL),
        "--data-root",
        str(MINI),
        "--providers",
        "FooExecutionProvider",
        "--out",
        str(tmp_path / "m.json"),
    )
    assert_clean_failure(proc, "FooExecutionProvider")


def test_cpu_fallback_refused(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a CUDA EP")
    proc = run_script(
        "eval_yolov10m_onnx_coco.py",
        "--onnx-path",
        str(DEMO_MODEL),
        "--data-root",
        str(MINI),
        "--providers",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
        "--disable-cpu-fallback",
        "--out",
        str(tmp_path / "m.json"),
    )
    assert_clean_failure(proc, "CUDAExecutionProvider", "--disable-cpu-fallback")


def test_batch_on_static_model(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    proc = run_script(
        "eval_yolov10m_onnx_coco.py", "--onnx-path", str(DEMO_MODEL), *BASE, "--batch-size", "8", "--out", str(out)
    )
    assert_clean_failure(proc, "--batch-size 8", "static")
    assert not out.exists()


def test_unknown_image_id(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n424242\n")
    out = tmp_path / "m.json"
    proc = run_script(
        "eval_yolov10m_onnx_coco.py",
        "--onnx-path",
        str(DEMO_MODEL),
        *BASE,
        "--image-ids-list",
        str(ids),
        "--out",
        str(out),
    )
    assert_clean_failure(proc, "424242", "--image-ids-list")
    assert not out.exists()


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_script("eval_yolov10m_onnx_coco.py", "--onnx-path", str(tmp_path / "nope.onnx"), *BASE, "--verbose")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_has_an_example() -> None:
    proc = run_script("eval_yolov10m_onnx_coco.py", "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout and "--onnx-path" in proc.stdout
