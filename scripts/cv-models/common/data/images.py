"""Image loading and the YOLO letterbox (and its inverse).

The letterbox matches Ultralytics' predict-time ``LetterBox`` for square export sizes:
scale = min(S/w, S/h) (up-scaling allowed); new size = round(w*scale), round(h*scale);
``cv2.INTER_LINEAR``; pad with 114; top/left padding = floor(total/2), the rest goes to
bottom/right. Boxes map back by removing the pad, dividing by the scale, clipping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.core.errors import UserError

__all__ = [
    "PAD_VALUE",
    "LetterboxMeta",
    "geometry_table",
    "letterbox_geometry",
    "letterbox_hwc",
    "letterbox_xyxy",
    "load_image_bgr",
    "load_image_rgb",
    "preprocess",
    "to_chw_float",
    "unletterbox_rows",
    "unletterbox_xyxy",
]

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxMeta:
    """How an original image was placed into the square network input."""

    orig_w: int
    orig_h: int
    scale: float
    pad_left: int
    pad_top: int
    new_w: int
    new_h: int


def load_image_rgb(path: str | os.PathLike[str], what: str = "") -> np.ndarray:
    """Read an image as RGB uint8 HWC; UserError naming the file when it can't be read."""
    return cv2.cvtColor(load_image_bgr(path, what), cv2.COLOR_BGR2RGB)


def load_image_bgr(path: str | os.PathLike[str], what: str = "") -> np.ndarray:
    """Read an image as OpenCV's BGR uint8 HWC; UserError naming the file when it can't be read."""
    p = Path(path)
    label = f" ({what})" if what else ""
    if not p.is_file():
        raise UserError(f"image not found: {p}{label}; check --images-dir / --data-root")
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise UserError(f"image unreadable or corrupt: {p}{label}")
    return img


def letterbox_geometry(w: int, h: int, size: int) -> LetterboxMeta:
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    scale = min(size / w, size / h)
    new_w = max(1, min(size, round(w * scale)))
    new_h = max(1, min(size, round(h * scale)))
    pad_w, pad_h = size - new_w, size - new_h
    return LetterboxMeta(w, h, scale, pad_w // 2, pad_h // 2, new_w, new_h)


def letterbox_hwc(img: np.ndarray, size: int) -> tuple[np.ndarray, LetterboxMeta]:
    """Resize + pad an HWC uint8 image into a ``size``x``size`` canvas (same channel order)."""
    h, w = img.shape[:2]
    meta = letterbox_geometry(w, h, size)
    if (meta.new_w, meta.new_h) != (w, h):
        img = cv2.resize(img, (meta.new_w, meta.new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, img.shape[2]), PAD_VALUE, dtype=np.uint8)
    canvas[meta.pad_top : meta.pad_top + meta.new_h, meta.pad_left : meta.pad_left + meta.new_w] = img
    return canvas, meta


def to_chw_float(img_hwc: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 HWC -> float32 CHW in [0, 1]; writes into ``out`` (a C-contiguous CHW view) when given."""
    chw = img_hwc.transpose(2, 0, 1)
    if out is None:
        out = np.empty(chw.shape, dtype=np.float32)
    np.divide(chw, np.float32(255.0), out=out, dtype=np.float32)  # division, as Ultralytics does
    return out


def preprocess(img_rgb: np.ndarray, size: int, out: np.ndarray | None = None) -> tuple[np.ndarray, LetterboxMeta]:
    """RGB uint8 HWC -> (float32 CHW letterboxed /255, meta)."""
    canvas, meta = letterbox_hwc(img_rgb, size)
    return to_chw_float(canvas, out), meta


def unletterbox_xyxy(boxes: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """Map [N,4] x1,y1,x2,y2 boxes from network-input pixels back to the original image."""
    return unletterbox_rows(boxes, geometry_table([meta]))


def geometry_table(metas: list[LetterboxMeta]) -> np.ndarray:
    """[B, 5] float32 per image: pad_left, pad_top, scale, orig_w, orig_h (for ``unletterbox_rows``)."""
    return np.array([(m.pad_left, m.pad_top, m.scale, m.orig_w, m.orig_h) for m in metas], np.float32).reshape(-1, 5)


def unletterbox_rows(boxes: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """``unletterbox_xyxy`` for many images at once: box i maps back with ``geometry[i]`` (a row of
    ``geometry_table``; one row applies to every box). float32 throughout, the same numbers per box."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    g = np.asarray(geometry, np.float32)
    out[:, [0, 2]] -= g[:, 0:1]
    out[:, [1, 3]] -= g[:, 1:2]
    out /= g[:, 2:3]
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, g[:, 3:4])
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, g[:, 4:5])
    return out


def letterbox_xyxy(boxes: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """Inverse of ``unletterbox_xyxy`` without clipping: original pixels -> network input pixels."""
    out = np.asarray(boxes, dtype=np.float64) * meta.scale
    out[:, [0, 2]] += meta.pad_left
    out[:, [1, 3]] += meta.pad_top
    return out
