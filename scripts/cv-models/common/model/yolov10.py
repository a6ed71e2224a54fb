"""YOLOv10 output layouts, their decoders, and class-aware greedy NMS.

Layouts (``B`` = batch, ``nc`` = number of classes, 80 for COCO):

- ``dfl144``: ``[B, 64+nc, A]`` -- per anchor 4 sides x 16 DFL bin logits, then nc class
  logits (pre-sigmoid). A = sum over strides 8/16/32 of (H/s)*(W/s) (8400 at 640).
- ``raw84``: ``[B, 4+nc, A]`` -- cx, cy, w, h in letterbox pixels, then nc sigmoid scores.
- ``e2e``:   ``[B, K, 6]`` -- x1, y1, x2, y2 (letterbox pixels), score, class; already
  top-k'd inside the graph (YOLOv10 one-to-one head): no NMS.

All decoders return, per image, ``Detections`` in letterbox pixels, sorted by score.

Ranking rule, the same for every layout (and the one Ultralytics applies): candidates are
ranked by their float32 score -- for dfl144 the float32 sigmoid of the class logits, so a
dfl144 graph and the raw84 graph of the same weights keep the same boxes even where scores
saturate to 1.0 -- with a stable descending sort (equal scores keep anchor order), the best
class is the first class holding the best score, pre-NMS top-k cuts that ranked list, and NMS
keeps its order.

dfl144's two transcendental steps (the class sigmoid and the DFL softmax) run in float64 and are
rounded to float32 once, with the 16 bins summed in order: float32 ``exp`` differs by an ulp
between NumPy's SIMD code and CUDA's ``expf``, while after float64 and one rounding any two
faithful ``exp`` implementations give the same float32 result, so the GPU post-processing
(``common.throughput.gpu_postprocess``) returns these detections bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from common.core.errors import UserError

__all__ = [
    "DFL_BINS",
    "LAYOUTS",
    "STRIDES",
    "Detections",
    "Layout",
    "PostprocessOptions",
    "anchors_for",
    "check_layout",
    "decode",
    "decode_dfl144",
    "decode_e2e",
    "decode_raw84",
    "detect_layout",
    "dfl_distances",
    "find_head",
    "greedy_nms_indices",
    "greedy_nms_reference",
    "iou_matrix",
    "make_anchors",
    "nms_sorted",
    "sigmoid_f32",
]

Layout = Literal["dfl144", "raw84", "e2e"]
LAYOUTS: tuple[str, ...] = ("dfl144", "raw84", "e2e")
STRIDES: tuple[int, ...] = (8, 16, 32)
DFL_BINS = 16


@dataclass(frozen=True)
class PostprocessOptions:
    conf: float = 0.001
    iou: float = 0.7
    max_det: int = 300
    pre_nms_topk: int = 30000


@dataclass
class Detections:
    boxes: np.ndarray  # [K, 4] float32 x1, y1, x2, y2
    scores: np.ndarray  # [K] float32
    classes: np.ndarray  # [K] int64

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def detect_layout(shape: tuple[int | None, ...], num_classes: int = 80) -> Layout:
    """Infer the output layout from an output shape; UserError when it fits none."""
    dims = tuple(shape)
    if len(dims) == 3:
        if dims[2] == 6:
            return "e2e"
        if dims[1] == 4 * DFL_BINS + num_classes:
            return "dfl144"
        if dims[1] == 4 + num_classes:
            return "raw84"
    raise UserError(
        f"cannot tell the YOLOv10 output layout from output shape {list(dims)}; expected [B,144,A] (dfl144), "
        "[B,84,A] (raw84) or [B,K,6] (e2e); pass --output-format explicitly"
    )


def _looks_like(layout: str, shape: Sequence[int | None]) -> bool:
    try:
        if layout == "auto":
            detect_layout(tuple(shape))
        else:
            check_layout(layout, tuple(shape))
    except UserError:
        return False
    return True


def find_head(
    outputs: Sequence[tuple[str, Sequence[int | None]]], layout: str = "auto", name: str | None = None
) -> int:
    """Which of a model's outputs (name, shape) is the YOLOv10 detection head: the one ``name`` names, the
    only one, or the only one shaped like ``layout`` (``auto``: any layout). UserError listing every output
    and the ``--output-name`` flag when that is not one output."""
    listing = "; ".join(f"{n} {list(s)}" for n, s in outputs)
    names = [n for n, _ in outputs]
    if name is not None:
        if name not in names:
            raise UserError(f"--output-name {name}: the model has no such output; its outputs: {listing}")
        shape = outputs[names.index(name)][1]
        if len(shape) != 3 or (None not in shape and not _looks_like(layout, shape)):
            raise UserError(
                f"--output-name {name} is {list(shape)}, not a YOLOv10 detection head ([B,144,A], [B,84,A] or "
                f"[B,K,6]); the model's outputs: {listing}"
            )
        return names.index(name)
    if len(outputs) == 1:
        return 0  # its layout is checked against the first batch's output
    fits = [i for i, (_, shape) in enumerate(outputs) if _looks_like(layout, shape)]
    if len(fits) == 1:
        return fits[0]
    which = "none looks" if not fits else f"{len(fits)} look"
    raise UserError(
        f"the model has {len(outputs)} outputs ({listing}) and {which} like a YOLOv10 detection head "
        "([B,144,A], [B,84,A] or [B,K,6]); pass --output-name NAME to choose one"
    )


def check_layout(layout: str, shape: tuple[int | None, ...], num_classes: int = 80) -> None:
    """UserError when an explicit --output-format contradicts the output shape."""
    want = {"dfl144": 4 * DFL_BINS + num_classes, "raw84": 4 + num_classes}
    if len(shape) != 3:
        raise UserError(f"--output-format {layout} needs a rank-3 output, the model gives {list(shape)}")
    if layout == "e2e" and shape[2] not in (6, None):
        raise UserError(f"--output-format e2e needs an output [B,K,6], the model gives {list(shape)}")
    if layout in want and shape[1] not in (want[layout], None):
        raise UserError(f"--output-format {layout} needs [B,{want[layout]},A], the model gives {list(shape)}")


def make_anchors(h: int, w: int, strides: tuple[int, ...] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres ((x+0.5)*s, (y+0.5)*s) row-major per stride, and the stride per anchor."""
    points, stride_col = [], []
    for s in strides:
        gh, gw = h // s, w // s
        ys, xs = np.meshgrid(
            np.arange(gh, dtype=np.float32) + 0.5, np.arange(gw, dtype=np.float32) + 0.5, indexing="ij"
        )
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=1) * s)
        stride_col.append(np.full(gh * gw, s, dtype=np.float32))
    return np.concatenate(points), np.concatenate(stride_col)


_ANCHOR_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def anchors_for(h: int, w: int, num_anchors: int) -> tuple[np.ndarray, np.ndarray]:
    key = (h, w)
    if key not in _ANCHOR_CACHE:
        _ANCHOR_CACHE[key] = make_anchors(h, w)
    points, strides = _ANCHOR_CACHE[key]
    if points.shape[0] != num_anchors:
        raise UserError(
            f"model output has {num_anchors} anchors but a {w}x{h} input gives {points.shape[0]} "
            "(strides 8/16/32); check --imgsz against the model"
        )
    return points, strides


def dfl_distances(logits: np.ndarray) -> np.ndarray:
    """[4*16, K] DFL logits -> [4, K] expected bin index (softmax expectation), float64.

    float64 throughout, the bins summed in order 0..15; callers round once to float32 (after the stride)."""
    x = logits.reshape(4, DFL_BINS, -1).astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    num = np.zeros_like(e[:, 0])
    den = np.zeros_like(e[:, 0])
    for j in range(DFL_BINS):
        num = num + e[:, j] * float(j)
        den = den + e[:, j]
    return num / den


def sigmoid_f32(x: np.ndarray) -> np.ndarray:
    """float32 sigmoid computed in float64 and rounded once (the same on every faithful ``exp``)."""
    with np.errstate(over="ignore"):  # exp(-x) -> inf for very negative logits: 1 / inf = 0, as wanted
        return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


def _select(key: np.ndarray, keep: np.ndarray, topk: int) -> np.ndarray:
    """Indices of ``keep`` sorted by ``key`` descending (stable), truncated to topk."""
    idx = np.flatnonzero(keep)
    order = np.argsort(-key[idx], kind="stable")
    return idx[order[:topk]]


def _best_class(scores: np.ndarray, threshold: float, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchors whose best class score >= threshold, ranked best first (stable), and their classes.

    The max over classes is a fast row reduction; argmax (slow along axis 0) runs only on
    the anchors that pass.
    """
    best_score = scores.max(axis=0)
    idx = _select(best_score, best_score >= threshold, topk)
    return idx, scores[:, idx].argmax(axis=0).astype(np.int64)


def decode_dfl144(out: np.ndarray, input_hw: tuple[int, int], opts: PostprocessOptions) -> Detections:
    """One image's ``[64+nc, A]`` output -> NMS'd detections (ranked as raw84: by float32 score)."""
    nc = out.shape[0] - 4 * DFL_BINS
    if nc <= 0:
        return Detections.empty()
    cls_logits = out[4 * DFL_BINS :]
    # Prefilter on the logit (cheap, no exp over every anchor): sigmoid is monotone, so
    # sigmoid(logit) >= conf needs logit >= log(conf / (1 - conf)); the margin keeps every
    # anchor whose float32 score could still round up to conf. The exact test is on the score.
    conf = min(max(opts.conf, 1e-12), 1 - 1e-7)
    loose = float(np.log(conf / (1 - conf))) - 1e-3
    best_logit = cls_logits.max(axis=0)
    cand = np.flatnonzero(best_logit >= loose)
    if cand.size == 0:
        return Detections.empty()
    # sigmoid and rounding are monotone: the best class score is the rounded sigmoid of the best logit
    scores = sigmoid_f32(best_logit[cand])
    keep = scores >= opts.conf
    cand, scores = cand[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[: opts.pre_nms_topk]
    idx, scores = cand[order], scores[order]
    if idx.size == 0:
        return Detections.empty()
    # the first class holding the best (rounded) score, as a raw84 graph's float32 scores would rank them
    best = sigmoid_f32(cls_logits[:, idx]).argmax(axis=0).astype(np.int64)
    points, strides = anchors_for(input_hw[0], input_hw[1], out.shape[1])
    dist = (dfl_distances(out[: 4 * DFL_BINS, idx]) * strides[idx]).astype(np.float32)
    p = points[idx]
    boxes = np.stack([p[:, 0] - dist[0], p[:, 1] - dist[1], p[:, 0] + dist[2], p[:, 1] + dist[3]], axis=1)
    return nms_sorted(boxes.astype(np.float32), scores, best, opts)


def decode_raw84(out: np.ndarray, opts: PostprocessOptions) -> Detections:
    """One image's ``[4+nc, A]`` output -> NMS'd detections."""
    idx, best = _best_class(out[4:], opts.conf, opts.pre_nms_topk)
    if idx.size == 0:
        return Detections.empty()
    scores = out[4 + best, idx].astype(np.float32)
    cx, cy, w, h = (out[i, idx].astype(np.float32) for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return nms_sorted(boxes, scores, best, opts)


def decode_e2e(out: np.ndarray, opts: PostprocessOptions) -> Detections:
    """One image's ``[K, 6]`` end-to-end output -> conf filter + max_det (no NMS)."""
    rows = out[out[:, 4] >= opts.conf][: opts.max_det]
    return Detections(rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32), rows[:, 5].astype(np.int64))


def decode(out: np.ndarray, layout: str, input_hw: tuple[int, int], opts: PostprocessOptions) -> Detections:
    """Decode one image's output (batch axis removed)."""
    if layout == "dfl144":
        return decode_dfl144(out, input_hw, opts)
    if layout == "raw84":
        return decode_raw84(out, opts)
    if layout == "e2e":
        return decode_e2e(out, opts)
    raise ValueError(f"unknown layout {layout!r}")


def nms_sorted(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, opts: PostprocessOptions) -> Detections:
    """Class-aware greedy NMS over candidates already sorted best-first; keeps at most max_det."""
    keep = greedy_nms_indices(boxes, classes, opts.iou, opts.max_det)
    return Detections(boxes[keep], scores[keep], classes[keep])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [M,4] with every box in ``b`` [N,4] (float64, xyxy)."""
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    inter = iw * ih
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def greedy_nms_indices(boxes: np.ndarray, classes: np.ndarray, iou: float, max_det: int, block: int = 64) -> np.ndarray:
    """Indices kept by class-aware greedy NMS, in input (best-first) order, at most max_det.

    Blocked greedy: candidates are taken ``block`` at a time; a block is first checked
    against the boxes kept so far (one IoU matrix), then resolved exactly inside itself.
    It stops as soon as max_det boxes are kept, so its cost follows the kept count, not
    the candidate count. Equals ``greedy_nms_reference`` (tested).
    """
    n = boxes.shape[0]
    if n == 0 or max_det <= 0:
        return np.zeros(0, dtype=np.int64)
    b = boxes.astype(np.float64)
    cls = np.asarray(classes)
    kept: list[int] = []
    for start in range(0, n, block):
        live = np.arange(start, min(n, start + block))
        if kept:
            k = np.asarray(kept)
            hit = (iou_matrix(b[k], b[live]) > iou) & (cls[k][:, None] == cls[live][None, :])
            live = live[~hit.any(axis=0)]
        if live.size == 0:
            continue
        over = (iou_matrix(b[live], b[live]) > iou) & (cls[live][:, None] == cls[live][None, :])
        over = np.triu(over, k=1)
        alive = np.ones(live.size, dtype=bool)
        for i in range(live.size):
            if not alive[i]:
                continue
            kept.append(int(live[i]))
            if len(kept) >= max_det:
                return np.asarray(kept, dtype=np.int64)
            alive &= ~over[i]
    return np.asarray(kept, dtype=np.int64)


def greedy_nms_reference(boxes: np.ndarray, classes: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Plain NumPy greedy NMS (the definition); used by tests to check the fast path."""
    order = list(range(boxes.shape[0]))
    b = boxes.astype(np.float64)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    kept: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        if len(kept) >= max_det:
            break
        rest = np.arange(i + 1, len(order))
        rest = rest[~suppressed[rest] & (classes[rest] == classes[i])]
        if rest.size == 0:
            continue
        iw = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
        ih = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        ious = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        suppressed[rest[ious > iou]] = True
    return np.asarray(kept, dtype=np.int64)
