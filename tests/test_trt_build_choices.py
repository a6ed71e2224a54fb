"""Engine-build choices: profiling verbosity, a timing cache TensorRT rejects, Ctrl-C during a build.

TensorRT-facing: tests/test_trt_api_versions.py reruns this module against the real ``tensorrt`` Python API
of 10.7, 10.13 and 11.4 (both pip layouts); here it runs against ``tensorrt_rtx``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trt_double as D

from common.trt.build import BuildOptions, build_or_reuse, metadata_path


def _header(engine: Path) -> dict:
    return json.loads(engine.read_bytes()[len(D.ENGINE_MAGIC) :].partition(b"\n")[0])


# ----------------------------------------------------------------------------- profiling verbosity


def test_profiling_verbosity_defaults_to_layer_names_only_and_is_keyed(tmp_path, api, double):
    """DETAILED slows enqueueV3 (TensorRT's own note): it is opt-in, and part of the engine cache key."""
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    plain = build_or_reuse(onnx, tmp_path / "a.engine", BuildOptions(), api, verbosity="error")
    assert _header(plain.engine_path)["profiling_verbosity"] == "LAYER_NAMES_ONLY"
    assert plain.metadata["options"]["profiling_verbosity"] == "layer_names_only"
    detailed = BuildOptions(profiling_verbosity="detailed")
    again = build_or_reuse(onnx, tmp_path / "a.engine", detailed, api, verbosity="error")
    assert not again.cache_hit and again.metadata["cache_key"] != plain.metadata["cache_key"]
    assert _header(again.engine_path)["profiling_verbosity"] == "DETAILED"
    none = build_or_reuse(onnx, tmp_path / "n.engine", BuildOptions(profiling_verbosity="none"), api, verbosity="error")
    assert _header(none.engine_path)["profiling_verbosity"] == "NONE"


def test_profiling_verbosity_flag(tmp_path):
    import argparse

    from common.trt.cli import add_build_args, options_from_args

    parser = argparse.ArgumentParser()
    add_build_args(parser)
    args = parser.parse_args(["--onnx-path", "m.onnx"])
    assert options_from_args(args).profiling_verbosity == "layer_names_only"
    args = parser.parse_args(["--onnx-path", "m.onnx", "--profiling-verbosity", "detailed"])
    assert options_from_args(args).profiling_verbosity == "detailed"
    with pytest.raises(SystemExit):
        parser.parse_args(["--onnx-path", "m.onnx", "--profiling-verbosity", "loud"])


# ----------------------------------------------------------------------------- timing cache


def _full_trt_only(api) -> None:
    if not api.timing_cache_supported:
        pytest.skip(f"{api.describe()}: timing-cache calls are no-ops")


def test_rejected_timing_cache_is_replaced_and_reported(tmp_path, api, double):
    """TensorRT answers an invalid blob with an empty cache (and a logged error): the metadata says nothing was
    loaded, and the file is replaced after the build so that the next build loads it."""
    _full_trt_only(api)
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"a cache of another TensorRT version")
    first = build_or_reuse(onnx, tmp_path / "a.engine", BuildOptions(), api, verbosity="error", timing_cache=cache)
    tc = first.metadata["timing_cache"]
    assert tc["used"] is True and tc["loaded_bytes"] == 0 and tc["file_bytes"] == 35
    assert "did not load its 35 bytes" in tc["rejected"] and "invalid" in tc["rejected"]
    assert cache.read_bytes().startswith(D.TIMING_MAGIC) and tc["saved_bytes"] == cache.stat().st_size
    second = build_or_reuse(onnx, tmp_path / "b.engine", BuildOptions(), api, verbosity="error", timing_cache=cache)
    tc2 = second.metadata["timing_cache"]
    assert "rejected" not in tc2 and tc2["loaded_bytes"] == tc["saved_bytes"]


def test_timing_cache_of_another_device_is_replaced(tmp_path, api, double):
    """set_timing_cache refuses a cache made on another device: build with a fresh cache and replace the file."""
    _full_trt_only(api)
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(D.TIMING_MAGIC + json.dumps({"__device__": "other-gpu", "layers:2": 5}).encode())
    result = build_or_reuse(onnx, tmp_path / "a.engine", BuildOptions(), api, verbosity="error", timing_cache=cache)
    tc = result.metadata["timing_cache"]
    assert tc["loaded_bytes"] == 0 and "created on other-gpu" in tc["rejected"]
    assert json.loads(cache.read_bytes()[len(D.TIMING_MAGIC) :]) == {"layers:2": 1}


def test_accepted_timing_cache_reports_what_tensorrt_loaded(tmp_path, api, double):
    _full_trt_only(api)
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    cache = tmp_path / "timing.cache"
    blob = D.TIMING_MAGIC + json.dumps({"layers:2": 3}).encode()
    cache.write_bytes(blob + b"  ")  # trailing bytes TensorRT does not keep: the file's size is not what loaded
    result = build_or_reuse(onnx, tmp_path / "a.engine", BuildOptions(), api, verbosity="error", timing_cache=cache)
    tc = result.metadata["timing_cache"]
    assert "rejected" not in tc and tc["file_bytes"] == len(blob) + 2 and tc["loaded_bytes"] == len(blob)


# ----------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_cancels_the_build_through_the_progress_monitor(tmp_path, api, double):
    """The builder runs in native code, where KeyboardInterrupt cannot land: Ctrl-C makes the monitor's
    step_complete return False, TensorRT stops, and the build ends as an interruption with nothing written."""
    if not api.has_progress_monitor:
        pytest.skip(f"{api.describe()} has no IProgressMonitor")
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    before = signal.getsignal(signal.SIGINT)
    D.FakeBuilder.on_step = lambda step: signal.raise_signal(signal.SIGINT) if step == 0 else None
    engine = tmp_path / "e.engine"
    with pytest.raises(KeyboardInterrupt, match="cancelled"):
        build_or_reuse(onnx, engine, BuildOptions(), api, verbosity="error", progress=False)
    assert D.FakeBuilder.cancelled == 1  # the builder was told to stop, at its next step
    assert not engine.exists() and not metadata_path(engine).exists()
    assert signal.getsignal(signal.SIGINT) is before
    D.FakeBuilder.on_step = None
    assert not build_or_reuse(onnx, engine, BuildOptions(), api, verbosity="error").cache_hit
