"""bench_eval_throughput.py --smoke: the CI-sized run of the side-by-side benchmark (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MINI, fixture_path, run_script


def test_smoke_benchmark_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_script("bench_eval_throughput.py", "--smoke", "--no-ultralytics", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "(a) ceiling" in proc.stdout and "sequential" in proc.stdout
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert report["device"] == "cpu" and report["images"] == 8
    assert row["batch_size"] == 1 and row["ceiling"]["images_per_s"] > 0
    assert row["ours"]["ort-cpu"]["images_per_s"] > 0 and row["sequential"]["mode"] == "sequential"
    # the pipelined evaluator and the sequential path score identically
    assert row["stats_identical"] is True and row["ap_ours"] == row["ap_sequential"]
    assert row["ratio_to_ceiling"] == row["best_ours_images_per_s"] / row["ceiling"]["images_per_s"]


def test_repeat_rounds_up_to_whole_batches() -> None:
    from bench_eval_throughput import _repeat

    ids = [5, 6, 7]
    assert _repeat(ids, 7) == [5, 6, 7, 5, 6, 7, 5]
    got = _repeat(ids, 7, batch=4)
    assert len(got) == 8 and got[:3] == ids  # no partial last batch: no new input shape mid-run
    assert len(_repeat(ids, 1, batch=2)) == 4  # never fewer than the distinct images


@pytest.mark.fixtures
def test_batch_sweep_keeps_a_row_per_batch_size(tmp_path: Path) -> None:
    model = fixture_path("models", "yolov10n-synth-dynbatch.onnx")
    out = tmp_path / "sweep.json"
    proc = run_script(
        "bench_eval_throughput.py", "--onnx-path", str(model), "--data-root", str(MINI), "--max-images", "8",
        "--batch-sizes", "1", "4", "--min-seconds", "0.3", "--cpu", "--no-ultralytics", "--skip-sequential",
        "--workers", "2", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["complete"] is True and [r["batch_size"] for r in report["rows"]] == [1, 4]
    for row in report["rows"]:
        assert row["stats_identical"] is True  # batch size never changes the detections
        assert row["ours"]["ort-cpu"]["images"] % row["batch_size"] == 0
