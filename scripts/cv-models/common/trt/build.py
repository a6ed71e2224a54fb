"""ONNX -> TensorRT / TensorRT-RTX engine: options, cache key, build, timing cache, summary.

``build_or_reuse(onnx, engine_path, options, api)`` is the one entry point:

1. the cache key (ONNX sha256, the sha256 of every external-data file it references, options that
   change the engine, backend version, GPU) is compared with ``<engine>.json``; a match whose
   engine file hashes as recorded is reused ("cache hit") and nothing is built;
2. otherwise the ONNX is parsed (errors reported per node), the network is created
   strongly typed when the ONNX carries Q/DQ or reduced precision, or always on
   TensorRT >= 11 and TensorRT-RTX, profiles/workspace/optimisation level/TF32 are set,
   the timing cache (full TensorRT only) is loaded and saved, and the engine and its
   metadata are written atomically (an interrupted build leaves no engine behind).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.core.checks import check_param
from common.core.errors import UserError
from common.core.results import atomic_write_bytes, atomic_write_json, sha256_file, stamp
from common.model.onnx_facts import OnnxFacts, external_data_files, inspect_onnx
from common.trt.api import TrtApi, create, make_logger, register_plugins, reject_weak_typing

__all__ = [
    "ENGINE_META_SCHEMA",
    "FP8_FLAG_NOTE",
    "INT8_FLAG_NOTE",
    "PROFILING_VERBOSITY",
    "BuildOptions",
    "BuildResult",
    "OnnxFacts",
    "ProfileShapes",
    "Shape",
    "build_or_reuse",
    "cache_hit",
    "cache_key",
    "current_gpu",
    "default_engine_path",
    "default_timing_cache_path",
    "describe_precision",
    "external_data_files",
    "external_data_hashes",
    "gpu_tag",
    "inspect_onnx",
    "make_progress_monitor",
    "metadata_path",
    "parse_compute_capabilities",
    "parse_shapes",
    "read_metadata",
]

log = logging.getLogger(__name__)

ENGINE_META_SCHEMA = 1
# --profiling-verbosity -> ProfilingVerbosity member. DETAILED keeps per-layer details in the engine for the
# engine inspector (and Nsight); TensorRT notes that it generally increases the latency of enqueueV3.
PROFILING_VERBOSITY = {"layer_names_only": "LAYER_NAMES_ONLY", "detailed": "DETAILED", "none": "NONE"}
Shape = tuple[int, ...]


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ProfileShapes:
    """min/opt/max shapes of one input in one optimisation profile."""

    name: str
    min: Shape
    opt: Shape
    max: Shape


@dataclass
class BuildOptions:
    """Everything that changes the engine (all of it goes into the cache key)."""

    fp16: bool = False  # legacy weak-typing flags: TensorRT 10.x only
    int8: bool = False
    fp8: bool = False
    shapes: list[ProfileShapes] = field(default_factory=list)
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_mib: int | None = None
    opt_level: int | None = None
    tf32: bool = True
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets, e.g. ("SM120",)

    def __post_init__(self) -> None:
        """The batch bounds and the workspace are positive (OptionError naming the parameter)."""
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mib"):
            check_param(name, getattr(self, name), 1)

    profiling_verbosity: str = "layer_names_only"  # one of PROFILING_VERBOSITY

    def legacy_precision(self) -> list[str]:
        return [n for n, on in (("FP16", self.fp16), ("INT8", self.int8), ("FP8", self.fp8)) if on]

    def key_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shapes"] = [[p.name, list(p.min), list(p.opt), list(p.max)] for p in self.shapes]
        d["compute_capabilities"] = list(self.compute_capabilities)
        return d


def _parse_dims(text: str, flag: str) -> Shape:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{flag}: {text!r} is not a shape like 1x3x640x640") from None
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"{flag}: {text!r} must have positive dimensions, like 1x3x640x640")
    return dims


def parse_shapes(specs: Sequence[str]) -> list[ProfileShapes]:
    """``name:MINxCxHxW,OPTx...,MAXx...`` (one per input; repeat the flag for more inputs)."""
    out: list[ProfileShapes] = []
    for spec in specs:
        name, sep, rest = spec.rpartition(":")
        parts = rest.split(",")
        if not sep or not name or len(parts) not in (1, 3):
            raise UserError(
                f"--shapes {spec!r}: expected name:MINxCxHxW,OPTxCxHxW,MAXxCxHxW (or name:NxCxHxW for a fixed shape)"
            )
        dims = [_parse_dims(p, f"--shapes {spec}") for p in parts]
        lo, opt, hi = (dims * 3)[:3] if len(dims) == 1 else dims
        if not (len(lo) == len(opt) == len(hi)):
            raise UserError(f"--shapes {spec!r}: min, opt and max must have the same rank")
        if any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi, strict=True)):
            raise UserError(f"--shapes {spec!r}: need min <= opt <= max in every dimension")
        if any(p.name == name for p in out):
            raise UserError(f"--shapes: input {name!r} given twice")
        out.append(ProfileShapes(name, lo, opt, hi))
    return out


def parse_compute_capabilities(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    out = []
    for item in text.split(","):
        item = item.strip().upper().replace(".", "")
        if not item:
            continue
        if item != "CURRENT" and not item.startswith("SM"):
            item = "SM" + item
        out.append(item)
    return tuple(out)


def external_data_hashes(onnx_path: Path) -> dict[str, str]:
    """``{location: sha256}`` of the external-data files of ``onnx_path``; refuses a missing one."""
    out: dict[str, str] = {}
    for loc in external_data_files(onnx_path):
        file = onnx_path.parent / loc
        if not file.is_file():
            raise UserError(
                f"--onnx-path {onnx_path}: its external data file {loc!r} is missing (expected at {file}); "
                "keep the .onnx and its data files together"
            )
        out[loc] = sha256_file(file)
    return out


# ----------------------------------------------------------------------------- cache key


def gpu_tag(gpu: dict[str, Any] | None) -> str:
    if not gpu:
        return "nogpu"
    name = re.sub(r"[^A-Za-z0-9]+", "-", str(gpu.get("name", "gpu"))).strip("-").lower()
    return f"{name}-sm{str(gpu.get('compute_capability', '')).replace('.', '')}"


def cache_key(
    onnx_sha256: str,
    options: BuildOptions,
    api: TrtApi,
    gpu: dict[str, Any] | None,
    external_data: dict[str, str] | None = None,
) -> str:
    payload = {
        "schema": ENGINE_META_SCHEMA,
        "onnx_sha256": onnx_sha256,
        "options": options.key_dict(),
        "backend": api.name,
        "backend_version": api.version,
        "gpu": {k: gpu.get(k) for k in ("name", "compute_capability")} if gpu else None,
    }
    if external_data:  # only then, so keys of self-contained models stay what they were
        payload["onnx_external_data"] = dict(sorted(external_data.items()))
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def default_engine_path(
    onnx_path: Path, api: TrtApi, root: str | os.PathLike[str] = "tmp", task: str = "build-engine"
) -> Path:
    return Path(root) / task / "trt" / f"{onnx_path.stem}.{api.name}.engine"


def default_timing_cache_path(
    api: TrtApi, gpu: dict[str, Any] | None, root: str | os.PathLike[str] = "tmp", task: str = "build-engine"
) -> Path:
    return Path(root) / task / "trt" / f"timing-{api.name}-{api.version}-{gpu_tag(gpu)}.cache"


def metadata_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def read_metadata(engine_path: Path) -> dict[str, Any] | None:
    meta = metadata_path(engine_path)
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cache_hit(engine_path: Path, key: str) -> dict[str, Any] | None:
    """The metadata of a reusable engine, or None."""
    meta = read_metadata(engine_path)
    if not meta or meta.get("cache_key") != key or not engine_path.is_file():
        return None
    if engine_path.stat().st_size != meta.get("engine_bytes") or sha256_file(engine_path) != meta.get("engine_sha256"):
        return None
    return meta


# ----------------------------------------------------------------------------- progress


def make_progress_monitor(api: TrtApi, enabled: bool) -> Any | None:
    """An IProgressMonitor, where the API has it: one tqdm bar per build phase when ``enabled`` (and tqdm
    imports), and always the way to cancel the build: ``step_complete`` returns False once ``cancel`` is set
    (Ctrl-C during ``build_or_reuse`` sets it), and TensorRT then stops the build.

    TensorRT may call a progress monitor from several builder threads at once and requires
    implementations to be thread-safe: every callback runs under one lock."""
    if not api.has_progress_monitor:
        return None
    tqdm: Any = None
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
    base = api.module.IProgressMonitor

    class BuildMonitor(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.bars: dict[str, Any] = {}
            self.depth: dict[str, int] = {}
            self.lock = threading.Lock()
            self.cancel = threading.Event()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self.lock:
                level = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self.depth[phase_name] = level
                if tqdm is not None:
                    self.bars[phase_name] = tqdm(
                        total=num_steps, desc=phase_name, position=level, leave=level == 0, dynamic_ncols=True
                    )

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self.lock:
                bar = self.bars.get(phase_name)
                if bar is not None and step + 1 > bar.n:  # steps may arrive out of order from several threads
                    bar.update(step + 1 - bar.n)
            return not self.cancel.is_set()

        def phase_finish(self, phase_name: str) -> None:
            with self.lock:
                bar = self.bars.pop(phase_name, None)
                self.depth.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return BuildMonitor()


@contextlib.contextmanager
def _cancel_on_sigint(monitor: Any | None) -> Iterator[None]:
    """While the builder runs (native code, where Python's KeyboardInterrupt cannot land): the first Ctrl-C
    asks the progress monitor to cancel at the next step; a second one gets the previous handler."""
    import signal

    if monitor is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def cancel(signum: int, frame: Any) -> None:
        log.warning("Ctrl-C: cancelling the engine build at its next step (Ctrl-C again to abort)")
        monitor.cancel.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- precision


FP8_FLAG_NOTE = (
    "BuilderFlag.FP8 only enables plugins with FP8 input/output (deprecated in TensorRT 10.12, "
    "superseded by strong typing); with no Q/DQ in the ONNX no layer runs in FP8"
)
INT8_FLAG_NOTE = (
    "BuilderFlag.INT8 without a calibrator or Q/DQ: tensors without a dynamic range stay in higher "
    "precision, i.e. no layer runs in INT8"
)


def describe_precision(legacy: Sequence[str], tf32: bool, strongly_typed: bool, facts: OnnxFacts) -> dict[str, Any]:
    """What the engine's precision really is, for the metadata (and the build log)."""
    if strongly_typed:
        src = "Q/DQ nodes" if facts.has_qdq else ", ".join(facts.reduced_types) or "float32 tensors"
        return {"typing": "strong", "builder_flags": [], "engine": f"as typed in the ONNX ({src})", "notes": []}
    engine = ["FP32"] + (["TF32"] if tf32 else []) + (["FP16"] if "FP16" in legacy else [])
    notes = ([FP8_FLAG_NOTE] if "FP8" in legacy else []) + ([INT8_FLAG_NOTE] if "INT8" in legacy else [])
    return {"typing": "weak", "builder_flags": list(legacy), "engine": "/".join(engine), "notes": notes}


# ----------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    engine_path: Path
    metadata: dict[str, Any]
    cache_hit: bool


def _parser_error(parser: Any, onnx_path: Path, logger: Any, api: TrtApi | None = None) -> UserError:
    from common.trt.api import last_error

    msgs = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)
        node = int(err.node())
        desc = " ".join(str(err.desc()).split())
        if node >= 0:
            name = err.node_name() if hasattr(err, "node_name") else ""
            op = err.node_operator() if hasattr(err, "node_operator") else ""
            msgs.append(f"node {node} {name!r} ({op}): {desc}" if name or op else f"node {node}: {desc}")
        else:
            msgs.append(desc)
    detail = "; ".join(msgs) or last_error(logger, "no detail (rerun with --trt-verbosity verbose)")
    if api is not None and api.is_rtx and "Plugin not found" in detail:
        detail += (
            "; TensorRT-RTX ships no plugin library (no EfficientNMS_TRT): export the model without TensorRT plugin "
            "ops (YOLOv10's end-to-end head needs none), or build with full TensorRT (--backend tensorrt)"
        )
    return UserError(f"{onnx_path}: the ONNX parser failed: {detail}")


def _network_flags(api: TrtApi, strongly_typed: bool) -> int:
    flags = 0
    ndf = api.module.NetworkDefinitionCreationFlag
    if strongly_typed and hasattr(ndf, "STRONGLY_TYPED"):
        flags |= 1 << int(ndf.STRONGLY_TYPED)
    return flags


def _network_inputs(network: Any) -> dict[str, tuple[int, ...]]:
    return {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}


def _resolve_profiles(inputs: dict[str, tuple[int, ...]], options: BuildOptions) -> list[ProfileShapes]:
    """One profile: --shapes as given, else batch-only ranges for inputs whose only dynamic axis is batch."""
    given = {p.name: p for p in options.shapes}
    for name in given:
        if name not in inputs:
            raise UserError(f"--shapes: the network has no input {name!r} (inputs: {', '.join(inputs)})")
    out: list[ProfileShapes] = []
    batch_flags = (options.min_batch, options.opt_batch, options.max_batch)
    for name, dims in inputs.items():
        if name in given:
            p = given[name]
            if len(p.min) != len(dims):
                raise UserError(f"--shapes {name}: rank {len(p.min)} but the input has rank {len(dims)} {list(dims)}")
            for i, d in enumerate(dims):
                if d >= 0 and not (p.min[i] == p.opt[i] == p.max[i] == d):
                    raise UserError(f"--shapes {name}: axis {i} is fixed to {d} in the ONNX {list(dims)}")
            out.append(p)
            continue
        dynamic = [i for i, d in enumerate(dims) if d < 0]
        if not dynamic:
            if any(b is not None for b in batch_flags):
                log.warning("input %s has a fixed shape %s; --min/opt/max-batch ignored", name, list(dims))
            continue
        if dynamic != [0]:
            raise UserError(
                f"input {name!r} has dynamic axes {dynamic} in {list(dims)}; give its ranges with "
                f"--shapes {name}:MINx...,OPTx...,MAXx..."
            )
        lo = options.min_batch or 1
        hi = options.max_batch or max(lo, options.opt_batch or 1)
        opt = options.opt_batch or hi
        if not (1 <= lo <= opt <= hi):
            raise UserError(f"--min-batch/--opt-batch/--max-batch: need 1 <= min <= opt <= max, got {lo}/{opt}/{hi}")
        rest = dims[1:]
        out.append(ProfileShapes(name, (lo, *rest), (opt, *rest), (hi, *rest)))
    return out


def _layer_summary_from_network(api: TrtApi, network: Any) -> dict[str, Any]:
    by_type: dict[str, int] = {}
    by_precision: dict[str, int] = {}
    for i in range(int(network.num_layers)):
        layer = network.get_layer(i)
        lt = str(layer.type).split(".")[-1]
        by_type[lt] = by_type.get(lt, 0) + 1
        if layer.num_outputs:
            dt = str(layer.get_output_type(0)).split(".")[-1]
            by_precision[dt] = by_precision.get(dt, 0) + 1
    return {
        "source": "network definition (output types as parsed; the builder may fuse layers)",
        "num_layers": int(network.num_layers),
        "layers_by_type": dict(sorted(by_type.items())),
        "layer_outputs_by_dtype": dict(sorted(by_precision.items())),
    }


def _layer_summary_from_engine(api: TrtApi, logger: Any, engine_bytes: bytes) -> dict[str, Any] | None:
    """IEngineInspector summary; needs a runtime that can deserialize here (a GPU). None otherwise."""
    trt = api.module
    try:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None or not hasattr(engine, "create_engine_inspector"):
            return None
        inspector = engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception as exc:
        log.debug("engine inspector unavailable: %s", exc)
        return None
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    by_precision: dict[str, int] = {}
    for entry in layers:
        if isinstance(entry, dict):
            for out in entry.get("Outputs", []) or []:
                fmt = str(out.get("Format/Datatype", "?")) if isinstance(out, dict) else "?"
                by_precision[fmt] = by_precision.get(fmt, 0) + 1
    return {"source": "IEngineInspector", "num_layers": len(layers), "outputs_by_format": by_precision}


@contextlib.contextmanager
def _timer() -> Iterator[list[float]]:
    box = [0.0]
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - t0


def build_or_reuse(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str] | None,
    options: BuildOptions,
    api: TrtApi,
    *,
    force: bool = False,
    timing_cache: str | os.PathLike[str] | None = None,
    use_timing_cache: bool = True,
    verbosity: str = "warning",
    progress: bool = False,
    gpu: dict[str, Any] | None = None,
    root: str | os.PathLike[str] = "tmp",
) -> BuildResult:
    """The cached engine when its key matches; else parse -> config -> build (in a timing-cache context) -> write."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"--onnx-path {onnx_path}: no such file")
    reject_weak_typing(api, options.legacy_precision())
    target = Path(engine_path) if engine_path else default_engine_path(onnx_path, api, root)
    onnx_sha = sha256_file(onnx_path)
    external = external_data_hashes(onnx_path)
    key = cache_key(onnx_sha, options, api, gpu, external)
    if not force:
        meta = cache_hit(target, key)
        if meta is not None:
            log.info("cache hit: %s (key %s)", target, key[:12])
            return BuildResult(target, meta, True)
        if target.exists():
            log.info("engine %s is stale (key mismatch); rebuilding", target)

    facts, strongly_typed = _typing_of(onnx_path, options, api)
    logger = make_logger(api, verbosity)
    parsed = _parse(api, logger, onnx_path, strongly_typed)
    profiles = _resolve_profiles(parsed.inputs, options)
    config, precision = _make_config(api, parsed.builder, options, profiles, strongly_typed, facts, progress)
    tc_path = Path(timing_cache) if timing_cache else default_timing_cache_path(api, gpu, root)
    with _timing_cache(api, config, tc_path if use_timing_cache else None, logger) as tc_info:
        layer_summary = _layer_summary_from_network(api, parsed.network)
        log.info(
            "building %s with %s (%s)...",
            onnx_path.name,
            api.describe(),
            "strongly typed" if strongly_typed else f"weakly typed, {precision['engine']}",
        )
        engine_bytes, seconds = _serialize(api, logger, parsed, config, onnx_path)

    # The inspector needs a runtime that can deserialize the engine, i.e. a GPU.
    # ... and an engine built with DETAILED profiling verbosity (with less it lists layer names only).
    detailed = options.profiling_verbosity == "detailed"
    inspected = _layer_summary_from_engine(api, logger, engine_bytes) if gpu and detailed else None
    meta: dict[str, Any] = {
        "schema": ENGINE_META_SCHEMA,
        "cache_key": key,
        "engine_path": str(target),
        "engine_bytes": len(engine_bytes),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "onnx_path": str(onnx_path),
        "onnx_sha256": onnx_sha,
        "onnx_external_data": external,
        "backend": api.name,
        "backend_version": api.version,
        "gpu": gpu,
        "plugins": parsed.plugins,
        "strongly_typed": strongly_typed,
        "precision": precision,
        "onnx_precision": {"qdq": facts.has_qdq, "reduced_types": facts.reduced_types},
        "options": options.key_dict(),
        "inputs": {k: list(v) for k, v in parsed.inputs.items()},
        "profiles": [{"name": p.name, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in profiles],
        "build_seconds": round(seconds, 3),
        "timing_cache": tc_info,
        "layer_summary": inspected or layer_summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_engine(target, engine_bytes, meta)
    log.info("built %s in %.1f s (%.1f MiB)", target, seconds, len(engine_bytes) / 2**20)
    return BuildResult(target, meta, False)


def _typing_of(onnx_path: Path, options: BuildOptions, api: TrtApi) -> tuple[OnnxFacts, bool]:
    """The ONNX facts and whether the build is strongly typed; refuses a precision flag on a typed graph."""
    facts = inspect_onnx(onnx_path)
    legacy = options.legacy_precision()
    if legacy and facts.needs_strong_typing:
        why = "Q/DQ nodes" if facts.has_qdq else "reduced-precision tensors (" + ", ".join(facts.reduced_types) + ")"
        raise UserError(
            f"--{legacy[0].lower()}: {onnx_path} already carries {why}, so its precision comes from the ONNX "
            "(strongly typed build); drop the precision flag"
        )
    return facts, api.strongly_typed_only or facts.needs_strong_typing


@dataclass
class _Parsed:
    """Builder, network and the parser that owns the network's weights (kept alive together)."""

    builder: Any
    network: Any
    parser: Any
    inputs: dict[str, tuple[int, ...]]
    plugins: str = ""


def _parse(api: TrtApi, logger: Any, onnx_path: Path, strongly_typed: bool) -> _Parsed:
    builder = create(api, "Builder", logger)
    plugins = register_plugins(api, logger)  # before the parser: plugin ops (EfficientNMS_TRT) resolve through it
    network = builder.create_network(_network_flags(api, strongly_typed))
    parser = api.module.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise _parser_error(parser, onnx_path, logger, api)
    if int(network.num_outputs) == 0:
        raise UserError(f"{onnx_path}: the ONNX parser found no graph outputs; is this a (complete) ONNX model?")
    return _Parsed(builder, network, parser, _network_inputs(network), plugins)


def _make_config(
    api: TrtApi,
    builder: Any,
    options: BuildOptions,
    profiles: Sequence[ProfileShapes],
    strongly_typed: bool,
    facts: OnnxFacts,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """The builder config (profiles, memory, optimisation level, precision flags, compute capabilities,
    profiling, progress) and the precision description that goes into the metadata."""
    trt = api.module
    config = builder.create_builder_config()
    if profiles:
        profile = builder.create_optimization_profile()
        for p in profiles:
            profile.set_shape(p.name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if options.opt_level is not None:
        if not 0 <= options.opt_level <= 5:
            raise UserError(f"--builder-optimization-level {options.opt_level}: must be 0..5")
        config.builder_optimization_level = int(options.opt_level)
    if hasattr(trt.BuilderFlag, "TF32"):
        (config.set_flag if options.tf32 else config.clear_flag)(trt.BuilderFlag.TF32)
    legacy = options.legacy_precision()
    for flag in legacy:  # reject_weak_typing has checked that these exist
        config.set_flag(getattr(trt.BuilderFlag, flag))
    precision = describe_precision(legacy, options.tf32, strongly_typed, facts)
    for note in precision["notes"]:
        log.warning(
            "--%s: %s; the engine is %s -- for real INT8/FP8 make a Q/DQ ONNX (quantize_onnx.py)",
            "fp8" if note is FP8_FLAG_NOTE else "int8",
            note,
            precision["engine"],
        )
    if options.compute_capabilities:
        _set_compute_capabilities(api, config, options.compute_capabilities)
    if options.profiling_verbosity not in PROFILING_VERBOSITY:
        raise UserError(
            f"--profiling-verbosity {options.profiling_verbosity!r}: not one of {', '.join(PROFILING_VERBOSITY)}"
        )
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = getattr(trt.ProfilingVerbosity, PROFILING_VERBOSITY[options.profiling_verbosity])
    monitor = make_progress_monitor(api, progress)
    if monitor is not None:
        config.progress_monitor = monitor
    return config, precision


def _set_compute_capabilities(api: TrtApi, config: Any, ccs: Sequence[str]) -> None:
    trt = api.module
    if not api.is_rtx or not hasattr(config, "set_compute_capability"):
        raise UserError("--compute-capability is a TensorRT-RTX option; use --trt-api tensorrt-rtx")
    config.num_compute_capabilities = len(ccs)
    for i, cc in enumerate(ccs):
        member = getattr(trt.ComputeCapability, cc, None)
        if member is None:
            known = ", ".join(trt.ComputeCapability.__members__)
            raise UserError(f"--compute-capability {cc}: unknown; known: {known}")
        if not config.set_compute_capability(member, i):
            raise UserError(f"--compute-capability {cc}: rejected by {api.describe()}")


@contextlib.contextmanager
def _timing_cache(api: TrtApi, config: Any, path: Path | None, logger: Any) -> Iterator[dict[str, Any]]:
    """Load the timing cache into ``config`` (``path`` None: disabled), yield its metadata entry, and save the
    grown cache once the build inside the block has succeeded. A file TensorRT rejects (not a timing cache,
    another version, another device) is built without and replaced by the new cache, so later builds hit."""
    info: dict[str, Any] = {"used": False}
    if path is None:
        info["reason"] = "disabled (--no-timing-cache)"
    elif not api.timing_cache_supported:
        info["reason"] = "skipped: TensorRT-RTX accepts timing-cache calls but they are no-ops"
        path = None
    elif not _load_timing_cache(config, path, info, logger):
        log.warning("timing cache: TensorRT accepts no cache here (%s); building without it", info["reason"])
        path = None
    yield info
    if path is not None:
        saved = config.get_timing_cache()
        if saved is not None:
            data = bytes(saved.serialize())
            atomic_write_bytes(path, data)
            info["saved_bytes"] = len(data)


def _load_timing_cache(config: Any, path: Path, info: dict[str, Any], logger: Any) -> bool:
    """Set the cache of ``path`` on ``config``, or a fresh one when TensorRT rejects the file; fills ``info``
    with what TensorRT really loaded (``loaded_bytes``: the size of the accepted cache, 0 for a fresh one)."""
    from common.trt.api import last_error

    blob = path.read_bytes() if path.is_file() else b""
    fresh = config.create_timing_cache(b"")
    empty = bytes(fresh.serialize()) if fresh is not None else b""
    info.update(path=str(path), file_bytes=len(blob))
    if blob:
        cache = config.create_timing_cache(blob)
        loaded = bytes(cache.serialize()) if cache is not None else b""
        accepted = cache is not None and (loaded != empty or blob == empty)  # else TensorRT gave an empty one
        if accepted and config.set_timing_cache(cache, False):
            info.update(used=True, loaded_bytes=len(loaded))
            return True
        info["rejected"] = f"TensorRT did not load its {len(blob)} bytes ({last_error(logger, 'no detail')})"
        log.warning("timing cache %s: %s; it will be replaced after this build", path, info["rejected"])
    if fresh is None or not config.set_timing_cache(fresh, False):
        info["reason"] = f"TensorRT refused even an empty timing cache ({last_error(logger, 'no detail')})"
        return False
    info.update(used=True, loaded_bytes=0)
    return True


def _serialize(api: TrtApi, logger: Any, parsed: _Parsed, config: Any, onnx_path: Path) -> tuple[bytes, float]:
    """The serialized engine and the seconds the build took."""
    monitor = getattr(config, "progress_monitor", None)
    with _timer() as elapsed, _cancel_on_sigint(monitor):
        serialized = parsed.builder.build_serialized_network(parsed.network, config)
    if serialized is None and monitor is not None and monitor.cancel.is_set():
        raise KeyboardInterrupt(f"{onnx_path}: engine build cancelled (Ctrl-C)")
    if serialized is None:
        from common.trt.api import last_error

        raise UserError(
            f"{onnx_path}: {api.describe()} could not build an engine: "
            f"{last_error(logger, 'see the log (rerun with --trt-verbosity verbose)')}"
        )
    return bytes(serialized), elapsed[0]


def _write_engine(target: Path, engine_bytes: bytes, meta: dict[str, Any]) -> None:
    """Engine, then its metadata, each atomically; no engine is left without its metadata."""
    written = False
    try:
        atomic_write_bytes(target, engine_bytes)
        written = True
        atomic_write_json(metadata_path(target), stamp(meta, {target.name: meta["engine_sha256"]}))
    except BaseException:
        # the engine is there but its metadata is not: remove it rather than leave an unexplained file
        if written:
            with contextlib.suppress(OSError):
                target.unlink()
        raise


def current_gpu() -> dict[str, Any] | None:
    """The GPU the engine is built for (cuda-python, else nvidia-smi), or None."""
    from common.gpu.cuda_mem import device_info

    info = device_info()
    if info:
        return info
    try:
        from common.core.sysinfo import gpu_info

        smi = gpu_info()
    except Exception:
        return None
    return {"name": smi.get("name"), "compute_capability": smi.get("compute_capability")} if smi else None
