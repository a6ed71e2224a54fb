"""The honest inference-only ceiling: input and output resident on the GPU, no pre- or post-processing, the best
of one session's runs one at a time (serial) and every lane's session at once on its own stream (overlapped);
on a CPU-only machine, ``session.run`` on a prepared batch."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from common.core.results import latency_stats
from common.eval.protocols import Backend

__all__ = ["ResidentTiming", "ceiling", "lane_count"]


@runtime_checkable
class ResidentTiming(Protocol):
    """A backend that times inference alone, input and output resident on the GPU (ONNX Runtime's IO-binding
    lanes): one session's runs one at a time, and every lane's at once; ``metadata`` names its lanes."""

    def resident_run_ms(self, iterations: int, batch: int = 1, warmup: int = 10) -> list[float]: ...

    def resident_overlap_images_per_s(self, iterations: int, batch: int = 1, warmup: int = 10) -> float: ...

    def metadata(self) -> dict[str, Any]: ...


def _serial_ceiling(backend: Backend, batch: int, size: int, min_seconds: float) -> dict[str, Any]:
    """One session's synchronous runs, one after the other: resident IO binding on the GPU, a prepared host
    batch on the CPU. Runs in chunks until the timed runs add up to at least ``min_seconds``."""
    if isinstance(backend, ResidentTiming):
        resident = backend.resident_run_ms
        resident(10, batch=batch, warmup=10)  # warm-up (clocks, allocator, kernels)

        def chunk() -> list[float]:
            return resident(50, batch=batch, warmup=0)

        how = "one session, ORT IO binding, input/output resident on the GPU, synchronous runs one at a time"
    else:
        x = np.zeros((batch, 3, size, size), np.float32)
        backend.infer(x)

        def chunk() -> list[float]:
            out = []
            for _ in range(5):
                t0 = time.perf_counter()
                backend.infer(x)
                out.append((time.perf_counter() - t0) * 1000)
            return out

        how = "session.run on a prepared host batch"
    ms: list[float] = []
    while sum(ms) < min_seconds * 1000:
        ms.extend(chunk())
    stats = latency_stats([m / 1000 for m in ms], items_per_sample=batch)
    return {"images_per_s": stats["throughput_fps"], "latency": stats, "method": how, "seconds": sum(ms) / 1000}


def lane_count(backend: Any) -> int:
    """The lanes of a backend whose lanes can run resident at once (0: one without, e.g. TensorRT's)."""
    if not isinstance(backend, ResidentTiming):
        return 0
    meta = backend.metadata()
    if meta.get("lane_threads") == "main":  # one thread runs its lanes one after the other
        return 0
    return int(meta.get("lanes") or 1)


def _overlap_ceiling(backend: ResidentTiming, lanes: int, batch: int, min_seconds: float) -> dict[str, Any]:
    """Every one of the ``lanes`` sessions of ``backend`` running resident synchronous runs at once, each on
    its own stream."""
    overlapped = backend.resident_overlap_images_per_s
    first = overlapped(20, batch=batch, warmup=10)
    runs = max(20, math.ceil(min_seconds * first / (lanes * batch)))
    t0 = time.perf_counter()
    ips = overlapped(runs, batch=batch, warmup=0)
    how = f"{lanes} sessions (the lanes), ORT IO binding, resident, synchronous runs on their streams at once"
    return {"images_per_s": ips, "method": how, "seconds": time.perf_counter() - t0, "lanes": lanes}


def ceiling(backend: Backend, batch: int, size: int, min_seconds: float, others: Sequence[Any] = ()) -> dict[str, Any]:
    """The honest inference-only ceiling: the best of the configurations we can run, serial (one session,
    one batch at a time) and overlapped (every lane at once, once per lane count among ``backend`` and
    ``others``, the other backends the run times); ``best`` says which, ``images_per_s`` is its.
    ``overlap`` is the best overlapped figure, ``overlap_by_lanes`` each lane count's."""
    serial = _serial_ceiling(backend, batch, size, min_seconds)
    first_of: dict[int, Any] = {}
    for b in (backend, *others):
        first_of.setdefault(lane_count(b), b)
    by_lanes = {n: _overlap_ceiling(b, n, batch, min_seconds) for n, b in first_of.items() if n}
    overlap = max(by_lanes.values(), key=lambda c: c["images_per_s"], default=None)
    best = "overlap" if overlap is not None and overlap["images_per_s"] > serial["images_per_s"] else "serial"
    chosen = overlap if best == "overlap" and overlap is not None else serial
    return {
        "images_per_s": chosen["images_per_s"],
        "best": best,
        "method": chosen["method"],
        "serial": serial,
        "overlap": overlap,
        "overlap_by_lanes": {str(k): v for k, v in sorted(by_lanes.items())},
    }
