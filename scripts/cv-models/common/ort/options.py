"""First-class ONNX Runtime execution-provider flags: TensorRT EP, TensorRT-RTX EP, CUDA EP.

``add_ep_flags(parser)`` adds the flags; ``resolve_provider_options(settings, requested, available)``
checks them against the providers the run asks for and the ones this ONNX Runtime offers, and
returns ``{provider: {key: value}}`` with string values, ready for
``InferenceSession(providers=[(name, opts), ...])`` or ``SessionOptions.add_provider_for_devices``.
``merge_provider_options`` applies generic ``--provider-option EP:key=value`` overrides on top,
and ``format_effective_options`` renders what a session will get.

TensorRT 11 and TensorRT-RTX take precision only from the ONNX (strong typing): FP16 comes from
``quantize_onnx.py --mode fp16`` (AutoCast), INT8/FP8 from Q/DQ nodes. ``--trt-fp16`` therefore
exists only for a TensorRT EP built against TensorRT 10.x, and the TensorRT-RTX EP has no
precision flag at all.

Engine/timing/runtime caches default to folders under ``tmp/`` (gitignored).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.core.errors import UserError

__all__ = [
    "CPU_EP",
    "CUDA_EP",
    "DEFAULT_RTX_RUNTIME_CACHE",
    "DEFAULT_TRT_ENGINE_CACHE",
    "DEFAULT_TRT_TIMING_CACHE",
    "RTX_EP",
    "TRT_EP",
    "add_ep_flags",
    "available_providers",
    "format_effective_options",
    "merge_provider_options",
    "parse_provider_options",
    "parse_size",
    "print_effective_options",
    "provider_list",
    "register_rtx_plugin",
    "resolve_provider_options",
    "trt_ep_tensorrt_major",
]

log = logging.getLogger(__name__)

TRT_EP = "TensorrtExecutionProvider"
RTX_EP = "NvTensorRTRTXExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"

DEFAULT_TRT_ENGINE_CACHE = "tmp/ort-trt-cache/engines"
DEFAULT_TRT_TIMING_CACHE = "tmp/ort-trt-cache/timing"
DEFAULT_RTX_RUNTIME_CACHE = "tmp/ort-rtx-cache/runtime"


@dataclass(frozen=True)
class _Flag:
    dest: str  # argparse dest
    flag: str  # command-line spelling, for messages
    provider: str
    key: str  # provider option key
    kind: str  # "bool" | "int" | "path" | "size"


# Order = order of the effective-options printout.
_FLAGS: tuple[_Flag, ...] = (
    _Flag("trt_engine_cache", "--trt-engine-cache", TRT_EP, "trt_engine_cache_enable", "bool"),
    _Flag("trt_engine_cache_path", "--trt-engine-cache-path", TRT_EP, "trt_engine_cache_path", "path"),
    _Flag("trt_timing_cache", "--trt-timing-cache", TRT_EP, "trt_timing_cache_enable", "bool"),
    _Flag("trt_timing_cache_path", "--trt-timing-cache-path", TRT_EP, "trt_timing_cache_path", "path"),
    _Flag(
        "trt_builder_optimization_level",
        "--trt-builder-optimization-level",
        TRT_EP,
        "trt_builder_optimization_level",
        "int",
    ),
    _Flag("trt_max_workspace", "--trt-max-workspace", TRT_EP, "trt_max_workspace_size", "size"),
    _Flag("trt_fp16", "--trt-fp16", TRT_EP, "trt_fp16_enable", "bool"),
    _Flag("trt_cuda_graph", "--trt-cuda-graph", TRT_EP, "trt_cuda_graph_enable", "bool"),
    _Flag("rtx_runtime_cache_path", "--rtx-runtime-cache-path", RTX_EP, "nv_runtime_cache_path", "path"),
    _Flag("rtx_max_workspace", "--rtx-max-workspace", RTX_EP, "nv_max_workspace_size", "size"),
    _Flag("rtx_cuda_graph", "--rtx-cuda-graph", RTX_EP, "enable_cuda_graph", "bool"),
    _Flag("rtx_detailed_build_log", "--rtx-detailed-build-log", RTX_EP, "nv_detailed_build_log", "bool"),
    _Flag("cuda_graph", "--cuda-graph", CUDA_EP, "enable_cuda_graph", "bool"),
)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'4G', '512MiB', '1073741824' -> bytes (binary units)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4G, 512M, 1073741824)")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    value = float(m.group(1)) * _SIZE_UNITS[unit]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return int(value)


def _opt_level(text: str) -> int:
    try:
        level = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= level <= 5:
        raise argparse.ArgumentTypeError(f"must be 0..5 (TensorRT builder optimization level), got {level}")
    return level


def add_ep_flags(parser: argparse.ArgumentParser) -> None:
    """Add the first-class execution-provider flags (grouped per EP) to ``parser``."""
    trt = parser.add_argument_group(
        "TensorRT EP (TensorrtExecutionProvider; needs it in --providers)",
    )
    trt.add_argument(
        "--trt-engine-cache",
        action="store_true",
        default=None,
        help=f"cache built engines (trt_engine_cache_enable); default folder {DEFAULT_TRT_ENGINE_CACHE}",
    )
    trt.add_argument(
        "--trt-engine-cache-path", metavar="DIR", help="engine cache folder (implies --trt-engine-cache; default: none)"
    )
    trt.add_argument(
        "--trt-timing-cache",
        action="store_true",
        default=None,
        help=f"reuse tactic timings across builds (trt_timing_cache_enable); default folder {DEFAULT_TRT_TIMING_CACHE}",
    )
    trt.add_argument(
        "--trt-timing-cache-path", metavar="DIR", help="timing cache folder (implies --trt-timing-cache; default: none)"
    )
    trt.add_argument(
        "--trt-builder-optimization-level",
        type=_opt_level,
        metavar="0-5",
        help="TensorRT builder optimization level (EP default 3); higher builds slower, may run faster",
    )
    trt.add_argument(
        "--trt-max-workspace",
        type=parse_size,
        metavar="SIZE",
        help="builder workspace limit, e.g. 4G (bytes if no unit; default: ONNX Runtime's)",
    )
    trt.add_argument(
        "--trt-fp16",
        action="store_true",
        default=None,
        help="trt_fp16_enable: only for an EP built on TensorRT 10.x; with TensorRT 11 make an FP16 ONNX "
        "(quantize_onnx.py --mode fp16) instead",
    )
    trt.add_argument("--trt-cuda-graph", action="store_true", default=None, help="capture a CUDA graph (static shapes)")

    rtx = parser.add_argument_group(
        "TensorRT-RTX EP (NvTensorRTRTXExecutionProvider, pip onnxruntime-ep-nv-tensorrt-rtx-cu13; needs it in "
        "--providers). Precision comes from the ONNX only.",
    )
    rtx.add_argument(
        "--rtx-runtime-cache-path",
        metavar="DIR",
        help=f"JIT runtime cache folder (nv_runtime_cache_path), e.g. {DEFAULT_RTX_RUNTIME_CACHE} (default: none)",
    )
    rtx.add_argument(
        "--rtx-max-workspace",
        type=parse_size,
        metavar="SIZE",
        help="builder workspace limit, e.g. 4G (default: ONNX Runtime's)",
    )
    rtx.add_argument("--rtx-cuda-graph", action="store_true", default=None, help="capture a CUDA graph (static shapes)")
    rtx.add_argument("--rtx-detailed-build-log", action="store_true", default=None, help="verbose engine build log")

    cuda = parser.add_argument_group("CUDA EP (CUDAExecutionProvider; needs it in --providers)")
    cuda.add_argument(
        "--cuda-graph",
        action="store_true",
        default=None,
        help="capture a CUDA graph (static shapes; every node on the CUDA EP). With --io-binding: one "
        "graph per lane at --batch-size, captured when the lanes are made (already the default where "
        "ONNX Runtime can capture: this flag makes a failed capture an error); runs then return at "
        "once and the GPU order defaults to serial",
    )


def _fmt(kind: str, value: Any) -> str:
    if kind == "bool":
        return "1" if value else "0"
    if kind == "path":
        return str(Path(value))
    return str(int(value))


def trt_ep_tensorrt_major() -> int | None:
    """TensorRT major version the installed ORT TensorRT EP links against (libnvinfer.so.N), or None."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        lib = Path(loc) / "capi" / "libonnxruntime_providers_tensorrt.so"
        if lib.is_file():
            try:
                data = lib.read_bytes()
            except OSError:
                return None
            m = re.search(rb"libnvinfer\.so\.(\d+)", data)
            return int(m.group(1)) if m else None
    return None


def resolve_provider_options(
    settings: Mapping[str, Any],
    requested_providers: Sequence[str],
    available: Iterable[str],
    trt_major: int | str | None = "detect",
) -> dict[str, dict[str, str]]:
    """Validate the first-class EP settings and return ``{provider: {key: value}}`` (string values).

    ``settings``: the EP flags' values by their option name (``trt_engine_cache``...; None or absent: not
    given), e.g. ``vars()`` of the parsed command line.

    A flag whose EP is not in ``requested_providers`` or not in ``available`` is a UserError naming
    the flag. ``trt_major``: TensorRT major version of the TensorRT EP ("detect" reads it from the
    installed ORT; tests pass it explicitly). Providers without flags are absent from the result.
    """
    requested = list(requested_providers)
    avail = set(available)
    out: dict[str, dict[str, str]] = {}
    for f in _FLAGS:
        value = settings.get(f.dest)
        if value is None:
            continue
        if f.kind == "bool" and value is False:
            continue
        if f.provider not in requested:
            raise UserError(
                f"{f.flag} configures {f.provider}, which is not in --providers ({', '.join(requested) or 'none'}); "
                f"add {f.provider} to --providers or drop {f.flag}"
            )
        if f.provider not in avail:
            raise UserError(
                f"{f.flag} configures {f.provider}, which this ONNX Runtime does not offer "
                f"(available: {', '.join(sorted(avail)) or 'none'}); {_install_hint(f.provider)}"
            )
        out.setdefault(f.provider, {})[f.key] = _fmt(f.kind, value)

    trt = out.get(TRT_EP)
    if trt is not None:
        # Paths imply their enable switch; an enable switch without a path gets the tmp/ default.
        if "trt_engine_cache_path" in trt:
            trt["trt_engine_cache_enable"] = "1"
        elif trt.get("trt_engine_cache_enable") == "1":
            trt["trt_engine_cache_path"] = DEFAULT_TRT_ENGINE_CACHE
        if "trt_timing_cache_path" in trt:
            trt["trt_timing_cache_enable"] = "1"
        elif trt.get("trt_timing_cache_enable") == "1":
            trt["trt_timing_cache_path"] = DEFAULT_TRT_TIMING_CACHE
        if trt.get("trt_fp16_enable") == "1":
            major = trt_ep_tensorrt_major() if trt_major == "detect" else trt_major
            if major is None:
                log.warning("--trt-fp16: cannot tell which TensorRT the TensorRT EP uses; passing trt_fp16_enable=1")
            elif major != 10:
                raise UserError(
                    f"--trt-fp16 needs a TensorRT EP built on TensorRT 10.x, but this one uses TensorRT {major}, "
                    "which takes precision only from the ONNX; make an FP16 model with "
                    "`quantize_onnx.py --mode fp16` and drop --trt-fp16"
                )
        for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
            if key in trt:
                _ensure_dir(trt[key], key)
    rtx = out.get(RTX_EP)
    if rtx is not None and "nv_runtime_cache_path" in rtx:
        _ensure_dir(rtx["nv_runtime_cache_path"], "--rtx-runtime-cache-path")
    return out


def _ensure_dir(path: str, what: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {what} folder {path}: {exc.strerror or exc}; pass a writable folder") from exc


def _install_hint(provider: str) -> str:
    if provider == RTX_EP:
        return "install onnxruntime-ep-nv-tensorrt-rtx-cu13 (GPU environment) or drop the --rtx-* flags"
    if provider in (TRT_EP, CUDA_EP):
        return "use the GPU environment (pixi run -e rtx5090 ...) with onnxruntime-gpu, or drop the flag"
    return "drop the flag"


def parse_provider_options(
    items: Sequence[str], providers: Sequence[str], where: str = "--providers"
) -> dict[str, dict[str, str]]:
    """``--provider-option EP:KEY=VALUE`` items as ``{EP: {KEY: VALUE}}``; EP must be in ``providers`` (``where``
    names them in the refusal)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        ep, sep, kv = item.partition(":")
        key, eq, value = kv.partition("=")
        if not sep or not eq or not ep or not key:
            raise UserError(
                f"--provider-option {item!r}: expected EP:KEY=VALUE, e.g. CUDAExecutionProvider:device_id=0"
            )
        if ep not in providers:
            raise UserError(f"--provider-option {item!r}: {ep} is not in {where} ({' '.join(providers)})")
        out.setdefault(ep, {})[key] = value
    return out


def merge_provider_options(
    first_class: Mapping[str, Mapping[str, str]],
    overrides: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, str]]:
    """First-class flag options, then generic ``--provider-option EP:key=value`` overrides on top."""
    merged = {ep: dict(opts) for ep, opts in first_class.items()}
    for ep, opts in overrides.items():
        merged.setdefault(ep, {}).update({k: str(v) for k, v in opts.items()})
    return merged


def provider_list(
    requested_providers: Sequence[str], options: Mapping[str, Mapping[str, str]]
) -> list[str | tuple[str, dict[str, str]]]:
    """``providers=`` argument for ``InferenceSession``: (name, options) where options exist, else name."""
    return [(p, dict(options[p])) if options.get(p) else p for p in requested_providers]


def format_effective_options(requested_providers: Sequence[str], options: Mapping[str, Mapping[str, str]]) -> str:
    """Human-readable effective options, one provider per line, in priority order."""
    lines = []
    for p in requested_providers:
        opts = options.get(p) or {}
        body = ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) if opts else "(EP defaults)"
        lines.append(f"  {p}: {body}")
    return "execution providers (priority order):\n" + "\n".join(lines)


def print_effective_options(
    requested_providers: Sequence[str], options: Mapping[str, Mapping[str, str]], file: Any = None
) -> dict[str, dict[str, str]]:
    """Print ``format_effective_options`` (stderr by default) and return the options for metrics.json."""
    import sys

    print(format_effective_options(requested_providers, options), file=file or sys.stderr)
    return {p: dict(options.get(p) or {}) for p in requested_providers}


def available_providers(register_plugins: bool = True) -> list[str]:
    """Providers this ONNX Runtime offers, including the TensorRT-RTX plugin EP when its wheel is installed.

    The plugin (pip ``onnxruntime-ep-nv-tensorrt-rtx-cu13``) is registered with
    ``onnxruntime.register_execution_provider_library``; it counts as available only when
    ``onnxruntime.get_ep_devices()`` then lists a device for it (an NVIDIA GPU).
    """
    import onnxruntime as ort

    names = list(ort.get_available_providers())
    if register_plugins and RTX_EP not in names:
        for ep in register_rtx_plugin():
            if ep not in names:
                names.append(ep)
    return names


_REGISTERED: set[str] = set()


def register_rtx_plugin() -> list[str]:
    """Register the TensorRT-RTX plugin EP if installed; return the plugin EP names that have devices."""
    if importlib.util.find_spec("onnxruntime_ep_nv_tensorrt_rtx") is None:
        return []
    import onnxruntime as ort

    if not hasattr(ort, "register_execution_provider_library"):
        log.warning(
            "onnxruntime %s cannot load plugin EPs (needs >= 1.22); TensorRT-RTX EP unavailable", ort.__version__
        )
        return []
    try:
        import onnxruntime_ep_nv_tensorrt_rtx as rtx_pkg

        name = rtx_pkg.get_ep_name()
        if name not in _REGISTERED:
            ort.register_execution_provider_library(name, rtx_pkg.get_library_path())
            _REGISTERED.add(name)
        return sorted({d.ep_name for d in ort.get_ep_devices() if d.ep_name == name})
    except Exception as exc:  # a broken plugin install must not break CPU runs
        log.warning("TensorRT-RTX EP plugin could not be loaded: %s", exc)
        return []
