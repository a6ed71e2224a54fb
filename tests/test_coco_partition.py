"""The streamed COCO evaluation shared out by category over several workers gives pycocotools' arrays and 12
stats exactly (``==``). Expected values come from pycocotools, run here on the same detections."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pytest
from test_coco_stream import by_image, pycocotools_eval, random_case

from common.data import coco_partition
from common.data.coco_accumulate import accumulate, summarize
from common.data.coco_partition import (
    accumulate_forked,
    accumulate_split,
    auto_workers,
    partition_categories,
    scatter,
    subset_ground_truth,
)
from common.data.coco_process import ProcessCocoEval
from common.data.coco_stream import StreamingCocoEval, category_index, prepare_ground_truth


def _batches(per_image: dict[int, np.ndarray], order: list[int], group: int):
    for n in range(0, len(order), group):
        part = order[n : n + group]
        yield part, [per_image.get(i, np.zeros((0, 7))) for i in part]


def _shared_out(coco: Any, rows: np.ndarray, ids: list[int], order: list[int], workers: int) -> tuple[np.ndarray, ...]:
    """The category-split evaluation in this process: one StreamingCocoEval per share, each fed every row."""
    gt = prepare_ground_truth(coco, ids)
    groups = partition_categories(gt.counted, workers) or [np.arange(len(gt.cat_ids))]
    evs = [StreamingCocoEval.from_ground_truth(subset_ground_truth(gt, g), chunk_rows=40) for g in groups]
    for part, rows_list in _batches(by_image(rows), order, 2):
        for ev in evs:
            ev.add(part, rows_list)
    parts = [(g, *ev.precision_recall()) for g, ev in zip(groups, evs, strict=True)]
    return scatter(len(gt.cat_ids), gt.counted.shape[1], parts)


def _scored(coco: Any, rows: np.ndarray, ids: list[int], order: list[int]) -> tuple[Any, np.ndarray]:
    """One StreamingCocoEval over ``ids`` fed every row, two images at a time in ``order``: what it matched, and
    its counted ground truth."""
    ev = StreamingCocoEval(coco, ids, chunk_rows=40)
    for part, rows_list in _batches(by_image(rows), order, 2):
        ev.add(part, rows_list)
    return ev.scored(), ev.gt.counted


def _threaded(coco: Any, rows: np.ndarray, ids: list[int], order: list[int], threads: int) -> tuple[np.ndarray, ...]:
    """One StreamingCocoEval fed every row, accumulated with its categories shared out over ``threads`` threads."""
    return accumulate_split(*_scored(coco, rows, ids, order), threads)


@pytest.mark.parametrize(("split", "parts"), [(_shared_out, 2), (_shared_out, 3), (_threaded, 2), (_threaded, 3)])
def test_categories_shared_out_give_pycocotools_arrays_on_random_data(split, parts: int) -> None:
    rng = np.random.default_rng(31 + parts)
    checked = 0
    for _ in range(60):
        coco, rows = random_case(rng, n_cats=(3, 7))
        all_ids = sorted(coco.getImgIds())
        ids = [i for i in all_ids if rng.random() < 0.8] or all_ids
        if not len(rows):
            continue
        ref = pycocotools_eval(coco, rows, ids)
        precision, recall = split(coco, rows, ids, list(rng.permutation([*all_ids, 5000])), parts)
        assert np.array_equal(precision, ref.eval["precision"]) and np.array_equal(recall, ref.eval["recall"])
        assert summarize(precision, recall).tolist() == ref.stats.tolist()
        checked += 1
    assert checked > 40


@pytest.mark.parametrize("workers", [2, 3])
def test_worker_processes_sharing_categories_give_pycocotools_stats(workers: int) -> None:
    rng = np.random.default_rng(7 + workers)
    done = 0
    while done < 3:
        coco, rows = random_case(rng, n_cats=(4, 8))
        ids = sorted(coco.getImgIds())
        if not len(rows):
            continue
        ev = ProcessCocoEval(coco, ids, chunk_rows=50, workers=workers)
        for part, rows_list in _batches(by_image(rows), ids, 2):
            ev.add(part, rows_list)
        present = int(ev.gt.counted.any(axis=1).sum())
        assert ev.workers == min(workers, present) or (present == 0 and ev.workers == 1)
        assert ev.finish().tolist() == pycocotools_eval(coco, rows, ids).stats.tolist()
        assert ev.accumulate_seconds > 0 and ev.match_seconds > 0
        done += 1


def _case_with_rows(seed: int) -> tuple[Any, np.ndarray]:
    rng = np.random.default_rng(seed)
    coco, rows = random_case(rng, n_cats=(5, 8))
    while not len(rows) or int((prepare_ground_truth(coco, sorted(coco.getImgIds())).counted > 0).any(1).sum()) < 4:
        coco, rows = random_case(rng, n_cats=(5, 8))
    return coco, rows


def _matched_case(seed: int) -> tuple[Any, np.ndarray]:
    """``_case_with_rows``' case matched over all its images: ``_scored``'s pair."""
    coco, rows = _case_with_rows(seed)
    ids = sorted(coco.getImgIds())
    return _scored(coco, rows, ids, ids)


def test_a_worker_accumulating_in_forked_processes_gives_pycocotools_stats() -> None:
    coco, rows = _case_with_rows(71)
    ids = sorted(coco.getImgIds())
    ev = ProcessCocoEval(coco, ids, chunk_rows=50, workers=1)
    ev.accumulate_parts = 4  # as on a machine with cores to spare
    for part, rows_list in _batches(by_image(rows), ids, 2):
        ev.add(part, rows_list)
    assert ev.finish().tolist() == pycocotools_eval(coco, rows, ids).stats.tolist()
    # the worker's reader thread is done before it accumulates, so it forks where the system can
    assert ev.accumulated_in == ("processes" if hasattr(os, "fork") else "threads")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_forked_accumulation_gives_the_same_arrays(monkeypatch) -> None:
    monkeypatch.setattr(coco_partition, "can_fork", lambda: True)  # pytest may have threads of its own running
    for seed in (3, 5, 8):
        s, counted = _matched_case(seed)
        ref = accumulate(s, counted)
        got, how = accumulate_forked(s, counted, 4)
        assert how == "processes"
        assert all(np.array_equal(g, r) for g, r in zip(got, ref, strict=True))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_forked_accumulation_falls_back_to_threads(monkeypatch) -> None:
    s, counted = _matched_case(4)
    ref = accumulate(s, counted)
    monkeypatch.setattr(coco_partition, "can_fork", lambda: False)  # another thread is running
    got, how = accumulate_forked(s, counted, 4)
    assert how == "threads" and all(np.array_equal(g, r) for g, r in zip(got, ref, strict=True))
    monkeypatch.setattr(coco_partition, "can_fork", lambda: True)
    assert accumulate_forked(s, counted, 3)[1] == "threads"  # too few parts to pay for the forks
    monkeypatch.setattr(coco_partition, "_accumulate_child", lambda *a: os._exit(3))  # a child dies
    got, how = accumulate_forked(s, counted, 4)
    assert how == "threads" and all(np.array_equal(g, r) for g, r in zip(got, ref, strict=True))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_a_forked_copy_that_fails_is_quiet(monkeypatch, capfd) -> None:
    s, counted = _matched_case(6)
    ref = accumulate(s, counted)
    parent, real = os.getpid(), coco_partition.accumulate

    def fails_in_a_child(*args):
        if os.getpid() != parent:
            raise ValueError("only in the forked copy")
        return real(*args)

    monkeypatch.setattr(coco_partition, "can_fork", lambda: True)
    monkeypatch.setattr(coco_partition, "accumulate", fails_in_a_child)
    got, how = accumulate_forked(s, counted, 4)
    assert how == "threads" and all(np.array_equal(g, r) for g, r in zip(got, ref, strict=True))
    assert "Traceback" not in capfd.readouterr().err


def test_can_fork_only_with_one_thread() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not coco_partition.can_fork()
    finally:
        stop.set()
        t.join()


def test_one_thread_sends_to_every_worker(mini_coco) -> None:
    ids = mini_coco.image_ids
    ev = ProcessCocoEval(mini_coco.coco, ids, workers=2)
    assert ev.workers == 2
    ev.add(ids[:1], [np.zeros((0, 7))])
    try:
        senders = [t for t in threading.enumerate() if t.name == "coco-eval-send"]
        assert len(senders) == 1
        ev.finish()
    finally:
        ev.close()
    assert not any(t.name == "coco-eval-send" for t in threading.enumerate())


def test_worker_error_is_one_line_with_several_workers(mini_coco) -> None:
    ids = mini_coco.image_ids
    one = np.zeros((1, 7))
    one[0, 0] = ids[0]
    twice = ProcessCocoEval(mini_coco.coco, ids, workers=2)
    assert twice.workers == 2
    twice.add(ids[:1], [one])
    twice.add(ids[:1], [one])
    with pytest.raises(RuntimeError, match=r"COCO evaluation worker: ValueError: .*twice"):
        twice.finish()
    assert all(w.proc.returncode is not None for w in twice._workers)


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads a process's environment from /proc")
def test_workers_run_one_blas_thread_whatever_the_environment_says(mini_coco, monkeypatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    ev = ProcessCocoEval(mini_coco.coco, mini_coco.image_ids, workers=1)
    ev.start()
    try:
        assert ev._sender is not None and ev._sender.spawned.wait(30)
        # its "ready" (sent once it runs, after the exec): /proc shows the worker's own environment, not its parent's
        assert ev._workers[0].conn.poll(30)
        with open(f"/proc/{ev._workers[0].proc.pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        assert env[b"OPENBLAS_NUM_THREADS"] == b"1"
        assert env[b"OMP_NUM_THREADS"] == b"1"
        assert env[b"MKL_NUM_THREADS"] == b"1"
        ev.finish()
    finally:
        ev.close()


def test_auto_workers_follow_the_cores_and_the_categories() -> None:
    assert auto_workers(80, 16) == 1
    assert auto_workers(80, 32) == 2
    assert auto_workers(80, 64) == 4
    assert auto_workers(80, 128) == 4
    assert auto_workers(80, 8) == 1
    assert auto_workers(80, 2) == 1
    assert auto_workers(3, 64) == 3
    assert auto_workers(0, 16) == 1


def test_partition_puts_each_counted_category_in_one_group_the_largest_first() -> None:
    counted = np.array([[10, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0], [7, 7, 0, 0]])
    # largest first to the least loaded: 0 (10) -> a, 5 (7) -> b, then 1, 2, 3 (1 each) -> b (8, 9, 10)
    assert [g.tolist() for g in partition_categories(counted, 2)] == [[0], [1, 2, 3, 5]]
    assert [g.tolist() for g in partition_categories(counted, 1)] == [[0, 1, 2, 3, 5]]
    groups = partition_categories(counted, 9)  # never more groups than counted categories
    assert sorted(k for g in groups for k in g.tolist()) == [0, 1, 2, 3, 5] and len(groups) == 5
    assert partition_categories(np.zeros((3, 4), np.int64), 4) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_batches_without_any_detection_reach_the_workers(mini_coco, workers: int) -> None:
    """A batch whose images have no detections at all is sent as an empty array: the evaluation goes on and
    gives pycocotools' stats."""
    ids = mini_coco.image_ids[:6]
    anns = mini_coco.coco.imgToAnns.get(ids[3], [])
    rows = np.array([[ids[3], *a["bbox"], 0.5, a["category_id"]] for a in anns], np.float64).reshape(-1, 7)
    ev = ProcessCocoEval(mini_coco.coco, ids, workers=workers)
    ev.add(ids[:3], [np.zeros((0, 7))] * 3)
    ev.add(ids[3:], [rows, np.zeros((0, 7)), np.zeros((0, 7))])
    assert ev.finish().tolist() == pycocotools_eval(mini_coco.coco, rows, ids).stats.tolist()


def _routed(ev: ProcessCocoEval, ids: list[int], rows_per_image: list[np.ndarray]) -> list[tuple]:
    """The sender's messages for one ``add``, which queues the ids and the rows per image as they are."""
    return ev._route(("rows", list(ids), list(rows_per_image)))


def test_each_worker_is_sent_the_rows_of_its_categories_alone(mini_coco) -> None:
    """The sender splits a batch by worker: each worker gets every image id, the rows of its categories in
    their order and each image's count of them; a row of a category no worker has (unknown, not an integer,
    without counted ground truth) goes to none."""
    ids = mini_coco.image_ids[:3]
    ev = ProcessCocoEval(mini_coco.coco, ids, workers=2)
    assert ev.workers == 2
    cat_ids = ev.gt.cat_ids
    mine = [set(cat_ids[g].tolist()) for g in ev.groups]
    nobody = [c for c in cat_ids.tolist() if not any(c in m for m in mine)]
    cats = [*sorted(mine[0] | mine[1]), 999, -1, float(cat_ids[0]) + 0.5, *nobody]
    rng = np.random.default_rng(3)
    per_image = []
    for k, i in enumerate(ids):
        n = 5 + 4 * k
        r = np.column_stack([np.full(n, i), rng.random((n, 5)), rng.choice(cats, n)])
        per_image.append(r)
    parts = _routed(ev, ids, per_image)
    assert len(parts) == 2
    for part, wanted in zip(parts, mine, strict=True):
        tag, got_ids, counts, rows = part
        assert tag == "rows" and got_ids.tolist() == ids
        expected = [r[np.isin(r[:, 6], list(wanted))] for r in per_image]
        assert counts.tolist() == [len(e) for e in expected]
        assert np.array_equal(rows, np.concatenate(expected))
    assert sum(len(p[3]) for p in parts) < sum(len(r) for r in per_image)  # the rows of no worker went nowhere


@pytest.mark.parametrize("table", [True, False])
def test_category_index_finds_each_known_id_and_nothing_else(monkeypatch, table: bool) -> None:
    """The table lookup (COCO's small ids) and the binary search (ids too large for a table) agree: the index
    of each listed integer id, -1 for another id, a non-integer or a negative value."""
    from common.data import coco_stream

    if not table:
        monkeypatch.setattr(coco_stream, "MAX_TABLE_CATEGORY_ID", 1)
    cat_ids = np.array([1, 3, 90], np.int64)
    values = np.array([3.0, 1.0, 90.0, 2.0, 0.0, -1.0, 3.5, 91.0, 1e9, 90.0])
    assert category_index(cat_ids, values).tolist() == [1, 0, 2, -1, -1, -1, -1, -1, -1, 2]
    assert category_index(np.zeros(0, np.int64), values).tolist() == [-1] * len(values)


def test_workers_are_sent_the_same_rows_whichever_way_the_ids_are_found(mini_coco, monkeypatch) -> None:
    from common.data import coco_stream

    ids = mini_coco.image_ids[:2]
    ev = ProcessCocoEval(mini_coco.coco, ids, workers=2)
    rng = np.random.default_rng(5)
    cats = [*ev.gt.cat_ids.tolist(), 999]
    rows = [np.column_stack([np.full(9, i), rng.random((9, 5)), rng.choice(cats, 9)]) for i in ids]
    by_table = _routed(ev, ids, rows)
    monkeypatch.setattr(coco_stream, "MAX_TABLE_CATEGORY_ID", 1)
    by_search = _routed(ev, ids, rows)
    for a, b in zip(by_table, by_search, strict=True):
        assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
