"""What every lane-backed GPU backend (ONNX Runtime IO binding, TensorRT) does the same way.

``LaneBackend`` is the shell around a ``common.throughput.lanes.LanePool``: submit / wait / infer, lane-event
timing (``LaneTiming``), turning GPU pre- and post-processing on and off on every lane, the latency
pass, the shared part of ``metadata`` and closing the lanes' stagers and post-processors. A subclass
sets the attributes below in its ``__init__``, builds its lanes and hands them to ``_start_lanes``;
it says only what one of its lanes enqueues (``_enqueue``) and what its input/outputs are.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Sequence
from typing import Any

from common.core.errors import UserError
from common.core.results import latency_stats
from common.throughput.caller_lanes import CallerLanePool
from common.throughput.gpu_preprocess import check_float_input
from common.throughput.lanes import Collect, Lane, LanePool, PostSetup, Staged

__all__ = ["GPU_ORDERS", "LaneBackend", "checked_lane_threads", "resolve_gpu_order"]

from common.eval.options import GPU_ORDERS, LANE_THREADS

GPU_ORDER_TEXT = {
    False: "serial (one batch at a time on the GPU, the host side pipelined)",
    True: "overlap (lanes run concurrently; a batch's span includes other lanes' work)",
}


# auto: blocking (per-kernel) runs overlap below this batch size; graph replays up to GRAPH_OVERLAP_MAX_BATCH
BLOCKING_OVERLAP_BELOW = 16
GRAPH_OVERLAP_MAX_BATCH = 1


def resolve_gpu_order(order: str, synchronous_runs: bool, batch: int, graph_replays: bool = False) -> bool:
    """``--gpu-order`` -> overlap? ``auto``: serial, except

    - for a backend whose runs block the host while the GPU works (ONNX Runtime without a CUDA graph) at
      batches below ``BLOCKING_OVERLAP_BELOW``: there one lane cannot launch its next batch's kernels while
      the GPU runs, so serial lanes leave the GPU waiting for the host and overlapping lanes keep it busy;
      from batch 16 a batch's GPU work is long against the launches, and overlapping lanes only contend;
    - for ONNX Runtime lanes replaying CUDA graphs (``graph_replays``) at batch 1: one image's kernels do not
      fill the GPU, and concurrent replays on the lanes' streams get more images through it; larger
      batches fill it and would only contend.

    Where the lanes overlap, the evaluator reports the latency of a lone batch (its latency pass)."""
    if order not in GPU_ORDERS:
        raise UserError(f"--gpu-order {order}: choose one of {', '.join(GPU_ORDERS)}")
    if order == "auto":
        if graph_replays:
            return batch <= GRAPH_OVERLAP_MAX_BATCH
        return synchronous_runs and batch < BLOCKING_OVERLAP_BELOW
    return order == "overlap"


def checked_lane_threads(value: str) -> str:
    """``value`` if it is one of ``LANE_THREADS`` (ValueError otherwise), checked before a backend makes anything."""
    if value not in LANE_THREADS:
        raise ValueError(f"lane_threads must be one of {', '.join(LANE_THREADS)}, got {value!r}")
    return value


class LaneBackend:
    """Base of ``OrtCudaBackend`` and ``TrtBackend``: an ``AsyncBackend`` with ``DevicePreprocessing``,
    ``DevicePostprocessing`` and ``LaneTiming`` (common.eval.protocols) over ``_lanes``."""

    mem: Any  # common.gpu.cuda_mem.MemoryLayer
    device_id: int = 0
    preprocess: str = "cpu"
    max_in_flight: int = 1
    lane_threads: str = "per-lane"  # LANE_THREADS: a thread per lane, or the caller's thread drives every lane
    _lanes: LanePool
    _prep: Any = None  # GpuPreprocessor, made on the first enable_device_preprocess
    _prep_factory: Callable[[], Any] | None = None  # tests hand in a host double
    _post: PostSetup | None = None
    decode: str = "cpu"  # --decode: where the JPEGs are decoded (gpu: enable_device_decode)
    _decoder_factory: Callable[[], Any] | None = None  # tests hand in nvImageCodec's CPU backend
    _post_kernels: Callable[[], Any] | None = None  # tests hand in a host double

    def _start_lanes(
        self, lanes: Sequence[Lane], name: str, overlap: bool, twins: Sequence[Sequence[Lane]] = ()
    ) -> None:
        """The pool over ``lanes`` (and their ``twins``): ``common.throughput.lanes.LanePool``, a thread per lane,
        or with ``lane_threads`` ``main`` ``common.throughput.caller_lanes.CallerLanePool``, driven by the
        thread that makes the backend."""
        pool = CallerLanePool if self.lane_threads == "main" else LanePool
        self._lanes = pool(
            lanes, self._enqueue, name, overlap=overlap, prepare=self._prepare, twins=twins, pipelines=self._pipelines
        )
        self.max_in_flight = self._lanes.max_in_flight

    def _pipelines(self, twin: Lane, batch: Any) -> bool:
        """Whether ``batch`` may run on ``twin`` while its lane's last batch is still on the stream (default: no)."""
        return False

    def _prepare(self, lane: Lane, batch: Any) -> Staged:
        """A batch's host work and upload on ``lane`` before its turn on the GPU (default: none)."""
        return Staged(batch)

    def _enqueue(self, lane: Lane, batch: Any) -> Collect:
        raise NotImplementedError

    def _check_batch(self, batch: Any) -> None:
        """UserError for a batch the lanes can't take (before it is queued)."""

    @property
    def gpu_ms(self) -> list[float]:
        """Lane-event ms of every batch run so far (H2D + compute [+ post] + D2H)."""
        return self._lanes.gpu_ms

    @property
    def gpu_overlap(self) -> bool:
        """True when the lanes' GPU work may overlap (then a batch's span includes other lanes' work)."""
        return self._lanes.overlap

    # ------------------------------------------------------------------ GPU pre/post-processing
    def enable_device_preprocess(self, mode: str) -> None:
        """Accept ``U8Batch`` of ``mode`` from now on (compiles the kernels once)."""
        if mode == "cpu":
            return
        spec = self._input  # type: ignore[attr-defined]  # the model's/engine's own input tensor
        check_float_input(mode, spec.name, spec.dtype)
        if self._prep is None:
            if self._prep_factory is not None:
                self._prep = self._prep_factory()
            else:
                from common.throughput.gpu_preprocess import GpuPreprocessor

                self._prep = GpuPreprocessor(self.device_id)
        self._lanes.set_preprocess(self.mem, self._prep, mode)
        self.preprocess = mode

    def enable_device_decode(self, decode: str) -> None:
        """``gpu``: from now on gpu-letterbox batches come encoded and each lane decodes its batch on its
        stream (``common.throughput.gpu_decode``, nvImageCodec); ``cpu``: decoded by the loaders again.
        ``EvalOptions`` allows ``gpu`` only with the gpu-letterbox preprocessing, enabled before this call."""
        if decode == "cpu":
            if self.preprocess == "gpu-letterbox":
                self._lanes.set_decoders(None)
            self.decode = "cpu"
            return
        make = self._decoder_factory
        if make is None:
            import os

            from common.throughput.gpu_decode import ImageDecoder

            threads = max(1, (os.cpu_count() or 2) // max(1, len(self._lanes.lanes)))  # the lanes share the cores
            make = lambda: ImageDecoder(self.device_id, "gpu", cpu_threads=threads)  # noqa: E731
        self._lanes.set_decoders(make)
        self.decode = decode

    def _set_postprocess(
        self, layout: str, input_hw: tuple[int, int], opts: Any, dims: tuple[int, ...], dtype: Any, max_batch: int
    ) -> None:
        """Every lane post-processes outputs ``[B, *dims]`` of ``dtype`` on the GPU from now on."""
        kernels = self._post_kernels() if self._post_kernels is not None else None
        if kernels is None:
            from common.throughput.gpu_postprocess import postprocess_kernels

            kernels = postprocess_kernels(self.device_id)
        setup = PostSetup(layout, input_hw, opts, dims, dtype, max_batch, kernels)
        self._lanes.set_postprocess(setup, self.mem)
        self._post = setup

    def disable_device_postprocess(self) -> None:
        """Return head tensors again (``--postprocess cpu`` on a backend that had it enabled)."""
        self._lanes.set_postprocess(None, self.mem)
        self._post = None

    # ------------------------------------------------------------------ running
    def submit(self, batch: Any) -> cf.Future[list[Any]]:
        self._check_batch(batch)
        return self._lanes.submit(batch, self._lane_for(batch))

    def _lane_for(self, batch: Any) -> int | None:
        """The lane ``batch`` must run on (None: whichever is free)."""
        return None

    def wait(self, token: cf.Future[list[Any]]) -> list[Any]:
        return self._lanes.wait(token)

    def infer(self, batch: Any) -> list[Any]:
        return self.wait(self.submit(batch))

    def latency_runs(self, batch: Any, runs: int) -> dict[str, list[float]]:
        """``runs`` back-to-back single-batch runs of ``batch`` on the first lane, nothing else in flight:
        lane-event GPU ms and host ms per run (``LaneTiming``)."""
        gpu, host = self._lanes.timed_runs(batch, runs)
        return {"gpu_ms": gpu, "host_ms": host}

    def _lane_metadata(self) -> dict[str, Any]:
        return {
            "lanes": len(self._lanes.lanes),
            "lane_depth": self._lanes.depth,  # batches a lane's thread keeps enqueued on its stream
            "in_flight": self.max_in_flight,
            "preprocess": self.preprocess,
            "decode": self.decode,
            "postprocess": self._post.describe() if self._post is not None else None,
            "gpu_order": GPU_ORDER_TEXT[self._lanes.overlap],
            "lane_wait": "spin" if self._lanes.lanes[0].spin_wait else "sleep",  # how a lane thread waits for its batch
            "lane_threads": self.lane_threads,
            # how event records, async copies and stream waits reach the driver (common.gpu.cuda_mem.DRIVER_CALLS)
            "driver_calls": getattr(self.mem, "driver_calls", None),
            # CUDA events on each batch's lane: H2D + compute (+ GPU post) + D2H, per batch
            "gpu_compute_ms": latency_stats([ms / 1000 for ms in self.gpu_ms]),
            "gpu_compute_ms_covers": "h2d+compute+postprocess+d2h (lane events)",
        }

    def _close_lane_extras(self) -> None:
        """Each lane's and twin's stager and post-processor, then the shared pre-processing kernels."""
        for lane in self._lanes.all_lanes:
            w = lane.worker
            if w.stager is not None:
                w.stager.close()
                w.stager = None
            if w.post is not None:
                w.post.close()
                w.post = None
        if self._prep is not None:
            self._prep.close()
            self._prep = None
