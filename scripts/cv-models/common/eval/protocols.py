"""What the evaluation pipeline may ask of a backend, stated as small protocols.

Every backend is a ``Backend``: input/output specs, ``infer(batch)``, ``metadata()``, ``close()``.
Anything more is an optional capability the pipeline asks for with ``isinstance``:

- ``AsyncBackend``: ``submit(batch) -> token`` and ``wait(token) -> outputs``, ``max_in_flight`` deep;
- ``DevicePreprocessing``: ``enable_device_preprocess(mode)``, then it takes ``U8Batch`` too;
- ``DeviceDecoding``: ``enable_device_decode("gpu")`` (after ``gpu-letterbox``), then its ``U8Batch`` come
  encoded and it decodes them on its device (``--decode gpu``);
- ``DevicePostprocessing``: ``enable_device_postprocess(layout, input_hw, opts)``, then its outputs are
  ``[GpuDetections]`` (final rows in letterbox pixels, <= max_det per image) instead of head tensors;
- ``Warmup``: ``warmup(batch, runs)`` warms everything it owns (e.g. every lane's session);
- ``LaneTiming``: ``gpu_ms`` (CUDA-event time of each batch's own work on its lane) and
  ``latency_runs(batch, runs)`` (back-to-back single-batch runs on one lane, nothing else in flight).

The protocols are structural: a backend matches by having the members, it never inherits.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, Union, runtime_checkable

import numpy as np

from common.data.images import LetterboxMeta
from common.model.yolov10 import Detections

__all__ = [
    "AsyncBackend",
    "Backend",
    "Batch",
    "DeviceDecoding",
    "DevicePostprocessing",
    "DevicePreprocessing",
    "GpuDetections",
    "LaneTiming",
    "LoaderFactory",
    "LoaderPlan",
    "Loaders",
    "TensorSpec",
    "U8Batch",
    "Warmup",
    "max_batch_of",
]


@dataclass
class U8Batch:
    """A batch handed to a ``DevicePreprocessing`` backend, which letterboxes / normalises it on its device.

    ``gpu-normalize``: ``images`` are letterboxed BGR canvases [S, S, 3] uint8.
    ``gpu-letterbox``: ``images`` are decoded BGR images [H, W, 3] uint8 of any size; with ``decode``
    ``gpu`` they are still encoded (a ``DeviceDecoding`` backend decodes them).
    """

    mode: str
    images: list[Any]
    metas: list[LetterboxMeta]
    size: int
    decode: str = "cpu"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.images), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class GpuDetections:
    """What a ``DevicePostprocessing`` backend returns for a batch: ``rows[j, :counts[j]]`` = x1, y1, x2, y2,
    score, class (float32, letterbox pixels), at most ``max_det`` rows per image."""

    rows: np.ndarray  # [B, max_det, 6] float32
    counts: np.ndarray  # [B] int32

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def image(self, j: int) -> Detections:
        r = self.rows[j, : int(self.counts[j])]
        return Detections(r[:, :4].copy(), r[:, 4].copy(), r[:, 5].astype(np.int64))

    def detections(self) -> list[Detections]:
        return [self.image(j) for j in range(len(self))]


# float32 NCHW (C-contiguous) from the CPU pre-processing, or uint8 images for a backend that
# letterboxes / normalises on its device (after ``enable_device_preprocess``).
Batch: TypeAlias = Union[np.ndarray, U8Batch]  # noqa: UP007 (a runtime alias: works on Python 3.10)


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
    """What every backend has; the pipeline needs nothing else."""

    name: str  # e.g. "onnxruntime", "onnxruntime-cuda-iobinding", "tensorrt", "tensorrt-rtx"

    @property
    def input(self) -> TensorSpec: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    def infer(self, batch: Batch) -> list[np.ndarray]:
        """Run one batch and return the host outputs in ``outputs`` order.

        A ``U8Batch`` only reaches a backend that is ``DevicePreprocessing`` and was enabled.
        """
        ...

    def metadata(self) -> dict[str, Any]:
        """Backend facts for metrics.json (versions, providers, engine info...)."""
        ...

    def close(self) -> None: ...


def max_batch_of(backend: Backend) -> int | None:
    """The batch size a backend accepts: None when the batch axis is dynamic."""
    first = backend.input.shape[0] if backend.input.shape else 1
    return None if first is None else int(first)


@runtime_checkable
class AsyncBackend(Backend, Protocol):
    """A backend that runs several batches at once: the pipeline keeps ``max_in_flight`` submitted."""

    max_in_flight: int

    def submit(self, batch: Batch) -> Any:
        """Start ``batch``; return a token for ``wait``."""
        ...

    def wait(self, token: Any) -> list[np.ndarray]:
        """The outputs of the batch that ``submit`` returned ``token`` for."""
        ...


@runtime_checkable
class DevicePreprocessing(Protocol):
    """A backend that takes uint8 batches and letterboxes / normalises them on its own stream."""

    def enable_device_preprocess(self, mode: str) -> None:
        """Accept ``U8Batch`` of ``mode`` (``common.eval.options.PREPROCESS_MODES``) from now on; UserError if it
        can't."""
        ...


@runtime_checkable
class DeviceDecoding(Protocol):
    """A backend that decodes the JPEGs of a gpu-letterbox batch on its own stream (nvImageCodec)."""

    def enable_device_decode(self, decode: str) -> None:
        """``gpu``: take encoded ``U8Batch`` from now on; ``cpu``: decoded ones. UserError if it can't."""
        ...


@runtime_checkable
class Warmup(Protocol):
    """A backend with its own warm-up (several sessions or lanes to warm, not just one ``infer``)."""

    def warmup(self, batch: int, runs: int) -> None: ...


@runtime_checkable
class DevicePostprocessing(Protocol):
    """A backend that post-processes on its own device and copies back only the final detections: after
    ``enable_device_postprocess`` its ``infer`` / ``wait`` return one ``GpuDetections`` instead of the head
    tensors."""

    def enable_device_postprocess(self, layout: str, input_hw: tuple[int, int], opts: Any) -> None:
        """Switch to final detections for ``layout``; UserError (and nothing changed) if it can't."""
        ...

    def disable_device_postprocess(self) -> None:
        """Back to head tensors (the CPU path)."""
        ...


@runtime_checkable
class LaneTiming(Protocol):
    """A backend that times each batch's own GPU work (H2D + compute + D2H) with CUDA events on its lane."""

    @property
    def gpu_ms(self) -> list[float]:
        """Lane-event ms of every batch run so far, in completion order."""
        ...

    @property
    def gpu_overlap(self) -> bool:
        """True when batches' GPU work may overlap (a batch's span then includes the others' work)."""
        ...

    def latency_runs(self, batch: Batch, runs: int) -> dict[str, list[float]]:
        """``runs`` back-to-back runs of ``batch`` on one lane: ``{"gpu_ms": [...], "host_ms": [...]}``."""
        ...


@dataclass(frozen=True)
class LoaderPlan:
    """What the evaluation loop asks of its image loaders: ``workers`` of them (0: inline, in the caller's
    thread) loading images for ``size`` and pre-processing ``mode``; ``slots``: images loading or held by
    batches in flight at once; ``dataset``: the images' ``CocoDataset`` (their annotated sizes); ``loaders``:
    the kind the run resolved (``--loaders``)."""

    workers: int
    size: int
    mode: str
    decode: str
    slots: int
    dataset: Any
    loaders: str = "threads"  # threads | processes (``--loaders``, resolved)


class Loaders(Protocol):
    """Image loaders: ``load(jobs)`` loads a chunk of ``(image_id, path)`` into ``common.data.loading.LoadedImage``
    in order. ``ready()`` waits until they can take work (and is not timed); a context manager."""

    start_seconds: float

    def ready(self) -> float: ...

    def load(self, jobs: list[tuple[int, str]]) -> cf.Future[list[Any]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Loaders: ...

    def __exit__(self, *exc: object) -> None: ...


# The evaluation loop makes its loaders through one of these (default: ``common.data.loading.ThreadLoaders``).
LoaderFactory: TypeAlias = Callable[[LoaderPlan], Loaders]
