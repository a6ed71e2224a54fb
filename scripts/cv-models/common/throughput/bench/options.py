"""The benchmark's options, parsed once from its flags (``bench_eval_throughput.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BenchOptions"]


@dataclass(frozen=True)
class BenchOptions:
    """What every timed section shares.

    ``variants``: the (b) variants to time besides the first (empty: all this machine runs); ``lanes``: the
    sessions of the variants that take ``--lanes``; ``rounds``: times each variant is timed, round by round;
    ``min_seconds``: the least each figure spans; ``trt_api``: also the TensorRT backend of this API;
    ``cuda_options``: CUDA EP options of every GPU session; ``ttm_repeats``: the time to metrics' pairs;
    ``replay_modes``: the capacity's modes (empty: by device)."""

    onnx_path: Path
    workers: int
    lanes: int = 3
    variants: tuple[str, ...] = ()
    rounds: int = 1
    min_seconds: float = 10.0
    skip_sequential: bool = False
    switch_interval_ms: float | None = None
    trt_api: str | None = None
    cuda_options: Mapping[str, str] = field(default_factory=dict)
    ttm_repeats: int = 3
    replay_modes: tuple[str, ...] = ()
