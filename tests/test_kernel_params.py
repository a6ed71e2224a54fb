"""KernelModule's packed kernel parameters (the kernelParams array cuLaunchKernel reads), on any machine."""

from __future__ import annotations

import ctypes

from common.throughput import gpu_preprocess
from common.throughput.gpu_preprocess import KernelModule


def _module() -> KernelModule:
    module = object.__new__(KernelModule)  # no CUDA context: only the parameter packing is used
    module._packed = {}
    return module


def _read(address: int, types: tuple) -> list:
    ptrs = (ctypes.c_void_p * len(types)).from_address(address)
    return [ctypes.cast(ptrs[i], ctypes.POINTER(t)).contents.value for i, t in enumerate(types)]


def test_parameters_are_packed_as_the_driver_reads_them() -> None:
    types = (ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_double)
    args = (0x7F0012345600, -3, 0.25, 1e-300)
    packed = _module()._params(args, types)  # held, as the launch holds it
    assert _read(packed[2], types) == [0x7F0012345600, -3, 0.25, 1e-300]


def test_the_same_arguments_reuse_their_array_and_others_get_their_own() -> None:
    m = _module()
    types = (ctypes.c_void_p, ctypes.c_int)
    first = m._params((4096, 1), types)
    assert m._params((4096, 1), types)[2] == first[2]
    other = m._params((4096, 2), types)
    assert other[2] != first[2] and _read(other[2], types) == [4096, 2]
    assert _read(first[2], types) == [4096, 1]  # unchanged by the other launch


def test_the_cache_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(gpu_preprocess, "PACKED_LAUNCHES", 4)
    m = _module()
    held = [m._params((i,), (ctypes.c_int,)) for i in range(10)]
    assert len(m._packed) <= 4
    assert [_read(h[2], (ctypes.c_int,))[0] for h in held] == list(range(10))  # held entries stay valid
