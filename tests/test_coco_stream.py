"""The streamed COCO evaluation gives pycocotools' 12 stats exactly (``==``), however it is fed.

Expected values come from pycocotools itself: run here on the same detections, or the stats the
fixtures' producer recorded with pycocotools beside each reference detections file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
from typing import Any

import numpy as np
import pytest
from conftest import fixture_path

from common.core.errors import UserError
from common.core.results import atomic_write_json
from common.data.coco import (
    STAT_NAMES,
    evaluate_bbox,
    load_coco,
    resolve_coco_engine,
    results_to_rows,
    rows_to_dicts,
    write_results_json,
)
from common.data.coco_process import WORKER_NICE, ProcessCocoEval
from common.data.coco_stream import BackgroundCocoEval, StreamingCocoEval

REFS = [
    "ultralytics_yolov10n-synth_valA",
    "ultralytics_yolov10n-synth-raw84_valA",
    "ultralytics_yolov10m-synth-raw84_valA",
]


def pycocotools_eval(coco: Any, rows: np.ndarray, ids: list[int]) -> Any:
    """pycocotools' COCOeval on ``rows``, run here: the expected values."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(rows_to_dicts(rows)), "bbox")
        ev.params.imgIds = list(ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def by_image(rows: np.ndarray) -> dict[int, np.ndarray]:
    """Rows per image, each image's rows in their given order."""
    out: dict[int, list[np.ndarray]] = {}
    for r in rows:
        out.setdefault(int(r[0]), []).append(r)
    return {i: np.array(v).reshape(-1, 7) for i, v in out.items()}


def streamed(coco: Any, per_image: dict[int, np.ndarray], ids: list[int], order: list[int], group: int, chunk: int):
    ev = StreamingCocoEval(coco, ids, chunk_rows=chunk)
    for n in range(0, len(order), group):
        part = order[n : n + group]
        ev.add(part, [per_image.get(i, np.zeros((0, 7))) for i in part])
    return ev


def index(images: list[dict], anns: list[dict], cats: list[dict]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def random_case(rng: np.random.Generator, n_cats: tuple[int, int] = (1, 4)) -> tuple[Any, np.ndarray]:
    """Ground truth and detections with the cases pycocotools treats specially: crowd boxes, annotation
    areas unlike their boxes, areas on the range bounds, annotation id 0, empty images, categories on
    one side only, more than 100 detections per image and category, coarse (tied) scores. ``n_cats``: the
    range of the number of annotated categories (one more is listed without annotations)."""
    n_img, n_cat = int(rng.integers(1, 7)), int(rng.integers(*n_cats))
    images = [{"id": int(i), "file_name": f"{i}.jpg"} for i in rng.choice(1000, n_img, replace=False) + 1]
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, n_cat + 2)]  # the last category has no annotation
    anns: list[dict] = []
    for im in images:
        for _ in range(int(rng.integers(0, 12))):
            w, h = (32.0, 32.0) if rng.random() < 0.1 else tuple(rng.uniform(2, 150, 2).round(1))
            area = w * h if rng.random() < 0.6 else float(rng.choice([1024, 9216, w * h * rng.uniform(0.3, 1.0)]))
            bbox = [float(v) for v in rng.uniform(0, 300, 2).round(1)] + [float(w), float(h)]
            crowd = int(rng.random() < 0.1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": int(rng.integers(1, n_cat + 1)),
                    "bbox": bbox,
                    "area": area,
                    "iscrowd": crowd,
                }
            )
    if anns and rng.random() < 0.2:
        anns[0]["id"] = 0
    coco = index(images, anns, cats)
    rows = []
    decimals = int(rng.integers(1, 4))
    for im in images:
        for a in coco.imgToAnns.get(im["id"], []):
            for _ in range(int(rng.integers(0, 5))):
                box = np.array(a["bbox"]) + rng.normal(0, rng.uniform(0.01, 0.3), 4) * np.array(a["bbox"])[[2, 3, 2, 3]]
                cat = a["category_id"] if rng.random() < 0.85 else int(rng.integers(1, n_cat + 3))
                rows.append([im["id"], *box[:2], *np.maximum(box[2:], 0.5), rng.random(), cat])
        for _ in range(int(rng.integers(0, 160)) if rng.random() < 0.8 else 0):
            wh = [32.0, 32.0] if rng.random() < 0.05 else list(rng.uniform(1, 150, 2))
            rows.append([im["id"], *rng.uniform(0, 300, 2), *wh, rng.random(), int(rng.integers(1, n_cat + 3))])
    out = np.array(rows, np.float64).reshape(-1, 7)
    out[:, 1:5] = out[:, 1:5].round(1)
    out[:, 5] = out[:, 5].round(decimals)
    return coco, out


def test_random_ground_truth_and_detections_match_pycocotools() -> None:
    rng = np.random.default_rng(23)
    checked = 0
    for _ in range(200):
        coco, rows = random_case(rng)
        all_ids = sorted(coco.getImgIds())
        ids = [i for i in all_ids if rng.random() < 0.8] or all_ids  # detections outside the selection too
        if not len(rows):
            continue
        ref = pycocotools_eval(coco, rows, ids)
        per_image = by_image(rows)
        order = list(rng.permutation([*all_ids, 5000]))  # any order; 5000: an image the annotations lack
        ev = streamed(coco, per_image, ids, order, int(rng.integers(1, 4)), int(rng.integers(1, 400)))
        precision, recall = ev.precision_recall()
        assert np.array_equal(precision, ref.eval["precision"]) and np.array_equal(recall, ref.eval["recall"])
        assert ev.finish().tolist() == ref.stats.tolist()
        checked += 1
    assert checked > 150


def test_tied_scores_across_images_keep_pycocotools_order() -> None:
    """Equal scores on several images: pycocotools ranks them by image id, then by score rank in the
    image; the precision at each recall depends on it."""
    images = [{"id": i, "file_name": f"{i}.jpg"} for i in (7, 3, 5)]
    anns = [
        {"id": n + 1, "image_id": i, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}
        for n, i in enumerate((7, 3, 5))
    ]
    coco = index(images, anns, [{"id": 1, "name": "a"}])
    hit, miss = [10, 10, 40, 40], [200, 200, 40, 40]
    rows = np.array([[7, *miss, 0.5, 1], [7, *hit, 0.5, 1], [3, *hit, 0.5, 1], [5, *miss, 0.5, 1], [5, *hit, 0.4, 1]])
    ref = pycocotools_eval(coco, rows, [7, 3, 5])
    for order in ([7, 3, 5], [5, 3, 7]):
        assert streamed(coco, by_image(rows), [7, 3, 5], order, 1, 1).finish().tolist() == ref.stats.tolist()


def test_crowd_box_takes_every_overlapping_detection_and_is_ignored() -> None:
    images = [{"id": 1, "file_name": "1.jpg"}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 1},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
    ]
    coco = index(images, anns, [{"id": 1, "name": "a"}])
    rows = np.array([[1, 10, 10, 20, 20, 0.9, 1], [1, 12, 10, 20, 20, 0.8, 1], [1, 50, 50, 30, 30, 0.7, 1]])
    ref = pycocotools_eval(coco, rows, [1])
    assert streamed(coco, by_image(rows), [1], [1], 1, 10).finish().tolist() == ref.stats.tolist()


@pytest.mark.fixtures
@pytest.mark.parametrize("ref", REFS)
def test_fixture_reference_detections_give_the_recorded_pycocotools_stats(ref: str) -> None:
    instances = fixture_path("synthcoco", "annotations", "instances_valA.json")
    dets = json.loads(gzip.decompress(fixture_path("reference", f"{ref}_detections.json.gz").read_bytes()))
    recorded = json.loads(fixture_path("reference", f"{ref}_stats.json").read_text())["stats"]
    coco = load_coco(instances)
    stats, _ = evaluate_bbox(coco, dets, sorted(coco.getImgIds()), "stream")
    assert stats == recorded


def _pipeline_matches_pycocotools(ds: Any, workers: int) -> dict[str, Any]:
    from conftest import DEMO_MODEL

    from common.eval.pipeline import EvalOptions, evaluate
    from common.ort.session import OrtBackend

    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    result = evaluate(backend, ds, EvalOptions(progress=False, workers=workers, batch_size=1))
    ref = pycocotools_eval(ds.coco, result.rows, ds.image_ids)
    assert [result.stats[k] for k in STAT_NAMES] == ref.stats.tolist()
    t = result.timings
    assert t["coco_engine"] == "stream" and t["coco_engine_requested"] == "auto"
    assert t["coco_eval_after_last_batch_s"] == t["eval_seconds"] >= 0 and t["coco_eval_match_s"] > 0
    return t


def test_large_pipelined_runs_match_in_the_worker_process(mini_coco, monkeypatch) -> None:
    import common.data.coco_process as coco_process
    import common.eval.coco_feed as coco_feed
    import common.eval.pipeline as pipeline
    import common.eval.timing as timing

    monkeypatch.setattr(coco_feed, "PROCESS_MIN_IMAGES", 4)
    monkeypatch.setattr(coco_process, "available_cpus", lambda: 32)  # two workers share the categories
    events: list[str] = []
    warmup, start = timing.warmup, coco_process.ProcessCocoEval.start
    loaders, index = pipeline._loaders, coco_process.prepare_ground_truth

    def recorded_loaders(*args: Any, **kwargs: Any) -> Any:
        events.append("loaders")
        return loaders(*args, **kwargs)

    def recorded_index(*args: Any, **kwargs: Any) -> Any:
        events.append("ground truth")
        return index(*args, **kwargs)

    def recorded_warmup(*args: Any, **kwargs: Any) -> int:
        events.append("warm-up")
        return warmup(*args, **kwargs)

    def recorded_start(self: Any) -> None:
        events.append("workers" if self._sender is None else "started already")
        start(self)

    monkeypatch.setattr(timing, "warmup", recorded_warmup)
    monkeypatch.setattr(pipeline, "_loaders", recorded_loaders)
    monkeypatch.setattr(coco_process, "prepare_ground_truth", recorded_index)
    monkeypatch.setattr(coco_process.ProcessCocoEval, "start", recorded_start)
    t = _pipeline_matches_pycocotools(dataclasses.replace(mini_coco, image_ids=mini_coco.image_ids[:8]), 2)
    # the loaders start first (their processes boot while the ground truth is indexed); the workers boot after
    # the warm-up and the loaders, never beside them; once
    assert events[:4] == ["loaders", "ground truth", "warm-up", "workers"] and events.count("workers") == 1
    assert t["coco_eval_runs_in"] == "process" and t["coco_eval_worker_start_s"] > 0
    assert t["coco_eval_feed_s"] >= 0 and t["coco_eval_workers"] == 2 and t["coco_eval_worker_accumulate_s"] > 0
    # each worker's CPU since it started (an interpreter's start-up alone takes some), the two together
    assert t["coco_eval_worker_cpu_s"] > 0.01


@pytest.mark.parametrize("workers", [2, 0])
def test_bundled_model_through_the_pipeline(mini_coco, workers: int) -> None:
    """The evaluator's default engine streams (on a thread, or inline on the sequential path): its stats
    equal pycocotools' on the same rows, and the timings say which engine ran."""
    _pipeline_matches_pycocotools(dataclasses.replace(mini_coco, image_ids=mini_coco.image_ids[:8]), workers)


@pytest.mark.slow
def test_bundled_model_on_the_whole_mini_set(mini_coco) -> None:
    _pipeline_matches_pycocotools(mini_coco, 2)


def test_engines_and_their_resolution(mini_coco) -> None:
    assert resolve_coco_engine("auto") == "stream"
    assert resolve_coco_engine("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="unknown COCO eval engine"):
        resolve_coco_engine("nope")
    ids = mini_coco.image_ids
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5 + a["id"] % 3 / 10}
        for a in mini_coco.coco.loadAnns(mini_coco.coco.getAnnIds(imgIds=ids))
    ]
    stream, table = evaluate_bbox(mini_coco.coco, dets, ids[::2], "stream")
    ref, ref_table = evaluate_bbox(mini_coco.coco, dets, ids[::2], "pycocotools")
    assert stream == ref and table == ref_table
    assert evaluate_bbox(mini_coco.coco, results_to_rows(dets), ids[::2], "auto")[0] == ref
    assert evaluate_bbox(mini_coco.coco, [], ids, "stream") == evaluate_bbox(mini_coco.coco, [], ids, "pycocotools")


def test_background_thread_gives_the_same_stats_and_hands_errors_on(mini_coco) -> None:
    rng = np.random.default_rng(5)
    ids = mini_coco.image_ids
    per_image = {}
    for i in ids:
        anns = mini_coco.coco.imgToAnns.get(i, [])
        rows = [[i, *a["bbox"], round(rng.random(), 2), a["category_id"]] for a in anns]
        per_image[i] = np.array(rows, np.float64).reshape(-1, 7)
    inline = streamed(mini_coco.coco, per_image, ids, ids, 4, 64).finish()
    bg = BackgroundCocoEval(StreamingCocoEval(mini_coco.coco, ids, chunk_rows=64))
    for n in range(0, len(ids), 4):
        bg.add(ids[n : n + 4], [per_image[i] for i in ids[n : n + 4]])
    assert bg.finish().tolist() == inline.tolist()
    twice = BackgroundCocoEval(StreamingCocoEval(mini_coco.coco, ids))
    twice.add(ids[:1], [per_image[ids[0]]])
    twice.add(ids[:1], [per_image[ids[0]]])
    with pytest.raises(ValueError, match="twice"):
        twice.finish()
    stopped = BackgroundCocoEval(StreamingCocoEval(mini_coco.coco, ids))
    stopped.add(ids[:1], [per_image[ids[0]]])
    stopped.close()  # a failed run: the thread ends without a result


def test_annotations_without_area_are_refused_before_any_detection(mini_coco) -> None:
    images = [{"id": 1, "file_name": "1.jpg"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0}]
    with pytest.raises(UserError, match=r"annotation 1 .* has no 'area'"):
        StreamingCocoEval(index(images, anns, [{"id": 1, "name": "a"}]), [1])


def test_results_json_is_written_in_chunks_with_the_bytes_of_the_dicts(tmp_path, monkeypatch) -> None:
    import common.data.coco as coco_mod

    monkeypatch.setattr(coco_mod, "RESULTS_CHUNK", 3)
    rng = np.random.default_rng(0)
    rows = np.column_stack(
        [
            rng.integers(1, 9, 10),
            rng.uniform(-5, 600, (10, 4)).round(3),
            rng.random(10).round(5),
            rng.integers(1, 91, 10),
        ]
    )
    rows[0, 1:6] = [-0.0, 1e-05, 123456.789, 0.5, 5e-05]
    for n in (0, 1, 3, 10):
        write_results_json(tmp_path / "got.json", rows[:n])
        atomic_write_json(tmp_path / "want.json", rows_to_dicts(rows[:n]), indent=None)
        assert (tmp_path / "got.json").read_bytes() == (tmp_path / "want.json").read_bytes(), n
    rows[4, 5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_results_json(tmp_path / "nan.json", rows)
    assert not (tmp_path / "nan.json").exists()


def _fed_process(coco: Any, per_image: dict[int, np.ndarray], ids: list[int], group: int) -> ProcessCocoEval:
    ev = ProcessCocoEval(coco, ids, chunk_rows=64)
    for n in range(0, len(ids), group):
        part = ids[n : n + group]
        ev.add(part, [per_image.get(i, np.zeros((0, 7))) for i in part])
    return ev


@pytest.mark.fixtures
@pytest.mark.parametrize("ref", REFS[:1])
def test_worker_process_gives_the_recorded_pycocotools_stats_on_the_reference_detections(ref: str) -> None:
    coco = load_coco(fixture_path("synthcoco", "annotations", "instances_valA.json"))
    dets = json.loads(gzip.decompress(fixture_path("reference", f"{ref}_detections.json.gz").read_bytes()))
    recorded = json.loads(fixture_path("reference", f"{ref}_stats.json").read_text())["stats"]
    ev = _fed_process(coco, by_image(results_to_rows(dets)), sorted(coco.getImgIds()), 32)
    assert ev.finish().tolist() == [recorded[k] for k in STAT_NAMES]
    assert ev.start_seconds > 0 and ev.feed_seconds >= 0


def test_worker_process_gives_pycocotools_stats_on_the_mini_set(mini_coco) -> None:
    rng = np.random.default_rng(7)
    ids = mini_coco.image_ids
    per_image = {}
    for i in ids:
        anns = mini_coco.coco.imgToAnns.get(i, [])
        boxes = [np.array(a["bbox"]) + rng.normal(0, 2, 4) for a in anns]
        rows = [[i, *b, round(rng.random(), 3), a["category_id"]] for a, b in zip(anns, boxes, strict=True)]
        per_image[i] = np.array(rows, np.float64).reshape(-1, 7)
    rows = np.concatenate(list(per_image.values()))
    want = pycocotools_eval(mini_coco.coco, rows, ids).stats
    assert _fed_process(mini_coco.coco, per_image, ids, 3).finish().tolist() == list(want)


def test_workers_start_on_the_senders_thread_while_the_caller_goes_on(mini_coco, monkeypatch) -> None:
    """``start`` returns before any worker process exists: they start on the sender's thread, and the batches
    added meanwhile wait in its queue; the stats are pycocotools'. A worker that cannot start is one line."""
    import threading

    import common.data.coco_process as coco_process

    release, seen = threading.Event(), []
    real = coco_process._Worker

    def slow_worker(env):
        seen.append(threading.current_thread().name)
        assert release.wait(30), "double: never released"
        return real(env)

    monkeypatch.setattr(coco_process, "_Worker", slow_worker)
    ids = mini_coco.image_ids
    rows = {
        i: np.array([[i, *a["bbox"], 0.9, a["category_id"]] for a in mini_coco.coco.imgToAnns.get(i, [])]) for i in ids
    }
    ev = ProcessCocoEval(mini_coco.coco, ids, workers=1)
    ev.start()
    ev.add(ids[:2], [rows[i].reshape(-1, 7) for i in ids[:2]])  # queued while the worker is still starting
    assert ev._workers == [] and not ev._sender.spawned.is_set()
    release.set()
    ev.add(ids[2:], [rows[i].reshape(-1, 7) for i in ids[2:]])
    want = pycocotools_eval(mini_coco.coco, np.concatenate([rows[i].reshape(-1, 7) for i in ids]), ids).stats
    assert ev.finish().tolist() == list(want)
    assert seen == ["coco-eval-send"]

    def no_worker(env):
        raise OSError("[Errno 12] Cannot allocate memory")

    monkeypatch.setattr(coco_process, "_Worker", no_worker)
    broken = ProcessCocoEval(mini_coco.coco, ids, workers=1)
    broken.start()
    broken._sender.spawned.wait()
    with pytest.raises(RuntimeError, match=r"^the COCO evaluation workers could not start: OSError: .*memory$"):
        broken.add(ids[:1], [rows[ids[0]].reshape(-1, 7)])
    broken.close()


def test_add_only_queues_the_batch_and_the_senders_thread_gathers_it(mini_coco, monkeypatch) -> None:
    """The caller's thread (the one the run waits on) queues each batch as it is; the rows are gathered into
    one array on the sender's thread, and the stats are pycocotools'."""
    import threading

    import common.data.coco_process as coco_process

    real, where = coco_process._gathered, []

    def recorded(msg):
        where.append(threading.current_thread().name)
        return real(msg)

    monkeypatch.setattr(coco_process, "_gathered", recorded)
    ids = mini_coco.image_ids
    rows = {
        i: np.array([[i, *a["bbox"], 0.8, a["category_id"]] for a in mini_coco.coco.imgToAnns.get(i, [])]) for i in ids
    }
    for workers in (1, 2):
        where.clear()
        ev = ProcessCocoEval(mini_coco.coco, ids, workers=workers)
        for n in range(0, len(ids), 2):
            ev.add(ids[n : n + 2], [rows[i].reshape(-1, 7) for i in ids[n : n + 2]])
        assert threading.current_thread().name not in where
        want = pycocotools_eval(mini_coco.coco, np.concatenate([rows[i].reshape(-1, 7) for i in ids]), ids).stats
        assert ev.finish().tolist() == list(want)
        assert where == ["coco-eval-send"] * len(range(0, len(ids), 2)), workers


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_that_cannot_be_gathered_is_one_line_at_finish_never_a_hang(mini_coco, workers: int) -> None:
    """Rows of the wrong width fail on the sender's thread: the next ``add`` or ``finish`` raises one line,
    and no worker is left waiting for a batch that never came."""
    ids = mini_coco.image_ids
    ev = ProcessCocoEval(mini_coco.coco, ids, workers=workers)
    ev.add(ids[:1], [np.zeros((2, 5))])  # queued: the caller's thread does not look at the rows
    with pytest.raises(RuntimeError, match=r"^a batch could not be handed to the COCO evaluation: ValueError: "):
        ev.finish()
    assert all(w.proc.returncode is not None for w in ev._workers)


def test_worker_process_errors_are_one_line_and_a_dead_worker_does_not_hang(mini_coco) -> None:
    ids = mini_coco.image_ids
    one = np.zeros((1, 7))
    one[0, 0] = ids[0]
    twice = ProcessCocoEval(mini_coco.coco, ids)
    twice.add(ids[:1], [one])
    twice.add(ids[:1], [one])
    with pytest.raises(RuntimeError, match=r"COCO evaluation worker: ValueError: .*twice"):
        twice.finish()
    dead = ProcessCocoEval(mini_coco.coco, ids)
    assert dead._workers == []  # nothing starts before ``start`` or the first ``add``
    dead.start()
    dead._sender.spawned.wait()
    if hasattr(os, "getpriority"):  # the worker yields the cores to this process's threads and the loaders
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, dead._workers[0].proc.pid) == min(19, mine + WORKER_NICE)
    dead._workers[0].proc.kill()
    dead._workers[0].proc.wait()
    with pytest.raises(RuntimeError, match="worker process exited with code -9"):
        dead.add(ids[:1], [one])
        dead.finish()
    dead.close()
    stopped = ProcessCocoEval(mini_coco.coco, ids)
    stopped.add(ids[:1], [one])
    stopped.close()  # a failed run: the worker is stopped without a result
    assert all(w.proc.returncode is not None for w in stopped._workers)
