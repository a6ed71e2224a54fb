"""One image as the evaluator's loaders hand it on: read + decode (+ letterbox), as its pre-processing mode needs,
and the default loaders: ``ThreadLoaders`` (a thread pool, or inline with 0 workers).

The same functions run in the loader threads and in the loader processes
(``common.throughput.loader_processes``), so the two give the same arrays.

| mode (``--preprocess``) | ``tensor`` |
|---|---|
| ``cpu`` | float32 CHW, letterboxed and normalised (RGB) |
| ``gpu-normalize`` | the letterboxed BGR uint8 canvas (HWC) |
| ``gpu-letterbox`` | the decoded BGR uint8 image (HWC); with ``--decode gpu`` its file's bytes (``EncodedImage``) |
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.data.images import (
    LetterboxMeta,
    letterbox_geometry,
    letterbox_hwc,
    load_image_bgr,
    load_image_rgb,
    preprocess,
)

__all__ = [
    "ChunkFn",
    "InlineExecutor",
    "LoadedImage",
    "ThreadLoaders",
    "load_chunk",
    "load_image",
    "tensor_bytes",
    "thread_loaders",
]


@dataclass
class LoadedImage:
    image_id: int
    tensor: Any  # see the module's table
    meta: LetterboxMeta
    seconds: float  # reading, decoding and pre-processing it took


def load_image(path: str | os.PathLike[str], image_id: int, size: int, mode: str = "cpu") -> LoadedImage:
    """Image ``image_id`` at ``path`` for pre-processing ``mode`` (UserError naming the file if unreadable)."""
    t0 = time.perf_counter()
    what = f"image id {image_id}"
    if mode == "cpu":
        tensor, meta = preprocess(load_image_rgb(path, what=what), size)
    elif mode == "gpu-normalize":
        tensor, meta = letterbox_hwc(load_image_bgr(path, what=what), size)
    else:
        tensor = load_image_bgr(path, what=what)
        meta = letterbox_geometry(tensor.shape[1], tensor.shape[0], size)
    return LoadedImage(image_id, tensor, meta, time.perf_counter() - t0)


def load_chunk(jobs: list[tuple[int, str]], size: int, mode: str = "cpu", decode: str = "cpu") -> list[LoadedImage]:
    """``load_image`` for each ``(image_id, path)`` of ``jobs``, in order (one loader task: fewer hand-offs).
    ``decode`` is ``cpu`` here (OpenCV); a device-decoding loader passes a chunk function of its own."""
    return [load_image(path, image_id, size, mode) for image_id, path in jobs]


# A loader task: (jobs, size, mode, decode) -> the loaded images in order (``load_chunk``'s signature).
ChunkFn = Callable[[list[tuple[int, str]], int, str, str], list[LoadedImage]]


class InlineExecutor:
    """An executor that runs each task at once in the caller's thread (the sequential path)."""

    def submit(self, fn: Any, *args: Any) -> cf.Future[Any]:
        fut: cf.Future[Any] = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class ThreadLoaders:
    """``workers`` threads (0: inline, in the caller's thread), each loading one chunk at a time with
    ``chunk_fn`` (default ``load_chunk``: OpenCV)."""

    def __init__(
        self, workers: int, size: int, mode: str = "cpu", decode: str = "cpu", chunk_fn: ChunkFn = load_chunk
    ) -> None:
        self.size, self.mode, self.decode, self.chunk_fn = size, mode, decode, chunk_fn
        self._ex: Any = cf.ThreadPoolExecutor(workers, thread_name_prefix="load") if workers > 0 else InlineExecutor()

    start_seconds = 0.0

    def ready(self) -> float:
        return 0.0

    def load(self, jobs: list[tuple[int, str]]) -> cf.Future[list[LoadedImage]]:
        return self._ex.submit(self.chunk_fn, jobs, self.size, self.mode, self.decode)

    def close(self) -> None:
        self._ex.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ThreadLoaders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def thread_loaders(plan: Any) -> ThreadLoaders:
    """The default ``LoaderFactory`` (``common.eval.protocols``): OpenCV in ``plan.workers`` threads."""
    return ThreadLoaders(plan.workers, plan.size, plan.mode, plan.decode)


def tensor_bytes(mode: str, size: int, width: int, height: int) -> int:
    """Bytes of the array ``load_image`` gives for a ``width`` x ``height`` image in ``mode`` (decode cpu)."""
    if mode == "cpu":
        return 3 * size * size * 4
    if mode == "gpu-normalize":
        return size * size * 3
    return width * height * 3
