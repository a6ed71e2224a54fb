"""The dataset check: run before any model work, on the selected images of a COCO set.

It reads each selected image's header (``common.data.headers``: milliseconds per image, no pixel
decoding for JPEG and PNG) and the annotations of those images, and sorts what it finds:

- **errors** (the mAP would be wrong, or the run would fail after the inference): ``UserError``
  naming the image or annotation and what to do --
  a missing or unreadable image; a decoded size (after the EXIF orientation OpenCV applies) that is
  not the annotated ``width`` x ``height``; an image id listed twice, or one image file under two ids;
  an annotation id that is not a positive integer or is used twice (COCOeval looks annotations up
  by id; a ground truth with id 0 counts as never matched); a box with a non-positive or non-finite
  width or height, or lying wholly outside its image; an ``iscrowd`` that is not 0/1, an ``area``
  that is not a non-negative number. (A category used but not defined, or a category id or name
  defined twice, is refused when the instances file is read: ``common.data.coco.check_instances``.)
- **warnings** (the mAP is right): printed once and returned in ``DatasetCheck.warnings`` for the
  run's metrics.json -- annotations without ``iscrowd`` or ``area`` (filled in the loaded copy as the
  COCO format defines them: ``iscrowd`` 0, ``area`` = box width x height, the value pycocotools'
  ``loadRes`` gives boxes; the file is not touched, and both COCOeval engines see the same values);
  boxes reaching more than 1 px beyond their image; images without ``width``/``height``; an EXIF
  orientation whose rotation the sizes cannot confirm.

``skip_unreadable``: missing or unreadable images are left out of the selection instead (recorded in
``DatasetCheck.skipped_images``).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.core.errors import UserError
from common.core.notes import warn
from common.data.coco import CocoDataset
from common.data.headers import ImageHeader, Unreadable, read_image_header

__all__ = ["SKIP_FLAG", "DatasetCheck", "check_dataset", "check_image_files", "describe", "read_headers"]

SKIP_FLAG = "--skip-unreadable-images"
_BOX_SLACK = 1.0  # px a box may reach beyond its image before it is reported (rounding in real sets)
_SHOWN = 3  # examples named in a message


@dataclass
class DatasetCheck:
    """What the check did: for metrics.json's ``dataset_check``."""

    seconds: float = 0.0
    images_checked: int = 0
    warnings: list[str] = field(default_factory=list)
    skipped_images: list[dict[str, Any]] = field(default_factory=list)
    filled: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 6),
            "images_checked": self.images_checked,
            "warnings": list(self.warnings),
            "skipped_images": list(self.skipped_images),
            "filled": dict(self.filled),
        }

    def warn(self, message: str) -> None:
        self.warnings.append(warn(message))


def _examples(items: Sequence[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


# ----------------------------------------------------------------------------- image files


def read_headers(paths: Sequence[Path], threads: int = 8) -> list[ImageHeader | str]:
    """Each file's header, or why it can't be read (``str``); a few threads for long lists."""

    def one(p: Path) -> ImageHeader | str:
        try:
            return read_image_header(p)
        except FileNotFoundError:
            return "not found"
        except IsADirectoryError:
            return "a folder, not an image file"
        except Unreadable as exc:
            return f"unreadable: {exc}"
        except OSError as exc:
            return f"unreadable: {exc.strerror or exc}"

    if len(paths) < 64 or threads <= 1:
        return [one(p) for p in paths]
    with cf.ThreadPoolExecutor(threads, thread_name_prefix="check") as ex:
        return list(ex.map(one, paths))


def _unreadable_error(bad: Sequence[tuple[str, Path, str]], total: int, fix: str) -> UserError:
    first_what, first_path, why = bad[0]
    more = f" ({len(bad)} of {total} selected images are missing or unreadable)" if len(bad) > 1 else ""
    return UserError(f"{first_what} ({first_path}) is {why}{more}; {fix}")


def check_image_files(paths: Sequence[Path], skip_unreadable: bool = False) -> tuple[list[int], DatasetCheck]:
    """Images without annotations (calibration): the indices of the readable ones, and the report.
    A missing or unreadable file is a UserError unless ``skip_unreadable``."""
    t0 = time.perf_counter()
    report = DatasetCheck(images_checked=len(paths))
    headers = read_headers(list(paths))
    bad = [(f"image {p.name}", p, h) for p, h in zip(paths, headers, strict=True) if isinstance(h, str)]
    if bad and not skip_unreadable:
        raise _unreadable_error(bad, len(paths), f"fix or remove it, or pass {SKIP_FLAG} to leave such images out")
    keep = [i for i, h in enumerate(headers) if not isinstance(h, str)]
    if bad:
        report.skipped_images = [{"file": str(p), "reason": why} for _, p, why in bad]
        names = _examples([p.name for _, p, _ in bad])
        report.warn(f"{SKIP_FLAG}: {len(bad)} image(s) left out ({names}): missing or unreadable")
    if not keep:
        raise UserError(f"none of the {len(paths)} selected images can be read; check the image paths")
    report.seconds = time.perf_counter() - t0
    return keep, report


# ----------------------------------------------------------------------------- the COCO set


def check_dataset(dataset: CocoDataset, skip_unreadable: bool = False) -> DatasetCheck:
    """Check ``dataset``'s selected images and their annotations (see the module doc).

    Changes the loaded copy only: fills ``iscrowd``/``area`` where absent and, with ``skip_unreadable``,
    drops missing or unreadable images from ``dataset.image_ids``. UserError on the first error."""
    t0 = time.perf_counter()
    report = DatasetCheck(images_checked=len(dataset.image_ids))
    data = dataset.coco.dataset
    where = f"instances file {dataset.instances_path}"
    _check_image_entries(data.get("images", []), dataset.image_ids, where)
    _check_annotation_ids(data.get("annotations", []), dataset, where)
    _check_annotations(dataset, where, report)
    _check_files(dataset, where, report, skip_unreadable)
    report.seconds = time.perf_counter() - t0
    return report


def _check_image_entries(images: Iterable[dict[str, Any]], selected: Sequence[int], where: str) -> None:
    chosen = set(selected)
    by_id: dict[int, list[str]] = collections.defaultdict(list)
    by_file: dict[str, list[int]] = collections.defaultdict(list)
    for im in images:
        by_id[im["id"]].append(str(im.get("file_name")))
        by_file[str(im.get("file_name"))].append(im["id"])
    for image_id in selected:
        if len(by_id[image_id]) > 1:
            raise UserError(
                f"{where}: image id {image_id} is listed {len(by_id[image_id])} times in 'images' "
                f"({_examples(by_id[image_id])}); COCOeval keeps one entry per id: give each image one entry"
            )
    for name, ids in by_file.items():
        if len(ids) > 1 and chosen.intersection(ids):
            raise UserError(
                f"{where}: image file {name} is listed under ids {_examples([str(i) for i in ids])}: it would be "
                "scored once per id; list each image file once"
            )


def _is_id(v: Any) -> bool:
    """A positive integer (an integral float such as 7.0, which some exporters write, is the same key)."""
    whole = (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    return whole and v > 0


def _check_annotation_ids(annotations: Sequence[dict[str, Any]], dataset: CocoDataset, where: str) -> None:
    """Unique positive ids over the whole file (COCOeval's lookups are file-wide), refused where they
    touch a selected image."""
    chosen = set(dataset.image_ids)
    counts = collections.Counter(a.get("id") for a in annotations)
    for a in annotations:
        if a["image_id"] not in chosen:
            continue
        ann_id = a.get("id")
        if not _is_id(ann_id):
            raise UserError(
                f"{where}: an annotation of image {a['image_id']} has id {ann_id!r}; COCOeval needs a unique "
                "positive integer id per annotation (a ground truth with id 0 is never counted as matched): "
                "number the annotations 1..N"
            )
        if counts[ann_id] > 1:
            images = sorted({str(b["image_id"]) for b in annotations if b.get("id") == ann_id})
            raise UserError(
                f"{where}: annotation id {ann_id} is used by {counts[ann_id]} annotations (images "
                f"{_examples(images)}); COCOeval looks annotations up by id, so boxes would be lost or swapped: "
                "give every annotation its own id (number them 1..N)"
            )


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_annotations(dataset: CocoDataset, where: str, report: DatasetCheck) -> None:
    """Boxes, iscrowd and area of the selected images' annotations; fills the absent iscrowd/area."""
    missing = collections.Counter()
    beyond: list[str] = []
    for image_id in dataset.image_ids:
        im = dataset.coco.imgs[image_id]
        for a in dataset.coco.imgToAnns.get(image_id, []):
            _check_box(a, im, where, beyond)
            for key, fill in (("iscrowd", lambda a: 0), ("area", lambda a: float(a["bbox"][2] * a["bbox"][3]))):
                if key not in a:
                    a[key] = fill(a)
                    missing[key] += 1
            _check_crowd_area(a, where)
    for key in ("iscrowd", "area"):  # the rest of the file too: an engine may read every annotation
        for a in dataset.coco.dataset.get("annotations", []):
            if key not in a and _number_box(a):
                a[key] = 0 if key == "iscrowd" else float(a["bbox"][2] * a["bbox"][3])
    if missing:
        report.filled = dict(missing)
        what = " and ".join(f"{n} without '{k}'" for k, n in missing.items())
        report.warn(
            f"{where}: {what} among the selected images' annotations: filled as the COCO format defines them "
            "(iscrowd 0, area = box width x height) in the loaded copy, for either COCOeval engine; the file is "
            "unchanged"
        )
    if beyond:
        report.warn(
            f"{where}: {len(beyond)} box(es) reach more than {_BOX_SLACK:g} px beyond their image "
            f"({_examples(beyond)}); detections are clipped to the image, so such boxes can't be matched exactly"
        )


def _number_box(a: dict[str, Any]) -> bool:
    b = a.get("bbox")
    return isinstance(b, list) and len(b) == 4 and all(_number(v) for v in b)


def _check_box(a: dict[str, Any], im: dict[str, Any], where: str, beyond: list[str]) -> None:
    x, y, w, h = a["bbox"]
    what = f"{where}: annotation {a.get('id')} of image {a['image_id']} has bbox {a['bbox']}"
    if not all(_number(v) for v in (x, y, w, h)):
        raise UserError(f"{what}, which is not finite; fix or remove it")
    if w <= 0 or h <= 0:
        raise UserError(f"{what}: its width and height must be > 0 ([x, y, w, h] in pixels); fix or remove it")
    iw, ih = im.get("width"), im.get("height")
    if not (_number(iw) and _number(ih)):
        return
    if x >= iw or y >= ih or x + w <= 0 or y + h <= 0:
        raise UserError(f"{what}, wholly outside the {iw}x{ih} image: it could never be matched; fix the box")
    s = _BOX_SLACK
    if x < -s or y < -s or x + w > iw + s or y + h > ih + s:
        beyond.append(f"annotation {a.get('id')} of image {a['image_id']} in {iw}x{ih}")


def _check_crowd_area(a: dict[str, Any], where: str) -> None:
    what = f"{where}: annotation {a.get('id')} of image {a['image_id']}"
    if a["iscrowd"] not in (0, 1):  # True/False are 1/0 to COCOeval as well
        raise UserError(f"{what} has iscrowd {a['iscrowd']!r}; it must be 0 or 1")
    if not _number(a["area"]) or a["area"] < 0:
        raise UserError(f"{what} has area {a['area']!r}; it must be a number >= 0 (or absent: box width x height)")


def _size_problem(header: ImageHeader, im: dict[str, Any]) -> str | None:
    """Why the decoded size contradicts the annotated one (None: it doesn't)."""
    aw, ah = im.get("width"), im.get("height")
    if (header.width, header.height) == (aw, ah):
        return None
    rotated = f" after its EXIF orientation {header.orientation}" if header.orientation >= 5 else ""
    frame = (
        " (its size before the rotation: re-save the pixels rotated, or drop the orientation tag)"
        if rotated and (header.stored_width, header.stored_height) == (aw, ah)
        else ""
    )
    return f"decodes to {header.width}x{header.height}{rotated}, but the instances file says {aw}x{ah}{frame}"


def _check_files(dataset: CocoDataset, where: str, report: DatasetCheck, skip_unreadable: bool) -> None:
    ids = list(dataset.image_ids)
    paths = [dataset.image_path(i) for i in ids]
    headers = read_headers(paths)
    bad = [(i, p, h) for i, p, h in zip(ids, paths, headers, strict=True) if isinstance(h, str)]
    if bad and not skip_unreadable:
        fix = f"fix --images-dir or the file, or pass {SKIP_FLAG} to leave such images out"
        raise _unreadable_error([(f"image id {i}", p, why) for i, p, why in bad], len(ids), fix)
    if bad:
        _skip(dataset, bad, report)
    no_size, ambiguous = [], []
    for image_id, path, header in zip(ids, paths, headers, strict=True):
        if isinstance(header, str):
            continue
        im = dataset.coco.imgs[image_id]
        if not (_number(im.get("width")) and _number(im.get("height"))):
            no_size.append(str(image_id))
            continue
        why = _size_problem(header, im)
        if why:
            raise UserError(
                f"image id {image_id} ({path}) {why}: its boxes would be scored at the wrong place; fix the image's "
                f"width/height and boxes in {dataset.instances_path}, or use the images they were annotated on"
            )
        if header.orientation != 1 and (header.orientation < 5 or header.width == header.height):
            ambiguous.append(f"{image_id} (orientation {header.orientation})")
    _warn_sizes(report, where, no_size, ambiguous)


def _skip(dataset: CocoDataset, bad: Sequence[tuple[int, Path, str]], report: DatasetCheck) -> None:
    gone = {i for i, _, _ in bad}
    report.skipped_images = [{"image_id": i, "file": str(p), "reason": why} for i, p, why in bad]
    dataset.image_ids = [i for i in dataset.image_ids if i not in gone]
    report.warn(
        f"{SKIP_FLAG}: {len(bad)} image(s) left out of the evaluation ({_examples([str(i) for i, _, _ in bad])}): "
        "missing or unreadable; the mAP covers the other images only"
    )
    if not dataset.image_ids:
        raise UserError(f"none of the selected images can be read ({bad[0][1]}: {bad[0][2]}); check --images-dir")
    if not any(dataset.coco.imgToAnns.get(i) for i in dataset.image_ids):
        raise UserError("the readable selected images have no annotations: COCO mAP would be -1; select other images")


def _warn_sizes(report: DatasetCheck, where: str, no_size: Sequence[str], ambiguous: Sequence[str]) -> None:
    if no_size:
        report.warn(f"{where}: image(s) {_examples(list(no_size))} have no width/height: their size was not checked")
    if ambiguous:
        report.warn(
            f"image(s) {_examples(list(ambiguous))} carry an EXIF orientation that OpenCV applies on decode "
            "(flipped or rotated, same size): their boxes must be drawn on the image as viewers show it"
        )


def describe(report: DatasetCheck) -> str:
    """One line for the run summary."""
    extra = f", {len(report.skipped_images)} skipped" if report.skipped_images else ""
    return f"{report.images_checked} images in {report.seconds:.3f} s, {len(report.warnings)} warning(s){extra}"
