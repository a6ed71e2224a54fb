"""Calibration tensors: pick images, letterbox them exactly as evaluation does, save a float32 NCHW ``.npy``.

The tensor feeds ModelOpt ONNX PTQ (INT8/FP8 calibration) and AutoCast's reference run.
Every image goes through ``common.data.images.preprocess`` -- the same letterbox, RGB order and
/255 scaling as the evaluation pipeline -- so calibration sees the activations that evaluation will.

Beside ``calib.npy`` two files record what went in:

- ``calib.npy.json``  -- image ids, file names, seed, size, shape, sha256 of the tensor;
- ``calib.npy.txt``   -- the image paths, one per line, usable again as ``--image-list``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.core.results import atomic_output, atomic_write_json, atomic_write_text, file_digests, stamp
from common.data.coco import images_dir_under
from common.data.images import load_image_rgb, preprocess

__all__ = [
    "CALIB_SCHEMA_VERSION",
    "IMAGE_SUFFIXES",
    "CalibImage",
    "build_calib_tensor",
    "list_images_dir",
    "load_calib_tensor",
    "read_calib_record",
    "read_image_list",
    "resolve_images_dir",
    "select_images",
    "sidecar_paths",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CALIB_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CalibImage:
    path: Path
    image_id: int | str  # COCO id (numeric file stem) when the stem is numeric, else the stem

    @classmethod
    def from_path(cls, path: Path) -> CalibImage:
        stem = path.stem
        return cls(path, int(stem) if stem.isdigit() else stem)


def sidecar_paths(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(json, txt) files recorded beside a calibration tensor."""
    out = Path(out)
    return out.with_name(out.name + ".json"), out.with_name(out.name + ".txt")


def list_images_dir(images_dir: Path) -> list[Path]:
    """Image files directly inside ``images_dir``, sorted by name."""
    if not images_dir.is_dir():
        raise UserError(f"images directory not found: {images_dir}; check --images-dir / --data-root")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}; check --images-dir")
    return files


def read_image_list(list_file: Path) -> list[Path]:
    """Paths from a list file: one per line, '#' comments and blank lines ignored, relative to the file."""
    if not list_file.is_file():
        raise UserError(f"image list not found: {list_file}; check --image-list")
    paths: list[Path] = []
    for raw in list_file.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        paths.append(p if p.is_absolute() else list_file.parent / p)
    if not paths:
        raise UserError(f"image list {list_file} names no images; put one image path per line")
    return paths


def resolve_images_dir(data_root: str | None, images_dir: str | None) -> Path:
    """``--images-dir`` by the evaluators' rule (``common.data.coco.IMAGES_DIR_RULE``); ``<data-root>/val2017`` by
    default."""
    if images_dir is None:
        if data_root is None:
            raise UserError(
                "no images given: pass --image-list FILE, or --images-dir DIR (optionally with --data-root)"
            )
        return Path(data_root) / "val2017"
    return images_dir_under(data_root, images_dir)


def select_images(candidates: Sequence[Path], num_images: int, seed: int) -> list[CalibImage]:
    """``num_images`` of ``candidates`` drawn without replacement with ``seed`` (0 = all), in name order."""
    if num_images < 0:
        raise UserError(f"--max-images must be >= 0 (0 = all), got {num_images}")
    if num_images > len(candidates):
        raise UserError(
            f"--max-images {num_images} asks for more images than the {len(candidates)} available; "
            f"pass --max-images {len(candidates)} or fewer (0 = all)"
        )
    if num_images == 0 or num_images == len(candidates):
        chosen = list(candidates)
    else:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(candidates), size=num_images, replace=False))
        chosen = [candidates[int(i)] for i in idx]
    return [CalibImage.from_path(Path(p)) for p in chosen]


def build_calib_tensor(
    images: Sequence[CalibImage],
    out: str | os.PathLike[str],
    size: int = 640,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Letterbox ``images`` into ``out`` (float32 [N,3,size,size]) and write the sidecars; returns the JSON record.

    The tensor is written image by image through an ordinary file (no memory map: a full disk is an
    ``OSError``, never a SIGBUS) into a temporary file renamed on success, so 100 images at 640 (~490 MB)
    never sit in memory and an interrupted or failed run leaves nothing. The ``.npy.json`` sidecar is
    written last and records the sha256 of the tensor and of the ``.npy.txt`` list (``stamp``).
    """
    if size <= 0 or size % 32:
        raise UserError(f"--imgsz must be a positive multiple of 32, got {size}")
    if not images:
        raise UserError("no calibration images selected")
    out = Path(out)
    if out.suffix != ".npy":
        raise UserError(f"--out must end in .npy, got {out}")
    shape = (len(images), 3, size, size)
    with atomic_output(out, suffix=".npy") as tmp:
        digest = _write_tensor(tmp, images, shape, progress)
    json_path, txt_path = sidecar_paths(out)
    atomic_write_text(txt_path, "".join(f"{it.path.resolve()}\n" for it in images))
    record: dict[str, Any] = {
        "schema_version": CALIB_SCHEMA_VERSION,
        "file": out.name,
        "shape": list(shape),
        "dtype": "float32",
        "layout": "NCHW, RGB, /255, letterbox pad 114 (common.data.images.preprocess)",
        "imgsz": size,
        "num_images": len(images),
        "image_ids": [it.image_id for it in images],
        "file_names": [it.path.name for it in images],
        "sha256": digest,
        **(meta or {}),
    }
    atomic_write_json(json_path, stamp(record, {out.name: digest, **file_digests(txt_path)}))
    return record


def _write_tensor(path: Path, images: Sequence[CalibImage], shape: tuple[int, ...], progress: bool) -> str:
    """The .npy at ``path``: header, then each letterboxed image in turn; its sha256."""
    from tqdm import tqdm

    h = hashlib.sha256()
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": shape})
    chw = np.empty(shape[1:], dtype=np.float32)
    with open(path, "wb") as fh:
        fh.write(head.getvalue())
        h.update(head.getvalue())
        for item in tqdm(images, desc="calibration images", unit="img", disable=not progress):
            preprocess(load_image_rgb(item.path, what="calibration image"), shape[2], out=chw)
            block = chw.tobytes()
            fh.write(block)
            h.update(block)
    return h.hexdigest()


def load_calib_tensor(
    path: str | os.PathLike[str],
    expected_hw: tuple[int | None, int | None] | None = None,
    expected_batch: int | None = None,
    flag: str = "--calib",
) -> np.ndarray:
    """Load and check a calibration tensor: float32, [N,3,H,W], finite, matching the model's input.

    ``expected_batch``: the model's static batch size; N must be a multiple of it (ModelOpt
    feeds the tensor in slices of that size). Returns a read-only memory map.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"calibration tensor not found: {p}; build it with make_calib_npy.py and pass it as {flag}")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"{flag} {p} is not a readable .npy array ({exc}); rebuild it with make_calib_npy.py") from exc
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{flag} {p} is an .npz archive; pass the .npy written by make_calib_npy.py")
    if arr.dtype != np.float32:
        raise UserError(
            f"{flag} {p} has dtype {arr.dtype}; expected float32 (NCHW, /255) as written by make_calib_npy.py"
        )
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise UserError(f"{flag} {p} has shape {list(arr.shape)}; expected [N,3,H,W] (NCHW, RGB)")
    if arr.shape[0] == 0:
        raise UserError(f"{flag} {p} holds no images (shape {list(arr.shape)})")
    if expected_hw is not None:
        want = tuple(expected_hw)
        got = tuple(arr.shape[2:])
        if any(w is not None and w != g for w, g in zip(want, got, strict=True)):
            raise UserError(
                f"{flag} {p} has spatial size {got[0]}x{got[1]} but the model input is "
                f"{want[0]}x{want[1]}; rebuild it with make_calib_npy.py --imgsz {want[0]}"
            )
    if expected_batch and arr.shape[0] % expected_batch:
        raise UserError(
            f"{flag} {p} has {arr.shape[0]} images, not a multiple of the model's batch size {expected_batch}"
        )
    sample = np.asarray(arr[: min(4, arr.shape[0])])
    if not np.isfinite(sample).all():
        raise UserError(f"{flag} {p} contains NaN/Inf; rebuild it with make_calib_npy.py")
    lo, hi = float(sample.min()), float(sample.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        log.warning(
            "%s %s has values in [%.3g, %.3g], not [0, 1]: was it scaled /255 like evaluation inputs?", flag, p, lo, hi
        )
    return arr


def read_calib_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``.npy.json`` sidecar of a calibration tensor, or None when absent/unreadable."""
    import json

    json_path, _ = sidecar_paths(path)
    try:
        return json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
