"""Run a serialized TensorRT / TensorRT-RTX engine: ``TrtSession``.

``TrtSession`` deserializes an engine, enumerates its I/O tensors, keeps device and
pinned host buffers sized for the current shapes (grown, never shrunk), and runs
H2D copy -> ``execute_async_v3`` -> D2H copy on its own non-default stream, timed with
CUDA events. With ``cuda_graph=True`` the enqueue of a (shapes, addresses) key is captured into a CUDA
graph on the key's second run and replayed from then on; a capture always follows a plain enqueue of the same
input shapes (TensorRT's first enqueue after ``set_input_shape`` allocates, which cannot be captured). A graph
holds the execution context's state as it was captured (TensorRT's guide: modifying the context makes running
the graph undefined), so a shape change drops the graphs: back at a shape, the key runs plainly twice and is
captured again. A run's one partial batch therefore costs its full batch one capture, not a wrong replay; the
buffers moving drops them too; a failed capture falls back to plain enqueues. On TensorRT-RTX,
``cuda_graph=True`` uses its documented mechanism instead: ``IRuntimeConfig.cuda_graph_strategy =
WHOLE_GRAPH_CAPTURE`` (TensorRT-RTX captures after its shape-specialised kernels are compiled, so no
lazily-compiled fallback kernel is frozen into a graph; user stream capture would also need engines
built with ``BuilderFlag.REQUIRE_USER_ALLOCATION``). The runtime config lives as long as the context.

Only LINEAR I/O formats are supported (buffers are sized ``prod(shape) * itemsize``); engines with
vectorised I/O (``trtexec --inputIOFormats=fp16:chw16``) are refused. ``run(copy_outputs=False)``
returns views that keep their pinned buffer alive (freed when the last view goes), valid until the
next ``run``.

All CUDA work goes through a ``common.gpu.cuda_mem.MemoryLayer`` (cuda-python by default),
so tests can run the session against a runtime double with host memory.

``common.throughput.trt_lanes.TrtBackend`` runs sessions on lanes for the evaluation pipeline.

Written against the documented TensorRT / TensorRT-RTX runtime API and tested against a double of it
(tests/trt_double.py, checked name by name against the real ``tensorrt_rtx`` and ``tensorrt`` 10.7 / 10.13 /
11.4 classes).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import RunError, UserError
from common.core.results import atomic_write_bytes, sha256_file
from common.eval.protocols import TensorSpec
from common.gpu.cuda_mem import Staging
from common.trt.api import TrtApi, create, last_error, make_logger, register_plugins
from common.trt.build import read_metadata
from common.trt.env import same_release

__all__ = [
    "DeviceFeed",
    "IOTensor",
    "TrtSession",
    "check_engine_origin",
    "default_memory",
    "np_dtype",
    "view_nbytes",
]

log = logging.getLogger(__name__)

# TensorRT DataType member name -> NumPy dtype (types NumPy cannot hold are left out).
_NP_DTYPES: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
}


def np_dtype(trt_dtype: Any, tensor: str) -> np.dtype:
    name = getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    if name not in _NP_DTYPES:
        raise UserError(
            f"engine tensor {tensor!r} has TensorRT type {name}, which NumPy cannot hold; "
            "keep the model's inputs and outputs in fp32/fp16/int32/int64/bool (e.g. AutoCast keep_io_types)"
        )
    return _NP_DTYPES[name]


@dataclass
class IOTensor:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]  # engine shape, -1 for dynamic axes
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None  # inputs: min/opt/max

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, tuple(None if d < 0 else int(d) for d in self.shape), self.dtype)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dtype": str(self.dtype), "shape": list(self.shape)}
        if self.profile:
            d["profile"] = {"min": list(self.profile[0]), "opt": list(self.profile[1]), "max": list(self.profile[2])}
        return d


def check_engine_origin(engine_path: Path, api: TrtApi, gpu: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Refuse an engine whose metadata says another backend or TensorRT release built it (``10.7.0`` and
    ``10.7.0.post1`` are one release), or another GPU architecture than ``gpu`` (this device's facts: its
    ``compute_capability``; unknown on either side: not compared)."""
    meta = read_metadata(engine_path)
    if not meta:
        return None
    name, version = meta.get("backend"), meta.get("backend_version")
    if name != api.name or not same_release(version, api.version):
        raise UserError(
            f"{engine_path} was built by {name} {version}, but this is {api.describe()}; engines only run on "
            f"the TensorRT version that built them: rebuild with build_trt_engine.py --backend {api.name} --force"
        )
    built_cc = str((meta.get("gpu") or {}).get("compute_capability") or "")
    here_cc = str((gpu or {}).get("compute_capability") or "")
    targets = [str(t) for t in (meta.get("options") or {}).get("compute_capabilities") or []]
    if built_cc and here_cc and not targets and built_cc != here_cc:
        built_on = (meta.get("gpu") or {}).get("name") or "another GPU"
        raise UserError(
            f"{engine_path} was built on {built_on} (compute capability {built_cc}), but this GPU is compute "
            f"capability {here_cc}; an engine runs only on the GPU architecture that built it: rebuild it here with "
            f"build_trt_engine.py --backend {api.name} --force"
        )
    return meta


def default_memory() -> Any:
    """The memory layer sessions use unless given one (tests replace this with a host-memory fake)."""
    from common.gpu.cuda_mem import CudaMemory

    return CudaMemory()


@dataclass
class DeviceFeed:
    """An input that writes the engine's device buffer itself (GPU pre-processing), on the session's
    stream: ``stage(device_ptr, stream)``. Validated like an array of ``shape`` and ``dtype``."""

    shape: tuple[int, ...]
    dtype: np.dtype
    stage: Callable[[int, Any], None]

    @property
    def ndim(self) -> int:
        return len(self.shape)


class TrtSession:
    def __init__(
        self,
        engine_path: str | os.PathLike[str],
        api: TrtApi,
        *,
        memory: Any | None = None,
        cuda_graph: bool = False,
        verbosity: str = "warning",
        runtime_cache: str | os.PathLike[str] | None = None,
        share: TrtSession | None = None,
    ) -> None:
        """``share``: another session of the same engine; this one then adds only an execution context,
        a stream, events and buffers of its own (a lane of ``TrtBackend``), reusing that session's
        runtime, deserialized engine and runtime cache (saved by the session that owns it)."""
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise UserError(f"--engine-path {self.engine_path}: no such file; build one with build_trt_engine.py")
        self.api = api
        self.mem = memory if memory is not None else (share.mem if share is not None else default_memory())
        self.cuda_graph = bool(cuda_graph)
        self.native_cuda_graph = False  # TensorRT-RTX: the runtime config's CUDA-graph strategy
        self._runtime_config: Any = None
        if share is not None:
            self.build_meta, self.logger, self.runtime = share.build_meta, share.logger, share.runtime
            self.engine, self.plugins = share.engine, share.plugins
        else:
            gpu = self.mem.device_info() if hasattr(self.mem, "device_info") else None
            self.build_meta = check_engine_origin(self.engine_path, api, gpu)
            self.logger = make_logger(api, verbosity)
            self.runtime = create(api, "Runtime", self.logger)
            self.plugins = register_plugins(api, self.logger)  # an engine holding a plugin needs it registered
            blob = self.engine_path.read_bytes()
            self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            why = last_error(self.logger, "not an engine of this backend/version")
            fix = f"rebuild it with build_trt_engine.py --backend {api.name} --force"
            if "plugin" in why.lower():
                fix = f"it holds a plugin this runtime cannot create (plugins: {self.plugins}); {fix} only helps once "
                fix += "the plugin library loads"
            elif "incompatible device" in why:
                fix = f"it was built for another GPU architecture: rebuild it on this GPU ({fix})"
            raise UserError(f"{self.engine_path}: {api.describe()} cannot deserialize this engine ({why}); {fix}")
        self._owns_cache = share is None
        self.runtime_cache_path = (Path(runtime_cache) if runtime_cache else None) if share is None else None
        self._shared_cache = share._runtime_cache if share is not None else None
        self._runtime_cache = None
        self.context = self._create_context()
        if self.context is None:
            raise UserError(f"{self.engine_path}: could not create an execution context ({last_error(self.logger)})")

        self.io = self._io_tensors()
        self.inputs = [t for t in self.io if t.is_input]
        self.outputs = [t for t in self.io if not t.is_input]

        self.stream = self.mem.stream()
        self._events = [self.mem.event() for _ in range(4)]  # start, after H2D, after compute, after D2H
        self._bindings: dict[str, Staging] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.cuda_graph_status = "off" if not cuda_graph else "pending"
        if self.native_cuda_graph:
            self.cuda_graph_status = "tensorrt-rtx runtime config: cuda_graph_strategy=WHOLE_GRAPH_CAPTURE"
        self._graphs: dict[tuple[Any, ...], Any] = {}  # (name, shape, address) of every tensor -> graph
        # keys enqueued plainly since the last shape change (captured on their second run); a shape change clears
        # it with the graphs, so a key in it had a plain enqueue of its shapes (TensorRT's first after the change)
        self._seen_keys: set[tuple[Any, ...]] = set()
        self.graph_captures = 0
        self._t0 = 0.0
        self.last_timing: dict[str, float] = {}

    # ------------------------------------------------------------------ setup

    def _io_tensors(self) -> list[IOTensor]:
        """The engine's I/O tensors in engine order (LINEAR formats only), with the first profile's shapes."""
        trt = self.api.module
        io = []
        for i in range(int(self.engine.num_io_tensors)):
            name = self.engine.get_tensor_name(i)
            self._check_linear(name)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            tensor = IOTensor(
                name,
                is_input,
                np_dtype(self.engine.get_tensor_dtype(name), name),
                tuple(int(d) for d in self.engine.get_tensor_shape(name)),
            )
            if is_input and int(self.engine.num_optimization_profiles) > 0:
                lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
                tensor.profile = (tuple(int(d) for d in lo), tuple(int(d) for d in opt), tuple(int(d) for d in hi))
            io.append(tensor)
        return io

    def _check_linear(self, name: str) -> None:
        """Refuse vectorised I/O formats: our buffers and copies assume LINEAR (row-major NCHW)."""
        fmt_enum = getattr(self.api.module, "TensorFormat", None)
        if fmt_enum is None or not hasattr(self.engine, "get_tensor_format"):
            return
        fmt = self.engine.get_tensor_format(name)
        if fmt != fmt_enum.LINEAR:
            fmt_name = getattr(fmt, "name", str(fmt))
            raise UserError(
                f"{self.engine_path}: engine tensor {name!r} has I/O format {fmt_name}, not LINEAR; this toolkit "
                "feeds and reads linear (row-major) buffers: rebuild the engine with linear I/O (build_trt_engine.py, "
                "or trtexec without --inputIOFormats/--outputIOFormats vectorised formats such as fp16:chw16)"
            )

    def _create_context(self) -> Any:
        if self.api.is_rtx and hasattr(self.engine, "create_runtime_config"):
            rt_config = self.engine.create_runtime_config()
            self._runtime_config = rt_config  # the context uses it: keep it alive as long as the context
            strategy = getattr(self.api.module, "CudaGraphStrategy", None)
            if self.cuda_graph and strategy is not None and hasattr(rt_config, "cuda_graph_strategy"):
                # TensorRT-RTX's own CUDA graphs (its samples do this): it captures after the shape-specialised
                # kernels are compiled; capturing execute_async_v3 ourselves needs REQUIRE_USER_ALLOCATION engines
                rt_config.cuda_graph_strategy = strategy.WHOLE_GRAPH_CAPTURE
                self.native_cuda_graph = True
            if self._shared_cache is not None:
                rt_config.set_runtime_cache(self._shared_cache)
            elif hasattr(rt_config, "create_runtime_cache"):
                # One runtime cache per engine, in memory even without --runtime-cache: the sessions made with
                # ``share`` (the lanes) set it on their runtime configs too, so kernels JIT-compile once, not
                # once per lane. Saved to runtime_cache_path on close when there is one.
                rt_cache = rt_config.create_runtime_cache()
                if self.runtime_cache_path is not None and self.runtime_cache_path.is_file():
                    if not rt_cache.deserialize(self.runtime_cache_path.read_bytes()):
                        self._keep_cache_file = True  # another GPU/driver/version's, or not a cache: never replaced
                        log.warning("runtime cache %s unreadable here; starting empty", self.runtime_cache_path)
                rt_config.set_runtime_cache(rt_cache)
                self._runtime_cache = rt_cache
            # TensorRT-RTX JIT-compiles its kernels here, at context creation.
            return self.engine.create_execution_context(rt_config)
        return self.engine.create_execution_context()

    def default_shape(self, tensor: IOTensor) -> tuple[int, ...]:
        """The static shape, or the profile's opt shape for a dynamic input."""
        if all(d >= 0 for d in tensor.shape):
            return tensor.shape
        if tensor.profile:
            return tensor.profile[1]
        raise UserError(f"input {tensor.name!r} has a dynamic shape {list(tensor.shape)} and no profile")

    def validate(self, feeds: Mapping[str, np.ndarray | DeviceFeed]) -> None:
        names = {t.name for t in self.inputs}
        unknown = sorted(set(feeds) - names)
        missing = sorted(names - set(feeds))
        if unknown:
            raise UserError(f"engine has no input {unknown[0]!r}; its inputs are {', '.join(sorted(names))}")
        if missing:
            raise UserError(f"engine input {missing[0]!r} is not given; its inputs are {', '.join(sorted(names))}")
        for t in self.inputs:
            arr = feeds[t.name]
            if arr.dtype != t.dtype:
                raise UserError(f"input {t.name!r}: dtype {arr.dtype}, but the engine expects {t.dtype}")
            if arr.ndim != len(t.shape):
                raise UserError(
                    f"input {t.name!r}: shape {list(arr.shape)} has rank {arr.ndim}, but the engine expects "
                    f"rank {len(t.shape)} {list(t.shape)}"
                )
            for axis, (got, want) in enumerate(zip(arr.shape, t.shape, strict=True)):
                if want >= 0 and got != want:
                    raise UserError(
                        f"input {t.name!r}: shape {list(arr.shape)}, but the engine expects {list(t.shape)}"
                    )
                if want < 0 and t.profile and not t.profile[0][axis] <= got <= t.profile[2][axis]:
                    raise UserError(
                        f"input {t.name!r}: axis {axis} is {got}, outside the engine profile range "
                        f"{t.profile[0][axis]}..{t.profile[2][axis]} (shape {list(arr.shape)}); "
                        "rebuild with wider --shapes"
                    )

    def _ensure(self, name: str, nbytes: int) -> bool:
        """Grow the buffers of one tensor (``common.throughput.lanes.Staging``); True when addresses changed."""
        staging = self._bindings.get(name)
        if staging is None:
            staging = self._bindings[name] = Staging(self.mem, f"tensor {name!r}")
        return staging.ensure(nbytes)

    def _set_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        changed = False
        for t in self.inputs:
            shape = tuple(int(d) for d in shapes[t.name])
            if self._shapes.get(t.name) != shape:
                if not self.context.set_input_shape(t.name, shape):
                    raise UserError(
                        f"input {t.name!r}: TensorRT rejected shape {list(shape)} ({last_error(self.logger)})"
                    )
                self._shapes[t.name] = shape
                changed = True
        if changed:
            self._drop_graphs()  # captured in the context's state before this shape change
        if changed or any(o.name not in self._shapes for o in self.outputs):
            try:
                missing = self.context.infer_shapes()
            except RuntimeError as exc:
                raise RunError(f"TensorRT shape inference failed: {last_error(self.logger, str(exc))}") from None
            if missing:
                raise UserError(f"TensorRT cannot infer shapes; tensors not specified: {', '.join(missing)}")
            for o in self.outputs:
                shape = tuple(int(d) for d in self.context.get_tensor_shape(o.name))
                if any(d < 0 for d in shape):
                    raise UserError(
                        f"{self.engine_path}: output {o.name!r} has a data-dependent shape {list(shape)} (known only "
                        "after the engine ran, e.g. after NonZero or a dynamic NMS), which this toolkit does not "
                        "support: export the model with outputs whose shapes follow from the input shapes "
                        "(YOLOv10's end-to-end head gives [N,300,6])"
                    )
                self._shapes[o.name] = shape
        moved = False
        for t in self.io:
            nbytes = math.prod(self._shapes[t.name]) * t.dtype.itemsize
            if self._ensure(t.name, nbytes):
                moved = True
        if moved:
            self._drop_graphs()  # captured with addresses that are gone
        if moved or changed:
            for t in self.io:
                if not self.context.set_tensor_address(t.name, self._bindings[t.name].device_ptr):
                    raise RunError(f"TensorRT set_tensor_address({t.name!r}) failed: {last_error(self.logger)}")

    # ------------------------------------------------------------------ run

    def _graph_key_now(self) -> tuple[Any, ...]:
        return tuple((t.name, self._shapes[t.name], self._bindings[t.name].device_ptr) for t in self.io)

    def _execute(self) -> None:
        try:
            ok = self.context.execute_async_v3(self.stream.handle)
        except RuntimeError as exc:  # the bindings raise for some failures instead of returning False
            ok, detail = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            detail = ""
        if not ok:
            why = last_error(self.logger, detail or "no detail")
            raise RunError(f"{self.engine_path}: TensorRT execute_async_v3 failed: {why}")

    def _try_capture(self, key: tuple[Any, ...]) -> Any:
        """Capture one enqueue into a CUDA graph for ``key`` (kept until the buffers move); on failure, fall
        back to plain enqueues for good (None)."""
        if hasattr(self.context, "is_stream_capturable") and not self.context.is_stream_capturable(self.stream.handle):
            self._graph_fallback("the execution context says this stream is not capturable")
            return None
        graph, ok, error = None, False, ""
        try:
            self.mem.begin_capture(self.stream)
            try:
                ok = bool(self.context.execute_async_v3(self.stream.handle))
            finally:
                graph = self.mem.end_capture(self.stream)
        except Exception as exc:
            error = str(exc)
        if not ok or graph is None:
            if graph is not None:
                graph.close()
            self._graph_fallback(error or last_error(self.logger, "enqueue during capture failed"))
            return None
        self._graphs[key] = graph
        self.graph_captures += 1
        self.cuda_graph_status = "captured"
        return graph

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()
        self._seen_keys.clear()

    def _graph_fallback(self, why: str) -> None:
        log.warning("CUDA graph capture failed (%s); running without CUDA graphs", why)
        self.cuda_graph = False
        self.cuda_graph_status = f"fallback: {why}"
        self.stream.synchronize()

    def run(self, feeds: Mapping[str, np.ndarray | DeviceFeed], copy_outputs: bool = True) -> dict[str, np.ndarray]:
        """Validate, copy in (or let a ``DeviceFeed`` write the device buffer), execute, copy out;
        timings (ms) in ``last_timing``."""
        collect = self.enqueue(feeds, copy_outputs)
        self._events[3].synchronize()
        return collect()

    def enqueue(
        self, feeds: Mapping[str, np.ndarray | DeviceFeed], copy_outputs: bool = True, post: Any = None
    ) -> Callable[[], Any]:
        """``stage`` and its upload, then ``launch``: ``run`` up to the enqueue of the output copies."""
        self.stage(feeds)()
        return self.launch(copy_outputs, post)

    def stage(self, feeds: Mapping[str, np.ndarray | DeviceFeed]) -> Callable[[], None]:
        """The host half of a run: validate, set the shapes, copy host arrays into the pinned staging.
        Returns the upload: it enqueues the H2D copies (a ``DeviceFeed``: its kernel) on the session's stream.
        Staging before the turn on the GPU keeps the host copy out of the GPU-timed span."""
        self.validate(feeds)
        self._set_shapes({k: tuple(v.shape) for k, v in feeds.items()})
        self._t0 = time.perf_counter()
        for t in self.inputs:
            feed = feeds[t.name]
            if not isinstance(feed, DeviceFeed):
                view = self._bindings[t.name].view(t.dtype, self._shapes[t.name])
                np.copyto(view, feed, casting="no")

        def upload() -> None:
            self._events[0].record(self.stream)
            for t in self.inputs:
                b, feed = self._bindings[t.name], feeds[t.name]
                if isinstance(feed, DeviceFeed):
                    feed.stage(b.device_ptr, self.stream)
                else:
                    b.upload_staged(view_nbytes(self._shapes[t.name], t.dtype), self.stream)
            self._events[1].record(self.stream)

        return upload

    def _launch_compute(self) -> bool:
        """Enqueue the engine: replay the graph of these shapes and addresses, capture it on the second
        run of a key when the last enqueue was a plain one of these shapes (TensorRT's first enqueue after
        ``set_input_shape`` cannot be captured), else enqueue plainly. True when a graph ran."""
        if not self.cuda_graph or self.native_cuda_graph:
            self._execute()
            return False
        key = self._graph_key_now()
        graph = self._graphs.get(key)
        if graph is None and key in self._seen_keys:
            graph = self._try_capture(key)
        if graph is None:
            self._seen_keys.add(key)
            self._execute()
            return False
        graph.launch(self.stream)
        return True

    def launch(self, copy_outputs: bool = True, post: Any = None) -> Callable[[], Any]:
        """After ``stage`` and its upload: enqueue the engine and the output copies; returns the function that
        reads the outputs once the stream is done (``{name: array}``, or ``post.collect()`` when a
        ``GpuPostprocessor`` is given: it then runs on this stream after compute on the first output, and only
        its rows come back)."""
        mem, stream, ev = self.mem, self.stream, self._events
        t0 = self._t0
        te = time.perf_counter()
        use_graph = self._launch_compute()
        enqueue_s = time.perf_counter() - te
        ev[2].record(stream)
        if post is not None:
            first = self.outputs[0]
            post.launch(self._bindings[first.name].device_ptr, stream, int(self._shapes[first.name][0]))
        else:
            for o in self.outputs:
                self._bindings[o.name].download(view_nbytes(self._shapes[o.name], o.dtype), stream)
        ev[3].record(stream)

        def collect() -> Any:
            ev[3].synchronize()
            host_s = time.perf_counter() - t0
            outs: Any
            if post is not None:
                outs = post.collect()
            else:
                outs = {}
                for o in self.outputs:
                    view = self._bindings[o.name].view(o.dtype, self._shapes[o.name])
                    outs[o.name] = view.copy() if copy_outputs else view
            self.last_timing = {
                "h2d_ms": mem.elapsed_ms(ev[0], ev[1]),
                "compute_ms": mem.elapsed_ms(ev[1], ev[2]),
                "d2h_ms": mem.elapsed_ms(ev[2], ev[3]),
                "latency_ms": mem.elapsed_ms(ev[0], ev[3]),
                "enqueue_ms": enqueue_s * 1000.0,
                "host_ms": host_s * 1000.0,
                "cuda_graph": 1.0 if use_graph else 0.0,
            }
            return outs

        return collect

    # ------------------------------------------------------------------ facts, close

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.api.name,
            "backend_version": self.api.version,
            "engine_path": str(self.engine_path),
            "engine_sha256": sha256_file(self.engine_path),
            "inputs": [t.describe() for t in self.inputs],
            "outputs": [t.describe() for t in self.outputs],
            "cuda_graph": self.cuda_graph_status,
            "cuda_graph_captures": self.graph_captures,
            "memory_layer": getattr(self.mem, "name", type(self.mem).__name__),
            "gpu": self.mem.device_info() if hasattr(self.mem, "device_info") else None,
            "runtime_cache": str(self.runtime_cache_path) if self.runtime_cache_path else None,
            "plugins": self.plugins,
            "build": self.build_meta,
        }

    def close(self) -> None:
        keep = getattr(self, "_keep_cache_file", False)  # an existing file it could not read: not ours to replace
        if self._owns_cache and self._runtime_cache is not None and self.runtime_cache_path is not None and not keep:
            try:
                atomic_write_bytes(self.runtime_cache_path, bytes(self._runtime_cache.serialize()))
            except Exception as exc:  # a cache that cannot be saved is not worth failing the run
                log.warning("could not save runtime cache %s: %s", self.runtime_cache_path, exc)
            self._runtime_cache = None
        self._drop_graphs()
        for b in self._bindings.values():
            b.free()
        self._bindings.clear()  # host buffers: freed now, or when the last view handed out goes
        for e in self._events:
            e.close()
        self._events = []
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self.context = None
        self._runtime_config = None
        self.engine = None

    def __enter__(self) -> TrtSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def view_nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize
