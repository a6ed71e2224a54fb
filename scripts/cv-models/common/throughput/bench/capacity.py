"""Pipeline capacity (``--replay``): the real evaluator fed by a backend that replays the outputs recorded in
one real pass, at no cost: the most any backend can get through the pipeline, per batch size and mode."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any

from common.data.coco import CocoDataset
from common.ort.session import OrtBackend
from common.throughput.bench.modes import HAS_GPU_POST
from common.throughput.bench.options import BenchOptions
from common.throughput.bench.runs import STAGES, at_least, run_ours, scored

__all__ = ["format_replay", "replay_rows"]


def replay_rows(opts: BenchOptions, ds: CocoDataset, gpu: bool, batch_sizes: list[int]) -> list[dict[str, Any]]:
    """Pipeline capacity per batch size and mode (``opts.replay_modes``, else by device): the real evaluator over
    a zero-cost backend replaying outputs recorded in one real pass (CPU letterbox, batch 1) of the model."""
    from common.throughput.replay import ReplayBackend, record_outputs, replay_ids

    providers = ["CUDAExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    real = OrtBackend(str(opts.onnx_path), providers, require_accelerator=gpu)
    size = int(real.input.shape[2] or 640)
    t0 = time.perf_counter()
    recorded = record_outputs(real, ds, ds.image_ids, size)
    record_s = time.perf_counter() - t0
    modes = list(opts.replay_modes) or (
        ["cpu", "gpu-letterbox", *(["gpu-letterbox+gpu-post"] if HAS_GPU_POST else [])] if gpu else ["cpu"]
    )
    rows = []
    for batch in batch_sizes:
        order = replay_ids(ds.image_ids, batch)
        rds = dataclasses.replace(ds, image_ids=order)
        replay = ReplayBackend(recorded, order, batch, real)
        ap_real = scored(real, dataclasses.replace(ds, image_ids=list(dict.fromkeys(order))), 1, 0).get("AP")
        row: dict[str, Any] = {
            "batch_size": batch,
            "images_distinct": len(set(order)),
            "record_seconds": record_s,
            "ap_real": ap_real,
            "modes": {},
            "failed": {},
        }
        for mode in modes:
            try:
                first = max(len(order), 1000 if gpu else 0)
                res = at_least(functools.partial(_replay_pass, replay, rds, opts, mode), first, opts.min_seconds)
                replay.rewind()
                res["ap"] = scored(replay, rds, batch, opts.workers, mode).get("AP")
                row["modes"][mode] = res
            except Exception as exc:
                row["failed"][mode] = f"{type(exc).__name__}: {exc}"
        replay.close()
        rows.append(row)
        print(format_replay([row]), file=sys.stderr, flush=True)
    real.close()
    return rows


def _replay_pass(replay: Any, rds: CocoDataset, opts: BenchOptions, mode: str, n: int) -> dict[str, Any]:
    replay.rewind()
    return run_ours(replay, rds, replay.batch, opts.workers, n, mode, opts.switch_interval_ms)


def format_replay(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'batch':>5}  {'replay, preprocess':<24}{'img/s':>9}  {'GPU %':>6}  "
        f"{'stage ms pre/inf/post':<24}  AP replay / real"
    ]
    for r in rows:
        b = r["batch_size"]
        for mode, d in r["modes"].items():
            st = d["stage_ms"]
            stages = "/".join(f"{st[k]['median']:.2f}" for k in STAGES)
            gpu = (d.get("gpu") or {}).get("gpu_util_mean")
            gpu_s = f"{gpu:.0f}" if gpu is not None else "-"
            ap, real = d.get("ap"), r.get("ap_real")
            ap_s = f"{ap:.4f} / {real:.4f}" if ap is not None and real is not None else "-"
            lines.append(f"{b:>5}  {mode:<24}{d['images_per_s']:>9.1f}  {gpu_s:>6}  {stages:<24}  {ap_s}")
        for mode, err in r.get("failed", {}).items():
            lines.append(f"{b:>5}  {mode:<24}FAILED {err}")
    return "\n".join(lines)
