"""The Backend protocol: the one seam between the evaluation pipeline and a runtime.

The pipeline only ever calls ``backend.infer(batch)`` with a float32 NCHW batch and
gets back the model outputs as host NumPy arrays, in ``output_names`` order. ONNX
Runtime (this module) and TensorRT (``common.trt_runtime``) implement it; the
evaluators differ only in which backend object they construct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a model input or output.

    ``shape`` holds ints for static axes and ``None`` for dynamic ones.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))

    @property
    def batch_dynamic(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] is None

    @property
    def spatial(self) -> tuple[int | None, int | None] | None:
        """(H, W) of an NCHW input, or None for other ranks."""
        return (self.shape[2], self.shape[3]) if len(self.shape) == 4 else None


@runtime_checkable
class Backend(Protocol):
    """What the pipeline needs from a runtime."""

    name: str  # e.g. "onnxruntime", "tensorrt", "tensorrt-rtx"

    @property
    def input(self) -> TensorSpec: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one batch (float32 NCHW, C-contiguous) and return host outputs."""
        ...

    def metadata(self) -> dict[str, Any]:
        """Backend facts for metrics.json (versions, providers, engine info...)."""
        ...

    def close(self) -> None: ...


def max_batch_of(backend: Backend) -> int | None:
    """The batch size a backend accepts: None when the batch axis is dynamic."""
    first = backend.input.shape[0] if backend.input.shape else 1
    return None if first is None else int(first)
