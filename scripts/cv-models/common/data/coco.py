"""COCO: the 80 class names, dataset loading and image-id selection, results JSON, COCOeval."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.core.notes import warn
from common.core.results import atomic_output

__all__ = [
    "COCO80_NAMES",
    "COCO_EVAL_ENGINES",
    "DEFAULT_MAX_IMAGES",
    "IMAGES_DIR_RULE",
    "ROW_COLUMNS",
    "STAT_NAMES",
    "CocoDataset",
    "category_table",
    "check_instances",
    "coco_rows",
    "evaluate_bbox",
    "faster_coco_eval_available",
    "format_coco_table",
    "images_dir_under",
    "load_coco",
    "open_dataset",
    "quiet_cocoeval",
    "read_id_list",
    "resolve_coco_engine",
    "results_to_rows",
    "rows_by_image",
    "rows_to_dicts",
    "select_image_ids",
    "stats_table",
    "unknown_categories",
    "users_metrics",
    "write_results_json",
]

# The 80 COCO class names in the YOLO 80-index order.
COCO80_NAMES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

STAT_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


@dataclass
class CocoDataset:
    """A COCO instances file plus its image folder, with the ids selected for a run."""

    instances_path: Path
    images_dir: Path
    coco: Any  # pycocotools.coco.COCO
    image_ids: list[int]
    class_to_category: np.ndarray  # [80] model class index -> COCO category id (-1: absent)
    check_report: Any = None  # common.data.check.DatasetCheck once the dataset check ran

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / self.coco.imgs[image_id]["file_name"]


def load_coco(instances: str | os.PathLike[str]) -> Any:
    """Load an instances JSON with pycocotools, quietly; UserError naming the file.

    The structure is checked first (``check_instances``) so a malformed file gives one line
    saying what is wrong, not a KeyError from deep inside pycocotools.
    """
    from pycocotools.coco import COCO

    path = Path(instances)
    if not path.is_file():
        raise UserError(f"instances file not found: {path}; pass --instances or --data-root")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"instances file {path} is not readable JSON ({exc}); pass a COCO instances file") from None
    check_instances(data, path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = data
            coco.createIndex()
            return coco
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"instances file {path} is not valid COCO JSON: {exc}") from exc


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_instances(data: Any, path: Path) -> None:
    """UserError (one line, naming the file and the first problem) unless ``data`` is COCO instances JSON."""
    where = f"instances file {path}"
    if not isinstance(data, dict):
        raise UserError(
            f"{where}: top level is a {type(data).__name__}, expected an object with "
            "'images', 'annotations' and 'categories' (is this a results file?)"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(
                f"{where} has no {key!r} list; a COCO instances file needs images, annotations and categories"
            )
        if not isinstance(data[key], list):
            raise UserError(f"{where}: {key!r} is a {type(data[key]).__name__}, expected a list")
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not _is_int(im.get("id")):
            got = im.get("id") if isinstance(im, dict) else im
            raise UserError(f"{where}: images[{i}] has id {got!r}; image ids must be integers")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise UserError(f"{where}: image {im['id']} has no file_name")
    cat_ids: set[int] = set()
    names: set[str] = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            raise UserError(f"{where}: categories[{i}] needs an integer id and a name, got {c!r}"[:300])
        if c["id"] in cat_ids:
            raise UserError(f"{where}: category id {c['id']} is defined more than once in 'categories'; list it once")
        if c["name"] in names:
            raise UserError(
                f"{where}: category name {c['name']!r} is defined under several ids; the model's class could be "
                "scored against only one of them: give each category its own name"
            )
        cat_ids.add(c["id"])
        names.add(c["name"])
    if not cat_ids:
        raise UserError(f"{where}: 'categories' is empty; it must list the classes (COCO-80 names)")
    img_ids = {im["id"] for im in data["images"]}
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            raise UserError(f"{where}: annotations[{i}] is a {type(a).__name__}, expected an object")
        if "id" not in a:
            raise UserError(
                f"{where}: annotations[{i}] has no 'id'; COCOeval needs a unique positive integer id per "
                "annotation: number them 1..N"
            )
        if not _is_int(a.get("image_id")) or a["image_id"] not in img_ids:
            raise UserError(f"{where}: annotations[{i}] has image_id {a.get('image_id')!r}, which no image has")
        if not _is_int(a.get("category_id")) or a["category_id"] not in cat_ids:
            raise UserError(
                f"{where}: annotations[{i}] has category_id {a.get('category_id')!r}, which 'categories' does not list"
            )
        bbox = a.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        ):
            raise UserError(f"{where}: annotations[{i}] bbox {bbox!r} is not [x, y, w, h]"[:300])


def category_table(
    coco: Any, names: Sequence[str] = COCO80_NAMES, source: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Model class index -> the annotation file's category id, matched by class name."""
    by_name = {c["name"]: int(c["id"]) for c in coco.loadCats(coco.getCatIds())}
    table = np.array([by_name.get(n, -1) for n in names], dtype=np.int64)
    if (table < 0).all():
        where = f"instances file {source}" if source is not None else "the instances file"
        raise UserError(
            f"no category in {where} matches a COCO-80 class name (e.g. 'person'); the model's "
            "classes could never be scored"
        )
    return table


def unknown_categories(coco: Any, names: Sequence[str] = COCO80_NAMES) -> list[str]:
    """Category names of the instances file that no model class has (their AP can only be 0)."""
    known = set(names)
    return sorted(str(c["name"]) for c in coco.loadCats(coco.getCatIds()) if c["name"] not in known)


DEFAULT_MAX_IMAGES = 100

IMAGES_DIR_RULE = (
    "a relative --images-dir is taken against the working directory; when no such folder exists there but one "
    "does under --data-root, that one (e.g. --images-dir train2017)"
)


def images_dir_under(data_root: str | os.PathLike[str] | None, images_dir: str | os.PathLike[str]) -> Path:
    """The one rule for an image folder (``IMAGES_DIR_RULE``): as given, else under ``data_root`` when only
    that one exists."""
    p = Path(images_dir)
    if not p.is_absolute() and data_root is not None and not p.exists() and (Path(data_root) / p).is_dir():
        return Path(data_root) / p
    return p


def read_id_list(path: str | os.PathLike[str]) -> list[int]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--image-ids-list file not found: {p}")
    ids = []
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--image-ids-list {p}: not a readable text file ({exc})") from None
    for n, line in enumerate(text.splitlines(), 1):
        raw = line.split("#", 1)[0].strip()
        if not raw:
            continue
        try:
            ids.append(int(raw))
        except ValueError:
            raise UserError(f"--image-ids-list {p}:{n}: {raw!r} is not an integer image id") from None
    return ids


def select_image_ids(coco: Any, max_images: int | None, ids_list: str | os.PathLike[str] | None = None) -> list[int]:
    """The image ids of a run.

    With ``ids_list``: every id of the file, in file order, duplicates dropped (with a warning);
    a ``max_images`` that would cut the list is refused (a list names the images: all of them run).
    Else the sorted ids, the first ``max_images`` (None: 100; <= 0: all).
    """
    if ids_list is not None:
        listed = read_id_list(ids_list)
        ids = list(dict.fromkeys(listed))
        if len(ids) != len(listed):
            warn(
                f"--image-ids-list {ids_list}: {len(listed) - len(ids)} duplicate id(s) ignored; "
                f"{len(ids)} distinct images"
            )
        unknown = [i for i in ids if i not in coco.imgs]
        if unknown:
            shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise UserError(f"--image-ids-list {ids_list}: image id(s) not in the annotations: {shown}")
        if max_images is not None and 0 < max_images < len(ids):
            raise UserError(
                f"--max-images {max_images} would cut --image-ids-list {ids_list} ({len(ids)} ids): a list is "
                "evaluated whole; drop --max-images or shorten the list"
            )
        return ids
    ids = sorted(coco.getImgIds())
    n = DEFAULT_MAX_IMAGES if max_images is None else max_images
    return ids[:n] if n > 0 else ids


def open_dataset(
    instances: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    max_images: int | None = 0,
    ids_list: str | os.PathLike[str] | None = None,
) -> CocoDataset:
    """Instances + images + the selected ids. Refuses a selection without annotations (COCO mAP would be
    -1) and warns on stderr about categories no COCO-80 class can detect."""
    images = Path(images_dir)
    if not images.is_dir():
        raise UserError(f"images directory not found: {images}; pass --images-dir or --data-root")
    coco = load_coco(instances)
    ids = select_image_ids(coco, max_images, ids_list)
    if not ids:
        raise UserError(f"no images selected from {instances}; check --max-images / --image-ids-list")
    table = category_table(coco, source=instances)
    if not coco.dataset["annotations"]:
        raise UserError(
            f"instances file {instances} has no annotations: COCO mAP would be -1; pass a file with ground-truth boxes"
        )
    if not any(coco.imgToAnns.get(i) for i in ids):
        raise UserError(
            f"the {len(ids)} selected image(s) have no annotations in {instances}: COCO mAP would be -1; "
            "select other images (--max-images / --image-ids-list)"
        )
    odd = unknown_categories(coco)
    if odd:
        shown = ", ".join(odd[:5]) + (" ..." if len(odd) > 5 else "")
        what = f"{len(odd)} categor{'y' if len(odd) == 1 else 'ies'}"
        warn(
            f"{what} of {instances} match no COCO-80 class name ({shown}): the model cannot detect "
            "them, so their AP counts as 0 in mAP"
        )
    return CocoDataset(Path(instances), images, coco, ids, table)


ROW_COLUMNS = ("image_id", "x", "y", "w", "h", "score", "category_id")


def coco_rows(
    image_ids: np.ndarray, boxes_xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, table: np.ndarray
) -> np.ndarray:
    """Detections in original-image pixels (row i of image ``image_ids[i]``) -> COCO results as one
    [N, 7] float64 array (``ROW_COLUMNS``; xywh rounded to 3 decimals, score to 5), the layout
    pycocotools' ``loadRes`` also takes. Classes without a COCO category are dropped."""
    classes = np.asarray(classes, np.int64)
    cats = table[classes] if classes.size else np.zeros(0, np.int64)
    ok = cats >= 0
    b = np.asarray(boxes_xyxy)[ok].astype(np.float64).reshape(-1, 4)
    rows = np.empty((b.shape[0], 7), np.float64)
    rows[:, 0] = np.asarray(image_ids)[ok]
    rows[:, 1:5] = np.round(np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1), 3)
    rows[:, 5] = np.round(np.asarray(scores)[ok].astype(np.float64), 5)
    rows[:, 6] = cats[ok]
    return rows


def rows_to_dicts(rows: np.ndarray) -> list[dict[str, Any]]:
    """``coco_rows`` as the COCO results JSON's list of dicts (what detections.json holds)."""
    ids = rows[:, 0].astype(np.int64).tolist()
    cats = rows[:, 6].astype(np.int64).tolist()
    return [
        {"image_id": i, "category_id": c, "bbox": bb, "score": s}
        for i, c, bb, s in zip(ids, cats, rows[:, 1:5].tolist(), rows[:, 5].tolist(), strict=True)
    ]


_RESULT = '{"image_id": %d, "category_id": %d, "bbox": [%r, %r, %r, %r], "score": %r}'
RESULTS_CHUNK = 65536  # detections formatted per write


def write_results_json(path: str | os.PathLike[str], rows: np.ndarray) -> Path:
    """``rows`` (``coco_rows``) as the COCO results JSON, written chunk by chunk (no dict per detection).

    The bytes are those of ``atomic_write_json(path, rows_to_dicts(rows), indent=None)``; the file
    appears whole or not at all. A NaN or infinite value is refused, as ``dumps_json`` refuses it."""
    if not np.isfinite(rows).all():
        raise ValueError("refusing to write non-finite numbers into JSON (detections with NaN/Inf)")
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("[")
        for start in range(0, len(rows), RESULTS_CHUNK):
            part = rows[start : start + RESULTS_CHUNK]
            ids = part[:, 0].astype(np.int64).tolist()
            cats = part[:, 6].astype(np.int64).tolist()
            fields = part[:, 1:6].tolist()
            text = ", ".join([_RESULT % (i, c, *v) for i, c, v in zip(ids, cats, fields, strict=True)])
            fh.write((", " if start else "") + text)
        fh.write("]\n")
    return Path(path)


COCO_EVAL_ENGINES = ("auto", "stream", "pycocotools", "faster-coco-eval")


def faster_coco_eval_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_coco_engine(engine: str) -> str:
    """The COCOeval implementation that runs for ``engine`` (``auto`` is ``stream``)."""
    if engine not in COCO_EVAL_ENGINES:
        raise ValueError(f"unknown COCO eval engine {engine!r}")
    return "stream" if engine == "auto" else engine


def stats_table(stats: np.ndarray | Sequence[float], num_detections: int) -> tuple[dict[str, float], str]:
    """COCOeval's 12 stats -> (named stats, the printed summary table); no detections at all: all 0."""
    if num_detections == 0:
        return dict.fromkeys(STAT_NAMES, 0.0), "no detections: all COCO stats are 0\n"
    named = {k: float(v) for k, v in zip(STAT_NAMES, list(stats)[: len(STAT_NAMES)], strict=True)}
    return named, format_coco_table(named)


def results_to_rows(results: list[dict[str, Any]]) -> np.ndarray:
    """COCO results dicts (detections.json) -> ``coco_rows``' [N, 7] layout."""
    rows = np.zeros((len(results), 7), np.float64)
    for n, r in enumerate(results):
        rows[n] = (r["image_id"], *r["bbox"], r["score"], r["category_id"])
    return rows


def rows_by_image(rows: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """``coco_rows``' [N, 7] rows grouped per image: the image ids (ascending) and each one's rows, in the
    order given."""
    order = np.argsort(rows[:, 0], kind="stable")
    ids, starts = np.unique(rows[order, 0], return_index=True)
    return [int(i) for i in ids], np.split(rows[order], starts[1:])


def _stream_eval(coco: Any, rows: np.ndarray, image_ids: Sequence[int]) -> np.ndarray:
    """The streamed evaluation over results given at once: rows grouped per image, in the order given."""
    from common.data.coco_stream import StreamingCocoEval

    ev = StreamingCocoEval(coco, image_ids)
    ev.add(*rows_by_image(rows))
    return ev.finish()


def evaluate_bbox(
    coco: Any,
    results: list[dict[str, Any]] | np.ndarray,
    image_ids: Sequence[int],
    engine: str = "pycocotools",
) -> tuple[dict[str, float], str]:
    """COCOeval (bbox) over image_ids -> (12 named stats, the printed summary table).

    ``engine``: ``pycocotools`` (the reference), ``stream`` (``common.data.coco_stream``: the same 12
    floats, matched image by image without per-detection dicts; what ``auto`` runs) or
    ``faster-coco-eval`` (pycocotools' stats to 1e-6). Tests check all three against pycocotools.
    """
    engine = resolve_coco_engine(engine)
    if len(results) == 0:
        return stats_table([], 0)
    if engine == "stream":
        rows = results if isinstance(results, np.ndarray) else results_to_rows(results)
        return stats_table(_stream_eval(coco, rows, image_ids), len(rows))
    if isinstance(results, np.ndarray):  # coco_rows: the same dicts a results JSON would give
        results = rows_to_dicts(results)
    else:  # loadRes writes segmentation/area/id/iscrowd into the dicts it gets: never into the caller's
        results = [dict(r) for r in results]
    with quiet_cocoeval():
        ev = _run_cocoeval(coco, results, image_ids, engine)
    return stats_table(ev.stats, len(results))


@contextlib.contextmanager
def quiet_cocoeval() -> Iterator[None]:
    """pycocotools' prints and faster-coco-eval's log lines, silenced."""
    import logging

    quiet = logging.getLogger("faster_coco_eval")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        quiet.setLevel(level)


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


def _dataset_view(data: dict[str, Any]) -> dict[str, Any]:
    """The parsed instances for a second COCO index: the same lists, but each annotation its own dict,
    since COCOeval implementations write fields (``ignore``, ``area``...) into the annotations they index."""
    return {**data, "annotations": [dict(a) for a in data.get("annotations", [])]}


def _run_cocoeval(coco: Any, results: list[dict[str, Any]], image_ids: Sequence[int], engine: str) -> Any:
    if engine == "faster-coco-eval":
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        gt = FasterCOCO(_dataset_view(coco.dataset))  # the JSON pycocotools already parsed: not read again
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
    """The metrics.json keys of the evaluator this toolkit replaces (``mAP_50_95``, ``mAP_50``, ...) plus all
    12 stats."""
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
