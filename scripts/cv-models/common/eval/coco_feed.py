"""Where the streamed COCOeval matches each batch's rows as they come (``coco_feed``: inline, on a thread, or in
worker processes), what it reports (``coco_timings``), and the metrics after the last batch (``coco_stats``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from common.data.coco import CocoDataset, evaluate_bbox, stats_table
from common.data.coco_process import PROCESS_MIN_IMAGES, ProcessCocoEval
from common.data.coco_stream import BackgroundCocoEval, StreamingCocoEval

__all__ = ["CocoFeed", "coco_feed", "coco_stats", "coco_timings"]

CocoFeed = StreamingCocoEval | BackgroundCocoEval | ProcessCocoEval  # where the streamed matching runs


@contextlib.contextmanager
def coco_feed(dataset: CocoDataset, engine: str | None, sequential: bool) -> Iterator[CocoFeed | None]:
    """For the ``stream`` engine, the evaluator the batches' rows go to: inline on the sequential path; on the
    pipelined path in worker processes sharing the categories for ``PROCESS_MIN_IMAGES`` images or more
    (started by ``_warm_up`` once the loaders are ready), else on a thread of its own. The ground truth is
    indexed here, before any batch runs."""
    if engine != "stream":
        yield None
        return
    feed: CocoFeed
    if sequential:
        feed = StreamingCocoEval(dataset.coco, dataset.image_ids)
    elif len(dataset.image_ids) >= PROCESS_MIN_IMAGES:
        feed = ProcessCocoEval(dataset.coco, dataset.image_ids)
    else:
        feed = BackgroundCocoEval(StreamingCocoEval(dataset.coco, dataset.image_ids))
    try:
        yield feed
    except BaseException:
        feed.close()
        raise


def coco_timings(feed: CocoFeed | None) -> dict[str, Any]:
    """The streamed matching's record: where it ran (``process``, ``thread``, ``inline``; None: not streamed),
    its seconds (mostly during the run; the workers' together), and for worker processes how many ran, this
    process's seconds handing batches over, the workers' start to ready (during the warm-up) and the slowest
    worker's accumulation (after the last batch, the workers side by side, each in ``accumulate_parts`` forked
    processes, or threads where it can't fork: ``accumulated_in``)."""
    kinds = {ProcessCocoEval: "process", BackgroundCocoEval: "thread", StreamingCocoEval: "inline"}
    return {
        "coco_eval_match_s": feed.match_seconds if feed is not None else None,
        "coco_eval_runs_in": kinds.get(type(feed)) if feed is not None else None,
        "coco_eval_feed_s": getattr(feed, "feed_seconds", None),
        "coco_eval_worker_start_s": getattr(feed, "start_seconds", None),
        "coco_eval_workers": getattr(feed, "workers", None),
        "coco_eval_worker_accumulate_s": getattr(feed, "accumulate_seconds", None),
        "coco_eval_worker_cpu_s": getattr(feed, "worker_cpu_seconds", None),  # the worker processes' CPU, all of it
        "coco_eval_accumulate_parts": getattr(feed, "accumulate_parts", None),
        "coco_eval_accumulated_in": getattr(feed, "accumulated_in", None),
    }


def coco_stats(
    feed: CocoFeed | None,
    dataset: CocoDataset,
    rows: np.ndarray,
    engine: str | None,
) -> tuple[dict[str, float], str]:
    """After the last batch: the streamed evaluation's accumulate + summarize, or a whole COCOeval."""
    if engine is None:
        return {}, ""
    if feed is not None:
        return stats_table(feed.finish(), len(rows))
    return evaluate_bbox(dataset.coco, rows, dataset.image_ids, engine)
