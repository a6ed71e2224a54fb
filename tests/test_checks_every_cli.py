"""Each range or compatibility check, through every CLI that takes the flag: exit 2, one line naming the flag,
before any model work (the model paths need not even exist for the refusal)."""

from __future__ import annotations

import pytest
from cli_parsers import cli_scripts, load_script, parser_of
from conftest import DEMO_MODEL, MINI

from common.core.cli import run_main

# the arguments each CLI needs besides the flag under test (nothing else is read before the refusal)
BASE: dict[str, list[str]] = {
    "eval_yolov10m_onnx_coco": ["--onnx-path", str(DEMO_MODEL)],
    "eval_yolov10m_trt_coco": ["--onnx-path", str(DEMO_MODEL)],
    "demo": [],
    "bench_eval_throughput": ["--onnx-path", str(DEMO_MODEL)],
    "bench_gpu_postprocess": [],
    "build_trt_engine": ["--onnx-path", str(DEMO_MODEL)],
    "infer_trt_engine": ["--engine-path", "missing.engine"],
    "make_calib_npy": ["--images-dir", str(MINI / "val2017"), "--out", "c.npy"],
    "validate_e2e": ["--onnx-path", str(DEMO_MODEL)],
    "compare_runs": ["missing.json"],
    "search_precision": ["--onnx-path", str(DEMO_MODEL)],
}

# (flag, a refused value, more arguments the refusal needs)
CHECKS: list[tuple[str, str, list[str]]] = [
    ("--conf", "1.5", []),
    ("--iou", "0", []),
    ("--max-det", "0", []),
    ("--pre-nms-topk", "0", []),
    ("--imgsz", "-32", []),
    ("--batch-size", "0", []),
    ("--batch-sizes", "0", []),
    ("--workers", "-1", []),
    ("--warmup-runs", "-1", []),
    ("--skip-latency", "-1", []),
    ("--latency-runs", "-1", []),
    ("--switch-interval-ms", "0", []),
    ("--lanes", "-1", []),
    ("--lane-depth", "0", []),
    ("--min-batch", "0", []),
    ("--opt-batch", "0", []),
    ("--max-batch", "0", []),
    ("--workspace-mib", "0", []),
    ("--iterations", "0", []),
    ("--runs", "0", []),
    ("--numpy-runs", "0", []),
    ("--images", "0", []),
    ("--tensor-samples", "-1", []),
    ("--calib-images", "0", []),
    ("--step-timeout", "0", []),
    ("--max-ap-drop", "-1", []),
    ("--worst-images", "-1", []),
    ("--parity-iou", "0", []),
    ("--parity-conf", "1.5", []),
    ("--min-seconds", "0", []),
    ("--time-to-metrics", "-1", []),
    ("--rounds", "0", []),
    ("--coco-bench-workers", "-1", ["--coco-bench", "10"]),
    ("--coco-bench-pace", "-1", ["--coco-bench", "10"]),
    ("--intra-op-threads", "-1", []),
    ("--decode", "gpu", ["--preprocess", "cpu"]),  # compatibility: GPU decoding feeds the GPU letterbox only
    ("--variants", "eval-onnx-default", []),  # a misspelt variant is refused, not silently left out
    ("--variants", "eval-onnx-defaults-lanes-0", []),
]


def _name(rel: str) -> str:
    return rel.rsplit("/", 1)[-1].removesuffix(".py")


def _cases() -> list[tuple[str, str, str, list[str]]]:
    cases = []
    for rel in cli_scripts():
        if _name(rel) not in BASE:
            continue
        flags = {s for a in parser_of(rel)._actions for s in a.option_strings}
        cases += [(rel, flag, value, more) for flag, value, more in CHECKS if flag in flags]
    return cases


CASES = _cases()


def test_every_cli_with_a_checked_flag_is_covered() -> None:
    """A CLI that takes one of the checked flags is in BASE, so it is tested (a new CLI must be added)."""
    checked = {flag for flag, _, _ in CHECKS}
    for rel in cli_scripts():
        flags = {s for a in parser_of(rel)._actions for s in a.option_strings}
        if flags & checked:
            assert _name(rel) in BASE, f"{rel} takes {sorted(flags & checked)}: add it to BASE"


def test_the_matrix_reaches_shared_flags_through_several_clis() -> None:
    per_flag: dict[str, int] = {}
    for _, flag, _, _ in CASES:
        per_flag[flag] = per_flag.get(flag, 0) + 1
    assert per_flag["--conf"] >= 4 and per_flag["--warmup-runs"] >= 5 and per_flag["--workspace-mib"] == 2


@pytest.mark.parametrize(("rel", "flag", "value", "more"), CASES, ids=[f"{_name(c[0])} {c[1]}" for c in CASES])
def test_a_refused_value_names_its_flag(rel, flag, value, more, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # a run folder made by mistake would land here
    module = load_script(rel)
    rc = run_main(module.main, [*BASE[_name(rel)], *more, flag, value])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert flag in lines[0], lines[0]
    assert not any(tmp_path.iterdir()), "refused after writing something"
