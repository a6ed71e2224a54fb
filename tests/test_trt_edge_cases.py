"""TensorRT build/runtime edge cases (issue 11) against the double; TensorRT-facing: rerun per TensorRT
version and package layout by tests/test_trt_api_versions.py (there, ``Builder``/``Runtime`` not replaced
by the double are NVIDIA's real factories over stand-in libraries, which return nullptr)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trt_double as D

from common.cli import run_main
from common.errors import UserError
from common.trt_build import BuildOptions, build_or_reuse
from common.trt_runtime import TrtSession

NULLPTR = "pybind11::init(): factory function returned nullptr"


@pytest.fixture
def api():
    return D.api_under_test()


@pytest.fixture
def double(monkeypatch, api):
    return D.use_double(monkeypatch, api)


def _engine(tmp_path: Path, api, onnx: Path, options: BuildOptions | None = None, name: str = "e.engine") -> Path:
    return build_or_reuse(onnx, tmp_path / name, options or BuildOptions(), api, verbosity="error").engine_path


def _nullptr_factories(monkeypatch, api) -> None:
    """What the real bindings do when the native library cannot start (the stand-ins do exactly this)."""
    try:
        api.module.Builder(api.module.Logger())
    except TypeError as exc:
        assert "nullptr" in str(exc)
        return  # the real factories already fail here (stand-in libnvinfer)

    def fail(logger):
        raise TypeError(NULLPTR)

    monkeypatch.setattr(api.module, "Builder", fail)
    monkeypatch.setattr(api.module, "Runtime", fail)


# ----------------------------------------------------------------------------- 12: Builder / Runtime nullptr


def test_builder_that_cannot_be_created_is_one_line_exit_2_no_engine(tmp_path, api, monkeypatch, capsys):
    import build_trt_engine

    _nullptr_factories(monkeypatch, api)
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    engine = tmp_path / "out" / "e.engine"
    code = run_main(build_trt_engine.main, ["--onnx-path", str(onnx), "--engine-path", str(engine),
                                            "--backend", api.name, "--no-build-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "could not create its Builder" in err[0] and "trt-doctor" in err[0] and "no usable GPU" in err[0]
    assert not engine.exists() and not (tmp_path / "out" / "e.engine.json").exists()


def test_runtime_that_cannot_be_created_is_a_user_error(tmp_path, api, monkeypatch):
    _nullptr_factories(monkeypatch, api)
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"whatever")
    with pytest.raises(UserError, match=r"could not create its Runtime .*run `pixi run -e rtx5090 trt-doctor`"):
        TrtSession(engine, api, memory=D.FakeCudaMemory())
