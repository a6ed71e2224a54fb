"""scripts/dev/make_repeated_set.py: the performance page's large sets (``rep5000``) made from a small one."""

from __future__ import annotations

import json
from pathlib import Path

from cli_parsers import load_script
from conftest import MINI

R = load_script("scripts/dev/make_repeated_set.py")


def test_each_image_repeats_with_its_own_annotations_under_fresh_ids_and_names(tmp_path: Path) -> None:
    src = json.loads((MINI / "annotations" / "instances_val2017.json").read_text())
    n = 2 * len(src["images"]) + 3
    out = tmp_path / "rep"
    argv = ["--instances", str(MINI / "annotations" / "instances_val2017.json")]
    argv += ["--images-dir", str(MINI / "val2017"), "--images", str(n), "--out", str(out)]
    assert R.main(argv) == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    by_id = sorted(src["images"], key=lambda im: im["id"])
    assert [im["id"] for im in rep["images"]] == list(range(1, n + 1))
    assert len({im["file_name"] for im in rep["images"]}) == n  # fresh names: no two images share a file
    per_src = {im["id"]: [a for a in src["annotations"] if a["image_id"] == im["id"]] for im in by_id}
    for k, im in enumerate(rep["images"]):
        orig = by_id[k % len(by_id)]
        assert (im["width"], im["height"]) == (orig["width"], orig["height"])
        link = out / im["file_name"]
        assert link.is_symlink() and link.resolve() == (MINI / "val2017" / orig["file_name"]).resolve()
        got = [a for a in rep["annotations"] if a["image_id"] == im["id"]]
        assert [a["bbox"] for a in got] == [a["bbox"] for a in per_src[orig["id"]]]
    assert len({a["id"] for a in rep["annotations"]}) == len(rep["annotations"])
    assert rep["categories"] == src["categories"]


def test_an_existing_output_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    (tmp_path / "rep.json").write_text("{}")
    argv = ["--instances", str(MINI / "annotations" / "instances_val2017.json")]
    argv += ["--images-dir", str(MINI / "val2017"), "--images", "10", "--out", str(tmp_path / "rep")]
    assert R.main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "rep.json").read_text() == "{}" and not (tmp_path / "rep").exists()
