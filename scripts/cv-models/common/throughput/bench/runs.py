"""One variant's runs: the evaluator timed end to end over a repeated image list (``run_ours``), for at least
so long (``at_least``), round by round beside the other variants (``time_in_rounds``); its AP and detections
against the sequential reference path (``compare_to_sequential``); and Ultralytics' predict on the same images."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.data.coco import CocoDataset
from common.eval.cli import loader_factory
from common.eval.pipeline import EvalResult, evaluate
from common.eval.protocols import Backend
from common.throughput.bench.modes import eval_options
from common.throughput.monitor import GpuMonitor

__all__ = [
    "RUN_FACTS",
    "STAGES",
    "at_least",
    "compare_to_sequential",
    "repeat_ids",
    "run_ours",
    "run_ultralytics",
    "scored",
    "scored_run",
    "time_in_rounds",
]

STAGES = ("preprocess", "inference", "postprocess")
# what ran, from the evaluator's timings (the modes ``auto`` resolved to, why it fell back, the pipeline's shape)
RUN_FACTS = (
    "preprocess_mode",
    "preprocess_fallback",
    "postprocess_mode",
    "postprocess_fallback",
    "decode",
    "loaders",
    "workers",
    "load_chunk",
    "in_flight",
    "warmup_runs",
)


def repeat_ids(ids: list[int], n: int, batch: int = 1) -> list[int]:
    """``ids`` repeated to at least ``n`` images, rounded up to whole batches: a partial last batch
    is a new input shape, and each session's first run at a shape pays cuDNN's algorithm search."""
    n = math.ceil(max(n, len(ids)) / batch) * batch
    return (ids * math.ceil(n / len(ids)))[:n]


def at_least(run: Callable[[int], dict[str, Any]], n_images: int, min_seconds: float) -> dict[str, Any]:
    """``run(n)`` with n images; once more with proportionally more when it took under ``min_seconds``."""
    res = run(n_images)
    if "seconds" in res and res["seconds"] < min_seconds:
        res = run(math.ceil(n_images * min_seconds / max(res["seconds"], 1e-3) * 1.15))
    return res


def run_ours(
    backend: Backend,
    ds: CocoDataset,
    batch: int,
    workers: int,
    n_images: int,
    prep: str = "cpu",
    switch_ms: float | None = None,
) -> dict[str, Any]:
    """The evaluator with variant mode ``prep`` over ``n_images`` (the selected images repeated), no COCOeval:
    images/s, each stage's median and p90, the process's CPU per image, what ran and the GPU's load."""
    rep = dataclasses.replace(ds, image_ids=repeat_ids(ds.image_ids, n_images, batch))
    opts = eval_options(
        prep,
        batch_size=batch,
        workers=workers,
        warmup_runs=3,
        progress=False,
        coco_eval=False,
        switch_interval_ms=switch_ms,
    )
    with GpuMonitor() as mon:
        cpu0 = time.process_time()
        res = evaluate(backend, rep, opts, loader_factory(opts))
        cpu_s = time.process_time() - cpu0
    t = res.timings
    return {
        "images_per_s": t["end_to_end_images_per_s"],
        "images": res.num_images,
        "seconds": t["wall_seconds"],
        "mode": t["mode"],
        "stage_ms": {k: {"median": t[k]["median_ms"], "p90": t[k]["p90_ms"]} for k in STAGES},
        # the process's CPU time (every thread, warm-up included) per image: host cost apart from waiting
        "cpu_ms_per_image": 1000.0 * cpu_s / max(1, res.num_images),
        **{k: t.get(k) for k in RUN_FACTS},
        "gpu": mon.summary(),
    }


def scored(backend: Backend, ds: CocoDataset, batch: int, workers: int, prep: str = "cpu") -> dict[str, float]:
    return scored_run(backend, ds, batch, workers, prep).stats


def scored_run(backend: Backend, ds: CocoDataset, batch: int, workers: int, prep: str = "cpu") -> EvalResult:
    """One scored pass (COCOeval) of a variant: its ``EvalResult`` (stats and detection rows)."""
    opts = eval_options(prep, batch_size=batch, workers=workers, progress=False)
    return evaluate(backend, ds, opts, loader_factory(opts))


def time_in_rounds(
    names: Sequence[str],
    run: Callable[[str, int], dict[str, Any]],
    rounds: int,
    n_images: int,
    min_seconds: float,
    failed: dict[str, str],
) -> tuple[dict[str, dict[str, Any]], list[list[str]]]:
    """Each variant timed ``rounds`` times (``run(name, n)``, at least ``min_seconds`` each), round by round,
    the order reversed every other round so that no variant always runs first; each variant's figure is its
    round of median images/s, with every round's images/s beside it (``rounds_images_per_s``). A variant that
    fails goes to ``failed`` and is not run again. Returns (name -> figure, the order of each round)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    order = []
    for r in range(rounds):
        this = [name for name in (names if r % 2 == 0 else names[::-1]) if name not in failed]
        order.append(this)
        for name in this:
            try:
                runs[name].append(at_least(lambda n, v=name: run(v, n), n_images, min_seconds))
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
    out = {}
    for name, got in runs.items():
        if got and name not in failed:
            ranked = sorted(got, key=lambda res: res["images_per_s"])
            out[name] = {**ranked[(len(ranked) - 1) // 2], "rounds_images_per_s": [res["images_per_s"] for res in got]}
    return out, order


def compare_to_sequential(
    row: dict[str, Any],
    backends: dict[str, tuple[Backend, str]],
    seq_backend: Backend,
    ds: CocoDataset,
    batch: int,
    workers: int,
) -> None:
    """AP and detections of every timed variant against the sequential reference path (CPU letterbox, NumPy
    post-processing, no threads), one scored pass each: ``ap``, ``identical`` (the 12 stats ``==``),
    ``detections_identical`` (every row ``==``)."""
    ref = scored_run(seq_backend, ds, batch, 0)
    row["ap_sequential"] = ref.stats.get("AP")
    row["ap"], row["identical"], row["detections_identical"] = {}, {}, {}
    for name in row["ours"]:
        backend, prep = backends[name]
        got = scored_run(backend, ds, batch, workers, prep)
        row["ap"][name], row["identical"][name] = got.stats.get("AP"), got.stats == ref.stats
        row["detections_identical"][name] = got.rows.shape == ref.rows.shape and bool(np.all(got.rows == ref.rows))


def run_ultralytics(onnx: Path, ds: CocoDataset, batch: int, gpu: bool, n_images: int) -> dict[str, Any]:
    """Ultralytics' ``YOLO(onnx).predict`` over ``n_images`` (the selected images repeated), end to end, at the
    evaluator's thresholds; ``skipped`` where ultralytics is not importable."""
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        return {"skipped": f"ultralytics not importable: {exc}"}
    model = YOLO(str(onnx), task="detect")
    paths = [str(ds.image_path(i)) for i in repeat_ids(ds.image_ids, n_images)]
    kw = {
        "imgsz": 640,
        "conf": 0.001,
        "iou": 0.7,
        "max_det": 300,
        "verbose": False,
        "batch": batch,
        "device": 0 if gpu else "cpu",
    }
    for _ in model.predict(source=paths[: 2 * batch], stream=True, **kw):
        pass  # warm-up
    speeds: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    with GpuMonitor() as mon:
        t0 = time.perf_counter()
        for r in model.predict(source=paths, stream=True, **kw):
            for k in speeds:
                speeds[k].append(float(r.speed.get(k) or 0.0))
        wall = time.perf_counter() - t0
    import ultralytics

    return {
        "images_per_s": len(paths) / wall,
        "images": len(paths),
        "seconds": wall,
        "version": ultralytics.__version__,
        "stage_ms": {k: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90))} for k, v in speeds.items()},
        "gpu": mon.summary(),
    }
