"""The streamed COCO evaluation split by category over several workers.

pycocotools matches and accumulates each category on its own: a detection is only ever compared with the
ground truth of its category, and each category's precision and recall come from its own detections (ranked
by score, ties in image order). So each worker can be given a share of the categories
(``partition_categories``) and the ground truth of those alone (``subset_ground_truth``), by which it keeps
the detections of its categories and drops the rest; it returns its categories' slices of pycocotools'
precision and recall arrays, which ``scatter`` puts back into the full arrays. The same split, over the
detections already matched (``subset_scored``), lets one worker accumulate its share on several threads at
once (``accumulate_split``; NumPy releases the GIL in its array work), or on several forked processes
(``accumulate_forked``). Only categories with counted ground truth are shared out: every other category's
precision and recall are -1 whatever its detections.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection

import numpy as np

from common.data.coco_accumulate import IOU_THRS, MAX_DETS, REC_THRS, Scored, accumulate
from common.data.coco_stream import GroundTruth

__all__ = [
    "CPUS_PER_WORKER",
    "MAX_WORKERS",
    "accumulate_forked",
    "accumulate_split",
    "auto_workers",
    "available_cpus",
    "partition_categories",
    "scatter",
    "subset_ground_truth",
    "subset_scored",
]

MAX_WORKERS = 4  # worker processes at most on an automatic choice
# cores per worker process on an automatic choice: one worker matches faster than the loaders of 16 cores decode
# (docs/performance.md), and every further worker costs the run CPU time that the loaders need (an interpreter
# of its own, every batch read and split once more)
CPUS_PER_WORKER = 16


def available_cpus() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_workers(categories: int, cpus: int) -> int:
    """How many workers to share ``categories`` (those with counted ground truth) over on ``cpus`` cores:
    one per ``CPUS_PER_WORKER`` cores, at most ``MAX_WORKERS`` and never more than the categories; at least one."""
    return max(1, min(MAX_WORKERS, cpus // CPUS_PER_WORKER, categories))


def partition_categories(counted: np.ndarray, workers: int) -> list[np.ndarray]:
    """The category indices (sorted) of each worker, for ``counted`` [K, A] ground truth per category: the
    categories with any counted ground truth, the largest first, each to the worker with the least so far.
    At most ``workers`` non-empty groups; none when no category has counted ground truth."""
    total = counted[:, 0] if len(counted) else np.zeros(0, np.int64)
    present = np.flatnonzero(counted.any(axis=1)) if len(counted) else np.zeros(0, np.int64)
    groups: list[list[int]] = [[] for _ in range(max(1, min(workers, len(present))))]
    load = np.zeros(len(groups), np.int64)
    for k in present[np.argsort(-total[present], kind="stable")].tolist():
        w = int(np.argmin(load))
        groups[w].append(k)
        load[w] += int(total[k])
    return [np.array(sorted(g), np.int64) for g in groups if g]


def subset_ground_truth(gt: GroundTruth, cats: np.ndarray) -> GroundTruth:
    """``gt`` restricted to the category indices ``cats`` (sorted), renumbered 0..len(cats)-1 in that order."""
    n_cats = len(gt.cat_ids)
    local = np.full(n_cats, -1, np.int64)
    local[cats] = np.arange(len(cats))
    k = gt.key % max(1, n_cats)
    keep = local[k] >= 0
    key = (gt.key[keep] // max(1, n_cats)) * len(cats) + local[k[keep]]
    return GroundTruth(
        gt.image_ids,
        gt.cat_ids[cats],
        key,
        gt.boxes[keep],
        gt.crowd[keep],
        gt.ignore[keep],
        gt.real_id[keep],
        gt.counted[cats],
    )


def scatter(
    n_cats: int, n_areas: int, parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """The full precision [T, R, K, A, M] and recall [T, K, A, M] from each worker's (categories, precision,
    recall) slices; -1 (pycocotools' value for no counted ground truth) for the categories no worker has."""
    n_t, n_r, n_m = len(IOU_THRS), len(REC_THRS), len(MAX_DETS)
    precision = -np.ones((n_t, n_r, n_cats, n_areas, n_m))
    recall = -np.ones((n_t, n_cats, n_areas, n_m))
    for cats, p, r in parts:
        precision[:, :, cats] = p
        recall[:, cats] = r
    return precision, recall


def subset_scored(s: Scored, cats: np.ndarray, n_cats: int) -> Scored:
    """The matched detections ``s`` of the category indices ``cats`` (sorted, out of ``n_cats``), renumbered
    0..len(cats)-1 in that order, in their order in ``s``."""
    local = np.full(n_cats, -1, np.int64)
    local[cats] = np.arange(len(cats))
    keep = np.flatnonzero(local[s.cat] >= 0)
    plain = np.flatnonzero(local[s.plain_cat] >= 0)
    return Scored(
        s.score[keep],
        local[s.cat[keep]].astype(s.cat.dtype),
        s.order[keep],
        s.tp[keep],
        s.ignored[keep],
        s.plain_score[plain],
        local[s.plain_cat[plain]].astype(s.plain_cat.dtype),
        s.plain_order[plain],
        s.plain_code[plain],
    )


def _part(s: Scored, counted: np.ndarray, cats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Categories ``cats`` accumulated alone: ``(cats, precision, recall)``, a part for ``scatter``."""
    return (cats, *accumulate(subset_scored(s, cats, len(counted)), counted[cats]))


def _on_threads(s: Scored, counted: np.ndarray, groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``accumulate(s, counted)`` with each of ``groups`` on a thread of its own (one group: in this thread)."""
    if len(groups) <= 1:
        return accumulate(s, counted)
    with cf.ThreadPoolExecutor(len(groups), thread_name_prefix="coco-accumulate") as pool:
        parts = list(pool.map(lambda cats: _part(s, counted, cats), groups))
    return scatter(len(counted), counted.shape[1], parts)


def accumulate_split(s: Scored, counted: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """``accumulate(s, counted)``, the categories shared out over ``threads`` threads (``partition_categories``)
    and put back together (``scatter``): the same arrays, sooner where several cores are free."""
    if threads <= 1:
        return accumulate(s, counted)
    return _on_threads(s, counted, partition_categories(counted, threads))


# parts at least for ``accumulate_forked`` to fork: with fewer, forking costs about what the processes save (on a
# 16-core GPU host, two forked parts took as long as two threads; four took 199 ms against four threads' 248:
# docs/performance.md)
MIN_FORKED_PARTS = 4


def can_fork() -> bool:
    """Whether ``accumulate_forked`` forks here: a POSIX system, and no thread but this one in the process (a
    fork copies only the calling thread, and whatever lock another one holds stays held in the child)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _accumulate_child(s: Scored, counted: np.ndarray, cats: np.ndarray, conn: Connection) -> None:
    """A forked copy's work: its categories' slices, sent back. It dies quietly on any error (the parent then
    accumulates in threads, where an error is reported as such), and exits at once (``os._exit``: nothing of
    the parent's runs again in it)."""
    try:
        conn.send(_part(s, counted, cats))
        conn.close()
    except BaseException:
        os._exit(1)
    os._exit(0)


def accumulate_forked(s: Scored, counted: np.ndarray, processes: int) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """``accumulate(s, counted)``, the categories shared out over ``processes`` forked copies of this process,
    which hold ``s`` already (nothing is copied to them; each sends back only its slices), and how it ran:
    "processes", or "threads" (as ``accumulate_split``, over the same groups) for fewer than ``MIN_FORKED_PARTS``
    parts, where this process can't fork (``can_fork``), or where a child could not start or died. The same
    arrays either way. Forked processes have memory of their own, so their page faults and their interpreters
    never wait on one another as threads do."""
    groups = partition_categories(counted, processes)
    if len(groups) < MIN_FORKED_PARTS or not can_fork():
        return _on_threads(s, counted, groups), "threads"
    ctx = mp.get_context("fork")
    children: list[tuple[mp.process.BaseProcess, Connection]] = []
    parts = None
    try:
        for cats in groups:
            receive, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_accumulate_child, args=(s, counted, cats, send), daemon=True)
            children.append((child, receive))
            child.start()
            send.close()
        parts = [receive.recv() for _, receive in children]
    except (OSError, EOFError):
        parts = None  # a child could not start, or died before it replied: the threads do it all
    finally:
        for child, receive in children:
            receive.close()
            if child.pid is not None:
                if parts is None:
                    child.kill()
                child.join()
    if parts is None:
        return _on_threads(s, counted, groups), "threads"
    return scatter(len(counted), counted.shape[1], parts), "processes"
