"""A device-side TensorRT double for GPU machines: only the engine is simulated.

``tests/trt_double.py`` replaces TensorRT's factories (``Builder``, ``OnnxParser``, ``Runtime``) and keeps
the real module's enums and classes around them; its engines carry the ONNX they were "built" from.
This module keeps all of that and changes one thing: ``IExecutionContext.execute_async_v3(stream)`` is
served by ONNX Runtime's CUDA execution provider through IO binding, with

- every input and output bound to the device address our code gave ``set_tensor_address``
  (``IOBinding.bind_input/bind_output`` with device pointers: no host copy anywhere), and
- the ORT session running its kernels on the very stream our code passed (CUDA EP option
  ``user_compute_stream``, one session per engine and stream).

So our TensorRT code runs for real on the GPU: cuda-python device and pinned buffers, its non-default
stream, H2D/D2H copies, CUDA events, the GPU pre-/post-processing kernels, and the engine's tensors
read and written on the device in stream order. What is simulated is the engine's arithmetic (ONNX
Runtime's CUDA kernels instead of TensorRT's). ORT synchronises its stream at the end of a run, so an
enqueue here returns when the "engine" is done; a real ``execute_async_v3`` returns earlier. Stream
capture (CUDA graphs) is refused, as TensorRT refuses an enqueue it cannot capture: the session falls
back to plain enqueues.

Use: ``install_device_double(monkeypatch, api.module)`` and leave ``common.trt.runtime.default_memory``
alone (the real cuda-python layer). Needs onnxruntime-gpu with the CUDA EP and a CUDA device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trt_double as D

__all__ = ["DeviceState", "install_device_double"]


class DeviceState:
    """Counters the tests check: enqueues served on the device, sessions made (one per engine and stream)."""

    def __init__(self, base: D.DoubleState) -> None:
        self.base = base
        self.device_executions = 0
        self.sessions = 0
        self.streams: set[int] = set()
        self.provider_options: dict[str, str] = {}


_state: DeviceState | None = None


def _device_session(engine: D.FakeEngine, stream: int, options: dict[str, str]) -> Any:
    """The ORT CUDA session that plays ``engine`` on ``stream`` (made once per engine and stream)."""
    import onnxruntime as ort

    sessions = engine.__dict__.setdefault("_device_sessions", {})
    sess = sessions.get(stream)
    if sess is None:
        opts = {**options, "user_compute_stream": str(stream)}
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1  # the GPU does the work, as in common.throughput.ort_lanes's lanes
        sess = ort.InferenceSession(engine._onnx, so, providers=[("CUDAExecutionProvider", opts)])
        if sess.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"device double: ORT did not start the CUDA EP ({sess.get_providers()})")
        sessions[stream] = sess
        assert _state is not None
        _state.sessions += 1
    return sess


def _execute_on_device(self: D.FakeContext, stream_handle: int) -> bool:
    """``IExecutionContext.execute_async_v3``: ORT CUDA IO binding on the bound addresses, on ``stream_handle``."""
    assert _state is not None
    io = self._engine._io
    if self._config is not None and self._config() is None:
        self._error("IExecutionContext::enqueueV3: the IRuntimeConfig this context was created with was destroyed")
        return False
    stream = int(stream_handle)
    if D._device_capturing(stream):
        self._error("device double: an enqueue served by ONNX Runtime cannot be captured into a CUDA graph")
        return False
    missing = [n for n in io if n not in self._addr]
    if missing:
        self._error(f"executeAsyncV3: tensor {missing[0]} has no address")
        return False
    if not self._out_shapes and self.infer_shapes():
        self._error("executeAsyncV3: input shapes are not all specified")
        return False
    sess = _device_session(self._engine, stream, _state.provider_options)
    binding = sess.io_binding()
    for name, t in io.items():
        dtype = np.dtype(D.TRT_TO_NP[t["dtype"]])
        shape = [int(d) for d in self._exec_shape(name)]
        if t["input"]:
            binding.bind_input(name, "cuda", 0, dtype.type, shape, self._addr[name])
        else:
            binding.bind_output(name, "cuda", 0, dtype.type, shape, self._addr[name])
    sess.run_with_iobinding(binding)
    self._flushed = self._executed = True  # a plain enqueue: shape changes flushed, shapes known
    _state.device_executions += 1
    _state.streams.add(stream)
    self._state.executions += 1
    return True


def install_device_double(monkeypatch: Any, trt: Any, provider_options: dict[str, str] | None = None) -> DeviceState:
    """The double of tests/trt_double.py on ``trt``, with enqueues served on the device by ORT CUDA.

    ``provider_options``: CUDA EP options of the sessions that play the engine (default: ORT's defaults,
    as the ORT evaluator uses them).
    """
    global _state
    base = D.install(monkeypatch, trt, memory=None)
    base.device_io = True  # tensor addresses are real device pointers
    _state = DeviceState(base)
    _state.provider_options = dict(provider_options or {"device_id": "0"})
    monkeypatch.setattr(D.FakeContext, "execute_async_v3", _execute_on_device)
    return _state
