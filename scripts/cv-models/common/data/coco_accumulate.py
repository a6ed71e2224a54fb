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

from dataclasses import dataclass, fields

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
    "count_code",
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
    """What accumulation needs of the scored detections (the first 100 per image and category), in two sets.

    The candidates overlap a ground-truth box of their image and category enough to match at some IoU
    threshold; each keeps its flags. The plain detections are all the others: a false positive wherever they
    count, so all that matters of them is how many rank ahead of each candidate, in each (area range,
    maxDets). A part made by ``of_chunk`` holds its plain detections sorted by score (descending), work done
    while the batches come that makes placing them among the candidates cheaper at the end.
    """

    score: np.ndarray  # [C] float64
    cat: np.ndarray  # [C] category index (int32)
    order: np.ndarray  # [C] image rank * RANK_SLOTS + rank by score within (image, category)
    tp: np.ndarray  # [C, A, T] bool
    ignored: np.ndarray  # [C, A, T] bool
    plain_score: np.ndarray  # [P] float64
    plain_cat: np.ndarray  # [P] category index (int32)
    plain_order: np.ndarray  # [P] as ``order``
    plain_code: np.ndarray  # [P] uint8: ``count_code``, where the detection counts

    @staticmethod
    def of_chunk(
        score: np.ndarray,
        cat: np.ndarray,
        order: np.ndarray,
        area_out: np.ndarray,
        cand: np.ndarray,
        tp: np.ndarray,
        ignored: np.ndarray,
    ) -> Scored:
        """A chunk's scored detections (``score``, ``cat``, ``order``, ``area_out`` [N, A] bool: area outside
        range a), of which ``cand`` (sorted indices) are candidates with flags ``tp`` / ``ignored`` [C, A, T]."""
        plain = np.ones(len(score), bool)
        plain[cand] = False
        plain = np.flatnonzero(plain)
        plain = plain[np.argsort(-score[plain])]  # any order is right; this one makes the search at the end faster
        cat = cat.astype(np.int32)
        code = count_code(area_out[plain], order[plain])
        return Scored(score[cand], cat[cand], order[cand], tp, ignored, score[plain], cat[plain], order[plain], code)

    @staticmethod
    def concat(parts: list[Scored]) -> Scored:
        if not parts:
            flags = np.zeros((0, len(AREA_RANGES), len(IOU_THRS)), bool)
            f, i, c = np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, np.int32)
            return Scored(f, c, i, flags, flags, f, c, i, np.zeros(0, np.uint8))
        return Scored(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Scored)))


def count_code(area_out: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Where each detection counts, as one small integer: its area ranges' bits (bit a set: area outside
    ``AREA_RANGES[a]``, from ``area_out`` [N, A] bool) * len(MAX_DETS) + the index of the first maxDets it
    counts for (its rank by score must be below it)."""
    bits = (area_out * (1 << np.arange(len(AREA_RANGES)))).sum(axis=1).astype(np.int64)
    rank = order % RANK_SLOTS
    first_m = sum((rank >= m).astype(np.int64) for m in MAX_DETS[:-1])
    return (bits * len(MAX_DETS) + first_m).astype(np.uint8)


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
    """For each plain detection (``plain``, indices grouped by category), the first candidate (an index into
    ``cands``, the candidates in accumulation order) ranked after it in its category, or -1 where none is.
    Ranked as pycocotools ranks: score descending, then image rank and rank (``order``); no sort of the plain
    detections (sorted runs of them, as ``Scored.of_chunk`` leaves them, are only searched faster)."""
    cstart = np.searchsorted(s.cat[cands], np.arange(n_cats + 1))
    pstart = np.searchsorted(s.plain_cat[plain], np.arange(n_cats + 1))
    span = int(max(s.order.max(initial=0), s.plain_order.max(initial=0))) + 1
    bucket = np.full(len(plain), -1, np.int64)
    for k in np.flatnonzero((np.diff(cstart) > 0) & (np.diff(pstart) > 0)):
        c, p = cands[cstart[k] : cstart[k + 1]], plain[pstart[k] : pstart[k + 1]]
        c_neg, p_neg = -s.score[c], -s.plain_score[p]  # the candidates' in order (score descending, then order)
        b = np.searchsorted(c_neg, p_neg)  # the candidates of a higher score are ahead
        tie = np.flatnonzero(c_neg[np.minimum(b, len(c) - 1)] == p_neg)
        if len(tie):  # a tie with candidates is broken by order, as pycocotools does: one integer key (level, order)
            level = np.cumsum(np.r_[True, c_neg[1:] != c_neg[:-1]]) - 1
            c_key = level * span + s.order[c]
            b[tie] = np.searchsorted(c_key, level[b[tie]] * span + s.plain_order[p[tie]])
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
    # grouped by category; a stable sort keeps each part's runs sorted by score
    plain = np.argsort(s.plain_cat.astype(np.int16 if n_cats < 2**15 else np.int64), kind="stable")
    bucket = _plain_buckets(s, cands, plain, n_cats)
    ok = bucket >= 0
    if not ok.any():
        return np.zeros((len(AREA_RANGES), len(MAX_DETS), len(cands)), np.int64)
    codes, code = _small_unique(s.plain_code[plain[ok]].astype(np.int64))
    n = len(cands)
    hist = np.bincount(code * n + bucket[ok], minlength=len(codes) * n).reshape(len(codes), n)
    bits, first_m = np.divmod(codes, len(MAX_DETS))
    counts = np.stack(
        [
            ((bits >> a) & 1 == 0)[:, None] & (first_m[:, None] <= np.arange(len(MAX_DETS)))
            for a in range(len(AREA_RANGES))
        ],
        axis=1,
    ).reshape(len(codes), -1)  # [codes, A * M]: does a plain detection of this code count there
    per = np.rint(counts.T.astype(np.float64) @ hist.astype(np.float64)).astype(np.int64)  # exact: small integers
    cum = np.zeros((per.shape[0], n + 1), np.int64)
    np.cumsum(per, axis=1, out=cum[:, 1:])
    return (cum[:, 1:] - cum[:, cat_first[s.cat[cands]]]).reshape(len(AREA_RANGES), len(MAX_DETS), n)


def _candidates(s: Scored, n_cats: int) -> _Candidates:
    cands = np.lexsort((s.order, -s.score, s.cat))
    cat = s.cat[cands]
    cat_first = np.searchsorted(cat, np.arange(n_cats))
    tp, ignored = (np.ascontiguousarray(f[cands].transpose(1, 2, 0)) for f in (s.tp, s.ignored))
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
