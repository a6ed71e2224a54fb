"""The CUDA driver's short, non-blocking calls made with the GIL held (``ctypes.PyDLL`` over libcuda).

cuda-python releases the GIL around every driver call. For a call that returns in microseconds (a kernel
launch, an event record, an asynchronous copy from pinned memory, a stream's wait on an event) the release
is what costs: when the call returns, its thread must take the GIL back from whichever thread took it
meanwhile, and waits until that one blocks or its switch interval ends. One lane's batch makes a dozen such
calls, so with several lanes, the loaders' hand-offs and the main thread all wanting the interpreter, a
batch-1 lane spent most of its time waiting to get back into Python. Through ``HeldDriver`` these calls
keep the GIL: nothing else runs during their few microseconds, and nothing has to be taken back.

Calls that wait for the GPU (``cudaEventSynchronize``, ``cudaStreamSynchronize``) and everything done once
(allocations, module loads) stay on cuda-python, which releases the GIL while the GPU works.

``held_driver()`` gives a ``HeldDriver`` for the context current on the calling thread, or None where
libcuda can't be loaded or lacks one of ``SYMBOLS``; callers then keep cuda-python's calls. Each thread that
calls through it gets that context made current once (a lane thread may not have made any CUDA call yet).
``common.gpu.cuda_mem.held_calls`` uses it only after a round trip of bytes through these calls came back
right, once per device and process.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Any

from common.core.errors import RunError

__all__ = ["LIBRARY", "SYMBOLS", "DriverError", "HeldDriver", "held_driver", "load_library"]

LIBRARY = "libcuda.so.1"
_VP, _U, _SZ, _U64 = ctypes.c_void_p, ctypes.c_uint, ctypes.c_size_t, ctypes.c_uint64
# the driver entry points used, with their C parameters (cuda.h; CUdeviceptr is 64-bit, handles are pointers)
SYMBOLS: dict[str, tuple[Any, ...]] = {
    "cuCtxGetCurrent": (ctypes.POINTER(_VP),),
    "cuCtxSetCurrent": (_VP,),
    "cuGetErrorName": (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)),
    "cuLaunchKernel": (_VP, _U, _U, _U, _U, _U, _U, _U, _VP, _VP, _VP),
    "cuEventRecord": (_VP, _VP),
    "cuStreamWaitEvent": (_VP, _VP, _U),
    "cuMemcpyHtoDAsync_v2": (_U64, _VP, _SZ, _VP),
    "cuMemcpyDtoHAsync_v2": (_VP, _U64, _SZ, _VP),
    "cuMemcpyDtoDAsync_v2": (_U64, _U64, _SZ, _VP),
}


class DriverError(RunError, RuntimeError):
    """A driver call made through ``HeldDriver`` failed (one line from ``run_main``, exit 1)."""

    def __init__(self, call: str, code: int, name: str) -> None:
        self.call, self.code, self.error_name = call, code, name
        super().__init__(f"{call}: {name}")


def load_library(name: str = LIBRARY) -> Any:
    """libcuda as a ``ctypes.PyDLL`` (its calls keep the GIL) with ``SYMBOLS``' types set, or None when it
    can't be loaded or lacks a symbol."""
    try:
        lib = ctypes.PyDLL(name)
        for symbol, params in SYMBOLS.items():
            fn = getattr(lib, symbol)
            fn.argtypes, fn.restype = list(params), ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


class HeldDriver:
    """``SYMBOLS``' calls on ``lib`` (a ``ctypes.PyDLL``: the GIL stays held) for one context. Handles and
    addresses are ints; a non-zero CUresult raises ``DriverError`` naming the call and the error."""

    def __init__(self, lib: Any, context: int) -> None:
        self._lib, self._context = lib, int(context)
        self._local = threading.local()

    def _check(self, call: str, code: int) -> None:
        if code == 0:
            return
        text = ctypes.c_char_p()
        got = self._lib.cuGetErrorName(code, ctypes.byref(text))
        name = text.value.decode() if got == 0 and text.value else f"CUresult {code}"
        raise DriverError(call, int(code), name)

    def _current(self) -> None:
        """The context made current on this thread, once per thread."""
        if not getattr(self._local, "ready", False):
            self._check("cuCtxSetCurrent", self._lib.cuCtxSetCurrent(self._context))
            self._local.ready = True

    def launch(
        self,
        function: int,
        grid: tuple[int, int, int],
        block: tuple[int, int, int],
        shared: int,
        stream: int,
        params: int,
    ) -> None:
        """``cuLaunchKernel`` with a packed ``kernelParams`` array at address ``params``."""
        self._current()
        code = self._lib.cuLaunchKernel(function, *grid, *block, shared, stream, params, None)
        self._check("cuLaunchKernel", code)

    def record(self, event: int, stream: int) -> None:
        self._current()
        self._check("cuEventRecord", self._lib.cuEventRecord(event, stream))

    def wait_event(self, stream: int, event: int) -> None:
        self._current()
        self._check("cuStreamWaitEvent", self._lib.cuStreamWaitEvent(stream, event, 0))

    def copy_htod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        """Asynchronous from pinned memory (from pageable memory the driver copies before returning)."""
        self._current()
        self._check("cuMemcpyHtoDAsync", self._lib.cuMemcpyHtoDAsync_v2(dst, src, nbytes, stream))

    def copy_dtoh(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._current()
        self._check("cuMemcpyDtoHAsync", self._lib.cuMemcpyDtoHAsync_v2(dst, src, nbytes, stream))

    def copy_dtod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._current()
        self._check("cuMemcpyDtoDAsync", self._lib.cuMemcpyDtoDAsync_v2(dst, src, nbytes, stream))


@functools.cache  # one load per process
def _library() -> Any:
    return load_library()


def held_driver(lib: Any = None) -> HeldDriver | None:
    """A ``HeldDriver`` for the context current on this thread (the caller made it current), or None where
    libcuda (``lib``; default: ``load_library()``, once) can't be loaded, lacks a symbol, or no context is
    current."""
    lib = _library() if lib is None else lib
    if lib is None:
        return None
    ctx = ctypes.c_void_p()
    if lib.cuCtxGetCurrent(ctypes.byref(ctx)) != 0 or not ctx.value:
        return None
    return HeldDriver(lib, ctx.value)
