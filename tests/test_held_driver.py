"""common.gpu.held_driver against a stand-in libcuda compiled here (skipped without a C compiler).

The stand-in keeps the driver's rules these calls meet: a call on a thread with no current context fails with
CUDA_ERROR_INVALID_CONTEXT; each call records its arguments as the C function received them, so the
parameter order and widths of ``SYMBOLS`` are checked against cuda.h's signatures written out below.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from common.gpu import cuda_mem
from common.gpu.held_driver import DriverError, HeldDriver, held_driver, load_library

STUB = r"""
#include <stdint.h>
#include <string.h>
#include <time.h>
static __thread void *cur = 0;
uint64_t rec[16];
char last[32];
long spin_ns = 0;
int do_copy = 0;      /* copies move bytes (the "device" addresses are host memory) */
int fail_record = 0;  /* cuEventRecord fails */
static void put(const char *name, int n, const uint64_t *v) {
    strncpy(last, name, 31); memcpy(rec, v, n * sizeof(uint64_t));
}
static void spin(void) {
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    do { clock_gettime(CLOCK_MONOTONIC, &b); }
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < spin_ns);
}
#define NEED_CTX if (!cur) return 201;
#define BAD_STREAM(s) if ((uint64_t)(s) == 0xbad) return 400;
int cuCtxGetCurrent(void **c) { *c = cur; return 0; }
int cuCtxSetCurrent(void *c) { cur = c; return 0; }
int cuGetErrorName(int e, const char **s) {
    *s = e == 201 ? "CUDA_ERROR_INVALID_CONTEXT" : e == 400 ? "CUDA_ERROR_INVALID_HANDLE" : 0; return *s ? 0 : 1;
}
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned sh, void *s, void **k, void **x) {
    NEED_CTX BAD_STREAM(s)
    uint64_t v[] = {(uint64_t)f, gx, gy, gz, bx, by, bz, sh, (uint64_t)s, (uint64_t)k, (uint64_t)x};
    put("cuLaunchKernel", 11, v); spin(); return 0;
}
int cuEventRecord(void *e, void *s) {
    NEED_CTX BAD_STREAM(s) if (fail_record) return 400;
    uint64_t v[] = {(uint64_t)e, (uint64_t)s}; put("cuEventRecord", 2, v); return 0;
}
int cuStreamWaitEvent(void *s, void *e, unsigned flags) {
    NEED_CTX uint64_t v[] = {(uint64_t)s, (uint64_t)e, flags}; put("cuStreamWaitEvent", 3, v); return 0;
}
int cuMemcpyHtoDAsync_v2(uint64_t d, const void *h, size_t n, void *s) {
    NEED_CTX uint64_t v[] = {d, (uint64_t)h, n, (uint64_t)s}; put("cuMemcpyHtoDAsync_v2", 4, v);
    if (do_copy) memmove((void *)d, h, n); return 0;
}
int cuMemcpyDtoHAsync_v2(void *h, uint64_t d, size_t n, void *s) {
    NEED_CTX uint64_t v[] = {(uint64_t)h, d, n, (uint64_t)s}; put("cuMemcpyDtoHAsync_v2", 4, v);
    if (do_copy) memmove(h, (void *)d, n); return 0;
}
int cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t e, size_t n, void *s) {
    NEED_CTX uint64_t v[] = {d, e, n, (uint64_t)s}; put("cuMemcpyDtoDAsync_v2", 4, v);
    if (do_copy) memmove((void *)d, (void *)e, n); return 0;
}
"""

CTX = 0x7F00_0000_1000  # the stand-in's "primary context" (any non-null pointer)


@pytest.fixture(scope="module")
def stub_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libcuda")
    out = tmp_path_factory.mktemp("stubcuda")
    (out / "stub.c").write_text(STUB)
    lib = out / "libcuda.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(out / "stub.c")], check=True)
    return lib


@pytest.fixture()
def driver(stub_path: Path) -> tuple[HeldDriver, ctypes.CDLL]:
    lib = load_library(str(stub_path))
    assert isinstance(lib, ctypes.PyDLL)
    lib.cuCtxSetCurrent(None)  # (the stand-in is loaded once per process: no context left from another test)
    assert held_driver(lib) is None  # no context current on this thread yet: nothing to hold calls for
    lib.cuCtxSetCurrent(CTX)
    held = held_driver(lib)
    assert held is not None
    return held, ctypes.CDLL(str(stub_path))  # the same loaded library, to read what it recorded


def _recorded(view: ctypes.CDLL, n: int) -> tuple[str, list[int]]:
    rec = (ctypes.c_uint64 * 16).in_dll(view, "rec")
    return (ctypes.c_char * 32).in_dll(view, "last").value.decode(), list(rec[:n])


def test_each_call_reaches_the_driver_with_cuda_hs_parameters(driver) -> None:
    held, view = driver
    big = 0xFFFF_FF00_0000_1234  # a device address above 2^63: CUdeviceptr is unsigned 64-bit
    held.launch(0xF00, (3, 2, 1), (256, 1, 1), 48, 0x5000, 0x6000)
    assert _recorded(view, 11) == ("cuLaunchKernel", [0xF00, 3, 2, 1, 256, 1, 1, 48, 0x5000, 0x6000, 0])
    held.record(0xE00, 0x5000)
    assert _recorded(view, 2) == ("cuEventRecord", [0xE00, 0x5000])
    held.wait_event(0x5000, 0xE00)
    assert _recorded(view, 3) == ("cuStreamWaitEvent", [0x5000, 0xE00, 0])
    held.copy_htod(big, 0x1000, 1 << 33, 0x5000)
    assert _recorded(view, 4) == ("cuMemcpyHtoDAsync_v2", [big, 0x1000, 1 << 33, 0x5000])
    held.copy_dtoh(0x1000, big, 7, 0x5000)
    assert _recorded(view, 4) == ("cuMemcpyDtoHAsync_v2", [0x1000, big, 7, 0x5000])
    held.copy_dtod(big, big + 8, 7, 0x5000)
    assert _recorded(view, 4) == ("cuMemcpyDtoDAsync_v2", [big, big + 8, 7, 0x5000])


def test_a_thread_that_made_no_cuda_call_gets_the_context(driver, stub_path) -> None:
    """A lane thread's first call is ours: the driver refuses it without a current context, so the
    context is made current on each calling thread."""
    held, _ = driver
    raw: list[int] = []
    errors: list[BaseException] = []

    def lane() -> None:
        raw.append(ctypes.CDLL(str(stub_path)).cuEventRecord(ctypes.c_void_p(1), ctypes.c_void_p(2)))
        try:
            held.record(0xE00, 0x5000)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    t = threading.Thread(target=lane)
    t.start()
    t.join()
    assert raw == [201]  # the stand-in keeps the driver's rule
    assert errors == []


def test_a_failed_call_names_the_call_and_the_error(driver) -> None:
    held, _ = driver
    with pytest.raises(DriverError, match=r"^cuEventRecord: CUDA_ERROR_INVALID_HANDLE$") as info:
        held.record(0xE00, 0xBAD)
    assert info.value.code == 400
    with pytest.raises(DriverError, match=r"^cuLaunchKernel: CUDA_ERROR_INVALID_HANDLE$"):
        held.launch(0xF00, (1, 1, 1), (1, 1, 1), 0, 0xBAD, 0x6000)


def _progress_during_launch(lib: ctypes.CDLL, view: ctypes.CDLL) -> int:
    """How far another Python thread counts while one launch spins 50 ms inside the library."""
    ctypes.c_long.in_dll(view, "spin_ns").value = 50_000_000
    count, stop, started = [0], threading.Event(), threading.Event()

    def counter() -> None:
        started.set()
        while not stop.is_set():
            count[0] += 1

    held = HeldDriver(lib, CTX)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.2)  # longer than the call: the counter runs during it only if the call lets it
    t = threading.Thread(target=counter)
    t.start()
    started.wait()
    try:
        before = count[0]
        held.launch(1, (1, 1, 1), (1, 1, 1), 0, 2, 3)
        return count[0] - before
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
        ctypes.c_long.in_dll(view, "spin_ns").value = 0


def test_the_calls_keep_the_gil(driver, stub_path) -> None:
    """No other Python thread runs during a held call; through a GIL-releasing ``ctypes.CDLL`` of the same
    library the same launch lets the other thread run (so this test can tell the two apart)."""
    _, view = driver
    held_lib = load_library(str(stub_path))
    assert _progress_during_launch(held_lib, view) == 0
    released = ctypes.CDLL(str(stub_path))
    released.cuLaunchKernel.argtypes = held_lib.cuLaunchKernel.argtypes
    released.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
    assert _progress_during_launch(released, view) > 0


def test_no_library_or_a_library_without_the_symbols_gives_none() -> None:
    assert load_library("libcuda-that-does-not-exist.so.1") is None
    libc = ctypes.util.find_library("c")
    if libc:
        assert load_library(libc) is None  # loads, but has no cuLaunchKernel


@pytest.fixture()
def flags(driver):
    """The stand-in's switches, reset after the test."""
    _, view = driver
    names = ("do_copy", "fail_record")
    yield {n: ctypes.c_int.in_dll(view, n) for n in names}
    for n in names:
        ctypes.c_int.in_dll(view, n).value = 0


def test_the_round_trip_passes_calls_that_move_the_bytes(driver, flags) -> None:
    from trt_double import FakeCudaMemory

    held, _ = driver
    flags["do_copy"].value = 1
    assert cuda_mem.round_trip(held, FakeCudaMemory()) is None


def test_the_round_trip_refuses_calls_that_move_nothing_or_fail(driver, flags) -> None:
    """What a driver taking the calls differently would look like: no bytes moved, or an error."""
    from trt_double import FakeCudaMemory

    held, _ = driver
    assert cuda_mem.round_trip(held, FakeCudaMemory()) == "a copy came back with other bytes"
    flags["do_copy"].value, flags["fail_record"].value = 1, 1
    assert cuda_mem.round_trip(held, FakeCudaMemory()) == "cuEventRecord: CUDA_ERROR_INVALID_HANDLE"


def test_held_calls_falls_back_to_cuda_python_and_says_why(driver, flags, monkeypatch) -> None:
    """Once per device: the held calls where they pass the round trip; cuda-python's otherwise, or where
    libcuda can't be loaded, with the reason in ``driver_calls``."""
    from trt_double import FakeCudaMemory

    held, _ = driver
    monkeypatch.setattr(cuda_mem, "_HELD", {})
    monkeypatch.setattr(cuda_mem, "held_driver", lambda: held)
    got, text = cuda_mem.held_calls(0, FakeCudaMemory())  # copies move nothing: refused
    assert got is None and text.startswith(cuda_mem.DRIVER_CALLS[False]) and "failed a check" in text
    flags["do_copy"].value = 1
    assert cuda_mem.held_calls(0, FakeCudaMemory()) == (None, text)  # decided once per device
    assert cuda_mem.held_calls(1, FakeCudaMemory()) == (held, cuda_mem.DRIVER_CALLS[True])
    monkeypatch.setattr(cuda_mem, "held_driver", lambda: None)
    assert cuda_mem.held_calls(2, FakeCudaMemory()) == (None, cuda_mem.DRIVER_CALLS[False])


def test_a_kernel_launch_the_driver_refuses_goes_again_through_cuda_python(driver) -> None:
    """``KernelModule.launch``: a held launch that fails is made again through cuda-python, and every later one
    too (``held_failed`` says why); cuda-python's own error, if any, is the one the user sees."""
    import threading as th

    from common.throughput.gpu_preprocess import KernelModule

    held, view = driver
    launched: list[tuple] = []

    class Driver:
        @staticmethod
        def CUstream(handle):  # cuda-python's name
            return handle

        @staticmethod
        def cuLaunchKernel(*args):
            launched.append(args)
            return (0,)

        @staticmethod
        def cuCtxSetCurrent(ctx):
            return (0,)

    module = KernelModule.__new__(KernelModule)
    module._driver, module._what, module._hint, module._ctx = Driver, "w", "h", 1
    module._local, module._packed = th.local(), {}
    module.functions, module._handles = {"k": "f"}, {"k": 0xF00}
    module._held, module.held_failed = held, None
    module.launch("k", (2,), (32,), (1,), (ctypes.c_int,), 0x5000)
    assert _recorded(view, 1) == ("cuLaunchKernel", [0xF00]) and launched == []  # held: no cuda-python call
    module.launch("k", (2,), (32,), (1,), (ctypes.c_int,), 0xBAD)  # the driver refuses the held launch
    assert module.held_failed == "cuLaunchKernel: CUDA_ERROR_INVALID_HANDLE" and module._held is None
    assert [a[:7] + a[8:9] for a in launched] == [("f", 2, 1, 1, 32, 1, 1, 0xBAD)]
    module.launch("k", (2,), (32,), (1,), (ctypes.c_int,), 0x5000)
    assert len(launched) == 2  # cuda-python's from now on


def test_cuda_memory_sends_its_short_calls_to_the_held_driver(driver) -> None:
    """``CudaMemory`` with held calls: each copy, stream wait and event record reaches the driver with its
    arguments in cuda.h's order (destination first); nothing goes to cuda-python (its runtime is not
    touched: there is no device here)."""
    from types import SimpleNamespace

    held, view = driver
    mem = cuda_mem.CudaMemory.__new__(cuda_mem.CudaMemory)
    mem._held = held
    stream = SimpleNamespace(handle=0x5000, _obj=None)
    mem.copy_htod_async(0xD000, 0x1000, 16, stream)
    assert _recorded(view, 4) == ("cuMemcpyHtoDAsync_v2", [0xD000, 0x1000, 16, 0x5000])
    mem.copy_dtoh_async(0x1000, 0xD000, 16, stream)
    assert _recorded(view, 4) == ("cuMemcpyDtoHAsync_v2", [0x1000, 0xD000, 16, 0x5000])
    mem.copy_dtod_async(0xD010, 0xD000, 16, stream)
    assert _recorded(view, 4) == ("cuMemcpyDtoDAsync_v2", [0xD010, 0xD000, 16, 0x5000])
    event = cuda_mem.Event.__new__(cuda_mem.Event)
    event.handle, event._held, event._obj = 0xE00, held, None
    event.record(stream)
    assert _recorded(view, 2) == ("cuEventRecord", [0xE00, 0x5000])
    mem.stream_wait_event(stream, event)
    assert _recorded(view, 3) == ("cuStreamWaitEvent", [0x5000, 0xE00, 0])
