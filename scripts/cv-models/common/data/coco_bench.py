"""COCOeval implementations timed on the CPU over a synthetic workload the size of a full COCO val run.

The ground truth is an instances file's annotations repeated under fresh image ids up to N images; each
image gets ``per_image`` detections (the evaluator's rows, xywh rounded to 3 decimals and scores to 5):
a few jittered copies of each annotation (mostly the right category, some wrong) and random boxes of
low score for the rest, as a detector run at a low confidence threshold returns them. Or, given a model's
detections on the instances file's images (``repeated_rows``), each image gets those of the image it repeats.

``stream`` is fed batch by batch, as the evaluator feeds it: its matching would overlap inference, and
only ``finish`` (accumulate + summarize) remains after the last batch. ``stream-process`` is the same
evaluation in worker processes sharing the categories (``common.data.coco_process``; ``process_workers``
of them, 0: as many as the evaluator would start): the batches are only sent, so with the batches handed
over at once its "after last batch" includes the matching the workers had not done yet. ``pace`` hands
both their batches at a pipeline's rate instead, so "after last batch" is what remains once the last
batch is in, as in the evaluator (here nothing else runs beside them). The other engines run whole
after the last batch, from the rows (COCO results dicts built, loadRes, evaluate, accumulate, summarize).
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.data.coco import (
    STAT_NAMES,
    faster_coco_eval_available,
    quiet_cocoeval,
    rows_by_image,
    rows_to_dicts,
)
from common.data.coco_process import ProcessCocoEval
from common.data.coco_stream import StreamingCocoEval

__all__ = [
    "CocoBenchOptions",
    "format_coco_bench",
    "repeated_ground_truth",
    "repeated_rows",
    "run_coco_bench",
    "synthetic_rows",
]


@dataclass(frozen=True)
class CocoBenchOptions:
    images: int  # N images (the source's images repeated)
    per_image: int = 300  # detections per image (a max-det 300 run at conf 0.001 fills it)
    batch_size: int = 32  # images per add(), as the evaluator's batches
    engines: tuple[str, ...] = ("stream", "stream-process", "pycocotools", "faster-coco-eval")
    seed: int = 0
    process_workers: int = 0  # stream-process: worker processes sharing the categories (0: automatic)
    pace: float = 0.0  # images per second the batches arrive at, as from a pipeline (0: as fast as they are taken)


def repeated_ground_truth(coco: Any, n_images: int) -> Any:
    """A pycocotools COCO of ``n_images`` images cycling over ``coco``'s, ids 1..n, each with its source's
    annotations under fresh annotation ids."""
    from pycocotools.coco import COCO

    src = sorted(coco.getImgIds())
    images, anns = [], []
    for k in range(n_images):
        orig = src[k % len(src)]
        images.append({**coco.imgs[orig], "id": k + 1})
        for a in coco.imgToAnns.get(orig, []):
            anns.append({**a, "id": len(anns) + 1, "image_id": k + 1})
    out = COCO()
    out.dataset = {**coco.dataset, "images": images, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        out.createIndex()
    return out


def _image_rows(coco: Any, image_id: int, per_image: int, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for a in coco.imgToAnns.get(image_id, []):
        n = int(rng.poisson(4))
        box = np.asarray(a["bbox"], np.float64)
        jit = box + rng.normal(0, 0.12, (n, 4)) * box[[2, 3, 2, 3]]
        jit[:, 2:] = np.maximum(jit[:, 2:], 1.0)
        cat = np.where(rng.random(n) < 0.85, a["category_id"], rng.choice(cats, n))
        parts.append(np.column_stack([np.full(n, image_id), jit, rng.beta(2, 3, n), cat]))
    m = max(0, per_image - sum(len(p) for p in parts))
    w, h = rng.uniform(2, 300, m), rng.uniform(2, 300, m)
    xy = rng.uniform(0, 640, (m, 2)) - np.column_stack([w, h]) / 2
    parts.append(np.column_stack([np.full(m, image_id), xy, w, h, rng.uniform(0.001, 0.3, m), rng.choice(cats, m)]))
    rows = np.concatenate(parts)[:per_image]
    rows[:, 1:5] = np.round(rows[:, 1:5], 3)
    rows[:, 5] = np.round(rows[:, 5], 5)
    return rows[np.argsort(-rows[:, 5], kind="stable")]


def synthetic_rows(coco: Any, per_image: int, seed: int = 0) -> dict[int, np.ndarray]:
    """``per_image`` detection rows for every image of ``coco``, by image id."""
    rng = np.random.default_rng(seed)
    cats = np.array(sorted(coco.getCatIds()), np.float64)
    return {i: _image_rows(coco, i, per_image, cats, rng) for i in sorted(coco.getImgIds())}


def repeated_rows(source: Any, rows: np.ndarray, n_images: int) -> dict[int, np.ndarray]:
    """``rows`` (the evaluator's rows, [N, 7], of ``source``'s images) for the images of
    ``repeated_ground_truth(source, n_images)``: image k + 1 gets the rows of the source image it repeats, in
    their order (none where it has none)."""
    src = sorted(source.getImgIds())
    per_source = dict(zip(*rows_by_image(rows), strict=True))
    empty = np.zeros((0, 7), np.float64)
    out = {}
    for k in range(n_images):
        r = per_source.get(src[k % len(src)], empty).copy()
        r[:, 0] = k + 1
        out[k + 1] = r
    return out


def _feed(ev: Any, ids: list[int], rows: dict[int, np.ndarray], batch: int, pace: float) -> float:
    """Hand ``ev`` the rows batch by batch, as the evaluator does, a batch no sooner than ``pace`` images per
    second allow (0: at once); the seconds it took."""
    t0 = time.perf_counter()
    for n in range(0, len(ids), batch):
        if pace > 0 and (wait := t0 + (n + batch) / pace - time.perf_counter()) > 0:
            time.sleep(wait)  # the batch's images are not inferred yet
        part = ids[n : n + batch]
        ev.add(part, [rows[i] for i in part])
    return time.perf_counter() - t0


def _time_stream(coco: Any, ids: list[int], rows: dict[int, np.ndarray], batch: int, pace: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    ev = StreamingCocoEval(coco, ids)
    prepare = time.perf_counter() - t0
    fed = _feed(ev, ids, rows, batch, pace)
    match = ev.match_seconds
    t0 = time.perf_counter()
    stats = ev.finish()
    after = time.perf_counter() - t0
    return {
        "stats": stats.tolist(),
        "prepare_s": prepare,  # ground truth indexed, before the first batch
        "match_s": match,  # overlaps inference in the evaluator
        "match_images_per_s": len(ids) / match if match > 0 else 0.0,
        "feed_s": fed,  # handing the batches over, the matching in it (and the waits for the pace)
        "after_last_batch_s": after,
        "total_s": prepare + fed + after,
    }


def _time_process(coco: Any, ids: list[int], rows: dict[int, np.ndarray], opts: CocoBenchOptions) -> dict[str, Any]:
    batch = opts.batch_size
    t0 = time.perf_counter()
    ev = ProcessCocoEval(coco, ids, workers=opts.process_workers)
    ev.start()  # the workers boot on the sender's thread while the first batches queue up
    prepare = time.perf_counter() - t0
    send = _feed(ev, ids, rows, batch, opts.pace)
    t0 = time.perf_counter()
    stats = ev.finish()
    after = time.perf_counter() - t0
    batches = max(1, -(-len(ids) // batch))
    return {
        "stats": stats.tolist(),
        "workers": ev.workers,  # worker processes, each with a share of the categories
        "prepare_s": prepare,  # ground truth indexed and the workers started
        "feed_s": ev.feed_seconds,  # this process's time handing the batches over
        "feed_s_per_batch": ev.feed_seconds / batches,
        "feed_cpu_s_per_batch": ev.feed_cpu_seconds / batches,  # of it, this thread's CPU time
        "send_loop_s": send,
        "worker_start_s": ev.start_seconds,
        "worker_match_s": ev.match_seconds,  # the workers' together
        "worker_accumulate_s": ev.accumulate_seconds,  # the slowest worker's
        "after_last_batch_s": after,  # the workers' matching still to do + their accumulate + summarize
        "total_s": prepare + send + after,
    }


def _indexed(coco: Any, engine: str) -> tuple[Any, Any]:
    """(ground truth index, COCOeval class) of ``engine``."""
    if engine == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        return coco, COCOeval
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    view = {**coco.dataset, "annotations": [dict(a) for a in coco.dataset["annotations"]]}
    return FasterCOCO(view), COCOeval_faster


def _time_whole(coco: Any, ids: list[int], rows: dict[int, np.ndarray], engine: str) -> dict[str, Any]:
    """pycocotools or faster-coco-eval from the rows, phase by phase; all of it after the last batch."""
    t = [time.perf_counter()]
    dicts = rows_to_dicts(np.concatenate([rows[i] for i in ids]))
    with quiet_cocoeval():
        gt, cocoeval = _indexed(coco, engine)
        t.append(time.perf_counter())
        ev = cocoeval(gt, gt.loadRes(dicts), iouType="bbox")
        ev.params.imgIds = list(ids)
        t.append(time.perf_counter())
        ev.evaluate()
        t.append(time.perf_counter())
        ev.accumulate()
        ev.summarize()
        t.append(time.perf_counter())
    names = ("dicts_s", "load_res_s", "evaluate_s", "accumulate_summarize_s")
    total = t[-1] - t[0]
    return {
        "stats": [float(v) for v in list(ev.stats)[: len(STAT_NAMES)]],
        **dict(zip(names, np.diff(t).tolist(), strict=True)),
        "after_last_batch_s": total,
        "total_s": total,
    }


def run_coco_bench(source: Any, opts: CocoBenchOptions, detections: np.ndarray | None = None) -> dict[str, Any]:
    """Every engine of ``opts.engines`` (faster-coco-eval where installed) on the same workload: synthetic
    detections, or ``detections`` (rows of ``source``'s images, ``repeated_rows``); each engine's seconds,
    stats, and whether the stats equal pycocotools' (``==``)."""
    coco = repeated_ground_truth(source, opts.images)
    if detections is None:
        rows = synthetic_rows(coco, opts.per_image, opts.seed)
    else:
        rows = repeated_rows(source, detections, opts.images)
    ids = sorted(rows)
    report: dict[str, Any] = {
        "images": len(ids),
        "detections": int(sum(len(r) for r in rows.values())),
        "annotations": len(coco.dataset["annotations"]),
        "detections_from": "synthetic" if detections is None else "given",
        "per_image": opts.per_image if detections is None else None,
        "batch_size": opts.batch_size,
        "pace_images_per_s": opts.pace,  # the batches' arrival rate for stream and stream-process (0: at once)
        "engines": {},
    }
    for engine in opts.engines:
        if engine == "faster-coco-eval" and not faster_coco_eval_available():
            report["engines"][engine] = {"skipped": "faster-coco-eval is not installed"}
        elif engine == "stream":
            report["engines"][engine] = _time_stream(coco, ids, rows, opts.batch_size, opts.pace)
        elif engine == "stream-process":
            report["engines"][engine] = _time_process(coco, ids, rows, opts)
        else:
            report["engines"][engine] = _time_whole(coco, ids, rows, engine)
    ref = report["engines"].get("pycocotools", {})
    ref_stats, ref_total = ref.get("stats"), ref.get("total_s")
    for r in report["engines"].values():
        if "stats" in r:
            r["equals_pycocotools"] = r["stats"] == ref_stats if ref_stats is not None else None
            r["after_last_batch_vs_pycocotools_total"] = r["after_last_batch_s"] / ref_total if ref_total else None
            r["stats"] = dict(zip(STAT_NAMES, r["stats"], strict=True))
    return report


def format_coco_bench(report: dict[str, Any]) -> str:
    given = report.get("detections_from") == "given"
    lines = [
        f"COCOeval on the CPU: {report['images']} images, {report['detections']} detections "
        + ("(the given ones, repeated with their images)" if given else f"({report['per_image']} per image)")
        + f", {report['annotations']} annotations"
        + (f"; streamed batches at {report['pace_images_per_s']:g} img/s" if report["pace_images_per_s"] else ""),
        f"{'engine':<18}{'after last batch s':>19}{'total s':>10}{'x pycocotools':>15}  {'AP':>8}  == pycocotools",
    ]
    for name, r in report["engines"].items():
        if "skipped" in r:
            lines.append(f"{name:<18}skipped: {r['skipped']}")
            continue
        ratio = r.get("after_last_batch_vs_pycocotools_total")
        same = {True: "yes", False: "NO", None: "-"}[r["equals_pycocotools"]]
        lines.append(
            f"{name:<18}{r['after_last_batch_s']:>19.2f}{r['total_s']:>10.2f}"
            f"{(f'{ratio:.3f}' if ratio is not None else '-'):>15}  {r['stats']['AP']:>8.4f}  {same}"
        )
        if name == "stream":
            lines.append(
                f"{'':<18}matching {r['match_s']:.2f} s beside the batches ({r['match_images_per_s']:.0f} img/s), "
                f"ground truth indexed in {r['prepare_s']:.2f} s"
            )
        if name == "stream-process":
            lines.append(
                f"{'':<18}sending {r['feed_s_per_batch'] * 1e3:.3f} ms per batch here "
                f"({r['feed_cpu_s_per_batch'] * 1e3:.3f} ms CPU); {r['workers']} worker(s): matching "
                f"{r['worker_match_s']:.2f} s together, accumulate {r['worker_accumulate_s']:.2f} s (slowest), "
                f"started in {r['worker_start_s']:.2f} s"
            )
    return "\n".join(lines)
