"""The doctor's smoke check: build a one-layer engine, run it with the plain runner, compare with NumPy.

Importing ``tensorrt`` proves little: a library whose bundled CUDA cannot start on this driver, or one
without kernels for this GPU, imports fine and fails at the first Builder or Runtime. ``smoke_check`` goes
one step further than the import, each step stopping at the first failure:

1. import the TensorRT API (``tensorrt`` if it imports, else ``tensorrt_rtx``; or the one asked for);
2. build a one-layer engine (``Relu`` on a [2, 64] float32 input, an ONNX made in memory);
3. run it once on the GPU with ``TrtRunner`` (one context, one stream, no threads);
4. compare the output with NumPy's ``maximum(x, 0)``: it must be exact.

``scripts/trt/trt_smoke.py`` runs it in the probed Python and prints the result as JSON.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import RunError, UserError

__all__ = ["SMOKE_SHAPE", "SmokeResult", "smoke_check", "smoke_input", "smoke_onnx"]

SMOKE_SHAPE = (2, 64)
STAGES = ("import", "build", "run", "compare", "passed")


@dataclass(frozen=True)
class SmokeResult:
    """How far the smoke check got: ``stage`` is the step that failed, or ``passed``."""

    stage: str
    detail: str
    api: str | None = None

    @property
    def passed(self) -> bool:
        return self.stage == "passed"

    @property
    def built(self) -> bool:
        return STAGES.index(self.stage) > STAGES.index("build")

    def summary(self) -> str:
        """One line: ``smoke: built OK; run: <why not>`` and the like."""
        if self.stage == "import":
            return f"smoke: not run: {self.detail}"
        if self.stage == "build":
            return f"smoke: build failed: {self.detail}"
        if self.stage == "run":
            return f"smoke: built OK; run: {self.detail}"
        if self.stage == "compare":
            return f"smoke: built OK; ran; output wrong: {self.detail}"
        return f"smoke: built OK; ran; output matches NumPy ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "built": self.built, "summary": self.summary()}


def smoke_input() -> np.ndarray:
    """Negative and positive values, so a Relu that is not applied (or applied twice) shows."""
    return (np.arange(np.prod(SMOKE_SHAPE), dtype=np.float32).reshape(SMOKE_SHAPE) - 63.5) / 8.0


def smoke_onnx(path: Path) -> Path:
    """The one-layer ONNX: ``y = Relu(x)``, x and y float32 [2, 64]."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SMOKE_SHAPE))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(SMOKE_SHAPE))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "trt_smoke", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def smoke_check(api_name: str | None = None, workdir: Path | None = None) -> SmokeResult:
    """Import, build, run and compare (see the module docstring); never raises for a TensorRT or CUDA failure."""
    from common.trt.api import load_api

    try:
        api = load_api(api_name)
    except UserError as exc:
        return SmokeResult("import", _one_line(exc))
    with tempfile.TemporaryDirectory(prefix="trt-smoke-", dir=workdir) as tmp:
        return _build_and_run(api, Path(tmp))


def _build_and_run(api: Any, tmp: Path) -> SmokeResult:
    from common.trt.build import BuildOptions, build_or_reuse
    from common.trt.runner import TrtRunner

    what = api.describe()
    try:
        engine = build_or_reuse(
            smoke_onnx(tmp / "smoke.onnx"), tmp / "smoke.engine", BuildOptions(), api, use_timing_cache=False
        ).engine_path
    except (UserError, RunError, RuntimeError, TypeError, OSError) as exc:
        return SmokeResult("build", _one_line(exc), what)
    x = smoke_input()
    try:
        with TrtRunner.open(engine, api, image_input=False, verbosity="error") as runner:
            got = runner.run({"x": x})["y"]
    except (UserError, RunError, RuntimeError, TypeError, OSError) as exc:
        return SmokeResult("run", _one_line(exc), what)
    want = np.maximum(x, 0)
    if got.shape != want.shape or not np.array_equal(got, want):
        diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        return SmokeResult(
            "compare", f"Relu of a {SMOKE_SHAPE} input: shape {got.shape}, max |error| {diff:g} (expected 0)", what
        )
    return SmokeResult("passed", f"{what}, Relu of {want.size} values", what)
