"""make_calib_npy.py / common.quant.calib: the calibration tensor is the evaluation letterbox, recorded and checked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import MINI, fixture_path, run_script

from common.core.errors import UserError
from common.data.images import load_image_rgb, preprocess
from common.quant.calib import load_calib_tensor, read_image_list, select_images

MINI_IMAGES = MINI / "val2017"


def _make(tmp_path: Path, *args: str) -> tuple[np.ndarray, dict, Path]:
    out = tmp_path / "calib.npy"
    res = run_script("make_calib_npy.py", *args, "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    return np.load(out), json.loads((tmp_path / "calib.npy.json").read_text()), out


def test_sampled_tensor_matches_evaluation_letterbox(tmp_path):
    arr, rec, out = _make(
        tmp_path, "--images-dir", str(MINI_IMAGES), "--num-images", "5", "--seed", "3", "--imgsz", "320"
    )
    assert arr.dtype == np.float32 and arr.shape == (5, 3, 320, 320)
    assert rec["shape"] == [5, 3, 320, 320] and rec["num_images"] == 5 and rec["seed"] == 3
    assert len(set(rec["image_ids"])) == 5
    # each slice is exactly common.data.images.preprocess of the recorded file (the evaluator's letterbox)
    for i, name in enumerate(rec["file_names"]):
        expected, _ = preprocess(load_image_rgb(MINI_IMAGES / name), 320)
        np.testing.assert_array_equal(arr[i], expected)
        assert rec["image_ids"][i] == int(Path(name).stem)
    # the .txt lists the same images and can be fed back as --image-list to rebuild the same tensor
    listed = read_image_list(out.with_name("calib.npy.txt"))
    assert [p.name for p in listed] == rec["file_names"]
    again, _, _ = _make(tmp_path / "again", "--image-list", str(out.with_name("calib.npy.txt")), "--imgsz", "320")
    np.testing.assert_array_equal(again, arr)


def test_seed_changes_selection_and_is_reproducible():
    files = sorted(MINI_IMAGES.glob("*.jpg"))
    a = [c.image_id for c in select_images(files, 10, seed=0)]
    b = [c.image_id for c in select_images(files, 10, seed=0)]
    c = [c.image_id for c in select_images(files, 10, seed=1)]
    assert a == b and a != c and a == sorted(a)
    assert len(select_images(files, 0, seed=0)) == len(files)


def test_too_many_images_is_a_clear_error(tmp_path):
    res = run_script(
        "make_calib_npy.py",
        "--images-dir",
        str(MINI_IMAGES),
        "--max-images",
        "100000",
        "--out",
        str(tmp_path / "c.npy"),
    )
    assert res.returncode == 2
    assert "--max-images" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "c.npy").exists()


def test_missing_images_dir(tmp_path):
    res = run_script("make_calib_npy.py", "--images-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "c.npy"))
    assert res.returncode == 2 and "--images-dir" in res.stderr


def test_help_shows_an_example():
    res = run_script("make_calib_npy.py", "--help")
    assert res.returncode == 0 and "examples:" in res.stdout and "--max-images" in res.stdout


@pytest.mark.fixtures
def test_fixture_set_calibration(tmp_path):
    images = fixture_path("synthcoco", "valA")
    arr, rec, _ = _make(
        tmp_path, "--data-root", str(images.parent), "--images-dir", "valA", "--num-images", "8", "--seed", "0"
    )
    assert arr.shape == (8, 3, 640, 640)
    assert 0.0 <= float(arr.min()) and float(arr.max()) <= 1.0
    gt = json.loads(fixture_path("synthcoco", "annotations", "instances_valA.json").read_text())
    assert set(rec["image_ids"]) <= {im["id"] for im in gt["images"]}


# ----------------------------------------------------------------------------- load_calib_tensor


def _save(tmp_path: Path, arr: np.ndarray) -> Path:
    p = tmp_path / "c.npy"
    np.save(p, arr)
    return p


def test_load_accepts_a_good_tensor(tmp_path):
    p = _save(tmp_path, np.full((2, 3, 64, 64), 0.5, np.float32))
    assert load_calib_tensor(p, expected_hw=(64, 64), expected_batch=1).shape == (2, 3, 64, 64)


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((2, 3, 64, 64), np.float64), r"dtype float64; expected float32"),
        (np.zeros((3, 64, 64), np.float32), r"shape \[3, 64, 64\]; expected \[N,3,H,W\]"),
        (np.zeros((2, 64, 64, 3), np.float32), r"expected \[N,3,H,W\]"),
        (np.zeros((2, 3, 32, 32), np.float32), r"32x32 but the model input is 64x64"),
        (np.zeros((0, 3, 64, 64), np.float32), r"holds no images"),
        (np.full((1, 3, 64, 64), np.nan, np.float32), r"NaN"),
    ],
)
def test_load_rejects_bad_tensors(tmp_path, arr, match):
    p = _save(tmp_path, arr)
    with pytest.raises(UserError, match=match):
        load_calib_tensor(p, expected_hw=(64, 64))


def test_load_rejects_batch_mismatch_and_warns_on_unscaled(tmp_path, caplog):
    p = _save(tmp_path, np.full((3, 3, 64, 64), 200.0, np.float32))
    with pytest.raises(UserError, match=r"not a multiple of the model's batch size 2"):
        load_calib_tensor(p, expected_batch=2)
    with caplog.at_level(logging.WARNING):
        load_calib_tensor(p)
    assert "/255" in caplog.text


def test_load_missing_and_garbage(tmp_path):
    with pytest.raises(UserError, match=r"not found.*make_calib_npy"):
        load_calib_tensor(tmp_path / "none.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(UserError, match=r"not a readable \.npy"):
        load_calib_tensor(bad)
