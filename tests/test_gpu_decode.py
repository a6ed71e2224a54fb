"""--decode gpu (nvImageCodec): reading and header parsing, the decoder wrapper, the stager pointing the
letterbox kernel at decoded images in place (pitched rows), and the evaluator end to end.

On this CPU machine nvImageCodec's own CPU backend (libjpeg-turbo) decodes for real, into host memory,
which the host doubles of the CUDA layer treat as device memory: the whole --decode gpu path runs except
nvJPEG itself. Where a GPU is, the nvJPEG decode is checked against OpenCV's pixels."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest
from conftest import DEMO_MODEL, FIXTURES, MINI, cuda_device_count

from common.core.cli import run_main
from common.core.errors import UserError
from common.data.images import letterbox_geometry, load_image_bgr
from common.throughput.gpu_preprocess import PARAM_WORDS, U8Batch, U8Stager, letterbox_reference

nvimgcodec = pytest.importorskip("nvidia.nvimgcodec", reason="nvImageCodec not installed (extra gpu-decode)")

from common.throughput.gpu_decode import Decoded, ImageDecoder, read_encoded  # noqa: E402


def _paths(limit: int = 40) -> list:
    paths = sorted((MINI / "val2017").glob("*.jpg"))
    shared = FIXTURES / "synthcoco" / "valA"
    if shared.is_dir():
        paths += sorted(shared.glob("*.jpg"))[:limit]
    assert paths, "bundled mini set missing"
    return paths


def _host_image(d: Decoded) -> np.ndarray:
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * ((d.height - 1) * d.row_bytes + d.width * 3)).from_address(d.ptr))
    return np.lib.stride_tricks.as_strided(raw, (d.height, d.width, 3), (d.row_bytes, 3, 1)).copy()


def test_cpu_backend_decodes_exactly_as_opencv_through_our_pointers() -> None:
    """Header sizes, BGR order, pointer and pitch: each image rebuilt from ``Decoded`` equals cv2's."""
    paths = _paths()
    encoded = [read_encoded(p) for p in paths]
    decoder = ImageDecoder(backend="cpu")
    got = decoder.decode(encoded, stream=0)
    assert len(got) == len(paths)
    for p, enc, d in zip(paths, encoded, got, strict=True):
        ref = load_image_bgr(p)
        assert (enc.height, enc.width) == ref.shape[:2] == (d.height, d.width), p
        assert d.row_bytes >= d.width * 3
        np.testing.assert_array_equal(_host_image(d), ref, err_msg=str(p))


def test_read_encoded_refuses_what_it_cannot_decode(tmp_path) -> None:
    missing = tmp_path / "missing.jpg"
    with pytest.raises(UserError, match=f"image not found: {missing}"):
        read_encoded(missing)
    for name, data in (("empty.jpg", b""), ("text.jpg", b"not an image at all" * 10), ("cut.jpg", b"\xff\xd8\xff")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=f"{name}.*--decode cpu"):
            read_encoded(tmp_path / name, what="image id 7")


def test_decoder_refuses_a_size_other_than_the_header() -> None:
    """An EXIF-rotated image decodes with its sides swapped: the letterbox geometry from the header would be
    wrong, so the decoder refuses it (here: a header size altered by hand)."""
    enc = read_encoded(_paths()[0])
    enc.width, enc.height = enc.height, enc.width
    with pytest.raises(UserError, match=r"EXIF orientation.*--decode cpu"):
        ImageDecoder(backend="cpu").decode([enc], stream=0)


def test_decoder_reports_the_file_it_could_not_decode(tmp_path) -> None:
    good = _paths()[0]
    data = good.read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 3])  # the header parses, the scan data is cut short
    try:
        encoded = [read_encoded(good), read_encoded(bad)]
    except UserError:
        pytest.skip("this nvImageCodec refuses the truncated file at the header already")
    try:
        ImageDecoder(backend="cpu").decode(encoded, stream=0)
    except UserError as exc:
        assert "truncated.jpg" in str(exc)
    # libjpeg-turbo may also fill a truncated scan with grey and succeed, as OpenCV does: no error then


class _PitchedDecoder:
    """A decoder double whose images have padded rows (as nvJPEG's pitched device buffers may)."""

    def __init__(self, mem, pad: int) -> None:
        self.mem, self.pad, self.blocks, self.calls = mem, pad, [], []

    def decode(self, images, stream):
        self.calls.append(stream)
        out = []
        for img in images:
            h, w = img.shape[:2]
            pitch = w * 3 + self.pad
            block = self.mem.device_buffer(h * pitch)
            rows = block.view(np.uint8, (h, pitch))
            rows[:] = 0xEE  # padding the kernel must never read
            rows[:, : w * 3] = img.reshape(h, w * 3)
            self.blocks.append(block)
            out.append(Decoded(block.ptr, pitch, w, h, block))
        return out


def test_stager_points_the_kernel_at_decoded_images_in_place() -> None:
    """Only the params table goes up (one copy of n records), one launch, pixels read through each image's
    own address and row pitch; a wrong offset or pitch gives wrong pixels or trips the double's checks."""
    import trt_double as D
    from test_gpu_preprocess import CountingMemory

    counting = CountingMemory()
    mem = counting.mem
    prep = D.FakeGpuPreprocessor(mem)
    stager = U8Stager(counting, prep, "gpu-letterbox")
    stager.decoder = _PitchedDecoder(mem, pad=13)
    stream = mem.stream()
    size, rng = 96, np.random.default_rng(5)
    shapes = [(30, 50), (96, 96), (7, 200), (150, 3), (1, 1)]
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    metas = [letterbox_geometry(w, h, size) for h, w in shapes]
    dst = mem.device_buffer(len(imgs) * 3 * size * size * 4)
    copied: list[int] = []
    real_copy = counting.mem.copy_htod_async
    counting.mem.copy_htod_async = lambda d, s, n, st: (copied.append(n), real_copy(d, s, n, st))[1]
    try:
        stager.stage(U8Batch("gpu-letterbox", imgs, metas, size, decode="gpu"), dst.ptr, stream)
        assert (prep.launches, counting.htod) == (1, 1)
        assert copied == [len(imgs) * PARAM_WORDS * 8]  # the table only: no pixel goes through the host
        assert stager.decoder.calls == [stream.handle]  # decoded on the lane's stream
        got = dst.view(np.float32, (len(imgs), 3, size, size))
        for j, (img, meta) in enumerate(zip(imgs, metas, strict=True)):
            np.testing.assert_array_equal(got[j], letterbox_reference(img, meta, size), err_msg=f"image {j}")
        assert len(stager._decoded) == len(imgs)  # kept alive until the lane's next batch
        stager.decoder = None
        with pytest.raises(UserError, match="not set up for --decode gpu"):
            stager.fill(U8Batch("gpu-letterbox", imgs, metas, size, decode="gpu"), stream)
    finally:
        stager.close()
        dst.free()
        stream.close()
        for b in getattr(stager.decoder, "blocks", []):
            b.free()


def test_trt_evaluator_decode_gpu_equals_decode_cpu(tmp_path, api, double) -> None:
    """The TensorRT evaluator (runtime double, host doubles of the kernels) with the lanes decoding through
    nvImageCodec's CPU backend gives exactly the detections of OpenCV decoding in the loaders."""
    import trt_double as D
    from test_trt_runtime import _engine

    from common.data.coco import open_dataset
    from common.eval.cli import loader_factory
    from common.eval.pipeline import EvalOptions, evaluate
    from common.throughput.trt_lanes import TrtBackend
    from common.trt.runtime import TrtSession

    _, mem = double
    ds = open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 12)
    session = TrtSession(_engine(tmp_path, api, DEMO_MODEL), api)
    backend = TrtBackend(session, prep_factory=lambda: D.FakeGpuPreprocessor(mem), lanes=2)
    backend._decoder_factory = lambda: ImageDecoder(backend="cpu")
    try:
        ref = evaluate(backend, ds, EvalOptions(progress=False, workers=2, batch_size=1, preprocess="gpu-letterbox"))
        opts = EvalOptions(progress=False, workers=2, preprocess="gpu-letterbox", decode="gpu")
        got = evaluate(backend, ds, opts, loader_factory(opts))
        assert backend.metadata()["decode"] == "gpu"
        again = evaluate(backend, ds, EvalOptions(progress=False, workers=0, preprocess="gpu-letterbox"))
        assert backend.metadata()["decode"] == "cpu"  # a later run without --decode gpu decodes on the CPU again
    finally:
        backend.close()
    assert got.timings["decode"] == "gpu" and ref.timings["decode"] == "cpu"
    np.testing.assert_array_equal(got.rows, ref.rows)
    assert got.stats == ref.stats
    np.testing.assert_array_equal(again.rows, ref.rows)
    assert mem.live == 0


def test_decode_gpu_is_refused_where_it_cannot_run(mini_coco) -> None:
    from common.core.errors import OptionError
    from common.eval.cli import loader_factory
    from common.eval.pipeline import EvalOptions, evaluate
    from common.ort.session import OrtBackend

    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    with pytest.raises(OptionError, match=r"^decode gpu needs preprocess gpu-letterbox"):
        EvalOptions(progress=False, decode="gpu")  # refused when the options are made
    with pytest.raises(UserError, match="--decode gpu needs a backend that decodes"):
        opts = EvalOptions(progress=False, preprocess="gpu-letterbox", decode="gpu")
        evaluate(backend, mini_coco, opts, loader_factory(opts))


@pytest.mark.parametrize("script", ["eval_yolov10m_onnx_coco", "eval_yolov10m_trt_coco"])
def test_cli_refuses_decode_gpu_before_any_work(tmp_path, capsys, monkeypatch, script) -> None:
    mod = __import__(script)
    base = ["--data-root", str(MINI), "--max-images", "2", "--out", str(tmp_path / "m.json")]
    model = ["--onnx-path", str(DEMO_MODEL)]
    assert run_main(mod.main, [*model, *base, "--decode", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decode gpu needs --preprocess gpu-letterbox" in err[0]
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # as if not installed
    assert run_main(mod.main, [*model, *base, "--decode", "gpu", "--preprocess", "gpu-letterbox"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nvidia-nvimgcodec" in err[0] and "--decode cpu" in err[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


# ----------------------------------------------------------------------------- on a GPU

gpu = pytest.mark.skipif(cuda_device_count() == 0, reason="needs an NVIDIA GPU (cuda-python)")


@gpu
def test_nvjpeg_pixels_against_opencv_and_the_letterbox_in_place() -> None:
    """nvJPEG (nvImageCodec's GPU backends) against OpenCV on the bundled and shared images: within one grey
    level (the issue's measurement); the letterbox kernel reading the decoded device images in place gives
    the NumPy reference of the same decoded pixels bit for bit."""
    from common.gpu.cuda_mem import CudaMemory
    from common.throughput.gpu_preprocess import GpuPreprocessor

    mem = CudaMemory(0)
    prep = GpuPreprocessor(0)
    stream = mem.stream()
    stager = U8Stager(mem, prep, "gpu-letterbox")
    stager.decoder = ImageDecoder(0, "gpu")
    paths = _paths(limit=300)
    size, worst, differing, total = 640, 0, 0, 0
    try:
        for k in range(0, len(paths), 32):
            chunk = paths[k : k + 32]
            encoded = [read_encoded(p) for p in chunk]
            metas = [letterbox_geometry(e.width, e.height, size) for e in encoded]
            nbytes = len(chunk) * 3 * size * size * 4
            dst, host_out = mem.device_buffer(nbytes), mem.pinned_buffer(nbytes)
            try:
                stager.stage(U8Batch("gpu-letterbox", encoded, metas, size, decode="gpu"), dst.ptr, stream)
                mem.copy_dtoh_async(host_out.ptr, dst.ptr, nbytes, stream)
                stream.synchronize()
                got = host_out.view(np.float32, (len(chunk), 3, size, size)).copy()
                for j, (p, d, meta) in enumerate(zip(chunk, stager._decoded, metas, strict=True)):
                    pixels = np.asarray(d.owner.cpu())
                    ref = load_image_bgr(p)
                    diff = np.abs(pixels.astype(np.int16) - ref)
                    worst = max(worst, int(diff.max()))
                    differing, total = differing + int((diff > 0).sum()), total + diff.size
                    np.testing.assert_array_equal(got[j], letterbox_reference(pixels, meta, size), err_msg=str(p))
            finally:
                dst.free()
                host_out.free()
        print(f"nvJPEG vs OpenCV on {len(paths)} images: max {worst} grey levels, {differing / total:.4%} differ")
        assert worst <= 1
    finally:
        stager.close()
        stream.close()
        prep.close()


@gpu
def test_io_binding_evaluator_decode_gpu_close_to_opencv(mini_coco) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA EP here")
    from common.eval.cli import loader_factory
    from common.eval.pipeline import EvalOptions, evaluate
    from common.throughput.ort_lanes import OrtCudaBackend

    backend = OrtCudaBackend(str(DEMO_MODEL), lanes=2)
    try:
        ref = evaluate(backend, mini_coco, EvalOptions(progress=False, workers=2, preprocess="gpu-letterbox"))
        opts = EvalOptions(progress=False, workers=2, preprocess="gpu-letterbox", decode="gpu")
        got = evaluate(backend, mini_coco, opts, loader_factory(opts))
    finally:
        backend.close()
    assert got.timings["decode"] == "gpu"
    assert abs(got.stats["AP"] - ref.stats["AP"]) < 0.005
