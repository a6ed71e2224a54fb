"""TensorRT on lanes: ``TrtBackend``, the evaluator's backend over one or more ``TrtSession`` contexts of one engine.

Each lane is an execution context on its own stream (``common.throughput.lanes``, shared with the ONNX Runtime
IO-binding lanes); GPU pre- and post-processing kernels run on the lane's stream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.eval.protocols import TensorSpec, U8Batch
from common.throughput.gpu_preprocess import U8Stager
from common.throughput.lane_backend import LaneBackend, resolve_gpu_order
from common.throughput.lanes import Collect, Lane, Staged
from common.trt.api import TrtApi
from common.trt.runtime import DeviceFeed, TrtSession

__all__ = ["TrtBackend"]


class TrtBackend(LaneBackend):
    """The evaluator's backend over TrtSessions: one image input, outputs in engine order.

    ``lanes`` execution contexts of the one engine, each on its own stream (``common.throughput.lanes``, shared
    with the ONNX Runtime IO-binding backend): an ``AsyncBackend`` with ``lanes + 1`` batches in flight,
    ``DevicePreprocessing`` (``--preprocess gpu-*``: the kernels of ``common.throughput.gpu_preprocess`` write the
    engine's input buffer on the lane's stream), ``DevicePostprocessing`` (``common.throughput.gpu_postprocess`` on
    the lane's stream after compute; only the final rows come back), ``Warmup`` and ``LaneTiming``.

    Verification status: TensorRT engines cannot run here; the lanes, pre- and post-processing on them
    are tested in CI against the runtime double (tests/trt_double.py) with host doubles of the kernels
    (tests/post_double.py). Whether one TensorRT-RTX runtime cache may be set on several runtime
    configs (one per lane) follows the API's shape, not a run.
    """

    def __init__(
        self,
        session: TrtSession,
        prep_factory: Callable[[], Any] | None = None,
        lanes: int = 1,
        post_kernels: Callable[[], Any] | None = None,
        gpu_order: str = "auto",
    ) -> None:
        if len(session.inputs) != 1:
            names = ", ".join(t.name for t in session.inputs)
            raise UserError(f"{session.engine_path}: expected one image input, the engine has {names}")
        if lanes < 1:
            raise UserError(f"--lanes must be >= 1, got {lanes}")
        overlap = resolve_gpu_order(gpu_order, False, 1)  # TensorRT's enqueue returns at once: auto is serial
        self.session = session
        self.name = session.api.name
        self._input = session.inputs[0]
        self.mem, self.device_id = session.mem, int(getattr(session.mem, "device", 0))
        self._prep_factory = prep_factory
        self._post_kernels = post_kernels
        sessions = [session]
        try:
            for _ in range(lanes - 1):
                sessions.append(
                    TrtSession(
                        session.engine_path,
                        session.api,
                        memory=session.mem,
                        cuda_graph=session.cuda_graph,
                        share=session,
                    )
                )
        except BaseException:
            for extra in sessions[1:]:
                extra.close()
            raise
        self._start_lanes(
            [Lane(session.mem, _TrtLane(s), stream=s.stream, owns_stream=False) for s in sessions], "trt-lane", overlap
        )

    @classmethod
    def open(
        cls, engine_path: str | os.PathLike[str], api: TrtApi, lanes: int = 1, gpu_order: str = "auto", **kwargs: Any
    ) -> TrtBackend:
        return cls(TrtSession(engine_path, api, **kwargs), lanes=lanes, gpu_order=gpu_order)

    @property
    def input(self) -> TensorSpec:
        spec = self._input.spec()
        return TensorSpec(spec.name, spec.shape, np.dtype(np.float32))  # infer() takes float32 and casts

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return [o.spec() for o in self.session.outputs]

    def enable_device_postprocess(self, layout: str, input_hw: tuple[int, int], opts: Any) -> None:
        """Return ``[GpuDetections]`` from now on. The output's shape after the batch axis must be static
        and its batch axis at most the input's profile max (UserError otherwise; nothing changed then)."""
        first = self.session.outputs[0]
        dims = tuple(first.shape[1:])
        if len(first.shape) != 3 or any(d < 0 for d in dims):
            raise UserError(
                f"GPU post-processing needs a [B, C, A] output with static C and A; "
                f"{first.name} is {list(first.shape)}: use --postprocess cpu"
            )
        dims2 = (int(dims[0]), int(dims[1]))
        self._set_postprocess(layout, input_hw, opts, dims2, first.dtype, self._max_batch())

    def _max_batch(self) -> int:
        t = self._input
        if t.shape[0] >= 0:
            return int(t.shape[0])
        if t.profile:
            return int(t.profile[2][0])
        raise UserError(f"input {t.name!r} has a dynamic batch axis and no profile")

    # ------------------------------------------------------------------ running
    def _prepare(self, lane: Lane, batch: np.ndarray | U8Batch) -> Staged:
        """A ``U8Batch`` goes into the lane's pinned staging and up now (before the lane's turn on the GPU);
        the feed then runs its kernel. Host float arrays are staged and copied by the session."""
        if isinstance(batch, U8Batch):
            stager = lane.worker.stager
            if stager is None:
                raise UserError(f"backend not set up for --preprocess {batch.mode} (enable_device_preprocess)")
            filled = stager.fill(batch, lane.stream)
            return Staged(DeviceFeed(batch.shape, np.dtype(np.float32), filled.launch), filled.copy)
        return Staged(np.ascontiguousarray(batch, dtype=self._input.dtype))

    def _enqueue(self, lane: Lane, feed: np.ndarray | DeviceFeed) -> Collect:
        w: _TrtLane = lane.worker
        collect = w.session.enqueue({self._input.name: feed}, post=w.post)
        if w.post is not None:
            return lambda: [collect()]
        return lambda: (lambda outs: [outs[o.name] for o in w.session.outputs])(collect())

    def warmup(self, batch: int, runs: int) -> None:
        """``runs`` runs of a zero batch on every lane (each context's first runs, TensorRT-RTX's
        shape-specialised kernels, CUDA-graph capture) before anything is timed."""
        shape = self.session.default_shape(self._input)
        dummy = np.zeros((batch, *shape[1:]), np.float32)  # float: valid whatever pre-processing is enabled
        for i in range(len(self._lanes.lanes)):  # on each lane's own thread, where its batches will run
            self._lanes.call_on(i, lambda lane: [self._lanes.run_on(lane, dummy) for _ in range(runs)])

    def metadata(self) -> dict[str, Any]:
        meta = self.session.describe()
        meta.update(self._lane_metadata())
        return meta

    def close(self) -> None:
        self._lanes.close()
        self._close_lane_extras()
        for lane in self._lanes.lanes:
            lane.close()
        for lane in reversed(self._lanes.lanes):
            lane.worker.session.close()  # extra contexts first, the engine's owner last
        self._lanes.lanes = []


@dataclass
class _TrtLane:
    session: TrtSession
    stager: U8Stager | None = None
    post: Any = None
