"""What the streamed COCO evaluation keeps of each matched chunk (``Scored``), and that accumulation reads the
plain detections in any order. Expected values are worked out by hand here, or come from pycocotools."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
from test_coco_stream import by_image, pycocotools_eval, random_case, streamed

from common.data.coco_accumulate import AREA_RANGES, IOU_THRS, RANK_SLOTS, Scored, accumulate, count_code


def test_of_chunk_keeps_the_candidates_flags_and_the_plain_detections_by_score() -> None:
    score = np.array([0.2, 0.9, 0.5, 0.7, 0.1])
    cat = np.array([1, 0, 1, 0, 2])
    order = np.array([0, 1, 2, 3, 4]) + 3 * RANK_SLOTS
    area_out = np.zeros((5, len(AREA_RANGES)), bool)
    cand = np.array([1, 3])
    tp = np.zeros((2, len(AREA_RANGES), len(IOU_THRS)), bool)
    tp[0, :, :4] = True
    ignored = ~tp
    s = Scored.of_chunk(score, cat, order, area_out, cand, tp, ignored)
    assert s.score.tolist() == [0.9, 0.7] and s.cat.tolist() == [0, 0] and s.order.tolist() == [385, 387]
    assert s.tp is tp and s.ignored is ignored
    assert s.plain_score.tolist() == [0.5, 0.2, 0.1]  # the other three, highest score first
    assert s.plain_cat.tolist() == [1, 1, 2] and s.plain_order.tolist() == [386, 384, 388]
    assert s.cat.dtype == s.plain_cat.dtype == np.int32


def test_count_code_is_the_area_bits_times_three_plus_the_first_max_dets_it_counts_for() -> None:
    # small (outside medium and large: bits 2 and 3), medium (outside small and large: bits 1 and 3), large
    area_out = np.array([[0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0]], bool)
    ranks = np.array([0, 1, 9, 10, 99])
    order = 7 * RANK_SLOTS + ranks
    for row, bits in zip(area_out, (12, 10, 6), strict=True):
        codes = count_code(np.repeat(row[None], len(ranks), axis=0), order)
        # rank 0 counts from maxDets 1; ranks 1-9 from 10; ranks 10-99 from 100
        assert codes.tolist() == [bits * 3 + m for m in (0, 1, 1, 2, 2)]


def _cases(rng: np.random.Generator, n: int) -> Iterator[tuple[Any, np.ndarray, list[int]]]:
    """Of ``n`` random cases (``random_case``), those with detections: ground truth, rows, every image id."""
    for _ in range(n):
        coco, rows = random_case(rng)
        if len(rows):
            yield coco, rows, sorted(coco.getImgIds())


def test_accumulation_reads_the_plain_detections_in_any_order() -> None:
    rng = np.random.default_rng(5)
    checked = 0
    for coco, rows, ids in _cases(rng, 40):
        ev = streamed(coco, by_image(rows), ids, ids, 2, int(rng.integers(1, 200)))
        s = ev.scored()
        if len(s.plain_score) < 2:
            continue
        perm = rng.permutation(len(s.plain_score))
        plain = ("plain_score", "plain_cat", "plain_order", "plain_code")
        shuffled = dataclasses.replace(s, **{name: getattr(s, name)[perm] for name in plain})
        ref = pycocotools_eval(coco, rows, ids)
        for x in (s, shuffled):
            precision, recall = accumulate(x, ev.gt.counted)
            assert np.array_equal(precision, ref.eval["precision"]) and np.array_equal(recall, ref.eval["recall"])
        checked += 1
    assert checked > 20


def test_rows_sorted_by_score_in_each_image_are_ordered_as_pycocotools_sorts_them() -> None:
    """The evaluator's rows come sorted by score in each image: the chunk is then ordered by one stable sort on
    (image, category), which must give np.lexsort's order (score descending, equal scores as given)."""
    from common.data.coco_stream import _chunk_order

    rng = np.random.default_rng(11)
    for n_images, n_cats in ((1, 3), (7, 5), (40, 80), (500, 80)):
        counts = rng.integers(0, 30, n_images)
        ranks = rng.permutation(1000)[:n_images]
        img = np.repeat(ranks, counts)
        slot = np.repeat(np.argsort(np.argsort(ranks)), counts)
        k = rng.integers(0, n_cats, len(img))
        score = np.concatenate([-np.sort(-rng.choice([0.1, 0.5, 0.9, rng.random()], c)) for c in counts])
        expected = np.lexsort((-score, k, img))
        assert np.array_equal(_chunk_order(img, slot, k, score, n_cats), expected)
        if len(score) > 2:  # an image not sorted by score, or a NaN score: the full sort
            for bad in (score[::-1].copy(), np.where(np.arange(len(score)) == 1, np.nan, score)):
                assert np.array_equal(_chunk_order(img, slot, k, bad, n_cats), np.lexsort((-bad, k, img)))


def test_rows_sorted_by_score_per_image_match_pycocotools() -> None:
    rng = np.random.default_rng(29)
    checked = 0
    for coco, rows, ids in _cases(rng, 60):
        per_image = {i: r[np.argsort(-r[:, 5], kind="stable")] for i, r in by_image(rows).items()}
        ordered = np.concatenate(list(per_image.values()))
        ref = pycocotools_eval(coco, ordered, ids)
        ev = streamed(coco, per_image, ids, list(rng.permutation(ids)), int(rng.integers(1, 4)), 1000)
        assert ev.finish().tolist() == ref.stats.tolist()
        checked += 1
    assert checked > 30
