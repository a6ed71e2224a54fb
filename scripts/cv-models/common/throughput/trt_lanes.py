"""TensorRT on lanes: ``TrtBackend``, the evaluator's backend over several plain runners of one engine.

Each lane is one ``common.trt.runner.TrtRunner`` (an execution context on its own stream) driven by
``common.throughput.lanes`` (shared with the ONNX Runtime IO-binding lanes); GPU pre- and post-processing
kernels run on the lane's stream. A batch's host copy and upload happen before the lane's turn on the GPU.
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
from common.throughput.lane_backend import LaneBackend, checked_lane_threads, resolve_gpu_order
from common.throughput.lanes import Collect, Lane, Staged
from common.trt.api import TrtApi
from common.trt.runner import TrtRunner
from common.trt.runtime import DeviceFeed, TrtSession

__all__ = ["TrtBackend"]


class TrtBackend(LaneBackend):
    """The evaluator's backend over ``lanes`` TrtRunners of one engine: one image input, outputs in engine order.

    Each runner is an execution context on its own stream; the lanes (``common.throughput.lanes``, shared
    with the ONNX Runtime IO-binding backend) make it an ``AsyncBackend`` (``LanePool.max_in_flight`` in flight),
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
        runner: TrtRunner | TrtSession,
        prep_factory: Callable[[], Any] | None = None,
        lanes: int = 1,
        post_kernels: Callable[[], Any] | None = None,
        gpu_order: str = "auto",
        spin_wait: bool = True,
        lane_threads: str = "per-lane",
    ) -> None:
        """``runner``: the first lane (a bare ``TrtSession`` is wrapped); the others share its engine.
        This backend owns it from here on (closed by ``close``, or now if construction fails). ``spin_wait``:
        ``common.throughput.lanes.Lane``'s; ``lane_threads``: ``LaneBackend``'s."""
        first = runner if isinstance(runner, TrtRunner) else _wrap(runner)
        runners = [first]
        try:
            if lanes < 1:
                raise UserError(f"--lanes must be >= 1, got {lanes}")
            overlap = resolve_gpu_order(gpu_order, False, 1)  # TensorRT's enqueue returns at once: auto is serial
            self.lane_threads = checked_lane_threads(lane_threads)
            for _ in range(lanes - 1):
                runners.append(
                    TrtRunner.open(
                        first.session.engine_path, first.session.api, share=first, cuda_graph=first.session.cuda_graph
                    )
                )
        except BaseException:
            for r in reversed(runners):
                r.close()
            raise
        self.runner, self.session = first, first.session
        self.name = first.name
        self._input = first.engine_input
        self.mem, self.device_id = first.session.mem, int(getattr(first.session.mem, "device", 0))
        self._prep_factory = prep_factory
        self._post_kernels = post_kernels
        self._start_lanes(
            [
                Lane(r.session.mem, _TrtLane(r), stream=r.session.stream, owns_stream=False, spin_wait=spin_wait)
                for r in runners
            ],
            "trt-lane",
            overlap,
        )

    @classmethod
    def open(
        cls,
        engine_path: str | os.PathLike[str],
        api: TrtApi,
        lanes: int = 1,
        gpu_order: str = "auto",
        spin_wait: bool = True,
        **kwargs: Any,
    ) -> TrtBackend:
        return cls(TrtRunner.open(engine_path, api, **kwargs), lanes=lanes, gpu_order=gpu_order, spin_wait=spin_wait)

    @property
    def input(self) -> TensorSpec:
        return self.runner.input

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self.runner.outputs

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
        self._set_postprocess(layout, input_hw, opts, dims2, first.dtype, self.runner.max_batch())

    # ------------------------------------------------------------------ running
    def _prepare(self, lane: Lane, batch: np.ndarray | U8Batch) -> Staged:
        """Before the lane's turn on the GPU: a ``U8Batch`` goes into the lane's pinned staging and up (its
        kernel then runs in the turn); a float batch goes into the runner's pinned buffer and up."""
        w: _TrtLane = lane.worker
        if isinstance(batch, U8Batch):
            if w.stager is None:
                raise UserError(f"backend not set up for --preprocess {batch.mode} (enable_device_preprocess)")
            filled = w.stager.fill(batch, lane.stream)
            return Staged(DeviceFeed(batch.shape, np.dtype(np.float32), filled.launch), filled.copy)
        upload = w.runner.stage(batch)
        return Staged(None, lambda stream: upload())

    def _enqueue(self, lane: Lane, feed: DeviceFeed | None) -> Collect:
        w: _TrtLane = lane.worker
        if feed is not None:
            w.runner.stage(feed)()  # the pre-processing kernel writes the input buffer, in the lane's turn
        return w.runner.launch(post=w.post)

    def warmup(self, batch: int, runs: int) -> None:
        """``runs`` runs of a zero batch on every lane (each context's first runs, TensorRT-RTX's
        shape-specialised kernels, CUDA-graph capture) before anything is timed."""
        shape = self.session.default_shape(self._input)
        dummy = np.zeros((batch, *shape[1:]), np.float32)  # float: valid whatever pre-processing is enabled
        for i in range(len(self._lanes.lanes)):  # on each lane's own thread, where its batches will run
            self._lanes.call_on(i, lambda lane: [self._lanes.run_on(lane, dummy) for _ in range(runs)])
        for lane in self._lanes.lanes:
            lane.worker.runner.mark_warm()

    def metadata(self) -> dict[str, Any]:
        meta = self.session.describe()
        meta.update(self._lane_metadata())
        runners = [lane.worker.runner for lane in self._lanes.lanes]
        meta["cuda_graph_captures"] = sum(r.session.graph_captures for r in runners)
        meta["cuda_graph_captures_after_warmup"] = sum(r.timed_captures for r in runners)
        return meta

    def close(self) -> None:
        self._lanes.close()
        self._close_lane_extras()
        for lane in self._lanes.lanes:
            lane.close()
        for lane in reversed(self._lanes.lanes):
            lane.worker.runner.close()  # extra contexts first, the engine's owner last
        self._lanes.lanes = []


def _wrap(session: TrtSession) -> TrtRunner:
    try:
        return TrtRunner(session)
    except BaseException:
        session.close()
        raise


@dataclass
class _TrtLane:
    runner: TrtRunner
    stager: U8Stager | None = None
    post: Any = None
