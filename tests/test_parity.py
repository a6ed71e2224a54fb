"""common.report.parity: per-image detection matching, thresholds and Polygraphy-style tensor error.

Expected values come from geometry worked out here, never from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from common.core.errors import UserError
from common.report.parity import (
    DEFAULT_THRESHOLDS,
    detection_parity,
    judge,
    parse_threshold_overrides,
    tensor_error,
    tensor_errors,
    thresholds_for,
)


def _row(image_id: int, x: float, y: float, w: float, h: float, score: float, cat: int = 1) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": [x, y, w, h], "score": score}


def _scene(seed: int = 0, images: int = 4, per_image: int = 6) -> list[dict]:
    """Well separated boxes (a grid), scores in [0.3, 0.95], two categories."""
    rng = np.random.default_rng(seed)
    rows = []
    for img in range(1, images + 1):
        for k in range(per_image):
            x, y = 100.0 * (k % 3), 100.0 * (k // 3)
            rows.append(
                _row(
                    img,
                    x + 5,
                    y + 5,
                    40 + rng.integers(0, 20),
                    30 + rng.integers(0, 20),
                    float(rng.uniform(0.3, 0.95)),
                    cat=1 + k % 2,
                )
            )
    return rows


def test_identical_outputs_match_completely():
    rows = _scene()
    s = detection_parity(rows, [dict(r) for r in rows])
    assert s["matched"] == len(rows) and s["dropped"] == 0 and s["extra"] == 0
    assert s["matched_fraction"] == 1.0 and s["mean_iou"] == pytest.approx(1.0)
    assert s["median_abs_dscore"] == 0.0 and s["worst_images"] == []


@pytest.mark.parametrize("dx", [1.0, 3.0, 7.5])
def test_shifted_boxes_give_the_geometric_iou(dx):
    w, h = 40.0, 30.0
    ref = [_row(1, 10, 10, w, h, 0.9), _row(2, 200, 50, w, h, 0.8)]
    test = [_row(1, 10 + dx, 10, w, h, 0.9), _row(2, 200 + dx, 50, w, h, 0.8)]
    inter = (w - dx) * h
    expected = inter / (2 * w * h - inter)
    s = detection_parity(ref, test)
    assert s["matched"] == 2 and s["matched_fraction"] == 1.0
    assert s["mean_iou"] == pytest.approx(expected, abs=1e-9)
    assert s["min_iou"] == pytest.approx(expected, abs=1e-9)


def test_shift_beyond_the_iou_threshold_is_dropped_and_extra():
    w = h = 40.0
    dx = 25.0  # IoU = 15*40 / (2*1600 - 600) = 0.23 < 0.5
    s = detection_parity([_row(1, 0, 0, w, h, 0.9)], [_row(1, dx, 0, w, h, 0.9)])
    assert (s["matched"], s["dropped"], s["extra"]) == (0, 1, 1)
    assert s["matched_fraction"] == 0.0


def test_a_dropped_detection_is_counted_and_its_image_is_worst():
    rows = _scene(images=3, per_image=5)
    test = [dict(r) for r in rows]
    victim = next(i for i, r in enumerate(test) if r["image_id"] == 2)
    del test[victim]
    s = detection_parity(rows, test)
    n = len(rows)
    assert s["dropped"] == 1 and s["extra"] == 0 and s["matched"] == n - 1
    assert s["matched_fraction"] == pytest.approx((n - 1) / n)
    assert s["worst_images"][0]["image_id"] == 2 and s["worst_images"][0]["dropped"] == 1
    assert s["images_with_disagreement"] == 1


def test_an_extra_detection_and_a_class_change_are_counted():
    ref = [_row(1, 0, 0, 50, 50, 0.9, cat=1), _row(1, 100, 100, 50, 50, 0.8, cat=3)]
    test = [_row(1, 0, 0, 50, 50, 0.9, cat=1), _row(1, 100, 100, 50, 50, 0.8, cat=4), _row(1, 300, 0, 20, 20, 0.7)]
    s = detection_parity(ref, test)
    # the class change is one dropped + one extra; the new box one more extra
    assert (s["matched"], s["dropped"], s["extra"]) == (1, 1, 2)
    assert s["matched_fraction"] == pytest.approx(1 / 4)


def test_score_just_below_the_parity_threshold_still_partners():
    s = detection_parity([_row(1, 0, 0, 50, 50, 0.26)], [_row(1, 0, 0, 50, 50, 0.24)], conf=0.25)
    assert (s["matched"], s["dropped"], s["extra"]) == (1, 0, 0)
    assert s["median_abs_dscore"] == pytest.approx(0.02)
    # two low-score detections do not count at all
    s = detection_parity([_row(1, 0, 0, 50, 50, 0.1)], [], conf=0.25)
    assert (s["matched"], s["dropped"], s["extra"], s["matched_fraction"]) == (0, 0, 0, 1.0)


def test_low_score_duplicate_does_not_steal_the_partner():
    ref = [_row(1, 0, 0, 50, 50, 0.9)]
    # the low-score test box overlaps the reference slightly more than the significant one
    test = [_row(1, 1, 0, 50, 50, 0.85), _row(1, 0, 0, 50, 50, 0.05)]
    s = detection_parity(ref, test)
    assert (s["matched"], s["dropped"], s["extra"]) == (1, 0, 0)
    assert s["median_abs_dscore"] == pytest.approx(0.05)


def test_images_missing_on_one_side_count():
    ref = [_row(1, 0, 0, 10, 10, 0.9), _row(2, 0, 0, 10, 10, 0.9)]
    s = detection_parity(ref, [_row(1, 0, 0, 10, 10, 0.9)], image_ids=[1, 2, 3])
    assert s["images"] == 3 and s["dropped"] == 1 and s["worst_images"][0]["image_id"] == 2


def test_thresholds_defaults_get_looser_with_precision_and_flags_override():
    fp32, fp16, int8 = (DEFAULT_THRESHOLDS[p] for p in ("fp32", "fp16", "int8"))
    assert fp32.min_matched > fp16.min_matched > int8.min_matched
    assert fp32.max_median_dscore < fp16.max_median_dscore < int8.max_median_dscore
    over = parse_threshold_overrides(["0.5", "int8=0.7"], "--min-matched")
    assert thresholds_for("int8", min_matched=over).min_matched == 0.7
    assert thresholds_for("fp16", min_matched=over).min_matched == 0.5
    assert thresholds_for("fp32").min_matched == fp32.min_matched
    for bad in ("int9=0.5", "abc", "fp32=-1"):
        with pytest.raises(UserError, match="--min-matched"):
            parse_threshold_overrides([bad], "--min-matched")


def test_judge_names_each_broken_limit():
    limits = thresholds_for("fp32")
    good = {"matched_fraction": 1.0, "matched": 10, "mean_iou": 0.999, "median_abs_dscore": 0.0}
    assert judge(good, limits) == []
    bad = {"matched_fraction": 0.5, "matched": 10, "mean_iou": 0.5, "median_abs_dscore": 0.5}
    broken = judge(bad, limits)
    assert len(broken) == 3 and any("matched" in b for b in broken) and any("IoU" in b for b in broken)


def test_tensor_error_abs_and_rel():
    ref = np.array([[1.0, 2.0, 4.0, 0.0]], np.float32)
    test = np.array([[1.0, 2.5, 3.0, 0.1]], np.float32)
    e = tensor_error("y", ref, test)
    assert e.max_abs == pytest.approx(1.0)
    assert e.mean_abs == pytest.approx((0 + 0.5 + 1.0 + 0.1) / 4, rel=1e-6)
    assert e.max_rel == pytest.approx(0.25)  # 0.5/2 and 1/4; the zero reference is left out of rel
    assert e.mean_rel == pytest.approx((0 + 0.25 + 0.25) / 3)
    assert e.ref_max_abs == 4.0
    mismatch = tensor_error("y", ref, ref[:, :2])
    assert "shape" in mismatch.note and np.isnan(mismatch.max_abs)
    rows = tensor_errors({"a": ref, "b": ref}, {"a": ref})
    assert rows[0]["max_abs"] == 0.0 and "missing" in rows[1]["note"]
