"""COCO bbox evaluation fed image by image: pycocotools' COCOeval, computed while detections arrive.

``StreamingCocoEval`` indexes the ground truth once. ``add`` takes each image's detections as the
evaluator's rows ([K, 7] arrays, ``common.data.coco.ROW_COLUMNS``) and matches them against the
ground truth in vectorised NumPy, a chunk of images at a time, keeping per detection only what
accumulation needs: its score, category, image and rank, which area ranges ignore it, and, for the
few detections that overlap a ground-truth box, whether they are true positives or ignored at each
(area range, IoU threshold); the others are kept sorted by score, so that accumulation places them faster.
``finish`` runs accumulation and the summary (``common.data.coco_accumulate``). No per-detection dict is built.

The 12 stats equal pycocotools' (``==``): the same per-image, per-category greedy matching (ground
truth ordered ignored-last, detections by score with a stable sort, the first 100 per category),
the same IoU arithmetic (a crowd box divides by the detection's area), the annotation ``area`` for
area ranges and ``w * h`` for detections, pycocotools' treatment of a match on annotation id 0 as
no match, and its tie order across images. Detections of images outside the selection and of
categories the annotations do not list are not scored, as in pycocotools.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.data.coco_accumulate import (
    AREA_RANGES,
    IOU_THRS,
    MAX_DETS,
    RANK_SLOTS,
    Scored,
    accumulate,
    summarize,
)

__all__ = ["BackgroundCocoEval", "GroundTruth", "StreamingCocoEval", "category_index", "prepare_ground_truth"]

CHUNK_ROWS = 32768  # detections matched together: enough to amortise NumPy's per-call cost
MAX_TABLE_CATEGORY_ID = 1 << 20  # category ids below this are looked up in a table, larger ones searched


@dataclass(frozen=True)
class GroundTruth:
    """The selected images' annotations as arrays, ordered by (image rank, category, file order)."""

    image_ids: np.ndarray  # [I] sorted distinct selected ids (pycocotools' params.imgIds)
    cat_ids: np.ndarray  # [K] sorted category ids of the instances file
    key: np.ndarray  # [G] image rank * K + category index, non-decreasing
    boxes: np.ndarray  # [G, 4] xywh
    crowd: np.ndarray  # [G] int(iscrowd) != 0: IoU over the detection's area
    ignore: np.ndarray  # [G, A] iscrowd, or the annotation's area outside area range a
    real_id: np.ndarray  # [G] id != 0 (pycocotools counts a match on id 0 as no match)
    counted: np.ndarray  # [K, A] ground truth that is not ignored, per category and area range


def _resolved_annotations(coco: Any, image_ids: np.ndarray, cat_index: dict[int, int]) -> list[dict[str, Any]]:
    """pycocotools' ``loadAnns(getAnnIds(imgIds, catIds))``: per image in id order, file order, through
    the annotation index by id (so a repeated id stands for its last annotation, as there)."""
    out = []
    for img in image_ids.tolist():
        for a in coco.imgToAnns.get(img, ()):
            if a["category_id"] in cat_index:
                out.append(coco.anns[a["id"]])
    for a in out:
        if "area" not in a or "iscrowd" not in a:
            missing = "area" if "area" not in a else "iscrowd"
            raise UserError(
                f"annotation {a.get('id')!r} (image {a.get('image_id')!r}) has no {missing!r}: COCO evaluation "
                "needs 'area' and 'iscrowd' on every annotation; add them to the instances file"
            )
    return out


def prepare_ground_truth(coco: Any, image_ids: Sequence[int]) -> GroundTruth:
    """Index ``coco``'s annotations of ``image_ids`` (a pycocotools COCO) once, as arrays."""
    ids = np.unique(np.asarray([int(i) for i in image_ids], np.int64))
    cat_ids = np.unique(np.asarray([int(c) for c in coco.getCatIds()], np.int64))
    rank = {i: r for r, i in enumerate(ids.tolist())}
    cat_index = {c: k for k, c in enumerate(cat_ids.tolist())}
    anns = [
        a
        for a in _resolved_annotations(coco, ids, cat_index)
        if a["image_id"] in rank and a["category_id"] in cat_index
    ]
    n_cats = len(cat_ids)
    key = np.array([rank[a["image_id"]] * n_cats + cat_index[a["category_id"]] for a in anns], np.int64)
    order = np.argsort(key, kind="stable")
    boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)[order]
    area = np.array([a["area"] for a in anns], np.float64)[order]
    crowd = np.array([int(a["iscrowd"]) != 0 for a in anns], bool)[order]
    flagged = np.array([bool(a["iscrowd"]) for a in anns], bool)[order]
    real_id = np.array([a["id"] != 0 for a in anns], bool)[order]
    ignore = np.stack([flagged | (area < lo) | (area > hi) for lo, hi in AREA_RANGES], axis=1).reshape(-1, 4)
    key = key[order]
    counted = np.stack(
        [np.bincount(key[~ignore[:, a]] % max(1, n_cats), minlength=n_cats) for a in range(len(AREA_RANGES))], axis=1
    )
    return GroundTruth(ids, cat_ids, key, boxes, crowd, ignore, real_id, counted.astype(np.int64))


@functools.lru_cache(maxsize=8)
def _category_table(cat_ids: bytes) -> np.ndarray:
    """id -> index in ``cat_ids`` (sorted int64 ids, as bytes), -1 for other ids: made once per set of ids, not
    once per batch (a table may reach ``MAX_TABLE_CATEGORY_ID`` entries)."""
    ids = np.frombuffer(cat_ids, np.int64)
    table = np.full(int(ids[-1]) + 1, -1, np.int64)
    table[ids] = np.arange(len(ids))
    table.flags.writeable = False
    return table


def category_index(cat_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each of ``values`` (a rows' category column, float) as its index in ``cat_ids`` (sorted integer ids),
    -1 where it is none of them (another id, or not an integer). A table lookup for COCO's small ids; a
    binary search, which costs several times more, where an id is negative or too large for a table."""
    if not len(cat_ids):
        return np.full(len(values), -1, np.int64)
    if cat_ids[0] >= 0 and cat_ids[-1] < MAX_TABLE_CATEGORY_ID:
        table = _category_table(np.ascontiguousarray(cat_ids, np.int64).tobytes())
        c = values.astype(np.int64)
        known = (c >= 0) & (c < len(table)) & (c == values)
        return np.where(known, table[np.where(known, c, 0)], -1)
    k = np.clip(np.searchsorted(cat_ids, values), 0, len(cat_ids) - 1)
    return np.where(cat_ids[k] == values, k, -1)


def pair_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' ``bbIou`` for aligned pairs of xywh boxes, operation for operation (so the floats agree)."""
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = w * h
    dt_area = dt[:, 2] * dt[:, 3]
    union = np.where(crowd, dt_area, dt_area + gt[:, 2] * gt[:, 3] - inter)
    overlap = (w > 0) & (h > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


@dataclass
class _Chunk:
    """Detections of a chunk of images, ordered by (image rank, category index, score rank)."""

    img: np.ndarray  # image rank
    cat: np.ndarray  # category index
    rank: np.ndarray  # position among the image's detections of its category, by score
    boxes: np.ndarray
    score: np.ndarray


def _chunk_order(img: np.ndarray, slot: np.ndarray, k: np.ndarray, score: np.ndarray, n_cats: int) -> np.ndarray:
    """The order of a chunk's detections by (image rank ``img``, category ``k``, score descending), equal scores
    in their given order (pycocotools' stable sort). The rows come image by image; ``slot`` is each one's
    image's place in rank order within the chunk. Where every image's rows are sorted by score already (the
    evaluator's are), one stable sort on a small (image, category) key gives that order; else a full one."""
    same_image = img[1:] == img[:-1]
    if np.any(same_image & ~(score[1:] <= score[:-1])):  # a rise, or a NaN, within an image
        return np.lexsort((-score, k, img))
    key = slot * max(1, n_cats) + k
    small = len(key) == 0 or int(key.max()) < np.iinfo(np.int16).max
    return np.argsort(key.astype(np.int16) if small else key, kind="stable")  # int16: a radix sort


def _chunk_detections(gt: GroundTruth, ranks: list[int], rows_list: list[np.ndarray]) -> _Chunk:
    """The scored detections of a chunk: known category with counted ground truth, first 100 per
    (image, category) by score (a stable sort, as pycocotools)."""
    rows = np.concatenate([np.asarray(r, np.float64).reshape(-1, 7) for r in rows_list])
    counts = [len(r) for r in rows_list]
    img = np.repeat(np.asarray(ranks, np.int64), counts)
    slot = np.repeat(np.argsort(np.argsort(np.asarray(ranks, np.int64))), counts)
    n_cats = len(gt.cat_ids)
    k = category_index(gt.cat_ids, rows[:, 6])
    keep = (k >= 0) & (gt.counted[np.maximum(k, 0), 0] > 0) if n_cats else np.zeros(len(rows), bool)
    rows, img, slot, k = rows[keep], img[keep], slot[keep], k[keep]
    score = rows[:, 5]
    order = _chunk_order(img, slot, k, score, n_cats)
    group = (img * n_cats + k)[order]
    first = np.r_[True, group[1:] != group[:-1]] if len(group) else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    rank = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    top = rank < MAX_DETS[-1]
    order = order[top]
    return _Chunk(img[order], k[order], rank[top], rows[order, 1:5], score[order])


def _candidate_pairs(gt: GroundTruth, ch: _Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detection, ground truth, IoU) of every same-image, same-category pair that reaches the lowest
    IoU threshold; the other pairs can never match. Ordered by detection, then ground truth."""
    key = ch.img * len(gt.cat_ids) + ch.cat
    lo = np.searchsorted(gt.key, key, "left")
    n = np.searchsorted(gt.key, key, "right") - lo
    det = np.repeat(np.arange(len(key)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    g = lo[det] + (np.arange(len(det)) - first)
    iou = pair_iou(ch.boxes[det], gt.boxes[g], gt.crowd[g])
    hit = iou >= min(IOU_THRS[0], 1 - 1e-10)
    return det[hit], g[hit], iou[hit]


def _ranks_in_groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``keys``: each element's index within its run of equal keys, and each run's length."""
    first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    lengths = np.diff(np.r_[starts, len(keys)])
    return np.arange(len(keys)) - np.repeat(starts, lengths), lengths


def _greedy(
    iou: np.ndarray, first: np.ndarray, n_dets: np.ndarray, ign: np.ndarray, crowd: np.ndarray, real: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' greedy matching for groups of (image, category), all at once, one score rank at a time.

    ``iou`` [D, G]: each candidate detection's IoU with its group's candidate ground truth (-1: none);
    group ``i`` owns rows ``first[i] : first[i] + n_dets[i]`` in score order, groups by ``n_dets``
    descending. ``ign`` [groups, A, G], ``crowd`` and ``real`` [groups, G]. A detection takes, among the
    ground truth still free (a crowd box always is) with IoU >= the threshold, the one of highest IoU, the
    last of equals, preferring ground truth that is not ignored. Returns (matched a real id, matched an
    ignored box), each [D, A, T].
    """
    n_groups, n_areas, g_max = ign.shape
    thr = np.minimum(IOU_THRS, 1 - 1e-10)[None, None, :, None]
    free = np.ones((n_groups, n_areas, len(IOU_THRS), g_max), bool)
    got_real = np.zeros((len(iou), n_areas, len(IOU_THRS)), bool)
    got_ign = np.zeros_like(got_real)
    cols = np.arange(g_max)
    active = n_groups
    for c in range(int(n_dets[0]) if n_groups else 0):
        while n_dets[active - 1] <= c:
            active -= 1
        rows = first[:active] + c
        r = iou[rows][:, None, None, :]
        able = free[:active] & (r >= thr)
        kept = able & ~ign[:active, :, None, :]
        pick = np.where(kept.any(-1, keepdims=True), kept, able)
        j = g_max - 1 - np.argmax(np.where(pick, r, -1.0)[..., ::-1], axis=-1)
        hit = pick.any(-1)
        at = np.arange(active)[:, None, None]
        got_real[rows] = hit & real[:active][at, j]
        got_ign[rows] = hit & np.take_along_axis(ign[:active], j, axis=2)
        taken = hit & ~crowd[:active][at, j]
        free[:active] &= ~((cols == j[..., None]) & taken[..., None])
    return got_real, got_ign


def _group_tables(gt: GroundTruth, cand_g: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per group of (image, category): its candidate ground truth's columns, their count, and the
    ignore / crowd / real-id flags padded to the widest group."""
    gkey = gt.key[cand_g]
    col, n_gts = _ranks_in_groups(gkey)
    grp = np.searchsorted(groups, gkey)
    width = int(n_gts.max())
    ign = np.ones((len(groups), len(AREA_RANGES), width), bool)
    crowd = np.zeros((len(groups), width), bool)
    real = np.zeros((len(groups), width), bool)
    ign[grp, :, col] = gt.ignore[cand_g]
    crowd[grp, col] = gt.crowd[cand_g]
    real[grp, col] = gt.real_id[cand_g]
    return col, n_gts, ign, crowd, real


def _single(
    iou: np.ndarray, first: np.ndarray, n_dets: np.ndarray, ign: np.ndarray, crowd: np.ndarray, real: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``_greedy`` in closed form for groups with one candidate ground truth (column 0): at each threshold
    the first detection reaching it takes it; a crowd box takes every one. Same arguments and results."""
    grp = np.repeat(np.arange(len(n_dets)), n_dets)
    able = iou[:, :1] >= np.minimum(IOU_THRS, 1 - 1e-10)[None, :]  # [D, T]
    before = np.cumsum(able, axis=0) - able  # rows able ahead, in all groups
    firsts = able & (before == before[first[grp]])
    hit = np.where(crowd[grp, :1], able, firsts)
    got_real = np.repeat((hit & real[grp, :1])[:, None, :], ign.shape[1], axis=1)
    return got_real, hit[:, None, :] & ign[grp, :, :1]


def _match(gt: GroundTruth, ch: _Chunk, area_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chunk's detections that overlap ground truth enough to match: (their indices, true positive
    [C, A, T], ignored [C, A, T]). Every other detection is a false positive, or ignored where its
    area is outside the range."""
    det, g, iou = _candidate_pairs(gt, ch)
    cand_d, cand_g = np.unique(det), np.unique(g)
    if not len(cand_d):
        empty = np.zeros((0, len(AREA_RANGES), len(IOU_THRS)), bool)
        return cand_d, empty, empty
    dkey = ch.img[cand_d] * len(gt.cat_ids) + ch.cat[cand_d]
    groups = np.unique(dkey)
    _, n_dets = _ranks_in_groups(dkey)
    col, n_gts, ign, crowd, real = _group_tables(gt, cand_g, groups)
    rows = np.full((len(cand_d), ign.shape[2]), -1.0)
    rows[np.searchsorted(cand_d, det), col[np.searchsorted(cand_g, g)]] = iou
    first = np.cumsum(n_dets) - n_dets
    many = np.flatnonzero(n_gts > 1)
    many = many[np.argsort(-n_dets[many], kind="stable")]
    got_real, got_ign = _single(rows, first, n_dets, ign, crowd, real)
    in_one = np.repeat(n_gts == 1, n_dets)[:, None, None]
    got_real &= in_one
    got_ign &= in_one
    more_real, more_ign = _greedy(rows, first[many], n_dets[many], ign[many], crowd[many], real[many])
    got_real |= more_real
    got_ign |= more_ign
    out = area_out[cand_d][:, :, None]
    ignored = got_ign | (~got_real & out)
    return cand_d, got_real & ~got_ign, ignored


def score_chunk(gt: GroundTruth, ranks: list[int], rows_list: list[np.ndarray]) -> Scored:
    """Match a chunk of images (their ranks in ``gt.image_ids`` and rows) and keep what accumulation needs."""
    ch = _chunk_detections(gt, ranks, rows_list)
    area = ch.boxes[:, 2] * ch.boxes[:, 3]
    area_out = np.stack([(area < lo) | (area > hi) for lo, hi in AREA_RANGES], axis=1).reshape(-1, len(AREA_RANGES))
    cand_d, tp, ignored = _match(gt, ch, area_out)
    return Scored.of_chunk(ch.score, ch.cat, ch.img * RANK_SLOTS + ch.rank, area_out, cand_d, tp, ignored)


class StreamingCocoEval:
    """COCOeval (bbox) over ``image_ids`` of ``coco`` (a pycocotools COCO), fed image by image.

    ``add`` may be called with any grouping of images, in any order, each image once; ``finish``
    gives the 12 stats (``common.data.coco.STAT_NAMES`` order) as pycocotools computes them.
    """

    def __init__(self, coco: Any, image_ids: Sequence[int], chunk_rows: int = CHUNK_ROWS) -> None:
        self._start(prepare_ground_truth(coco, image_ids), chunk_rows)

    @classmethod
    def from_ground_truth(cls, gt: GroundTruth, chunk_rows: int = CHUNK_ROWS) -> StreamingCocoEval:
        """An evaluator over ground truth already indexed (``prepare_ground_truth``)."""
        ev = cls.__new__(cls)
        ev._start(gt, chunk_rows)
        return ev

    def _start(self, gt: GroundTruth, chunk_rows: int) -> None:
        self.gt = gt
        self._rank = {i: r for r, i in enumerate(self.gt.image_ids.tolist())}
        self._seen: set[int] = set()
        self._ranks: list[int] = []
        self._rows: list[np.ndarray] = []
        self._pending = 0
        self._chunk_rows = chunk_rows
        self._parts: list[Scored] = []
        self.num_detections = 0
        self.match_seconds = 0.0  # spent matching so far

    def add(self, image_ids: Sequence[int], rows_per_image: Sequence[np.ndarray]) -> None:
        """Each image's detections as rows (``ROW_COLUMNS``; the image is the one given beside them).
        Images outside the selection are skipped; an image given twice is a ValueError."""
        for image_id, rows in zip(image_ids, rows_per_image, strict=True):
            r = self._rank.get(int(image_id))
            if r is None:
                continue
            if r in self._seen:
                raise ValueError(f"image {image_id} was given to the COCO evaluation twice")
            self._seen.add(r)
            self._ranks.append(r)
            self._rows.append(rows)
            self._pending += len(rows)
            self.num_detections += len(rows)
        if self._pending >= self._chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Match what ``add`` has buffered."""
        t0 = time.perf_counter()
        if self._ranks:
            self._parts.append(score_chunk(self.gt, self._ranks, self._rows))
        self._ranks, self._rows, self._pending = [], [], 0
        self.match_seconds += time.perf_counter() - t0

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """Match what is buffered, then accumulate: pycocotools' ``eval['precision']`` [T, R, K, A, M]
        and ``eval['recall']`` [T, K, A, M]."""
        return accumulate(self.scored(), self.gt.counted)

    def scored(self) -> Scored:
        """Match what is buffered; every matched detection so far, as accumulation takes it."""
        self.flush()
        return Scored.concat(self._parts)

    def finish(self) -> np.ndarray:
        """The 12 stats, as pycocotools' ``COCOeval.stats``."""
        return summarize(*self.precision_recall())

    def close(self) -> None:
        """Drop what is buffered (the run failed)."""
        self._ranks, self._rows, self._pending = [], [], 0


class BackgroundCocoEval:
    """A ``StreamingCocoEval`` matching on a thread of its own: ``add`` only hands the rows over, so the
    matching overlaps whatever the caller does next (NumPy releases the GIL in its array work)."""

    def __init__(self, evaluator: StreamingCocoEval) -> None:
        self.evaluator = evaluator
        self._queue: queue.Queue[tuple[Sequence[int], Sequence[np.ndarray]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="coco-eval", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None or self._stop:
                continue
            try:
                self.evaluator.add(*item)
            except BaseException as exc:  # handed to the caller by finish
                self._error = exc

    @property
    def match_seconds(self) -> float:
        return self.evaluator.match_seconds

    def add(self, image_ids: Sequence[int], rows_per_image: Sequence[np.ndarray]) -> None:
        self._queue.put((list(image_ids), list(rows_per_image)))

    def finish(self) -> np.ndarray:
        """Wait for the matching of everything added, then accumulate + summarize."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.evaluator.finish()

    def close(self) -> None:
        """Stop without a result (the run failed): the thread drops what is queued and ends."""
        self._stop = True
        self._queue.put(None)
        self._thread.join()
