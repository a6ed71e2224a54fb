"""The evaluation's options: typed, frozen, validated once when made.

The CLI edge (``common.eval.cli``) makes them from the flags; a library caller makes them directly.
Each range and compatibility check lives here once, in the object's validation; a bad value is an
``OptionError`` naming the parameter (the CLI shows the flag: ``max_det`` -> ``--max-det``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from common.core.checks import check_choice, check_param
from common.core.errors import OptionError, literal
from common.data.coco import COCO_EVAL_ENGINES, DEFAULT_MAX_IMAGES, images_dir_under
from common.model.yolov10 import LAYOUTS, PostprocessOptions

__all__ = [
    "CPU_WARMUP_RUNS",
    "DECODES",
    "DEFAULT_DATA_ROOT",
    "DEFAULT_MAX_IMAGES",
    "GPU_ORDERS",
    "GPU_WARMUP_RUNS",
    "LANE_THREADS",
    "LOADERS",
    "POSTPROCESS_MODES",
    "PREPROCESS_CHOICES",
    "PREPROCESS_MODES",
    "PROCESS_LOADERS_MIN_CORES",
    "PROCESS_LOADERS_MIN_IMAGES",
    "DataOptions",
    "EvalOptions",
    "LaneOptions",
    "OutputOptions",
    "check_choice",
    "check_decode",
    "check_loaders",
    "check_post",
    "default_post_workers",
    "default_workers",
    "resolve_loaders",
    "resolve_warmup_runs",
]

# cpu: OpenCV letterbox + normalise in the loaders (the reference pixels); gpu-normalize: OpenCV letterbox,
# normalised on the GPU; gpu-letterbox: decoded images letterboxed and normalised on the GPU.
PREPROCESS_MODES: tuple[str, ...] = ("cpu", "gpu-normalize", "gpu-letterbox")
# what --preprocess takes: a mode, or auto (gpu-letterbox where the backend can run it, else cpu)
PREPROCESS_CHOICES: tuple[str, ...] = ("auto", *PREPROCESS_MODES)
DECODES: tuple[str, ...] = ("cpu", "gpu")  # JPEG decoding: OpenCV in the loaders | nvImageCodec on the lanes
LOADERS: tuple[str, ...] = ("auto", "threads", "processes")
# --loaders auto runs processes for GPU runs this large on a machine with this many cores (Linux), else threads:
# a many-core GPU host decodes faster in processes, while small runs would spend their time starting them
PROCESS_LOADERS_MIN_IMAGES = 1000
PROCESS_LOADERS_MIN_CORES = 8
POSTPROCESS_MODES: tuple[str, ...] = ("auto", "cpu", "gpu")
GPU_ORDERS: tuple[str, ...] = ("auto", "serial", "overlap")
LANE_WAITS: tuple[str, ...] = ("spin", "sleep")  # --lane-wait: how a lane's thread waits for its batch
# --lane-threads: a thread per lane, or the evaluator's main thread drives every lane (caller_lanes)
LANE_THREADS: tuple[str, ...] = ("per-lane", "main")

DEFAULT_DATA_ROOT = Path("datasets/coco2017/source-data")
# Warm-up runs per lane/session (and per partial-last-batch shape) before anything is timed, for
# ``warmup_runs="auto"``: on a GPU the first run of a CUDA EP session at a new shape pays cuDNN's algorithm
# search (seconds for yolov10m), TensorRT-RTX compiles shape-specialised kernels on its first runs, and a CUDA
# graph is captured after the first plain run; the rest let clocks and the memory arena settle. The CPU EP has
# none of that: one run settles its arena.
GPU_WARMUP_RUNS = 10
CPU_WARMUP_RUNS = 1


def resolve_warmup_runs(requested: int | str, backend: object) -> int:
    """``warmup_runs``: a count as given, or ``auto``: ``CPU_WARMUP_RUNS`` where ONNX Runtime runs on its CPU EP,
    else (a GPU backend) ``GPU_WARMUP_RUNS``."""
    if requested != "auto":
        return int(requested)
    used = list(getattr(backend, "providers_used", None) or [])
    return CPU_WARMUP_RUNS if used[:1] == ["CPUExecutionProvider"] else GPU_WARMUP_RUNS


def default_workers() -> int:
    """Loader threads: one per core, up to 16 (JPEG decoding releases the GIL)."""
    return max(1, min(16, (os.cpu_count() or 2)))


def default_post_workers() -> int:
    return 2 if (os.cpu_count() or 2) >= 4 else 1


def check_decode(decode: str, preprocess: str) -> None:
    """OptionError for a ``decode`` the ``preprocess`` mode can't take (options only; the backend is asked
    separately). ``decode`` gpu needs ``preprocess`` gpu-letterbox given explicitly: ``auto`` may resolve to
    cpu, and the refusal must come before any work."""
    check_choice("decode", decode, DECODES)
    if decode == "gpu" and preprocess != "gpu-letterbox":
        raise OptionError(
            "decode",
            "{decode} gpu needs {preprocess} gpu-letterbox (the lanes letterbox the decoded images), not "
            + literal(preprocess),
        )


def resolve_loaders(requested: str, images: int, decode: str, preprocess: str, cores: int | None = None) -> str:
    """``--loaders auto`` -> ``threads`` or ``processes`` (see ``PROCESS_LOADERS_MIN_IMAGES``): processes when
    the letterbox runs on the GPU (a GPU run), OpenCV decodes, the run has at least that many images and this
    Linux machine at least ``PROCESS_LOADERS_MIN_CORES`` cores. Explicit values are returned as given."""
    if requested != "auto":
        return requested
    cores = (os.cpu_count() or 1) if cores is None else cores
    many = images >= PROCESS_LOADERS_MIN_IMAGES and cores >= PROCESS_LOADERS_MIN_CORES
    gpu_run = preprocess in ("gpu-normalize", "gpu-letterbox")
    return "processes" if many and gpu_run and decode == "cpu" and hasattr(os, "memfd_create") else "threads"


def check_loaders(loaders: str, decode: str = "cpu") -> None:
    """OptionError unless ``loaders`` can run here with ``decode``."""
    check_choice("loaders", loaders, LOADERS)
    if loaders == "processes":
        if not hasattr(os, "memfd_create"):
            raise OptionError("loaders", "{loaders} processes needs Linux (os.memfd_create); use {loaders} threads")
        if decode != "cpu":
            raise OptionError(
                "loaders",
                "{loaders} processes decodes with OpenCV; with {decode} gpu the lanes decode and the "
                "loaders only read files: use {loaders} threads",
            )


def check_post(post: PostprocessOptions) -> None:
    """The decode + NMS thresholds."""
    check_param("conf", post.conf, 0, 1)
    check_param("iou", post.iou, 0, 1, lo_open=True)
    check_param("max_det", post.max_det, 1)
    check_param("pre_nms_topk", post.pre_nms_topk, 1)


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: input size, thresholds, batching, loaders, where pre/post-processing run, timing."""

    imgsz: int = 640
    batch_size: int = 1
    workers: int = field(default_factory=default_workers)
    output_format: str = "auto"  # auto | dfl144 | raw84 | e2e
    output_name: str | None = None  # the detection head among several outputs (None: found by its shape)
    post: PostprocessOptions = field(default_factory=PostprocessOptions)
    warmup_runs: int | str = 0  # runs, or "auto" (``resolve_warmup_runs``: by the backend's device)
    skip_latency: int = 0
    prefetch_batches: int = 2
    post_workers: int = field(default_factory=default_post_workers)
    progress: bool = True
    coco_eval: bool = True  # False: detections only (benchmarks that repeat images)
    coco_engine: str = "auto"  # auto (= stream) | stream | pycocotools | faster-coco-eval (common.data.coco)
    preprocess: str = "cpu"  # cpu | gpu-normalize | gpu-letterbox | auto (eval.modes.resolve_preprocess)
    decode: str = "cpu"  # cpu (OpenCV in the loaders) | gpu (nvImageCodec on the lanes; common.throughput.gpu_decode)
    loaders: str = "threads"  # auto | threads | processes (common.throughput.loader_processes)
    switch_interval_ms: float | None = None  # Python's GIL switch interval during the run (None: leave it)
    postprocess: str = "cpu"  # cpu | gpu | auto (gpu where the backend can, else cpu)
    latency_runs: int = 0  # after the run: N back-to-back single-batch runs on one lane (``latency_pass``); 0: none,
    # or eval.timing.AUTO_LATENCY_RUNS where the lanes overlap on the GPU (the latency then comes from that pass)

    def __post_init__(self) -> None:
        if self.imgsz <= 0:
            raise OptionError("imgsz", "{imgsz} must be a positive multiple of 32, got " + literal(self.imgsz))
        check_post(self.post)
        check_param("batch_size", self.batch_size, 1)
        check_param("workers", self.workers, 0)
        if self.warmup_runs != "auto":
            check_param("warmup_runs", self.warmup_runs, 0)
        check_param("skip_latency", self.skip_latency, 0)
        check_param("latency_runs", self.latency_runs, 0)
        check_param("prefetch_batches", self.prefetch_batches, 1)
        check_param("post_workers", self.post_workers, 1)
        check_param("switch_interval_ms", self.switch_interval_ms, 0, lo_open=True)
        check_choice("output_format", self.output_format, ("auto", *LAYOUTS))
        check_choice("coco_engine", self.coco_engine, COCO_EVAL_ENGINES)
        check_choice("preprocess", self.preprocess, PREPROCESS_CHOICES)
        check_choice("postprocess", self.postprocess, POSTPROCESS_MODES)
        check_decode(self.decode, self.preprocess)
        check_loaders(self.loaders, self.decode)


@dataclass(frozen=True)
class DataOptions:
    """Which COCO images and annotations: ``instances`` / ``images_dir`` default to the standard layout
    under ``data_root``; a relative ``instances`` is taken as given (against the working directory); a relative
    ``images_dir`` too, unless no such folder exists there but one does under ``data_root``
    (``common.data.coco.IMAGES_DIR_RULE``).

    ``max_images``: the first N images by id (None: ``DEFAULT_MAX_IMAGES``; <= 0: all); ``image_ids_list``:
    a text file of ids, all of them evaluated (then ``max_images`` None means the whole list);
    ``skip_unreadable_images``: leave missing or unreadable images out instead of refusing the run."""

    data_root: Path = DEFAULT_DATA_ROOT
    instances: Path | None = None
    images_dir: Path | None = None
    max_images: int | None = None
    image_ids_list: Path | None = None
    skip_unreadable_images: bool = False

    @property
    def instances_path(self) -> Path:
        return self.instances or self.data_root / "annotations" / "instances_val2017.json"

    @property
    def images_path(self) -> Path:
        if self.images_dir is None:
            return self.data_root / "val2017"
        return images_dir_under(self.data_root, self.images_dir)


@dataclass(frozen=True)
class OutputOptions:
    """Where a run writes: ``out`` (metrics JSON; None: a fresh run folder ``tmp/<task>/<timestamp>/``),
    ``detections_out`` (COCO results JSON; None: beside the default metrics, or none when ``out`` is given);
    ``force``: replace existing files this toolkit did not write (``common.core.results`` output policy)."""

    task: str
    out: Path | None = None
    detections_out: Path | None = None
    force: bool = False


@dataclass(frozen=True)
class LaneOptions:
    """Concurrent GPU lanes (execution contexts / sessions, each on its own CUDA stream); ``lanes`` 0: no
    lanes, one plain runner (one context, one stream, one batch at a time) where the backend has one.
    ``lane_wait``: how a lane thread waits for its batch, ``spin`` on a core (CUDA's default, trtexec's
    ``--useSpinWait``) or ``sleep`` until the batch is done (``LANE_WAITS``). ``lane_depth`` (ONNX Runtime's
    lanes): batches a lane's thread keeps enqueued on its stream when the lanes overlap; None: the backend's
    choice (``common.throughput.ort_lanes.OrtCudaBackend``). ``lane_threads`` (``LANE_THREADS``): ``per-lane``,
    each lane has a thread of its own; ``main``, the evaluator's main thread drives every lane
    (``common.throughput.caller_lanes``)."""

    lanes: int = 2
    gpu_order: str = "auto"
    cuda_graph: bool = False
    lane_wait: str = "spin"
    lane_depth: int | None = None
    lane_threads: str = "per-lane"

    @property
    def spin_wait(self) -> bool:
        return self.lane_wait == "spin"

    def __post_init__(self) -> None:
        if self.lanes < 0:
            raise OptionError(
                "lanes", "{lanes} must be >= 0 (0: one plain runner, no threads), got " + literal(self.lanes)
            )
        check_choice("gpu_order", self.gpu_order, GPU_ORDERS)
        check_choice("lane_wait", self.lane_wait, LANE_WAITS)
        check_choice("lane_threads", self.lane_threads, LANE_THREADS)
        if self.lane_depth is not None and self.lane_depth < 1:
            raise OptionError("lane_depth", "{lane_depth} must be auto or >= 1, got " + literal(self.lane_depth))
