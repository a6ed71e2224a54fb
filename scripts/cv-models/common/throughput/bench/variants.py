"""The variants the benchmark times: each a set of evaluator flags made into a backend (``make_backends``),
started while the GPU's memory allows (``GpuMemoryPlan``). The first, ``eval-onnx-defaults``, is what
eval-onnx runs with no flags on a machine with a CUDA device."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.core.errors import UserError
from common.eval.protocols import Backend
from common.ort.options import CUDA_EP
from common.ort.session import OrtBackend
from common.throughput.bench.modes import DEFAULTS_MODE, HAS_GPU_DECODE, HAS_GPU_POST, enable_mode

__all__ = [
    "DEFAULTS_VARIANT",
    "GPU_MEMORY_SHARE",
    "GPU_VARIANTS",
    "KNOWN_VARIANTS",
    "GpuMemoryPlan",
    "compile_post_kernels",
    "gpu_available",
    "gpu_free",
    "make_backends",
    "make_trt_backends",
    "make_variant",
    "variant_lanes",
    "variant_spec",
]

# (b) variants on a GPU, in order (the first is the one we recommend): name -> (lanes, --preprocess,
# --gpu-order[+nograph][+sleep]); lanes 0 = a plain ORT CUDA session (session.run on host arrays), -1 = --lanes.
# IO-binding lanes replay a CUDA graph where ORT can capture one (eval-onnx --io-binding's default);
# "+nograph": per-kernel ORT runs (--provider-option CUDAExecutionProvider:enable_cuda_graph=0); "+sleep":
# --lane-wait sleep; "+depth1": each lane's thread waits for its batch before it enqueues the next (no twins);
# "+main": --lane-threads main.
GPU_POST_VARIANTS: dict[str, tuple[int, str, str]] = {
    "ort-cuda-iobinding-gpu-letterbox-gpu-post": (-1, "gpu-letterbox+gpu-post", "auto"),
    "ort-cuda-iobinding-gpu-letterbox-gpu-post-serial": (-1, "gpu-letterbox+gpu-post", "serial"),
    "ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap": (-1, "gpu-letterbox+gpu-post", "overlap"),
    "ort-cuda-iobinding-gpu-letterbox-gpu-post-procs": (-1, "gpu-letterbox+gpu-post+procs", "auto"),
    "ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap-procs": (-1, "gpu-letterbox+gpu-post+procs", "overlap"),
}
GPU_NOGRAPH_VARIANTS: dict[str, tuple[int, str, str]] = {
    "ort-cuda-iobinding-nograph-gpu-letterbox-gpu-post": (-1, "gpu-letterbox+gpu-post", "auto+nograph"),
}
GPU_DECODE_VARIANTS: dict[str, tuple[int, str, str]] = {
    "ort-cuda-iobinding-gpu-decode-gpu-letterbox-gpu-post": (-1, "gpu-letterbox+gpu-post+gpu-decode", "auto"),
}
# what eval-onnx with no flags runs on a GPU machine (--io-binding auto -> lanes, --preprocess/--postprocess auto)
DEFAULTS_VARIANT = "eval-onnx-defaults"
GPU_VARIANTS: dict[str, tuple[int, str, str]] = {
    DEFAULTS_VARIANT: (-1, DEFAULTS_MODE, "auto"),
    f"{DEFAULTS_VARIANT}-sleep-wait": (-1, DEFAULTS_MODE, "auto+sleep"),
    f"{DEFAULTS_VARIANT}-depth1": (-1, DEFAULTS_MODE, "auto+depth1"),
    f"{DEFAULTS_VARIANT}-main-thread": (-1, DEFAULTS_MODE, "auto+main"),
    **(GPU_POST_VARIANTS if HAS_GPU_POST else {}),
    **(GPU_NOGRAPH_VARIANTS if HAS_GPU_POST else {}),
    **(GPU_DECODE_VARIANTS if HAS_GPU_POST and HAS_GPU_DECODE else {}),
    "ort-cuda-iobinding-gpu-normalize": (-1, "gpu-normalize", "auto"),
    "ort-cuda-iobinding-gpu-letterbox": (-1, "gpu-letterbox", "auto"),
    "ort-cuda-iobinding": (-1, "cpu", "auto"),
    "ort-cuda-iobinding-1lane": (1, "cpu", "auto"),
    "ort-cuda-plain": (0, "cpu", "auto"),
}
# every name --variants may give; those this machine can't run (on a CPU: all but ort-cpu) are left out of the run
KNOWN_VARIANTS = [*GPU_VARIANTS, *GPU_POST_VARIANTS, *GPU_NOGRAPH_VARIANTS, *GPU_DECODE_VARIANTS, "ort-cpu"]
# besides: eval-onnx-defaults-lanes-N[-main-thread] for any N >= 1 (the no-flag run with --lanes N [--lane-threads
# main])
LANES_VARIANT = re.compile(rf"{re.escape(DEFAULTS_VARIANT)}-lanes-([1-9][0-9]*)(-main-thread)?")


def variant_spec(name: str) -> tuple[int, str, str] | None:
    """(lanes, --preprocess, --gpu-order...) of a GPU variant ``name``, or None for a name no GPU runs."""
    if name in GPU_VARIANTS:
        return GPU_VARIANTS[name]
    m = LANES_VARIANT.fullmatch(name)
    return (int(m.group(1)), DEFAULTS_MODE, "auto+main" if m.group(2) else "auto") if m else None


def variant_lanes(name: str, lanes: int) -> int:
    """The sessions variant ``name`` runs (``lanes``, the benchmark's ``--lanes``, for the -1 entries; one for a
    plain session)."""
    n_lanes = variant_spec(name)[0]  # type: ignore[index]  # a GPU variant
    return 1 if n_lanes == 0 else (lanes if n_lanes < 0 else n_lanes)


def gpu_available(force_cpu: bool) -> bool:
    """ONNX Runtime's CUDA EP is there, and ``--cpu`` was not asked for."""
    import onnxruntime as ort

    return not force_cpu and CUDA_EP in ort.get_available_providers()


# of the GPU memory free before the first variant starts, what the variants may take together (ORT's arenas
# and cuDNN's workspaces live on after each run; past the card's memory, cuDNN and ORT fail or crash)
GPU_MEMORY_SHARE = 0.8


class GpuMemoryPlan:
    """Which variants start, by GPU memory: each is counted at its lanes times the first variant's measured
    footprint per lane, since the arenas of per-kernel sessions grow during the runs, after start-up, so
    what is free when a variant starts says too little. ``refuse`` says why a variant does not fit; ``take``
    counts one that started."""

    def __init__(self, free_before: int, lanes: int, free_after: int, share: float = GPU_MEMORY_SHARE) -> None:
        self.used = max(0, free_before - free_after)
        self.per_lane = self.used / max(1, lanes)
        self.budget = free_before * share

    def refuse(self, name: str, lanes: int) -> str | None:
        need = max(1, lanes) * self.per_lane
        if self.used + need <= self.budget:
            return None
        gib = 1 << 30
        return (
            f"not started: about {need / gib:.1f} GiB of GPU memory more than the {self.budget / gib:.1f} GiB "
            f"the variants may share ({self.used / gib:.1f} GiB taken); time it with fewer: --variants {name}"
        )

    def take(self, lanes: int) -> None:
        self.used += max(1, lanes) * self.per_lane


def make_variant(
    onnx: Path, name: str, batch: int, lanes: int, cuda_opts: Mapping[str, str] | None = None
) -> tuple[Backend, str]:
    """The backend of GPU variant ``name`` (``GPU_VARIANTS`` or eval-onnx-defaults-lanes-N) on ``lanes`` sessions
    (``variant_lanes``), set up for its mode; and the mode. ``cuda_opts``: CUDA EP options for every session
    (``--provider-option``)."""
    from common.throughput.ort_lanes import OrtCudaBackend

    n_lanes, prep, order = variant_spec(name)  # type: ignore[misc]  # a GPU variant
    order, *extras = order.split("+")
    options = {CUDA_EP: dict(cuda_opts)} if cuda_opts else None
    if n_lanes == 0:
        plain = OrtBackend(str(onnx), [CUDA_EP], options, require_accelerator=True, intra_op_threads=1)
        return plain, prep
    backend = OrtCudaBackend(
        str(onnx),
        options,
        max_batch=batch,
        lanes=lanes,
        gpu_order=order,
        graph="off" if "nograph" in extras else "auto",
        spin_wait="sleep" not in extras,
        lane_depth=1 if "depth1" in extras else None,
        lane_threads="main" if "main" in extras else "per-lane",
    )
    try:
        enable_mode(backend, prep)
    except BaseException:
        backend.close()
        raise
    return backend, prep


def compile_post_kernels() -> float | None:
    """Compile the GPU post-processing kernels (once per process): their seconds, or None where they can't be
    (the variants that need them then say why). Done before the variants start, so that no variant's start-up
    holds it."""
    if not HAS_GPU_POST:
        return None
    t0 = time.perf_counter()
    try:
        from common.throughput.gpu_postprocess import postprocess_kernels

        postprocess_kernels(0)
    except Exception:
        return None
    return time.perf_counter() - t0


def gpu_free() -> int | None:
    """Free bytes on the GPU now, or None where that can't be asked."""
    try:
        from common.gpu.cuda_mem import memory_left

        return memory_left()[0]
    except Exception:
        return None


def make_backends(
    onnx: Path,
    batch: int,
    gpu: bool,
    lanes: int,
    wanted: Sequence[str] | None,
    starts: dict[str, float] | None = None,
    cuda_opts: Mapping[str, str] | None = None,
) -> tuple[dict[str, tuple[Backend, str]], dict[str, str]]:
    """name -> (backend, preprocess mode) to compare (first = the one we recommend), and the ones
    that failed to start or did not fit the GPU's memory (``GpuMemoryPlan``). ``starts`` gets each backend's
    start-up seconds (sessions, CUDA graph capture, GPU pre/post set-up); ``cuda_opts``: ``make_variant``'s."""
    starts = {} if starts is None else starts
    if not gpu:
        t0 = time.perf_counter()
        cpu = OrtBackend(str(onnx), ["CPUExecutionProvider"])
        starts["ort-cpu"] = time.perf_counter() - t0
        return {"ort-cpu": (cpu, "cpu")}, {}
    names = list(GPU_VARIANTS)
    if wanted:
        names = [n for n in names if n == names[0] or n in wanted or n == "ort-cuda-plain"]
        names += [n for n in dict.fromkeys(wanted) if n not in GPU_VARIANTS and variant_spec(n) is not None]
    out: dict[str, tuple[Backend, str]] = {}
    failed: dict[str, str] = {}
    plan: GpuMemoryPlan | None = None
    for name in names:
        n_lanes = variant_lanes(name, lanes)
        if plan is not None and (why := plan.refuse(name, n_lanes)) is not None:
            failed[name] = why
            continue
        free_before, t0 = (gpu_free() if not out else None), time.perf_counter()
        try:
            out[name] = make_variant(onnx, name, batch, n_lanes, cuda_opts)
            starts[name] = time.perf_counter() - t0
        except Exception as exc:  # one broken variant must not hide the others
            failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        if plan is not None:
            plan.take(n_lanes)
        elif free_before is not None and (free_after := gpu_free()) is not None:
            plan = GpuMemoryPlan(free_before, n_lanes, free_after)
    if not out:
        raise UserError(f"no GPU backend could start: {failed}")
    return out, failed


def make_trt_backends(onnx: Path, batch: int, api_name: str, gpu: bool, dynamic: bool) -> dict[str, tuple[Any, str]]:
    """The TensorRT backend on an engine built from ``onnx`` (or reused from the engine cache under tmp/):
    CPU pre-processing, and GPU letterboxing on a GPU."""
    from common.throughput.trt_lanes import TrtBackend
    from common.trt.api import load_backend
    from common.trt.build import BuildOptions, build_or_reuse

    api = load_backend(api_name)
    built = build_or_reuse(
        onnx, None, BuildOptions(max_batch=batch) if dynamic else BuildOptions(), api, verbosity="error"
    )
    out: dict[str, tuple[Any, str]] = {api.name: (TrtBackend.open(built.engine_path, api), "cpu")}
    if gpu:
        out[f"{api.name}-gpu-letterbox"] = (TrtBackend.open(built.engine_path, api), "gpu-letterbox")
        if HAS_GPU_POST:
            out[f"{api.name}-gpu-letterbox-gpu-post"] = (
                TrtBackend.open(built.engine_path, api),
                "gpu-letterbox+gpu-post",
            )
    return out
