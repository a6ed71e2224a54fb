"""The one evaluation loop: any Backend, any YOLOv10 layout, COCO metrics at the end.

Stages run concurrently so the backend never waits on the CPU:

    image ids -> [N loaders (threads, or processes: --loaders): decode + letterbox] -> bounded window of chunks
              -> main thread: batch + backend.submit(batch) / wait, several batches in flight
              -> [post thread: decode + NMS + unletterbox -> COCO rows]
              -> [COCO thread: each batch's rows matched against the ground truth as they come]
              -> COCOeval's accumulate + summarize, after the last batch

A ``DevicePostprocessing`` backend (``--postprocess gpu``, or ``auto`` where its kernels load) returns
final detections instead of head tensors: the post thread then only unletterboxes and writes rows.

Timing: ``timings["latency"]`` is what metrics.json's ``latency`` block holds. For a ``LaneTiming``
backend run pipelined it is each batch's own GPU work (H2D + compute [+ post] + D2H) from CUDA
events on its lane, never time queued behind other batches; when its lanes overlap on the GPU (a
batch's span then holds other lanes' work) it is a lone batch's, from the latency pass after the run
(``--latency-runs``, else ``timing.AUTO_LATENCY_RUNS`` runs); otherwise (the sequential path, plain
backends) the host time of each ``infer``. ``timings["latency_timing"]`` says which.

Before the first image, ``eval.modes`` resolves what runs (input and batch size, where the letterbox and
post-processing run, the detection head); ``eval.timing`` holds the warm-up and the latency pass, and
``eval.coco_feed`` where the streamed COCOeval matches the rows.

OpenCV and NumPy release the GIL for the heavy work, so threads overlap for real.
Results do not depend on the worker count, the batch size or completion order: rows
are gathered per image in image-id order.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from common.core.results import latency_stats
from common.data.coco import CocoDataset, coco_rows, resolve_coco_engine, rows_to_dicts
from common.data.coco_process import ProcessCocoEval
from common.data.images import LetterboxMeta, geometry_table, unletterbox_rows
from common.data.loading import InlineExecutor, LoadedImage, thread_loaders
from common.eval.coco_feed import CocoFeed, coco_feed, coco_stats, coco_timings
from common.eval.modes import detection_head, input_size, resolve_batch_size, resolve_postprocess, with_modes
from common.eval.options import (
    POSTPROCESS_MODES,
    EvalOptions,
    default_post_workers,
    default_workers,
)
from common.eval.protocols import (
    AsyncBackend,
    Backend,
    Batch,
    GpuDetections,
    LaneTiming,
    LoaderFactory,
    LoaderPlan,
    Loaders,
    U8Batch,
)
from common.eval.timing import AUTO_LATENCY_RUNS, latency_pass, latency_record, warmup_for_run
from common.model.yolov10 import PostprocessOptions, check_layout, decode, detect_layout

__all__ = [
    "POSTPROCESS_MODES",
    "EvalOptions",
    "EvalResult",
    "default_post_workers",
    "default_workers",
    "evaluate",
    "in_flight_depth",
]


@dataclass
class EvalResult:
    rows: np.ndarray  # [N, 7] COCO results (common.data.coco.ROW_COLUMNS), per image in image-id order
    stats: dict[str, float]
    summary_table: str
    layout: str
    num_images: int
    batch_size: int
    timings: dict[str, Any]
    _dicts: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def detections(self) -> list[dict[str, Any]]:
        """The rows as COCO results dicts (detections.json), made once when first asked for."""
        if self._dicts is None:
            self._dicts = rows_to_dicts(self.rows)
        return self._dicts

    @property
    def num_detections(self) -> int:
        return int(self.rows.shape[0])


def _make_batch(items: list[LoadedImage], mode: str, size: int, decode: str = "cpu") -> Batch:
    if mode != "cpu":
        return U8Batch(mode, [it.tensor for it in items], [it.meta for it in items], size, decode)
    return items[0].tensor[None] if len(items) == 1 else np.stack([it.tensor for it in items])


LOAD_CHUNK = 4  # images per loader task, at least (``load_window``)
# GPU post-processing's final rows of smaller batches are turned into COCO rows this many images at a time
# (``_Stages.finish``): the same rows, a fraction of the per-call host cost at batch 1
POST_GROUP_IMAGES = 16


def _batches(ids: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _postprocess(
    metas: list[tuple[int, LetterboxMeta]],
    outputs: list[np.ndarray],
    layout: str,
    input_hw: tuple[int, int],
    dataset: CocoDataset,
    post: PostprocessOptions,
) -> tuple[list[np.ndarray], float]:
    """One batch's outputs -> each image's COCO rows ([K, 7] arrays): decode + NMS per image on the CPU
    (or the final rows of GPU post-processing), then unletterbox and rows for the whole batch at once."""
    t0 = time.perf_counter()
    out = outputs[0]
    b = len(metas)
    if isinstance(out, GpuDetections):
        counts = out.counts[:b].astype(np.int64)
        final = out.rows[:b][np.arange(out.rows.shape[1]) < counts[:, None]]  # image by image, rank order
        boxes, scores, classes = final[:, :4], final[:, 4], final[:, 5].astype(np.int64)
    else:
        dets = [decode(out[j], layout, input_hw, post) for j in range(b)]
        counts = np.array([len(d) for d in dets], np.int64)
        boxes = np.concatenate([d.boxes for d in dets]).reshape(-1, 4)
        scores = np.concatenate([d.scores for d in dets])
        classes = np.concatenate([d.classes for d in dets]).astype(np.int64)
    which = np.repeat(np.arange(b), counts)
    keep = dataset.class_to_category[classes] >= 0 if classes.size else np.zeros(0, bool)
    which = which[keep]
    xyxy = unletterbox_rows(boxes[keep], geometry_table([m for _, m in metas])[which])
    ids = np.array([i for i, _ in metas], np.int64)[which]
    rows = coco_rows(ids, xyxy, scores[keep], classes[keep], dataset.class_to_category)
    per_image = np.split(rows, np.cumsum(np.bincount(which, minlength=b))[:-1])
    return per_image, time.perf_counter() - t0


def _executor(workers: int, prefix: str) -> cf.ThreadPoolExecutor | InlineExecutor:
    return cf.ThreadPoolExecutor(workers, thread_name_prefix=prefix) if workers > 0 else InlineExecutor()


@contextlib.contextmanager
def _switch_interval(ms: float | None) -> Iterator[None]:
    """A shorter GIL switch interval lets threads that wake from a GPU wait or a C call get the
    interpreter back sooner (CPython's default is 5 ms); restored afterwards."""
    if ms is None:
        yield
        return
    old = sys.getswitchinterval()
    sys.setswitchinterval(ms / 1000.0)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def in_flight_depth(backend: Backend) -> int:
    """How many batches the pipeline keeps submitted: ``max_in_flight`` for an ``AsyncBackend``
    (``submit(batch) -> token``, ``wait(token) -> outputs``), else 1 (plain ``infer``)."""
    return max(1, int(backend.max_in_flight)) if isinstance(backend, AsyncBackend) else 1


class _Stages:
    """The state of one ``evaluate`` run between its stages: the window of images being loaded,
    the batches being post-processed, the rows gathered per image and the per-stage seconds."""

    def __init__(
        self,
        dataset: CocoDataset,
        ids: list[int],
        size: int,
        opts: EvalOptions,
        loaders: Loaders,
        posters: cf.ThreadPoolExecutor | InlineExecutor,
        window: int,
        bar: tqdm,
    ) -> None:
        self.dataset, self.size, self.opts = dataset, size, opts
        self.loaders, self.posters, self.window, self.bar = loaders, posters, window, bar
        self.layout = None if opts.output_format == "auto" else opts.output_format
        self.head = 0  # which of the backend's outputs is the detection head (``detection_head``)
        self._checked = False
        self._queue = iter(ids)
        self._pending: deque[tuple[int, cf.Future[list[LoadedImage]]]] = deque()  # (images, chunk being loaded)
        self._loading = 0  # images in ``_pending``
        self._ready: deque[LoadedImage] = deque()
        self.chunk = chunk_size(window, opts.workers)
        # (image ids, batches, post-processing of them)
        self._in_post: deque[tuple[list[int], int, cf.Future[tuple[list[np.ndarray], float]]]] = deque()
        self._grouped: list[tuple[list[tuple[int, LetterboxMeta]], GpuDetections]] = []  # not yet post-processed
        self._grouped_images = 0
        self.per_image: dict[int, np.ndarray] = {}
        self.coco: CocoFeed | None = None  # fed each batch's rows as they are gathered
        self.pre_s: list[float] = []
        self.infer_s: list[float] = []
        self.post_s: list[float] = []

    def refill(self) -> None:
        """Keep ``window`` images loading or loaded, in chunks of ``chunk`` images per loader task."""
        while self._loading + len(self._ready) < self.window:
            jobs = [(i, str(self.dataset.image_path(i))) for i in itertools.islice(self._queue, self.chunk)]
            if not jobs:
                return
            self._pending.append((len(jobs), self.loaders.load(jobs)))
            self._loading += len(jobs)

    def next_batch(self, n: int) -> tuple[Batch, list[tuple[int, LetterboxMeta]]]:
        """The next ``n`` loaded images as one batch, with their ids and letterbox geometry."""
        while len(self._ready) < n:
            count, fut = self._pending.popleft()
            self._loading -= count
            self._ready.extend(fut.result())
        items = [self._ready.popleft() for _ in range(n)]
        self.refill()
        self.pre_s.extend(it.seconds for it in items)
        batch = _make_batch(items, self.opts.preprocess, self.size, self.opts.decode)
        return batch, [(it.image_id, it.meta) for it in items]

    def finish(self, metas: list[tuple[int, LetterboxMeta]], outputs: list[np.ndarray], t0: float) -> None:
        """A batch came back from the backend: time it, check the layout once, post-process it (final rows
        of GPU post-processing: ``POST_GROUP_IMAGES`` images at a time)."""
        self.infer_s.append(time.perf_counter() - t0)
        if isinstance(outputs[0], GpuDetections):  # the layout was fixed (and checked) when it was enabled
            self._grouped.append((metas, outputs[0]))
            self._grouped_images += len(metas)
            if self._grouped_images >= POST_GROUP_IMAGES:
                self._flush_group()
        else:
            outputs = [outputs[self.head]]  # the detection head (``find_head``) of the model's outputs
            if self.layout is None:
                self.layout = detect_layout(outputs[0].shape)
            elif not self._checked:
                check_layout(self.layout, outputs[0].shape)
            self._checked = True
            self._post(metas, outputs, 1)
        self.collect(limit=2 * max(1, self.opts.post_workers))
        self.bar.update(len(metas))

    def _post(self, metas: list[tuple[int, LetterboxMeta]], outputs: list[Any], batches: int) -> None:
        args = (metas, outputs, self.layout, (self.size, self.size), self.dataset, self.opts.post)
        self._in_post.append(([m[0] for m in metas], batches, self.posters.submit(_postprocess, *args)))

    def _flush_group(self) -> None:
        """Post-process the batches of final rows held back so far, as one."""
        if not self._grouped:
            return
        if len(self._grouped) == 1:
            (metas, dets), batches = self._grouped[0], 1
        else:
            metas = [m for part, _ in self._grouped for m in part]
            dets = GpuDetections(
                np.concatenate([d.rows[: len(m)] for m, d in self._grouped]),
                np.concatenate([d.counts[: len(m)] for m, d in self._grouped]),
            )
            batches = len(self._grouped)
        self._grouped, self._grouped_images = [], 0
        self._post(metas, [dets], batches)

    def collect(self, limit: int) -> None:
        """Gather post-processed rows until at most ``limit`` posts are still running (``limit`` 0: every
        batch, those held back for a group too)."""
        if limit == 0:
            self._flush_group()
        while len(self._in_post) > limit:
            image_ids, batches, fut = self._in_post.popleft()
            rows, seconds = fut.result()
            self.post_s.extend([seconds / batches] * batches)  # per batch, as the backend ran them
            self.per_image.update(zip(image_ids, rows, strict=True))
            if self.coco is not None:
                self.coco.add(image_ids, rows)

    def cancel(self) -> None:
        self._grouped, self._grouped_images = [], 0
        for _, f in self._pending:
            f.cancel()


def _run_batches(backend: Backend, stages: _Stages, ids: list[int], batch_size: int, depth: int) -> None:
    """Feed every batch through ``backend``: ``depth`` submitted at once for an ``AsyncBackend``
    (depth >= 2), else one ``infer`` after the other."""
    stages.refill()
    if depth >= 2 and isinstance(backend, AsyncBackend):
        _run_async(backend, stages, ids, batch_size, depth)
    else:
        for chunk in _batches(ids, batch_size):
            batch, metas = stages.next_batch(len(chunk))
            t0 = time.perf_counter()
            stages.finish(metas, backend.infer(batch), t0)
            del batch
    stages.collect(limit=0)


def _run_async(backend: AsyncBackend, stages: _Stages, ids: list[int], batch_size: int, depth: int) -> None:
    in_flight: deque[tuple[Any, list[tuple[int, LetterboxMeta]], float]] = deque()
    for chunk in _batches(ids, batch_size):
        batch, metas = stages.next_batch(len(chunk))
        t0 = time.perf_counter()
        in_flight.append((backend.submit(batch), metas, t0))
        del batch
        while len(in_flight) >= depth:
            token, done_metas, t_sub = in_flight.popleft()
            stages.finish(done_metas, backend.wait(token), t_sub)
    while in_flight:
        token, done_metas, t_sub = in_flight.popleft()
        stages.finish(done_metas, backend.wait(token), t_sub)


def load_window(workers: int, batch_size: int, prefetch_batches: int) -> int:
    """Images kept loading or loaded ahead of the backend: ``prefetch_batches`` batches, and at least
    ``LOAD_CHUNK`` per loader, so that every loader gets whole chunks (one hand-off between threads or
    processes per chunk, not per image)."""
    return max(workers * LOAD_CHUNK, batch_size * max(1, prefetch_batches))


def chunk_size(window: int, workers: int) -> int:
    """Images per loader task: enough tasks to keep every loader busy over the window, at most
    2 x ``LOAD_CHUNK``."""
    return max(1, min(2 * LOAD_CHUNK, window // max(1, workers)))


def _loaders(
    opts: EvalOptions,
    dataset: CocoDataset,
    size: int,
    window: int,
    in_flight_images: int,
    factory: LoaderFactory | None,
) -> Loaders:
    """The run's loaders from ``factory`` (default: threads; inline when ``workers`` is 0), with a slot for
    every image loading (``window``) or held by a batch in flight."""
    slots = window + in_flight_images
    plan = LoaderPlan(opts.workers, size, opts.preprocess, opts.decode, slots, dataset, opts.loaders)
    if factory is None and (opts.decode != "cpu" or opts.loaders != "threads"):
        raise ValueError(f"--decode {opts.decode} / --loaders {opts.loaders} need their loader factory (eval.cli)")
    return (factory or thread_loaders)(plan)


def _run_stages(
    backend: Backend,
    dataset: CocoDataset,
    opts: EvalOptions,
    loaders: Loaders,
    size: int,
    window: int,
    batch_size: int,
    depth: int,
    post_layout: str | None,
    coco: CocoFeed | None,
) -> tuple[_Stages, float]:
    """Every batch through load -> backend -> post (-> ``coco``): (the stages' state, wall seconds)."""
    sequential = opts.workers <= 0
    ids = dataset.image_ids
    t_start = time.perf_counter()
    with (
        _switch_interval(opts.switch_interval_ms),
        _executor(0 if sequential else max(1, opts.post_workers), "post") as posters,
        tqdm(total=len(ids), desc=f"eval[{backend.name}]", unit="img", disable=not opts.progress) as bar,
    ):
        stages = _Stages(dataset, ids, size, opts, loaders, posters, window, bar)
        stages.layout = post_layout or stages.layout
        stages.head = detection_head(backend, opts)
        stages.coco = coco
        try:
            _run_batches(backend, stages, ids, batch_size, depth)
        except BaseException:
            stages.cancel()
            raise
    return stages, time.perf_counter() - t_start


def evaluate(
    backend: Backend, dataset: CocoDataset, opts: EvalOptions, loader_factory: LoaderFactory | None = None
) -> EvalResult:
    """Run ``backend`` over the dataset's selected images and score them with COCOeval.

    ``opts.workers == 0`` is the sequential path: load, infer and post-process one after
    the other in this thread. It gives the same detections as any parallel setting.
    ``loader_factory`` makes the image loaders (default: OpenCV in ``opts.workers`` threads); the throughput wing
    plugs in loader processes or device decoding here.
    """
    size = input_size(backend, opts.imgsz)
    batch_size = resolve_batch_size(backend, opts.batch_size)
    opts, prep = with_modes(backend, opts, len(dataset.image_ids))  # what runs, for the loaders and batches
    explicit = None if opts.output_format == "auto" else opts.output_format
    head = detection_head(backend, opts)
    post_mode, post_layout, post_why = resolve_postprocess(backend, opts.postprocess, explicit, size, opts.post, head)
    ids, sequential = dataset.image_ids, opts.workers <= 0
    window = batch_size if sequential else load_window(opts.workers, batch_size, opts.prefetch_batches)
    depth = 1 if sequential else in_flight_depth(backend)
    engine = resolve_coco_engine(opts.coco_engine) if opts.coco_eval else None
    lane_timed = isinstance(backend, LaneTiming)
    lone = not sequential and lane_timed and backend.gpu_overlap  # latency from a lone batch (the latency pass)
    latency_runs = opts.latency_runs or (AUTO_LATENCY_RUNS if lone else 0)
    # the loaders first: their processes boot while the ground truth is indexed and the backend warms up
    t_open = time.perf_counter()
    with (
        _loaders(opts, dataset, size, window, (depth + 2) * batch_size, loader_factory) as loaders,
        coco_feed(dataset, engine, sequential) as coco,
    ):
        runs, start = _warm_up(backend, loaders, coco, len(ids), batch_size, size, opts.warmup_runs, t_open)
        lane_start = len(backend.gpu_ms) if lane_timed else 0
        stages, wall = _run_stages(backend, dataset, opts, loaders, size, window, batch_size, depth, post_layout, coco)
        if latency_runs > 0:
            jobs = [(i, str(dataset.image_path(i))) for i in ids[:batch_size]]
            first = loaders.load(jobs).result()

    parts = [stages.per_image[i] for i in dict.fromkeys(ids)]
    rows = np.concatenate(parts) if parts else np.zeros((0, 7), np.float64)
    t0 = time.perf_counter()
    stats, table = coco_stats(coco, dataset, rows, engine)
    eval_s = time.perf_counter() - t0  # all of COCOeval but the streamed matching: after the last batch
    n = len(ids)
    inference = latency_stats(stages.infer_s, skip=opts.skip_latency, items_per_sample=batch_size)
    gpu_s = [ms / 1000.0 for ms in backend.gpu_ms[lane_start:]] if lane_timed else []
    lone_pass = _lone_pass(backend, first, size, opts, latency_runs) if latency_runs > 0 else None
    latency, latency_timing = latency_record(inference, gpu_s, lone_pass, lone, opts.skip_latency, batch_size)
    timings = {
        "preprocess": latency_stats(stages.pre_s),
        "inference": inference,  # host: submit to outputs back, queueing included when pipelined
        "inference_gpu": latency_stats(gpu_s, skip=opts.skip_latency, items_per_sample=batch_size) if gpu_s else None,
        "latency": latency,
        "latency_timing": latency_timing,
        "postprocess": latency_stats(stages.post_s, items_per_sample=batch_size),
        "eval_seconds": eval_s,
        "coco_eval_after_last_batch_s": eval_s,
        "coco_engine": engine,  # the implementation that ran (None: no COCOeval)
        "coco_engine_requested": opts.coco_engine,
        **coco_timings(coco),
        "wall_seconds": wall,
        "end_to_end_images_per_s": n / wall if wall > 0 else 0.0,
        "workers": opts.workers,
        "batch_size": batch_size,
        "mode": "sequential" if sequential else ("pipelined-async" if depth >= 2 else "pipelined"),
        "preprocess_mode": opts.preprocess,
        **prep,
        "decode": opts.decode,
        "loaders": opts.loaders if not sequential else "inline",
        "loaders_start_seconds": loaders.start_seconds,  # processes: start to ready, overlapping the warm-up
        "load_chunk": stages.chunk,
        "postprocess_mode": post_mode,
        "postprocess_requested": opts.postprocess,
        "postprocess_fallback": post_why,
        "switch_interval_ms": opts.switch_interval_ms,
        "in_flight": depth,
        "warmup_runs": runs,
        "start_seconds": start,  # before the first image: opening the COCO feed and loaders, warm-up, waiting
    }
    if lone_pass is not None:
        timings["latency_pass"] = lone_pass
    return EvalResult(rows, stats, table, stages.layout or "unknown", n, batch_size, timings)


def _lone_pass(backend: Backend, items: list[LoadedImage], size: int, opts: EvalOptions, runs: int) -> dict[str, Any]:
    """The latency pass (``timing.latency_pass``) on the run's first images, batched as the run batched them."""
    return latency_pass(backend, _make_batch(items, opts.preprocess, size, opts.decode), len(items), opts, runs)


def _warm_up(
    backend: Backend,
    loaders: Loaders,
    coco: CocoFeed | None,
    n: int,
    batch_size: int,
    size: int,
    runs: int | str,
    t_open: float,
) -> tuple[int, dict[str, float]]:
    """The warm-up (``warmup``), then wait for loaders still booting (started before it, so not in the timed
    run), then start the COCO worker processes: the runs made, and where the time since ``t_open`` (opening
    the COCO feed and loaders) went."""
    t_warm = time.perf_counter()
    made = warmup_for_run(backend, n, batch_size, size, runs)
    t_ready = time.perf_counter()
    loaders.ready()
    if isinstance(coco, ProcessCocoEval):
        coco.start()  # now: their boot would slow the loaders' and the warm-up; the batches wait in its queue
    now = time.perf_counter()
    return made, {
        "open": t_warm - t_open,
        "warmup": t_ready - t_warm,
        "loaders_wait": now - t_ready,
        "total": now - t_open,
    }
