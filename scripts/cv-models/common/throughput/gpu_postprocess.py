"""Post-processing on the GPU: YOLOv10 decode, conf threshold, pre-NMS top-k, class-aware greedy
NMS and max_det for a whole batch, on the caller's stream. Only the final rows come back.

Kernels (``postprocess_kernels.cu``, NVRTC, ``--fmad=false``), per batch:

1. ``yolo_scores``  per anchor: best class score (dfl144: the float32 sigmoid of the best logit,
   the class = the first one whose float32 sigmoid equals it; raw84: the scores as given, first
   argmax); ``score >= conf`` in float32
   keeps it, with the key ``(~ord(score)) << 32 | anchor`` (unique; ascending key = score
   descending, then anchor ascending: the stable sort of ``yolov10``).
2. ``sort_chunks`` / ``merge_chunks``  the kept keys, sorted in shared memory 4096 at a time; more
   than that per image are merged by rank (binary search). ``pre_nms_topk`` truncates.
3. ``greedy_nms``  one block per image, 256 candidates a step: decode their boxes (DFL softmax
   expectation + dist2bbox with the anchors, or cx/cy/w/h), drop those a kept box suppresses,
   an IoU bitmask inside the step, then one serial pass; it stops at ``max_det`` kept.
   IoU > iou suppresses, same class only. The decision is ``yolov10.iou_matrix``'s float64
   arithmetic: float32 decides when its IoU is more than 1e-5 from the threshold (its error is
   below 2e-6), float64 op for op otherwise.
4. ``e2e_select``  [B,K,6]: rows with score >= conf, in the model's order, the first max_det.

Then one copy of ``[B] counts + [B, max_det, 6]`` rows (x1, y1, x2, y2 in letterbox pixels,
score, class) to pinned memory. Inputs: float32 or float16 ``[B, C, A]`` / ``[B, K, 6]`` at a device
pointer (float16 is widened exactly: the reference is ``decode(out.astype(float32))``).

Equality with the NumPy path (``yolov10.decode``, the reference):

- raw84 and e2e use no transcendental function: the same detections, bit for bit.
- dfl144 needs ``exp`` (sigmoid, DFL softmax). Float32 ``exp`` differs by an ulp between CUDA's
  ``expf`` and NumPy's SIMD code, so both sides compute these steps in float64 and round once to
  float32 (``yolov10.sigmoid_f32``, ``yolov10.dfl_distances``: the 16 bins summed in order, then
  ``* stride``). Two faithful float64 ``exp`` may still differ in the last bit, which changes the
  float32 result only for a value within ~1e-16 of a float32 rounding boundary (about one in 10^8).
  Everything else is mirrored op for op: the first class holding the best score, ``score >=
  float32(conf)``, ``anchor -/+ dist``; ``--fmad=false`` keeps each op rounded on its own.
- Exact ties (equal float32 scores, e.g. saturated 1.0 from logits > 17.33) rank by anchor index on
  both sides: the same order.
- NMS decisions are float64's exactly (above), given the same boxes.

``postprocess_reference`` is the kernels' steps in NumPy (with NumPy's exp), bit-equal to
``yolov10.decode`` on the fixture outputs; the GPU is tested against both.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.eval.protocols import GpuDetections
from common.model.yolov10 import (
    DFL_BINS,
    LAYOUTS,
    Detections,
    PostprocessOptions,
    anchors_for,
    dfl_distances,
    iou_matrix,
    sigmoid_f32,
)

__all__ = [
    "CHUNK",
    "KERNEL_NAMES",
    "KERNEL_SOURCE",
    "NVRTC_OPTIONS",
    "GpuDetections",
    "GpuPostprocessor",
    "PostprocessPlan",
    "boxes_reference",
    "candidates_reference",
    "compile_postprocess_kernels",
    "greedy_reference",
    "make_keys",
    "plan_postprocess",
    "postprocess_kernels",
    "postprocess_reference",
    "split_keys",
    "suppress_matrix",
]

KERNEL_SOURCE = (Path(__file__).parent / "postprocess_kernels.cu").read_text()
KERNEL_NAMES = ("zero_ints", "yolo_scores", "sort_chunks", "merge_chunks", "greedy_nms", "e2e_select")
NVRTC_OPTIONS = ("--fmad=false",)  # each float op rounded on its own, as in NumPy
WHAT, HINT = "GPU post-processing", "use the CPU post-processing"
CHUNK = 4096  # = CHUNK in the .cu
NMS_THREADS = 1024
IOU_EPS = np.float32(1e-5)  # = IOU_EPS in the .cu
LAYOUT_CODE = {"dfl144": 0, "raw84": 1}


# ----------------------------------------------------------------------------- plan (no GPU needed)


@dataclass(frozen=True)
class PostprocessPlan:
    """What one batch shape needs; ``plan_postprocess`` checks it against the layout."""

    layout: str
    batch: int
    channels: int  # C of [B, C, A]; K of [B, K, 6]
    anchors: int  # A of [B, C, A]; 6 for e2e
    input_hw: tuple[int, int]
    opts: PostprocessOptions
    half: bool

    @property
    def max_det(self) -> int:
        return max(0, int(self.opts.max_det))

    @property
    def topk(self) -> int:
        return max(0, min(int(self.opts.pre_nms_topk), self.anchors))

    @property
    def chunks(self) -> int:
        return max(1, -(-self.anchors // CHUNK))

    def out_bytes(self, batch: int) -> int:
        """counts (padded to 16 bytes) + rows, for ``batch`` images."""
        return _count_bytes(self.batch) + batch * self.max_det * 6 * 4


def _count_bytes(batch: int) -> int:
    return -(-batch * 4 // 16) * 16


def plan_postprocess(
    layout: str,
    batch: int,
    dims: tuple[int, int],
    input_hw: tuple[int, int],
    opts: PostprocessOptions,
    dtype: Any = np.float32,
) -> PostprocessPlan:
    """Check an output's shape (``dims`` = the dimensions after the batch axis) for ``layout``."""
    if layout not in LAYOUTS:
        raise UserError(f"GPU post-processing: unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise UserError(f"GPU post-processing reads float32 or float16 outputs, not {dt}; {HINT}")
    c, a = (int(d) for d in dims)
    if batch < 1 or c < 1 or a < 1:
        raise UserError(f"GPU post-processing: empty output shape [{batch}, {c}, {a}]")
    if layout == "e2e" and a != 6:
        raise UserError(f"GPU post-processing: e2e needs an output [B,K,6], got [{batch}, {c}, {a}]")
    if layout == "dfl144":
        if c <= 4 * DFL_BINS:
            raise UserError(f"GPU post-processing: dfl144 needs [B,64+nc,A] with nc >= 1, got [{batch}, {c}, {a}]")
        anchors_for(int(input_hw[0]), int(input_hw[1]), a)  # UserError when A does not fit the input size
    if layout == "raw84" and c <= 4:
        raise UserError(f"GPU post-processing: raw84 needs [B,4+nc,A] with nc >= 1, got [{batch}, {c}, {a}]")
    if a >= 2**31 or batch * c * a >= 2**62:
        raise UserError(f"GPU post-processing: output [{batch}, {c}, {a}] is too large")
    return PostprocessPlan(
        layout, int(batch), c, a, (int(input_hw[0]), int(input_hw[1])), opts, dt == np.dtype(np.float16)
    )


# ----------------------------------------------------------------------------- NumPy emulation


def _ord(scores: np.ndarray) -> np.ndarray:
    s = np.where(scores == 0, np.float32(0), scores).astype(np.float32)  # -0 ranks as +0
    u = s.view(np.uint32)
    return np.where(u & np.uint32(0x80000000), ~u, u | np.uint32(0x80000000)).astype(np.uint32)


def _iou_f64(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """yolov10.iou_matrix's arithmetic for [M,4] x [N,4] float32 boxes (p the earlier)."""
    a, b = p.astype(np.float64), q.astype(np.float64)
    with np.errstate(all="ignore"):
        return iou_matrix(a, b)


def suppress_matrix(p: np.ndarray, q: np.ndarray, iou: float) -> np.ndarray:
    """The kernel's decision ``IoU(p_i, q_j) > iou`` (float32 with a margin, else float64), in NumPy."""
    f = np.float32
    p32, q32 = p.astype(f), q.astype(f)
    with np.errstate(all="ignore"):
        iw = np.fmax(np.fmin(p32[:, None, 2], q32[None, :, 2]) - np.fmax(p32[:, None, 0], q32[None, :, 0]), f(0))
        ih = np.fmax(np.fmin(p32[:, None, 3], q32[None, :, 3]) - np.fmax(p32[:, None, 1], q32[None, :, 1]), f(0))
        inter = iw * ih
        area_p = np.fmax(p32[:, 2] - p32[:, 0], f(0)) * np.fmax(p32[:, 3] - p32[:, 1], f(0))
        area_q = np.fmax(q32[:, 2] - q32[:, 0], f(0)) * np.fmax(q32[:, 3] - q32[:, 1], f(0))
        uni = (area_p[:, None] + area_q[None, :]) - inter
        finite = np.isfinite(p32.sum(axis=1))[:, None] & np.isfinite(q32.sum(axis=1))[None, :]
        fast = finite & (uni > f(1e-20)) & (uni < f(1e30))
        iou32 = inter / np.where(fast, uni, f(1))
        thr = f(iou)
        yes = fast & (iou32 > thr + IOU_EPS)
        no = fast & (iou32 < thr - IOU_EPS)
        out = yes.copy()
        undecided = ~(yes | no)
        if undecided.any():
            rows, cols = np.nonzero(undecided)
            out[rows, cols] = _iou_f64(p32, q32)[rows, cols] > iou
    return out


def greedy_reference(boxes: np.ndarray, classes: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """``greedy_nms``'s outcome: indices kept by class-aware greedy NMS over best-first candidates."""
    kept: list[int] = []
    alive = np.ones(boxes.shape[0], dtype=bool)
    for i in range(boxes.shape[0]):
        if len(kept) >= max_det:
            break
        if not alive[i]:
            continue
        kept.append(i)
        rest = np.arange(i + 1, boxes.shape[0])
        rest = rest[alive[rest] & (classes[rest] == classes[i])]
        if rest.size:
            alive[rest[suppress_matrix(boxes[i : i + 1], boxes[rest], iou)[0]]] = False
    return np.asarray(kept, dtype=np.int64)


def make_keys(scores: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Ranking keys ``(~ord(score)) << 32 | anchor`` (uint64): ascending = the ranked order."""
    return (~_ord(scores)).astype(np.uint64) << np.uint64(32) | anchors.astype(np.uint64)


def split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(anchor indices int64, float32 scores) of ranking keys."""
    o = ~(keys >> np.uint64(32)).astype(np.uint32)
    u = np.where(o & np.uint32(0x80000000), o & np.uint32(0x7FFFFFFF), ~o).astype(np.uint32)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64), u.view(np.float32)


def candidates_reference(
    x: np.ndarray, c0: int, sigmoid: bool, conf: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``yolo_scores`` for one image's float32 ``[C, A]``: anchors passing conf (ascending), their
    best score and best class (first argmax; an anchor with a NaN score never passes)."""
    f = np.float32
    with np.errstate(all="ignore"):
        scores = sigmoid_f32(x[c0:]) if sigmoid else x[c0:]
        best = scores.argmax(axis=0)
        best_score = scores[best, np.arange(x.shape[1])]
        passed = ~np.isnan(scores).any(axis=0) & (best_score >= f(conf))
    idx = np.flatnonzero(passed)
    return idx, best_score[idx], best[idx].astype(np.int64)


def boxes_reference(
    x: np.ndarray, layout: str, sel: np.ndarray, points: np.ndarray | None = None, strides: np.ndarray | None = None
) -> np.ndarray:
    """``greedy_nms``'s decode of the anchors ``sel`` of one image's float32 ``[C, A]``: xyxy float32."""
    f = np.float32
    with np.errstate(all="ignore"):
        if layout == "dfl144":
            assert points is not None and strides is not None
            dist = (dfl_distances(x[: 4 * DFL_BINS, sel]) * strides[sel]).astype(f)
            p = points[sel]
            boxes = np.stack([p[:, 0] - dist[0], p[:, 1] - dist[1], p[:, 0] + dist[2], p[:, 1] + dist[3]], axis=1)
        else:
            cx, cy, w, h = (x[i, sel] for i in range(4))
            boxes = np.stack([cx - w / f(2), cy - h / f(2), cx + w / f(2), cy + h / f(2)], axis=1)
    return boxes.astype(f).reshape(-1, 4)


def postprocess_reference(
    out: np.ndarray, layout: str, input_hw: tuple[int, int], opts: PostprocessOptions
) -> Detections:
    """The kernels' steps for one image's output (batch axis removed), in NumPy (NumPy's exp)."""
    f = np.float32
    max_det = max(0, int(opts.max_det))
    x = np.asarray(out).astype(f)
    if layout == "e2e":
        rows = x[x[:, 4] >= f(opts.conf)][:max_det]
        return Detections(rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5].astype(np.int64))
    dfl = layout == "dfl144"
    idx, score, best = candidates_reference(x, 4 * DFL_BINS if dfl else 4, dfl, float(opts.conf))
    keys = np.sort(make_keys(score, idx))[: max(0, min(int(opts.pre_nms_topk), x.shape[1]))]
    if keys.size == 0 or max_det == 0:
        return Detections.empty()
    sel, sc = split_keys(keys)
    classes = best[np.searchsorted(idx, sel)]
    points, strides = anchors_for(input_hw[0], input_hw[1], x.shape[1]) if dfl else (None, None)
    boxes = boxes_reference(x, layout, sel, points, strides)
    keep = greedy_reference(boxes, classes, float(opts.iou), max_det)
    return Detections(boxes[keep], sc[keep], classes[keep])


# ----------------------------------------------------------------------------- kernels


def compile_postprocess_kernels(arch: str) -> bytes:
    """NVRTC: the post-processing kernels as a CUBIN for ``arch``; UserError if it can't."""
    from common.throughput.gpu_preprocess import compile_kernels

    return compile_kernels(arch, KERNEL_SOURCE, options=NVRTC_OPTIONS, what=WHAT, hint=HINT)


_KERNELS: dict[int, Any] = {}
_KERNELS_LOCK = threading.Lock()


def postprocess_kernels(device: int = 0) -> Any:
    """The compiled kernels on ``device`` (``gpu_preprocess.KernelModule``), compiled once per process."""
    from common.throughput.gpu_preprocess import KernelModule

    with _KERNELS_LOCK:
        if device not in _KERNELS:
            _KERNELS[device] = KernelModule(
                KERNEL_SOURCE, KERNEL_NAMES, device, options=NVRTC_OPTIONS, what=WHAT, hint=HINT
            )
        return _KERNELS[device]


# ----------------------------------------------------------------------------- host side


class GpuPostprocessor:
    """Post-processing of one output tensor on the GPU, with grow-only buffers.

    ``prepare`` once per batch shape (cheap when nothing grows), then per batch ``launch`` (kernels
    + one D2H copy, all on the caller's stream) and, once that stream is synchronised, ``collect``;
    ``run`` does the three. One object per stream: its buffers are reused by the next ``launch``.
    ``mem`` is a ``common.gpu.cuda_mem.MemoryLayer``; ``kernels`` a shared ``postprocess_kernels()``.
    """

    def __init__(self, mem: Any = None, kernels: Any = None, device: int = 0) -> None:
        if mem is None:
            from common.gpu.cuda_mem import CudaMemory

            mem = CudaMemory(device)
        self.mem = mem
        self.kernels = kernels if kernels is not None else postprocess_kernels(device)
        self.plan: PostprocessPlan | None = None
        self._bufs: dict[str, Any] = {}
        self._anchors_for: tuple[tuple[int, int], int] | None = None
        self._anchors_dirty = False
        self._launched = 0

    def _grow(self, name: str, nbytes: int, pinned: bool = False) -> Any:
        buf = self._bufs.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self.mem.pinned_buffer(nbytes) if pinned else self.mem.device_buffer(max(nbytes, 16))
            self._bufs[name] = buf
        return buf

    def prepare(
        self,
        layout: str,
        batch: int,
        dims: tuple[int, int],
        input_hw: tuple[int, int],
        opts: PostprocessOptions,
        dtype: Any = np.float32,
    ) -> PostprocessPlan:
        """Size the buffers for outputs ``[batch, *dims]`` (grow-only). Call it while no launch of this
        object is in flight: a buffer that grows is freed and allocated again."""
        plan = plan_postprocess(layout, batch, dims, input_hw, opts, dtype)
        b, a = plan.batch, plan.anchors
        self._grow("out", plan.out_bytes(b))
        self._grow("host", plan.out_bytes(b), pinned=True)
        if layout != "e2e":
            self._grow("keys", b * a * 8)
            self._grow("cls", b * a * 4)
            self._grow("count", b * 4)
            if plan.chunks > 1:
                self._grow("sorted", b * a * 8)
            if layout == "dfl144" and self._anchors_for != (plan.input_hw, a):
                points, strides = anchors_for(plan.input_hw[0], plan.input_hw[1], a)
                table = np.concatenate([points[:, 0], points[:, 1], strides]).astype(np.float32)
                staged = self._grow("anchors_host", table.nbytes, pinned=True)
                staged.view(np.float32, table.shape)[...] = table
                self._grow("anchors", table.nbytes)
                self._anchors_for, self._anchors_dirty = (plan.input_hw, a), True
        self.plan = plan
        return plan

    def launch(self, src: int, stream: Any, batch: int | None = None) -> None:
        """Enqueue post-processing of ``batch`` (default: the prepared batch) outputs at device pointer
        ``src`` and the copy of the results to pinned memory, on ``stream`` (a ``StreamLike``)."""
        plan = self.plan
        if plan is None:
            raise RuntimeError("GpuPostprocessor.launch before prepare")
        b = plan.batch if batch is None else int(batch)
        if not 1 <= b <= plan.batch:
            raise ValueError(f"batch {b} outside 1..{plan.batch} (prepared)")
        c_ = ctypes
        vp, ci, cf = c_.c_void_p, c_.c_int, c_.c_float
        k, h = self.kernels, stream.handle
        out = self._bufs["out"].ptr
        counts, rows = out, out + _count_bytes(plan.batch)
        conf, half = float(np.float32(plan.opts.conf)), int(plan.half)
        if plan.layout == "e2e":
            k.launch(
                "e2e_select",
                (b,),
                (256,),
                (src, half, plan.channels, conf, plan.max_det, counts, rows),
                (vp, ci, ci, cf, ci, vp, vp),
                h,
            )
        else:
            if self._anchors_dirty:
                anchors = self._bufs["anchors"]
                nbytes = 3 * plan.anchors * 4
                self.mem.copy_htod_async(anchors.ptr, self._bufs["anchors_host"].ptr, nbytes, stream)
                self._anchors_dirty = False
            c, a = plan.channels, plan.anchors
            keys, cls, count = self._bufs["keys"].ptr, self._bufs["cls"].ptr, self._bufs["count"].ptr
            sorted_ = self._bufs["sorted"].ptr if plan.chunks > 1 else keys
            anchors = self._bufs["anchors"].ptr if plan.layout == "dfl144" else 0
            dfl = plan.layout == "dfl144"
            c0 = 4 * DFL_BINS if dfl else 4
            k.launch("zero_ints", (1,), (256,), (count, b), (vp, ci), h)
            k.launch(
                "yolo_scores",
                (-(-a // 256), b),
                (256,),
                (src, half, c, a, c0, int(dfl), conf, keys, cls, count),
                (vp, ci, ci, ci, ci, ci, cf, vp, vp, vp),
                h,
            )
            k.launch("sort_chunks", (plan.chunks, b), (1024,), (keys, count, a), (vp, vp, ci), h)
            if plan.chunks > 1:
                k.launch(
                    "merge_chunks",
                    (plan.chunks, b),
                    (256,),
                    (keys, sorted_, count, a, plan.topk),
                    (vp, vp, vp, ci, ci),
                    h,
                )
            iou = float(plan.opts.iou)
            args = (
                src,
                half,
                LAYOUT_CODE[plan.layout],
                c,
                a,
                keys,
                sorted_,
                count,
                cls,
                anchors,
                plan.topk,
                plan.max_det,
                float(np.float32(iou)),
                iou,
                counts,
                rows,
            )
            types = (vp, ci, ci, ci, ci, vp, vp, vp, vp, vp, ci, ci, cf, c_.c_double, vp, vp)
            k.launch("greedy_nms", (b,), (NMS_THREADS,), args, types, h)
        self.mem.copy_dtoh_async(self._bufs["host"].ptr, out, plan.out_bytes(b), stream)
        self._launched = b

    def collect(self) -> GpuDetections:
        """The last launch's results (call after its stream is synchronised); copies out of pinned memory."""
        plan, b = self.plan, self._launched
        if plan is None or b == 0:
            raise RuntimeError("GpuPostprocessor.collect before launch")
        host = self._bufs["host"]
        nc = _count_bytes(plan.batch) // 4
        flat = host.view(np.int32, (nc + b * plan.max_det * 6,))
        counts = flat[:b].copy()
        rows = flat[nc:].view(np.float32).reshape(b, plan.max_det, 6).copy()
        return GpuDetections(rows, counts)

    def run(self, src: int, stream: Any, batch: int | None = None) -> GpuDetections:
        self.launch(src, stream, batch)
        stream.synchronize()
        return self.collect()

    def close(self) -> None:
        for buf in self._bufs.values():
            buf.free()
        self._bufs.clear()
        self.plan, self._anchors_for = None, None
