"""The plain TensorRT backend: ``TrtRunner``, one engine run the simplest way.

One execution context, one CUDA stream, a pinned host buffer and a device buffer per I/O tensor
(``TrtSession``), and ``infer(batch) -> outputs``: copy in, ``execute_async_v3``, copy out, wait. No
threads, no lanes, nothing else in flight; a CUDA graph only when asked (``cuda_graph=True``). It is what
``eval_yolov10m_trt_coco.py --lanes 0``, ``infer_trt_engine.py`` and ``trt-doctor --smoke`` run, and the
unit the TensorRT lanes (``common.throughput.trt_lanes``) are made of: one runner per lane.

    runner = TrtRunner.open("yolov10m.engine", load_api("tensorrt"))
    try:
        outputs = runner.infer(batch)  # float32 NCHW -> [array per output, in engine order]
    finally:
        runner.close()
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.eval.protocols import TensorSpec
from common.trt.api import TrtApi
from common.trt.runtime import DeviceFeed, TrtSession

__all__ = ["TrtRunner"]


class TrtRunner:
    """A ``Backend`` (common.eval.protocols) over one ``TrtSession``: one image input, outputs in engine order."""

    def __init__(self, session: TrtSession, image_input: bool = True) -> None:
        """``image_input``: refuse an engine without exactly one (image) input; ``False`` for any engine run
        through ``run(feeds)`` (``infer`` and ``input`` then need one input all the same)."""
        if image_input and len(session.inputs) != 1:
            names = ", ".join(t.name for t in session.inputs)
            raise UserError(f"{session.engine_path}: expected one image input, the engine has {names}")
        self.session = session
        self.name = session.api.name
        self._input = session.inputs[0]  # the image input of an image_input engine
        self._warm_captures = 0

    @classmethod
    def open(
        cls,
        engine_path: str | os.PathLike[str],
        api: TrtApi,
        *,
        cuda_graph: bool = False,
        verbosity: str = "warning",
        runtime_cache: str | os.PathLike[str] | None = None,
        memory: Any | None = None,
        share: TrtRunner | None = None,
        image_input: bool = True,
    ) -> TrtRunner:
        """Load ``engine_path``; ``share``: another runner of the same engine (reuse its runtime and
        deserialized engine, add only a context, a stream and buffers)."""
        session = TrtSession(
            engine_path,
            api,
            memory=memory,
            cuda_graph=cuda_graph,
            verbosity=verbosity,
            runtime_cache=runtime_cache,
            share=share.session if share is not None else None,
        )
        try:
            return cls(session, image_input)
        except BaseException:
            session.close()
            raise

    @property
    def input(self) -> TensorSpec:
        spec = self._input.spec()
        return TensorSpec(spec.name, spec.shape, np.dtype(np.float32))  # infer() takes float32 and casts

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return [o.spec() for o in self.session.outputs]

    @property
    def engine_input(self) -> Any:
        """The engine's own input tensor (its dtype and profile)."""
        return self._input

    def max_batch(self) -> int:
        """The largest batch the engine takes (static batch, or the profile's max)."""
        t = self._input
        if t.shape[0] >= 0:
            return int(t.shape[0])
        if t.profile:
            return int(t.profile[2][0])
        raise UserError(f"input {t.name!r} has a dynamic batch axis and no profile")

    # ------------------------------------------------------------------ running
    def stage(self, batch: np.ndarray | DeviceFeed) -> Callable[[], None]:
        """The host half of one batch (into the pinned buffer); returns its upload onto the runner's stream."""
        feed = batch if isinstance(batch, DeviceFeed) else np.ascontiguousarray(batch, dtype=self._input.dtype)
        return self.session.stage({self._input.name: feed})

    def launch(self, post: Any = None) -> Callable[[], list[Any]]:
        """After ``stage`` and its upload: enqueue the engine and the copies back; returns the function that
        waits and gives the outputs (``[GpuDetections]`` when a GPU post-processor ``post`` is given)."""
        collect = self.session.launch(post=post)
        if post is not None:
            return lambda: [collect()]
        return lambda: (lambda outs: [outs[o.name] for o in self.session.outputs])(collect())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Any engine: ``{input name: array}`` in, ``{output name: array}`` out (timings in
        ``session.last_timing``)."""
        return self.session.run(feeds)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one float32 NCHW batch and wait: the outputs in engine order."""
        self.stage(batch)()
        return self.launch()()

    def warmup(self, batch: int, runs: int) -> None:
        """``runs`` runs of a zero batch (the context's first runs, CUDA-graph capture) before anything is timed."""
        shape = self.session.default_shape(self._input)
        dummy = np.zeros((batch, *shape[1:]), np.float32)
        for _ in range(runs):
            self.infer(dummy)
        self.mark_warm()

    def mark_warm(self) -> None:
        """Warm-up is over: CUDA graphs captured from now on count as ``timed_captures``."""
        self._warm_captures = self.session.graph_captures

    @property
    def timed_captures(self) -> int:
        """CUDA graphs captured since the last warm-up (0 when every shape was warmed)."""
        return self.session.graph_captures - self._warm_captures

    def metadata(self) -> dict[str, Any]:
        meta = self.session.describe()
        meta.update({"lanes": 0, "runner": "plain: one execution context, one stream, no threads"})
        meta["cuda_graph_captures_after_warmup"] = self.timed_captures
        return meta

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> TrtRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
