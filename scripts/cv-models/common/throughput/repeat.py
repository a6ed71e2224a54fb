"""A larger evaluation set made of the same images: each selected image repeated under fresh ids.

For time-to-metrics figures (e.g. 5000 images, COCOeval included) when only a small fixture set is at
hand. Every copy gets the source image's annotations under new annotation ids, so COCOeval does the
work of an N-image set (each copy is scored on its own).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from common.core.results import atomic_write_json
from common.data.coco import CocoDataset, open_dataset

__all__ = ["repeated_dataset"]


def repeated_dataset(ds: CocoDataset, n_images: int, out_dir: str | os.PathLike[str]) -> CocoDataset:
    """``n_images`` images cycling over ``ds.image_ids``, ids 1..n; instances JSON written into ``out_dir``."""
    src = json.loads(Path(ds.instances_path).read_text(encoding="utf-8"))
    images = {img["id"]: img for img in src["images"]}
    anns: dict[int, list[dict]] = {}
    for a in src["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    out_images, out_anns = [], []
    for k in range(n_images):
        orig = ds.image_ids[k % len(ds.image_ids)]
        out_images.append({**images[orig], "id": k + 1})
        for a in anns.get(orig, []):
            out_anns.append({**a, "id": len(out_anns) + 1, "image_id": k + 1})
    path = Path(out_dir) / f"instances_repeated_{n_images}.json"
    atomic_write_json(path, {**src, "images": out_images, "annotations": out_anns})
    return open_dataset(path, ds.images_dir, 0)
