"""Engine builds with the REAL TensorRT-RTX builder and ONNX parser (they run on CPU-only machines).

Nothing here executes an engine: TensorRT-RTX's runtime needs a supported RTX GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import trt_double as D

from common.core.cli import run_main
from common.core.errors import UserError
from common.core.results import sha256_file
from common.trt.build import BuildOptions, build_or_reuse, metadata_path, parse_shapes

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="pip install tensorrt-rtx-cu13 to run the real-builder tests")
pytestmark = pytest.mark.skipif(
    os.environ.get("YOLO_TRT_TEST_BACKEND") == "tensorrt",
    reason="real-builder tests run in the tensorrt-rtx session only",
)

META_KEYS = {
    "schema",
    "cache_key",
    "engine_path",
    "engine_bytes",
    "engine_sha256",
    "onnx_path",
    "onnx_sha256",
    "backend",
    "backend_version",
    "gpu",
    "strongly_typed",
    "onnx_precision",
    "options",
    "inputs",
    "profiles",
    "build_seconds",
    "timing_cache",
    "layer_summary",
    "created",
}


@pytest.fixture(scope="module")
def api():
    from common.trt.api import load_backend

    return load_backend("tensorrt-rtx")


def _no_build(monkeypatch, api):
    def refuse(*a, **k):
        raise AssertionError("a cache hit must not create a builder")

    monkeypatch.setattr(api.module, "Builder", refuse)


def _build(api, onnx, engine, **kw):
    kw.setdefault("verbosity", "error")
    return build_or_reuse(onnx, engine, kw.pop("options", BuildOptions()), api, **kw)


def _check_meta(result, onnx: Path):
    meta = json.loads(metadata_path(result.engine_path).read_text())
    assert META_KEYS <= set(meta), META_KEYS - set(meta)
    assert meta["engine_sha256"] == sha256_file(result.engine_path)
    assert meta["engine_bytes"] == result.engine_path.stat().st_size > 0
    assert meta["onnx_sha256"] == sha256_file(onnx)
    assert meta["backend"] == "tensorrt-rtx" and meta["backend_version"] == trt_rtx.__version__
    assert meta["strongly_typed"] is True
    assert meta["layer_summary"]["num_layers"] > 0
    assert meta["build_seconds"] >= 0
    return meta


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "fp8"])
def test_tiny_builds_in_every_precision(tmp_path, api, precision):
    onnx = D.tiny_model(tmp_path / f"tiny-{precision}.onnx", precision=precision)
    result = _build(api, onnx, tmp_path / "e.engine")
    assert not result.cache_hit
    meta = _check_meta(result, onnx)
    prec = meta["onnx_precision"]
    assert prec["qdq"] is (precision in ("int8", "fp8"))
    assert ("float16" in prec["reduced_types"]) is (precision == "fp16")
    assert ("float8e4m3fn" in prec["reduced_types"]) is (precision == "fp8")


def test_cache_hit_rebuild_on_option_or_byte_change_and_force(tmp_path, api, monkeypatch):
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    engine = tmp_path / "trt" / "tiny.engine"
    first = _build(api, onnx, engine)
    assert not first.cache_hit
    with monkeypatch.context() as m:
        _no_build(m, api)
        again = _build(api, onnx, engine)
    assert again.cache_hit and again.metadata["cache_key"] == first.metadata["cache_key"]

    changed = _build(api, onnx, engine, options=BuildOptions(workspace_mib=64))
    assert not changed.cache_hit and changed.metadata["cache_key"] != first.metadata["cache_key"]
    assert changed.metadata["options"]["workspace_mib"] == 64

    # one byte of one weight
    data = bytearray(onnx.read_bytes())
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    at = bytes(data).find(w.tobytes())
    assert at > 0
    data[at] ^= 1
    onnx.write_bytes(bytes(data))
    flipped = _build(api, onnx, engine, options=BuildOptions(workspace_mib=64))
    assert not flipped.cache_hit and flipped.metadata["onnx_sha256"] != changed.metadata["onnx_sha256"]

    forced = _build(api, onnx, engine, options=BuildOptions(workspace_mib=64), force=True)
    assert not forced.cache_hit


def test_tampered_engine_is_rebuilt(tmp_path, api):
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    engine = tmp_path / "tiny.engine"
    _build(api, onnx, engine)
    engine.write_bytes(engine.read_bytes()[:-1] + b"\0")
    assert not _build(api, onnx, engine).cache_hit


def test_timing_cache_is_skipped_with_a_reason_on_rtx(tmp_path, api):
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    cache = tmp_path / "timing.cache"
    result = _build(api, onnx, tmp_path / "e.engine", timing_cache=cache)
    tc = result.metadata["timing_cache"]
    assert tc["used"] is False and "TensorRT-RTX" in tc["reason"]
    assert not cache.exists()


def test_dynamic_batch_profile_is_recorded(tmp_path, api):
    onnx = D.tiny_model(tmp_path / "dyn.onnx", dynamic=True)
    result = _build(api, onnx, tmp_path / "e.engine", options=BuildOptions(min_batch=1, opt_batch=2, max_batch=8))
    assert result.metadata["inputs"]["x"] == [-1, 3, 8, 8]
    assert result.metadata["profiles"] == [{"name": "x", "min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [8, 3, 8, 8]}]


def test_fixture_yolov10n_e2e_fp32(tmp_path, api):
    onnx = D.fixtures_dir() / "models" / "yolov10n-synth.onnx"
    if not onnx.is_file():
        pytest.skip(f"shared fixture not present: {onnx}")
    result = _build(api, onnx, tmp_path / "y.engine")
    meta = _check_meta(result, onnx)
    assert meta["inputs"] == {"images": [1, 3, 640, 640]} and meta["profiles"] == []


def test_fixture_dynbatch_profiles_honoured(tmp_path, api):
    onnx = D.fixtures_dir() / "models" / "yolov10n-synth-dynbatch.onnx"
    if not onnx.is_file():
        pytest.skip(f"shared fixture not present: {onnx}")
    with pytest.raises(UserError, match=r"--shapes images:"):  # H and W are dynamic too
        _build(api, onnx, tmp_path / "d.engine", options=BuildOptions(max_batch=4))
    assert not (tmp_path / "d.engine").exists()
    shapes = parse_shapes(["images:1x3x320x320,2x3x640x640,4x3x640x640"])
    result = _build(api, onnx, tmp_path / "d.engine", options=BuildOptions(shapes=shapes))
    meta = _check_meta(result, onnx)
    assert meta["inputs"]["images"] == [-1, 3, -1, -1]
    assert meta["profiles"] == [
        {"name": "images", "min": [1, 3, 320, 320], "opt": [2, 3, 640, 640], "max": [4, 3, 640, 640]}
    ]
    with pytest.raises(UserError, match="axis 1 is fixed to 3"):
        _build(
            api,
            onnx,
            tmp_path / "d2.engine",
            options=BuildOptions(shapes=parse_shapes(["images:1x4x320x320,1x4x320x320,1x4x320x320"])),
        )


def test_corrupt_onnx_gives_parser_message_and_no_engine(tmp_path, api):
    good = D.tiny_model(tmp_path / "good.onnx").read_bytes()
    good_path = tmp_path / "good.onnx"
    good_path.unlink()
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(good[: len(good) // 2])  # a truncated download
    with pytest.raises(UserError, match=r"ONNX parser failed.*Failed to parse the ONNX model"):
        _build(api, bad, tmp_path / "c.engine")
    bad.write_bytes(b"this is not a protobuf" * 10)  # happens to parse as an empty message
    with pytest.raises(UserError, match="no graph outputs"):
        _build(api, bad, tmp_path / "c.engine")
    node = D.bad_node_model(tmp_path / "node.onnx")
    with pytest.raises(UserError, match=r"node 1 'mystery' \(NoSuchOp\)"):
        _build(api, node, tmp_path / "c.engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.onnx", "node.onnx"]


def test_interrupted_build_leaves_no_engine(tmp_path, api, monkeypatch):
    from common.trt import build as trt_build

    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "out"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trt_build, "atomic_write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(api, onnx, out / "e.engine")
    assert list(out.iterdir()) == []


def _cli(argv, capsys):
    import build_trt_engine

    code = run_main(build_trt_engine.main, argv)
    return code, capsys.readouterr()


def test_cli_build_then_cache_hit(tmp_path, capsys):
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    engine = tmp_path / "e.engine"
    argv = ["--onnx-path", str(onnx), "--engine-path", str(engine), "--backend", "tensorrt-rtx"]
    code, out = _cli(argv, capsys)
    assert code == 0 and "built in" in out.out
    code, out = _cli(argv, capsys)
    assert code == 0 and "cache hit" in out.out


@pytest.mark.parametrize("flag", ["--fp16", "--int8", "--fp8"])
def test_cli_weak_typing_flag_is_explained(tmp_path, capsys, flag):
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    engine = tmp_path / "e.engine"
    code, out = _cli(
        ["--onnx-path", str(onnx), "--engine-path", str(engine), "--backend", "tensorrt-rtx", flag], capsys
    )
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: TensorRT-RTX")
    assert "quantize_onnx.py --mode fp16|int8|fp8" in lines[0]
    assert not engine.exists() and not metadata_path(engine).exists()


def test_cli_corrupt_onnx_one_line(tmp_path, capsys):
    node = D.bad_node_model(tmp_path / "node.onnx")
    engine = tmp_path / "e.engine"
    code, out = _cli(["--onnx-path", str(node), "--engine-path", str(engine), "--backend", "tensorrt-rtx"], capsys)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "node 1 'mystery' (NoSuchOp)" in lines[0]
    assert not engine.exists()


def test_cli_help_has_example(capsys):
    import build_trt_engine

    with pytest.raises(SystemExit):
        build_trt_engine.main(["--help"])
    assert "examples:" in capsys.readouterr().out


# The ModelOpt-made fp16/int8/fp8 candidates are built by the real TensorRT-RTX builder in
# tests/test_quant_flow.py::test_tensorrt_rtx_builder_builds_the_candidate (not repeated here).
