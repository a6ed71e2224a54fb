"""The COCO layer: GT fed back scores 1.0, a shifted box scores less, id selection errors."""

from __future__ import annotations

import numpy as np
import pytest

from common.core.errors import UserError
from common.data.coco import COCO80_NAMES, STAT_NAMES, coco_rows, evaluate_bbox, rows_to_dicts, select_image_ids


def gt_as_detections(coco, ids, shift: float = 0.0) -> list[dict]:
    rows = []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=ids, iscrowd=False)):
        x, y, w, h = ann["bbox"]
        rows.append(
            {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": [x + shift, y, w, h], "score": 1.0}
        )
    return rows


def test_ground_truth_scores_one(mini_coco) -> None:
    ids = mini_coco.image_ids
    stats, table = evaluate_bbox(mini_coco.coco, gt_as_detections(mini_coco.coco, ids), ids)
    assert list(stats) == list(STAT_NAMES)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert "Average Precision" in table


def test_one_pixel_shift_lowers_ap(mini_coco) -> None:
    ids = mini_coco.image_ids
    stats, _ = evaluate_bbox(mini_coco.coco, gt_as_detections(mini_coco.coco, ids, shift=1.0), ids)
    assert 0.5 < stats["AP"] < 1.0


def test_no_detections_gives_zeros(mini_coco) -> None:
    stats, _ = evaluate_bbox(mini_coco.coco, [], mini_coco.image_ids)
    assert set(stats.values()) == {0.0}


def test_category_mapping_by_name(mini_coco) -> None:
    table = mini_coco.class_to_category
    assert len(table) == len(COCO80_NAMES) == 80
    cats = {c["name"]: c["id"] for c in mini_coco.coco.loadCats(mini_coco.coco.getCatIds())}
    assert table[0] == cats["person"] and table[79] == cats["toothbrush"] and table[15] == cats["cat"]
    rows = rows_to_dicts(
        coco_rows(np.array([7]), np.array([[1.0, 2.0, 11.0, 22.0]]), np.array([0.5]), np.array([15]), table)
    )
    assert rows == [{"image_id": 7, "category_id": cats["cat"], "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]


def test_id_list_selection(mini_coco, tmp_path) -> None:
    good = tmp_path / "ids.txt"
    good.write_text("# subset\n3\n1\n\n2\n")
    assert select_image_ids(mini_coco.coco, 0, good) == [3, 1, 2]
    assert select_image_ids(mini_coco.coco, None, good) == [3, 1, 2]  # the default --max-images does not cut a list
    assert select_image_ids(mini_coco.coco, 3, good) == [3, 1, 2]
    with pytest.raises(UserError, match=r"--max-images 2 would cut --image-ids-list"):
        select_image_ids(mini_coco.coco, 2, good)  # issue 12: a list was silently cut
    dup = tmp_path / "dup.txt"
    dup.write_text("3\n1\n3\n")
    assert select_image_ids(mini_coco.coco, None, dup) == [3, 1]  # duplicates counted once
    assert select_image_ids(mini_coco.coco, None) == sorted(mini_coco.coco.getImgIds())[:100]
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n999999\n")
    with pytest.raises(UserError, match="999999"):
        select_image_ids(mini_coco.coco, 0, bad)
