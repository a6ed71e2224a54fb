"""The fast path by default: what ``--io-binding auto`` / ``--preprocess auto`` resolve to, on a faked
"CUDA device + CUDA EP" machine (the lanes, the GPU letterbox and the GPU post-processing on their host
doubles) and on this CPU-only one, where nothing changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trt_double as D
from conftest import DEMO_MODEL, MINI

from common.core.errors import UserError
from common.eval.fast_path import CUDA_EP, GpuFacts, resolve_io_binding

DEFAULT = ("TensorrtExecutionProvider", CUDA_EP, "CPUExecutionProvider")
GPU = GpuFacts(cuda_ep=True, cuda_devices=1)


@pytest.mark.parametrize(
    ("mode", "providers", "given", "facts", "plain", "lanes", "why"),
    [
        ("auto", DEFAULT, False, GPU, [], True, "CUDAExecutionProvider and a CUDA device"),
        ("auto", (CUDA_EP, "CPUExecutionProvider"), True, GPU, [], True, "a CUDA device"),
        ("auto", DEFAULT, False, GpuFacts(False, 0), [], False, "offers no CUDAExecutionProvider"),
        ("auto", DEFAULT, False, GpuFacts(True, 0), [], False, "no CUDA device"),
        ("auto", DEFAULT, True, GPU, [], False, "--providers leads with TensorrtExecutionProvider"),
        ("auto", ("CPUExecutionProvider",), True, GPU, [], False, "--providers leads with CPUExecutionProvider"),
        ("auto", DEFAULT, False, GPU, ["--intra-op-threads"], False, "plain-session settings given"),
        ("off", DEFAULT, False, GPU, [], False, "--io-binding off"),
        ("on", DEFAULT, False, GpuFacts(False, 0), [], True, "--io-binding on"),
        ("on", (CUDA_EP,), True, GPU, ["--intra-op-threads"], True, "--io-binding on"),
    ],
)
def test_io_binding_resolution(mode, providers, given, facts, plain, lanes, why) -> None:
    path = resolve_io_binding(mode, providers, given, facts, plain)
    assert path.io_binding is lanes and why in path.why and path.requested == mode
    assert path.providers == ((CUDA_EP,) if lanes else tuple(providers))


def test_io_binding_on_with_providers_the_lanes_cannot_drive_is_refused() -> None:
    with pytest.raises(UserError, match="put CUDAExecutionProvider first in --providers"):
        resolve_io_binding("on", ("CPUExecutionProvider",), True, GPU)
    with pytest.raises(UserError, match="--io-binding sideways: choose one of auto, on, off"):
        resolve_io_binding("sideways", DEFAULT, False, GPU)


def _fake_gpu_machine(monkeypatch, devices: int = 1, lanes_fail: bool = False) -> D.FakeCudaMemory:
    """This process as a machine with a CUDA device and ORT's CUDA EP: the lanes' sessions are CPU sessions
    behind IO binding on host "device" memory, the letterbox and post-processing kernels their host doubles."""
    import eval_yolov10m_onnx_coco as script
    from post_double import FakePostprocessKernels
    from test_gpu_lanes import _FakeIoSession

    from common.eval import fast_path
    from common.ort.session import OrtBackend
    from common.throughput import gpu_postprocess, gpu_preprocess, ort_lanes

    mem = D.FakeCudaMemory()

    def lane_session(path, providers, options, **kwargs):
        assert providers == [CUDA_EP], "double: the lanes run on the CUDA EP alone"
        if lanes_fail:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        backend = OrtBackend(path, ["CPUExecutionProvider"])
        backend._session = _FakeIoSession(backend._session)
        return backend

    monkeypatch.setattr(script, "available_providers", lambda: [CUDA_EP, "CPUExecutionProvider"])
    monkeypatch.setattr(fast_path, "cuda_device_count", lambda: devices)
    monkeypatch.setattr(ort_lanes, "OrtBackend", lane_session)
    monkeypatch.setattr(ort_lanes, "CudaMemory", lambda device_id: mem)
    monkeypatch.setattr(gpu_preprocess, "GpuPreprocessor", lambda device_id: D.FakeGpuPreprocessor(mem))
    monkeypatch.setattr(gpu_postprocess, "postprocess_kernels", lambda device_id: FakePostprocessKernels(mem))
    return mem


def _main(tmp_path: Path, name: str, *flags: str) -> tuple[dict, list]:
    import eval_yolov10m_onnx_coco as script

    out, dets = tmp_path / f"{name}.json", tmp_path / f"{name}-detections.json"
    args = ["--onnx-path", str(DEMO_MODEL), "--data-root", str(MINI), "--max-images", "6", "--workers", "2"]
    args += ["--no-progress", "--warmup-runs", "1", "--out", str(out), "--detections-out", str(dets), *flags]
    assert script.main(args) == 0
    return json.loads(out.read_text()), json.loads(dets.read_text())


def test_no_flags_on_a_gpu_machine_run_the_fast_path_with_the_references_detections(monkeypatch, tmp_path) -> None:
    """No flags, CUDA EP + a CUDA device: IO-binding lanes, GPU letterbox, GPU post-processing, the same
    detections and stats as the CPU reference path; metrics.json says which path ran and why."""
    ref, ref_dets = _main(tmp_path, "ref", "--providers", "CPUExecutionProvider")
    mem = _fake_gpu_machine(monkeypatch)
    got, got_dets = _main(tmp_path, "fast")
    fast = got["run"]["fast_path"]
    assert fast["io_binding"] is True and fast["io_binding_requested"] == "auto"
    assert fast["providers"] == [CUDA_EP] and "a CUDA device" in fast["io_binding_why"]
    assert (fast["preprocess"], fast["preprocess_requested"]) == ("gpu-letterbox", "auto")
    assert (fast["postprocess"], fast["postprocess_requested"]) == ("gpu", "auto")
    assert got["run"]["backend"]["backend"] == "onnxruntime-cuda-iobinding"
    assert (
        got["run"]["backend"]["preprocess"] == "gpu-letterbox" and got["timings"]["preprocess_mode"] == "gpu-letterbox"
    )
    assert got_dets == ref_dets and got["metrics"] == ref["metrics"]
    assert got["run"]["backend"]["lane_wait"] == "spin"  # CUDA's default wait: the batch is picked up soonest
    assert mem.live == 0


def test_explicit_flags_win_over_auto_on_a_gpu_machine(monkeypatch, tmp_path) -> None:
    _fake_gpu_machine(monkeypatch)
    got, _ = _main(tmp_path, "off", "--io-binding", "off", "--providers", "CPUExecutionProvider")
    assert got["run"]["fast_path"]["io_binding"] is False and got["run"]["fast_path"]["io_binding_why"] == (
        "--io-binding off"
    )
    assert got["timings"]["preprocess_mode"] == "cpu" and "host arrays" in got["timings"]["preprocess_fallback"]
    got, _ = _main(tmp_path, "cpu-prep", "--preprocess", "cpu", "--postprocess", "cpu")
    assert got["run"]["fast_path"]["io_binding"] is True
    assert (got["timings"]["preprocess_mode"], got["timings"]["postprocess_mode"]) == ("cpu", "cpu")
    assert got["timings"]["preprocess_fallback"] is None
    got, _ = _main(tmp_path, "sleep", "--lane-wait", "sleep")
    assert got["run"]["backend"]["lane_wait"] == "sleep"
    for depth in (1, 2):  # the lanes overlap at batch 1 here, so an explicit depth is what runs
        got, _ = _main(tmp_path, f"depth{depth}", "--lane-depth", str(depth))
        assert got["run"]["backend"]["lane_depth"] == depth
        lanes = got["run"]["backend"]["lanes"]
        assert got["run"]["backend"]["in_flight"] == lanes * depth + 1 + lanes  # overlapped: one more queued per lane


def test_lanes_auto_chose_but_cannot_start_leave_the_plain_session(monkeypatch, tmp_path) -> None:
    _fake_gpu_machine(monkeypatch, lanes_fail=True)
    got, _ = _main(tmp_path, "fallback", "--providers", CUDA_EP, "CPUExecutionProvider")
    fast = got["run"]["fast_path"]
    assert fast["io_binding"] is False and "CUDA failure 100" in fast["io_binding_why"]
    assert fast["preprocess"] == "cpu" and fast["postprocess"] == "cpu"


def test_io_binding_on_whose_lanes_cannot_start_is_one_line(monkeypatch, tmp_path) -> None:
    import eval_yolov10m_onnx_coco as script

    _fake_gpu_machine(monkeypatch, lanes_fail=True)
    args = ["--onnx-path", str(DEMO_MODEL), "--data-root", str(MINI), "--max-images", "2", "--io-binding"]
    with pytest.raises(RuntimeError, match="CUDA failure 100"):
        script.main([*args, "--out", str(tmp_path / "m.json")])
    assert not (tmp_path / "m.json").exists()


def test_a_cpu_only_machine_keeps_the_plain_path(tmp_path) -> None:
    """A machine without the CUDA EP or a CUDA device (CI): no flags give the plain session, OpenCV letterbox and
    NumPy post-processing, with exactly the detections of the explicit reference flags."""
    import onnxruntime as ort

    from common.eval.fast_path import probe_gpu

    if probe_gpu(ort.get_available_providers()).cuda_devices > 0:
        pytest.skip("this machine has the CUDA EP and a CUDA device (the faked GPU-machine tests cover it)")
    got, got_dets = _main(tmp_path, "plain")
    ref, ref_dets = _main(
        tmp_path,
        "ref",
        "--io-binding",
        "off",
        "--preprocess",
        "cpu",
        "--postprocess",
        "cpu",
        "--providers",
        "CPUExecutionProvider",
    )
    fast = got["run"]["fast_path"]
    assert fast["io_binding"] is False and fast["io_binding_requested"] == "auto"
    assert (fast["preprocess"], fast["postprocess"]) == ("cpu", "cpu")
    assert got_dets == ref_dets and got["metrics"] == ref["metrics"]


def test_preprocess_auto_resolves_against_the_backend() -> None:
    """``auto``: gpu-letterbox on a backend with device input buffers, cpu (and why) on one without or where
    the kernel can't be set up; ``--decode gpu`` needs gpu-letterbox."""
    from common.eval.modes import resolve_preprocess

    class Host:
        name = "host-arrays"

    class Device:
        name = "device"

        def __init__(self, fail: bool = False) -> None:
            self.fail, self.modes = fail, []

        def enable_device_preprocess(self, mode: str) -> None:
            if self.fail:
                raise RuntimeError("NVRTC: libnvrtc.so not found\nmore")
            self.modes.append(mode)

    assert resolve_preprocess(Host(), "auto") == ("cpu", "host-arrays takes host arrays")
    dev = Device()
    assert resolve_preprocess(dev, "auto") == ("gpu-letterbox", None) and dev.modes == ["gpu-letterbox"]
    assert resolve_preprocess(Device(fail=True), "auto") == ("cpu", "NVRTC: libnvrtc.so not found")
    assert resolve_preprocess(Host(), "cpu") == ("cpu", None)
    with pytest.raises(UserError, match="--preprocess gpu-letterbox needs a backend with GPU input buffers"):
        resolve_preprocess(Host(), "gpu-letterbox")
    with pytest.raises(UserError, match="--decode gpu needs a backend that decodes on its GPU lanes"):
        resolve_preprocess(Host(), "auto", "gpu")
