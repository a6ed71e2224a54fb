"""GPU pre-processing: the kernel arithmetic (NumPy reference) against the CPU letterbox (OpenCV) byte for
byte on any machine; NVRTC builds for the GPUs we target where NVRTC is installed; the kernels against
OpenCV and the reference, bit for bit, and the IO-binding backend end to end where a GPU is."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import DEMO_MODEL, FIXTURES, MINI, cuda_device_count, fixture_path, nvrtc_or_skip

from common.core.errors import UserError
from common.data.images import letterbox_geometry, letterbox_hwc, load_image_bgr, to_chw_float
from common.eval.pipeline import EvalOptions, evaluate
from common.ort.session import OrtBackend
from common.throughput.gpu_preprocess import U8Batch, letterbox_reference, normalize_reference, resize_reference

# (h, w): tiny, 1-pixel wide and high, odd, exact 2x down (OpenCV's area path) and up, strips, large
ODD_SIZES = [(1, 1), (2, 3), (3, 700), (641, 639), (1280, 1280), (480, 640), (1000, 333), (320, 1280), (1280, 320)]
ODD_SIZES += [(1, 900), (900, 1), (5, 2000), (2000, 5), (37, 41), (160, 160), (213, 320), (1279, 1281), (2000, 3000)]
INPUT_SIZES = (640, 320, 417)  # the usual export sizes and an odd one


def mini_images() -> list[np.ndarray]:
    paths = sorted((MINI / "val2017").glob("*.jpg"))
    assert paths, "bundled mini set missing"
    return [load_image_bgr(p) for p in paths]


def fixture_images() -> list[np.ndarray]:
    """Every image of the shared valA split; [] where the shared fixtures are absent."""
    return [load_image_bgr(p) for p in sorted((FIXTURES / "synthcoco" / "valA").glob("*.jpg"))]


def random_images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ODD_SIZES]


def cpu_input(img_bgr: np.ndarray, size: int = 640) -> np.ndarray:
    """What the reference (cpu) path feeds the model: OpenCV's letterbox of the RGB image, /255."""
    canvas, _ = letterbox_hwc(img_bgr[:, :, ::-1], size)
    return to_chw_float(canvas)


def assert_reference_is_opencv(images: list[np.ndarray], size: int) -> None:
    for j, img in enumerate(images):
        meta = letterbox_geometry(img.shape[1], img.shape[0], size)
        got = letterbox_reference(img, meta, size)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, cpu_input(img, size), err_msg=f"image {j} {img.shape} at {size}")


def test_resize_reference_is_opencv_inter_linear_byte_for_byte() -> None:
    """Random pictures resized to random sizes (up, down, mixed, to and from 1 pixel, exact 2x and 3x, one
    side unchanged): ``resize_reference`` equals ``cv2.resize(INTER_LINEAR)``."""
    rng = np.random.default_rng(23)
    pairs = [((h, w), (max(1, h // 2), max(1, w // 2))) for h, w in ODD_SIZES[:12]]
    pairs += [((h, w), (2 * h, 2 * w)) for h, w in ODD_SIZES[:6]] + [((90, 60), (30, 20)), ((33, 50), (33, 70))]
    pairs += [(tuple(rng.integers(1, 300, 2)), tuple(rng.integers(1, 300, 2))) for _ in range(150)]
    for (sh, sw), (dh, dw) in pairs:
        img = rng.integers(0, 256, (int(sh), int(sw), 3), dtype=np.uint8)
        want = cv2.resize(img, (int(dw), int(dh)), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(resize_reference(img, int(dw), int(dh)), want, err_msg=f"{sh}x{sw} -> {dh}x{dw}")


@pytest.mark.parametrize("size", INPUT_SIZES)
def test_letterbox_reference_is_the_cpu_letterbox_byte_for_byte(size: int) -> None:
    """Every bundled image and the odd sizes, at each input size: pixels, pad and /255 all equal."""
    assert_reference_is_opencv(mini_images() + random_images(), size)


@pytest.mark.parametrize("size", INPUT_SIZES)
def test_letterbox_reference_is_the_cpu_letterbox_on_the_shared_fixtures(size: int) -> None:
    fixture_path("synthcoco", "valA")
    images = fixture_images()
    assert len(images) == 300
    assert_reference_is_opencv(images, size)


def test_normalisation_is_a_float32_division_as_on_the_cpu() -> None:
    """All 256 grey levels, unresized: the reference divides by 255 in float32, as ``to_chw_float`` does;
    multiplying by 1/255 would differ on some levels (so this test can tell them apart)."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    got = letterbox_reference(levels, letterbox_geometry(16, 16, 16), 16)
    np.testing.assert_array_equal(got, cpu_input(levels, 16))
    assert not np.array_equal(got, levels.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255))


def test_letterbox_reference_pads_with_114_and_keeps_unscaled_images_exact() -> None:
    img = np.random.default_rng(1).integers(0, 256, (320, 640, 3), dtype=np.uint8)  # no resize at 640
    meta = letterbox_geometry(640, 320, 640)
    got = letterbox_reference(img, meta, 640)
    np.testing.assert_array_equal(got, cpu_input(img))
    assert np.all(got[:, : meta.pad_top] == np.float32(114) / np.float32(255))


def test_normalize_reference_is_the_cpu_conversion_bit_for_bit() -> None:
    for img in mini_images()[:10] + random_images():
        canvas, _ = letterbox_hwc(img, 640)
        np.testing.assert_array_equal(normalize_reference(canvas), to_chw_float(canvas[:, :, ::-1]))


@pytest.mark.parametrize("arch", ["sm_90", "sm_120"])
def test_kernels_compile_for_hopper_and_blackwell(arch: str) -> None:
    nvrtc_or_skip()
    from common.throughput.gpu_preprocess import KERNEL_NAMES, compile_kernels

    cubin = compile_kernels(arch)
    assert cubin[:4] == b"\x7fELF" and len(cubin) > 1000
    for name in KERNEL_NAMES:  # what GpuPreprocessor loads is in the CUBIN (its symbol table)
        assert name.encode() + b"\0" in cubin


def test_unknown_arch_is_a_user_error() -> None:
    nvrtc_or_skip()
    from common.throughput.gpu_preprocess import compile_kernels

    with pytest.raises(UserError, match="sm_1"):
        compile_kernels("sm_1")


class HostDevicePrep:
    """A test double of a backend with device pre-processing: U8Batch is turned into the float
    input with the NumPy reference of the kernels, then run by a CPU ORT session."""

    def __init__(self, inner: OrtBackend) -> None:
        self.inner, self.name, self.mode = inner, "host-device-prep", "cpu"
        self.input, self.outputs = inner.input, inner.outputs

    def enable_device_preprocess(self, mode: str) -> None:
        self.mode = mode

    def infer(self, batch):
        if isinstance(batch, U8Batch):
            assert batch.mode == self.mode
            if batch.mode == "gpu-normalize":
                batch = np.stack([normalize_reference(c) for c in batch.images])
            else:
                pairs = zip(batch.images, batch.metas, strict=True)
                batch = np.stack([letterbox_reference(i, m, batch.size) for i, m in pairs])
        return self.inner.infer(batch)

    def metadata(self):
        return {}

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def mini12():
    from common.data.coco import open_dataset

    return open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 12)


def test_pipeline_gpu_normalize_plumbing_gives_identical_detections(mini12) -> None:
    mini_coco = mini12
    inner = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    ref = evaluate(inner, mini_coco, EvalOptions(progress=False, workers=2))
    got = evaluate(HostDevicePrep(inner), mini_coco, EvalOptions(progress=False, workers=2, preprocess="gpu-normalize"))
    assert got.timings["preprocess_mode"] == "gpu-normalize"
    assert got.detections == ref.detections and got.stats == ref.stats


def test_pipeline_gpu_letterbox_plumbing_gives_identical_detections(mini12) -> None:
    mini_coco = mini12
    inner = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    ref = evaluate(inner, mini_coco, EvalOptions(progress=False, workers=2))
    got = evaluate(HostDevicePrep(inner), mini_coco, EvalOptions(progress=False, workers=0, preprocess="gpu-letterbox"))
    assert got.timings["preprocess_mode"] == "gpu-letterbox"
    assert got.detections == ref.detections and got.stats == ref.stats


def test_stager_packs_images_and_grows_its_buffers() -> None:
    import trt_double as D

    from common.throughput.gpu_preprocess import U8Stager

    mem = D.FakeCudaMemory()
    prep = D.FakeGpuPreprocessor(mem)
    stager = U8Stager(mem, prep, "gpu-letterbox")
    stream = mem.stream()
    size = 64
    rng = np.random.default_rng(3)
    dst = mem.device_buffer(4 * 3 * size * size * 4)
    try:
        for shapes in ([(30, 50), (64, 64), (7, 90)], [(1700, 1700), (5, 5)]):  # the second outgrows 8 MiB
            imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
            metas = [letterbox_geometry(w, h, size) for h, w in shapes]
            stager.stage(U8Batch("gpu-letterbox", imgs, metas, size), dst.ptr, stream)
            got = dst.view(np.float32, (4, 3, size, size))
            for j, (img, meta) in enumerate(zip(imgs, metas, strict=True)):
                np.testing.assert_array_equal(got[j], letterbox_reference(img, meta, size))
        canvases = [letterbox_hwc(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8), size)[0] for _ in range(4)]
        with pytest.raises(UserError, match="set up for --preprocess gpu-letterbox"):
            stager.stage(U8Batch("gpu-normalize", canvases, [], size), dst.ptr, stream)
        stager.mode = "gpu-normalize"
        stager.stage(U8Batch("gpu-normalize", canvases, [], size), dst.ptr, stream)
        for j, canvas in enumerate(canvases):
            np.testing.assert_array_equal(dst.view(np.float32, (4, 3, size, size))[j], normalize_reference(canvas))
        assert prep.launches == 3  # one launch per batch, letterboxed or normalised
    finally:
        stager.close()
        dst.free()
    assert mem.live == 0  # every staging buffer freed


class CountingMemory:
    """FakeCudaMemory that counts host-to-device copies."""

    def __init__(self) -> None:
        import trt_double as D

        self.mem, self.htod = D.FakeCudaMemory(), 0

    def __getattr__(self, name: str):
        return getattr(self.mem, name)

    def copy_htod_async(self, dst: int, src: int, nbytes: int, stream) -> None:
        self.htod += 1
        self.mem.copy_htod_async(dst, src, nbytes, stream)


def test_letterbox_batch_is_one_copy_and_one_launch_and_exact_per_image() -> None:
    """Mixed sizes (portrait, landscape, tiny, odd, larger and smaller than the input) in one batch:
    the double reads the uploaded params table from its device memory, so a wrong offset, layout
    or a missing upload gives wrong pixels here."""
    import trt_double as D

    from common.throughput.gpu_preprocess import U8Stager

    counting = CountingMemory()
    mem = counting.mem
    prep = D.FakeGpuPreprocessor(mem)
    stager = U8Stager(counting, prep, "gpu-letterbox")
    stream = mem.stream()
    size = 96
    rng = np.random.default_rng(11)
    batches = [[(h, w) for h, w in ODD_SIZES if h * w < 500_000] + [(200, 31), (96, 96)], [(17, 5), (3, 2)]]
    dst = mem.device_buffer(len(batches[0]) * 3 * size * size * 4)
    try:
        for k, shapes in enumerate(batches, start=1):
            imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
            metas = [letterbox_geometry(w, h, size) for h, w in shapes]
            dst.view(np.float32, (dst.nbytes // 4,))[:] = np.nan  # nothing left over from the previous batch
            stager.stage(U8Batch("gpu-letterbox", imgs, metas, size), dst.ptr, stream)
            assert (prep.launches, counting.htod) == (k, k)  # one launch and one upload per batch
            got = dst.view(np.float32, (len(imgs), 3, size, size))
            for j, (img, meta) in enumerate(zip(imgs, metas, strict=True)):
                np.testing.assert_array_equal(got[j], letterbox_reference(img, meta, size), err_msg=f"image {j}")
    finally:
        stager.close()
        dst.free()
        stream.close()
    assert mem.live == 0


def test_gpu_mode_on_a_host_backend_is_a_user_error(mini_coco) -> None:
    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    with pytest.raises(UserError, match="--preprocess gpu-letterbox needs"):
        evaluate(backend, mini_coco, EvalOptions(progress=False, preprocess="gpu-letterbox"))


def letterbox_pitched(mem, prep, images: list[np.ndarray], size: int, pad: int = 13) -> np.ndarray:
    """One ``letterbox_batch`` launch over images lying as a decoder leaves them: rows ``pad`` bytes longer
    than the pixels (the padding filled with a value the kernel must not read), the params table after the
    images so that every offset from ``base`` (the table) is negative. Returns the [B, 3, size, size] input."""
    from common.throughput.gpu_preprocess import PARAM_WORDS

    pitches = [img.shape[1] * 3 + pad for img in images]
    starts = np.cumsum([0] + [img.shape[0] * q for img, q in zip(images, pitches, strict=True)])
    table_at, n = int(starts[-1] + 7) // 8 * 8, len(images)
    nbytes, out_bytes = table_at + n * PARAM_WORDS * 8, n * 3 * size * size * 4
    host, dev, dst, back = mem.pinned_buffer(nbytes), mem.device_buffer(nbytes), mem.device_buffer(out_bytes), None
    stream = mem.stream()
    try:
        flat = host.view(np.uint8, (nbytes,))
        flat[:table_at] = 0xEE
        table = np.ndarray((n, PARAM_WORDS), np.int64, flat, table_at)
        for j, (img, pitch) in enumerate(zip(images, pitches, strict=True)):
            h, w = img.shape[:2]
            rows = np.ndarray((h, w * 3), np.uint8, flat, int(starts[j]), (pitch, 1))
            rows[:] = img.reshape(h, w * 3)
            m = letterbox_geometry(w, h, size)
            table[j] = (int(starts[j]) - table_at, w, h, m.new_w, m.new_h, m.pad_left, m.pad_top, pitch)
        mem.copy_htod_async(dev.ptr, host.ptr, nbytes, stream)
        prep.letterbox_batch(dev.ptr + table_at, dev.ptr + table_at, dst.ptr, n, size, stream.handle)
        back = mem.pinned_buffer(out_bytes)
        mem.copy_dtoh_async(back.ptr, dst.ptr, out_bytes, stream)
        stream.synchronize()
        return back.view(np.float32, (n, 3, size, size)).copy()
    finally:
        for buf in (host, dev, dst, back):
            if buf is not None:
                buf.free()
        stream.close()


def test_pitched_images_behind_the_table_are_letterboxed_as_on_the_cpu() -> None:
    """The in-place path (--decode gpu) through the kernel's host double: pitched rows, negative offsets."""
    import trt_double as D

    mem = D.FakeCudaMemory()
    images = random_images()[:8] + mini_images()[:4]
    got = letterbox_pitched(mem, D.FakeGpuPreprocessor(mem), images, 96)
    for j, img in enumerate(images):
        np.testing.assert_array_equal(got[j], cpu_input(img, 96), err_msg=f"image {j} {img.shape}")
    assert mem.live == 0


# ----------------------------------------------------------------------------- on a GPU

gpu = pytest.mark.skipif(cuda_device_count() == 0, reason="needs an NVIDIA GPU (cuda-python)")


def _stage_on_gpu(mem, stager, stream, batch: U8Batch, dst, host_out) -> np.ndarray:
    stager.mode = batch.mode
    stager.stage(batch, dst.ptr, stream)
    nbytes = len(batch) * 3 * batch.size * batch.size * 4
    mem.copy_dtoh_async(host_out.ptr, dst.ptr, nbytes, stream)
    stream.synchronize()
    return host_out.view(np.float32, batch.shape).copy()


@pytest.fixture(scope="module")
def gpu_prep():
    """(CudaMemory, GpuPreprocessor, stream) on device 0."""
    from common.gpu.cuda_mem import CudaMemory
    from common.throughput.gpu_preprocess import GpuPreprocessor

    mem, prep = CudaMemory(0), GpuPreprocessor(0)
    stream = mem.stream()
    yield mem, prep, stream
    stream.close()
    prep.close()


@gpu
@pytest.mark.parametrize("size", INPUT_SIZES)
def test_letterbox_kernel_is_opencv_byte_for_byte_on_the_gpu(gpu_prep, size: int) -> None:
    """The batched kernel through U8Stager (mixed-size batches of up to 32, one launch each) on the odd
    sizes, every bundled image and every shared valA image (where present): equal to the CPU letterbox
    (OpenCV) and to the NumPy reference."""
    from common.throughput.gpu_preprocess import U8Stager

    mem, prep, stream = gpu_prep
    images, batch = random_images() + mini_images() + fixture_images(), 32
    stager = U8Stager(mem, prep, "gpu-letterbox")
    out_bytes = batch * 3 * size * size * 4
    dst, host_out = mem.device_buffer(out_bytes), mem.pinned_buffer(out_bytes)
    try:
        for k in range(0, len(images), batch):
            imgs = images[k : k + batch]
            metas = [letterbox_geometry(i.shape[1], i.shape[0], size) for i in imgs]
            got = _stage_on_gpu(mem, stager, stream, U8Batch("gpu-letterbox", imgs, metas, size), dst, host_out)
            for j, (img, meta) in enumerate(zip(imgs, metas, strict=True)):
                where = f"image {k + j} {img.shape} at {size}"
                np.testing.assert_array_equal(got[j], cpu_input(img, size), err_msg=where)
                np.testing.assert_array_equal(got[j], letterbox_reference(img, meta, size), err_msg=where)
    finally:
        stager.close()
        dst.free()
        host_out.free()


@gpu
def test_letterbox_kernel_reads_pitched_images_in_place_on_the_gpu(gpu_prep) -> None:
    mem, prep, _ = gpu_prep
    images = random_images() + mini_images()[:8]
    for size in INPUT_SIZES:
        got = letterbox_pitched(mem, prep, images, size)
        for j, img in enumerate(images):
            np.testing.assert_array_equal(got[j], cpu_input(img, size), err_msg=f"image {j} {img.shape} at {size}")


@gpu
def test_normalize_kernel_is_the_cpu_conversion_on_the_gpu(gpu_prep) -> None:
    from common.throughput.gpu_preprocess import U8Stager

    mem, prep, stream = gpu_prep
    size, images = 640, random_images()[:8] + mini_images()[:8]
    stager = U8Stager(mem, prep, "gpu-normalize")
    out_bytes = len(images) * 3 * size * size * 4
    dst, host_out = mem.device_buffer(out_bytes), mem.pinned_buffer(out_bytes)
    try:
        canvases = [letterbox_hwc(img, size)[0] for img in images]
        got = _stage_on_gpu(mem, stager, stream, U8Batch("gpu-normalize", canvases, [], size), dst, host_out)
        for j, img in enumerate(images):
            np.testing.assert_array_equal(got[j], cpu_input(img, size))
    finally:
        stager.close()
        dst.free()
        host_out.free()


@gpu
@pytest.mark.parametrize("mode", ["gpu-normalize", "gpu-letterbox"])
def test_io_binding_backend_with_gpu_preprocess(mini_coco, mode: str) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA EP here")
    from common.throughput.ort_lanes import OrtCudaBackend

    backend = OrtCudaBackend(str(DEMO_MODEL), lanes=2)
    try:
        backend.warmup(1, 2)  # every lane, resident runs
        assert len(backend.resident_run_ms(3, batch=1, warmup=1)) == 3
        ref = evaluate(backend, mini_coco, EvalOptions(progress=False, workers=2))
        got = evaluate(backend, mini_coco, EvalOptions(progress=False, workers=2, preprocess=mode))
        seq = evaluate(backend, mini_coco, EvalOptions(progress=False, workers=0, preprocess=mode))
    finally:
        backend.close()
    assert got.detections == seq.detections  # order and threads never matter
    assert got.detections == ref.detections and got.stats == ref.stats  # the same input as the cpu path
