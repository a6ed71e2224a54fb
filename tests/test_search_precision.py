"""search_precision.py and its run on the fixture yolov10n (ONNX Runtime CPU).

The oracle: one group's Q/DQ in a copy of a ModelOpt INT8 model is corrupted (its DequantizeLinear
scales x10, so its convs see inputs and weights ten times too large); the search must rank that group
first and keep it in high precision. The corrupted model is given as ``int8_onnx``: candidates restore
a group's float path by removing its Q/DQ pairs, so no ModelOpt call runs per candidate. The budget
lies halfway between the mAP cost of the clean and of the corrupted INT8 model. Which groups are
corrupted: ORACLE_GROUPS, or the environment variable YOLO_ORACLE_GROUPS (comma-separated); a group
whose corruption costs less than 0.03 mAP (downstream quantizers clamp its damage) has nothing to find.

ModelOpt (YOLO_QUANT_PYTHON, default .venv-quant/bin/python) makes the INT8 model once per module;
without it these tests skip, unless YOLO_REQUIRE_QUANT=1.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import REPO, fixture_path, run_script
from onnx import numpy_helper

from common.core.errors import UserError
from common.data.coco import open_dataset
from common.quant.calib import build_calib_tensor, list_images_dir, select_images
from common.quant.groups import yolov10_groups
from common.quant.qdq_graph import qdq_feeding
from common.quant.search_eval import ScoreOptions
from common.quant.search_run import RunConfig, run
from common.quant.search_session import SearchOptions
from common.quant.worker_client import ModelOptWorker

pytestmark = pytest.mark.fixtures

QUANT_PY = os.environ.get("YOLO_QUANT_PYTHON", str(REPO / ".venv-quant" / "bin" / "python"))
MODEL = "yolov10n-synth-dfl144"  # the users' layout; its input is a fixed 640x640
ORACLE_GROUPS = [g for g in os.environ.get("YOLO_ORACLE_GROUPS", "model.23.cv3.1").split(",") if g]
SCREEN, FULL = 6, 10  # images of the resume test
ORACLE_IMAGES = 8  # screen = full set: the corrupted group dominates, a few images see it


def _skip_or_fail(msg: str) -> None:
    if os.environ.get("YOLO_REQUIRE_QUANT") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("search")


@pytest.fixture(scope="module")
def calib(work) -> Path:
    images = select_images(list_images_dir(fixture_path("synthcoco", "valA")), 8, 0)
    out = work / "calib8.npy"
    build_calib_tensor(images, out, progress=False)
    return out


@pytest.fixture(scope="module")
def worker(work):
    if not Path(QUANT_PY).is_file():
        _skip_or_fail(f"no ModelOpt interpreter at {QUANT_PY} (bash scripts/dev/setup-quant-venv.sh)")
    w = ModelOptWorker(QUANT_PY, work / "modelopt.log")
    try:
        w.start()
    except UserError as exc:
        _skip_or_fail(str(exc))
    yield w
    w.close()


@pytest.fixture(scope="module")
def int8(work, calib, worker) -> Path:
    """INT8-all of the fixture by ModelOpt: max calibration on 8 images, float32 high precision."""
    out = work / "int8.onnx"
    src = fixture_path("models", f"{MODEL}.onnx")
    worker.call(
        "ptq",
        src=str(src),
        out=str(out),
        mode="int8",
        calib=str(calib),
        calib_count=8,
        method="max",
        eps=["cpu"],
        nodes_to_exclude=[],
        high_precision_dtype="fp32",
        cache=None,
    )
    return out


@pytest.fixture(scope="module")
def data():
    root = fixture_path("synthcoco")
    ds = open_dataset(root / "annotations" / "instances_valA.json", root / "valA", FULL)
    return ds, ds.image_ids[:SCREEN]


def corrupt(model: onnx.ModelProto, nodes: tuple[str, ...], factor: float = 10.0) -> tuple[onnx.ModelProto, int]:
    """A copy whose DequantizeLinear scales feeding only ``nodes`` are multiplied by ``factor``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    readers: dict[str, set[str]] = {}
    for n in out.graph.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.name)
    inits = {t.name: t for t in out.graph.initializer}
    count = 0
    for _, dq in qdq_feeding(out, nodes):
        if not readers[dq.output[0]] <= set(nodes):
            continue  # shared with another group: corrupting it would corrupt that group too
        name = f"{dq.input[1]}_oracle"
        scale = numpy_helper.to_array(inits[dq.input[1]]) * np.float32(factor)
        out.graph.initializer.append(numpy_helper.from_array(scale, name))
        dq.input[1] = name
        count += 1
    return out, count


def _config(source: Path, out: Path, int8: Path, **search) -> RunConfig:
    opts = SearchOptions(**{"max_evals": 60, "build": "none", **search})
    return RunConfig(
        source=source,
        out=out,
        fp16_onnx=source,  # the float model is the reference here
        int8_onnx=(int8,),
        progress=False,
        command="test",
        search=opts,
        score=ScoreOptions(replicates=50, workers=2),
    )


@pytest.fixture(scope="module")
def oracle_data():
    """One image set for screen and full (the search then never disagrees with itself between them)."""
    root = fixture_path("synthcoco")
    ds = open_dataset(root / "annotations" / "instances_valA.json", root / "valA", ORACLE_IMAGES)
    return ds, ds.image_ids


@pytest.mark.slow
@pytest.mark.parametrize("group", ORACLE_GROUPS)
def test_oracle_corrupted_group_is_ranked_first_and_kept(work, int8, oracle_data, group):
    from common.quant.search_eval import Scorer

    source = fixture_path("models", f"{MODEL}.onnx")
    groups = {g.name: g for g in yolov10_groups(onnx.load(str(source), load_external_data=False))}
    bad, count = corrupt(onnx.load(str(int8)), groups[group].nodes)
    assert count > 0, f"{group} has no Q/DQ pair of its own to corrupt"
    path = work / f"int8-{group}-x10.onnx"
    onnx.save(bad, str(path))
    # the budget lies halfway between what INT8-all costs and what the corrupted INT8-all costs
    scorer = Scorer(*oracle_data, ScoreOptions(replicates=0, workers=2))
    ref, clean, worse = (scorer.run(p, "full").stats["AP"] for p in (source, int8, path))
    damage = clean - worse
    assert damage >= 0.03, f"corrupting {group} costs {damage:+.4f} mAP here: nothing to find, choose another group"
    budget = (ref - clean) + damage / 2
    out = work / f"run-{group}"
    outcome = run(_config(source, out, path, budget=budget), *oracle_data)
    res = outcome.result
    top = [(r.group.name, round(r.gain.delta, 4)) for r in res.ranking[:3]]
    assert res.ranking[0].group.name == group, top
    assert res.best is not None and group in res.best.excluded
    rows = [json.loads(x) for x in (out / "search.jsonl").read_text().splitlines()]
    assert len(rows) == outcome.session.evals_used and rows[0]["phase"] == "calibration"
    assert not rows[0]["within_budget"]
    report = json.loads((out / "layer-sensitivity-report.json").read_text())
    assert {"scheme", "model", "dataset", "quantization", "run_config", "autoquant_state"} <= set(report)
    assert report["layer_sensitivity"][0]["layer"] == group
    kept_nodes = (out / "best" / "nodes_to_exclude.txt").read_text().split()
    assert set(groups[group].nodes) <= set(kept_nodes)
    assert outcome.verdict.startswith("VERDICT: ") and outcome.verdict in (out / "summary.md").read_text()


GROUPS_FILE = {  # four coarse groups: a quick search
    "backbone": [r"/model\.[0-9]/"],
    "neck": [r"/model\.1[0-9]/", r"/model\.2[0-2]/"],
    "box": [r"/model\.23/cv2\."],
    "cls": [r"/model\.23/cv3\."],
}


@pytest.mark.slow
def test_resume_continues_to_the_same_result(work, int8, data, monkeypatch):
    from common.quant.search_eval import Scorer

    source = fixture_path("models", f"{MODEL}.onnx")
    groups = work / "groups.json"
    groups.write_text(json.dumps(GROUPS_FILE))
    base = replace(_config(source, work / "fresh", int8, budget=0.02), groups=str(groups))
    fresh = run(replace(base, quant_workers=2), *data)  # the ranking's candidates made two at a time
    cut = replace(base, out=work / "cut")
    real, calls = Scorer.run, []

    def interrupted(self, path, subset):
        calls.append(path)
        if len(calls) == 6:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the search
        return real(self, path, subset)

    monkeypatch.setattr(Scorer, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cut, *data)
    monkeypatch.undo()
    done = [k for k in json.loads((work / "cut" / "state.json").read_text())["entries"] if not k.startswith("ref|")]
    assert len(done) >= 2
    with pytest.raises(UserError, match="--resume"):
        run(cut, *data)  # the folder holds a search: continuing it needs --resume
    resumed = run(replace(cut, resume=True), *data)
    key = [(r.phase, r.subset, r.excluded, r.stats["AP"]) for r in fresh.session.records]
    assert [(r.phase, r.subset, r.excluded, r.stats["AP"]) for r in resumed.session.records] == key
    assert [r.resumed for r in resumed.session.records] == [i < len(done) for i in range(len(key))]
    assert resumed.verdict == fresh.verdict
    other = replace(cut, resume=True, score=replace(base.score, imgsz=320))
    with pytest.raises(UserError, match=r"imgsz"):
        run(other, *data)  # other inputs: refused, nothing evaluated


@pytest.mark.slow
def test_requantizing_from_best_reproduces_the_candidate(work, calib, worker, data):
    """The search's ModelOpt path in its cheap form: one calibration cache, one candidate made through the
    worker, then the exact command written to best/quantize_command.sh (ModelOpt's CLI) run again."""
    from common.quant.candidates import ModelOptMaker
    from common.quant.modelopt_calibration import calibrations
    from common.quant.search_eval import Scorer

    source = fixture_path("models", f"{MODEL}.onnx")
    (cal,) = calibrations(worker, source, calib, "int8", [("max", 8)], ["cpu"], work / "repro")
    maker = ModelOptMaker(worker, source, "int8", cal, "fp16", ["cpu"])
    groups = {g.name: g for g in yolov10_groups(onnx.load(str(source), load_external_data=False))}
    nodes = [*groups["model.2"].nodes, *groups["model.23.cv3.0"].nodes]
    made = work / "repro" / "made.onnx"
    maker.make(nodes, made)
    again = work / "repro" / "again.onnx"
    command = maker.reproduce(nodes, again, work / "repro")
    assert (work / "repro" / "calibration.cache").is_file()
    res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = onnx.load(str(made)), onnx.load(str(again))
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    ia = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia)
    scorer = Scorer(data[0], data[1], ScoreOptions(replicates=0, workers=2))
    ap_a, ap_b = (scorer.run(p, "screen").stats["AP"] for p in (made, again))
    assert abs(ap_a - ap_b) <= 0.0005


# ----------------------------------------------------------------------------- bad input: one line, exit 2


def _cli(capsys, tmp_path: Path, *extra: str) -> str:
    """search_precision.py in this process: its exit code must be 2, its error one line; returns that line."""
    from search_precision import main

    from common.core.cli import run_main

    root = fixture_path("synthcoco")
    argv = [
        "--onnx-path",
        str(fixture_path("models", f"{MODEL}.onnx")),
        "--data-root",
        str(root),
        "--instances",
        str(root / "annotations" / "instances_valA.json"),
        "--images-dir",
        str(root / "valA"),
        "--quant-python",
        str(tmp_path / "no-python"),
        "--no-progress",
        *extra,
    ]
    capsys.readouterr()
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_cli_refuses_bad_input_before_any_work(tmp_path, calib, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run folder would land in tmp_path/tmp/search
    cli = lambda *a: _cli(capsys, tmp_path, *a)  # noqa: E731
    assert "--calib" in cli()
    assert "--max-evals 10" in cli("--calib", str(calib), "--max-evals", "10")
    assert "30 groups" in cli("--calib", str(calib), "--max-evals", "10")
    assert "--budget" in cli("--calib", str(calib), "--budget", "0")
    assert "--resume" in cli("--calib", str(calib), "--resume")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text("{}")
    assert "--resume" in cli("--calib", str(calib), "--out", str(tmp_path / "run"))
    bad = tmp_path / "g.json"
    bad.write_text(json.dumps({"x": [r"/model\.99/"]}))
    assert "matches no node" in cli("--calib", str(calib), "--groups", str(bad))
    assert "--calib-counts 9" in cli("--calib", str(calib), "--calib-counts", "9")
    assert "--quant-python" in cli("--calib", str(calib))
    left = list((tmp_path / "tmp" / "search").glob("*")) if (tmp_path / "tmp").exists() else []
    assert not left, "a run that failed before any evaluation leaves no run folder"


def test_cli_help_runs_standalone():
    res = run_script("search_precision.py", "--help")
    assert res.returncode == 0 and "--max-evals" in res.stdout and "examples:" in res.stdout
