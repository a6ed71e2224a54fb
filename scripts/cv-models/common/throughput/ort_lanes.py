"""ONNX Runtime CUDA EP with IO binding: lanes of (session, stream, pinned + device buffers).

``OrtCudaBackend`` runs ``lanes`` ORT sessions of the same model, each on its own CUDA
stream (CUDA EP option ``user_compute_stream``) in its own thread (``lane_threads`` ``main``: all of them in
the thread that makes the backend, ``common.throughput.caller_lanes``):

    lane thread: batch -> pinned --H2D--> bound input; ORT run (IO binding);
                 [GPU post-processing]; bound outputs (or final rows) --D2H--> pinned; copy out

The buffers, streams, events, threads and in-flight depth are ``common.throughput.lanes`` (shared with
the TensorRT backend); this module only says what one ORT lane enqueues.

A batch runs on whichever lane is free (a partial last batch: on the first lane, the only one warmed at its
shape). The pipeline keeps a batch per lane (and twin) submitted and more queued (``LanePool.max_in_flight``),
so a free lane always finds the next batch waiting: one lane's copies, kernel launches and
output copy overlap the others' kernels. Sessions get one intra-op thread and no spinning
(the GPU does the work; spinning CPU threads would only take cores from the loaders).

With ``enable_device_preprocess`` a lane also takes ``U8Batch`` (common.throughput.gpu_preprocess):
uint8 images go up and an NVRTC kernel writes the float input in place. ORT runs stay
synchronous (its default) except with a CUDA graph: letting per-kernel runs return early
(``disable_synchronize_execution_providers``) makes ONNX Runtime free pinned buffers inside a CUDA host
callback and abort the process (CUDA failure 800 in cudaFreeHost).

CUDA graph (the default where ORT can capture; ``--cuda-graph`` insists): each lane's session captures the
model once, at ``max_batch``, when the backend is made (``warmup``: lanes one at a time, each on its own
thread, nothing else in flight), and replays it for every full batch. A partial last batch runs at its own
shape in a plain session (no graph) of its own on the first lane's stream, made at the partial shape's first
warm-up or run: cuDNN may choose other kernels at another shape, so a padded batch would not give the same
outputs to the last bit; and a run outside the graph in the graph's own session can hand the graph's memory
to other tensors, so that the next replay reads freed memory (CUDA error 700, an illegal address). Replays
return once the graph is launched, so the lane's kernels and events follow on the GPU with no host gap, and a
batch's lane-event span is its GPU time (the launch-bound spans of per-kernel ORT runs at small batches vary
with host load). A graph needs every node on the CUDA EP (ORT refuses the session otherwise), so no run
stages host memory.

With ``enable_device_postprocess`` (``DevicePostprocessing``) a lane runs ``common.throughput.gpu_postprocess``
on its stream after the ORT run and copies back only the final rows: ``infer`` / ``wait`` return
``[GpuDetections]``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.eval.protocols import TensorSpec
from common.gpu.cuda_mem import CudaMemory
from common.ort.options import CUDA_EP
from common.ort.session import OrtBackend
from common.throughput.gpu_preprocess import U8Batch, U8Stager
from common.throughput.lane_backend import LaneBackend, checked_lane_threads, resolve_gpu_order
from common.throughput.lanes import Collect, Lane, Staged, Staging

__all__ = [
    "OrtCudaBackend",
]


# ORT's CUDA EP makes its regular runs first (allocating), then captures: warm-up runs per lane, enough for both
GRAPH_WARMUP_RUNS = 3
PARTIAL_BATCH_LANE = 0  # the lane a partial batch runs on (``OrtCudaBackend._lane_of``)
GRAPH_MODES = ("auto", "on", "off")


def _graph_run_options() -> Any:
    """Run options for CUDA-graph lanes: the run returns once the graph is launched on the lane's stream (no
    stream synchronisation inside ORT), so our post-processing, copies and end event follow it on the GPU
    with no host gap between them. Only with a graph: a graph's nodes are all on the CUDA EP (ORT refuses
    the session otherwise), so no run stages host memory that ORT would free from a stream callback (what
    aborts early-returning runs without a graph with CUDA error 800)."""
    import onnxruntime as ort

    opts = ort.RunOptions()
    opts.add_run_config_entry("disable_synchronize_execution_providers", "1")
    # ORT's default graph annotation, set explicitly: newer ORT Pythons look this entry up on every
    # run_with_iobinding, and an absent entry costs a C++ exception per run while holding the GIL
    opts.add_run_config_entry("gpu_graph_id", "0")
    return opts


def _close_sessions(lanes: list[Lane]) -> None:
    """Each lane's sessions (its own and its plain one) and their IO bindings."""
    for lane in lanes:
        w = lane.worker
        w.io.clear()
        w.plain_io.clear()
        for sess in (w.backend, w.plain):
            if sess is not None:
                sess.close()
        w.plain = None


def _free_lanes(lanes: list[Lane]) -> None:
    """Each lane's input/output buffers, then its stream and events (its session closed already)."""
    for lane in lanes:
        for buf in (lane.worker.inp, *lane.worker.outs):
            buf.free()
        lane.close()


@dataclass
class _OrtBatch:
    """A batch uploaded to its lane: its size and the pre-processing kernel to run first (U8 batches)."""

    batch: int
    launch: Callable[[int, Any], None] | None


@dataclass
class _OrtLane:
    """What one lane owns beside its stream and events (``common.throughput.lanes.Lane``)."""

    backend: OrtBackend  # the lane's own session
    io: dict[int, Any]  # batch size -> IO binding over the same buffers
    inp: Staging
    outs: list[Staging]
    plain: OrtBackend | None = None  # graph lanes: the plain session of partial batches (``_plain``)
    plain_io: dict[int, Any] = field(default_factory=dict)  # its IO bindings, as ``io``
    stager: U8Stager | None = None  # uint8 staging for U8Batch (enable_device_preprocess)
    post: Any = None  # GpuPostprocessor (enable_device_postprocess)


class OrtCudaBackend(LaneBackend):
    """The CUDA EP behind IO binding, ``lanes`` sessions deep: an ``AsyncBackend`` with
    ``DevicePreprocessing``, ``DevicePostprocessing``, ``LaneTiming`` (``common.throughput.lane_backend``)
    and ``Warmup`` (common.eval.protocols). ``gpu_order``: ``common.throughput.lane_backend.resolve_gpu_order``.

    CUDA graph (module docstring): the CUDA EP option ``enable_cuda_graph`` ``"1"`` (``--cuda-graph``) insists
    on graph lanes (UserError when ORT can't capture), ``"0"`` refuses them; unset, ``graph`` decides:
    ``auto`` tries graph lanes and falls back to per-kernel lanes when ORT can't capture (``cuda_graph_fallback``
    says why), ``off`` never tries. ``spin_wait``: ``common.throughput.lanes.Lane``'s.

    ``lane_depth``: batches each lane's thread keeps enqueued on its stream in the overlapped order (its twins:
    ``common.throughput.lanes.LanePool``); None: 2 for graph lanes, whose replays return before the GPU is done,
    1 otherwise (per-kernel runs block until it is). The serial order always has 1."""

    cuda_graph = False
    cuda_graph_fallback: str | None = None

    def __init__(
        self,
        onnx_path: str,
        provider_options: dict[str, dict[str, str]] | None = None,
        max_batch: int = 1,
        lanes: int = 3,
        device_id: int = 0,
        log: Any = None,
        imgsz: int = 640,
        disable_cpu_fallback: bool = False,
        memory: Any = None,
        post_kernels: Callable[[], Any] | None = None,
        gpu_order: str = "auto",
        graph: str = "off",
        spin_wait: bool = True,
        lane_depth: int | None = None,
        lane_threads: str = "per-lane",
    ) -> None:
        if lane_depth is not None and lane_depth < 1:
            raise ValueError(f"lane_depth must be >= 1, got {lane_depth}")
        cuda_opts = dict((provider_options or {}).get(CUDA_EP, {}))
        explicit = cuda_opts.pop("enable_cuda_graph", None)
        mode = {"1": "on", "0": "off"}.get(explicit or "", graph)
        if mode not in GRAPH_MODES:
            raise UserError(f"CUDA graph mode {mode!r}: choose one of {', '.join(GRAPH_MODES)}")
        resolve_gpu_order(gpu_order, True, max_batch)  # an unknown order: refused before any session is made
        self.lane_threads = checked_lane_threads(lane_threads)
        self.mem = memory if memory is not None else CudaMemory(device_id)
        self.device_id, self.max_batch, self.onnx_path = device_id, max_batch, onnx_path
        self._post_kernels = post_kernels
        self._spin_wait = spin_wait
        self._lane_depth = lane_depth
        self._session_args = dict(cuda_opts=cuda_opts, log=log, disable_cpu_fallback=disable_cpu_fallback)
        build = dict(lanes=lanes, imgsz=imgsz, gpu_order=gpu_order)
        if mode == "off":
            self._build(graph=False, **build)
            return
        try:
            self._build(graph=True, **build)
            self.warmup(self.max_batch, GRAPH_WARMUP_RUNS)  # capture now, before any other CUDA user starts
        except (UserError, RuntimeError) as exc:  # ORT refuses the graph session or the capture fails
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            if getattr(self, "_lanes", None) is not None:
                self.close()
            # per-kernel lanes: if they fail too, that error (not the graph) is the user's problem
            self._build(graph=False, **build)
            if mode == "on":
                self.close()
                raise UserError(
                    f"--cuda-graph: ONNX Runtime cannot run {onnx_path} as a CUDA graph ({why}); drop --cuda-graph"
                ) from exc
            self.cuda_graph_fallback = why

    def _build(self, *, graph: bool, lanes: int, imgsz: int, gpu_order: str) -> None:
        """The lanes: one session per lane on the lane's stream (with ``enable_cuda_graph`` when ``graph``)."""
        self.cuda_graph = graph
        # ORT runs without a graph block until the GPU is done: auto lets small batches' lanes overlap; graph
        # replays overlap at batch 1 (one image does not fill the GPU)
        overlap = resolve_gpu_order(gpu_order, not graph, self.max_batch, graph_replays=graph)
        self._run_options = _graph_run_options() if graph else None
        depth = (self._lane_depth or (2 if graph else 1)) if overlap else 1
        lane_list: list[Lane] = []
        twins: list[list[Lane]] = []
        try:
            for _ in range(max(1, lanes)):
                stream = self.mem.stream()
                try:
                    sess = self._session(int(stream.handle), graph)
                except BaseException:
                    stream.close()
                    raise
                if not lane_list:
                    self._setup_specs(sess, imgsz)
                lane_list.append(Lane(self.mem, self._make_worker(sess), stream=stream, spin_wait=self._spin_wait))
            for lane in lane_list:
                twins.append([])
                for _ in range(depth - 1):
                    twins[-1].append(self._twin(lane))
        except BaseException:
            for twin in (t for ts in twins for t in ts):
                twin.close()
            _close_sessions(lane_list)
            _free_lanes(lane_list)
            raise
        first = lane_list[0].worker.backend
        self.name = "onnxruntime-cuda-iobinding"
        self.version = first.version
        self.providers_used = first.providers_used
        self._start_lanes(lane_list, "ort-lane", overlap, twins)

    def _twin(self, lane: Lane) -> Lane:
        """A lane on ``lane``'s stream over its session, bindings and device buffers, with events of its own and,
        once GPU pre- and post-processing are on, its own pinned staging and post-processor."""
        w: _OrtLane = lane.worker
        return Lane(
            self.mem,
            _OrtLane(w.backend, w.io, w.inp, w.outs),
            stream=lane.stream,
            owns_stream=False,
            spin_wait=self._spin_wait,
        )

    def _session(self, stream: int, graph: bool) -> OrtBackend:
        """One session of the model on ``stream`` (a CUDA graph session when ``graph``), with the options the
        backend was made with. The CUDA EP must initialise; --disable-cpu-fallback also refuses nodes it can't
        take."""
        a = self._session_args
        opts = {
            **a["cuda_opts"],
            "device_id": str(self.device_id),
            "user_compute_stream": str(stream),
            **({"enable_cuda_graph": "1"} if graph else {}),
        }
        return OrtBackend(
            self.onnx_path,
            [CUDA_EP],
            {CUDA_EP: opts},
            log=a["log"],
            intra_op_threads=1,
            disable_cpu_fallback=a["disable_cpu_fallback"],
            require_accelerator=True,
        )

    def _setup_specs(self, sess: OrtBackend, imgsz: int) -> None:
        spec = sess.input
        if spec.shape[0] is not None and self.max_batch != spec.shape[0]:
            raise UserError(f"--batch-size {self.max_batch}: the model's batch axis is static ({spec.shape[0]})")
        if len(spec.shape) == 4 and None in spec.shape[2:]:
            spec = TensorSpec(spec.name, (spec.shape[0], spec.shape[1], imgsz, imgsz), spec.dtype)
        self._input = spec
        self._outputs = list(sess.outputs)
        for t in (self._input, *self._outputs):
            if any(d is None for d in t.shape[1:]):
                raise UserError(
                    f"IO binding needs static shapes apart from the batch axis; {t.name} is {list(t.shape)}"
                )

    def _shape(self, spec: TensorSpec, batch: int | None = None) -> tuple[int, ...]:
        return (batch or self.max_batch, *[int(d) for d in spec.shape[1:]])

    def _nbytes(self, spec: TensorSpec, batch: int | None = None) -> int:
        return math.prod(self._shape(spec, batch)) * spec.dtype.itemsize

    def _make_worker(self, sess: OrtBackend) -> _OrtLane:
        inp = Staging(self.mem, f"input {self._input.name!r}")
        inp.ensure(self._nbytes(self._input))
        outs = []
        for spec in self._outputs:
            outs.append(Staging(self.mem, f"output {spec.name!r}"))
            outs[-1].ensure(self._nbytes(spec))
        return _OrtLane(sess, {}, inp, outs)

    def _run(self, lane: Lane, batch: int) -> None:
        """One ORT run of ``batch`` images over the lane's buffers. A CUDA-graph lane replays its graph for a full
        batch; a partial batch runs at its own shape in the lane's plain session (``_plain``), synchronous, as a
        plain session runs it: cuDNN may choose other kernels at another shape, so a partial batch padded to the
        captured shape would not give the plain session's outputs to the last bit."""
        w: _OrtLane = lane.worker
        if self.cuda_graph and batch != self.max_batch:
            sess, bindings, options = self._plain(lane), w.plain_io, None
        else:
            sess, bindings, options = w.backend, w.io, self._run_options
        sess._session.run_with_iobinding(self._binding(w, batch, sess, bindings), options)

    def _plain(self, lane: Lane) -> OrtBackend:
        """The lane's plain session (no CUDA graph) on its stream, made at its first partial batch. Never a run
        outside the graph in the graph's own session: that run can take the memory the captured graph reads and
        writes, and the next replay then reads freed memory."""
        w: _OrtLane = lane.worker
        if w.plain is None:
            w.plain = self._session(int(lane.stream.handle), graph=False)
        return w.plain

    def _binding(self, lane: _OrtLane, batch: int, sess: OrtBackend, bindings: dict[int, Any]) -> Any:
        """``sess``'s IO binding for ``batch`` images over the lane's buffers (sized for max_batch), one per batch
        size, kept in ``bindings``."""
        io = bindings.get(batch)
        if io is None:
            io = sess._session.io_binding()
            io.bind_input(
                self._input.name,
                "cuda",
                self.device_id,
                self._input.dtype.type,
                list(self._shape(self._input, batch)),
                lane.inp.device_ptr,
            )
            for spec, buf in zip(self._outputs, lane.outs, strict=True):
                io.bind_output(
                    spec.name, "cuda", self.device_id, spec.dtype.type, list(self._shape(spec, batch)), buf.device_ptr
                )
            bindings[batch] = io
        return io

    @property
    def input(self) -> TensorSpec:
        return self._input

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def enable_device_postprocess(self, layout: str, input_hw: tuple[int, int], opts: Any) -> None:
        """Return final detections (``[GpuDetections]``) from now on; UserError when the kernels or the
        output shape don't allow it (nothing changed then)."""
        out = self._outputs[0]
        self._set_postprocess(layout, input_hw, opts, self._shape(out)[1:], out.dtype, self.max_batch)

    # ------------------------------------------------------------------ running
    def _prepare(self, lane: Lane, batch: np.ndarray | U8Batch) -> Staged:
        """The batch into the lane's pinned memory, and its upload (before the lane's turn on the GPU)."""
        w: _OrtLane = lane.worker
        b = int(batch.shape[0])
        if isinstance(batch, U8Batch):
            if w.stager is None:
                raise UserError(f"backend not set up for --preprocess {batch.mode} (enable_device_preprocess)")
            filled = w.stager.fill(batch, lane.stream)
            return Staged(_OrtBatch(b, filled.launch), filled.copy)
        staged = w.inp.view(self._input.dtype, self._shape(self._input, b))
        np.copyto(staged, batch, casting="same_kind")
        return Staged(_OrtBatch(b, None), lambda stream: w.inp.upload_staged(staged.nbytes, stream))

    def _pipelines(self, twin: Lane, batch: Any) -> bool:
        """A full uint8 batch with GPU letterbox and GPU post-processing on: everything of it the host writes or
        reads is the twin's own pinned memory; the lane's device buffers are used in stream order."""
        w: _OrtLane = twin.worker
        return (
            isinstance(batch, U8Batch)
            and int(batch.shape[0]) == self.max_batch
            and w.stager is not None
            and w.stager.decoder is None
            and w.post is not None
        )

    def _enqueue(self, lane: Lane, item: _OrtBatch) -> Collect:
        w: _OrtLane = lane.worker
        b = item.batch
        if item.launch is not None:
            item.launch(w.inp.device_ptr, lane.stream)
        self._run(lane, b)
        if w.post is not None:
            w.post.launch(w.outs[0].device_ptr, lane.stream, b)
            return lambda: [w.post.collect()]
        for spec, buf in zip(self._outputs, w.outs, strict=True):
            buf.download(self._nbytes(spec, b), lane.stream)
        return lambda: [
            buf.view(spec.dtype, self._shape(spec, b)).copy() for spec, buf in zip(self._outputs, w.outs, strict=True)
        ]

    # ------------------------------------------------------------------ idle-time work
    def _resident_runs(self, lane: Lane, batch: int, runs: int) -> list[float]:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self._run(lane, batch)
            lane.stream.synchronize()
            times.append((time.perf_counter() - t0) * 1000.0)
        return times

    def _lane_for(self, batch: Any) -> int | None:
        return self._lane_of(int(batch.shape[0]))

    def _lane_of(self, size: int) -> int | None:
        """The lane batches of ``size`` images run on: a partial batch (fewer than ``max_batch``: a run's last)
        on the first lane, the only one ``warmup`` warms at its shape; a full one on whichever is free (None)."""
        return PARTIAL_BATCH_LANE if size != self.max_batch else None

    def warmup(self, batch: int, runs: int) -> None:
        """``runs`` resident runs at ``batch`` on every lane: each session's first run at a shape
        pays cuDNN's algorithm search (seconds for yolov10m), which must not land
        inside a timed pass. With a CUDA graph at least ``GRAPH_WARMUP_RUNS`` per lane, one lane at a time
        with nothing else in flight, each on its lane's own thread: ORT captures the graph on one of them (it
        keeps a graph per session and thread), and a capture must never overlap another thread's CUDA work.
        A partial batch's shape is warmed on its lane alone (``_lane_of``): the search costs each session
        a second or more per shape, and a run has one partial batch at most."""
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"bound for batch <= {self.max_batch}, asked for {batch}")
        if self.cuda_graph:
            runs = max(runs, GRAPH_WARMUP_RUNS)
        only = self._lane_of(batch)
        # on each lane's own thread, where its batches will run
        for i in range(len(self._lanes.lanes)) if only is None else [only]:
            self._lanes.call_on(i, lambda lane: self._resident_runs(lane, batch, runs))

    def resident_run_ms(self, iterations: int, batch: int = 1, warmup: int = 10) -> list[float]:
        """Wall ms per synchronous run with input and output already on the GPU (no copies),
        one session (always the first lane): the inference-only ceiling at this batch size."""
        if batch != self.max_batch:
            raise ValueError(f"bound for batch {self.max_batch}, asked for {batch}")
        return self._lanes.call_on(0, lambda lane: self._resident_runs(lane, batch, warmup + iterations))[warmup:]

    def resident_overlap_images_per_s(self, iterations: int, batch: int = 1, warmup: int = 10) -> float:
        """Images/s with every lane running ``iterations`` synchronous resident runs (no copies) at once, each on
        its own stream: the inference-only ceiling when the lanes' GPU work overlaps."""
        if batch != self.max_batch:
            raise ValueError(f"bound for batch {self.max_batch}, asked for {batch}")
        self._lanes.call_all(lambda lane: self._resident_runs(lane, batch, warmup))
        t0 = time.perf_counter()
        self._lanes.call_all(lambda lane: self._resident_runs(lane, batch, iterations))
        wall = time.perf_counter() - t0
        return len(self._lanes.lanes) * iterations * batch / wall if wall > 0 else 0.0

    def _check_batch(self, batch: np.ndarray | U8Batch) -> None:
        b = int(batch.shape[0])
        if b > self.max_batch or tuple(batch.shape[1:]) != self._shape(self._input)[1:]:
            raise UserError(f"batch {list(batch.shape)} does not fit the bound input {list(self._input.shape)}")

    def metadata(self) -> dict[str, Any]:
        meta = self._lanes.lanes[0].worker.backend.metadata()
        meta.update(
            {
                "backend": self.name,
                "io_binding": True,
                "max_batch": self.max_batch,
                "cuda_graph": self.cuda_graph,
                "cuda_graph_fallback": self.cuda_graph_fallback,
                "device": self.mem.device_info(),
                **self._lane_metadata(),
            }
        )
        return meta

    def close(self) -> None:
        import gc

        self._lanes.close()
        lanes = self._lanes.lanes
        for lane in lanes:
            lane.stream.synchronize()
        _close_sessions(lanes)  # the sessions go before the streams they run on
        gc.collect()
        self._close_lane_extras()
        _free_lanes(lanes)
        for twin in self._lanes.twins:  # their session, buffers and stream were the lane's
            twin.close()
        self._lanes.lanes, self._lanes.twins = [], []
