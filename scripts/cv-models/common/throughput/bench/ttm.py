"""The time to metrics: the recommended variant over N images with COCOeval against without it, in pairs,
and where each call's seconds and CPU went."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from common.core.sysinfo import cpu_seconds
from common.data.coco import CocoDataset
from common.eval.cli import loader_factory
from common.eval.pipeline import EvalResult, evaluate
from common.eval.timing import warmup_for_run
from common.throughput.bench.modes import eval_options
from common.throughput.bench.options import BenchOptions
from common.throughput.bench.variants import make_backends

__all__ = ["format_ttm", "time_to_metrics"]


def time_to_metrics(opts: BenchOptions, ds: CocoDataset, gpu: bool, n: int, batch: int) -> dict[str, Any]:
    """The recommended variant (the evaluator's defaults, default ``--coco-eval``) at batch size ``batch`` over
    ``n`` images (the selected ones repeated under fresh ids, their instances file in a temporary folder): without
    COCOeval (pipeline only: the time to the last detection) and with it (the time to metrics), ``opts.ttm_repeats``
    pairs, the order within a pair alternating. Each is one whole ``evaluate`` call, warm-up included, on the
    same warm backend, warmed first at both of the run's shapes (``prewarm_seconds``: a partial last batch's
    first run searches cuDNN's algorithms, which would land in the first pair alone); ``ratio`` = with /
    without. The pair of median ratio is reported (``_ttm_median``)."""
    from common.throughput.repeat import repeated_dataset

    with tempfile.TemporaryDirectory(prefix="bench-ttm-") as folder:
        return _pairs(opts, repeated_dataset(ds, n, folder), len(ds.image_ids), gpu, n, batch)


def _pairs(opts: BenchOptions, big: CocoDataset, distinct: int, gpu: bool, n: int, batch: int) -> dict[str, Any]:
    """``time_to_metrics`` on the repeated set ``big`` (``distinct`` images repeated)."""
    backends, failed = make_backends(opts.onnx_path, batch, gpu, opts.lanes, opts.variants, cuda_opts=opts.cuda_options)
    name = next(iter(backends))
    backend, prep = backends[name]
    kw = dict(batch_size=batch, workers=opts.workers, warmup_runs=3, progress=False)
    pairs = []
    try:
        t0 = time.perf_counter()
        warmup_for_run(backend, n, batch, eval_options(prep, **kw).imgsz, 3)
        prewarm = time.perf_counter() - t0
        for r in range(opts.ttm_repeats):
            runs = {}
            for key, coco in (("pipeline", False), ("metrics", True))[:: 1 if r % 2 == 0 else -1]:
                run_opts = eval_options(prep, coco_eval=coco, switch_interval_ms=opts.switch_interval_ms, **kw)
                c0, t0 = cpu_seconds(), time.perf_counter()
                res = evaluate(backend, big, run_opts, loader_factory(run_opts))
                secs, c1 = time.perf_counter() - t0, cpu_seconds()
                runs[key] = (res, secs, (c1[0] - c0[0], c1[1] - c0[1]))
            pairs.append(_ttm_report(runs, n, distinct, batch, name, failed))
    finally:
        for b, _ in backends.values():
            b.close()
    return {**_ttm_median(pairs), "prewarm_seconds": prewarm}


def _ttm_median(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pair of median ratio (the lower of the two middle ones for an even count), with every pair's
    seconds and ratio in the order they ran."""
    mid = sorted(pairs, key=lambda p: p["ratio"])[(len(pairs) - 1) // 2]
    keys = ("seconds", "pipeline_only_seconds", "ratio", "coco_eval_seconds")
    return {**mid, "repeats": len(pairs), "pairs": [{k: p[k] for k in keys} for p in pairs]}


def _ttm_report(
    runs: dict[str, tuple[EvalResult, float, tuple[float, float]]],
    n: int,
    distinct: int,
    batch: int,
    name: str,
    failed: dict[str, str],
) -> dict[str, Any]:
    (pipe, pipe_s, pipe_cpu), (res, total, cpu) = runs["pipeline"], runs["metrics"]
    t = res.timings
    after = t.get("coco_eval_after_last_batch_s", t["eval_seconds"])
    return {
        "images": n,
        "distinct_images": distinct,
        "batch_size": batch,
        "variant": name,
        "seconds": total,  # evaluate() with COCOeval: warm-up, the run, COCOeval after the last batch
        "pipeline_only_seconds": pipe_s,  # evaluate() without COCOeval, the same way
        "ratio": total / pipe_s if pipe_s > 0 else 0.0,
        "pipeline_seconds": t["wall_seconds"],  # the run with COCOeval: first image to last detection
        "pipeline_only_wall_seconds": pipe.timings["wall_seconds"],
        "coco_eval_seconds": after,  # after the last batch
        "coco_eval_match_seconds": t.get("coco_eval_match_s"),  # a streamed engine's matching beside the batches
        "coco_eval_share": after / total if total > 0 else 0.0,
        "coco_engine": t["coco_engine"],
        "coco_eval_runs_in": t.get("coco_eval_runs_in"),  # process, thread, inline (None: not streamed)
        "coco_eval_workers": t.get("coco_eval_workers"),  # worker processes sharing the categories
        "coco_eval_worker_accumulate_seconds": t.get("coco_eval_worker_accumulate_s"),
        "preprocess_mode": t["preprocess_mode"],
        "postprocess_mode": t["postprocess_mode"],
        "phases": {"pipeline_only": _phases(pipe.timings, pipe_s, pipe_cpu), "with_coco": _phases(t, total, cpu)},
        "images_per_s": n / total if total > 0 else 0.0,
        "AP": res.stats.get("AP"),
        "failed": failed,
    }


def _phases(t: dict[str, Any], seconds: float, cpu: tuple[float, float]) -> dict[str, Any]:
    """Where one ``evaluate`` call's seconds went: before the first image (``start_seconds``), the run, COCOeval
    after the last batch, and the rest (gathering the rows, statistics); with the loaders' own start to ready
    (they boot during the warm-up), the COCO workers' (they start after it) and the loaders that ran; and the
    call's CPU seconds (``cpu``: this process's, its child processes'), of which the COCO workers' own."""
    start = t.get("start_seconds") or {}
    after = t.get("coco_eval_after_last_batch_s") or 0.0
    return {
        "start": start,
        "run": t["wall_seconds"],
        "coco_after_last_batch": after,
        "rest": seconds - start.get("total", 0.0) - t["wall_seconds"] - after,
        "loaders": t.get("loaders"),
        "loader_workers": t.get("workers"),
        "loaders_start_seconds": t.get("loaders_start_seconds"),
        "coco_eval_worker_start_s": t.get("coco_eval_worker_start_s"),
        "coco_eval_feed_s": t.get("coco_eval_feed_s"),
        "cpu_seconds": {
            "this_process": cpu[0],  # the run's threads: staging, launches, post-processing, the COCO hand-over
            "child_processes": cpu[1],  # the loader processes and the COCO workers
            "coco_workers": t.get("coco_eval_worker_cpu_s"),
        },
    }


def _engine_label(d: dict[str, Any]) -> str:
    """The engine, and for the streamed one where it ran: ``stream, 4 processes``."""
    where, workers = d.get("coco_eval_runs_in"), d.get("coco_eval_workers")
    if where == "process":
        return f"{d['coco_engine']}, {workers} process{'es' if workers != 1 else ''}"
    return f"{d['coco_engine']}, {where}" if where else str(d["coco_engine"])


def format_ttm(d: dict[str, Any]) -> str:
    ratios = ", ".join(f"{p['ratio']:.2f}x" for p in d.get("pairs", []))
    return (
        f"time to metrics (the pair of median ratio of {d.get('repeats', 1)}: {ratios}): {d['images']} images "
        f"({d['distinct_images']} distinct, repeated under fresh ids), "
        f"{d['variant']} batch {d['batch_size']}: {d['seconds']:.2f} s ({d['images_per_s']:.1f} img/s) vs "
        f"{d['pipeline_only_seconds']:.2f} s without COCOeval = {d['ratio']:.2f}x; "
        f"pipeline {d['pipeline_seconds']:.2f} s + COCOeval ({_engine_label(d)}) {d['coco_eval_seconds']:.2f} s "
        f"after the last batch ({100 * d['coco_eval_share']:.1f}% of the total), AP {d['AP']:.4f}; the backend "
        f"warmed at the run's shapes first in {d.get('prewarm_seconds', 0.0):.2f} s"
    ) + "".join(f"\n  {k}: {_phase_line(v)}" for k, v in d.get("phases", {}).items())


def _phase_line(p: dict[str, Any]) -> str:
    st = p["start"]
    return (
        f"start {st.get('total', 0.0):.2f} s (open {st.get('open', 0.0):.2f}, warm-up {st.get('warmup', 0.0):.2f}, "
        f"loaders wait {st.get('loaders_wait', 0.0):.2f}), run {p['run']:.2f}, COCOeval after "
        f"{p['coco_after_last_batch']:.2f}, rest {p['rest']:.2f}; {p['loader_workers']} {p['loaders']} loaders"
    ) + _cpu_line(p.get("cpu_seconds"))


def _cpu_line(c: dict[str, Any] | None) -> str:
    """``; CPU s: this process 4.10, child processes 21.30 (COCO workers 2.10)``, or nothing (no record)."""
    if not c:
        return ""
    coco = c.get("coco_workers")
    return f"; CPU s: this process {c['this_process']:.2f}, child processes {c['child_processes']:.2f}" + (
        f" (COCO workers {coco:.2f})" if coco is not None else ""
    )
