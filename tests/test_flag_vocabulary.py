"""One flag vocabulary across the CLIs: the current names, every old spelling still parsed to the same option,
every default stated in --help, and the shared flags' defaults equal everywhere."""

from __future__ import annotations

import argparse

import pytest
from cli_parsers import cli_scripts, parser_of

CV = "scripts/cv-models/"
ENGINE = ["--engine-path", "e.engine"]
ONNX = ["--onnx-path", "m.onnx"]

# (script, the other arguments it needs, old spelling, current spelling, a value or None for a switch)
OLD_SPELLINGS = [
    (CV + "infer_trt_engine.py", ENGINE, "--output-dir", "--out", "runs/x"),
    (CV + "infer_trt_engine.py", ENGINE, "--warmup", "--warmup-runs", "3"),
    (CV + "infer_trt_engine.py", ENGINE, "--shapes", "--input-shape", "images:2x3x64x64"),
    (CV + "infer_trt_engine.py", ENGINE, "--shape", "--input-shape", "images:2x3x64x64"),
    (CV + "infer_trt_engine.py", ["--engine-path", "e.engine"], "--backend", "--trt-api", "tensorrt-rtx"),
    (CV + "compare_runs.py", ["a.json"], "--out-dir", "--out", "cmp"),
    (CV + "validate_e2e.py", ONNX, "--output-root", "--out", "runs"),
    (CV + "make_calib_npy.py", ["--out", "c.npy"], "--num-images", "--max-images", "7"),
    (CV + "bench_eval_throughput.py", ONNX, "--trt-backend", "--trt-api", "tensorrt-rtx"),
    (CV + "bench_gpu_postprocess.py", [], "--warmup", "--warmup-runs", "3"),
    (CV + "bench_gpu_postprocess.py", [], "--out-dir", "--out", "runs"),
    ("scripts/trt/trt_doctor.py", [], "--json-out", "--out", "d.json"),
]


def _dest(parser: argparse.ArgumentParser, flag: str) -> str:
    return next(a.dest for a in parser._actions if flag in a.option_strings)


@pytest.mark.parametrize(("script", "base", "old", "new", "value"), OLD_SPELLINGS, ids=lambda v: str(v))
def test_an_old_spelling_means_the_current_flag(script, base, old, new, value) -> None:
    parser = parser_of(script)
    dest = _dest(parser, new)
    got_new = getattr(parser.parse_args([*base, new, value]), dest)
    got_old = getattr(parser.parse_args([*base, old, value]), dest)
    assert got_old == got_new and got_new not in (None, [])
    assert old not in parser.format_help().split(), f"{old} should be hidden from --help"


def test_the_check_sees_an_unstated_default() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=3, help="how many")
    assert unstated_defaults(p) == ["--n"]


def unstated_defaults(parser: argparse.ArgumentParser) -> list[str]:
    """Flags taking a value whose help does not say the default (switches default to off)."""
    out = []
    for a in parser._actions:
        if not a.option_strings or a.help == argparse.SUPPRESS or a.required:
            continue
        if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
            continue
        if a.nargs == 0:
            continue
        if "default" not in (a.help or "").lower():
            out.append(a.option_strings[0])
    return out


@pytest.mark.parametrize("script", cli_scripts())
def test_every_default_is_stated_in_help(script) -> None:
    assert unstated_defaults(parser_of(script)) == []


@pytest.mark.parametrize("flag", ["--max-images", "--imgsz", "--conf", "--iou", "--max-det"])
def test_a_shared_flag_has_one_default(flag) -> None:
    """The same flag defaults to the same value in every CLI that takes it (--max-images: 100)."""
    defaults = {}
    for script in cli_scripts():
        if script.endswith("demo.py"):  # the demo evaluates its whole bundled 50-image set
            continue
        parser = parser_of(script)
        action = next((a for a in parser._actions if flag in a.option_strings), None)
        if action is not None and action.default is not None:
            defaults[script] = action.default
    if flag == "--max-images":
        assert set(defaults.values()) == {100}, defaults
    assert len(set(map(str, defaults.values()))) <= 1, defaults


def test_no_cli_spells_an_output_otherwise() -> None:
    """Outputs are --out (plus --detections-out for the second file of an evaluation)."""
    retired = {"--output-dir", "--out-dir", "--output-root", "--json-out"}
    for script in cli_scripts():
        shown = {s for a in parser_of(script)._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
        assert not shown & retired, (script, shown & retired)


def test_eval_help_shows_everyday_flags_before_tuning_groups() -> None:
    text = parser_of(CV + "eval_yolov10m_onnx_coco.py").format_help()
    order = [text.index(h) for h in ("\ndataset:", "\noutputs:", "\nthroughput tuning", "\nTensorRT EP")]
    assert order == sorted(order)
    assert text.index("--io-binding") > text.index("\nthroughput tuning")
    assert len(text.splitlines()) < 235  # was 252 lines with the tuning flags mixed in


@pytest.mark.parametrize("param", ["min_batch", "opt_batch", "max_batch", "workspace_mib"])
def test_build_options_refuse_a_non_positive_bound(param) -> None:
    """BuildOptions checks its own bounds: a library caller is refused too, in parameter names."""
    from common.core.errors import OptionError
    from common.trt.build import BuildOptions

    with pytest.raises(OptionError) as caught:
        BuildOptions(**{param: 0})
    assert caught.value.param == param and str(caught.value) == f"{param} must be >= 1, got 0"
    assert caught.value.render() == f"--{param.replace('_', '-')} must be >= 1, got 0"
