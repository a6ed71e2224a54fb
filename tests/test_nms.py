"""Class-aware greedy NMS: edge cases, ties, and the fast path against the plain definition."""

from __future__ import annotations

import numpy as np
import pytest

from common.model.yolov10 import greedy_nms_indices, greedy_nms_reference


def test_empty() -> None:
    assert greedy_nms_indices(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0.7, 300).size == 0


def test_all_suppressed_but_the_first() -> None:
    boxes = np.tile(np.array([[10, 10, 50, 50]], np.float32), (20, 1))
    assert greedy_nms_indices(boxes, np.zeros(20, np.int64), 0.5, 300).tolist() == [0]


def test_classes_are_independent() -> None:
    boxes = np.tile(np.array([[10, 10, 50, 50]], np.float32), (4, 1))
    assert greedy_nms_indices(boxes, np.array([0, 1, 0, 2]), 0.5, 300).tolist() == [0, 1, 3]


def test_ties_keep_input_order() -> None:
    # identical boxes with equal rank: the first one in input order wins
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [100, 100, 110, 110]], np.float32)
    assert greedy_nms_indices(boxes, np.zeros(3, np.int64), 0.5, 300).tolist() == [0, 2]


def test_iou_threshold_is_strict() -> None:
    # IoU exactly 0.5 is kept (suppression needs IoU > threshold)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    assert greedy_nms_indices(boxes, np.zeros(2, np.int64), 0.5, 300).tolist() == [0, 1]
    assert greedy_nms_indices(boxes, np.zeros(2, np.int64), 0.49, 300).tolist() == [0]


def test_max_det_caps_the_output() -> None:
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], np.float32)
    assert greedy_nms_indices(boxes, np.zeros(10, np.int64), 0.5, 4).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", range(40))
def test_blocked_fast_path_equals_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 900))
    xy = rng.uniform(0, 300, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 90, (n, 2))], 1).astype(np.float32)
    boxes[rng.integers(0, n, n // 4)] = boxes[0]  # exact duplicates -> ties
    classes = rng.integers(0, 4, n)
    max_det = int(rng.integers(1, 400))
    iou = float(rng.uniform(0.3, 0.8))
    fast = greedy_nms_indices(boxes, classes, iou, max_det, block=int(rng.integers(1, 300)))
    assert fast.tolist() == greedy_nms_reference(boxes, classes, iou, max_det).tolist()
