"""Paired COCO mAP differences with a bootstrap confidence interval, and rank agreement.

Two models scored on the same images differ by ``ΔAP = AP(a) - AP(b)``. How much of that is
noise is answered by resampling *images*: a bootstrap replicate draws N images with replacement
and recomputes both APs on that same multiset, so the pairing is kept (images that are hard for
one model are hard for the other).

Recomputing COCOeval for every replicate would be slow, and pycocotools cannot take an image
twice. Instead ``match_images`` runs pycocotools' ``evaluate()`` once per model (the per-image,
per-category matching at the ten IoU thresholds, area "all", 100 detections) and keeps the
matches; ``weighted_ap`` then redoes pycocotools' ``accumulate`` in NumPy with a weight per image
(how often the replicate drew it). With all weights 1 it is pycocotools' AP exactly; with
multinomial weights it is the AP of the resampled image multiset, up to the order of detections
with tied scores. ``paired_delta`` reports the point ΔAP from the real COCOeval numbers and the
percentile interval of the replicate differences.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.data.coco import STAT_NAMES, rows_to_dicts

__all__ = [
    "CategoryMatches",
    "Delta",
    "ImageMatches",
    "match_images",
    "paired_delta",
    "spearman",
    "weighted_ap",
]

_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
_EPS = np.spacing(1)
_CELLS = 20_000_000  # replicates x thresholds x detections per NumPy chunk (~160 MB of float64)


@dataclass(frozen=True)
class CategoryMatches:
    """One category over all images, in pycocotools' accumulate order (score descending), compressed.

    A detection that is a false positive at every IoU threshold only adds to the false-positive count,
    so each run of them between two other detections becomes one step whose weight is the run's summed
    image weight; detections after the last true positive never change AP and are dropped.
    """

    image_index: np.ndarray  # [L] image of each step (index into ImageMatches.image_ids); -1 for a run
    tp: np.ndarray  # [T, L] matched and not ignored
    fp: np.ndarray  # [T, L] unmatched and not ignored (True for a run)
    run_steps: np.ndarray  # [R] the steps that are runs
    run_images: np.ndarray  # images of the runs' detections, run after run
    run_starts: np.ndarray  # [R] offset of each run in run_images
    gt_per_image: np.ndarray  # [N] ground truths that count (not ignored), per image


@dataclass(frozen=True)
class ImageMatches:
    """The matches of one model on one image set: what ``weighted_ap`` needs."""

    image_ids: np.ndarray  # [N] sorted, as pycocotools orders them
    categories: tuple[CategoryMatches, ...]
    iou_thresholds: int


@dataclass(frozen=True)
class Delta:
    """``a - b`` on the same images: point estimate and bootstrap percentile interval."""

    delta: float
    low: float
    high: float
    replicates: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "ci": [self.low, self.high],
            "confidence": self.confidence,
            "replicates": self.replicates,
        }


def match_images(coco: Any, rows: np.ndarray, image_ids: Sequence[int]) -> tuple[dict[str, float], ImageMatches]:
    """pycocotools COCOeval (bbox) on ``rows`` (``coco_rows`` layout): the 12 stats and the matches."""
    from pycocotools.cocoeval import COCOeval

    ids = sorted({int(i) for i in image_ids})
    if rows.shape[0] == 0:
        return dict.fromkeys(STAT_NAMES, 0.0), _empty_matches(coco, ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(rows_to_dicts(rows)), iouType="bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        matches = _collect(ev)
        ev.accumulate()
        ev.summarize()
    stats = {k: float(v) for k, v in zip(STAT_NAMES, list(ev.stats)[: len(STAT_NAMES)], strict=True)}
    return stats, matches


def _empty_matches(coco: Any, ids: list[int]) -> ImageMatches:
    """No detections at all: every category with ground truth scores 0."""
    index = {i: n for n, i in enumerate(ids)}
    cats = []
    for cat in sorted(coco.getCatIds()):
        gt = np.zeros(len(ids), np.int64)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=ids, catIds=[cat])):
            if not ann.get("iscrowd", 0) and not ann.get("ignore", 0):
                gt[index[ann["image_id"]]] += 1
        if gt.any():
            cats.append(_no_detections(10, gt))
    return ImageMatches(np.asarray(ids, np.int64), tuple(cats), 10)


def _collect(ev: Any) -> ImageMatches:
    """Per category: the detections of every image (area "all", the largest maxDet) in accumulate order."""
    p = ev.params
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    all_area = [tuple(a) for a in p.areaRng].index(tuple(p.areaRng[0]))
    max_det = p.maxDets[-1]
    n_thr = len(p.iouThrs)
    cats = []
    for k in range(len(p.catIds)):
        base = k * n_area * n_img + all_area * n_img
        evals = [(i, ev.evalImgs[base + i]) for i in range(n_img)]
        evals = [(i, e) for i, e in evals if e is not None]
        if not evals:
            continue
        gt = np.zeros(n_img, np.int64)
        for i, e in evals:
            gt[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        scores = np.concatenate([np.asarray(e["dtScores"][:max_det], float) for _, e in evals])
        owner = np.concatenate([np.full(len(e["dtScores"][:max_det]), i, np.int64) for i, e in evals])
        order = np.argsort(-scores, kind="mergesort")
        dtm = np.concatenate([e["dtMatches"][:, :max_det] for _, e in evals], axis=1)[:, order].astype(bool)
        dti = np.concatenate([e["dtIgnore"][:, :max_det] for _, e in evals], axis=1)[:, order].astype(bool)
        cats.append(_compress(owner[order], dtm & ~dti, ~dtm & ~dti, gt))
    return ImageMatches(np.asarray(p.imgIds, np.int64), tuple(cats), n_thr)


def _no_detections(thresholds: int, gt: np.ndarray) -> CategoryMatches:
    none, empty = np.zeros(0, np.int64), np.zeros((thresholds, 0), bool)
    return CategoryMatches(none, empty, empty, none, none, none, gt)


def _compress(owner: np.ndarray, tp: np.ndarray, fp: np.ndarray, gt: np.ndarray) -> CategoryMatches:
    """Drop what follows the last true positive, merge runs of all-threshold false positives."""
    hits = np.flatnonzero(tp.any(axis=0))
    if not hits.size:
        return _no_detections(tp.shape[0], gt)
    end = int(hits[-1]) + 1
    owner, tp, fp = owner[:end], tp[:, :end], fp[:, :end]
    plain = fp.all(axis=0)
    keep = ~plain & (tp | fp).any(axis=0)  # detections ignored at every threshold change nothing
    # a run starts at a plain false positive whose predecessor is not one
    starts = np.flatnonzero(plain & ~np.concatenate(([False], plain[:-1])))
    step_of = np.cumsum(keep | np.isin(np.arange(end), starts)) - 1  # step index of each kept/run-start position
    n_steps = int(step_of[-1]) + 1
    image_index = np.full(n_steps, -1, np.int64)
    image_index[step_of[keep]] = owner[keep]
    t = tp.shape[0]
    s_tp = np.zeros((t, n_steps), bool)
    s_fp = np.zeros((t, n_steps), bool)
    s_tp[:, step_of[keep]] = tp[:, keep]
    s_fp[:, step_of[keep]] = fp[:, keep]
    run_steps = step_of[starts]
    s_fp[:, run_steps] = True
    members = np.flatnonzero(plain)
    run_starts = np.searchsorted(members, starts)
    return CategoryMatches(image_index, s_tp, s_fp, run_steps, owner[members], run_starts, gt)


def weighted_ap(matches: ImageMatches, weights: np.ndarray) -> np.ndarray:
    """AP@[.5:.95] (area all, 100 detections) for each row of image weights ``[B, N]`` -> ``[B]``.

    Weight w on an image counts its detections and ground truths w times. All-ones weights give
    pycocotools' AP. A category whose weighted ground truth is 0 is left out, as pycocotools does.
    """
    w = np.atleast_2d(np.asarray(weights, float))
    b = w.shape[0]
    total = np.zeros(b)
    count = np.zeros(b)
    for cat in matches.categories:
        npig = w @ cat.gt_per_image  # [B]
        present = npig > 0
        ap = _category_ap(cat, w, npig)  # [B, T]
        total += np.where(present, ap.sum(axis=1), 0.0)
        count += np.where(present, ap.shape[1], 0)
    return np.divide(total, count, out=np.zeros(b), where=count > 0)


def _category_ap(cat: CategoryMatches, w: np.ndarray, npig: np.ndarray) -> np.ndarray:
    """[B, T] interpolated AP of one category; replicates processed in chunks that fit in memory."""
    b = w.shape[0]
    t, d = cat.tp.shape
    if d == 0:
        return np.zeros((b, t))
    step = max(1, _CELLS // max(1, t * d))
    out = np.empty((b, t))
    for lo in range(0, b, step):
        out[lo : lo + step] = _ap_chunk(cat, w[lo : lo + step], npig[lo : lo + step])
    return out


def _step_weights(cat: CategoryMatches, w: np.ndarray) -> np.ndarray:
    """[b, L]: the weight each step adds (its image's weight, or the summed weights of a run)."""
    out = w[:, np.maximum(cat.image_index, 0)]
    if cat.run_steps.size:
        out[:, cat.run_steps] = np.add.reduceat(w[:, cat.run_images], cat.run_starts, axis=1)
    return out


def _ap_chunk(cat: CategoryMatches, w: np.ndarray, npig: np.ndarray) -> np.ndarray:
    wd = _step_weights(cat, w)[:, None, :]  # [b, 1, L]
    tp = np.cumsum(wd * cat.tp[None], axis=2)  # [b, T, D]
    fp = np.cumsum(wd * cat.fp[None], axis=2)
    denom = np.where(npig > 0, npig, 1.0)[:, None, None]
    rc = tp / denom
    pr = tp / (fp + tp + _EPS)
    pr = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]  # precision envelope
    b, t, d = rc.shape
    rows = np.arange(b * t)
    # one searchsorted over all rows: recall is in [0, 1] and non-decreasing within a row
    keys = (rc.reshape(b * t, d) + 4.0 * rows[:, None]).ravel()
    want = (_RECALL_THRESHOLDS[None, :] + 4.0 * rows[:, None]).ravel()
    idx = np.searchsorted(keys, want, side="left").reshape(b * t, -1) - (rows * d)[:, None]
    flat = pr.reshape(b * t, d)
    inside = idx < d
    q = np.where(inside, flat[rows[:, None], np.minimum(idx, d - 1)], 0.0)
    return q.mean(axis=1).reshape(b, t)


def paired_delta(
    a: ImageMatches,
    b: ImageMatches,
    point: float,
    replicates: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> Delta:
    """``point`` (= AP(a) - AP(b) from COCOeval) with a paired bootstrap interval over images."""
    if not np.array_equal(a.image_ids, b.image_ids):
        raise ValueError("paired_delta needs both models scored on the same images")
    if replicates <= 0:
        return Delta(point, point, point, 0, confidence)
    n = len(a.image_ids)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(float)
    diffs = weighted_ap(a, weights) - weighted_ap(b, weights)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return Delta(point, float(low), float(high), replicates, confidence)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with fewer than 3 pairs or a constant side."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if len(xa) != len(ya):
        raise ValueError("spearman needs two sequences of the same length")
    if len(xa) < 3:
        return None
    rx, ry = _ranks(xa), _ranks(ya)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])
