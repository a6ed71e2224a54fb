"""Each YOLOv10 decoder on hand-built tensors whose boxes are known."""

from __future__ import annotations

import numpy as np
import pytest

from common.core.errors import UserError
from common.model.yolov10 import PostprocessOptions, check_layout, decode, detect_layout

OPTS = PostprocessOptions(conf=0.25, iou=0.7, max_det=300, pre_nms_topk=30000)


def dfl_output(entries: list[tuple[int, int, int, tuple[int, int, int, int], int, float]]) -> np.ndarray:
    """[144, 8400] with sharp DFL bins. entry = (stride, gx, gy, (l, t, r, b) bins, class, logit)."""
    out = np.full((144, 8400), -30.0, dtype=np.float32)
    out[:64] = 0.0
    base = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}
    for stride, gx, gy, bins, cls, logit in entries:
        idx = base[stride] + gy * (640 // stride) + gx
        for side, b in enumerate(bins):
            out[side * 16 : side * 16 + 16, idx] = -60.0
            out[side * 16 + b, idx] = 60.0
        out[64 + cls, idx] = logit
    return out


def test_dfl144_known_boxes() -> None:
    out = dfl_output([(8, 10, 5, (2, 3, 4, 5), 7, 5.0), (32, 3, 19, (1, 0, 2, 0), 0, 2.0)])
    det = decode(out, "dfl144", (640, 640), OPTS)
    # anchor (10.5*8, 5.5*8) = (84, 44); distances * 8 = (16, 24, 32, 40)
    # anchor (3.5*32, 19.5*32) = (112, 624); distances * 32 = (32, 0, 64, 0)
    np.testing.assert_allclose(det.boxes, [[68, 20, 116, 84], [80, 624, 176, 624]], atol=1e-3)
    np.testing.assert_allclose(det.scores, [1 / (1 + np.exp(-5.0)), 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    assert det.classes.tolist() == [7, 0]


def test_dfl144_anchor_count_mismatch_is_a_user_error() -> None:
    with pytest.raises(UserError, match="anchors"):
        decode(np.zeros((144, 8400), np.float32) + 5, "dfl144", (320, 320), OPTS)


def test_raw84_known_boxes_and_nms() -> None:
    out = np.zeros((84, 8400), dtype=np.float32)
    # two overlapping boxes of class 3 (the weaker one is suppressed) and one of class 5
    for a, (cx, cy, w, h, cls, s) in enumerate(
        [(100, 100, 40, 20, 3, 0.9), (101, 100, 40, 20, 3, 0.8), (100, 100, 40, 20, 5, 0.6)]
    ):
        out[:4, a] = (cx, cy, w, h)
        out[4 + cls, a] = s
    det = decode(out, "raw84", (640, 640), OPTS)
    np.testing.assert_allclose(det.boxes, [[80, 90, 120, 110], [80, 90, 120, 110]])
    np.testing.assert_allclose(det.scores, [0.9, 0.6])
    assert det.classes.tolist() == [3, 5]


def test_e2e_conf_filter_and_max_det() -> None:
    rows = np.array([[1, 2, 3, 4, 0.9, 2], [5, 6, 7, 8, 0.5, 1], [0, 0, 1, 1, 0.1, 0], [9, 9, 10, 10, 0.3, 4]])
    det = decode(rows.astype(np.float32), "e2e", (640, 640), PostprocessOptions(conf=0.25, max_det=2))
    assert det.boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert det.classes.tolist() == [2, 1]


@pytest.mark.parametrize(
    ("shape", "layout"), [((1, 144, 8400), "dfl144"), ((1, 84, 8400), "raw84"), ((4, 300, 6), "e2e")]
)
def test_detect_layout(shape: tuple[int, ...], layout: str) -> None:
    assert detect_layout(shape) == layout


def test_unknown_layout_and_contradicting_override() -> None:
    with pytest.raises(UserError, match="--output-format"):
        detect_layout((1, 100, 8400))
    with pytest.raises(UserError, match="dfl144"):
        check_layout("dfl144", (1, 84, 8400))


def _dfl144_and_equivalent_raw84(seed: int, n_saturated: int) -> tuple[np.ndarray, np.ndarray]:
    """A dfl144 tensor with many class logits above 18 (float32 sigmoid == 1.0) and the raw84 tensor
    of the same prediction: boxes decoded from the DFL bins, scores the float32 sigmoid of the logits
    (computed in float64, rounded once)."""
    from common.model.yolov10 import dfl_distances, make_anchors

    rng = np.random.default_rng(seed)
    dfl = np.full((144, 8400), -20.0, dtype=np.float32)
    dfl[:64] = rng.normal(0, 2, size=(64, 8400)).astype(np.float32)
    hot = rng.choice(8400, size=n_saturated + 50, replace=False)
    # saturated logits (18..40) in random order over anchors, plus unsaturated ones (2..6)
    dfl[64 + rng.integers(0, 80, size=hot.size), hot] = np.concatenate(
        [rng.uniform(18, 40, n_saturated), rng.uniform(2, 6, 50)]
    ).astype(np.float32)
    points, strides = make_anchors(640, 640)
    dist = dfl_distances(dfl[:64]) * strides
    x1, y1 = points[:, 0] - dist[0], points[:, 1] - dist[1]
    x2, y2 = points[:, 0] + dist[2], points[:, 1] + dist[3]
    raw = np.empty((84, 8400), dtype=np.float32)
    raw[0], raw[1], raw[2], raw[3] = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    raw[4:] = (1.0 / (1.0 + np.exp(-dfl[64:].astype(np.float64)))).astype(np.float32)  # correctly rounded
    return dfl, raw


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dfl144_ranks_saturated_scores_exactly_as_raw84(seed: int) -> None:
    """More saturated boxes than max_det: both layouts must keep the same boxes in the same order
    (ranked by the float32 score, equal scores in anchor order), not an order by logit."""
    dfl, raw = _dfl144_and_equivalent_raw84(seed, n_saturated=400)
    assert (raw[4:].max(axis=0) == 1.0).sum() >= 400  # the premise: scores really saturate
    opts = PostprocessOptions(conf=0.001, iou=0.7, max_det=300, pre_nms_topk=30000)
    a, b = decode(dfl, "dfl144", (640, 640), opts), decode(raw, "raw84", (640, 640), opts)
    assert len(a) == len(b) == 300
    assert a.classes.tolist() == b.classes.tolist()
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    # and with a pre-NMS top-k that cuts inside the saturated run
    opts = PostprocessOptions(conf=0.001, iou=0.7, max_det=300, pre_nms_topk=120)
    a, b = decode(dfl, "dfl144", (640, 640), opts), decode(raw, "raw84", (640, 640), opts)
    assert a.classes.tolist() == b.classes.tolist()
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_sigmoid_skip_rule_of_the_gpu_kernel_is_safe() -> None:
    """The GPU kernel finds a dfl144 anchor's class by checking only logits within 1 of the best one, above
    15 or below -90: a logit l in [-90, 15] must never round (float64 sigmoid, rounded to float32) to the
    same score as l + 1, or the skipped class could have held the best score first."""
    lo = np.arange(-90.0, 15.0, 1e-3, dtype=np.float32)
    sig = lambda x: (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)  # noqa: E731
    assert np.all(sig(lo) < sig(lo + np.float32(1.0)))
    assert sig(np.float32(18.0)) == 1.0  # and above 15 scores saturate: those are always checked
