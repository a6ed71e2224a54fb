"""Parity of one backend's results against a reference backend's: detections and raw tensors.

Detection parity (the verdict) works on the COCO results rows every evaluator writes
(``detections.json``), per image:

- candidates are paired one-to-one, greedily by descending IoU (pairs of two significant
  detections first), only within the same category and only at IoU >= ``iou`` (default 0.5);
- a detection is *significant* when its score is >= ``conf`` (default 0.25). Low-score
  detections still serve as partners, so a reference box at 0.26 whose counterpart scores
  0.24 is matched, not dropped;
- a pair counts as matched when either side is significant; a significant reference
  detection left unpaired is *dropped*, a significant test detection left unpaired is *extra*;
- ``matched_fraction = matched / (matched + dropped + extra)``; ``mean_iou`` and the
  ``|Δscore|`` statistics are over the matched pairs.

Tensor error (informational, in the manner of Polygraphy's comparator) is element-wise over
the raw model outputs of a few sample images: max/mean/median absolute error and max/mean
relative error ``|Δ| / |ref|`` over the elements where ``|ref| > 1e-6``. End-to-end heads
(``[B,K,6]``) rank near-tied rows differently across runtimes, so their raw rows need not
line up even when the detections agree: detection parity is the verdict there and everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.model.yolov10 import iou_matrix

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PRECISIONS",
    "REL_FLOOR",
    "ImageDets",
    "ImageParity",
    "TensorError",
    "Thresholds",
    "detection_parity",
    "group_by_image",
    "judge",
    "load_detections",
    "match_image",
    "parse_threshold_overrides",
    "tensor_error",
    "tensor_errors",
    "thresholds_for",
]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "fp8", "nvfp4")
REL_FLOOR = 1e-6


# ----------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    """A backend passes when all three hold."""

    min_matched: float  # matched_fraction >= this
    min_mean_iou: float  # mean IoU of the matched pairs >= this
    max_median_dscore: float  # median |Δscore| of the matched pairs <= this


# fp32 tight, fp16/bf16 looser, quantized loosest. The reference runs the same model file, so
# these bound runtime differences (kernels, TF32, fused Q/DQ), not the quantization loss.
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp32": Thresholds(min_matched=0.97, min_mean_iou=0.95, max_median_dscore=0.01),
    "fp16": Thresholds(min_matched=0.94, min_mean_iou=0.93, max_median_dscore=0.02),
    "bf16": Thresholds(min_matched=0.92, min_mean_iou=0.92, max_median_dscore=0.03),
    "int8": Thresholds(min_matched=0.85, min_mean_iou=0.88, max_median_dscore=0.05),
    "fp8": Thresholds(min_matched=0.85, min_mean_iou=0.88, max_median_dscore=0.05),
    "nvfp4": Thresholds(min_matched=0.80, min_mean_iou=0.85, max_median_dscore=0.07),
}


def parse_threshold_overrides(items: Sequence[str], flag: str) -> dict[str, float]:
    """``["0.9"]`` -> every precision; ``["int8=0.8", "fp32=0.99"]`` -> per precision."""
    out: dict[str, float] = {}
    for item in items:
        prec, eq, raw = item.rpartition("=")
        key = prec.strip().lower() if eq else "*"
        if eq and key not in PRECISIONS:
            raise UserError(f"{flag} {item!r}: precision must be one of {', '.join(PRECISIONS)}")
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{flag} {item!r}: expected a number or PRECISION=NUMBER, e.g. {flag} int8=0.8") from None
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{flag} {item!r}: must be a finite number >= 0")
        out[key] = value
    return out


def thresholds_for(
    precision: str,
    min_matched: Mapping[str, float] | None = None,
    min_mean_iou: Mapping[str, float] | None = None,
    max_median_dscore: Mapping[str, float] | None = None,
) -> Thresholds:
    base = DEFAULT_THRESHOLDS.get(precision, DEFAULT_THRESHOLDS["int8"])

    def pick(over: Mapping[str, float] | None, default: float) -> float:
        over = over or {}
        return float(over.get(precision, over.get("*", default)))

    return Thresholds(
        pick(min_matched, base.min_matched),
        pick(min_mean_iou, base.min_mean_iou),
        pick(max_median_dscore, base.max_median_dscore),
    )


def judge(summary: Mapping[str, Any], limits: Thresholds) -> list[str]:
    """The broken limits of a ``detection_parity`` summary, as short sentences (empty: pass)."""
    broken = []
    if summary["matched_fraction"] < limits.min_matched:
        broken.append(f"matched {summary['matched_fraction']:.4f} < {limits.min_matched}")
    if summary["matched"] and summary["mean_iou"] < limits.min_mean_iou:
        broken.append(f"mean IoU {summary['mean_iou']:.4f} < {limits.min_mean_iou}")
    if summary["matched"] and summary["median_abs_dscore"] > limits.max_median_dscore:
        broken.append(f"median |Δscore| {summary['median_abs_dscore']:.4f} > {limits.max_median_dscore}")
    return broken


# ----------------------------------------------------------------------------- detections


@dataclass
class ImageDets:
    boxes: np.ndarray  # [K,4] float64 xyxy
    scores: np.ndarray  # [K] float64
    cats: np.ndarray  # [K] int64 (COCO category ids)

    @staticmethod
    def empty() -> ImageDets:
        return ImageDets(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def group_by_image(rows: Iterable[Mapping[str, Any]]) -> dict[int, ImageDets]:
    """COCO results rows (bbox = x, y, w, h) -> per-image arrays (xyxy)."""
    buckets: dict[int, list[tuple[float, float, float, float, float, int]]] = {}
    for r in rows:
        x, y, w, h = r["bbox"]
        buckets.setdefault(int(r["image_id"]), []).append(
            (float(x), float(y), float(x) + float(w), float(y) + float(h), float(r["score"]), int(r["category_id"]))
        )
    out = {}
    for image_id, items in buckets.items():
        a = np.asarray(items, dtype=np.float64)
        out[image_id] = ImageDets(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))
    return out


def load_detections(path: str | Path) -> list[dict[str, Any]]:
    import json

    p = Path(path)
    try:
        rows = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"detections file not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{p} is not a readable COCO results JSON: {exc}") from exc
    if not isinstance(rows, list) or any(
        not isinstance(r, dict) or not {"image_id", "bbox", "score", "category_id"} <= set(r) for r in rows[:50]
    ):
        raise UserError(f"{p} is not a COCO results list (rows of image_id, category_id, bbox, score)")
    return rows


@dataclass
class ImageParity:
    image_id: int
    ref_significant: int
    test_significant: int
    matched: int
    dropped: int
    extra: int
    ious: list[float] = field(default_factory=list)
    dscores: list[float] = field(default_factory=list)

    @property
    def disagreement(self) -> int:
        return self.dropped + self.extra

    @property
    def matched_fraction(self) -> float:
        total = self.matched + self.dropped + self.extra
        return self.matched / total if total else 1.0

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else 1.0


def match_image(
    ref: ImageDets, test: ImageDets, iou: float = 0.5, conf: float = 0.25, image_id: int = 0
) -> ImageParity:
    """One-to-one greedy pairing (descending IoU, same category, IoU >= ``iou``); see the module doc."""
    ref_sig = ref.scores >= conf
    test_sig = test.scores >= conf
    ref_used = np.zeros(len(ref), bool)
    test_used = np.zeros(len(test), bool)
    ious: list[float] = []
    dscores: list[float] = []
    if len(ref) and len(test):
        m = iou_matrix(ref.boxes, test.boxes)
        m[ref.cats[:, None] != test.cats[None, :]] = 0.0
        # only pairs touching a significant detection matter
        relevant = (m >= iou) & (ref_sig[:, None] | test_sig[None, :])
        ri, ti = np.nonzero(relevant)
        # pairs of two significant detections first, then by IoU: a low-score duplicate never
        # takes the partner of a significant pair
        both = (ref_sig[ri] & test_sig[ti]).astype(np.int8)
        order = np.lexsort((ti, ri, -m[ri, ti], -both))
        for k in order:
            r, t = int(ri[k]), int(ti[k])
            if ref_used[r] or test_used[t]:
                continue
            ref_used[r] = test_used[t] = True
            ious.append(float(m[r, t]))
            dscores.append(abs(float(ref.scores[r]) - float(test.scores[t])))
    return ImageParity(
        image_id=int(image_id),
        ref_significant=int(ref_sig.sum()),
        test_significant=int(test_sig.sum()),
        matched=len(ious),
        dropped=int((ref_sig & ~ref_used).sum()),
        extra=int((test_sig & ~test_used).sum()),
        ious=ious,
        dscores=dscores,
    )


def detection_parity(
    ref_rows: Iterable[Mapping[str, Any]],
    test_rows: Iterable[Mapping[str, Any]],
    image_ids: Sequence[int] | None = None,
    iou: float = 0.5,
    conf: float = 0.25,
    worst: int = 5,
) -> dict[str, Any]:
    """Per-image matching of ``test_rows`` against ``ref_rows``; a JSON-ready summary.

    ``image_ids``: the images to compare (default: every image either side has rows for);
    an image without rows on one side counts its significant detections as dropped/extra.
    """
    ref = group_by_image(ref_rows)
    test = group_by_image(test_rows)
    ids = sorted(set(ref) | set(test)) if image_ids is None else [int(i) for i in image_ids]
    per = [
        match_image(ref.get(i, ImageDets.empty()), test.get(i, ImageDets.empty()), iou, conf, image_id=i) for i in ids
    ]
    matched = sum(p.matched for p in per)
    dropped = sum(p.dropped for p in per)
    extra = sum(p.extra for p in per)
    ious = np.asarray([v for p in per for v in p.ious], dtype=np.float64)
    ds = np.asarray([v for p in per for v in p.dscores], dtype=np.float64)
    total = matched + dropped + extra
    ranked = sorted(
        (p for p in per if p.disagreement or (p.ious and p.mean_iou < 0.999)),
        key=lambda p: (-p.disagreement, p.mean_iou, p.image_id),
    )
    return {
        "iou_threshold": iou,
        "score_threshold": conf,
        "images": len(ids),
        "ref_detections": sum(p.ref_significant for p in per),
        "test_detections": sum(p.test_significant for p in per),
        "matched": matched,
        "dropped": dropped,
        "extra": extra,
        "matched_fraction": matched / total if total else 1.0,
        "mean_iou": float(ious.mean()) if ious.size else 1.0,
        "min_iou": float(ious.min()) if ious.size else 1.0,
        "median_abs_dscore": float(np.median(ds)) if ds.size else 0.0,
        "p90_abs_dscore": float(np.percentile(ds, 90)) if ds.size else 0.0,
        "max_abs_dscore": float(ds.max()) if ds.size else 0.0,
        "images_with_disagreement": sum(1 for p in per if p.disagreement),
        "worst_images": [
            {
                "image_id": p.image_id,
                "ref": p.ref_significant,
                "test": p.test_significant,
                "matched": p.matched,
                "dropped": p.dropped,
                "extra": p.extra,
                "mean_iou": round(p.mean_iou, 4),
            }
            for p in ranked[: max(0, worst)]
        ],
    }


# ----------------------------------------------------------------------------- raw tensors


@dataclass
class TensorError:
    name: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    mean_rel: float
    ref_max_abs: float  # scale of the reference values, to read the absolute errors against
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tensor_error(name: str, ref: np.ndarray, test: np.ndarray) -> TensorError:
    """Element-wise error of ``test`` against ``ref`` (Polygraphy-style absolute and relative)."""
    if ref.shape != test.shape:
        nan = float("nan")
        return TensorError(
            name,
            list(ref.shape),
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            note=f"shape {list(test.shape)} != reference {list(ref.shape)}",
        )
    r = ref.astype(np.float64).ravel()
    t = test.astype(np.float64).ravel()
    if r.size == 0:
        return TensorError(name, list(ref.shape), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, note="empty")
    diff = np.abs(t - r)
    finite = np.isfinite(diff)
    note = "" if finite.all() else f"{int((~finite).sum())} non-finite element(s) ignored"
    diff_f = diff[finite]
    mag = np.abs(r[finite])
    keep = mag > REL_FLOOR
    rel = diff_f[keep] / mag[keep]
    return TensorError(
        name=name,
        shape=list(ref.shape),
        max_abs=float(diff_f.max()) if diff_f.size else float("nan"),
        mean_abs=float(diff_f.mean()) if diff_f.size else float("nan"),
        median_abs=float(np.median(diff_f)) if diff_f.size else float("nan"),
        max_rel=float(rel.max()) if rel.size else 0.0,
        mean_rel=float(rel.mean()) if rel.size else 0.0,
        ref_max_abs=float(mag.max()) if mag.size else 0.0,
        note=note,
    )


def tensor_errors(ref: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per output name present in the reference; missing outputs are reported, not raised."""
    out = []
    for name, arr in ref.items():
        if name not in test:
            out.append({"name": name, "note": "output missing from this backend"})
            continue
        out.append(tensor_error(name, arr, test[name]).to_dict())
    return out
