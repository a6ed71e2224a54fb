"""JPEG decoding on the GPU with NVIDIA nvImageCodec (``--decode gpu``), an optional extra.

``--decode cpu`` (the default) decodes with OpenCV in the loader threads. With ``--decode gpu`` the
loader threads only read each file and parse its header (``read_encoded``: the size, for the letterbox
geometry); each lane decodes its whole batch on its own CUDA stream (``ImageDecoder``), and the batched
letterbox kernel reads the decoded images where they lie in device memory (no copy). Only
``--preprocess gpu-letterbox`` can take them.

nvImageCodec is NVIDIA's decoding library (nvJPEG on the GPU or its hardware JPEG engines, libjpeg-turbo
on the CPU) and the one well-kept Python route to batched GPU decoding: install it with
``pip install 'nvidia-nvimgcodec-cu13[nvjpeg]'`` (``-cu12`` for CUDA 12). Pixels: its CPU backend
(libjpeg-turbo) equals OpenCV's decode bit for bit (tested in CI); nvJPEG on the GPU may differ from
OpenCV by a grey level or so, so AP may move in the last digit. Images whose EXIF orientation swaps their
sides are refused (the letterbox geometry was set from the header).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError

__all__ = [
    "GPU_OPTIONS",
    "INSTALL_HINT",
    "Decoded",
    "EncodedImage",
    "ImageDecoder",
    "import_nvimgcodec",
    "load_encoded_chunk",
    "nvjpeg_missing",
    "read_encoded",
]

# nvJPEG interpolates subsampled chroma as libjpeg-turbo (OpenCV) does by default only when asked to
GPU_OPTIONS = ":fancy_upsampling=1"
INSTALL_HINT = "pip install 'nvidia-nvimgcodec-cu13[nvjpeg]' (CUDA 12: -cu12), or use --decode cpu"


NVJPEG_HINT = "pip install nvidia-nvjpeg-cu13 (CUDA 12: nvidia-nvjpeg-cu12), the nvImageCodec extra [nvjpeg]"
_import_log: list[str] = []  # what nvImageCodec printed while loading its extensions (once per process)


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """File descriptor 2 (native libraries' stderr) into ``path`` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_nvimgcodec() -> Any:
    """The ``nvidia.nvimgcodec`` module; UserError saying how to install it. Its import reports every codec
    library it can't load (JPEG 2000, TIFF: not ours) on stderr: that goes to ``_import_log`` instead, and
    ``nvjpeg_missing`` reads it."""
    if "nvidia.nvimgcodec" in sys.modules and sys.modules["nvidia.nvimgcodec"] is not None:
        return sys.modules["nvidia.nvimgcodec"]
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "stderr")
        try:
            with _stderr_to(log):
                module = importlib.import_module("nvidia.nvimgcodec")
        except ImportError as exc:
            raise UserError(f"--decode gpu needs NVIDIA nvImageCodec ({exc}); {INSTALL_HINT}") from exc
        finally:
            if os.path.exists(log):
                with open(log, encoding="utf-8", errors="replace") as f:
                    _import_log.append(f.read())
    return module


def nvjpeg_missing() -> bool:
    """True when nvImageCodec said at import that it could not load nvJPEG (its GPU JPEG decoder)."""
    return any(
        "Failed to load nvjpeg library" in text or "Failed to load nvJPEG library" in text for text in _import_log
    )


@dataclass
class EncodedImage:
    """One file's bytes, read by a loader thread, with the size its header gives."""

    path: str
    data: np.ndarray  # uint8 [nbytes]
    code_stream: Any  # nvimgcodec.CodeStream over ``data``
    width: int
    height: int


def read_encoded(path: str | os.PathLike[str], what: str = "", nvimgcodec: Any = None) -> EncodedImage:
    """Read ``path`` and parse its header; UserError naming the file when it is missing, empty or not an
    image nvImageCodec can decode."""
    p = Path(path)
    label = f" ({what})" if what else ""
    if not p.is_file():
        raise UserError(f"image not found: {p}{label}; check --images-dir / --data-root")
    data = np.fromfile(str(p), dtype=np.uint8)
    codec = nvimgcodec or import_nvimgcodec()
    try:
        stream = codec.CodeStream(data) if data.size else None
        width, height = (int(stream.width), int(stream.height)) if stream is not None else (0, 0)
    except Exception:  # nvImageCodec raises plain RuntimeErrors for data it can't parse
        width = height = 0
    if width <= 0 or height <= 0:
        raise UserError(f"image unreadable or corrupt for --decode gpu: {p}{label}; check it, or use --decode cpu")
    return EncodedImage(str(p), data, stream, width, height)


@dataclass
class Decoded:
    """A decoded image where the letterbox kernel reads it: address, row pitch, and the object that owns
    the memory (kept alive until the batch is done)."""

    ptr: int
    row_bytes: int
    width: int
    height: int
    owner: Any


class ImageDecoder:
    """One nvImageCodec decoder (one per lane): ``decode(images, stream)`` decodes a batch to interleaved
    BGR uint8 (OpenCV's order), ordered on ``stream``.

    ``backend``: ``gpu`` (nvImageCodec's default choice among its GPU backends: hardware JPEG engines,
    nvJPEG CUDA, hybrid; ``options``: nvImageCodec's decoder options) or ``cpu`` (its libjpeg-turbo
    backend; host memory: the CI path, with the host
    doubles of the CUDA layer, and the pixel reference)."""

    def __init__(
        self,
        device_id: int = 0,
        backend: str = "gpu",
        cpu_threads: int = 0,
        nvimgcodec: Any = None,
        options: str = GPU_OPTIONS,
    ) -> None:
        self.codec = nvimgcodec or import_nvimgcodec()
        c = self.codec
        if backend not in ("gpu", "cpu"):
            raise ValueError(f"decoder backend {backend!r}")
        self.backend = backend
        try:
            if backend == "cpu":
                self._decoder = c.Decoder(
                    device_id=c.NVIMGCODEC_DEVICE_CPU_ONLY,
                    max_num_cpu_threads=cpu_threads,
                    backends=[c.Backend(c.BackendKind.CPU_ONLY)],
                )
            else:
                if nvjpeg_missing():
                    raise UserError(f"--decode gpu: nvImageCodec found no nvJPEG library; {NVJPEG_HINT}")
                self._decoder = c.Decoder(device_id=device_id, max_num_cpu_threads=cpu_threads, options=options)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"--decode gpu: nvImageCodec cannot start a decoder ({exc}); {INSTALL_HINT}") from exc
        self._params = c.DecodeParams(
            apply_exif_orientation=True,
            color_spec=c.ColorSpec.SRGB,
            allow_any_depth=False,
            sample_format=c.SampleFormat.I_BGR,
        )

    def decode(self, images: list[EncodedImage], stream: int) -> list[Decoded]:
        """Decode ``images`` as one batch; the results are ready in ``stream``'s order. UserError naming the
        first file that fails or whose decoded size is not its header's (EXIF orientation)."""
        out = self._decoder.decode([im.code_stream for im in images], params=self._params, cuda_stream=int(stream))
        decoded = []
        for im, img in zip(images, out, strict=True):
            if img is None:
                raise UserError(f"--decode gpu: nvImageCodec could not decode {im.path}; use --decode cpu")
            iface = img.__cuda_array_interface__ if self.backend == "gpu" else img.__array_interface__
            shape, strides = tuple(iface["shape"]), iface.get("strides")
            row_bytes = int(strides[0]) if strides else int(shape[1]) * 3
            if shape != (im.height, im.width, 3) or (strides and tuple(strides[1:]) != (3, 1)):
                raise UserError(
                    f"--decode gpu: {im.path} decodes to {list(shape)} (strides {strides}), not its "
                    f"header's {im.height}x{im.width}x3 (EXIF orientation?); use --decode cpu"
                )
            decoded.append(Decoded(int(iface["data"][0]), row_bytes, im.width, im.height, img))
        return decoded


def load_encoded_chunk(jobs: list[tuple[int, str]], size: int, mode: str, decode: str) -> list[Any]:
    """The loaders' chunk function for ``--decode gpu``: each file's bytes and its header's size (the lanes
    decode); ``mode`` is ``gpu-letterbox``."""
    from common.data.images import letterbox_geometry
    from common.data.loading import LoadedImage

    out = []
    for image_id, path in jobs:
        t0 = time.perf_counter()
        enc = read_encoded(path, what=f"image id {image_id}")
        out.append(
            LoadedImage(image_id, enc, letterbox_geometry(enc.width, enc.height, size), time.perf_counter() - t0)
        )
    return out
