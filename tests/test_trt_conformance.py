"""The test double against the REAL TensorRT API (tensorrt_rtx here; tensorrt 10.7/10.13/11.4 via
tests/test_trt_api_versions.py).

(a) every public method/attribute a fake class offers exists, same name, on the real class it
    mirrors, or is hidden by the double for this API version (and then the runtime code must
    guard it);
(b) every TensorRT method/attribute our code calls on those objects is offered by the double
    (so the double tests exercised it) and exists on the real class, unless our code guards it
    with hasattr() for versions that lack it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import trt_double as D

REPO = Path(__file__).resolve().parents[1]
COMMON = REPO / "scripts" / "cv-models" / "common"

# Members our code uses only behind hasattr()/api capability checks, with why.
GUARDED = {
    "create_runtime_config": "TensorRT-RTX / TensorRT >= 10.11 runtime config (RTX runtime cache)",
    "is_stream_capturable": "checked before CUDA-graph capture where available",
    "set_compute_capability": "TensorRT-RTX compute-capability targets",
    "num_compute_capabilities": "TensorRT-RTX compute-capability targets",
    "progress_monitor": "IProgressMonitor where available",
    "create_engine_inspector": "engine inspector where available",
    "node_name": "ParserError.node_name() where available",
    "node_operator": "ParserError.node_operator() where available",
    "create_runtime_cache": "runtime cache: used only when api.is_rtx (TensorRT 11.4's IRuntimeConfig lacks it)",
    "set_runtime_cache": "runtime cache: used only when api.is_rtx",
    "get_runtime_cache": "runtime cache: used only when api.is_rtx",
    "cuda_graph_strategy": "TensorRT-RTX CUDA graphs: used only when api.is_rtx and hasattr(rt_config, ...)",
}
# Used only where a GPU can deserialize (never reached with the double): hasattr-guarded, in try.
NEEDS_GPU = {"create_engine_inspector", "get_engine_information"}
# Which variable names in our modules hold which TensorRT object (real class name).
RECEIVERS = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "runtime": "Runtime",
    "err": "ParserError",
    "layer": "ILayer",
    "cache": "ITimingCache",
    "saved": "ITimingCache",
    "inspector": "EngineInspector",
    "rt_config": "IRuntimeConfig",
    "rt_cache": "IRuntimeCache",
}


@pytest.fixture(scope="module")
def api():
    return D.api_under_test()


def _public(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in (D._Mirror, object):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_")}
        names |= {n for n in getattr(klass, "__annotations__", {}) if not n.startswith("_")}
    return names - {"builds", "cancelled", "on_step"}  # FakeBuilder test counters and hook, not API


@pytest.mark.parametrize("fake", D.DOUBLE_CLASSES, ids=lambda c: c.__name__)
def test_double_offers_only_real_api(api, fake):
    real = getattr(api.module, fake._REAL, None)
    if real is None:
        pytest.skip(f"{api.describe()} has no {fake._REAL}")
    missing = sorted(n for n in _public(fake) if not hasattr(real, n))
    unguarded = [n for n in missing if n not in GUARDED]
    assert not unguarded, f"{fake.__name__} offers {unguarded}, which {api.describe()}'s {fake._REAL} lacks"


def test_double_hides_members_the_real_api_lacks(api):
    """The double raises AttributeError exactly where the real object of this version would."""
    fake_engine_cls = D.FakeEngine
    has_real = hasattr(api.module.ICudaEngine, "create_runtime_config")
    state = D.DoubleState()
    engine = fake_engine_cls(api.module, None, {"io": []}, b"", state)
    assert hasattr(engine, "create_runtime_config") == has_real
    config = D.FakeBuilderConfig(api.module, None)
    assert hasattr(config, "set_compute_capability") == hasattr(api.module.IBuilderConfig, "set_compute_capability")


def _calls_in(path: Path) -> set[tuple[str, str]]:
    """(receiver variable, attribute) pairs like engine.get_tensor_name, self.context.set_input_shape."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            base = node.value
            name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else None
            if name in RECEIVERS:
                found.add((name, node.attr))
    return found


def test_runtime_and_build_code_call_only_real_api(api):
    uses = _calls_in(COMMON / "trt" / "runtime.py") | _calls_in(COMMON / "trt" / "build.py")
    assert ("context", "execute_async_v3") in uses and ("engine", "get_tensor_profile_shape") in uses
    fakes = {f._REAL: f for f in D.DOUBLE_CLASSES}
    problems = []
    for receiver, attr in sorted(uses):
        real_name = RECEIVERS[receiver]
        real = getattr(api.module, real_name, None)
        if attr.startswith("_") or real is None:
            continue
        if not hasattr(real, attr) and attr not in GUARDED:
            problems.append(f"{receiver}.{attr}: not on {api.describe()} {real_name}")
        fake = fakes.get(real_name)
        if fake is not None and attr not in _public(fake) and attr not in NEEDS_GPU:
            problems.append(f"{receiver}.{attr}: the double's {fake.__name__} does not offer it (untested)")
    assert not problems, problems


def test_enums_the_code_relies_on_exist(api):
    trt = api.module
    for name in ("FLOAT", "HALF", "INT32", "INT64", "BOOL", "INT8", "UINT8"):
        assert hasattr(trt.DataType, name)
    assert {"INPUT", "OUTPUT"} <= set(trt.TensorIOMode.__members__)
    assert hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    assert hasattr(trt.MemoryPoolType, "WORKSPACE")
    assert {"INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"} <= set(trt.ILogger.Severity.__members__)
    weak = [f for f in ("FP16", "INT8", "FP8") if hasattr(trt.BuilderFlag, f)]
    if api.is_rtx or api.major >= 11:
        assert weak == [] and api.strongly_typed_only and not api.has_weak_typing
    else:
        assert "FP16" in weak and api.has_weak_typing


def test_logger_subclasses_the_real_ilogger(api, caplog):
    import logging

    from common.trt.api import make_logger

    logger = make_logger(api, "info")
    assert isinstance(logger, api.module.ILogger)
    with caplog.at_level(logging.DEBUG, logger="trt"):
        logger.log(api.module.ILogger.Severity.INFO, "hello info")
        logger.log(api.module.ILogger.Severity.VERBOSE, "hidden verbose")
        logger.log(api.module.ILogger.Severity.ERROR, "bad thing")
    text = caplog.text
    assert "hello info" in text and "hidden verbose" not in text and "bad thing" in text
    assert logger.errors == ["bad thing"]
    quiet = make_logger(api, "warning")
    with caplog.at_level(logging.INFO, logger="trt"):
        caplog.clear()
        quiet.log(api.module.ILogger.Severity.ERROR, "kept for the error message")
    assert "kept for" not in caplog.text and quiet.errors == ["kept for the error message"]


def test_loader_takes_the_layout_pip_left(api):
    """Bindings-only (pip install tensorrt-cuXX-bindings: module ``tensorrt_bindings``, no ``tensorrt``) and
    front-end layouts both load as the ``tensorrt`` backend (YOLO_TRT_TEST_LAYOUT from test_trt_api_versions)."""
    import importlib.util
    import os

    layout = os.environ.get("YOLO_TRT_TEST_LAYOUT")
    if api.is_rtx or layout is None:
        pytest.skip("runs per TensorRT version and layout (tests/test_trt_api_versions.py)")
    assert api.name == "tensorrt"
    if layout == "bindings":
        assert importlib.util.find_spec("tensorrt") is None
        assert api.module.__name__ == "tensorrt_bindings"
    else:
        assert api.module.__name__ == "tensorrt"
    assert api.version == api.module.__version__ and api.major in (10, 11)
