"""COCOeval's accumulate and summarize (bbox, default parameters) from per-detection match results.

The input (``Scored``) is what ``common.data.coco_stream`` keeps of every scored detection. The output
arrays are pycocotools' ``eval['precision']`` [T, R, K, A, M] and ``eval['recall']`` [T, K, A, M],
equal element for element, and ``summarize`` averages them as pycocotools does (same arrays, same
NumPy reductions, so the same floats).

Precision is only ever read at true positives: pycocotools' precision curve, made monotone from the
right, takes its maxima there, and the first position reaching a recall threshold is a true positive.
So only true positives are ranked here, each with the count of detections scored at or before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AREA_LABELS",
    "AREA_RANGES",
    "IOU_THRS",
    "MAX_DETS",
    "RANK_SLOTS",
    "REC_THRS",
    "Scored",
    "accumulate",
    "summarize",
]

# pycocotools' Params.setDetParams, computed the same way (so the same floats)
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")
RANK_SLOTS = 128  # > MAX_DETS[-1]: a detection's tie order is image rank * RANK_SLOTS + its rank


@dataclass
class Scored:
    """What accumulation needs of each scored detection (the first 100 per image and category)."""

    score: np.ndarray  # [N] float64
    cat: np.ndarray  # [N] category index
    order: np.ndarray  # [N] image rank * RANK_SLOTS + rank by score within (image, category)
    area_out: np.ndarray  # [N] uint8, bit a set: area outside AREA_RANGES[a]
    cand: np.ndarray  # [N] row of tp / ignored, or -1: matches no ground truth at any threshold
    tp: np.ndarray  # [C, A, T] bool
    ignored: np.ndarray  # [C, A, T] bool

    @staticmethod
    def concat(parts: list[Scored]) -> Scored:
        if not parts:
            flags = np.zeros((0, len(AREA_RANGES), len(IOU_THRS)), bool)
            f, i = np.zeros(0, np.float64), np.zeros(0, np.int64)
            return Scored(f, i.astype(np.int32), i, i.astype(np.uint8), i, flags, flags)
        shift = np.cumsum([0] + [len(p.tp) for p in parts[:-1]])
        cand = np.concatenate([np.where(p.cand >= 0, p.cand + s, -1) for p, s in zip(parts, shift, strict=True)])
        return Scored(
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.cat for p in parts]),
            np.concatenate([p.order for p in parts]),
            np.concatenate([p.area_out for p in parts]),
            cand,
            np.concatenate([p.tp for p in parts]),
            np.concatenate([p.ignored for p in parts]),
        )


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted ``keys``: each element's index within its run of equal keys, the runs' starts and lengths."""
    first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    lengths = np.diff(np.r_[starts, len(keys)])
    return np.arange(len(keys)) - np.repeat(starts, lengths), starts, lengths


def first_reaching(counted: np.ndarray) -> np.ndarray:
    """[K, A, R]: the (1-based) true positive at which recall ``tp / counted`` first reaches each
    recall threshold, found as pycocotools finds it (``searchsorted`` on the same floats)."""
    out = np.zeros((*counted.shape, len(REC_THRS)), np.int64)
    for n in np.unique(counted[counted > 0]):
        rc = np.arange(1, n + 1, dtype=np.float64) / n
        out[counted == n] = np.searchsorted(rc, REC_THRS, side="left") + 1
    return out


@dataclass
class _Candidates:
    """The detections that may match, in accumulation order (category, score descending, image rank,
    rank), with their flags and, per (area range, maxDets), the other scored detections of their
    category ranked ahead of them."""

    cat: np.ndarray  # [C]
    rank: np.ndarray  # [C]
    cat_first: np.ndarray  # [K] first candidate of each category
    tp: np.ndarray  # [A, T, C]
    ignored: np.ndarray  # [A, T, C]
    plain_ahead: np.ndarray  # [A, M, C]


def _plain_buckets(s: Scored, cands: np.ndarray, plain: np.ndarray, n_cats: int) -> np.ndarray:
    """For each plain detection (``plain``, grouped by category), the first candidate (an index into
    ``cands``) ranked after it in its category, or -1 where none is. Ranked as pycocotools ranks: score
    descending, then image rank and rank (``order``); no sort of the plain detections."""
    cstart = np.searchsorted(s.cat[cands], np.arange(n_cats + 1))
    pstart = np.searchsorted(s.cat[plain], np.arange(n_cats + 1))
    span = int(s.order.max(initial=0)) + 1
    bucket = np.full(len(plain), -1, np.int64)
    for k in np.flatnonzero((np.diff(cstart) > 0) & (np.diff(pstart) > 0)):
        c, p = cands[cstart[k] : cstart[k + 1]], plain[pstart[k] : pstart[k + 1]]
        c_neg, p_neg = -s.score[c], -s.score[p]  # the candidates' in order (score descending, then order)
        b = np.searchsorted(c_neg, p_neg)  # the candidates of a higher score are ahead
        tie = np.flatnonzero(c_neg[np.minimum(b, len(c) - 1)] == p_neg)
        if len(tie):  # a tie with candidates is broken by order, as pycocotools does: one integer key (level, order)
            level = np.cumsum(np.r_[True, c_neg[1:] != c_neg[:-1]]) - 1
            c_key = level * span + s.order[c]
            b[tie] = np.searchsorted(c_key, level[b[tie]] * span + s.order[p[tie]])
        bucket[pstart[k] : pstart[k + 1]] = np.where(b < len(c), cstart[k] + b, -1)
    return bucket


def _small_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for small non-negative integers, by counting (no sort)."""
    codes = np.flatnonzero(np.bincount(values))
    index = np.zeros(int(codes[-1]) + 1 if len(codes) else 0, np.int64)
    index[codes] = np.arange(len(codes))
    return codes, index[values]


def _plain_ahead(s: Scored, cands: np.ndarray, cat_first: np.ndarray, n_cats: int) -> np.ndarray:
    """[A, M, C]: per candidate, the plain detections of its category ranked ahead of it that count
    for area range a and maxDets m (area inside the range, rank below maxDets)."""
    plain = np.flatnonzero(s.cand < 0)
    plain = plain[np.argsort(s.cat[plain].astype(np.int16 if n_cats < 2**15 else np.int64), kind="stable")]
    bucket = _plain_buckets(s, cands, plain, n_cats)
    ok = bucket >= 0
    if not ok.any():
        return np.zeros((len(AREA_RANGES), len(MAX_DETS), len(cands)), np.int64)
    rank = s.order[plain[ok]] % RANK_SLOTS
    rank_class = sum((rank >= m).astype(np.int64) for m in MAX_DETS[:-1])  # maxDets below which it does not count
    codes, code = _small_unique(s.area_out[plain[ok]].astype(np.int64) * len(MAX_DETS) + rank_class)
    n = len(cands)
    hist = np.bincount(code * n + bucket[ok], minlength=len(codes) * n).reshape(len(codes), n)
    bits, cls = np.divmod(codes, len(MAX_DETS))
    counts = np.stack(
        [((bits >> a) & 1 == 0)[:, None] & (cls[:, None] <= np.arange(len(MAX_DETS))) for a in range(len(AREA_RANGES))],
        axis=1,
    ).reshape(len(codes), -1)  # [codes, A * M]: does a plain detection of this code count there
    per = np.rint(counts.T.astype(np.float64) @ hist.astype(np.float64)).astype(np.int64)  # exact: small integers
    cum = np.zeros((per.shape[0], n + 1), np.int64)
    np.cumsum(per, axis=1, out=cum[:, 1:])
    return (cum[:, 1:] - cum[:, cat_first[s.cat[cands]]]).reshape(len(AREA_RANGES), len(MAX_DETS), n)


def _candidates(s: Scored, n_cats: int) -> _Candidates:
    cands = np.flatnonzero(s.cand >= 0)
    cands = cands[np.lexsort((s.order[cands], -s.score[cands], s.cat[cands]))]
    cat = s.cat[cands]
    cat_first = np.searchsorted(cat, np.arange(n_cats))
    rows = s.cand[cands]
    tp, ignored = (np.ascontiguousarray(f[rows].transpose(1, 2, 0)) for f in (s.tp, s.ignored))
    plain_ahead = _plain_ahead(s, cands, cat_first, n_cats)
    return _Candidates(cat, s.order[cands] % RANK_SLOTS, cat_first, tp, ignored, plain_ahead)


def _curves(d: _Candidates, a: int, m: int, n_cats: int) -> tuple[np.ndarray, np.ndarray]:
    """One (area range, maxDets): every true positive as (segment key t * K + k, its precision), in
    segment order then score order; the segments' keys and true-positive counts come from ``_runs``."""
    in_m = d.rank < MAX_DETS[m]
    counts = in_m & ~d.ignored[a]  # [T, C]
    upto = np.zeros((counts.shape[0], counts.shape[1] + 1), np.int64)
    np.cumsum(counts, axis=1, out=upto[:, 1:])
    flat = np.flatnonzero(in_m & d.tp[a])  # np.nonzero's (t, c) in the same order, found faster
    t_i = flat // counts.shape[1]
    c_i = flat - t_i * counts.shape[1]
    cat = d.cat[c_i]
    key = t_i * n_cats + cat
    j, _, _ = _runs(key)
    tp = (j + 1).astype(np.float64)
    # detections counted at or before each true positive in its category: plain ones, then candidates
    seen = d.plain_ahead[a, m, c_i] + upto[t_i, c_i + 1] - upto[t_i, d.cat_first[cat]]
    fp_plus_tp = seen.astype(np.float64)  # fp + tp of pycocotools: exact integers
    return key, tp / (fp_plus_tp + np.spacing(1))


def accumulate(s: Scored, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' ``accumulate``: (precision [T, R, K, A, M], recall [T, K, A, M]); -1 where a
    category has no counted ground truth in an area range."""
    n_cats, n_areas = counted.shape
    n_t, n_r, n_m = len(IOU_THRS), len(REC_THRS), len(MAX_DETS)
    precision = -np.ones((n_t, n_r, n_cats, n_areas, n_m))
    recall = -np.ones((n_t, n_cats, n_areas, n_m))
    kk, aa = np.nonzero(counted > 0)
    precision[:, :, kk, aa, :] = 0.0
    recall[:, kk, aa, :] = 0.0
    reach = first_reaching(counted)
    d = _candidates(s, n_cats)
    for m in range(n_m):
        for a in range(n_areas):
            key, pr = _curves(d, a, m, n_cats)
            if not len(key):
                continue
            _, starts, n_tp = _runs(key)
            seg_t, seg_k = key[starts] // n_cats, key[starts] % n_cats
            recall[seg_t, seg_k, a, m] = n_tp.astype(np.float64) / counted[seg_k, a]
            precision[seg_t, :, seg_k, a, m] = _precision_at(pr, starts, n_tp, reach[seg_k, a])
    return precision, recall


def _precision_at(pr: np.ndarray, starts: np.ndarray, n_tp: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """[S, R]: per segment, the highest precision at or after the true positive reaching each recall
    threshold (0 where recall never reaches it)."""
    ok = reach <= n_tp[:, None]
    idx = (starts[:, None] + reach - 1)[ok]
    q = np.zeros(reach.shape)
    q[ok] = np.maximum.reduceat(pr, idx)  # the max between consecutive queries; a suffix max completes it
    return np.maximum.accumulate(q[:, ::-1], axis=1)[:, ::-1]


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """pycocotools' ``summarize`` for bbox: the 12 stats."""

    def one(ap: int, iou: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        aind = [i for i, lbl in enumerate(AREA_LABELS) if lbl == area]
        mind = [i for i, m in enumerate(MAX_DETS) if m == max_dets]
        s = precision if ap == 1 else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRS)[0]]
        s = s[:, :, :, aind, mind] if ap == 1 else s[:, :, aind, mind]
        return -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])

    stats = np.zeros((12,))
    stats[0] = one(1)
    stats[1] = one(1, iou=0.5, max_dets=MAX_DETS[2])
    stats[2] = one(1, iou=0.75, max_dets=MAX_DETS[2])
    stats[3] = one(1, area="small", max_dets=MAX_DETS[2])
    stats[4] = one(1, area="medium", max_dets=MAX_DETS[2])
    stats[5] = one(1, area="large", max_dets=MAX_DETS[2])
    stats[6] = one(0, max_dets=MAX_DETS[0])
    stats[7] = one(0, max_dets=MAX_DETS[1])
    stats[8] = one(0, max_dets=MAX_DETS[2])
    stats[9] = one(0, area="small", max_dets=MAX_DETS[2])
    stats[10] = one(0, area="medium", max_dets=MAX_DETS[2])
    stats[11] = one(0, area="large", max_dets=MAX_DETS[2])
    return stats
