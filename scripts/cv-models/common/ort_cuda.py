"""ONNX Runtime CUDA EP with IO binding: our own device buffers, pinned staging, overlapped copies.

``OrtCudaBackend`` keeps several batches in flight (the pipeline calls ``submit`` for
batch i+1 before ``wait`` for batch i):

    copy-in stream:  pinned_in[k] --H2D--> stage_in[k]                        (event in_ready[k])
    compute stream:  wait in_ready[k]; stage_in[k] -> bound_in (D2D); ORT run;
                     bound_out -> stage_out[k] (D2D)                            (event computed[k])
    copy-out stream: wait computed[k]; stage_out[k] --D2H--> pinned_out[k]      (event out_ready[k])

ORT runs its kernels on our compute stream (CUDA EP option ``user_compute_stream``) and
returns without a device sync (run option ``disable_synchronize_execution_providers``),
so the copies of one batch overlap the compute of the next; the host only blocks in
``wait``. ORT always sees the same bound buffers and the same (full) batch shape, so its
CUDA-graph option (``enable_cuda_graph``) works too; a partial last batch is zero-padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.backends import OrtBackend, TensorSpec
from common.cuda_mem import CudaMemory, _runtime, check
from common.errors import UserError

CUDA_EP = "CUDAExecutionProvider"


def stream_wait(stream: Any, event: Any) -> None:
    """Make ``stream`` wait for ``event`` (cudaStreamWaitEvent) without blocking the host."""
    check("cudaStreamWaitEvent", _runtime().cudaStreamWaitEvent(stream._obj, event._obj, 0))


@dataclass
class _Slot:
    pinned_in: Any
    stage_in: Any
    stage_out: list[Any]
    pinned_out: list[Any]
    in_ready: Any
    started: Any
    computed: Any
    out_ready: Any
    busy: bool = False


class OrtCudaBackend(OrtBackend):
    """The CUDA EP behind IO binding, with ``submit``/``wait`` for several batches in flight."""

    def __init__(
        self,
        onnx_path: str,
        provider_options: dict[str, dict[str, str]] | None = None,
        max_batch: int = 1,
        slots: int = 3,
        device_id: int = 0,
        log: Any = print,
        imgsz: int = 640,
    ) -> None:
        import onnxruntime as ort

        self.mem = CudaMemory(device_id)
        self.device_id = device_id
        self.compute = self.mem.stream()
        self.copy_in = self.mem.stream()
        self.copy_out = self.mem.stream()
        cuda_opts = dict((provider_options or {}).get(CUDA_EP, {}))
        cuda_opts.setdefault("device_id", str(device_id))
        cuda_opts["user_compute_stream"] = str(self.compute.handle)
        self.cuda_graph = cuda_opts.get("enable_cuda_graph") == "1"
        super().__init__(onnx_path, [CUDA_EP], {CUDA_EP: cuda_opts}, disable_cpu_fallback=True, log=log)
        self.name = "onnxruntime-cuda-iobinding" + ("-graph" if self.cuda_graph else "")
        self._ort = ort
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self.max_batch = max_batch
        fixed = self.input.shape[0]
        if fixed is not None and max_batch != fixed:
            raise UserError(f"--batch-size {max_batch}: the model's batch axis is static ({fixed})")
        if len(self.input.shape) == 4 and None in self.input.shape[2:]:
            # dynamic height/width: bind the square evaluation size
            self._input = TensorSpec(self.input.name, (self.input.shape[0], self.input.shape[1], imgsz, imgsz),
                                     self.input.dtype)  # fmt: skip
        for spec in (self.input, *self.outputs):
            if any(d is None for d in spec.shape[1:]):
                raise UserError(
                    f"IO binding needs static shapes apart from the batch axis; {spec.name} is {list(spec.shape)}"
                )
        self._in_bytes = self._nbytes(self.input, max_batch)
        self._out_bytes = [self._nbytes(o, max_batch) for o in self.outputs]
        self._bound_in = self.mem.device_buffer(self._in_bytes)
        self._bound_out = [self.mem.device_buffer(n) for n in self._out_bytes]
        self._io = self._session.io_binding()
        self._io.bind_input(self.input.name, "cuda", device_id, self.input.dtype.type,
                            list(self._shape(self.input, max_batch)), self._bound_in.ptr)  # fmt: skip
        for spec, buf in zip(self.outputs, self._bound_out, strict=True):
            self._io.bind_output(spec.name, "cuda", device_id, spec.dtype.type, list(self._shape(spec, max_batch)),
                                 buf.ptr)  # fmt: skip
        self._slots = [self._make_slot() for _ in range(max(2, slots))]
        self.max_in_flight = len(self._slots) - 1
        self._next = 0
        self.gpu_ms: list[float] = []

    @staticmethod
    def _shape(spec: Any, batch: int) -> tuple[int, ...]:
        return (batch, *[int(d) for d in spec.shape[1:]])

    def _nbytes(self, spec: Any, batch: int) -> int:
        return math.prod(self._shape(spec, batch)) * spec.dtype.itemsize

    def _make_slot(self) -> _Slot:
        m = self.mem
        return _Slot(
            pinned_in=m.pinned_buffer(self._in_bytes),
            stage_in=m.device_buffer(self._in_bytes),
            stage_out=[m.device_buffer(n) for n in self._out_bytes],
            pinned_out=[m.pinned_buffer(n) for n in self._out_bytes],
            in_ready=m.event(),
            started=m.event(),
            computed=m.event(),
            out_ready=m.event(),
        )

    # ------------------------------------------------------------------ async API
    def submit(self, batch: np.ndarray) -> tuple[int, int]:
        b = int(batch.shape[0])
        if b > self.max_batch or tuple(batch.shape[1:]) != self._shape(self.input, b)[1:]:
            raise UserError(f"batch {list(batch.shape)} does not fit the bound input {list(self.input.shape)}")
        k = self._next % len(self._slots)
        slot = self._slots[k]
        if slot.busy:
            raise RuntimeError("submit() on a slot whose results were not collected with wait()")
        self._next += 1
        slot.in_ready.synchronize()  # the previous upload from this pinned buffer is done
        staged = slot.pinned_in.view(self.input.dtype, self._shape(self.input, self.max_batch))
        np.copyto(staged[:b], batch, casting="same_kind")
        if b < self.max_batch:
            staged[b:] = 0
        stream_wait(self.copy_in, slot.computed)  # stage_in is free once its last compute ended
        self.mem.copy_htod_async(slot.stage_in.ptr, slot.pinned_in.ptr, self._in_bytes, self.copy_in)
        slot.in_ready.record(self.copy_in)
        stream_wait(self.compute, slot.in_ready)
        stream_wait(self.compute, slot.out_ready)  # stage_out is free once its last download ended
        slot.started.record(self.compute)
        self.mem.copy_dtod_async(self._bound_in.ptr, slot.stage_in.ptr, self._in_bytes, self.compute)
        self._session.run_with_iobinding(self._io, self._run_options)
        for dev, bound, n in zip(slot.stage_out, self._bound_out, self._out_bytes, strict=True):
            self.mem.copy_dtod_async(dev.ptr, bound.ptr, n, self.compute)
        slot.computed.record(self.compute)
        stream_wait(self.copy_out, slot.computed)
        for dev, host, n in zip(slot.stage_out, slot.pinned_out, self._out_bytes, strict=True):
            self.mem.copy_dtoh_async(host.ptr, dev.ptr, n, self.copy_out)
        slot.out_ready.record(self.copy_out)
        slot.busy = True
        return k, b

    def wait(self, token: tuple[int, int]) -> list[np.ndarray]:
        k, b = token
        slot = self._slots[k]
        slot.out_ready.synchronize()
        outs = [host.view(spec.dtype, self._shape(spec, self.max_batch))[:b].copy() for spec, host in
                zip(self.outputs, slot.pinned_out, strict=True)]  # fmt: skip
        self.gpu_ms.append(self.mem.elapsed_ms(slot.started, slot.computed))
        slot.busy = False
        return outs

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.wait(self.submit(batch))

    # ------------------------------------------------------------------ ceiling
    def resident_run_ms(self, iterations: int, batch: int = 1, warmup: int = 10) -> list[float]:
        """Wall ms per synchronous run with input and output already on the GPU (no copies):
        the inference-only ceiling at this batch size."""
        import time

        if batch != self.max_batch:
            raise ValueError(f"bound for batch {self.max_batch}, asked for {batch}")
        io = self._io
        sync = self._ort.RunOptions()
        times = []
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            self._session.run_with_iobinding(io, sync)
            self.compute.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
        return times

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update({"io_binding": True, "cuda_graph": self.cuda_graph, "slots": len(self._slots),
                     "max_batch": self.max_batch, "device": self.mem.device_info()})  # fmt: skip
        return meta

    def close(self) -> None:
        import gc

        self.compute.synchronize()
        self._io = None
        super().close()  # drop the session before the stream it runs on
        gc.collect()
        for slot in getattr(self, "_slots", []):
            for buf in (slot.pinned_in, slot.stage_in, *slot.stage_out, *slot.pinned_out):
                buf.free()
            for ev in (slot.in_ready, slot.started, slot.computed, slot.out_ready):
                ev.close()
        self._slots = []
        for buf in (self._bound_in, *self._bound_out):
            buf.free()
        for stream in (self.compute, self.copy_in, self.copy_out):
            stream.close()
