"""common.ort.options: first-class EP flags -> validated provider options."""

from __future__ import annotations

import argparse
import io

import pytest

from common.core.errors import UserError
from common.ort import options as oo

CPU = [oo.CPU_EP]
ALL_GPU = [oo.TRT_EP, oo.CUDA_EP, oo.CPU_EP]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    oo.add_ep_flags(parser)
    return parser.parse_args(list(argv))


def test_no_flags_gives_no_options():
    assert oo.resolve_provider_options(vars(parse()), CPU, CPU) == {}
    assert oo.resolve_provider_options(vars(parse()), ALL_GPU, ALL_GPU) == {}


def test_trt_flags_map_to_ep_keys(tmp_path):
    args = parse(
        "--trt-engine-cache-path",
        str(tmp_path / "eng"),
        "--trt-timing-cache",
        "--trt-builder-optimization-level",
        "5",
        "--trt-max-workspace",
        "4G",
        "--trt-cuda-graph",
    )
    opts = oo.resolve_provider_options(vars(args), ALL_GPU, ALL_GPU)
    trt = opts[oo.TRT_EP]
    assert trt["trt_engine_cache_enable"] == "1"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "eng")
    assert trt["trt_timing_cache_enable"] == "1"
    assert trt["trt_timing_cache_path"] == oo.DEFAULT_TRT_TIMING_CACHE
    assert trt["trt_builder_optimization_level"] == "5"
    assert trt["trt_max_workspace_size"] == str(4 * 1024**3)
    assert trt["trt_cuda_graph_enable"] == "1"
    assert "trt_fp16_enable" not in trt
    assert (tmp_path / "eng").is_dir()
    assert set(opts) == {oo.TRT_EP}


def test_engine_cache_defaults_under_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trt = oo.resolve_provider_options(vars(parse("--trt-engine-cache")), ALL_GPU, ALL_GPU)[oo.TRT_EP]
    assert trt["trt_engine_cache_path"].startswith("tmp/")
    assert (tmp_path / oo.DEFAULT_TRT_ENGINE_CACHE).is_dir()


def test_flag_for_ep_not_requested_names_the_flag():
    with pytest.raises(UserError, match=r"--trt-cuda-graph.*not in --providers"):
        oo.resolve_provider_options(vars(parse("--trt-cuda-graph")), [oo.CUDA_EP, oo.CPU_EP], ALL_GPU)


def test_flag_for_unavailable_ep_names_the_flag_and_available():
    with pytest.raises(UserError, match=r"--rtx-cuda-graph.*does not offer.*CPUExecutionProvider"):
        oo.resolve_provider_options(vars(parse("--rtx-cuda-graph")), [oo.RTX_EP, oo.CPU_EP], CPU)
    with pytest.raises(UserError, match=r"--cuda-graph"):
        oo.resolve_provider_options(vars(parse("--cuda-graph")), [oo.CUDA_EP], CPU)


@pytest.mark.parametrize("major", [11, 12])
def test_trt_fp16_rejected_unless_tensorrt_10(major):
    with pytest.raises(UserError, match=rf"--trt-fp16.*TensorRT {major}.*--mode fp16"):
        oo.resolve_provider_options(vars(parse("--trt-fp16")), ALL_GPU, ALL_GPU, trt_major=major)


def test_trt_fp16_allowed_on_tensorrt_10():
    opts = oo.resolve_provider_options(vars(parse("--trt-fp16")), ALL_GPU, ALL_GPU, trt_major=10)
    assert opts[oo.TRT_EP]["trt_fp16_enable"] == "1"


def test_rtx_flags(tmp_path):
    args = parse("--rtx-runtime-cache-path", str(tmp_path / "rc"), "--rtx-max-workspace", "512M", "--rtx-cuda-graph")
    opts = oo.resolve_provider_options(vars(args), [oo.RTX_EP, oo.CPU_EP], [oo.RTX_EP, oo.CPU_EP])
    assert opts == {
        oo.RTX_EP: {
            "nv_runtime_cache_path": str(tmp_path / "rc"),
            "nv_max_workspace_size": str(512 * 1024**2),
            "enable_cuda_graph": "1",
        }
    }


def test_cuda_graph_flag():
    opts = oo.resolve_provider_options(vars(parse("--cuda-graph")), [oo.CUDA_EP, oo.CPU_EP], ALL_GPU)
    assert opts == {oo.CUDA_EP: {"enable_cuda_graph": "1"}}


@pytest.mark.parametrize(
    ("text", "expected"), [("1073741824", 1 << 30), ("4G", 4 << 30), ("512MiB", 512 << 20), ("1.5g", 3 << 29)]
)
def test_parse_size(text, expected):
    assert oo.parse_size(text) == expected


@pytest.mark.parametrize("argv", [["--trt-builder-optimization-level", "7"], ["--trt-max-workspace", "lots"]])
def test_bad_values_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_provider_option_overrides_win_and_effective_printout():
    first = oo.resolve_provider_options(
        vars(parse("--trt-builder-optimization-level", "3", "--trt-cuda-graph")), ALL_GPU, ALL_GPU
    )
    merged = oo.merge_provider_options(first, {oo.TRT_EP: {"trt_builder_optimization_level": "4"}})
    assert merged[oo.TRT_EP] == {"trt_builder_optimization_level": "4", "trt_cuda_graph_enable": "1"}
    assert first[oo.TRT_EP]["trt_builder_optimization_level"] == "3"  # inputs untouched
    assert oo.provider_list(ALL_GPU, merged) == [(oo.TRT_EP, merged[oo.TRT_EP]), oo.CUDA_EP, oo.CPU_EP]
    buf = io.StringIO()
    record = oo.print_effective_options(ALL_GPU, merged, file=buf)
    text = buf.getvalue()
    assert "trt_builder_optimization_level=4" in text
    assert f"{oo.CPU_EP}: (EP defaults)" in text
    assert record[oo.CPU_EP] == {}


def test_available_providers_on_this_runtime():
    import onnxruntime as ort

    names = oo.available_providers()
    assert oo.CPU_EP in names
    assert set(ort.get_available_providers()) <= set(names)


def test_evaluator_rejects_ep_flag_for_unavailable_ep():
    """The evaluator wires these flags: an EP flag for an EP this (CPU) runtime lacks is one line + exit 2."""
    import onnxruntime as ort
    from conftest import DEMO_MODEL, run_script

    if oo.TRT_EP in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT EP")
    res = run_script(
        "eval_yolov10m_onnx_coco.py",
        "--onnx-path",
        str(DEMO_MODEL),
        "--providers",
        oo.TRT_EP,
        oo.CPU_EP,
        "--trt-engine-cache",
        "--max-images",
        "1",
    )
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --trt-engine-cache") and "does not offer" in last
    assert "Traceback" not in res.stderr


def test_provider_option_items_become_a_dict_per_provider():
    got = oo.parse_provider_options(
        [f"{oo.CUDA_EP}:device_id=1", f"{oo.CUDA_EP}:cudnn_conv_algo_search=HEURISTIC", f"{oo.TRT_EP}:x=a=b"], ALL_GPU
    )
    assert got == {oo.CUDA_EP: {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC"}, oo.TRT_EP: {"x": "a=b"}}


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("device_id=0", "expected EP:KEY=VALUE"),
        (f"{oo.CUDA_EP}:device_id", "expected EP:KEY=VALUE"),
        (f"{oo.CUDA_EP}:=0", "expected EP:KEY=VALUE"),
        (f"{oo.CUDA_EP}:device_id=0", "is not in --providers"),
    ],
)
def test_bad_provider_option_is_one_line(item, needle):
    with pytest.raises(UserError, match=needle) as info:
        oo.parse_provider_options([item], CPU)
    assert "\n" not in str(info.value) and "--provider-option" in str(info.value)
