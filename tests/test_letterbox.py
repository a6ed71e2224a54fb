"""Letterbox geometry against an independent statement of Ultralytics' LetterBox rule."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.images import (
    PAD_VALUE,
    letterbox_geometry,
    letterbox_hwc,
    letterbox_xyxy,
    preprocess,
    unletterbox_xyxy,
)

SIZES = [(1280, 320), (320, 1280), (1, 1), (641, 479), (333, 500), (640, 640), (1921, 1079), (7, 3000), (259, 194)]


def ultralytics_rule(w: int, h: int, s: int) -> tuple[int, int, int, int]:
    """Ultralytics LetterBox(auto=False, scaleup=True, center=True): new_w, new_h, left, top."""
    r = min(s / h, s / w)
    new_w, new_h = round(w * r), round(h * r)
    dw, dh = (s - new_w) / 2, (s - new_h) / 2
    return new_w, new_h, round(dw - 0.1), round(dh - 0.1)


@pytest.mark.parametrize(("w", "h"), SIZES)
@pytest.mark.parametrize("s", [640, 320])
def test_geometry_matches_ultralytics_rule(w: int, h: int, s: int) -> None:
    m = letterbox_geometry(w, h, s)
    assert (m.new_w, m.new_h, m.pad_left, m.pad_top) == ultralytics_rule(w, h, s)
    assert m.pad_left + m.new_w <= s and m.pad_top + m.new_h <= s


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_inverse_mapping_is_exact(w: int, h: int) -> None:
    m = letterbox_geometry(w, h, 640)
    rng = np.random.default_rng(w * 7919 + h)
    x1 = rng.uniform(0, w, 50)
    y1 = rng.uniform(0, h, 50)
    boxes = np.stack([x1, y1, np.minimum(x1 + rng.uniform(0, w, 50), w), np.minimum(y1 + rng.uniform(0, h, 50), h)], 1)
    back = unletterbox_xyxy(letterbox_xyxy(boxes, m).astype(np.float32), m)
    np.testing.assert_allclose(back, boxes, atol=1e-4 * max(1.0, 1 / m.scale), rtol=2e-7)


def test_unletterbox_clips_to_image() -> None:
    m = letterbox_geometry(1280, 320, 640)
    out = unletterbox_xyxy(np.array([[-50.0, -50.0, 700.0, 700.0]], dtype=np.float32), m)
    assert out.tolist() == [[0.0, 0.0, 1280.0, 320.0]]


def test_padding_content_and_scaling() -> None:
    img = np.zeros((320, 1280, 3), np.uint8)
    img[..., 0] = 255
    canvas, m = letterbox_hwc(img, 640)
    assert (m.new_w, m.new_h, m.pad_top) == (640, 160, 240)
    assert (canvas[:240] == PAD_VALUE).all() and (canvas[400:] == PAD_VALUE).all()
    assert (canvas[240:400, :, 0] == 255).all() and (canvas[240:400, :, 1] == 0).all()
    chw, _ = preprocess(img, 640)
    assert chw.dtype == np.float32 and chw.shape == (3, 640, 640)
    assert chw[0, 300, 10] == 1.0 and chw[1, 0, 0] == np.float32(114 / 255)


def test_one_pixel_image() -> None:
    canvas, m = letterbox_hwc(np.full((1, 1, 3), 7, np.uint8), 640)
    assert (m.new_w, m.new_h, m.pad_left, m.pad_top) == (640, 640, 0, 0)
    assert (canvas == 7).all()
