"""ONNX Runtime CUDA EP with IO binding: lanes of (session, stream, pinned + device buffers).

``OrtCudaBackend`` runs ``lanes`` ORT sessions of the same model, each on its own CUDA
stream (CUDA EP option ``user_compute_stream``) in its own thread:

    lane thread: batch -> pinned_in --H2D--> bound_in; ORT run (IO binding);
                 bound_out --D2H--> pinned_out; stream sync; copy out

A batch runs on whichever lane is free. The pipeline keeps ``lanes + 1`` batches submitted,
so a free lane always finds the next batch waiting: one lane's copies, kernel launches and
output copy overlap the others' kernels. Sessions get one intra-op thread and no spinning
(the GPU does the work; spinning CPU threads would only take cores from the loaders).

With ``enable_device_preprocess`` a lane also takes ``U8Batch`` (common.gpu.preprocess):
uint8 images go up and an NVRTC kernel writes the float input in place. ORT runs stay
synchronous (its default): letting them return early (``disable_synchronize_execution_providers``)
made ORT 1.31.1 free pinned buffers inside a CUDA host callback and abort the process
(CUDA failure 800 in cudaFreeHost) on the H100, so it is not used.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.core.results import latency_stats
from common.gpu.cuda_mem import CudaMemory
from common.gpu.preprocess import GpuPreprocessor, U8Batch, U8Stager, check_float_input
from common.ort.options import CUDA_EP
from common.ort.session import OrtBackend, TensorSpec


@dataclass
class _Lane:
    backend: OrtBackend  # the lane's own session
    stream: Any
    io: dict[int, Any]  # batch size -> IO binding over the same buffers
    bound_in: Any
    bound_out: list[Any]
    pinned_in: Any
    pinned_out: list[Any]
    started: Any
    done: Any
    stager: U8Stager | None = None  # uint8 staging for U8Batch (enable_device_preprocess)


class OrtCudaBackend:
    """The CUDA EP behind IO binding, ``lanes`` sessions deep: an ``AsyncBackend`` with
    ``DevicePreprocessing`` and ``Warmup`` (common.eval.protocols)."""

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
    ) -> None:
        cuda_opts = dict((provider_options or {}).get(CUDA_EP, {}))
        if cuda_opts.get("enable_cuda_graph") == "1":
            raise UserError(
                "--io-binding with the CUDA graph option is not supported (ORT 1.31.1 aborted during capture "
                "on our H100 test); drop --cuda-graph or --io-binding"
            )
        self.mem = CudaMemory(device_id)
        self.device_id, self.max_batch, self.onnx_path = device_id, max_batch, onnx_path
        self._lanes: list[_Lane] = []
        for _ in range(max(1, lanes)):
            stream = self.mem.stream()
            opts = {**cuda_opts, "device_id": str(device_id), "user_compute_stream": str(stream.handle)}
            # The CUDA EP must initialise; --disable-cpu-fallback also refuses nodes it can't take.
            sess = OrtBackend(onnx_path, [CUDA_EP], {CUDA_EP: opts}, disable_cpu_fallback=disable_cpu_fallback,
                              log=log, intra_op_threads=1, require_accelerator=True)  # fmt: skip
            if not self._lanes:
                self._setup_specs(sess, imgsz)
            self._lanes.append(self._make_lane(sess, stream))
        first = self._lanes[0].backend
        self.name = "onnxruntime-cuda-iobinding"
        self.version = first.version
        self.providers_used = first.providers_used
        self.max_in_flight = len(self._lanes) + 1
        self._free: queue.SimpleQueue[_Lane] = queue.SimpleQueue()
        for lane in self._lanes:
            self._free.put(lane)
        self._pool = cf.ThreadPoolExecutor(len(self._lanes), thread_name_prefix="ort-lane")
        self._prep: GpuPreprocessor | None = None
        self.preprocess = "cpu"
        self.gpu_ms: list[float] = []

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
        self._in_bytes = self._nbytes(self._input)
        self._out_bytes = [self._nbytes(o) for o in self._outputs]

    def _shape(self, spec: TensorSpec, batch: int | None = None) -> tuple[int, ...]:
        return (batch or self.max_batch, *[int(d) for d in spec.shape[1:]])

    def _nbytes(self, spec: TensorSpec) -> int:
        return math.prod(self._shape(spec)) * spec.dtype.itemsize

    def _make_lane(self, sess: OrtBackend, stream: Any) -> _Lane:
        m = self.mem
        bound_in = m.device_buffer(self._in_bytes)
        bound_out = [m.device_buffer(n) for n in self._out_bytes]
        return _Lane(sess, stream, {}, bound_in, bound_out, m.pinned_buffer(self._in_bytes),
                     [m.pinned_buffer(n) for n in self._out_bytes], m.event(), m.event())  # fmt: skip

    def _binding(self, lane: _Lane, batch: int) -> Any:
        """IO binding for ``batch`` images over the lane's buffers (sized for max_batch): a partial
        last batch runs at its own shape, exactly as a plain session would run it."""
        io = lane.io.get(batch)
        if io is None:
            io = lane.backend._session.io_binding()
            io.bind_input(self._input.name, "cuda", self.device_id, self._input.dtype.type,
                          list(self._shape(self._input, batch)), lane.bound_in.ptr)  # fmt: skip
            for spec, buf in zip(self._outputs, lane.bound_out, strict=True):
                io.bind_output(spec.name, "cuda", self.device_id, spec.dtype.type, list(self._shape(spec, batch)),
                               buf.ptr)  # fmt: skip
            lane.io[batch] = io
        return io

    @property
    def input(self) -> TensorSpec:
        return self._input

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    # ------------------------------------------------------------------ GPU pre-processing
    def enable_device_preprocess(self, mode: str) -> None:
        """Accept ``U8Batch`` of ``mode`` from now on (compiles the kernels once)."""
        if mode == "cpu":
            return
        check_float_input(mode, self._input.name, self._input.dtype)
        if self._prep is None:
            self._prep = GpuPreprocessor(self.device_id)
        for lane in self._lanes:
            if lane.stager is None:
                lane.stager = U8Stager(self.mem, self._prep, mode)
            lane.stager.mode = mode
        self.preprocess = mode

    # ------------------------------------------------------------------ running
    def _run_lane(self, batch: np.ndarray | U8Batch) -> list[np.ndarray]:
        b = int(batch.shape[0])
        lane = self._free.get()  # one pool thread per lane: a lane is always free here
        try:
            if isinstance(batch, U8Batch):
                if lane.stager is None:
                    raise UserError(f"backend not set up for --preprocess {batch.mode} (enable_device_preprocess)")
                lane.stager.stage(batch, lane.bound_in.ptr, lane.stream)
            else:
                staged = lane.pinned_in.view(self._input.dtype, self._shape(self._input, b))
                np.copyto(staged, batch, casting="same_kind")
                self.mem.copy_htod_async(lane.bound_in.ptr, lane.pinned_in.ptr, staged.nbytes, lane.stream)
            lane.started.record(lane.stream)
            lane.backend._session.run_with_iobinding(self._binding(lane, b))
            lane.done.record(lane.stream)
            for spec, dev, host in zip(self._outputs, lane.bound_out, lane.pinned_out, strict=True):
                nbytes = math.prod(self._shape(spec, b)) * spec.dtype.itemsize
                self.mem.copy_dtoh_async(host.ptr, dev.ptr, nbytes, lane.stream)
            lane.stream.synchronize()
            self.gpu_ms.append(self.mem.elapsed_ms(lane.started, lane.done))
            return [host.view(spec.dtype, self._shape(spec, b)).copy()
                    for spec, host in zip(self._outputs, lane.pinned_out, strict=True)]  # fmt: skip
        finally:
            self._free.put(lane)

    def submit(self, batch: np.ndarray | U8Batch) -> cf.Future[list[np.ndarray]]:
        b = int(batch.shape[0])
        if b > self.max_batch or tuple(batch.shape[1:]) != self._shape(self._input)[1:]:
            raise UserError(f"batch {list(batch.shape)} does not fit the bound input {list(self._input.shape)}")
        return self._pool.submit(self._run_lane, batch)

    def wait(self, token: cf.Future[list[np.ndarray]]) -> list[np.ndarray]:
        return token.result()

    def infer(self, batch: np.ndarray | U8Batch) -> list[np.ndarray]:
        return self.wait(self.submit(batch))

    # ------------------------------------------------------------------ idle-time work
    @contextlib.contextmanager
    def _idle_lanes(self) -> Iterator[list[_Lane]]:
        """Every lane, once all are free (no batch in flight), in their fixed order."""
        taken = [self._free.get() for _ in self._lanes]
        try:
            yield list(self._lanes)
        finally:
            for lane in taken:
                self._free.put(lane)

    def _resident_runs(self, lane: _Lane, batch: int, runs: int) -> list[float]:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            lane.backend._session.run_with_iobinding(self._binding(lane, batch))
            lane.stream.synchronize()
            times.append((time.perf_counter() - t0) * 1000.0)
        return times

    def warmup(self, batch: int, runs: int) -> None:
        """``runs`` resident runs at ``batch`` on every lane: each session's first run at a shape
        pays cuDNN's algorithm search (about 2 s for yolov10m on the H100), which must not land
        inside a timed pass."""
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"bound for batch <= {self.max_batch}, asked for {batch}")
        with self._idle_lanes() as lanes:
            for lane in lanes:
                self._resident_runs(lane, batch, runs)

    def resident_run_ms(self, iterations: int, batch: int = 1, warmup: int = 10) -> list[float]:
        """Wall ms per synchronous run with input and output already on the GPU (no copies),
        one session (always the first lane): the inference-only ceiling at this batch size."""
        if batch != self.max_batch:
            raise ValueError(f"bound for batch {self.max_batch}, asked for {batch}")
        with self._idle_lanes() as lanes:
            return self._resident_runs(lanes[0], batch, warmup + iterations)[warmup:]

    def metadata(self) -> dict[str, Any]:
        meta = self._lanes[0].backend.metadata()
        meta.update({"backend": self.name, "io_binding": True, "lanes": len(self._lanes),
                     "preprocess": self.preprocess, "in_flight": self.max_in_flight,
                     "max_batch": self.max_batch, "device": self.mem.device_info(),
                     # CUDA-event time of each ORT run (compute only, no copies), per batch
                     "gpu_compute_ms": latency_stats([ms / 1000 for ms in self.gpu_ms])})  # fmt: skip
        return meta

    def close(self) -> None:
        import gc

        self._pool.shutdown(wait=True)
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.stream.synchronize()
            lane.io.clear()
            lane.backend.close()  # drop the session before the stream it runs on
        gc.collect()
        for lane in lanes:
            for buf in (lane.bound_in, *lane.bound_out, lane.pinned_in, *lane.pinned_out):
                buf.free()
            if lane.stager is not None:
                lane.stager.close()
            lane.started.close()
            lane.done.close()
            lane.stream.close()
        if self._prep is not None:
            self._prep.close()
            self._prep = None
