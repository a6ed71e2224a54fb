"""common.data.headers / common.data.check: the header reader agrees with OpenCV's decoder, and the
dataset check sorts defects into errors and warnings (the CLI cases are in test_bad_input_matrix.py)."""

from __future__ import annotations

import json
import shutil
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import MINI

from common.core.errors import UserError
from common.data.check import check_dataset, check_image_files
from common.data.coco import open_dataset
from common.data.headers import Unreadable, read_image_header


def _tiff_orientation(value: int, big_endian: bool = False) -> bytes:
    e = ">" if big_endian else "<"
    head = b"MM\x00*" if big_endian else b"II*\x00"
    entry = struct.pack(e + "HHIHH", 0x0112, 3, 1, value, 0)  # tag, SHORT, count 1, value
    return head + struct.pack(e + "IH", 8, 1) + entry + struct.pack(e + "I", 0)


def jpeg_with_orientation(img: np.ndarray, orientation: int, big_endian: bool = False) -> bytes:
    """A JPEG of ``img`` with an EXIF APP1 segment holding ``orientation`` (written by hand: no Pillow needed)."""
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    data = buf.tobytes()
    payload = b"Exif\x00\x00" + _tiff_orientation(orientation, big_endian)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + app1 + data[2:]


def png_with_orientation(img: np.ndarray, orientation: int) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    data = buf.tobytes()
    tiff = _tiff_orientation(orientation)
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    return data[:33] + chunk + data[33:]  # after the signature and IHDR


def _img(h: int = 30, w: int = 70) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _decoded_hw(path: Path) -> tuple[int, int]:
    img = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
    return img.shape[1], img.shape[0]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["jpeg", "jpeg-big-endian", "png"])
def test_header_size_is_the_decoded_size(tmp_path, orientation, kind):
    path = tmp_path / ("a.png" if kind == "png" else "a.jpg")
    if kind == "png":
        path.write_bytes(png_with_orientation(_img(), orientation))
    else:
        path.write_bytes(jpeg_with_orientation(_img(), orientation, big_endian=kind.endswith("endian")))
    header = read_image_header(path)
    assert (header.width, header.height) == _decoded_hw(path)  # what OpenCV really gives
    assert (header.stored_width, header.stored_height) == (70, 30) and header.orientation == orientation


@pytest.mark.parametrize("suffix", [".bmp", ".webp", ".tif"])
def test_other_formats_fall_back_to_a_decode(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    cv2.imwrite(str(path), _img(21, 13))
    header = read_image_header(path)
    assert (header.width, header.height) == (13, 21) and header.kind == "other"


@pytest.mark.parametrize(
    "cut, why",
    [
        (lambda b: b[:-2], "end-of-image"),  # OpenCV refuses a JPEG without its EOI marker
        (lambda b: b[:400], "end-of-image"),
        (lambda b: b[:3], "truncated"),
        (lambda b: b"", "empty"),
        (lambda b: b"not an image at all", "decode"),
    ],
)
def test_truncated_or_foreign_files_are_unreadable(tmp_path, cut, why):
    _, buf = cv2.imencode(".jpg", _img(200, 300))
    path = tmp_path / "a.jpg"
    path.write_bytes(cut(buf.tobytes()))
    with pytest.raises(Unreadable, match=why):
        read_image_header(path)
    data = np.fromfile(str(path), np.uint8)
    assert data.size == 0 or cv2.imdecode(data, cv2.IMREAD_COLOR) is None  # OpenCV agrees


def test_a_truncated_png_is_unreadable(tmp_path):
    _, buf = cv2.imencode(".png", _img())
    path = tmp_path / "a.png"
    path.write_bytes(buf.tobytes()[:-12])
    with pytest.raises(Unreadable, match="IEND"):
        read_image_header(path)


def test_data_after_the_end_marker_is_fine(tmp_path):
    _, buf = cv2.imencode(".jpg", _img())
    path = tmp_path / "a.jpg"
    path.write_bytes(buf.tobytes() + b"\x00" * 5000)
    assert (read_image_header(path).width, read_image_header(path).height) == (70, 30) == _decoded_hw(path)


# ----------------------------------------------------------------------------- the dataset check


def _mini_copy(tmp_path: Path, n: int = 3) -> tuple[Path, Path, dict]:
    data = json.loads((MINI / "annotations" / "instances_val2017.json").read_text())
    keep = sorted(im["id"] for im in data["images"])[:n]
    images = tmp_path / "img"
    images.mkdir()
    for im in data["images"]:
        if im["id"] in keep:
            shutil.copyfile(MINI / "val2017" / im["file_name"], images / im["file_name"])
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return tmp_path / "instances.json", images, data


def _open(tmp_path: Path, data: dict, images: Path):
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps(data))
    return open_dataset(inst, images, 0)


def test_a_clean_set_passes_without_warnings(tmp_path):
    _, images, data = _mini_copy(tmp_path)
    ds = _open(tmp_path, data, images)
    report = check_dataset(ds)
    assert report.warnings == [] and report.skipped_images == [] and report.images_checked == 3


def test_missing_iscrowd_and_area_are_filled_in_the_loaded_copy_only(tmp_path):
    _, images, data = _mini_copy(tmp_path)
    for a in data["annotations"]:
        del a["iscrowd"], a["area"]
    ds = _open(tmp_path, data, images)
    before = (tmp_path / "instances.json").read_bytes()
    report = check_dataset(ds)
    assert report.filled == {"iscrowd": len(data["annotations"]), "area": len(data["annotations"])}
    assert any("iscrowd 0, area = box width x height" in w for w in report.warnings)
    a = ds.coco.dataset["annotations"][0]
    assert a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])
    assert ds.coco.anns[a["id"]] is a  # the index sees the same dicts
    assert (tmp_path / "instances.json").read_bytes() == before


def test_skip_unreadable_drops_the_image_and_records_it(tmp_path):
    _, images, data = _mini_copy(tmp_path)
    gone = data["images"][1]
    (images / gone["file_name"]).unlink()
    ds = _open(tmp_path, data, images)
    with pytest.raises(UserError, match=rf"image id {gone['id']} .* not found.*--skip-unreadable-images"):
        check_dataset(ds)
    report = check_dataset(ds, skip_unreadable=True)
    assert gone["id"] not in ds.image_ids and len(ds.image_ids) == 2
    assert report.skipped_images == [
        {"image_id": gone["id"], "file": str(images / gone["file_name"]), "reason": "not found"}
    ]


def test_calibration_images_are_checked_too(tmp_path):
    good = tmp_path / "a.jpg"
    cv2.imwrite(str(good), _img())
    bad = tmp_path / "b.jpg"
    bad.write_bytes(good.read_bytes()[:-2])
    with pytest.raises(UserError, match=r"b.jpg .* end-of-image"):
        check_image_files([good, bad])
    keep, report = check_image_files([good, bad], skip_unreadable=True)
    assert keep == [0] and report.skipped_images[0]["file"] == str(bad)


def test_the_check_takes_milliseconds_per_image(tmp_path):
    """300 selected images (the mini set's 50 files, listed 6 times under new ids) in well under 3 ms each."""
    data = json.loads((MINI / "annotations" / "instances_val2017.json").read_text())
    images = tmp_path / "img"
    images.mkdir()
    out = {"images": [], "annotations": [], "categories": data["categories"]}
    anns = {}
    for a in data["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for k in range(6):
        for im in data["images"]:
            name = f"{k}_{im['file_name']}"
            (images / name).symlink_to(MINI / "val2017" / im["file_name"])
            new_id = k * 1000 + im["id"]
            out["images"].append({**im, "id": new_id, "file_name": name})
            out["annotations"] += [
                {**a, "id": len(out["annotations"]) + j + 1, "image_id": new_id}
                for j, a in enumerate(anns.get(im["id"], []))
            ]
    ds = _open(tmp_path, out, images)
    t0 = time.perf_counter()
    report = check_dataset(ds)
    assert report.images_checked == 300 and report.warnings == []
    assert time.perf_counter() - t0 < 0.9, report.seconds


def test_integral_float_annotation_ids_are_ids(tmp_path):
    """Some exporters write ids as 7.0: the same dictionary key to COCOeval, so no refusal."""
    _, images, data = _mini_copy(tmp_path)
    for k, a in enumerate(data["annotations"], 1):
        a["id"] = float(k)
    assert check_dataset(_open(tmp_path, data, images)).warnings == []
