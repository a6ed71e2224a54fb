"""A precision search split across machines: references made with ModelOpt (--references-only), the
search on a machine without ModelOpt (several --int8-onnx, one calibration each, StripMaker candidates),
its TensorRT build and plots finished on another machine by --resume without scoring again.

The fast tests need no ModelOpt; the slow one makes the references of the fixture yolov10n with ModelOpt
(YOLO_QUANT_PYTHON, default .venv-quant/bin/python; skipped without it unless YOLO_REQUIRE_QUANT=1) and
checks that ModelOpt, given best/'s nodes_to_exclude and calibration cache, makes a candidate that
scores as the one the search removed Q/DQ pairs from.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from conftest import REPO, fixture_path

from common.core.errors import UserError
from common.data.coco import open_dataset
from common.quant.calib import build_calib_tensor, list_images_dir, select_images
from common.quant.candidates import StripMaker
from common.quant.groups import yolov10_groups
from common.quant.search_eval import ScoreOptions, Scorer
from common.quant.search_run import RunConfig, given_calibrations, run
from common.quant.search_session import SearchOptions

pytestmark = pytest.mark.fixtures

QUANT_PY = os.environ.get("YOLO_QUANT_PYTHON", str(REPO / ".venv-quant" / "bin" / "python"))
MODEL = "yolov10n-synth-dfl144"
GROUPS_FILE = {  # four coarse groups: a quick search
    "backbone": [r"/model\.[0-9]/"],
    "neck": [r"/model\.1[0-9]/", r"/model\.2[0-2]/"],
    "box": [r"/model\.23/cv2\."],
    "cls": [r"/model\.23/cv3\."],
}


def _source() -> Path:
    return fixture_path("models", f"{MODEL}.onnx")


# ----------------------------------------------------------------------------- fast: no ModelOpt, no scoring


def test_given_models_are_named_after_their_files_with_the_cache_beside_them(tmp_path):
    a, b = tmp_path / "entropy-64.onnx", tmp_path / "max-64.onnx"
    for p in (a, b):
        p.write_bytes(b"x")
    (tmp_path / "entropy-64.cache").write_text("TRT-8501-EntropyCalibration2\n")
    got = given_calibrations((a, b))
    assert got == {"entropy-64": (a, tmp_path / "entropy-64.cache"), "max-64": (b, None)}
    other = tmp_path / "o"
    other.mkdir()
    (other / "max-64.onnx").write_bytes(b"x")
    with pytest.raises(UserError, match="max-64"):
        given_calibrations((b, other / "max-64.onnx"))  # two calibrations of one name


def test_strip_maker_with_a_cache_writes_modelopt_command(tmp_path):
    source = _source()
    cache = tmp_path / "max-8.cache"
    cache.write_text("TRT-8501-EntropyCalibration2\nimages: 3c010a14\n")
    nodes = ["/model.2/cv1/conv/Conv", "/model.23/cv3.0/cv3.0.0/cv3.0.0.0/conv/Conv"]
    maker = StripMaker(source, cache, source, "int8", "/opt/mo/bin/python", ["cpu"])
    best = tmp_path / "best"
    best.mkdir()
    command = maker.reproduce(nodes, best / "model.requantized.onnx", best)
    assert (best / "calibration.cache").read_text() == cache.read_text()
    line = command.splitlines()[-1]
    assert line.startswith('"${QUANT_PYTHON:-/opt/mo/bin/python}" -m modelopt.onnx.quantization')
    assert f"--calibration_cache_path {best / 'calibration.cache'}" in line
    assert "--nodes_to_exclude" in line and "'/model\\.2/cv1/conv/Conv$'" in line
    assert "--high_precision_dtype fp32" in line  # the fixture float model has no float16 tensor
    plain = StripMaker(source).reproduce(nodes, best / "x.onnx", best)
    assert "modelopt" not in plain and "no ModelOpt command" in plain


def test_scoring_refuses_an_accelerator_this_onnxruntime_lacks(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    root = fixture_path("synthcoco")
    ds = open_dataset(root / "annotations" / "instances_valA.json", root / "valA", 2)
    scorer = Scorer(ds, ds.image_ids, ScoreOptions(providers=("CUDAExecutionProvider", "CPUExecutionProvider")))
    with pytest.raises(UserError, match=r"CUDAExecutionProvider.*state\.json"):
        scorer.run(_source(), "full")


def test_resume_takes_the_runs_providers(tmp_path):
    from search_precision import _providers, build_parser

    (tmp_path / "state.json").write_text(json.dumps({"fingerprint": {"providers": ["CUDAExecutionProvider"]}}))
    args = build_parser().parse_args(["--onnx-path", "m.onnx", "--out", str(tmp_path), "--resume"])
    assert _providers(args) == ("CUDAExecutionProvider",)
    args = build_parser().parse_args(["--onnx-path", "m.onnx", "--providers", "CPUExecutionProvider"])
    assert _providers(args) == ("CPUExecutionProvider",)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([], "--out"),
        (["--out", "R", "--int8-onnx", "X"], "--references-only"),
        (["--out", "R"], "--calib"),
    ],
)
def test_references_only_refuses_bad_input(tmp_path, monkeypatch, capsys, extra, says):
    from search_precision import main

    from common.core.cli import run_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "X").write_bytes(b"x")
    assert run_main(main, ["--onnx-path", str(_source()), "--references-only", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not (tmp_path / "R").exists()


# ----------------------------------------------------------------------------- slow: the whole hand-off


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> Path:
    """--references-only on the fixture: FP16, and two calibrations (max on 8 and on 4 images)."""
    from search_precision import main

    if not Path(QUANT_PY).is_file():
        if os.environ.get("YOLO_REQUIRE_QUANT") == "1":
            pytest.fail(f"no ModelOpt interpreter at {QUANT_PY}")
        pytest.skip(f"no ModelOpt interpreter at {QUANT_PY} (bash scripts/dev/setup-quant-venv.sh)")
    work = tmp_path_factory.mktemp("handoff")
    calib = work / "calib8.npy"
    build_calib_tensor(select_images(list_images_dir(fixture_path("synthcoco", "valA")), 8, 0), calib, progress=False)
    argv = ["--onnx-path", str(_source()), "--references-only", "--out", str(work / "refs"), "--calib", str(calib)]
    argv += ["--calib-methods", "max", "--calib-counts", "8", "4", "--quant-python", QUANT_PY]
    argv += ["--calibration-eps", "cpu"]
    assert main(argv) == 0
    return work


def _search(work: Path, out: Path, **kw) -> RunConfig:
    groups = work / "groups.json"
    groups.write_text(json.dumps(GROUPS_FILE))
    cal = work / "refs" / "calibration"
    return RunConfig(
        source=_source(),
        out=out,
        fp16_onnx=work / "refs" / "references" / "fp16.onnx",
        int8_onnx=(cal / "max-8.onnx", cal / "max-4.onnx"),
        groups=str(groups),
        quant_python=QUANT_PY,
        progress=False,
        command="test",
        search=SearchOptions(max_evals=20, budget=0.003, build="none"),
        score=ScoreOptions(replicates=50, workers=2),
        **kw,
    )


@pytest.mark.slow
def test_search_on_given_references_then_finished_elsewhere(refs, monkeypatch):
    from common.quant import search_run

    for name in ("max-8", "max-4"):
        assert (refs / "refs" / "calibration" / f"{name}.onnx").is_file()
        assert (refs / "refs" / "calibration" / f"{name}.cache").is_file()
    root = fixture_path("synthcoco")
    ds = open_dataset(root / "annotations" / "instances_valA.json", root / "valA", 10)
    cfg = _search(refs, refs / "run")
    first = run(cfg, ds, ds.image_ids[:6])
    rows = [json.loads(x) for x in (refs / "run" / "search.jsonl").read_text().splitlines()]
    sweep = [r for r in rows if r["phase"] == "calibration"]
    assert sorted(r["calibration"] for r in sweep) == ["max-4", "max-8"]
    chosen = max(sweep, key=lambda r: (r["mAP"], -r["eval"]))["calibration"]
    assert first.session.calibration == chosen
    assert first.result.best is not None, first.verdict
    best = refs / "run" / "best"
    script = (best / "quantize_command.sh").read_text()
    assert "modelopt.onnx.quantization" in script and (best / "calibration.cache").is_file()
    assert (best / "calibration.cache").read_text() == (refs / "refs" / "calibration" / f"{chosen}.cache").read_text()
    assert "- candidate maker: StripMaker" in (refs / "run" / "summary.md").read_text()
    assert not (best / "model.engine").exists()

    # finished on another machine: nothing is scored again, the build runs, the plots come back
    def no_scoring(self, path, subset):
        raise AssertionError(f"scored {path} again")

    def fake_builder(cfg):
        def build(onnx_path, engine):
            engine.write_bytes(b"engine")
            engine.with_name(engine.name + ".json").write_text("{}")
            return {"ok": True, "api": "fake", "engine": str(engine), "seconds": 0.1, "layer_summary": None}

        return build, None

    monkeypatch.setattr(Scorer, "run", no_scoring)
    monkeypatch.setattr(search_run, "_builder", fake_builder)
    for png in (refs / "run").glob("*.png"):
        png.unlink()
    again = run(replace(cfg, resume=True, search=replace(cfg.search, build="final")), ds, ds.image_ids[:6])
    assert again.verdict == first.verdict
    assert (best / "model.engine").is_file() and (best / "model.engine.json").is_file()
    assert json.loads((best / "metrics.json").read_text())["engine"]["ok"] is True
    summary = (refs / "run" / "summary.md").read_text()
    assert "best/ TensorRT build (fake)" in summary and "onnxruntime " in summary
    assert (refs / "run" / "pareto.png").is_file()
    monkeypatch.undo()
    _requantize_from_best(best, ds)


def _requantize_from_best(best: Path, ds) -> None:
    """best/quantize_command.sh (ModelOpt, best/nodes_to_exclude.txt + best/calibration.cache) makes a model that
    scores as best/model.onnx on the full set, within 0.0005 mAP."""
    import re

    script = (best / "quantize_command.sh").read_text()
    for name in (best / "nodes_to_exclude.txt").read_text().split():
        assert f"'{re.escape(name)}$'" in script or f" {re.escape(name)}$" in script, name
    env = {**os.environ, "QUANT_PYTHON": QUANT_PY}
    res = subprocess.run(["bash", str(best / "quantize_command.sh")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    scorer = Scorer(ds, ds.image_ids, ScoreOptions(replicates=0, workers=2))
    ap = [scorer.run(p, "full").stats["AP"] for p in (best / "model.onnx", best / "model.requantized.onnx")]
    assert abs(ap[0] - ap[1]) <= 0.0005, ap


@pytest.mark.slow
def test_modelopt_with_the_cache_and_exclusions_scores_as_the_stripped_candidate(refs):
    """What best/quantize_command.sh does for a StripMaker candidate: ModelOpt's CLI with nodes_to_exclude and
    the calibration cache the given INT8-all was made with; its mAP must match the stripped candidate's."""
    cal = refs / "refs" / "calibration"
    maker = StripMaker(cal / "max-8.onnx", cal / "max-8.cache", _source(), "int8", QUANT_PY, ["cpu"])
    groups = {g.name: g for g in yolov10_groups(onnx.load(str(_source()), load_external_data=False))}
    nodes = [*groups["model.2"].nodes, *groups["model.23.cv3.0"].nodes]
    folder = refs / "repro"
    folder.mkdir()
    stripped, again = folder / "stripped.onnx", folder / "again.onnx"
    maker.make(nodes, stripped)
    command = maker.reproduce(nodes, again, folder).splitlines()[-1]
    res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    root = fixture_path("synthcoco")
    ds = open_dataset(root / "annotations" / "instances_valA.json", root / "valA", 10)
    scorer = Scorer(ds, ds.image_ids, ScoreOptions(replicates=0, workers=2))
    ap = [scorer.run(p, "full").stats["AP"] for p in (stripped, again)]
    assert abs(ap[0] - ap[1]) <= 0.0005, ap
