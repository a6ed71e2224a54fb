"""One image as the evaluator's loaders hand it on: read + decode (+ letterbox), as its pre-processing mode needs.

The same functions run in the loader threads and in the loader processes (``common.data.procloader``), so
the two give the same arrays.

| mode (``--preprocess``) | ``tensor`` |
|---|---|
| ``cpu`` | float32 CHW, letterboxed and normalised (RGB) |
| ``gpu-normalize`` | the letterboxed BGR uint8 canvas (HWC) |
| ``gpu-letterbox`` | the decoded BGR uint8 image (HWC); with ``--decode gpu`` its file's bytes (``EncodedImage``) |
"""

from __future__ import annotations

import os
import time
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

__all__ = ["LoadedImage", "load_chunk", "load_image", "tensor_bytes"]


@dataclass
class LoadedImage:
    image_id: int
    tensor: Any  # see the module's table
    meta: LetterboxMeta
    seconds: float  # reading, decoding and pre-processing it took


def load_image(
    path: str | os.PathLike[str], image_id: int, size: int, mode: str = "cpu", decode: str = "cpu"
) -> LoadedImage:
    """Image ``image_id`` at ``path`` for pre-processing ``mode`` (UserError naming the file if unreadable)."""
    t0 = time.perf_counter()
    what = f"image id {image_id}"
    if decode == "gpu":  # the file's bytes and its header's size; the lane decodes (gpu-letterbox only)
        from common.data.decode import read_encoded

        tensor = read_encoded(path, what=what)
        meta = letterbox_geometry(tensor.width, tensor.height, size)
    elif mode == "cpu":
        tensor, meta = preprocess(load_image_rgb(path, what=what), size)
    elif mode == "gpu-normalize":
        tensor, meta = letterbox_hwc(load_image_bgr(path, what=what), size)
    else:
        tensor = load_image_bgr(path, what=what)
        meta = letterbox_geometry(tensor.shape[1], tensor.shape[0], size)
    return LoadedImage(image_id, tensor, meta, time.perf_counter() - t0)


def load_chunk(jobs: list[tuple[int, str]], size: int, mode: str = "cpu", decode: str = "cpu") -> list[LoadedImage]:
    """``load_image`` for each ``(image_id, path)`` of ``jobs``, in order (one loader task: fewer hand-offs)."""
    return [load_image(path, image_id, size, mode, decode) for image_id, path in jobs]


def tensor_bytes(mode: str, size: int, width: int, height: int) -> int:
    """Bytes of the array ``load_image`` gives for a ``width`` x ``height`` image in ``mode`` (decode cpu)."""
    if mode == "cpu":
        return 3 * size * size * 4
    if mode == "gpu-normalize":
        return size * size * 3
    return width * height * 3
