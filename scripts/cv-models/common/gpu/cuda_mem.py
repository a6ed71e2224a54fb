"""CUDA memory, streams, events and graphs through cuda-python (``cuda.bindings.runtime``).

Every call goes through ``check``: cuda-python returns ``(cudaError_t, *values)``; a
non-success code becomes ``CudaError`` naming the call and the error
(``cudaMalloc: cudaErrorMemoryAllocation (out of memory)``).

The TensorRT runtime (``common.trt.runtime``) uses only the ``MemoryLayer`` protocol
below, so tests can hand it a host-memory fake (tests/trt_double.py) on machines
without a GPU; ``CudaMemory`` is the real one.

Why not ``cuda.core`` (NVIDIA's Pythonic layer, judged from its release notes and install pages): it
has what this module wraps (``Device``, ``Stream``, ``Event`` with timing, ``Buffer`` from
``DeviceMemoryResource`` / ``PinnedMemoryResource`` / ``LegacyPinnedMemoryResource``,
``graph.GraphBuilder`` for stream capture, ``Program`` for NVRTC, ``launch``), but cuda.core 1.3.0 requires
cuda-bindings >= 12.9.8 (CUDA 12) / >= 13.4.1 (CUDA 13) and drops Python 3.10, while the rtx5090
environment pins cuda-python >= 12.8, < 13 and the project supports Python >= 3.10; older cuda.core
releases accepted any cuda-bindings of the major but, by its own notes, an older one could fail at import
or crash. Moving would raise both floors for no new capability, so this module stays on
``cuda.bindings.runtime``.
"""

from __future__ import annotations

import ctypes
import functools
import math
import threading
import weakref
from typing import Any, Protocol

import numpy as np

from common.core.errors import RunError, UserError
from common.gpu.held_driver import DriverError, HeldDriver, held_driver

__all__ = [
    "CudaError",
    "CudaMemory",
    "DeviceBuffer",
    "DeviceBufferLike",
    "Event",
    "EventLike",
    "Graph",
    "GraphLike",
    "HostLease",
    "MemoryLayer",
    "PinnedBuffer",
    "PinnedBufferLike",
    "Staging",
    "Stream",
    "StreamLike",
    "check",
    "device_info",
    "handle_int",
    "held_calls",
    "memory_left",
    "round_trip",
]


# CudaMemory.driver_calls: how its event records, async copies and stream waits reach the driver
DRIVER_CALLS = {
    True: "libcuda through ctypes.PyDLL, the GIL held (common.gpu.held_driver)",
    False: "cuda-python (the GIL released for each call)",
}


# CudaMemory._copy: the HeldDriver method of each cudaMemcpyKind
_HELD_COPY = {
    "cudaMemcpyHostToDevice": "copy_htod",
    "cudaMemcpyDeviceToHost": "copy_dtoh",
    "cudaMemcpyDeviceToDevice": "copy_dtod",
}


class CudaError(RunError, RuntimeError):
    """A CUDA runtime call failed (one line from ``run_main``, exit 1)."""

    def __init__(self, call: str, code: int, name: str, text: str = "") -> None:
        self.call, self.code, self.error_name = call, code, name
        super().__init__(f"{call}: {name}" + (f" ({text})" if text else ""))


@functools.cache  # every CUDA call asks for the module: import it once
def _runtime() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise UserError(
            "cannot import cuda.bindings.runtime; install cuda-python >= 12.8 (pixi run -e rtx5090 ...)"
        ) from exc
    return runtime


def check(call: str, result: Any) -> Any:
    """Unpack a cuda-python result tuple; raise CudaError on a non-success code.

    Returns None, the single value, or a tuple of values.
    """
    rt = _runtime()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        name, text = f"cudaError {int(err)}", ""
        try:
            got = rt.cudaGetErrorName(err)
            if int(got[0]) == 0 and got[1]:
                name = got[1].decode()
            got = rt.cudaGetErrorString(err)
            if int(got[0]) == 0 and got[1]:
                text = got[1].decode()
        except Exception:  # naming the error must not hide it
            pass
        raise CudaError(call, int(err), name, text)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def handle_int(handle: Any) -> int:
    """An integer address / handle from a cuda-python object or int."""
    try:
        return int(handle)
    except TypeError:
        return int(handle.getPtr())


# ----------------------------------------------------------------------------- protocol


class DeviceBufferLike(Protocol):
    ptr: int
    nbytes: int

    def free(self) -> None: ...


class PinnedBufferLike(Protocol):
    ptr: int
    nbytes: int

    def view(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray: ...

    def free(self) -> None: ...


class StreamLike(Protocol):
    handle: int

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class EventLike(Protocol):
    def record(self, stream: StreamLike) -> None: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class GraphLike(Protocol):
    def launch(self, stream: StreamLike) -> None: ...

    def close(self) -> None: ...


class MemoryLayer(Protocol):
    """What the TensorRT runtime needs from CUDA."""

    name: str

    def device_buffer(self, nbytes: int) -> DeviceBufferLike: ...

    def pinned_buffer(self, nbytes: int) -> PinnedBufferLike: ...

    def stream(self) -> StreamLike: ...

    def event(self, blocking: bool = False) -> EventLike:
        """A timing event; ``blocking``: its ``synchronize`` sleeps until the event completes, yielding the core,
        instead of spinning on it (CUDA's default while a process has fewer contexts than cores)."""
        ...

    def elapsed_ms(self, start: EventLike, end: EventLike) -> float: ...

    def stream_wait_event(self, stream: StreamLike, event: EventLike) -> None: ...

    def copy_htod_async(self, dst: int, src: int, nbytes: int, stream: StreamLike) -> None: ...

    def copy_dtoh_async(self, dst: int, src: int, nbytes: int, stream: StreamLike) -> None: ...

    def copy_dtod_async(self, dst: int, src: int, nbytes: int, stream: StreamLike) -> None: ...

    def begin_capture(self, stream: StreamLike) -> None: ...

    def end_capture(self, stream: StreamLike) -> GraphLike: ...

    def device_info(self) -> dict[str, Any] | None: ...


def _fitting(dtype: Any, shape: tuple[int, ...], nbytes: int) -> tuple[np.dtype, int]:
    """(``dtype``, the element count of ``shape``); ValueError unless they fit ``nbytes`` bytes."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    if count * dtype.itemsize > nbytes:
        raise ValueError(f"view of {count} x {dtype} does not fit a {nbytes}-byte buffer")
    return dtype, count


def _host_view(ptr: int, nbytes: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count = _fitting(dtype, shape, nbytes)
    if count == 0:
        return np.empty(shape, dtype)
    raw = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


def _bytes_view(buf: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``shape`` of ``dtype`` over the start of the byte array ``buf``."""
    dtype, count = _fitting(dtype, shape, buf.size)
    return buf[: count * dtype.itemsize].view(dtype).reshape(shape)


# ----------------------------------------------------------------------------- real CUDA


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = handle_int(check("cudaMalloc", _runtime().cudaMalloc(max(self.nbytes, 1))))

    def free(self) -> None:
        if self.ptr:
            check("cudaFree", _runtime().cudaFree(self.ptr))
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory with NumPy views (a view is valid until ``free``)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = handle_int(check("cudaMallocHost", _runtime().cudaMallocHost(max(self.nbytes, 1))))
        # the whole buffer as bytes, made once: a view is then a slice of it, not a new ctypes array per call
        self._bytes = _host_view(self.ptr, self.nbytes, np.dtype(np.uint8), (self.nbytes,))

    def view(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        return _bytes_view(self._bytes, dtype, tuple(shape))

    def free(self) -> None:
        if self.ptr:
            self._bytes = np.empty(0, np.uint8)
            check("cudaFreeHost", _runtime().cudaFreeHost(self.ptr))
            self.ptr = 0


class Stream:
    """A non-blocking stream (never the legacy default stream)."""

    def __init__(self) -> None:
        rt = _runtime()
        self._obj = check("cudaStreamCreateWithFlags", rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
        self.handle = handle_int(self._obj)

    def synchronize(self) -> None:
        check("cudaStreamSynchronize", _runtime().cudaStreamSynchronize(self._obj))

    def close(self) -> None:
        if self._obj is not None:
            check("cudaStreamDestroy", _runtime().cudaStreamDestroy(self._obj))
            self._obj = None
            self.handle = 0


class Event:
    """A CUDA event; ``held``: record it through ``common.gpu.held_driver`` (the GIL kept)."""

    def __init__(self, blocking: bool = False, held: HeldDriver | None = None) -> None:
        rt = _runtime()
        flags = rt.cudaEventBlockingSync if blocking else rt.cudaEventDefault
        self._obj = check("cudaEventCreateWithFlags", rt.cudaEventCreateWithFlags(flags))
        self.handle = handle_int(self._obj)
        self._held = held

    def record(self, stream: Stream) -> None:
        if self._held is not None:
            self._held.record(self.handle, stream.handle)
            return
        check("cudaEventRecord", _runtime().cudaEventRecord(self._obj, stream._obj))

    def synchronize(self) -> None:
        check("cudaEventSynchronize", _runtime().cudaEventSynchronize(self._obj))

    def close(self) -> None:
        if self._obj is not None:
            check("cudaEventDestroy", _runtime().cudaEventDestroy(self._obj))
            self._obj = None
            self.handle = 0


class Graph:
    """An instantiated CUDA graph captured from a stream."""

    def __init__(self, graph: Any) -> None:
        rt = _runtime()
        self._graph = graph
        try:
            self._exec = check("cudaGraphInstantiate", rt.cudaGraphInstantiate(graph, 0))
        except CudaError:
            check("cudaGraphDestroy", rt.cudaGraphDestroy(graph))
            raise

    def launch(self, stream: Stream) -> None:
        check("cudaGraphLaunch", _runtime().cudaGraphLaunch(self._exec, stream._obj))

    def close(self) -> None:
        rt = _runtime()
        if self._exec is not None:
            check("cudaGraphExecDestroy", rt.cudaGraphExecDestroy(self._exec))
            self._exec = None
        if self._graph is not None:
            check("cudaGraphDestroy", rt.cudaGraphDestroy(self._graph))
            self._graph = None


class CudaMemory:
    """The real MemoryLayer on cuda.bindings.runtime (device 0 unless told otherwise). Event records, async
    copies and stream waits go through ``common.gpu.held_driver`` (the GIL kept for their microseconds)
    where libcuda allows (``driver_calls`` says which ran)."""

    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        rt = _runtime()
        try:
            count = check("cudaGetDeviceCount", rt.cudaGetDeviceCount())
            if count < 1:
                raise UserError("no CUDA device found; TensorRT inference needs an NVIDIA GPU")
            check("cudaSetDevice", rt.cudaSetDevice(device))
            check("cudaFree", rt.cudaFree(0))  # the device's primary context, current on this thread
        except CudaError as exc:
            raise UserError(
                f"no usable CUDA device ({exc}); check nvidia-smi, and that cuda-python's major version "
                "is not newer than the driver's CUDA version (cuda-python 13 needs driver >= 580)"
            ) from exc
        self.device = device
        self._held: HeldDriver | None = None  # (cuda-python's calls while held_calls checks libcuda's on this)
        self._held, self.driver_calls = held_calls(device, self)

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(nbytes)

    def pinned_buffer(self, nbytes: int) -> PinnedBuffer:
        return PinnedBuffer(nbytes)

    def stream(self) -> Stream:
        return Stream()

    def event(self, blocking: bool = False) -> Event:
        return Event(blocking, self._held)

    def elapsed_ms(self, start: Event, end: Event) -> float:
        return float(check("cudaEventElapsedTime", _runtime().cudaEventElapsedTime(start._obj, end._obj)))

    def stream_wait_event(self, stream: Stream, event: Event) -> None:
        """Work enqueued on ``stream`` after this waits for ``event``'s last record (on any stream)."""
        if self._held is not None:
            self._held.wait_event(stream.handle, event.handle)
            return
        check("cudaStreamWaitEvent", _runtime().cudaStreamWaitEvent(stream._obj, event._obj, 0))

    def _copy(self, kind_name: str, dst: int, src: int, nbytes: int, stream: Stream) -> None:
        """One async copy of ``kind_name`` (cudaMemcpyKind): through the held driver calls where they run."""
        if self._held is not None:
            getattr(self._held, _HELD_COPY[kind_name])(dst, src, nbytes, stream.handle)
            return
        rt = _runtime()
        kind = getattr(rt.cudaMemcpyKind, kind_name)
        check("cudaMemcpyAsync", rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream._obj))

    def copy_htod_async(self, dst: int, src: int, nbytes: int, stream: Stream) -> None:
        self._copy("cudaMemcpyHostToDevice", dst, src, nbytes, stream)

    def copy_dtoh_async(self, dst: int, src: int, nbytes: int, stream: Stream) -> None:
        self._copy("cudaMemcpyDeviceToHost", dst, src, nbytes, stream)

    def copy_dtod_async(self, dst: int, src: int, nbytes: int, stream: Stream) -> None:
        self._copy("cudaMemcpyDeviceToDevice", dst, src, nbytes, stream)

    def begin_capture(self, stream: Stream) -> None:
        rt = _runtime()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check("cudaStreamBeginCapture", rt.cudaStreamBeginCapture(stream._obj, mode))

    def end_capture(self, stream: Stream) -> Graph:
        graph = check("cudaStreamEndCapture", _runtime().cudaStreamEndCapture(stream._obj))
        return Graph(graph)

    def device_info(self) -> dict[str, Any] | None:
        return device_info(self.device)


ROUND_TRIP_BYTES = 64


def round_trip(held: HeldDriver, mem: Any) -> str | None:
    """None when ``held``'s calls move bytes as they should on ``mem`` (a ``MemoryLayer``): a pattern up from
    pinned memory, copied on the device, back into other pinned memory, behind an event record and a stream
    wait; else why not. Run once before any lane uses them, so that a driver that takes these calls
    differently from cuda.h is caught before any batch is."""
    n, half = ROUND_TRIP_BYTES, ROUND_TRIP_BYTES // 2
    made: list[Any] = []
    try:
        dev, src, dst = mem.device_buffer(n), mem.pinned_buffer(n), mem.pinned_buffer(n)
        made += [dev, src, dst]
        stream = mem.stream()
        made.append(stream)
        event = mem.event()
        made.append(event)
        pattern = np.arange(1, half + 1, dtype=np.uint8)
        src.view(np.uint8, (half,))[...] = pattern
        dst.view(np.uint8, (n,))[...] = 0
        held.copy_htod(dev.ptr, src.ptr, half, stream.handle)
        held.copy_dtod(dev.ptr + half, dev.ptr, half, stream.handle)
        held.record(event.handle, stream.handle)
        held.wait_event(stream.handle, event.handle)
        held.copy_dtoh(dst.ptr, dev.ptr, n, stream.handle)
        stream.synchronize()
        got = dst.view(np.uint8, (n,))
        if not (np.array_equal(got[:half], pattern) and np.array_equal(got[half:], pattern)):
            return "a copy came back with other bytes"
        return None
    except (DriverError, CudaError) as exc:
        return str(exc)
    finally:
        for obj in reversed(made):
            (obj.close if hasattr(obj, "close") else obj.free)()


_HELD: dict[int, tuple[HeldDriver | None, str]] = {}  # device -> held_calls' answer, once per process
_HELD_LOCK = threading.Lock()


def held_calls(device: int, mem: Any = None) -> tuple[HeldDriver | None, str]:
    """``common.gpu.held_driver``'s calls for device ``device`` where libcuda offers them and they pass
    ``round_trip`` on ``mem`` (default: a ``CudaMemory`` of the device, which asks this once), else None
    (cuda-python's calls); and what runs, for ``driver_calls``. Decided once per device and process, on the
    first caller's thread, where the device's primary context is current."""
    if device not in _HELD:
        if mem is None:
            CudaMemory(device)  # decides it
        else:
            with _HELD_LOCK:
                if device not in _HELD:
                    held = held_driver()
                    why = None if held is None else round_trip(held, mem)
                    if held is None:
                        _HELD[device] = (None, DRIVER_CALLS[False])
                    elif why is not None:
                        _HELD[device] = (None, f"{DRIVER_CALLS[False]}; libcuda's own calls failed a check ({why})")
                    else:
                        _HELD[device] = (held, DRIVER_CALLS[True])
    return _HELD[device]


def memory_left(device: int = 0) -> tuple[int, int]:
    """(free, total) bytes of CUDA device ``device`` now (cudaMemGetInfo)."""
    rt = _runtime()
    check("cudaSetDevice", rt.cudaSetDevice(device))
    free, total = check("cudaMemGetInfo", rt.cudaMemGetInfo())
    return int(free), int(total)


def device_info(device: int = 0) -> dict[str, Any] | None:
    """``common.core.sysinfo.gpu_facts`` of CUDA device ``device`` (matched to NVML by its PCI bus id),
    or None when there is none (or no cuda-python, or no NVML)."""
    from common.core.sysinfo import gpu_info

    try:
        rt = _runtime()
        if int(check("cudaGetDeviceCount", rt.cudaGetDeviceCount())) <= device:
            return None
        props = check("cudaGetDeviceProperties", rt.cudaGetDeviceProperties(device))
        bus_id = f"{int(props.pciDomainID):x}:{int(props.pciBusID):x}:{int(props.pciDeviceID):x}.0"
    except (UserError, CudaError, AttributeError):
        return None
    return gpu_info(pci_bus_id=bus_id)


class HostLease:
    """Owns one pinned host buffer; frees it when neither its owner nor any view handed out holds it
    (NumPy views reference this owner, as NVIDIA's samples keep the owner of host memory alive)."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.ptr = int(host.ptr)
        self.nbytes = int(host.nbytes)
        fin = weakref.finalize(self, host.free)
        fin.atexit = False  # never call into CUDA while the interpreter shuts down

    def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """A NumPy view of the buffer whose ``base`` chain holds this ``HostLease``."""
        dtype, count = _fitting(dtype, shape, self.nbytes)
        if count == 0:
            return np.empty(shape, dtype)
        raw = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(self.ptr)
        raw._lease = self  # type: ignore[attr-defined]  # ctypes instances take attributes
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


class Staging:
    """A device buffer and its pinned host twin, grown (never shrunk) to the largest size asked for.

    ``ensure(nbytes)`` returns True when the device address changed (a TensorRT context must be told).
    A host buffer replaced by growth is freed once no view of it is left (``HostLease``).
    """

    def __init__(self, mem: Any, what: str = "buffer") -> None:
        self.mem, self.what = mem, what
        self.device: Any = None
        self.host: HostLease | None = None
        self.capacity = 0

    @property
    def device_ptr(self) -> int:
        return int(self.device.ptr) if self.device is not None else 0

    def ensure(self, nbytes: int) -> bool:
        if self.device is not None and self.capacity >= nbytes:
            return False
        self.free()
        cap = max(int(nbytes), 1)
        device = None
        try:
            device = self.mem.device_buffer(cap)
            self.host = HostLease(self.mem.pinned_buffer(cap))
        except CudaError as exc:
            if device is not None:
                device.free()
            raise UserError(
                f"cannot allocate {cap / 2**20:.1f} MiB for {self.what} ({exc}); use a smaller batch or free GPU memory"
            ) from exc
        self.device, self.capacity = device, cap
        return True

    def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """The pinned side as an array (valid until the buffer grows; the view keeps its memory alive)."""
        assert self.host is not None, "Staging.view before ensure"
        return self.host.view(dtype, tuple(shape))

    def upload(self, array: np.ndarray, stream: Any, dtype: Any = None) -> None:
        """Copy ``array`` into pinned memory (cast to ``dtype``), then H2D on ``stream``."""
        dtype = np.dtype(dtype or array.dtype)
        nbytes = math.prod(array.shape) * dtype.itemsize
        self.ensure(nbytes)
        np.copyto(self.view(dtype, array.shape), array, casting="same_kind")
        self.upload_staged(nbytes, stream)

    def upload_staged(self, nbytes: int, stream: Any) -> None:
        """H2D of the first ``nbytes`` already written into the pinned side."""
        assert self.host is not None
        self.mem.copy_htod_async(self.device_ptr, self.host.ptr, int(nbytes), stream)

    def download(self, nbytes: int, stream: Any) -> None:
        """D2H of the first ``nbytes`` into the pinned side, on ``stream``."""
        assert self.host is not None
        self.mem.copy_dtoh_async(self.host.ptr, self.device_ptr, int(nbytes), stream)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
        self.device, self.host, self.capacity = None, None, 0  # host: freed when its last view goes
