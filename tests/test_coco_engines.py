"""faster-coco-eval is used only because it gives pycocotools' 12 stats (to 1e-6) on our fixtures."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import fixture_path

from common.data.coco import STAT_NAMES, evaluate_bbox, load_coco

pytest.importorskip("faster_coco_eval")

REFS = [
    "ultralytics_yolov10n-synth_valA_detections.json.gz",
    "ultralytics_yolov10m-synth-raw84_valA_detections.json.gz",
]


@pytest.mark.fixtures
@pytest.mark.parametrize("ref", REFS)
def test_faster_coco_eval_matches_pycocotools(ref: str) -> None:
    instances = fixture_path("synthcoco", "annotations", "instances_valA.json")
    dets = json.loads(gzip.decompress(fixture_path("reference", ref).read_bytes()))
    coco = load_coco(instances)
    ids = sorted(coco.getImgIds())
    slow, _ = evaluate_bbox(coco, dets, ids, "pycocotools")
    fast, _ = evaluate_bbox(coco, dets, ids, "faster-coco-eval")
    assert list(fast) == list(STAT_NAMES)
    for k in STAT_NAMES:
        assert abs(fast[k] - slow[k]) <= 1e-6, (k, fast[k], slow[k])


def test_subset_of_ids_and_shifted_boxes_agree(mini_coco) -> None:
    """A harder case than GT: a subset of images and imperfect, overlapping detections."""
    coco = mini_coco.coco
    ids = mini_coco.image_ids[::2]
    dets = []
    for n, ann in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=mini_coco.image_ids))):
        x, y, w, h = ann["bbox"]
        dets.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [x + (n % 5), y - (n % 3), w * 1.05, h],
                "score": 0.3 + (n % 7) / 10,
            }
        )
    slow, _ = evaluate_bbox(coco, dets, ids, "pycocotools")
    fast, _ = evaluate_bbox(coco, dets, ids, "faster-coco-eval")
    assert fast == pytest.approx(slow, abs=1e-6)


@pytest.mark.fixtures
def test_instances_json_is_parsed_once(tmp_path) -> None:
    """faster-coco-eval indexes the dict pycocotools already parsed: the file is not read a second time,
    and its run leaves the pycocotools index as it was (pycocotools after faster gives the same stats)."""
    src = fixture_path("synthcoco", "annotations", "instances_valA.json")
    instances = tmp_path / "instances.json"
    instances.write_bytes(src.read_bytes())
    dets = json.loads(gzip.decompress(fixture_path("reference", REFS[0]).read_bytes()))
    coco = load_coco(instances)
    ids = sorted(coco.getImgIds())
    instances.unlink()  # the old path re-read it here
    fast, _ = evaluate_bbox(coco, dets, ids, "faster-coco-eval")
    slow, _ = evaluate_bbox(coco, dets, ids, "pycocotools")
    fresh, _ = evaluate_bbox(load_coco(src), dets, ids, "pycocotools")
    assert slow == fresh
    assert fast == pytest.approx(slow, abs=1e-6)
