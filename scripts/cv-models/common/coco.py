"""COCO: the 80 class names, dataset loading and image-id selection, results JSON, COCOeval."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError

# The 80 COCO class names in the YOLO 80-index order.
COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip


@dataclass
class CocoDataset:
    """A COCO instances file plus its image folder, with the ids selected for a run."""

    instances_path: Path
    images_dir: Path
    coco: Any  # pycocotools.coco.COCO
    image_ids: list[int]
    class_to_category: np.ndarray  # [80] model class index -> COCO category id (-1: absent)

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / self.coco.imgs[image_id]["file_name"]


def load_coco(instances: str | os.PathLike[str]) -> Any:
    """Load an instances JSON with pycocotools, quietly; UserError naming the file."""
    from pycocotools.coco import COCO

    path = Path(instances)
    if not path.is_file():
        raise UserError(f"instances file not found: {path}; pass --instances or --data-root")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise UserError(f"instances file {path} is not valid COCO JSON: {exc}") from exc


def category_table(coco: Any, names: Sequence[str] = COCO80_NAMES) -> np.ndarray:
    """Model class index -> the annotation file's category id, matched by class name."""
    by_name = {c["name"]: int(c["id"]) for c in coco.loadCats(coco.getCatIds())}
    table = np.array([by_name.get(n, -1) for n in names], dtype=np.int64)
    if (table < 0).all():
        raise UserError("no category in the instances file matches a COCO-80 class name")
    return table


def read_id_list(path: str | os.PathLike[str]) -> list[int]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--image-ids-list file not found: {p}")
    ids = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        raw = line.split("#", 1)[0].strip()
        if not raw:
            continue
        try:
            ids.append(int(raw))
        except ValueError:
            raise UserError(f"--image-ids-list {p}:{n}: {raw!r} is not an integer image id") from None
    return ids


def select_image_ids(coco: Any, max_images: int, ids_list: str | os.PathLike[str] | None = None) -> list[int]:
    """Sorted ids (or the list file's ids, in file order), truncated to max_images (<= 0: all)."""
    if ids_list is not None:
        ids = read_id_list(ids_list)
        unknown = [i for i in ids if i not in coco.imgs]
        if unknown:
            shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise UserError(f"--image-ids-list {ids_list}: image id(s) not in the annotations: {shown}")
    else:
        ids = sorted(coco.getImgIds())
    return ids[:max_images] if max_images > 0 else ids


def open_dataset(
    instances: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    max_images: int = 0,
    ids_list: str | os.PathLike[str] | None = None,
) -> CocoDataset:
    images = Path(images_dir)
    if not images.is_dir():
        raise UserError(f"images directory not found: {images}; pass --images-dir or --data-root")
    coco = load_coco(instances)
    ids = select_image_ids(coco, max_images, ids_list)
    if not ids:
        raise UserError(f"no images selected from {instances}; check --max-images / --image-ids-list")
    return CocoDataset(Path(instances), images, coco, ids, category_table(coco))


def to_coco_results(
    image_id: int, boxes_xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, table: np.ndarray
) -> list[dict[str, Any]]:
    """Detections in original-image pixels -> COCO results rows (xywh rounded to 3 decimals, score to 5)."""
    cats = table[classes] if classes.size else np.zeros(0, np.int64)
    ok = cats >= 0
    b = boxes_xyxy[ok].astype(np.float64)
    xywh = np.round(np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1), 3)
    sc = np.round(scores[ok].astype(np.float64), 5)
    return [
        {"image_id": int(image_id), "category_id": int(c), "bbox": bb, "score": float(s)}
        for c, bb, s in zip(cats[ok].tolist(), xywh.tolist(), sc.tolist(), strict=True)
    ]


COCO_EVAL_ENGINES = ("auto", "pycocotools", "faster-coco-eval")


def faster_coco_eval_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def evaluate_bbox(
    coco: Any,
    results: list[dict[str, Any]],
    image_ids: Sequence[int],
    engine: str = "pycocotools",
    instances_path: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, float], str]:
    """COCOeval (bbox) over image_ids -> (12 named stats, the printed summary table).

    ``engine``: ``pycocotools`` (the reference), ``faster-coco-eval`` (same 12 numbers,
    several times faster; checked against pycocotools by tests/test_coco_engines.py) or
    ``auto`` (faster-coco-eval when it is installed and ``instances_path`` is known).
    """
    if engine == "auto":
        engine = "faster-coco-eval" if instances_path and faster_coco_eval_available() else "pycocotools"
    if not results:
        return dict.fromkeys(STAT_NAMES, 0.0), "no detections: all COCO stats are 0\n"
    import logging

    quiet = logging.getLogger("faster_coco_eval")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = _run_cocoeval(coco, results, image_ids, engine, instances_path)
    finally:
        quiet.setLevel(level)
    stats = {k: float(v) for k, v in zip(STAT_NAMES, list(ev.stats)[: len(STAT_NAMES)], strict=True)}
    return stats, format_coco_table(stats)


_TABLE_ROWS = (
    ("Precision", "AP", "0.50:0.95", "all", 100),
    ("Precision", "AP", "0.50     ", "all", 100),
    ("Precision", "AP", "0.75     ", "all", 100),
    ("Precision", "AP", "0.50:0.95", "small", 100),
    ("Precision", "AP", "0.50:0.95", "medium", 100),
    ("Precision", "AP", "0.50:0.95", "large", 100),
    ("Recall", "AR", "0.50:0.95", "all", 1),
    ("Recall", "AR", "0.50:0.95", "all", 10),
    ("Recall", "AR", "0.50:0.95", "all", 100),
    ("Recall", "AR", "0.50:0.95", "small", 100),
    ("Recall", "AR", "0.50:0.95", "medium", 100),
    ("Recall", "AR", "0.50:0.95", "large", 100),
)


def format_coco_table(stats: dict[str, float]) -> str:
    """The familiar 12-line COCOeval summary, from the named stats (same for every engine)."""
    lines = []
    for (kind, short, iou, area, dets), name in zip(_TABLE_ROWS, STAT_NAMES, strict=True):
        title = f"Average {kind:<9} ({short})"
        lines.append(f" {title} @[ IoU={iou} | area={area:>6} | maxDets={dets:>3} ] = {stats[name]:.3f}")
    return "\n".join(lines) + "\n"


def _run_cocoeval(
    coco: Any,
    results: list[dict[str, Any]],
    image_ids: Sequence[int],
    engine: str,
    instances_path: str | os.PathLike[str] | None,
) -> Any:
    if engine == "faster-coco-eval":
        if instances_path is None:
            raise ValueError("faster-coco-eval needs the instances file path")
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        gt = FasterCOCO(str(instances_path))
        ev = COCOeval_faster(gt, gt.loadRes(results), iouType="bbox")
    elif engine == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        ev = COCOeval(coco, coco.loadRes(results), iouType="bbox")
    else:
        raise ValueError(f"unknown COCO eval engine {engine!r}")
    ev.params.imgIds = [int(i) for i in image_ids]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def users_metrics(stats: dict[str, float], num_images: int, num_detections: int) -> dict[str, Any]:
    """The users' metrics keys (kept from their evaluator) plus all 12 stats."""
    return {
        "mAP_50_95": stats["AP"],
        "mAP_50": stats["AP50"],
        "mAP_75": stats["AP75"],
        "mAP_small": stats["AP_small"],
        "mAP_medium": stats["AP_medium"],
        "mAP_large": stats["AP_large"],
        "num_images": int(num_images),
        "num_detections": int(num_detections),
        "coco_stats": dict(stats),
    }
