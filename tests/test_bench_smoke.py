"""bench_eval_throughput.py --smoke: the CI-sized run of the side-by-side benchmark (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_script


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
