"""Pre-processing on the GPU: two small CUDA kernels (one launch per batch each) compiled at run time with NVRTC.

``--preprocess`` modes (the CPU workers still decode the JPEGs):

- ``cpu``           letterbox + float CHW /255 on the CPU workers (the reference path).
- ``gpu-normalize`` the CPU workers letterbox in uint8 (BGR); the GPU turns the canvas into
                    RGB float32 CHW /255. The same numbers as ``cpu``, bit for bit (float32
                    division by 255, correctly rounded on both sides), with a quarter of the
                    upload and no float work on the CPU.
- ``gpu-letterbox`` the decoded BGR images go up as they are, with a table of their sizes
                    and places, in one copy per batch; one launch per batch resizes, pads with
                    114 and normalises. The resize is OpenCV's ``INTER_LINEAR`` for 8-bit images
                    in the same integer arithmetic (below), so the input equals ``cpu``'s byte for
                    byte.

``letterbox_reference`` is the kernel's arithmetic in NumPy: tests check it against the CPU
letterbox (OpenCV) byte for byte on any machine, and the kernel against both where there is a GPU.

OpenCV's ``INTER_LINEAR`` on uint8, as reproduced here: for each destination index ``d`` of an axis,
``f = (d + 0.5) * scale - 0.5`` in float64 (``scale = 1 / (n_dst / n_src)``, no fused multiply-add), rounded
to float32; the source index is ``floor(f)`` and the weights ``round((1 - frac) * 2048)`` and
``round(frac * 2048)`` (float32, ties to even). Columns past an edge take the edge pixel with weights
(2048, 0); rows past an edge are clamped but keep their computed weights. The horizontal pass keeps exact
integer sums ``h = w0 * p0 + w1 * p1``; the vertical pass gives
``(((v0 * (h0 >> 4)) >> 16) + ((v1 * (h1 >> 4)) >> 16) + 2) >> 2`` (OpenCV's scalar and SIMD code agree
on this). An exact 2x downscale, which OpenCV hands to its area resize, gives the same numbers. Then /255 as a
float32 division.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.data.images import PAD_VALUE, LetterboxMeta
from common.eval.options import PREPROCESS_MODES
from common.eval.protocols import U8Batch
from common.gpu.cuda_mem import handle_int, held_calls
from common.gpu.held_driver import DriverError

__all__ = [
    "COEF_BITS",
    "COEF_SCALE",
    "KERNEL_NAMES",
    "KERNEL_SOURCE",
    "LETTERBOX_BLOCK",
    "LETTERBOX_PARAMS",
    "MODES",
    "PARAM_WORDS",
    "GpuPreprocessor",
    "KernelModule",
    "U8Batch",
    "U8Stager",
    "check_float_input",
    "compile_kernels",
    "letterbox_reference",
    "normalize_reference",
    "resize_reference",
]

MODES = PREPROCESS_MODES
COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
COEF_SCALE = 1 << COEF_BITS

KERNEL_NAMES = ("bgr_canvas_to_rgb_chw", "letterbox_batch_bgr_to_rgb_chw")  # what GpuPreprocessor loads
# The batch letterbox kernel's per-image record: int64 words, in this order. ``offset``: the image's byte
# offset from the kernel's ``base`` (negative or beyond the staging buffer for an image decoded elsewhere in
# device memory, --decode gpu); ``row_bytes``: its row pitch, 0 for packed rows (src_w * 3).
LETTERBOX_PARAMS: tuple[str, ...] = ("offset", "src_w", "src_h", "new_w", "new_h", "pad_left", "pad_top", "row_bytes")
PARAM_WORDS = len(LETTERBOX_PARAMS)
LETTERBOX_BLOCK = (32, 8)  # the batch letterbox kernel's block: output pixels (x, y)
PACKED_LAUNCHES = 512  # kernel launches whose packed parameters KernelModule keeps (distinct argument tuples)

_KERNEL_TEMPLATE = r"""
extern "C" __global__ void bgr_canvas_to_rgb_chw(const unsigned char* __restrict__ src,
                                                 float* __restrict__ dst, int hw)
{
    // src: [B, S, S, 3] uint8 BGR; dst: [B, 3, S, S] float32 RGB / 255; blockIdx.y = image
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= hw) return;
    const unsigned char* p = src + (size_t)blockIdx.y * hw * 3 + (size_t)i * 3;
    float* q = dst + (size_t)blockIdx.y * hw * 3 + i;
    q[0] = __fdiv_rn((float)p[2], 255.0f);
    q[hw] = __fdiv_rn((float)p[1], 255.0f);
    q[2 * hw] = __fdiv_rn((float)p[0], 255.0f);
}

struct Tap { int i0, i1, w0, w1; };  // two source indices and their 11-bit weights

__device__ __forceinline__ Tap source_tap(int d, int n_dst, int n_src, bool column)
{
    // OpenCV INTER_LINEAR on 8-bit images: f = (d + 0.5) * scale - 0.5 in double, unfused, then float;
    // index floor(f), weights round((1 - frac) * 2048), round(frac * 2048). Columns past an edge take the
    // edge pixel with weights (2048, 0); rows past an edge are clamped and keep their weights.
    double scale = __ddiv_rn(1.0, __ddiv_rn((double)n_dst, (double)n_src));
    float f = __double2float_rn(__dadd_rn(__dmul_rn((double)d + 0.5, scale), -0.5));
    int s = (int)floorf(f);
    float frac = __fsub_rn(f, (float)s);
    if (column && s < 0) { s = 0; frac = 0.0f; }
    if (column && s >= n_src - 1) { s = n_src - 1; frac = 0.0f; }
    Tap t;
    t.i0 = min(max(s, 0), n_src - 1);
    t.i1 = min(max(s + 1, 0), n_src - 1);
    t.w0 = __float2int_rn(__fmul_rn(__fsub_rn(1.0f, frac), COEF_SCALE.0f));
    t.w1 = __float2int_rn(__fmul_rn(frac, COEF_SCALE.0f));
    return t;
}

__device__ __forceinline__ int resize_value(Tap cx, Tap ry, const unsigned char* r0, const unsigned char* r1, int c)
{
    // exact horizontal sums, then OpenCV's vertical rounding (its scalar and SIMD paths agree): <= 255
    int h0 = cx.w0 * r0[cx.i0 * 3 + c] + cx.w1 * r0[cx.i1 * 3 + c];
    int h1 = cx.w0 * r1[cx.i0 * 3 + c] + cx.w1 * r1[cx.i1 * 3 + c];
    return (((ry.w0 * (h0 >> 4)) >> 16) + ((ry.w1 * (h1 >> 4)) >> 16) + 2) >> 2;
}

extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
letterbox_batch_bgr_to_rgb_chw(const unsigned char* __restrict__ base, const long long* __restrict__ params,
                               float* __restrict__ dst, int size)
{
    // blockIdx.z = image j; params[j * PARAM_WORDS ...] = its record (see LETTERBOX_PARAMS);
    // image j: [sh, sw, 3] uint8 BGR at base + offset, rows pitch bytes apart;
    // dst: [B, 3, size, size] float32 RGB / 255. A block is BLOCK_X x BLOCK_Y output pixels: its column and
    // row taps are computed once, into shared memory.
    __shared__ Tap cols[BLOCK_X];
    __shared__ Tap rows[BLOCK_Y];
    const long long* p = params + (size_t)blockIdx.z * PARAM_WORDS;
    int sw = (int)p[1], sh = (int)p[2], nw = (int)p[3], nh = (int)p[4], left = (int)p[5], top = (int)p[6];
    int x = blockIdx.x * BLOCK_X + threadIdx.x;
    int y = blockIdx.y * BLOCK_Y + threadIdx.y;
    int dx = x - left, dy = y - top;
    if (threadIdx.y == 0 && dx >= 0 && dx < nw) cols[threadIdx.x] = source_tap(dx, nw, sw, true);
    int ty = blockIdx.y * BLOCK_Y + threadIdx.x - top;  // the row a thread of the last line computes
    if (threadIdx.y == BLOCK_Y - 1 && threadIdx.x < BLOCK_Y && ty >= 0 && ty < nh)
        rows[threadIdx.x] = source_tap(ty, nh, sh, false);
    __syncthreads();
    if (x >= size || y >= size) return;
    int hw = size * size, o = y * size + x;
    float* out = dst + (size_t)blockIdx.z * 3 * hw;
    if (dx < 0 || dy < 0 || dx >= nw || dy >= nh) {
        float pad = __fdiv_rn((float)PAD_VALUE, 255.0f);
        out[o] = pad; out[hw + o] = pad; out[2 * hw + o] = pad;
        return;
    }
    size_t pitch = p[7] > 0 ? (size_t)p[7] : (size_t)sw * 3;
    const unsigned char* src = base + p[0];
    Tap cx = cols[threadIdx.x], ry = rows[threadIdx.y];
    const unsigned char* r0 = src + (size_t)ry.i0 * pitch;
    const unsigned char* r1 = src + (size_t)ry.i1 * pitch;
    for (int c = 0; c < 3; ++c)
        out[(2 - c) * hw + o] = __fdiv_rn((float)resize_value(cx, ry, r0, r1, c), 255.0f);
}
"""


def _kernel_source() -> str:
    """The kernels with this module's constants written in."""
    source = _KERNEL_TEMPLATE
    bx, by = LETTERBOX_BLOCK
    for name, value in (
        ("PAD_VALUE", PAD_VALUE),
        ("PARAM_WORDS", PARAM_WORDS),
        ("COEF_SCALE", COEF_SCALE),
        ("BLOCK_X", bx),
        ("BLOCK_Y", by),
    ):
        source = source.replace(name, str(value))
    return source


KERNEL_SOURCE = _kernel_source()


def check_float_input(mode: str, name: str, dtype: np.dtype) -> None:
    """The kernels write float32: UserError for a model/engine input of another type."""
    if np.dtype(dtype) != np.float32:
        raise UserError(f"--preprocess {mode} needs a float32 input; {name} is {np.dtype(dtype)}: use --preprocess cpu")


@dataclass
class U8Filled:
    """A ``U8Batch`` in a stager's pinned memory: ``copy(stream)`` enqueues its H2D copy, then
    ``launch(dst, stream)`` the kernel writing the float input at ``dst`` (same stream, in that order)."""

    copy: Callable[[Any], None]
    launch: Callable[[int, Any], None]


class U8Stager:
    """Puts a ``U8Batch`` into a backend's float input buffer: uint8 images -> pinned staging ->
    device staging (one copy) -> kernel(s) writing ``dst``, all on the caller's stream.

    ``mem`` is a ``common.gpu.cuda_mem.MemoryLayer`` and ``prep`` has the launch methods of
    ``GpuPreprocessor`` (tests hand in host fakes of both). One stager per stream: its staging
    buffers are reused by the next batch once the caller has synchronised the stream.

    ``fill(batch)`` is the host half (the images and the params table into pinned memory: no GPU work,
    so a lane can do it before its turn on the GPU); the ``U8Filled`` it returns enqueues the copy
    (``copy(stream)``) and the kernel (``launch(dst, stream)``). ``stage`` does all three.
    """

    def __init__(self, mem: Any, prep: Any, mode: str) -> None:
        self.mem, self.prep, self.mode = mem, prep, mode  # mode: the --preprocess mode it was set up for
        self._pinned: Any = None
        self._device: Any = None
        self.decoder: Any = None  # common.throughput.gpu_decode.ImageDecoder for --decode gpu (enable_device_decode)
        self._decoded: list[Any] = []  # the last batch's decoded images, alive until its kernel has run

    def _capacity(self, nbytes: int) -> None:
        if self._pinned is not None and self._pinned.nbytes >= nbytes:
            return
        self.close()
        size = max(8 << 20, int(nbytes * 1.25))
        self._pinned, self._device = self.mem.pinned_buffer(size), self.mem.device_buffer(size)

    def stage(self, batch: U8Batch, dst: int, stream: Any) -> None:
        filled = self.fill(batch, stream)
        filled.copy(stream)
        filled.launch(dst, stream)

    def fill(self, batch: U8Batch, stream: Any = None) -> U8Filled:
        """The host half: ``batch`` into pinned memory; the result enqueues the copy and the kernel.
        An encoded batch (``decode`` gpu) is decoded here, on ``stream`` (the lane's), before the copy."""
        if batch.mode != self.mode:
            raise UserError(f"backend set up for --preprocess {self.mode}, given a {batch.mode} batch")
        if batch.mode == "gpu-normalize":
            return self._fill_canvases(batch)
        if batch.mode == "gpu-letterbox":
            return self._fill_encoded(batch, stream) if batch.decode == "gpu" else self._fill_images(batch)
        raise ValueError(f"unknown device pre-processing mode {batch.mode!r}")

    def _filled(self, nbytes: int, kernel: Callable[[int, int, Any], None]) -> U8Filled:
        src, dev = self._pinned.ptr, self._device.ptr
        return U8Filled(
            lambda stream: self.mem.copy_htod_async(dev, src, nbytes, stream),
            lambda dst, stream: kernel(dev, dst, stream),
        )

    def _fill_canvases(self, batch: U8Batch) -> U8Filled:
        """gpu-normalize: [B,S,S,3] canvases -> one copy -> one launch."""
        size, n = batch.size, len(batch)
        nbytes = n * size * size * 3
        self._capacity(nbytes)
        staged = self._pinned.view(np.uint8, (n, size, size, 3))
        for j, img in enumerate(batch.images):
            staged[j] = img
        return self._filled(nbytes, lambda dev, dst, stream: self.prep.normalize(dev, dst, n, size, stream.handle))

    def _fill_images(self, batch: U8Batch) -> U8Filled:
        """gpu-letterbox: the params table (``LETTERBOX_PARAMS`` per image, at offset 0) and the
        images after it (byte offsets from the buffer's start) -> one copy -> one launch."""
        n = len(batch)
        if n == 0:
            return U8Filled(lambda stream: None, lambda dst, stream: None)
        head = n * PARAM_WORDS * 8
        offsets = np.cumsum([head] + [int(img.nbytes) for img in batch.images])
        self._capacity(int(offsets[-1]))
        flat = self._pinned.view(np.uint8, (int(offsets[-1]),))
        params = self._pinned.view(np.int64, (n, PARAM_WORDS))
        for j, (img, meta) in enumerate(zip(batch.images, batch.metas, strict=True)):
            lo, hi = int(offsets[j]), int(offsets[j + 1])
            flat[lo:hi] = np.ascontiguousarray(img).reshape(-1)
            h, w = img.shape[:2]
            params[j] = (lo, w, h, meta.new_w, meta.new_h, meta.pad_left, meta.pad_top, 0)
        return self._letterbox_filled(int(offsets[-1]), n, batch.size)

    def _letterbox_filled(self, nbytes: int, n: int, size: int) -> U8Filled:
        """The copy of the staging's first ``nbytes`` (params table at offset 0) and one batched letterbox
        launch over its ``n`` records."""

        def kernel(dev: int, dst: int, stream: Any) -> None:
            self.prep.letterbox_batch(dev, dev, dst, n, size, stream.handle)

        return self._filled(nbytes, kernel)

    def _fill_encoded(self, batch: U8Batch, stream: Any) -> U8Filled:
        """gpu-letterbox with --decode gpu: the lane's decoder decodes the batch on ``stream``; the params
        table points the kernel at each decoded image where it lies (offset from the staging base, row
        pitch), so only the table goes up: one copy, one launch, no pixel copied."""
        if self.decoder is None:
            raise UserError("backend not set up for --decode gpu (enable_device_decode)")
        if stream is None:
            raise ValueError("an encoded batch is decoded on the lane's stream: pass it to fill")
        n = len(batch)
        self._decoded = []  # the previous batch on this lane is done (its lane synchronised)
        if n == 0:
            return U8Filled(lambda stream: None, lambda dst, stream: None)
        nbytes = n * PARAM_WORDS * 8
        self._capacity(nbytes)  # (growing closes the buffers: before the decoded images are kept)
        decoded = self.decoder.decode(batch.images, stream.handle)
        self._decoded = decoded
        base = int(self._device.ptr)
        params = self._pinned.view(np.int64, (n, PARAM_WORDS))
        for j, (img, meta) in enumerate(zip(decoded, batch.metas, strict=True)):
            if (img.width, img.height) != (meta.orig_w, meta.orig_h):
                raise ValueError(f"decoded {img.width}x{img.height}, letterbox set for {meta.orig_w}x{meta.orig_h}")
            params[j] = (
                img.ptr - base,
                img.width,
                img.height,
                meta.new_w,
                meta.new_h,
                meta.pad_left,
                meta.pad_top,
                img.row_bytes,
            )
        return self._letterbox_filled(nbytes, n, batch.size)

    def close(self) -> None:
        self._decoded = []
        for buf in (self._pinned, self._device):
            if buf is not None:
                buf.free()
        self._pinned = self._device = None


# ----------------------------------------------------------------------------- NumPy reference


def _taps(n_dst: int, n_src: int, *, columns: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's two taps per destination index of one axis: source indices ``i0``, ``i1`` and 11-bit weights
    ``w0``, ``w1`` (int32). ``columns``: past an edge, the edge pixel with weights (2048, 0); rows past an
    edge are clamped but keep their computed weights (the vertical rounding shows the difference)."""
    scale = 1.0 / (n_dst / n_src)
    f = ((np.arange(n_dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f)
    frac = (f - s).astype(np.float32)
    s = s.astype(np.int64)
    if columns:
        edge = (s < 0) | (s >= n_src - 1)
        frac[edge] = 0.0
        s = np.clip(s, 0, n_src - 1)
    w0 = np.rint((np.float32(1.0) - frac) * np.float32(COEF_SCALE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(COEF_SCALE)).astype(np.int32)
    return np.clip(s, 0, n_src - 1), np.clip(s + 1, 0, n_src - 1), w0, w1


def resize_reference(img: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """``cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)`` for uint8 [H, W, C] images, in the
    kernel's integer arithmetic (see the module docstring): uint8 [new_h, new_w, C]."""
    sh, sw = img.shape[:2]
    x0, x1, a0, a1 = _taps(new_w, sw, columns=True)
    y0, y1, b0, b1 = _taps(new_h, sh, columns=False)

    def horizontal(rows: np.ndarray) -> np.ndarray:  # exact integer sums, [new_h, new_w, C] int32
        picked = img[rows]
        return a0[:, None] * picked[:, x0].astype(np.int32) + a1[:, None] * picked[:, x1].astype(np.int32)

    top, bottom = horizontal(y0), horizontal(y1)
    v = ((b0[:, None, None] * (top >> 4)) >> 16) + ((b1[:, None, None] * (bottom >> 4)) >> 16)
    return ((v + 2) >> 2).astype(np.uint8)


def letterbox_reference(img_bgr: np.ndarray, meta: LetterboxMeta, size: int) -> np.ndarray:
    """What ``letterbox_batch_bgr_to_rgb_chw`` computes for one image, in NumPy: RGB float32 [3, size, size].
    The kernel resizes even where the size is unchanged (an exact copy then), so this does too."""
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    top, left = meta.pad_top, meta.pad_left
    canvas[top : top + meta.new_h, left : left + meta.new_w] = resize_reference(img_bgr, meta.new_w, meta.new_h)
    return normalize_reference(canvas)


def normalize_reference(canvas_bgr: np.ndarray) -> np.ndarray:
    """What ``bgr_canvas_to_rgb_chw`` computes for one canvas, in NumPy."""
    return np.divide(canvas_bgr[:, :, ::-1].transpose(2, 0, 1), np.float32(255.0), dtype=np.float32)


# ----------------------------------------------------------------------------- NVRTC + launch


PREP_WHAT, PREP_HINT = "GPU pre-processing", "use --preprocess cpu"


def _check(call: str, result: Any, what: str = PREP_WHAT, hint: str = PREP_HINT) -> Any:
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise UserError(f"{what}: {call} failed ({err}); {hint}")
    rest = result[1:] if isinstance(result, tuple) else ()
    return rest[0] if len(rest) == 1 else (rest or None)


def compile_kernels(
    arch: str,
    source: str = KERNEL_SOURCE,
    *,
    options: tuple[str, ...] = (),
    what: str = PREP_WHAT,
    hint: str = PREP_HINT,
) -> bytes:
    """NVRTC: ``source`` (default: the letterbox kernels) as a CUBIN for ``arch`` (e.g. ``sm_90``,
    ``sm_120``); UserError if it can't. ``what``/``hint`` name the feature and its CPU fallback."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise UserError(f"{what} needs cuda-python (cuda.bindings.nvrtc); {hint}") from exc
    try:
        prog = _check(
            "nvrtcCreateProgram", nvrtc.nvrtcCreateProgram(source.encode(), b"kernels.cu", 0, [], []), what, hint
        )
    except (RuntimeError, OSError) as exc:  # libnvrtc missing
        raise UserError(
            f"{what}: NVRTC is not usable ({exc}); install the CUDA NVRTC library "
            f"(pip: nvidia-cuda-nvrtc; conda: cuda-nvrtc) or {hint}"
        ) from exc
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", *(o.encode() for o in options)]
        res = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(res[0]) != 0:
            size = _check("nvrtcGetProgramLogSize", nvrtc.nvrtcGetProgramLogSize(prog), what, hint)
            log = b" " * int(size)
            nvrtc.nvrtcGetProgramLog(prog, log)
            first = log.decode(errors="replace").strip().splitlines()[:1]
            raise UserError(
                f"{what}: NVRTC cannot build for {arch} ({res[0]}: {' '.join(first)}); "
                f"a newer CUDA NVRTC is needed for this GPU, or {hint}"
            )
        size = _check("nvrtcGetCUBINSize", nvrtc.nvrtcGetCUBINSize(prog), what, hint)
        cubin = b" " * int(size)
        _check("nvrtcGetCUBIN", nvrtc.nvrtcGetCUBIN(prog, cubin), what, hint)
        return cubin
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


class KernelModule:
    """NVRTC-compiled kernels loaded on one device; ``launch`` puts one on the caller's stream
    (from any thread: each launching thread gets the device's primary context made current)."""

    def __init__(
        self,
        source: str,
        names: tuple[str, ...],
        device: int = 0,
        *,
        options: tuple[str, ...] = (),
        what: str = PREP_WHAT,
        hint: str = PREP_HINT,
    ) -> None:
        from cuda.bindings import driver, runtime

        self._driver, self._what, self._hint = driver, what, hint
        _check("cudaSetDevice", runtime.cudaSetDevice(device), what, hint)
        _check("cudaFree", runtime.cudaFree(0), what, hint)  # make the primary context current here
        props = _check("cudaGetDeviceProperties", runtime.cudaGetDeviceProperties(device), what, hint)
        self.arch = f"sm_{props.major}{props.minor}"
        self._ctx = _check("cuCtxGetCurrent", driver.cuCtxGetCurrent(), what, hint)
        cubin = compile_kernels(self.arch, source, options=options, what=what, hint=hint)
        self._module = _check("cuModuleLoadData", driver.cuModuleLoadData(cubin), what, hint)
        self.functions = {
            n: _check("cuModuleGetFunction", driver.cuModuleGetFunction(self._module, n.encode()), what, hint)
            for n in names
        }
        self._local = threading.local()
        self._packed: dict[tuple[Any, Any], tuple[Any, Any, int]] = {}
        # launches keep the GIL where libcuda allows (common.gpu.cuda_mem.held_calls), each function by its handle
        self._held = held_calls(device)[0]
        self.held_failed: str | None = None  # why a held launch failed (cuda-python's launches since)
        self._handles = {n: handle_int(f) for n, f in self.functions.items()}

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
        g, b = (*grid, 1, 1)[:3], (*block, 1, 1)[:3]
        params = self._params(args, types)
        held = self._held
        if held is not None:  # (it makes the context current on each launching thread itself)
            try:
                held.launch(self._handles[name], g, b, shared_bytes, stream, params[2])  # type: ignore[arg-type]
                return
            except DriverError as exc:  # this launch again through cuda-python, and every later one
                self._held, self.held_failed = None, str(exc)
        d = self._driver
        if not getattr(self._local, "ready", False):  # each launching thread needs the context current
            _check("cuCtxSetCurrent", d.cuCtxSetCurrent(self._ctx), self._what, self._hint)
            self._local.ready = True
        _check(
            "cuLaunchKernel",
            d.cuLaunchKernel(self.functions[name], *g, *b, shared_bytes, d.CUstream(stream), params[2], 0),
            self._what,
            self._hint,
        )

    def _params(self, args: tuple[Any, ...], types: tuple[Any, ...]) -> tuple[Any, Any, int]:
        """``args`` packed as a kernelParams array: (the ctypes values, the pointer array, its address).
        Cached: a lane launches the same arguments batch after batch, and cuda-python's own packing of
        ``(args, types)`` costs more host time (under the GIL) than the launch. The caller holds the
        tuple until the launch returns (the driver copies the parameters at launch)."""
        key = (args, types)
        hit = self._packed.get(key)
        if hit is None:
            values = [t(a) for a, t in zip(args, types, strict=True)]
            ptrs = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(v) for v in values])
            hit = (values, ptrs, ctypes.addressof(ptrs))
            if len(self._packed) >= PACKED_LAUNCHES:
                self._packed.clear()
            self._packed[key] = hit
        return hit

    def close(self) -> None:
        if self._module is not None:
            self._driver.cuModuleUnload(self._module)
            self._module = None


class GpuPreprocessor:
    """The compiled kernels on one device; launches go on the caller's stream."""

    def __init__(self, device: int = 0) -> None:
        self._kernels = KernelModule(KERNEL_SOURCE, KERNEL_NAMES, device)
        self.arch = self._kernels.arch

    def normalize(self, src: int, dst: int, batch: int, size: int, stream: int) -> None:
        """[B,S,S,3] uint8 BGR at ``src`` -> [B,3,S,S] float32 RGB/255 at ``dst`` (device pointers)."""
        hw = size * size
        c = ctypes
        self._kernels.launch(
            "bgr_canvas_to_rgb_chw",
            ((hw + 255) // 256, batch),
            (256, 1),
            (src, dst, hw),
            (c.c_void_p, c.c_void_p, c.c_int),
            stream,
        )

    def letterbox_batch(self, base: int, params: int, dst: int, batch: int, size: int, stream: int) -> None:
        """``batch`` uint8 BGR images of any size -> letterboxed [B,3,S,S] float32 RGB/255 at ``dst``, one
        launch. ``params`` (device) holds ``batch`` records of ``LETTERBOX_PARAMS`` (int64); a record's
        offset is its image's byte offset from ``base`` (device), its sizes say [src_h, src_w, 3]."""
        c = ctypes
        bx, by = LETTERBOX_BLOCK
        grid = ((size + bx - 1) // bx, (size + by - 1) // by, batch)
        self._kernels.launch(
            "letterbox_batch_bgr_to_rgb_chw",
            grid,
            LETTERBOX_BLOCK,
            (base, params, dst, size),
            (c.c_void_p, c.c_void_p, c.c_void_p, c.c_int),
            stream,
        )

    def close(self) -> None:
        self._kernels.close()
