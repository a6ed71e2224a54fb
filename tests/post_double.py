"""A test double of the GPU post-processing kernels, for machines without a GPU.

``FakePostprocessKernels`` stands in for ``common.throughput.gpu_postprocess.postprocess_kernels()`` on
``trt_double.FakeCudaMemory``: each ``launch`` does that kernel's job on the host addresses it is
given, in stream order, with the NumPy steps of ``common.throughput.gpu_postprocess`` (the kernels' emulation).
So ``GpuPostprocessor`` itself (buffers, launch sequence, per-image offsets, the D2H copy,
``collect``) runs unchanged in CI. Like the real kernels it writes candidate keys in no particular
order (reversed here): only the sort may order them.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from common.throughput.gpu_postprocess import (
    CHUNK,
    KERNEL_NAMES,
    boxes_reference,
    candidates_reference,
    greedy_reference,
    make_keys,
    split_keys,
)


def _view(ptr: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(dtype)
    raw = (ctypes.c_uint8 * (math.prod(shape) * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


class FakePostprocessKernels:
    def __init__(self, mem: Any) -> None:
        self.mem = mem
        self.arch = "fake"
        self.launches: list[str] = []

    def launch(
        self,
        name: str,
        grid: tuple[int, ...],
        block: tuple[int, ...],
        args: tuple[Any, ...],
        types: tuple[Any, ...],
        stream: int,
        shared_bytes: int = 0,
    ) -> None:
        assert name in KERNEL_NAMES, f"double: no kernel {name}"
        assert len(args) == len(types), f"double: {name} given {len(args)} args for {len(types)} types"
        assert math.prod(block) <= 1024, f"double: {name} launched with {block} threads"
        self.launches.append(name)
        grid = (*grid, 1, 1)[:3]
        self.mem.enqueue(stream, lambda: getattr(self, f"_{name}")(grid, *args))

    def _zero_ints(self, grid, p, n) -> None:
        _view(p, np.int32, (n,))[:] = 0

    def _src(self, src: int, half: int, shape: tuple[int, ...]) -> np.ndarray:
        return _view(src, np.float16 if half else np.float32, shape).astype(np.float32)

    def _yolo_scores(self, grid, src, half, c, a, c0, sigmoid, conf, keys, cls, count) -> None:
        b = grid[1]
        assert grid[0] * 256 >= a, "double: yolo_scores grid does not cover the anchors"
        x = self._src(src, half, (b, c, a))
        kv, cv, nv = _view(keys, np.uint64, (b, a)), _view(cls, np.int32, (b, a)), _view(count, np.int32, (b,))
        for j in range(b):
            idx, score, best = candidates_reference(x[j], c0, bool(sigmoid), conf)
            assert nv[j] == 0, "double: candidate count not zeroed before yolo_scores"
            kv[j, : idx.size] = make_keys(score, idx)[::-1]  # any order: the sort must fix it
            cv[j, idx] = best
            nv[j] = idx.size

    def _sort_chunks(self, grid, keys, count, a) -> None:
        kv, nv = _view(keys, np.uint64, (grid[1], a)), _view(count, np.int32, (grid[1],))
        for j in range(grid[1]):
            n = min(int(nv[j]), a)
            assert grid[0] * CHUNK >= n, "double: sort_chunks grid does not cover the candidates"
            for start in range(0, n, CHUNK):
                kv[j, start : min(n, start + CHUNK)].sort()

    def _merge_chunks(self, grid, keys, sorted_, count, a, topk) -> None:
        kv, sv = _view(keys, np.uint64, (grid[1], a)), _view(sorted_, np.uint64, (grid[1], a))
        nv = _view(count, np.int32, (grid[1],))
        for j in range(grid[1]):
            n = min(int(nv[j]), a)
            if n > CHUNK:
                merged = np.sort(kv[j, :n])[:topk]
                sv[j, : merged.size] = merged

    def _greedy_nms(
        self,
        grid,
        src,
        half,
        layout,
        c,
        a,
        keys,
        sorted_,
        count,
        cls,
        anchors,
        topk,
        max_det,
        thr_f,
        thr,
        out_counts,
        out_rows,
    ) -> None:
        b = grid[0]
        x = self._src(src, half, (b, c, a))
        kv, sv = _view(keys, np.uint64, (b, a)), _view(sorted_, np.uint64, (b, a))
        cv, nv = _view(cls, np.int32, (b, a)), _view(count, np.int32, (b,))
        rows, counts = _view(out_rows, np.float32, (b, max(max_det, 0), 6)), _view(out_counts, np.int32, (b,))
        name = {0: "dfl144", 1: "raw84"}[layout]
        points = strides = None
        if name == "dfl144":
            table = _view(anchors, np.float32, (3, a))
            points, strides = np.stack([table[0], table[1]], axis=1), table[2]
        for j in range(b):
            total = min(int(nv[j]), a)
            n = min(total, topk)
            ranked = (kv if total <= CHUNK else sv)[j, :n].copy()
            assert np.all(ranked[1:] > ranked[:-1]), "double: greedy_nms given an unsorted candidate list"
            sel, scores = split_keys(ranked)
            classes = cv[j, sel].astype(np.int64)
            boxes = boxes_reference(x[j], name, sel, points, strides)
            keep = greedy_reference(boxes, classes, thr, max(max_det, 0))
            rows[j, : keep.size, :4] = boxes[keep]
            rows[j, : keep.size, 4] = scores[keep]
            rows[j, : keep.size, 5] = classes[keep]
            counts[j] = keep.size

    def _e2e_select(self, grid, src, half, k, conf, max_det, out_counts, out_rows) -> None:
        b = grid[0]
        x = self._src(src, half, (b, k, 6))
        rows, counts = _view(out_rows, np.float32, (b, max(max_det, 0), 6)), _view(out_counts, np.int32, (b,))
        for j in range(b):
            kept = x[j][x[j, :, 4] >= np.float32(conf)][: max(max_det, 0)]
            rows[j, : len(kept)] = kept
            counts[j] = len(kept)
