"""GPU post-processing: the NumPy emulation of the kernels against ``yolov10.decode`` (the
reference) on real outputs of every fixture model and on edge cases, on any machine; NVRTC
builds for the GPUs we target; the kernels against both on a GPU (skipped without one)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import cuda_device_count, fixture_path, nvrtc_or_skip

from common.core.errors import UserError
from common.model.yolov10 import Detections, PostprocessOptions, anchors_for, decode
from common.throughput.gpu_postprocess import plan_postprocess, postprocess_reference, suppress_matrix

OPTS = PostprocessOptions()  # conf 0.001, iou 0.7, max_det 300, pre_nms_topk 30000
# (model file, layout); yolov10n-synth-dynbatch has the e2e layout and a dynamic batch axis
MODELS = [
    ("yolov10n-synth", "e2e"),
    ("yolov10n-synth-dynbatch", "e2e"),
    ("yolov10n-synth-raw84", "raw84"),
    ("yolov10n-synth-dfl144", "dfl144"),
    ("yolov10m-synth-dfl144", "dfl144"),
]
N_IMAGES = int(os.environ.get("YOLO_POSTPROCESS_IMAGES", "2"))  # valA images run per model
_OUTPUTS: dict[tuple[str, int], np.ndarray] = {}


def model_outputs(model: str, n: int = N_IMAGES) -> np.ndarray:
    """The model's raw output on ``n`` valA images (ONNX Runtime CPU), [n, ...]; or, where
    $YOLO_RECORDED_OUTPUTS/<model>.npy exists (outputs recorded the same way), its first n."""
    recorded = Path(os.environ.get("YOLO_RECORDED_OUTPUTS", "/nonexistent")) / f"{model}.npy"
    if (model, n) not in _OUTPUTS and recorded.is_file():
        _OUTPUTS[(model, n)] = np.load(recorded)[:n]
    if (model, n) not in _OUTPUTS:
        ort = pytest.importorskip("onnxruntime")
        from common.data.images import load_image_rgb, preprocess

        path = fixture_path("models", f"{model}.onnx")
        images = sorted(fixture_path("synthcoco", "valA").glob("*.jpg"))[: 7 * n : 7]
        x = np.stack([preprocess(load_image_rgb(p), 640)[0] for p in images])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = min(8, os.cpu_count() or 1)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        if "dynbatch" in model:
            out = sess.run(None, {name: x})[0]
        else:
            out = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
        _OUTPUTS[(model, n)] = out
    return _OUTPUTS[(model, n)]


def assert_same(got: Detections, want: Detections) -> None:
    """Same detections in the same order, bit for bit."""
    assert len(got) == len(want)
    assert got.classes.tolist() == want.classes.tolist()
    assert got.scores.view(np.int32).tolist() == want.scores.view(np.int32).tolist()
    assert np.array_equal(got.boxes.view(np.int32), want.boxes.view(np.int32))


# ----------------------------------------------------------------------------- synthetic outputs


def raw84_output(boxes_scores: list[tuple[float, float, float, float, int, float]], a: int = 8400) -> np.ndarray:
    """[84, a]; entry i = (cx, cy, w, h, class, score) at anchor i."""
    out = np.zeros((84, a), np.float32)
    for i, (cx, cy, w, h, c, s) in enumerate(boxes_scores):
        out[:4, i] = (cx, cy, w, h)
        out[4 + c, i] = s
    return out


def dfl_output(entries: dict[int, tuple[tuple[int, int, int, int], dict[int, float]]]) -> np.ndarray:
    """[144, 8400]: anchor -> (l, t, r, b bins, {class: logit}); sharp DFL bins, other logits -30."""
    out = np.zeros((144, 8400), np.float32)
    out[64:] = -30.0
    for a, (bins, logits) in entries.items():
        for side, b in enumerate(bins):
            out[side * 16 : side * 16 + 16, a] = -60.0
            out[side * 16 + b, a] = 60.0
        for c, v in logits.items():
            out[64 + c, a] = v
    return out


def test_empty_when_nothing_passes_conf() -> None:
    for out, layout in [
        (np.full((144, 8400), -10.0, np.float32), "dfl144"),  # sigmoid(-10) = 4.5e-5 < 0.001
        (np.full((84, 8400), 0.0009, np.float32), "raw84"),
        (np.zeros((300, 6), np.float32), "e2e"),
    ]:
        assert len(postprocess_reference(out, layout, (640, 640), OPTS)) == 0
        assert len(decode(out, layout, (640, 640), OPTS)) == 0


def test_all_suppressed_but_one_per_class() -> None:
    entries = [(100.0, 100.0, 40.0, 30.0, c, 0.9 - 0.001 * i) for i, c in enumerate([3] * 40 + [5] * 40)]
    out = raw84_output(entries)
    got = postprocess_reference(out, "raw84", (640, 640), OPTS)
    assert got.classes.tolist() == [3, 5]
    assert_same(got, decode(out, "raw84", (640, 640), OPTS))


def test_equal_scores_rank_by_anchor_index() -> None:
    # same score everywhere: NMS keeps the lowest anchor of each overlapping pair, order = anchor order
    entries = [(50.0 + 100 * (i // 2), 50.0, 40.0, 40.0 + (i % 2), 0, 0.5) for i in range(10)]
    out = raw84_output(entries[::-1])  # anchor 0 holds the last entry
    got = postprocess_reference(out, "raw84", (640, 640), OPTS)
    assert len(got) == 5 and np.all(got.scores == np.float32(0.5))
    assert got.boxes[:, 0].tolist() == sorted(got.boxes[:, 0].tolist(), reverse=True)  # anchor order
    assert_same(got, decode(out, "raw84", (640, 640), OPTS))


def test_saturated_logits_tie_at_one_and_rank_by_anchor() -> None:
    # logits > 17.33 give a float32 sigmoid of exactly 1.0: ranked by anchor index, not by logit; the
    # best class is the first class whose score is 1.0 (class 2 here, though class 9's logit is larger)
    entries = {
        10: ((1, 1, 1, 1), {9: 40.0, 2: 20.0}),
        5: ((2, 2, 2, 2), {4: 17.5}),
        900: ((3, 3, 3, 3), {4: 30.0}),
        3: ((1, 1, 1, 1), {7: 5.0}),
    }
    out = dfl_output(entries)
    got = postprocess_reference(out, "dfl144", (640, 640), OPTS)
    assert got.classes.tolist() == [4, 2, 4, 7]  # anchors 5, 10, 900 (all 1.0), then 3
    assert got.scores[:3].tolist() == [1.0, 1.0, 1.0]
    points, strides = anchors_for(640, 640, 8400)
    assert np.allclose(got.boxes[0], np.r_[points[5] - 2 * strides[5], points[5] + 2 * strides[5]], atol=1e-3)


def test_more_survivors_than_max_det_and_pre_nms_topk() -> None:
    rng = np.random.default_rng(0)
    n = 700
    entries = [
        (20.0 * (i % 30) + 10, 20.0 * (i // 30) + 10, 8.0, 8.0, int(rng.integers(0, 80)), float(s))
        for i, s in enumerate(rng.uniform(0.01, 1, n))
    ]
    out = raw84_output(entries)
    variants = [OPTS, PostprocessOptions(max_det=7), PostprocessOptions(pre_nms_topk=5), PostprocessOptions(max_det=0)]
    for opts in variants:
        got = postprocess_reference(out, "raw84", (640, 640), opts)
        assert len(got) == min(n, opts.max_det, opts.pre_nms_topk)
        assert_same(got, decode(out, "raw84", (640, 640), opts))


def test_nan_scores_are_dropped() -> None:
    out = raw84_output([(50, 50, 10, 10, 1, 0.8), (150, 50, 10, 10, 2, 0.7)])
    out[10, 0] = np.nan  # anchor 0 has a NaN class score: NumPy's max is NaN, never >= conf
    got = postprocess_reference(out, "raw84", (640, 640), OPTS)
    assert got.classes.tolist() == [2]
    assert_same(got, decode(out, "raw84", (640, 640), OPTS))


def test_e2e_keeps_model_order_and_compares_conf_in_float32() -> None:
    rows = np.array(
        [[1, 2, 3, 4, 0.3, 2], [5, 6, 7, 8, 0.9, 1], [0, 0, 1, 1, 0.1, 0], [9, 9, 10, 10, 0.7, 4]], np.float32
    )
    opts = PostprocessOptions(conf=0.7, max_det=5)  # float32(0.7) < 0.7: row 3 passes only in float32
    got = postprocess_reference(rows, "e2e", (640, 640), opts)
    assert got.classes.tolist() == [1, 4]
    assert_same(got, decode(rows, "e2e", (640, 640), opts))
    first = postprocess_reference(rows, "e2e", (640, 640), PostprocessOptions(conf=0.2, max_det=1))
    assert first.classes.tolist() == [2]


def test_iou_decision_is_the_float64_one_at_and_near_the_threshold() -> None:
    # the kernel decides IoU > iou from float32 when it is clearly away from iou, else in float64:
    # it must give float64's answer for every pair, also with the threshold exactly at a pair's IoU
    from common.throughput.gpu_postprocess import _iou_f64

    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 600, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(0.001, 80, (300, 2)).astype(np.float32)], 1)
    boxes[:20] = boxes[20:40] + rng.normal(0, 1e-3, (20, 4)).astype(np.float32)  # near-duplicates
    boxes[40] = (1e-30, 1e-30, 2e-30, 2e-30)  # tiny
    boxes[41] = (5, 5, 5, 9)  # zero area
    boxes[42] = (np.inf, 0, np.inf, 1)
    boxes[43, 2] = np.nan
    exact = _iou_f64(boxes, boxes)
    thresholds = [0.5, 0.7, 0.0, float(exact[20, 0]), float(exact[25, 5]), float(np.nextafter(exact[20, 0], 0))]
    for thr in thresholds:
        assert np.array_equal(suppress_matrix(boxes, boxes, thr), exact > thr)
    square, half = np.array([[0, 0, 10, 10]], np.float32), np.array([[0, 0, 10, 5]], np.float32)
    assert not suppress_matrix(square, half, 0.5)[0, 0]  # IoU exactly 0.5 is kept
    assert suppress_matrix(square, half, 0.4999999)[0, 0]


def test_float16_outputs_are_the_float32_values() -> None:
    out = model_outputs("yolov10n-synth-raw84", 1)[0].astype(np.float16)
    got = postprocess_reference(out, "raw84", (640, 640), OPTS)
    assert_same(got, decode(out.astype(np.float32), "raw84", (640, 640), OPTS))


@pytest.mark.parametrize(("model", "layout"), MODELS)
def test_emulation_equals_numpy_decode_on_fixture_outputs(model: str, layout: str) -> None:
    outs = model_outputs(model)
    for out in outs:
        assert_same(
            postprocess_reference(out, layout, (640, 640), OPTS),
            decode(out, layout, (640, 640), OPTS),
        )


def test_plan_refuses_shapes_that_do_not_fit_the_layout() -> None:
    good = plan_postprocess("dfl144", 4, (144, 8400), (640, 640), OPTS)
    assert good.chunks == 3 and good.topk == 8400 and good.max_det == 300
    bad = [
        ("dfl144", (64, 8400), (640, 640), np.float32, "nc >= 1"),
        ("dfl144", (144, 8400), (320, 320), np.float32, "anchors"),
        ("raw84", (4, 8400), (640, 640), np.float32, "nc >= 1"),
        ("e2e", (300, 7), (640, 640), np.float32, r"\[B,K,6\]"),
        ("raw84", (84, 8400), (640, 640), np.int8, "float32 or float16"),
        ("yolo", (84, 8400), (640, 640), np.float32, "unknown layout"),
    ]
    for layout, dims, hw, dtype, match in bad:
        with pytest.raises(UserError, match=match):
            plan_postprocess(layout, 1, dims, hw, OPTS, dtype)


@pytest.mark.parametrize("arch", ["sm_90", "sm_120"])
def test_kernels_compile_for_hopper_and_blackwell(arch: str) -> None:
    nvrtc_or_skip()
    from common.throughput.gpu_postprocess import KERNEL_NAMES, compile_postprocess_kernels

    cubin = compile_postprocess_kernels(arch)
    assert cubin[:4] == b"\x7fELF"
    for name in KERNEL_NAMES:
        assert name.encode() in cubin


# ----------------------------------------------------------------------------- the host wrapper


class Runner:
    """Uploads a batch of outputs and runs a GpuPostprocessor on it (real CUDA or the host doubles)."""

    def __init__(self, fake: bool) -> None:
        from common.throughput.gpu_postprocess import GpuPostprocessor

        if fake:
            import trt_double as D
            from post_double import FakePostprocessKernels

            self.mem = D.FakeCudaMemory()
            self.kernels = FakePostprocessKernels(self.mem)
            self.post = GpuPostprocessor(self.mem, self.kernels)
        else:
            from common.gpu.cuda_mem import CudaMemory

            self.mem = CudaMemory(0)
            self.post = GpuPostprocessor(self.mem)
        self.stream = self.mem.stream()
        self.bufs: list = []

    def run(self, outs: np.ndarray, layout: str, opts: PostprocessOptions, input_hw=(640, 640), prepare_batch=None):
        outs = np.ascontiguousarray(outs)
        dev, host = self.mem.device_buffer(outs.nbytes), self.mem.pinned_buffer(outs.nbytes)
        self.bufs += [dev, host]
        host.view(outs.dtype, outs.shape)[...] = outs
        self.mem.copy_htod_async(dev.ptr, host.ptr, outs.nbytes, self.stream)
        self.post.prepare(layout, prepare_batch or outs.shape[0], outs.shape[1:], input_hw, opts, outs.dtype)
        return self.post.run(dev.ptr, self.stream, outs.shape[0]).detections()

    def close(self) -> None:
        for b in self.bufs:
            b.free()
        self.bufs.clear()
        self.post.close()
        self.stream.close()


def edge_cases(big: bool = True) -> list[tuple[np.ndarray, str, PostprocessOptions, tuple[int, int]]]:
    """Batches that reach every branch: > 4096 candidates (sorted in chunks, then merged), > 512 kept
    (the kept list spills out of shared memory), ties, suppression, top-k, max_det 0, float16, e2e."""
    rng = np.random.default_rng(11)
    cases = []
    n = 8400
    raw = np.zeros((84, n), np.float32)
    raw[0], raw[1] = rng.uniform(0, 640, n), rng.uniform(0, 640, n)
    raw[2], raw[3] = rng.uniform(2, 60, n), rng.uniform(2, 60, n)
    raw[4 + rng.integers(0, 80, n), np.arange(n)] = np.round(rng.uniform(0.001, 1, n), 2)  # many equal scores
    P = PostprocessOptions
    variants = [
        OPTS,
        P(max_det=2000),
        P(max_det=5000, iou=0.95),
        P(pre_nms_topk=4100),
        P(pre_nms_topk=17),
        P(max_det=0),
        P(conf=2.0),
    ]
    for opts in variants:
        cases.append((raw[None], "raw84", opts, (640, 640)))
    same_box = raw84_output([(100.0, 100.0, 40.0, 30.0, c, 0.5) for c in [3] * 40 + [5] * 40])
    cases.append((same_box[None], "raw84", OPTS, (640, 640)))
    sat = dfl_output(
        {
            10: ((1, 1, 1, 1), {9: 40.0, 2: 20.0}),
            5: ((2, 2, 2, 2), {4: 17.5}),
            900: ((3, 3, 3, 3), {4: 30.0}),
            3: ((1, 1, 1, 1), {7: 5.0}),
        }
    )
    cases.append((np.stack([sat, sat * 0 - 5]), "dfl144", OPTS, (640, 640)))
    if big:
        # a 1280 input: 33600 anchors, all above conf, random DFL logits; best-class logits spaced
        # 1e-4 apart (no near-ties that an ulp of exp could swap)
        a = 33600
        dfl = rng.normal(0, 3, (2, 144, a)).astype(np.float32)
        dfl[:, 64:] = -30.0
        for j in range(2):
            dfl[j, 64 + rng.integers(0, 80, a), np.arange(a)] = rng.permutation(np.arange(a) * 1e-4 - 1)
        cases.append((dfl, "dfl144", PostprocessOptions(conf=0.25), (1280, 1280)))
    small = np.zeros((144, 2100), np.float32)  # a 320 input: 2100 anchors, one chunk
    small[64 + 3, ::7] = 2.0
    small[:64, ::7] = rng.normal(0, 2, (64, 300))
    cases.append((small[None], "dfl144", OPTS, (320, 320)))
    e2e = np.concatenate(
        [rng.uniform(0, 600, (2, 300, 4)), rng.uniform(0, 1, (2, 300, 1)), rng.integers(0, 80, (2, 300, 1))], axis=2
    ).astype(np.float32)
    cases += [(e2e, "e2e", PostprocessOptions(conf=0.3, max_det=100), (640, 640)), (e2e, "e2e", OPTS, (640, 640))]
    cases.append((e2e.astype(np.float16), "e2e", OPTS, (640, 640)))
    cases.append((raw[None].astype(np.float16), "raw84", OPTS, (640, 640)))
    return cases


def check_edge_cases(runner: Runner, big: bool = True) -> int:
    """Runs every edge case; returns the most boxes kept in one image."""
    most = 0
    for outs, layout, opts, hw in edge_cases(big):
        got = runner.run(outs, layout, opts, hw)
        for j, out in enumerate(outs):
            want = postprocess_reference(out, layout, hw, opts)
            assert_same(got[j], want)
            assert_same(got[j], decode(out.astype(np.float32), layout, hw, opts))
            most = max(most, len(got[j]))
    return most


def test_wrapper_on_host_kernels_equals_numpy_on_fixture_outputs() -> None:
    runner = Runner(fake=True)
    try:
        for model, layout in MODELS:
            outs = model_outputs(model)
            got = runner.run(outs, layout, OPTS)  # the whole batch at once
            for g, out in zip(got, outs, strict=True):
                assert_same(g, decode(out, layout, (640, 640), OPTS))
    finally:
        runner.close()
    assert runner.mem.live == 0  # every buffer freed


def test_wrapper_on_host_kernels_edge_cases_and_launch_plan() -> None:
    runner = Runner(fake=True)
    try:
        assert check_edge_cases(runner, big=False) > 512
        k = runner.kernels
        k.launches.clear()
        runner.run(edge_cases(big=False)[0][0], "raw84", OPTS)  # 8400 anchors: 3 chunks, merged
        assert k.launches == ["zero_ints", "yolo_scores", "sort_chunks", "merge_chunks", "greedy_nms"]
        k.launches.clear()
        runner.run(edge_cases(big=False)[-5][0], "dfl144", OPTS, (320, 320))  # 2100 anchors: one chunk
        assert k.launches == ["zero_ints", "yolo_scores", "sort_chunks", "greedy_nms"]
    finally:
        runner.close()
    assert runner.mem.live == 0


def test_wrapper_grows_only_and_reuploads_anchors_for_a_new_input_size() -> None:
    runner = Runner(fake=True)
    try:
        outs = model_outputs("yolov10n-synth-dfl144")
        want = [decode(o, "dfl144", (640, 640), OPTS) for o in outs]
        got = runner.run(outs, "dfl144", OPTS, prepare_batch=8)  # a smaller batch in a bigger plan
        ptrs = {k: v.ptr for k, v in runner.post._bufs.items()}
        got2 = runner.run(outs[:1], "dfl144", OPTS, prepare_batch=2)  # nothing grows
        assert {k: v.ptr for k, v in runner.post._bufs.items()} == ptrs
        small = edge_cases(big=False)[-5][0]
        got3 = runner.run(small, "dfl144", OPTS, (320, 320))  # other anchors: uploaded again
        got4 = runner.run(outs, "dfl144", OPTS)  # and back
        for g, g4, w in zip(got, got4, want, strict=True):
            assert_same(g, w)
            assert_same(g4, w)
        assert_same(got2[0], want[0])
        assert_same(got3[0], decode(small[0], "dfl144", (320, 320), OPTS))
        with pytest.raises(ValueError, match=r"batch 3 outside 1\.\.2"):
            runner.post.prepare("dfl144", 2, (144, 8400), (640, 640), OPTS)
            runner.post.launch(runner.bufs[0].ptr, runner.stream, 3)
    finally:
        runner.close()
    assert runner.mem.live == 0


# ----------------------------------------------------------------------------- on a GPU

gpu = pytest.mark.skipif(cuda_device_count() == 0, reason="needs an NVIDIA GPU (cuda-python)")


@pytest.fixture(scope="module")
def runner():
    r = Runner(fake=False)
    yield r
    r.close()


def _stats(got: list[Detections], want: list[Detections]) -> tuple[int, float, int]:
    """(images with the same classes in the same order, max box error px, max score difference in ulps)."""
    pairs = list(zip(got, want, strict=True))
    same_order = sum(len(g) == len(w) and g.classes.tolist() == w.classes.tolist() for g, w in pairs)
    comparable = [(g, w) for g, w in pairs if len(g) == len(w) and len(g)]
    err = max((float(np.abs(g.boxes - w.boxes).max()) for g, w in comparable), default=0.0)
    ulps = max(
        (int(np.abs(g.scores.view(np.int32).astype(np.int64) - w.scores.view(np.int32)).max()) for g, w in comparable),
        default=0,
    )
    return same_order, err, ulps


@gpu
@pytest.mark.parametrize(("model", "layout"), MODELS)
def test_gpu_equals_numpy_on_fixture_outputs(runner, model: str, layout: str) -> None:
    outs = model_outputs(model)
    got = runner.run(outs, layout, OPTS)  # the whole batch at once
    want = [decode(o, layout, (640, 640), OPTS) for o in outs]
    same, err, ulps = _stats(got, want)
    print(
        f"\n[gpu-post] {model}: {len(outs)} images, {sum(len(w) for w in want)} detections, "
        f"identical order {same}/{len(outs)}, max box error {err:.3g} px, max score diff {ulps} ulp"
    )
    for g, w in zip(got, want, strict=True):  # dfl144 too: its exp steps are float64, rounded once
        assert_same(g, w)


@gpu
def test_gpu_edge_cases_equal_the_emulation(runner) -> None:
    assert check_edge_cases(runner) > 512


@gpu
def test_gpu_buffers_grow_only_and_a_smaller_batch_runs_in_a_bigger_plan(runner) -> None:
    outs = model_outputs("yolov10n-synth-raw84")
    want = [decode(o, "raw84", (640, 640), OPTS) for o in outs]
    got = runner.run(outs, "raw84", OPTS, prepare_batch=8)
    ptrs = {k: v.ptr for k, v in runner.post._bufs.items()}
    got2 = runner.run(outs[:1], "raw84", OPTS, prepare_batch=2)  # smaller: nothing reallocated
    assert {k: v.ptr for k, v in runner.post._bufs.items()} == ptrs
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    assert_same(got2[0], want[0])
