"""A test double of the TensorRT build and run API, and a host-memory fake of the CUDA layer.

It stands in for the three factories that need native TensorRT (``Builder``,
``OnnxParser``, ``Runtime``) and for the objects they return; everything else (enums such as
``DataType``, ``TensorIOMode``, ``BuilderFlag``, ``NetworkDefinitionCreationFlag``, the
``ILogger`` / ``IProgressMonitor`` base classes) is the real module under test: ``tensorrt_rtx``
here, or NVIDIA's real ``tensorrt`` 10.x / 11.x bindings via ../shared/trt-stubs.

Faithfulness rules:
- every fake class mirrors one real class (``_REAL``) and hides any public attribute the real
  class of the module under test does not have, so version-dependent code meets the same
  AttributeError a user would;
- engines are tied to the module version that "built" them; the runtime refuses others;
- the fake builder refuses what TensorRT refuses (weak-typing flags on a strongly typed network,
  dynamic inputs without a profile, shapes outside a profile);
- execution runs the ONNX with ONNX Runtime on the CPU, reading inputs from and writing outputs
  to the addresses given with ``set_tensor_address``, enqueued on the given stream (so CUDA graph
  capture records it instead of running it);
- TensorRT-RTX: user stream capture needs an engine built with ``BuilderFlag.REQUIRE_USER_ALLOCATION``
  (its 1.2 release notes); otherwise ``is_stream_capturable`` is False and an enqueue during capture
  fails. ``IRuntimeConfig.cuda_graph_strategy = WHOLE_GRAPH_CAPTURE`` is its own CUDA-graph mechanism
  (counted in ``DoubleState.native_graph_*``). A context whose runtime config was destroyed fails;
- the parser reads external-data files next to the ONNX (as ``parse_from_file`` does); I/O tensors
  report their format (``get_tensor_format``; LINEAR unless a test edits the engine header); freed
  fake host memory is poisoned, so a view that outlives its buffer reads garbage, as it would for real;
- plugins: an ONNX node that no importer handles is looked up in the plugin registry, as TensorRT's ONNX parser
  does ("No importer registered for op ... Attempting to import as plugin"); it fails with "Plugin not found"
  unless ``init_libnvinfer_plugins`` registered TensorRT's plugins (EfficientNMS_TRT, ...) in this process.
  An engine that holds a plugin fails to deserialize until they are registered ("Cannot deserialize plugin since
  corresponding IPluginCreator not found in Plugin Registry"). TensorRT-RTX ships no plugin library: its
  bindings have ``init_libnvinfer_plugins``, but it registers none of these, so such a model never parses there;
- CUDA-graph capture: an enqueue during stream capture fails unless the context ran one plain enqueue since it
  was created and since its last ``set_input_shape`` (NvInferRuntime.h, enqueueV3: the first enqueue after an
  input shape change allocates resources, which fails in capture; "call enqueueV3() once before capturing").
  A captured enqueue replayed after its context's input shapes changed (even back to the captured ones) fails:
  TensorRT's guide makes running a graph undefined once the context it was captured from was modified;
- data-dependent output shapes (outputs downstream of NonZero, NonMaxSuppression, ...): ``get_tensor_shape``
  reports -1 on those axes, on the engine and on a context even after ``infer_shapes``, until an execution
  ran; the real runtime hands such shapes out through ``IOutputAllocator.notify_shape``;
- ``set_tensor_address`` refuses an address that is not a multiple of 256 bytes (TensorRT's I/O tensor
  alignment; cudaMalloc gives at least that): it logs an API usage error and returns False. The fake device
  and pinned buffers are 256-byte aligned, like cudaMalloc / cudaHostAlloc;
- deserialization refuses an engine built for another compute capability than the device's
  ("The engine plan file is generated on an incompatible device, expecting compute X got compute Y, please
  rebuild."), whatever our metadata says; TensorRT-RTX engines run on any of their compute-capability targets.

The fake CUDA layer comes in two timings: ``FakeCudaMemory`` runs each copy, kernel and engine run when it is
enqueued (as early as a GPU could), ``DeferredCudaMemory`` only once the host waits for it (as late as CUDA
allows). Code that is correct with both orders its host reads and writes by its streams and events.
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import json
import math
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ENGINE_MAGIC = b"FAKETRT\x01"
TIMING_MAGIC = b"FAKETC\x01"
FAKE_DEVICE = "fake-gpu"  # the device timing caches are made on, as far as set_timing_cache checks
FAKE_CC = "8.9"  # the compute capability of the double's device (DoubleState.compute_capability)
TENSOR_ALIGNMENT = 256  # bytes: set_tensor_address refuses addresses that are not a multiple of it
# TensorRT's own plugins an ONNX node can name (resolved through the plugin registry, not an importer)
TRT_PLUGINS = ("EfficientNMS_TRT", "BatchedNMSDynamic_TRT", "BatchedNMS_TRT", "EfficientNMS_ONNX_TRT")
# ONNX operators whose outputs have data-dependent shapes in TensorRT (known only once the engine ran)
DATA_DEPENDENT_OPS = ("NonZero", "NonMaxSuppression", "Unique", "Compress")

ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 6: "INT32", 7: "INT64", 9: "BOOL", 3: "INT8", 2: "UINT8", 16: "BF16"}
TRT_TO_NP = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "INT8": np.int8,
    "UINT8": np.uint8,
}
LAYER_TYPES = {
    "Conv": "CONVOLUTION",
    "Relu": "ACTIVATION",
    "Sigmoid": "ACTIVATION",
    "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE",
    "Cast": "CAST",
    "Concat": "CONCATENATION",
    "TopK": "TOPK",
    "Gather": "GATHER",
    "Reshape": "SHUFFLE",
    "Transpose": "SHUFFLE",
    "MatMul": "MATRIX_MULTIPLY",
}
WEAK_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4")


class _Mirror:
    """Hide public attributes that the mirrored real class lacks in the module under test."""

    _REAL = ""
    _trt: ModuleType

    def _real_has(self, name: str) -> bool:
        trt = object.__getattribute__(self, "_trt")
        real = getattr(trt, type(self)._REAL, None)
        return real is None or hasattr(real, name)

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and not object.__getattribute__(self, "_real_has")(name):
            raise AttributeError(f"'{type(self)._REAL}' object has no attribute '{name}' (TensorRT API under test)")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and not self._real_has(name):
            raise AttributeError(f"'{type(self)._REAL}' object has no attribute '{name}' (TensorRT API under test)")
        object.__setattr__(self, name, value)

    def _error(self, msg: str) -> None:
        self._logger.log(self._trt.ILogger.Severity.ERROR, msg)


def _library(trt: ModuleType) -> str:
    """The native library behind a module: ``tensorrt`` is only a front end over ``tensorrt_bindings``, so an
    engine built through one loads through the other (same libnvinfer)."""
    return "tensorrt" if trt.__name__ == "tensorrt_bindings" else trt.__name__


def _dims(shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


# ----------------------------------------------------------------------------- build side


class FakeTensor(_Mirror):
    _REAL = "ITensor"
    name: str
    shape: tuple[int, ...]
    dtype: Any

    def __init__(self, trt: ModuleType, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        self._trt = trt
        self.name, self.shape, self.dtype = name, shape, dtype


class FakeLayer(_Mirror):
    _REAL = "ILayer"
    name: str
    type: Any
    num_outputs: int

    def __init__(self, trt: ModuleType, op: str, out_dtype: Any) -> None:
        self._trt = trt
        self.name = op
        self.type = getattr(trt.LayerType, LAYER_TYPES.get(op, "ELEMENTWISE"))
        self.num_outputs = 1
        self._out = out_dtype

    def get_output_type(self, index: int) -> Any:
        return self._out


class FakeNetwork(_Mirror):
    _REAL = "INetworkDefinition"

    def __init__(self, trt: ModuleType, flags: int) -> None:
        self._trt = trt
        self._flags = flags
        self._inputs: list[FakeTensor] = []
        self._outputs: list[FakeTensor] = []
        self._layers: list[FakeLayer] = []
        self._onnx: bytes = b""
        self._plugins: set[str] = set()  # TensorRT plugins the network holds (from the plugin registry)
        self._data_dependent: dict[str, list[int]] = {}  # output name -> axes known only after execution

    @property
    def _strongly_typed(self) -> bool:
        st = getattr(self._trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return st is not None and bool(self._flags & (1 << int(st)))

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_input(self, i: int) -> FakeTensor:
        return self._inputs[i]

    def get_output(self, i: int) -> FakeTensor:
        return self._outputs[i]

    def get_layer(self, i: int) -> FakeLayer:
        return self._layers[i]


class FakeParserError(_Mirror):
    _REAL = "ParserError"

    def __init__(self, trt: ModuleType, code: Any, node: int, name: str, op: str, desc: str) -> None:
        self._trt = trt
        self._v = (code, node, name, op, desc)

    def code(self) -> Any:
        return self._v[0]

    def node(self) -> int:
        return self._v[1]

    def node_name(self) -> str:
        return self._v[2]

    def node_operator(self) -> str:
        return self._v[3]

    def desc(self) -> str:
        return self._v[4]


def _value_info_dims(vi: Any) -> tuple[int, ...]:
    return tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in vi.type.tensor_type.shape.dim
    )


def _data_dependent_axes(proto: Any) -> dict[str, list[int]]:
    """Outputs downstream of a DATA_DEPENDENT_OPS node: their symbolic axes (not an input's named axis)."""
    tainted: set[str] = set()
    for node in proto.graph.node:  # ONNX nodes are topologically sorted
        if node.op_type in DATA_DEPENDENT_OPS or any(i in tainted for i in node.input):
            tainted.update(node.output)
    input_params = {d.dim_param for vi in proto.graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param}
    out: dict[str, list[int]] = {}
    for vi in proto.graph.output:
        if vi.name in tainted:
            dims = vi.type.tensor_type.shape.dim
            axes = [a for a, d in enumerate(dims) if not d.dim_value > 0 and d.dim_param not in input_params]
            if axes:
                out[vi.name] = axes
    return out


class FakeOnnxParser(_Mirror):
    _REAL = "OnnxParser"

    def __init__(self, network: FakeNetwork, logger: Any) -> None:
        self._trt = network._trt
        self._network, self._logger = network, logger
        self._errors: list[FakeParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, i: int) -> FakeParserError | None:
        return self._errors[i] if 0 <= i < len(self._errors) else None

    def clear_errors(self) -> None:
        self._errors.clear()

    def _fail(self, node: int, name: str, op: str, desc: str, code: str) -> bool:
        codes = self._trt.ErrorCode
        self._errors.append(FakeParserError(self._trt, getattr(codes, code), node, name, op, desc))
        self._error(f"While parsing node number {node} [{op}]: {desc}" if node >= 0 else desc)
        return False

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx
        import onnx.defs

        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception:
            desc = "Assertion failed: Failed to parse the ONNX model."
            return self._fail(-1, "", "", desc, "MODEL_DESERIALIZE_FAILED")
        for i, node in enumerate(proto.graph.node):
            if not onnx.defs.has(node.op_type, node.domain or "") and not self._plugin(node):
                desc = "Assertion failed: creator && Plugin not found, are the plugin name, version, and namespace "
                desc += "correct?"
                return self._fail(i, node.name, node.op_type, desc, "UNSUPPORTED_NODE")
        trt = self._trt
        inits = {t.name for t in proto.graph.initializer}
        for vi in proto.graph.input:
            if vi.name not in inits:
                dt = getattr(trt.DataType, ONNX_TO_TRT.get(vi.type.tensor_type.elem_type, "FLOAT"))
                self._network._inputs.append(FakeTensor(trt, vi.name, _value_info_dims(vi), dt))
        for vi in proto.graph.output:
            dt = getattr(trt.DataType, ONNX_TO_TRT.get(vi.type.tensor_type.elem_type, "FLOAT"))
            self._network._outputs.append(FakeTensor(trt, vi.name, _value_info_dims(vi), dt))
        half = any(
            n.op_type == "Cast" and any(a.name == "to" and a.i == 10 for a in n.attribute) for n in proto.graph.node
        )
        for node in proto.graph.node:
            low = half and node.op_type != "Cast" and self._network._strongly_typed
            dt = trt.DataType.HALF if low else trt.DataType.FLOAT
            self._network._layers.append(FakeLayer(trt, node.op_type, dt))
        self._network._onnx = bytes(model)
        self._network._data_dependent = _data_dependent_axes(proto)
        return True

    def _plugin(self, node: Any) -> bool:
        """The parser's fallback for a node without an importer: a creator from the plugin registry."""
        sev = self._trt.ILogger.Severity
        self._logger.log(sev.INFO, f"No importer registered for op: {node.op_type}. Attempting to import as plugin.")
        namespace = next((a.s.decode() for a in node.attribute if a.name == "plugin_namespace"), "")
        if node.op_type in TRT_PLUGINS and namespace in _current_state.plugin_namespaces:
            self._network._plugins.add(node.op_type)
            return True
        self._error(f"getPluginCreator could not find plugin: {node.op_type} version: 1")
        return False

    def parse_from_file(self, path: str) -> bool:
        """Like TensorRT's parser: the .onnx and the external-data files it references (beside it)."""
        import onnx

        try:
            Path(path).read_bytes()
        except OSError as exc:
            return self._fail(-1, "", "", f"cannot read {path}: {exc}", "FILE_NOT_FOUND")
        try:
            model = onnx.load(path, load_external_data=True)
        except OSError as exc:
            return self._fail(-1, "", "", f"Failed to open external data for {path}: {exc}", "FILE_NOT_FOUND")
        except Exception:
            return self.parse(Path(path).read_bytes(), path)  # not an ONNX: parse() reports it
        return self.parse(model.SerializeToString(), path)


class FakeProfile(_Mirror):
    _REAL = "IOptimizationProfile"

    def __init__(self, trt: ModuleType) -> None:
        self._trt = trt
        self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:
        self._shapes[name] = (_dims(min), _dims(opt), _dims(max))

    def get_shape(self, name: str) -> list[tuple[int, ...]]:
        return list(self._shapes.get(name, ()))


class FakeTimingCache(_Mirror):
    _REAL = "ITimingCache"

    def __init__(self, trt: ModuleType, entries: dict[str, int]) -> None:
        self._trt = trt
        self._entries = entries

    def serialize(self) -> bytes:
        return TIMING_MAGIC + json.dumps(self._entries, sort_keys=True).encode()


class FakeBuilderConfig(_Mirror):
    _REAL = "IBuilderConfig"
    builder_optimization_level: int
    profiling_verbosity: Any
    progress_monitor: Any

    def __init__(self, trt: ModuleType, logger: Any) -> None:
        self._trt, self._logger = trt, logger
        self._flags: set[str] = {"TF32"} if hasattr(trt.BuilderFlag, "TF32") else set()
        self._profiles: list[FakeProfile] = []
        self._pools: dict[str, int] = {}
        self._timing: FakeTimingCache | None = None
        self._ccs: list[Any] = []
        self.builder_optimization_level = 3
        self.profiling_verbosity = None
        self.progress_monitor = None

    def set_flag(self, flag: Any) -> None:
        self._flags.add(flag.name)

    def clear_flag(self, flag: Any) -> None:
        self._flags.discard(flag.name)

    def get_flag(self, flag: Any) -> bool:
        return flag.name in self._flags

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self._pools[pool.name] = int(size)

    def get_memory_pool_limit(self, pool: Any) -> int:
        return self._pools.get(pool.name, 1 << 40)

    def create_timing_cache(self, serialized_timing_cache: bytes) -> FakeTimingCache | None:
        blob = bytes(serialized_timing_cache)
        if not blob:
            return FakeTimingCache(self._trt, {})
        if not blob.startswith(TIMING_MAGIC):
            # TensorRT logs the rejection and hands back an empty cache, not nullptr
            self._error("ITimingCache: the serialized timing cache is invalid; creating an empty cache")
            return FakeTimingCache(self._trt, {})
        return FakeTimingCache(self._trt, json.loads(blob[len(TIMING_MAGIC) :]))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        """Refuses a cache made on another device (``__device__`` entry) unless ``ignore_mismatch``."""
        device = cache._entries.get("__device__", FAKE_DEVICE)
        if device != FAKE_DEVICE and not ignore_mismatch:
            self._error(f"setTimingCache: the timing cache was created on {device}, not on {FAKE_DEVICE}")
            return False
        self._timing = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache | None:
        return self._timing

    @property
    def num_compute_capabilities(self) -> int:
        return len(self._ccs)

    @num_compute_capabilities.setter
    def num_compute_capabilities(self, n: int) -> None:
        self._ccs = [None] * int(n)

    def set_compute_capability(self, compute_capability: Any, index: int) -> bool:
        if not 0 <= index < len(self._ccs):
            return False
        self._ccs[index] = compute_capability
        return True


class FakeBuilder(_Mirror):
    _REAL = "Builder"
    builds = 0  # class-level counter: tests assert that a cache hit builds nothing
    cancelled = 0  # builds stopped because the progress monitor's step_complete returned False
    on_step: Callable[[int], None] | None = None  # a test's hook, called as each build step runs (e.g. a Ctrl-C)

    def __init__(self, logger: Any) -> None:
        self._trt, self._logger = _current_module, logger

    def create_network(self, flags: int = 0) -> FakeNetwork:
        return FakeNetwork(self._trt, int(flags))

    def create_builder_config(self) -> FakeBuilderConfig:
        return FakeBuilderConfig(self._trt, self._logger)

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile(self._trt)

    def build_serialized_network(self, network: FakeNetwork, config: FakeBuilderConfig) -> bytes | None:
        type(self).builds += 1
        trt = self._trt
        weak = sorted(f for f in config._flags if f in WEAK_FLAGS)
        if network._strongly_typed and weak:
            self._error(f"BuilderFlag::k{weak[0]} cannot be used with a strongly typed network")
            return None
        profile = config._profiles[0]._shapes if config._profiles else {}
        io: list[dict[str, Any]] = []
        for t in network._inputs:
            shape = t.shape
            if any(d < 0 for d in shape):
                if t.name not in profile:
                    self._error(f"Network has dynamic or shape inputs, but no optimization profile covers {t.name}")
                    return None
            p = profile.get(t.name, (shape, shape, shape))
            for dims in p:
                if len(dims) != len(shape) or any(s >= 0 and d != s for d, s in zip(dims, shape, strict=True)):
                    self._error(f"optimization profile {list(dims)} does not match input {t.name} {list(shape)}")
                    return None
            io.append(
                {
                    "name": t.name,
                    "input": True,
                    "dtype": t.dtype.name,
                    "shape": list(shape),
                    "profile": [list(x) for x in p],
                }
            )
        for t in network._outputs:
            out = {"name": t.name, "input": False, "dtype": t.dtype.name, "shape": list(t.shape)}
            io.append({**out, "data_dependent": network._data_dependent.get(t.name, [])})
        monitor = config.progress_monitor if config._real_has("progress_monitor") else None
        if monitor is not None:
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                if FakeBuilder.on_step is not None:
                    FakeBuilder.on_step(step)
                if not monitor.step_complete("Building engine", step):
                    FakeBuilder.cancelled += 1
                    monitor.phase_finish("Building engine")
                    self._error("build cancelled by the progress monitor")
                    return None
            monitor.phase_finish("Building engine")
        if config._timing is not None:
            key = f"layers:{network.num_layers}"
            config._timing._entries[key] = config._timing._entries.get(key, 0) + 1
        header = {
            "trt_module": _library(trt),
            "trt_version": trt.__version__,
            "strongly_typed": network._strongly_typed,
            "flags": sorted(config._flags),
            "io": io,
            "opt_level": config.builder_optimization_level,
            "profiling_verbosity": getattr(config.profiling_verbosity, "name", None),
            "plugins": sorted(network._plugins),
            "compute_capability": _current_state.compute_capability,  # the device that built it
            "compute_capabilities": [getattr(c, "name", str(c)) for c in config._ccs if c is not None],
        }
        return ENGINE_MAGIC + json.dumps(header).encode() + b"\n" + network._onnx


# ----------------------------------------------------------------------------- run side


class FakeRuntimeCache(_Mirror):
    _REAL = "IRuntimeCache"

    def __init__(self, trt: ModuleType) -> None:
        self._trt = trt
        self._blob = b"FAKERTC\x01"
        self._compiled: set[int] = set()  # engines whose kernels this cache holds

    def deserialize(self, blob: bytes) -> bool:
        if not bytes(blob).startswith(b"FAKERTC\x01"):
            return False
        self._blob = bytes(blob)
        return True

    def serialize(self) -> bytes:
        return self._blob


class FakeRuntimeConfig(_Mirror):
    _REAL = "IRuntimeConfig"

    def __init__(self, trt: ModuleType) -> None:
        self._trt = trt
        self._cache: FakeRuntimeCache | None = None
        strategies = getattr(trt, "CudaGraphStrategy", None)
        self._graph_strategy = strategies.DISABLED if strategies is not None else None

    @property
    def cuda_graph_strategy(self) -> Any:
        return self._graph_strategy

    @cuda_graph_strategy.setter
    def cuda_graph_strategy(self, value: Any) -> None:
        if not isinstance(value, self._trt.CudaGraphStrategy):
            raise TypeError(f"cuda_graph_strategy: incompatible type {type(value).__name__}")
        self._graph_strategy = value

    def create_runtime_cache(self) -> FakeRuntimeCache:
        return FakeRuntimeCache(self._trt)

    def set_runtime_cache(self, cache: FakeRuntimeCache) -> bool:
        self._cache = cache
        return True

    def get_runtime_cache(self) -> FakeRuntimeCache | None:
        return self._cache


class FakeEngine(_Mirror):
    _REAL = "ICudaEngine"
    name: str

    def __init__(self, trt: ModuleType, logger: Any, header: dict[str, Any], onnx_bytes: bytes, state: DoubleState):
        self._trt, self._logger, self._state = trt, logger, state
        self._header, self._onnx = header, onnx_bytes
        self._io = {t["name"]: t for t in header["io"]}
        self._order = [t["name"] for t in header["io"]]
        self._session: Any = None
        self.name = "fake-engine"

    def _ort(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            # Default session options, like common.ort.session.OrtBackend and the tests' references: ORT's
            # float results depend on the thread count, and "same numbers" means same settings.
            self._session = ort.InferenceSession(self._onnx, providers=["CPUExecutionProvider"])
        return self._session

    @property
    def num_io_tensors(self) -> int:
        return len(self._order)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    @property
    def num_layers(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return self._order[index]

    def get_tensor_mode(self, name: str) -> Any:
        t = self._io.get(name)
        if t is None:
            return self._trt.TensorIOMode.NONE
        return self._trt.TensorIOMode.INPUT if t["input"] else self._trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(self._trt.DataType, self._io[name]["dtype"])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._io[name]["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        t = self._io[name]
        if not t["input"] or profile_index != 0:
            self._error(f"get_tensor_profile_shape: {name} is not an input of profile {profile_index}")
            return []
        return [tuple(p) for p in t["profile"]]

    def get_tensor_format(self, name: str, profile_index: int | None = None) -> Any:
        return getattr(self._trt.TensorFormat, self._io[name].get("format", "LINEAR"))

    def create_runtime_config(self) -> FakeRuntimeConfig:
        return FakeRuntimeConfig(self._trt)

    def create_execution_context(self, runtime_config: Any = None) -> FakeContext:
        self._state.contexts += 1
        if runtime_config is not None:  # TensorRT-RTX JIT-compiles here, unless the runtime cache has the kernels
            cache = runtime_config.get_runtime_cache()
            if cache is None or id(self) not in cache._compiled:
                self._state.jit_compiles += 1
            if cache is not None:
                cache._compiled.add(id(self))
        return FakeContext(self, runtime_config)

    def serialize(self) -> bytes:
        return ENGINE_MAGIC + json.dumps(self._header).encode() + b"\n" + self._onnx


class FakeContext(_Mirror):
    _REAL = "IExecutionContext"
    engine: Any

    def __init__(self, engine: FakeEngine, runtime_config: Any = None) -> None:
        self._trt, self._logger, self._engine, self._state = engine._trt, engine._logger, engine, engine._state
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._addr: dict[str, int] = {}
        # the context uses its runtime config (not owned): it must outlive the context
        self._config = weakref.ref(runtime_config) if runtime_config is not None else None
        self._native_keys: set[tuple[Any, ...]] = set()
        self._flushed = False  # a plain enqueue ran since creation and since the last set_input_shape
        self._shape_changes = 0  # input shape changes so far (a captured enqueue holds the count it ran at)
        self._executed = False  # an execution ran with the current input shapes (data-dependent shapes known)
        self.engine = engine

    @property
    def _user_capture_ok(self) -> bool:
        """TensorRT-RTX: stream capture needs an engine built with BuilderFlag.REQUIRE_USER_ALLOCATION."""
        if not self._trt.__name__.startswith("tensorrt_rtx"):
            return True
        return "REQUIRE_USER_ALLOCATION" in self._engine._header.get("flags", [])

    def _native_graph(self) -> bool:
        config = self._config() if self._config is not None else None
        strategies = getattr(self._trt, "CudaGraphStrategy", None)
        return (
            config is not None and strategies is not None and (config._graph_strategy == strategies.WHOLE_GRAPH_CAPTURE)
        )

    def set_input_shape(self, name: str, shape: Any) -> bool:
        t = self._engine._io.get(name)
        shape = _dims(shape)
        if t is None or not t["input"]:
            self._error(f"setInputShape: {name} is not an input tensor")
            return False
        lo, _, hi = t["profile"]
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
            self._error(f"setInputShape: {name} shape {list(shape)} is outside the profile [{lo}, {hi}]")
            return False
        if self._shapes.get(name) != shape:
            self._out_shapes.clear()
            self._executed = False
            self._shape_changes += 1  # the context's state moved on: graphs captured before no longer hold
        self._shapes[name] = shape
        self._flushed = False  # deferred until the next enqueue, which then cannot be captured
        return True

    def _inputs(self) -> list[dict[str, Any]]:
        return [t for t in self._engine._io.values() if t["input"]]

    def infer_shapes(self) -> list[str]:
        missing = [
            t["name"] for t in self._inputs() if t["name"] not in self._shapes and any(d < 0 for d in t["shape"])
        ]
        if missing:
            return missing
        feeds = {t["name"]: np.zeros(self._shape_of(t), TRT_TO_NP[t["dtype"]]) for t in self._inputs()}
        outs = self._engine._ort().run(None, feeds)
        names = [o.name for o in self._engine._ort().get_outputs()]
        self._out_shapes = {n: tuple(a.shape) for n, a in zip(names, outs, strict=True)}
        return []

    def _shape_of(self, t: dict[str, Any]) -> tuple[int, ...]:
        return self._shapes.get(t["name"], tuple(t["shape"]))

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        t = self._engine._io[name]
        if t["input"]:
            return self._shape_of(t)
        shape = self._out_shapes.get(name, tuple(t["shape"]))
        if self._executed:
            return shape
        dd = t.get("data_dependent", [])
        return tuple(-1 if axis in dd else d for axis, d in enumerate(shape))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self._engine._io:
            self._error(f"setTensorAddress: no tensor {name}")
            return False
        if int(memory) % TENSOR_ALIGNMENT:
            self._error(
                f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (address {int(memory):#x} of "
                f"tensor {name} is not aligned to {TENSOR_ALIGNMENT} bytes)"
            )
            return False
        self._addr[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addr.get(name, 0)

    def _exec_shape(self, name: str) -> tuple[int, ...]:
        t = self._engine._io[name]
        return self._shape_of(t) if t["input"] else self._out_shapes.get(name, tuple(t["shape"]))

    def is_stream_capturable(self, stream: int) -> bool:
        return self._user_capture_ok

    def execute_async_v3(self, stream_handle: int) -> bool:
        io = self._engine._io
        if self._config is not None and self._config() is None:
            self._error("IExecutionContext::enqueueV3: the IRuntimeConfig this context was created with was destroyed")
            return False
        capturing = self._state.mem is not None and self._state.mem.capturing(stream_handle)
        if capturing and self._state.capture_fails:
            self._error("enqueue is not allowed during stream capture (simulated)")
            return False
        if capturing and not self._user_capture_ok:
            self._error(
                "IExecutionContext::enqueueV3: stream capture requires an engine built with "
                "BuilderFlag::kREQUIRE_USER_ALLOCATION"
            )
            return False
        if capturing and not self._flushed:
            self._state.capture_refusals += 1
            self._error(
                "IExecutionContext::enqueueV3: the first enqueue after a new context or setInputShape allocates "
                "resources, which fails during stream capture: call enqueueV3() once before capturing"
            )
            return False
        if self._native_graph():
            key = tuple(sorted((n, self._shapes.get(n), self._addr.get(n)) for n in io))
            if key in self._native_keys:
                self._state.native_graph_replays += 1
            else:
                self._native_keys.add(key)
                self._state.native_graph_captures += 1
        missing = [n for n in io if n not in self._addr]
        if missing:
            self._error(f"executeAsyncV3: tensor {missing[0]} has no address")
            return False
        if self.infer_shapes() if not self._out_shapes else []:
            self._error("executeAsyncV3: input shapes are not all specified")
            return False
        plan = {n: (self._addr[n], self._exec_shape(n), np.dtype(TRT_TO_NP[t["dtype"]])) for n, t in io.items()}
        if not capturing:
            self._flushed = True
        self._executed = True
        state = self._shape_changes  # the context's state this enqueue runs in (a capture: replays need it)

        def work() -> None:
            if capturing and self._shape_changes != state:
                raise RuntimeError(
                    "double: a CUDA graph of an enqueue replayed after its execution context's input shapes "
                    "changed (TensorRT: running a graph after modifying its context is undefined)"
                )
            feeds = {n: _read(a, s, d).copy() for n, (a, s, d) in plan.items() if io[n]["input"]}
            session = self._engine._ort()
            names = [o.name for o in session.get_outputs()]
            for name, arr in zip(names, session.run(None, feeds), strict=True):
                addr, shape, dtype = plan[name]
                if tuple(arr.shape) != tuple(shape) or arr.dtype != dtype:
                    raise AssertionError(f"double: output {name} {arr.shape}/{arr.dtype} vs bound {shape}/{dtype}")
                _read(addr, shape, dtype)[...] = arr
            self._state.executions += 1

        if self._state.mem is not None:
            self._state.mem.enqueue(stream_handle, work)
            return True
        if not self._state.device_io:
            work()
            return True
        # Real CUDA memory (GPU machines): the ONNX still runs on the host, so wait for the stream's
        # earlier work (the H2D copies), copy inputs down, run, copy outputs up. Such work cannot be
        # captured into a CUDA graph: refuse during capture as TensorRT does for uncapturable enqueues.
        if _device_capturing(stream_handle):
            self._error("enqueue during stream capture is not supported by this double in device mode")
            return False
        _device_sync(stream_handle)
        feeds = {n: _device_read(a, s, d) for n, (a, s, d) in plan.items() if io[n]["input"]}
        session = self._engine._ort()
        for name, arr in zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True):
            addr, shape, dtype = plan[name]
            assert tuple(arr.shape) == tuple(shape) and arr.dtype == dtype, (name, arr.shape, shape)
            _device_write(addr, np.ascontiguousarray(arr))
        self._state.executions += 1
        return True


def _cuda() -> Any:
    from cuda.bindings import runtime

    return runtime


def _device_capturing(stream: int) -> bool:
    rt = _cuda()
    err, status = rt.cudaStreamIsCapturing(stream)
    assert int(err) == 0, err
    return status != rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone


def _device_sync(stream: int) -> None:
    err = _cuda().cudaStreamSynchronize(stream)[0]
    assert int(err) == 0, err


def _device_read(addr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    rt = _cuda()
    out = np.empty(shape, dtype)
    if out.nbytes:
        err = rt.cudaMemcpy(out.ctypes.data, addr, out.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)[0]
        assert int(err) == 0, err
    return out


def _device_write(addr: int, arr: np.ndarray) -> None:
    rt = _cuda()
    if arr.nbytes:
        err = rt.cudaMemcpy(addr, arr.ctypes.data, arr.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice)[0]
        assert int(err) == 0, err


def _read(addr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    n = math.prod(shape) * dtype.itemsize
    if n == 0:
        return np.empty(shape, dtype)
    return np.frombuffer((ctypes.c_uint8 * n).from_address(addr), dtype=dtype).reshape(shape)


class FakeRuntime(_Mirror):
    _REAL = "Runtime"

    def __init__(self, logger: Any) -> None:
        self._trt, self._logger = _current_module, logger
        self._state = _current_state

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> FakeEngine | None:
        blob = bytes(serialized_engine)
        if not blob.startswith(ENGINE_MAGIC):
            self._error("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag does not match)")
            return None
        header_raw, _, onnx_bytes = blob[len(ENGINE_MAGIC) :].partition(b"\n")
        header = json.loads(header_raw)
        if (header["trt_module"], header["trt_version"]) != (_library(self._trt), self._trt.__version__):
            self._error(
                "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan file is not "
                f"compatible with this version of TensorRT, expecting library version {self._trt.__version__} got "
                f"{header['trt_version']}, please rebuild.)"
            )
            return None
        if not self._device_can_run(header) or not self._plugins_registered(header):
            return None
        return FakeEngine(self._trt, self._logger, header, onnx_bytes, self._state)

    def _device_can_run(self, header: dict[str, Any]) -> bool:
        """TensorRT checks the compute capability the plan was built for against the device's (RTX: its targets)."""
        here, built = self._state.compute_capability, header.get("compute_capability")
        targets = [t for t in header.get("compute_capabilities", []) if t not in ("NONE", "CURRENT")]
        sm = "SM" + here.replace(".", "")
        if (targets and sm in targets) or (not targets and (built is None or built == here)):
            return True
        got = ", ".join(targets) if targets else built
        self._error(
            "IRuntime::deserializeCudaEngine: Error Code 6: The engine plan file is generated on an incompatible "
            f"device, expecting compute {here} got compute {got}, please rebuild."
        )
        return False

    def _plugins_registered(self, header: dict[str, Any]) -> bool:
        for name in header.get("plugins", []):
            if "" not in self._state.plugin_namespaces:
                self._error(f"getPluginCreator could not find plugin: {name} version: 1")
                self._error(
                    "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion creator "
                    "failed.Cannot deserialize plugin since corresponding IPluginCreator not found in Plugin Registry)"
                )
                return False
        return True


# ----------------------------------------------------------------------------- fake CUDA


class _HostBlock:
    def __init__(self, mem: FakeCudaMemory, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self._buf = (ctypes.c_uint8 * (max(self.nbytes, 1) + TENSOR_ALIGNMENT))()
        base = ctypes.addressof(self._buf)
        self.ptr = (base + TENSOR_ALIGNMENT - 1) // TENSOR_ALIGNMENT * TENSOR_ALIGNMENT  # like cudaMalloc
        self._mem = mem
        mem.live += 1

    def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        dtype = np.dtype(dtype)
        if math.prod(shape) * dtype.itemsize > self.nbytes:
            raise ValueError("view larger than buffer")
        return _read(self.ptr, tuple(shape), dtype)

    def free(self) -> None:
        if self.ptr:
            ctypes.memset(self.ptr, 0xDD, max(self.nbytes, 1))  # poison: views that outlive it read garbage
            self.ptr = 0
            self._mem.live -= 1


class _FakeStream:
    _ids = itertools.count(0x1000)

    def __init__(self, mem: FakeCudaMemory) -> None:
        self.handle = next(self._ids)
        self._mem = mem
        self.captured: list[Callable[[], None]] | None = None
        mem.streams[self.handle] = self

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        self._mem.streams.pop(self.handle, None)
        self.handle = 0


class _FakeEvent:
    def __init__(self, mem: FakeCudaMemory, blocking: bool = False) -> None:
        self._mem, self.blocking = mem, blocking
        self.t: float | None = None
        self.handle = id(self)  # as common.gpu.cuda_mem.Event's (its cudaEvent_t)

    def record(self, stream: _FakeStream) -> None:
        def stamp() -> None:
            self.t = time.perf_counter()

        self._mem.enqueue(stream.handle, stamp)

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass


class _FakeGraph:
    def __init__(self, mem: FakeCudaMemory, ops: list[Callable[[], None]]) -> None:
        self._mem, self._ops = mem, ops

    def launch(self, stream: _FakeStream) -> None:
        self._mem.graph_launches += 1
        for op in self._ops:
            self._mem.enqueue(stream.handle, op)

    def close(self) -> None:
        self._ops = []


class FakeCudaMemory:
    """MemoryLayer with host memory; work runs in stream order at enqueue time (or is captured)."""

    name = "fake-host-memory (tests)"

    def __init__(self) -> None:
        self.streams: dict[int, _FakeStream] = {}
        self.live = 0
        self.graph_launches = 0
        self.captures = 0
        self.begin_capture_error: Exception | None = None
        self.waits: list[tuple[int, Any]] = []  # (stream handle, event) of each stream_wait_event

    def enqueue(self, handle: int, fn: Callable[[], None]) -> None:
        stream = self.streams.get(handle)
        if stream is None:
            raise AssertionError(f"double: work enqueued on unknown stream {handle:#x} (default stream?)")
        if stream.captured is not None:
            stream.captured.append(fn)
        else:
            self._submit(stream, fn)

    def _submit(self, stream: _FakeStream, fn: Callable[[], None]) -> None:
        """The "GPU" takes ``fn`` on ``stream``: here it runs it at once."""
        fn()

    def capturing(self, handle: int) -> bool:
        stream = self.streams.get(handle)
        return stream is not None and stream.captured is not None

    def device_buffer(self, nbytes: int) -> _HostBlock:
        return _HostBlock(self, nbytes)

    def pinned_buffer(self, nbytes: int) -> _HostBlock:
        return _HostBlock(self, nbytes)

    def stream(self) -> _FakeStream:
        return _FakeStream(self)

    def event(self, blocking: bool = False) -> _FakeEvent:
        return _FakeEvent(self, blocking)

    def elapsed_ms(self, start: _FakeEvent, end: _FakeEvent) -> float:
        assert start.t is not None and end.t is not None, "double: event not recorded"
        return (end.t - start.t) * 1000.0

    def stream_wait_event(self, stream: _FakeStream, event: Any) -> None:
        """Work runs at enqueue, so the event has happened; the wait is logged in stream order."""
        self.enqueue(stream.handle, lambda: None)
        self.waits.append((stream.handle, event))

    def _copy(self, dst: int, src: int, nbytes: int, stream: _FakeStream) -> None:
        self.enqueue(stream.handle, lambda: ctypes.memmove(dst, src, nbytes))

    copy_htod_async = copy_dtoh_async = copy_dtod_async = _copy

    def begin_capture(self, stream: _FakeStream) -> None:
        if self.begin_capture_error is not None:
            raise self.begin_capture_error
        stream.captured = []

    def end_capture(self, stream: _FakeStream) -> _FakeGraph:
        ops, stream.captured = stream.captured or [], None
        self.captures += 1
        return _FakeGraph(self, ops)

    def device_info(self) -> dict[str, Any] | None:
        return None


class _DeferredStream(_FakeStream):
    def __init__(self, mem: DeferredCudaMemory) -> None:
        super().__init__(mem)
        self.pending: collections.deque[Callable[[], None]] = collections.deque()
        self.done = 0  # ops of this stream run so far
        self.queued = 0  # ops of this stream enqueued so far

    def synchronize(self) -> None:
        self._mem.run_until(self, self.queued)  # type: ignore[attr-defined]


class _DeferredEvent(_FakeEvent):
    """An event of ``DeferredCudaMemory``: ``synchronize`` runs its stream's work up to its last record."""

    def __init__(self, mem: DeferredCudaMemory, blocking: bool = False) -> None:
        super().__init__(mem, blocking)
        self.at: tuple[_DeferredStream, int] | None = None  # (stream, ops up to and with the last record)

    def record(self, stream: _FakeStream) -> None:
        super().record(stream)
        if not self._mem.capturing(stream.handle):
            self.at = (stream, stream.queued)  # type: ignore[attr-defined]

    def synchronize(self) -> None:
        if self.at is not None:
            self._mem.run_until(*self.at)  # type: ignore[attr-defined]


class DeferredCudaMemory(FakeCudaMemory):
    """``FakeCudaMemory`` whose "GPU" runs a stream's work as late as CUDA allows: only when the host waits for
    it (a stream or event synchronize) or another stream's work waits on one of its events. ``FakeCudaMemory``
    runs work at enqueue, as early as possible; between the two, host code that writes memory a queued copy or
    kernel has yet to read, or reads results before waiting for them, gets wrong data with one of them."""

    name = "fake-host-memory, deferred (tests)"

    def __init__(self) -> None:
        super().__init__()
        self._gpu = threading.RLock()  # one "GPU": streams run one op at a time, whoever triggers them

    def stream(self) -> _DeferredStream:
        return _DeferredStream(self)

    def event(self, blocking: bool = False) -> _DeferredEvent:
        return _DeferredEvent(self, blocking)

    def _submit(self, stream: _FakeStream, fn: Callable[[], None]) -> None:
        """Queued: it runs when the host or another stream waits for it (``run_until``)."""
        with self._gpu:
            stream.pending.append(fn)  # type: ignore[attr-defined]
            stream.queued += 1  # type: ignore[attr-defined]

    def run_until(self, stream: _DeferredStream, count: int) -> None:
        """Run ``stream``'s queued work until ``count`` of its ops have run."""
        with self._gpu:
            while stream.done < count and stream.pending:
                stream.pending.popleft()()
                stream.done += 1

    def stream_wait_event(self, stream: _FakeStream, event: Any) -> None:
        """``stream``'s later work runs after ``event``'s stream has run up to the event's last record."""
        at = getattr(event, "at", None)
        self.enqueue(stream.handle, (lambda: self.run_until(*at)) if at is not None else (lambda: None))
        self.waits.append((stream.handle, event))

    def elapsed_ms(self, start: _FakeEvent, end: _FakeEvent) -> float:
        assert start.t is not None and end.t is not None, "double: elapsed time of an event not yet reached"
        return (end.t - start.t) * 1000.0


def _host_array(ptr: int, ctype: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.ctypeslib.as_array((ctype * math.prod(shape)).from_address(ptr)).reshape(shape)


class FakeGpuPreprocessor:
    """``common.throughput.gpu_preprocess.GpuPreprocessor`` on FakeCudaMemory: each launch runs the NumPy
    reference of its kernel on the host addresses, in stream order."""

    def __init__(self, mem: FakeCudaMemory) -> None:
        self.mem, self.launches = mem, 0

    def normalize(self, src: int, dst: int, batch: int, size: int, stream: int) -> None:
        from common.throughput.gpu_preprocess import normalize_reference

        def run() -> None:
            canvases = _host_array(src, ctypes.c_uint8, (batch, size, size, 3))
            out = _host_array(dst, ctypes.c_float, (batch, 3, size, size))
            for j in range(batch):
                out[j] = normalize_reference(canvases[j])

        self.launches += 1
        self.mem.enqueue(stream, run)

    def letterbox_batch(self, base: int, params: int, dst: int, batch: int, size: int, stream: int) -> None:
        """Reads the params table from (fake) device memory at ``params`` when the launch runs, as the
        kernel does: an unuploaded table, a wrong layout or a wrong offset gives wrong pixels or fails."""
        from common.data.images import LetterboxMeta
        from common.throughput.gpu_preprocess import PARAM_WORDS, letterbox_reference

        def run() -> None:
            table = _host_array(params, ctypes.c_int64, (batch, PARAM_WORDS)).copy()
            out = _host_array(dst, ctypes.c_float, (batch, 3, size, size))
            for j, (offset, w, h, new_w, new_h, left, top, row_bytes) in enumerate(table.tolist()):
                assert w > 0 and h > 0 and 0 < new_w <= size and 0 < new_h <= size, f"double: bad record {j}"
                assert 0 <= left <= size - new_w and 0 <= top <= size - new_h, f"double: bad record {j}"
                pitch = row_bytes or w * 3
                assert pitch >= w * 3, f"double: record {j} has rows of {pitch} bytes for width {w}"
                raw = _host_array(base + offset, ctypes.c_uint8, ((h - 1) * pitch + w * 3,))
                img = np.lib.stride_tricks.as_strided(raw, (h, w, 3), (pitch, 3, 1))
                meta = LetterboxMeta(w, h, 0.0, left, top, new_w, new_h)  # the kernel reads no scale
                out[j] = letterbox_reference(img, meta, size)

        self.launches += 1
        self.mem.enqueue(stream, run)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- install


class DoubleState:
    def __init__(self) -> None:
        self.mem: FakeCudaMemory | None = None
        self.contexts = 0
        self.executions = 0
        self.capture_fails = False
        self.device_io = False  # True: tensor addresses are real CUDA device pointers
        self.native_graph_captures = 0  # TensorRT-RTX cuda_graph_strategy=WHOLE_GRAPH_CAPTURE
        self.native_graph_replays = 0
        self.jit_compiles = 0  # TensorRT-RTX: contexts that compiled their kernels (no runtime cache had them)
        self.plugin_namespaces: set[str] = set()  # init_libnvinfer_plugins ran with these namespaces (this process)
        self.compute_capability = FAKE_CC  # the device's; engines record the one they were built on
        self.capture_refusals = 0  # enqueues refused in capture because no plain enqueue flushed a shape change


_current_module: Any = None
_current_state: DoubleState = DoubleState()

DOUBLE_CLASSES = (
    FakeBuilder,
    FakeBuilderConfig,
    FakeNetwork,
    FakeTensor,
    FakeLayer,
    FakeOnnxParser,
    FakeParserError,
    FakeProfile,
    FakeTimingCache,
    FakeRuntime,
    FakeEngine,
    FakeContext,
    FakeRuntimeConfig,
    FakeRuntimeCache,
)


def install(monkeypatch: Any, trt: ModuleType, *, memory: FakeCudaMemory | None = None) -> DoubleState:
    """Replace the factories Builder, OnnxParser and Runtime of ``trt`` with the double."""
    global _current_module, _current_state
    _current_module = trt
    _current_state = DoubleState()
    _current_state.mem = memory
    FakeBuilder.builds = 0
    FakeBuilder.cancelled = 0
    FakeBuilder.on_step = None
    monkeypatch.setattr(trt, "Builder", FakeBuilder)
    monkeypatch.setattr(trt, "OnnxParser", FakeOnnxParser)
    monkeypatch.setattr(trt, "Runtime", FakeRuntime)
    if hasattr(trt, "init_libnvinfer_plugins"):
        monkeypatch.setattr(trt, "init_libnvinfer_plugins", _init_libnvinfer_plugins)
    return _current_state


def _init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
    """``tensorrt.init_libnvinfer_plugins``: register TensorRT's plugins (TRT_PLUGINS) under ``namespace``.
    TensorRT-RTX ships no plugin library: the call succeeds and registers none of them."""
    if not _current_module.__name__.startswith("tensorrt_rtx"):
        _current_state.plugin_namespaces.add(str(namespace))
    return True


# ----------------------------------------------------------------------------- tiny models


def fixtures_dir() -> Path:
    """../shared/fixtures beside the repo, or $YOLO_FIXTURES."""
    import os

    env = os.environ.get("YOLO_FIXTURES")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def _save(model: Any, path: Path) -> Path:
    import onnx

    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_model(
    path: Path, *, dynamic: bool = False, precision: str = "fp32", extra_outputs: bool = False, seed: int = 0
) -> Path:
    """Conv(3->4, 3x3) + Relu on [N,3,8,8].

    precision: fp32 | fp16 (Cast to fp16 around an fp16 conv; fp32 I/O, like AutoCast keep_io_types)
               | int8 / fp8 (Q/DQ on the activation and the weights).
    extra_outputs adds outputs of other dtypes: fp16, int64 (ArgMax), int32, bool.
    """
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(4).astype(np.float32) * 0.1
    batch: Any = "N" if dynamic else 1
    x = h.make_tensor_value_info("x", T.FLOAT, [batch, 3, 8, 8])
    outs = [h.make_tensor_value_info("y", T.FLOAT, [batch, 4, 8, 8])]
    nodes: list[Any] = []
    inits: list[Any] = []
    if precision == "fp32":
        inits += [nh.from_array(w, "w"), nh.from_array(b, "b")]
        nodes.append(h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"))
        nodes.append(h.make_node("Relu", ["c"], ["y"], name="relu"))
    elif precision == "fp16":
        inits += [nh.from_array(w.astype(np.float16), "w"), nh.from_array(b.astype(np.float16), "b")]
        nodes.append(h.make_node("Cast", ["x"], ["x16"], to=T.FLOAT16, name="cast_in"))
        nodes.append(h.make_node("Conv", ["x16", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"))
        nodes.append(h.make_node("Relu", ["c"], ["r"], name="relu"))
        nodes.append(h.make_node("Cast", ["r"], ["y"], to=T.FLOAT, name="cast_out"))
    elif precision in ("int8", "fp8"):
        if precision == "int8":
            zp_x = h.make_tensor("zp_x", T.INT8, [], [0])
            zp_w = h.make_tensor("zp_w", T.INT8, [4], [0] * 4)
            w_scale = np.abs(w).reshape(4, -1).max(axis=1) / 127.0
            wq = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
            inits.append(nh.from_array(wq, "wq"))
            q_dtype = T.INT8
        else:
            zp_x = h.make_tensor("zp_x", T.FLOAT8E4M3FN, [], [0.0])
            zp_w = h.make_tensor("zp_w", T.FLOAT8E4M3FN, [4], [0.0] * 4)
            w_scale = np.abs(w).reshape(4, -1).max(axis=1) / 448.0
            wq_t = h.make_tensor(
                "wq", T.FLOAT8E4M3FN, list(w.shape), (w / w_scale[:, None, None, None]).flatten().tolist()
            )
            inits.append(wq_t)
            q_dtype = T.FLOAT8E4M3FN
        del q_dtype
        inits += [
            zp_x,
            zp_w,
            nh.from_array(np.array(1.0 / 64, np.float32), "s_x"),
            nh.from_array(w_scale.astype(np.float32), "s_w"),
            nh.from_array(b, "b"),
        ]
        nodes.append(h.make_node("QuantizeLinear", ["x", "s_x", "zp_x"], ["xq"], name="q_x"))
        nodes.append(h.make_node("DequantizeLinear", ["xq", "s_x", "zp_x"], ["xd"], name="dq_x"))
        nodes.append(h.make_node("DequantizeLinear", ["wq", "s_w", "zp_w"], ["wd"], axis=0, name="dq_w"))
        nodes.append(h.make_node("Conv", ["xd", "wd", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"))
        nodes.append(h.make_node("Relu", ["c"], ["y"], name="relu"))
    else:
        raise ValueError(precision)
    if extra_outputs:
        nodes += [
            h.make_node("Cast", ["y"], ["y_half"], to=T.FLOAT16, name="to_half"),
            h.make_node("ArgMax", ["y"], ["y_argmax"], axis=1, keepdims=0, name="argmax"),
            h.make_node("Cast", ["y_argmax"], ["y_argmax32"], to=T.INT32, name="to_int32"),
            h.make_node("Greater", ["y", "zero"], ["y_pos"], name="greater"),
        ]
        inits.append(nh.from_array(np.array(0.5, np.float32), "zero"))
        outs += [
            h.make_tensor_value_info("y_half", T.FLOAT16, [batch, 4, 8, 8]),
            h.make_tensor_value_info("y_argmax", T.INT64, [batch, 8, 8]),
            h.make_tensor_value_info("y_argmax32", T.INT32, [batch, 8, 8]),
            h.make_tensor_value_info("y_pos", T.BOOL, [batch, 4, 8, 8]),
        ]
    graph = h.make_graph(nodes, "tiny", [x], outs, initializer=inits)
    opset = 19 if precision == "fp8" else 17
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", opset)]), path)


def bad_node_model(path: Path) -> Path:
    """A model whose second node is an operator nobody implements."""
    from onnx import TensorProto as T
    from onnx import helper as h

    x = h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])
    y = h.make_tensor_value_info("y", T.FLOAT, [1, 3, 8, 8])
    graph = h.make_graph(
        [
            h.make_node("Relu", ["x"], ["r"], name="relu"),
            h.make_node("NoSuchOp", ["r"], ["y"], name="mystery", domain="com.example"),
        ],
        "bad",
        [x],
        [y],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.example", 1)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


# ----------------------------------------------------------------------------- which API is under test


def api_under_test() -> Any:
    """The TrtApi the TensorRT-facing tests run against.

    $YOLO_TRT_TEST_BACKEND picks it (tensorrt | tensorrt-rtx; default tensorrt-rtx);
    tests/test_trt_api_versions.py sets it to ``tensorrt`` with the PYTHONPATH of one of
    NVIDIA's real ``tensorrt`` API versions (../shared/trt-stubs). Skips when it cannot import.
    """
    import os

    import pytest

    from common.core.errors import UserError
    from common.trt.api import load_backend

    name = os.environ.get("YOLO_TRT_TEST_BACKEND", "tensorrt-rtx")
    try:
        return load_backend(name)
    except UserError as exc:
        pytest.skip(f"{name} is not importable here: {exc}")


def use_double(monkeypatch: Any, api: Any, memory: FakeCudaMemory | None = None) -> tuple[DoubleState, FakeCudaMemory]:
    """Install the double on ``api.module`` and make sessions use ``memory`` (default: a fresh FakeCudaMemory)."""
    from common.trt import runtime as trt_runtime

    mem = memory if memory is not None else FakeCudaMemory()
    state = install(monkeypatch, api.module, memory=mem)
    monkeypatch.setattr(trt_runtime, "default_memory", lambda: mem)
    return state, mem
