"""GPU pre-processing: the kernel arithmetic (NumPy reference) against the CPU letterbox on
any machine; NVRTC builds for the GPUs we target where NVRTC is installed; the kernels
against the reference, bit for bit, and the IO-binding backend end to end where a GPU is."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DEMO_MODEL, MINI, cuda_device_count, nvrtc_or_skip

from common.core.errors import UserError
from common.data.images import letterbox_geometry, letterbox_hwc, load_image_bgr, to_chw_float
from common.eval.pipeline import EvalOptions, evaluate
from common.ort.session import OrtBackend
from common.throughput.gpu_preprocess import U8Batch, letterbox_reference, normalize_reference

ONE_LEVEL = 1 / 255 + 1e-6  # one grey level, with float32 slack
ODD_SIZES = [(1, 1), (2, 3), (3, 700), (641, 639), (1280, 1280), (480, 640), (1000, 333), (320, 1280), (1280, 320)]


def mini_images() -> list[np.ndarray]:
    paths = sorted((MINI / "val2017").glob("*.jpg"))
    assert paths, "bundled mini set missing"
    return [load_image_bgr(p) for p in paths]


def random_images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ODD_SIZES]


def cpu_input(img_bgr: np.ndarray, size: int = 640) -> np.ndarray:
    canvas, _ = letterbox_hwc(img_bgr[:, :, ::-1], size)
    return to_chw_float(canvas)


def test_letterbox_reference_within_one_grey_level_of_opencv() -> None:
    worst, differing, total = 0.0, 0, 0
    for img in mini_images() + random_images():
        meta = letterbox_geometry(img.shape[1], img.shape[0], 640)
        got, want = letterbox_reference(img, meta, 640), cpu_input(img)
        assert got.shape == want.shape == (3, 640, 640) and got.dtype == np.float32
        diff = np.abs(got - want)
        worst = max(worst, float(diff.max()))
        differing += int((diff > 0).sum())
        total += diff.size
    assert worst <= ONE_LEVEL
    assert differing / total < 0.1  # mostly equal, not merely close


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


def test_pipeline_gpu_letterbox_plumbing_is_close(mini12) -> None:
    mini_coco = mini12
    inner = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    ref = evaluate(inner, mini_coco, EvalOptions(progress=False, workers=2))
    got = evaluate(HostDevicePrep(inner), mini_coco, EvalOptions(progress=False, workers=0, preprocess="gpu-letterbox"))
    assert abs(got.stats["AP"] - ref.stats["AP"]) < 0.01


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


# ----------------------------------------------------------------------------- on a GPU

gpu = pytest.mark.skipif(cuda_device_count() == 0, reason="needs an NVIDIA GPU (cuda-python)")


def _stage_on_gpu(mem, stager, stream, batch: U8Batch, dst, host_out) -> np.ndarray:
    stager.mode = batch.mode
    stager.stage(batch, dst.ptr, stream)
    nbytes = len(batch) * 3 * batch.size * batch.size * 4
    mem.copy_dtoh_async(host_out.ptr, dst.ptr, nbytes, stream)
    stream.synchronize()
    return host_out.view(np.float32, batch.shape).copy()


@gpu
def test_kernels_equal_the_reference_bit_for_bit_on_the_gpu() -> None:
    """Both kernels through U8Stager: mixed-size batches (one launch each) against the NumPy reference."""
    from common.gpu.cuda_mem import CudaMemory
    from common.throughput.gpu_preprocess import GpuPreprocessor, U8Stager

    mem = CudaMemory(0)
    prep = GpuPreprocessor(0)
    stream = mem.stream()
    stager = U8Stager(mem, prep, "gpu-letterbox")
    size, images = 640, random_images() + mini_images()
    out_bytes = len(images) * 3 * size * size * 4
    dst, host_out = mem.device_buffer(out_bytes), mem.pinned_buffer(out_bytes)
    worst = 0.0
    try:
        for imgs in (images[:20], images[20:], images[:1]):  # the staging buffers reused, then one image
            metas = [letterbox_geometry(i.shape[1], i.shape[0], size) for i in imgs]
            got = _stage_on_gpu(mem, stager, stream, U8Batch("gpu-letterbox", imgs, metas, size), dst, host_out)
            for j, (img, meta) in enumerate(zip(imgs, metas, strict=True)):
                np.testing.assert_array_equal(got[j], letterbox_reference(img, meta, size), err_msg=f"image {j}")
                worst = max(worst, float(np.abs(got[j] - cpu_input(img)).max()))
        assert worst <= ONE_LEVEL
        canvases = [letterbox_hwc(img, size)[0] for img in images[:16]]
        got = _stage_on_gpu(mem, stager, stream, U8Batch("gpu-normalize", canvases, [], size), dst, host_out)
        for j, img in enumerate(images[:16]):
            np.testing.assert_array_equal(got[j], cpu_input(img))
    finally:
        stager.close()
        dst.free()
        host_out.free()
        stream.close()
        prep.close()


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
    if mode == "gpu-normalize":
        assert got.detections == ref.detections and got.stats == ref.stats
    else:
        assert abs(got.stats["AP"] - ref.stats["AP"]) < 0.01
