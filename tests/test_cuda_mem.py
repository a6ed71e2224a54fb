"""The cuda-python memory layer (common.gpu.cuda_mem).

CPU part: error naming and host views (needs only the cuda.bindings package).
GPU part (skipped without a CUDA device): copies round-trip bit-exact from 1 KiB to 256 MiB,
events time a copy, a captured CUDA graph replays a copy, allocation failures are named.
Set YOLO_CUDA_MEM_REPORT=path.json to record the measured numbers.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import cuda_device_count

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda.bindings) not installed")

from common.core.errors import UserError  # noqa: E402
from common.gpu.cuda_mem import CudaError, CudaMemory, _host_view, check, device_info  # noqa: E402

SIZES = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20]
REPORT: dict = {}


def test_check_names_the_error_and_unpacks_values():
    with pytest.raises(CudaError, match=r"^cudaMalloc: cudaErrorMemoryAllocation \(out of memory\)$") as info:
        check("cudaMalloc", (runtime.cudaError_t.cudaErrorMemoryAllocation, None))
    assert info.value.code == int(runtime.cudaError_t.cudaErrorMemoryAllocation)
    assert check("x", (runtime.cudaError_t.cudaSuccess,)) is None
    assert check("x", (runtime.cudaError_t.cudaSuccess, 7)) == 7
    assert check("x", (runtime.cudaError_t.cudaSuccess, 7, 8)) == (7, 8)


def test_host_view_bounds():
    import ctypes

    buf = (ctypes.c_uint8 * 16)()
    view = _host_view(ctypes.addressof(buf), 16, np.dtype(np.float32), (2, 2))
    view[...] = 1.5
    assert np.frombuffer(bytes(buf), np.float32).tolist() == [1.5] * 4
    with pytest.raises(ValueError):
        _host_view(ctypes.addressof(buf), 16, np.dtype(np.float32), (5,))


def test_pinned_buffer_views_share_its_memory_and_refuse_what_does_not_fit(monkeypatch):
    """``PinnedBuffer.view`` slices one byte view of the buffer made at allocation: every view, of any dtype and
    shape, reads and writes the same memory; past the buffer it is refused; after ``free`` no view is made.
    (cudaMallocHost / cudaFreeHost are recorded on host memory here, no device.)"""
    import ctypes

    from common.gpu import cuda_mem

    blocks: dict[int, object] = {}

    class Runtime:
        cudaError_t = runtime.cudaError_t

        @staticmethod
        def cudaMallocHost(n):
            block = (ctypes.c_uint8 * n)()
            blocks[ctypes.addressof(block)] = block
            return runtime.cudaError_t.cudaSuccess, ctypes.addressof(block)

        @staticmethod
        def cudaFreeHost(ptr):
            del blocks[ptr]
            return (runtime.cudaError_t.cudaSuccess,)

    monkeypatch.setattr(cuda_mem, "_runtime", lambda: Runtime)
    buf = cuda_mem.PinnedBuffer(64)
    buf.view(np.float32, (4, 4))[...] = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert buf.view(np.float32, (16,)).tolist() == list(range(16))
    assert buf.view(np.int32, (2,)).tolist() == np.arange(2, dtype=np.float32).view(np.int32).tolist()
    assert bytes(blocks[buf.ptr])[4:8] == np.float32(1).tobytes()  # the view is the allocation, not a copy
    assert buf.view(np.uint8, (0, 3)).shape == (0, 3)
    with pytest.raises(ValueError, match="does not fit a 64-byte buffer"):
        buf.view(np.float64, (9,))
    buf.free()
    assert buf.ptr == 0 and not blocks
    with pytest.raises(ValueError):
        buf.view(np.uint8, (1,))


def test_a_blocking_event_is_created_with_cudas_blocking_sync_flag(monkeypatch):
    """``event(blocking=True)`` asks CUDA for cudaEventBlockingSync (its synchronize sleeps), the default event
    for cudaEventDefault (CUDA spins while the process has fewer contexts than cores). The flags are
    cuda.bindings' own constants; the call is recorded instead of made (no device here)."""
    from common.gpu import cuda_mem

    made: list[int] = []

    class Runtime:
        cudaError_t = runtime.cudaError_t
        cudaEventDefault = runtime.cudaEventDefault
        cudaEventBlockingSync = runtime.cudaEventBlockingSync

        @staticmethod
        def cudaEventCreateWithFlags(flags):
            made.append(int(flags))
            return runtime.cudaError_t.cudaSuccess, runtime.cudaEvent_t(0x1000 + len(made))

    monkeypatch.setattr(cuda_mem, "_runtime", lambda: Runtime)
    cuda_mem.Event()
    cuda_mem.Event(blocking=True)
    assert made == [int(runtime.cudaEventDefault), int(runtime.cudaEventBlockingSync)]
    assert int(runtime.cudaEventBlockingSync) != int(runtime.cudaEventDefault)


gpu = pytest.mark.skipif(cuda_device_count() == 0, reason="no CUDA device")


@pytest.mark.skipif(cuda_device_count() > 0, reason="a CUDA device is present")
def test_no_gpu_is_a_one_line_user_error():
    with pytest.raises(UserError, match=r"no (usable )?CUDA device") as info:
        CudaMemory()
    assert "\n" not in str(info.value)
    assert device_info() is None


@pytest.fixture(scope="module")
def mem():
    return CudaMemory()


def _record(key, value):
    REPORT[key] = value
    path = os.environ.get("YOLO_CUDA_MEM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"device": device_info(), **REPORT}, fh, indent=2)


@gpu
@pytest.mark.parametrize("nbytes", SIZES, ids=lambda n: f"{n >> 10}KiB")
def test_copy_round_trip_bit_exact_and_timed(mem, nbytes):
    stream = mem.stream()
    assert stream.handle != 0  # never the legacy default stream
    src, dst = mem.pinned_buffer(nbytes), mem.pinned_buffer(nbytes)
    d_a, d_b = mem.device_buffer(nbytes), mem.device_buffer(nbytes)
    ev = [mem.event() for _ in range(4)]
    try:
        data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
        src.view(np.uint8, (nbytes,))[...] = data
        dst.view(np.uint8, (nbytes,))[...] = ~data
        ev[0].record(stream)
        mem.copy_htod_async(d_a.ptr, src.ptr, nbytes, stream)
        ev[1].record(stream)
        mem.copy_dtod_async(d_b.ptr, d_a.ptr, nbytes, stream)
        ev[2].record(stream)
        mem.copy_dtoh_async(dst.ptr, d_b.ptr, nbytes, stream)
        ev[3].record(stream)
        ev[3].synchronize()
        assert np.array_equal(dst.view(np.uint8, (nbytes,)), data)
        h2d, d2d, d2h = (mem.elapsed_ms(ev[i], ev[i + 1]) for i in range(3))
        assert h2d > 0 and d2h > 0 and d2d >= 0
        _record(
            f"copy_{nbytes}",
            {
                "bytes": nbytes,
                "h2d_ms": h2d,
                "d2d_ms": d2d,
                "d2h_ms": d2h,
                "h2d_GBps": nbytes / h2d / 1e6,
                "d2h_GBps": nbytes / d2h / 1e6,
                "d2d_GBps": nbytes / d2d / 1e6 if d2d > 0 else None,
            },
        )
    finally:
        for b in (src, dst, d_a, d_b):
            b.free()
        for e in ev:
            e.close()
        stream.close()


@gpu
def test_captured_graph_replays_a_copy(mem):
    nbytes = 4 << 20
    stream = mem.stream()
    host_in, host_out = mem.pinned_buffer(nbytes), mem.pinned_buffer(nbytes)
    d_a, d_b = mem.device_buffer(nbytes), mem.device_buffer(nbytes)
    start, end = mem.event(), mem.event()
    try:
        mem.begin_capture(stream)
        mem.copy_dtod_async(d_b.ptr, d_a.ptr, nbytes, stream)
        mem.copy_dtoh_async(host_out.ptr, d_b.ptr, nbytes, stream)
        graph = mem.end_capture(stream)
        times = []
        for seed in range(3):  # new data each time: the replay really copies
            data = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)
            host_in.view(np.uint8, (nbytes,))[...] = data
            mem.copy_htod_async(d_a.ptr, host_in.ptr, nbytes, stream)
            start.record(stream)
            graph.launch(stream)
            end.record(stream)
            stream.synchronize()
            assert np.array_equal(host_out.view(np.uint8, (nbytes,)), data)
            times.append(mem.elapsed_ms(start, end))
        graph.close()
        _record("graph_replay_4MiB_dtod_plus_d2h_ms", times)
    finally:
        for b in (host_in, host_out, d_a, d_b):
            b.free()
        start.close()
        end.close()
        stream.close()


@gpu
def test_allocation_failure_is_named(mem):
    with pytest.raises(CudaError, match="cudaMalloc: cudaErrorMemoryAllocation"):
        mem.device_buffer(1 << 50)
    info = device_info()
    assert info and info["name"] and info["compute_capability"]
    _record("device_info_ok", True)
