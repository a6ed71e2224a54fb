"""The evaluator's batch post-processing (one unletterbox + one array of COCO rows per batch) gives each
image exactly the rows a per-image loop gives: same boxes, scores, categories and order, for the CPU
(NumPy decode) and the GPU (final rows) paths, with empty images, classes without a COCO category and
the same image twice in a batch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from common.data.images import LetterboxMeta, letterbox_geometry
from common.eval.pipeline import _postprocess
from common.model.yolov10 import PostprocessOptions, decode
from common.throughput.gpu_postprocess import GpuDetections


def _reference_rows(image_id: int, det_boxes, det_scores, det_classes, meta: LetterboxMeta, table) -> list:
    """Box by box in float32 as the letterbox docstring says (remove the pad, divide by the scale,
    clip), then COCO xywh rounded to 3 decimals and the score to 5; independent of the code under test."""
    f = np.float32
    out = []
    for (x1, y1, x2, y2), s, c in zip(det_boxes.tolist(), det_scores.tolist(), det_classes.tolist(), strict=True):
        if table[c] < 0:
            continue
        bx = [f(x1) - f(meta.pad_left), f(y1) - f(meta.pad_top), f(x2) - f(meta.pad_left), f(y2) - f(meta.pad_top)]
        bx = [v / f(meta.scale) for v in bx]
        bx = [
            min(max(bx[0], f(0)), f(meta.orig_w)),
            min(max(bx[1], f(0)), f(meta.orig_h)),
            min(max(bx[2], f(0)), f(meta.orig_w)),
            min(max(bx[3], f(0)), f(meta.orig_h)),
        ]
        x, y, w, h = (float(v) for v in (bx[0], bx[1], float(bx[2]) - float(bx[0]), float(bx[3]) - float(bx[1])))
        r3 = [float(np.round(v, 3)) for v in (x, y, w, h)]  # NumPy's rounding, as the results JSON has it
        out.append([image_id, *r3, float(np.round(float(f(s)), 5)), table[c]])
    return out


def _case(seed: int):
    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (333, 901), (17, 5), (640, 480), (1280, 720)]
    metas = [(100 + k, letterbox_geometry(w, h, 640)) for k, (w, h) in enumerate(sizes)]
    metas[3] = (100, metas[3][1])  # the same image id twice in one batch (a replay of a tiny set)
    table = np.arange(80, dtype=np.int64) + 1
    table[[3, 7]] = -1  # classes without a COCO category
    max_det = 12
    counts = np.array([5, 0, 12, 3, 7], np.int32)
    rows = np.zeros((len(sizes), max_det, 6), np.float32)
    for j, n in enumerate(counts):
        xy = rng.uniform(-30, 660, (n, 2)).astype(np.float32)
        wh = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        rows[j, :n, :4] = np.concatenate([xy, xy + wh], axis=1)
        rows[j, :n, 4] = np.sort(rng.uniform(0.001, 1, n).astype(np.float32))[::-1]
        rows[j, :n, 5] = rng.choice([0, 3, 7, 11, 79], n)
        rows[j, n:] = rng.uniform(-5, 5, (max_det - n, 6))  # garbage past the count must be ignored
    return metas, table, GpuDetections(rows, counts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gpu_rows_batch_equals_the_per_image_loop(seed: int) -> None:
    metas, table, dets = _case(seed)
    per_image, _ = _postprocess(
        metas, [dets], "dfl144", (640, 640), SimpleNamespace(class_to_category=table), PostprocessOptions()
    )
    assert len(per_image) == len(metas)
    for j, (image_id, meta) in enumerate(metas):
        r = dets.rows[j, : dets.counts[j]]
        want = _reference_rows(image_id, r[:, :4], r[:, 4], r[:, 5].astype(np.int64), meta, table)
        assert per_image[j].tolist() == want, f"image {j}"


def test_cpu_rows_batch_equals_the_per_image_loop() -> None:
    rng = np.random.default_rng(5)
    metas, table, _ = _case(3)
    raw = np.zeros((len(metas), 84, 8400), np.float32)
    raw[:, :2] = rng.uniform(0, 640, (len(metas), 2, 8400))
    raw[:, 2:4] = raw[:, :2] + rng.uniform(1, 90, (len(metas), 2, 8400))
    raw[:, 4:] = rng.uniform(0, 0.02, (len(metas), 80, 8400))
    raw[0, 4 + 3, :40] = 0.9  # a class without a category among the best
    raw[2, 4:, :] = 0.0  # an image with nothing above the threshold
    opts = PostprocessOptions()
    per_image, _ = _postprocess(metas, [raw], "raw84", (640, 640), SimpleNamespace(class_to_category=table), opts)
    for j, (image_id, meta) in enumerate(metas):
        d = decode(raw[j], "raw84", (640, 640), opts)
        assert per_image[j].tolist() == _reference_rows(image_id, d.boxes, d.scores, d.classes, meta, table)
    assert per_image[2].shape == (0, 7) and per_image[0].shape[0] > 0


def test_coco_eval_leaves_the_results_it_is_given_as_they_were(mini_coco) -> None:
    """COCOeval's loadRes writes segmentation, area, id and iscrowd into the result dicts it indexes;
    the evaluator's detections (detections.json) must keep the four COCO results keys only."""
    from conftest import DEMO_MODEL

    from common.data.coco import evaluate_bbox, faster_coco_eval_available
    from common.eval.pipeline import EvalOptions, evaluate
    from common.ort.session import OrtBackend

    result = evaluate(OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"]), mini_coco, EvalOptions(progress=False))
    assert result.detections and result.stats["AP"] > 0
    assert {tuple(sorted(d)) for d in result.detections} == {("bbox", "category_id", "image_id", "score")}
    given = [dict(d) for d in result.detections[:50]]
    for engine in ["stream", "pycocotools"] + (["faster-coco-eval"] if faster_coco_eval_available() else []):
        evaluate_bbox(mini_coco.coco, given, mini_coco.image_ids, engine)
        assert given == result.detections[:50], engine


class _Feed:
    def __init__(self) -> None:
        self.added: list[tuple[list[int], list[np.ndarray]]] = []

    def add(self, image_ids, rows) -> None:
        self.added.append((list(image_ids), list(rows)))


@pytest.mark.parametrize("group", [1, 2, 16])
def test_small_batches_of_gpu_rows_post_processed_together_give_each_image_its_rows(group, monkeypatch) -> None:
    """Batches of final rows held back and post-processed ``group`` images at a time (``POST_GROUP_IMAGES``)
    give every image the rows it gets alone, once, in the batches' order; ``post_s`` keeps one entry per batch."""
    from common.data.loading import InlineExecutor
    from common.eval import pipeline
    from common.eval.options import EvalOptions

    metas, table, dets = _case(4)
    calls = []

    def counted(*args):
        calls.append(len(args[0]))
        return _postprocess(*args)

    monkeypatch.setattr(pipeline, "POST_GROUP_IMAGES", group)
    monkeypatch.setattr(pipeline, "_postprocess", counted)
    ds = SimpleNamespace(class_to_category=table)
    bar = SimpleNamespace(update=lambda n: None)
    stages = pipeline._Stages(ds, [], 640, EvalOptions(), None, InlineExecutor(), 8, bar)
    stages.coco = feed = _Feed()
    for j in range(len(metas)):  # one image per batch; rows sized for a larger batch, as a lane may return them
        rows = np.concatenate([dets.rows[j : j + 1], np.full((2, *dets.rows.shape[1:]), 7.0, np.float32)])
        stages.finish([metas[j]], [GpuDetections(rows, np.array([dets.counts[j], 9, 9], np.int32))], 0.0)
    stages.collect(limit=0)
    assert sum(calls) == len(metas) and len(calls) == -(-len(metas) // group)
    assert len(stages.post_s) == len(metas)
    assert [i for ids, _ in feed.added for i in ids] == [m[0] for m in metas]
    fed = [r.tolist() for _, rows in feed.added for r in rows]
    for j, (image_id, meta) in enumerate(metas):
        r = dets.rows[j, : dets.counts[j]]
        want = _reference_rows(image_id, r[:, :4], r[:, 4], r[:, 5].astype(np.int64), meta, table)
        assert fed[j] == want, f"image {j}"
        if image_id != 100:  # the id given twice keeps its last rows in per_image
            assert stages.per_image[image_id].tolist() == want
