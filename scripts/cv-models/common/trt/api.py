"""TensorRT / TensorRT-RTX: import, version, capability checks and the logger.

Two Python packages speak (almost) the same API:

- ``tensorrt``      -- full TensorRT 10.x (weak typing still available) or 11.x (strongly typed only);
- ``tensorrt_rtx``  -- TensorRT for RTX GPUs (strongly typed only, JIT kernels, runtime cache).

Everything else in the toolkit receives a ``TrtApi`` and asks it what the installed
library can do (``has_weak_typing``, ``strongly_typed_only``, ...) instead of
comparing version strings. Capabilities are read from the real module (does
``BuilderFlag.FP16`` exist?), so the checks follow the library, not our guesses.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from common.core.errors import UserError

__all__ = [
    "BACKENDS",
    "DOCTOR_CMD",
    "INSTALL_HINTS",
    "MODULES",
    "QUANTIZE_HINT",
    "TRT_APIS",
    "VERBOSITY",
    "WEAK_TYPING_FLAGS",
    "TrtApi",
    "add_api_args",
    "add_backend_args",
    "create",
    "last_error",
    "load_api",
    "load_backend",
    "make_logger",
    "reject_weak_typing",
]

# The TensorRT APIs (``--trt-api``): name -> import name. "backend" is the runtime object that evaluates a batch.
TRT_APIS: dict[str, str] = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
BACKENDS = TRT_APIS  # the old name
# Modules that provide a backend, in order. pip's tensorrt-cuXX-bindings wheel holds only
# ``tensorrt_bindings``; the name ``tensorrt`` is its front end (tensorrt-cuXX), a plain re-export.
MODULES: dict[str, tuple[str, ...]] = {"tensorrt": ("tensorrt", "tensorrt_bindings"), "tensorrt-rtx": ("tensorrt_rtx",)}
INSTALL_HINTS: dict[str, str] = {
    "tensorrt": "use the NGC TensorRT container (pixi run -e rtx5090 ...) or pip install tensorrt",
    "tensorrt-rtx": "pip install tensorrt-rtx-cu13 (pixi feature trt-rtx)",
}
# Builder flags that ask for weak (builder-chosen) reduced precision: TensorRT 10.x only.
WEAK_TYPING_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4")
QUANTIZE_HINT = (
    "make a reduced-precision ONNX first with scripts/cv-models/quantize_onnx.py --mode fp16|int8|fp8 "
    "and build that ONNX without precision flags"
)
VERBOSITY = ("error", "warning", "info", "verbose")

log = logging.getLogger("trt")


@dataclass(frozen=True)
class TrtApi:
    """The imported TensorRT flavour and what it supports."""

    name: str  # "tensorrt" | "tensorrt-rtx"
    module: ModuleType
    version: str

    @property
    def major(self) -> int:
        """The major version (PEP 440: ``10.7.0.post1`` -> 10); 0 when unparsable."""
        from packaging.version import InvalidVersion, Version

        try:
            return Version(self.version).release[0]
        except InvalidVersion:
            return 0

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt-rtx"

    @property
    def has_weak_typing(self) -> bool:
        """True where BuilderFlag.FP16 & co. exist (TensorRT 10.x)."""
        return hasattr(self.module.BuilderFlag, "FP16") and not self.is_rtx

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT >= 11 and TensorRT-RTX build strongly typed networks only."""
        return self.is_rtx or self.major >= 11 or not self.has_weak_typing

    @property
    def timing_cache_supported(self) -> bool:
        """TensorRT-RTX accepts timing-cache calls but they do nothing."""
        return not self.is_rtx

    @property
    def has_progress_monitor(self) -> bool:
        return hasattr(self.module, "IProgressMonitor")

    def describe(self) -> str:
        return f"{self.name} {self.version}"


def _import(name: str) -> TrtApi:
    """The first module of ``MODULES[name]`` that imports; re-raises the first module's error otherwise
    (a broken ``tensorrt`` front end is reported as such, not hidden behind ``tensorrt_bindings``)."""
    first: Exception | None = None
    for module_name in MODULES[name]:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the module exists but something it imports does not
                raise
            first = first or exc
            continue
        version = str(getattr(module, "__version__", "0"))
        return TrtApi(name=name, module=module, version=version)
    assert first is not None
    raise first


def load_api(name: str | None = None) -> TrtApi:
    """Import the requested TensorRT API (``--trt-api``), or the first of tensorrt, tensorrt-rtx that imports."""
    if name is not None and name not in BACKENDS:
        raise UserError(f"--trt-api {name!r} is not one of {', '.join(BACKENDS)}")
    candidates = [name] if name else list(BACKENDS)
    reasons: list[str] = []
    for cand in candidates:
        try:
            return _import(cand)
        except Exception as exc:  # ImportError, or a broken native library (OSError)
            reasons.append(f"{BACKENDS[cand]}: {type(exc).__name__}: {exc}".replace("\n", " "))
    if name:
        raise UserError(f"--trt-api {name}: cannot import {BACKENDS[name]} ({reasons[0]}); {INSTALL_HINTS[name]}")
    raise UserError(
        "neither tensorrt nor tensorrt_rtx can be imported ("
        + "; ".join(reasons)
        + f"); {INSTALL_HINTS['tensorrt']}, or {INSTALL_HINTS['tensorrt-rtx']}"
    )


def reject_weak_typing(api: TrtApi, requested: list[str]) -> None:
    """--fp16/--int8/--fp8 only exist as builder flags on TensorRT 10.x."""
    if not requested:
        return
    flags = "/".join(f"--{f.lower()}" for f in requested)
    if api.is_rtx:
        why = "TensorRT-RTX builds strongly typed networks only"
    elif not api.has_weak_typing:
        why = f"TensorRT {api.version} removed the weak-typing builder flags (strongly typed builds only)"
    else:
        missing = [f for f in requested if not hasattr(api.module.BuilderFlag, f)]
        if not missing:
            return
        why = f"TensorRT {api.version} has no BuilderFlag.{missing[0]}"
    raise UserError(f"{flags}: {why}; {QUANTIZE_HINT}")


load_backend = load_api  # the old name, kept for callers outside this repository


class _TrtApiFlag(argparse.Action):
    """``--trt-api`` (alias ``--backend``, the old spelling): sets ``trt_api`` and mirrors it into ``backend``
    so that the ``args`` record in metrics.json keeps the key it always had."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        namespace.trt_api = values
        namespace.backend = values


def add_api_args(parser: argparse.ArgumentParser) -> None:
    """``--trt-api`` (alias ``--backend``) and ``--trt-verbosity``."""
    parser.add_argument(
        "--trt-api",
        dest="trt_api",
        action=_TrtApiFlag,
        choices=list(BACKENDS),
        default=None,
        help="TensorRT API (default: tensorrt if it imports, else tensorrt-rtx)",
    )
    parser.add_argument(  # the old spelling, hidden from --help
        "--backend", dest="trt_api", action=_TrtApiFlag, choices=list(BACKENDS), default=None, help=argparse.SUPPRESS
    )
    parser.set_defaults(backend=None)
    parser.add_argument(
        "--trt-verbosity",
        choices=VERBOSITY,
        default="warning",
        help="lowest TensorRT log severity to show (default: warning; -v/--verbose implies verbose)",
    )


def make_logger(api: TrtApi, verbosity: str = "warning") -> Any:
    """A TensorRT ILogger that forwards messages to Python logging ("trt" logger).

    ``verbosity`` is the lowest severity forwarded: error, warning, info or verbose.
    Internal errors and errors log as ERROR, warnings as WARNING, info as INFO and
    verbose as DEBUG. The last error messages are kept in ``logger.errors``
    so that callers can put them in a one-line UserError; below ``info`` they are logged at
    DEBUG only (the UserError carries them), so a failing command prints one line.
    """
    if verbosity not in VERBOSITY:
        raise UserError(f"--trt-verbosity {verbosity!r} is not one of {', '.join(VERBOSITY)}")
    trt = api.module
    sev = trt.ILogger.Severity
    order = {"error": 1, "warning": 2, "info": 3, "verbose": 4}
    rank = {
        sev.INTERNAL_ERROR: 0,
        sev.ERROR: 1,
        sev.WARNING: 2,
        sev.INFO: 3,
        sev.VERBOSE: 4,
    }
    to_py = {0: logging.ERROR, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG}
    threshold = order[verbosity]

    class TrtLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = rank.get(severity, 2)
            if level <= 1:
                self.errors.append(str(msg).strip())
                del self.errors[:-20]
                if threshold < 3:  # shown in our one-line error instead; printed live at info/verbose
                    log.debug("[%s] %s", api.name, str(msg).rstrip())
                    return
            if level <= threshold:
                log.log(to_py[level], "[%s] %s", api.name, str(msg).rstrip())

    return TrtLogger()


DOCTOR_CMD = "pixi run -e rtx5090 trt-doctor"


def register_plugins(api: TrtApi, logger: Any) -> str:
    """Register TensorRT's own plugins (EfficientNMS_TRT, ...) before a parse or a deserialization, as NVIDIA's
    samples and Polygraphy do: without it an ONNX with a plugin op fails to parse ("Plugin not found") and an
    engine holding one fails to deserialize. Full TensorRT only: TensorRT-RTX ships no plugin library (no
    EfficientNMS). Returns what happened, for the metadata."""
    if api.is_rtx:
        return "none: TensorRT-RTX ships no plugin library (no EfficientNMS)"
    init = getattr(api.module, "init_libnvinfer_plugins", None)
    if init is None:
        return "not registered: this API has no init_libnvinfer_plugins"
    if init(logger, ""):
        return "registered (init_libnvinfer_plugins)"
    log.warning(
        "init_libnvinfer_plugins failed (%s); models with TensorRT plugin ops will not load", last_error(logger)
    )
    return f"failed: init_libnvinfer_plugins returned False ({last_error(logger, 'no detail')})"


def create(api: TrtApi, factory: str, logger: Any) -> Any:
    """``trt.Builder(logger)`` / ``trt.Runtime(logger)``, with one actionable line when the native library
    cannot start. The bindings then raise ``TypeError: ... factory function returned nullptr`` (pybind11):
    no usable GPU, a driver too old for the CUDA the library was built with, or a libnvinfer that does not
    match the bindings (or a stand-in)."""
    try:
        obj = getattr(api.module, factory)(logger)
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        obj = None
    if obj is None:
        detail = last_error(logger, "factory function returned nullptr")
        raise UserError(
            f"{api.describe()} could not create its {factory} ({detail}); likely causes: no usable GPU, a driver "
            "too old for this TensorRT's CUDA, or a libnvinfer that does not match the bindings (LD_LIBRARY_PATH); "
            f"run `{DOCTOR_CMD}`"
        )
    return obj


def last_error(logger: Any, default: str = "") -> str:
    """The last error TensorRT logged, on one line."""
    errors = getattr(logger, "errors", None) or []
    return " ".join(errors[-1].split()) if errors else default


add_backend_args = add_api_args  # the old name
