"""Pipeline capacity: a zero-cost backend that replays model outputs recorded in one real pass.

``record_outputs`` runs a real backend once over the distinct images (batch 1, CPU pre-processing) and
keeps each image's output rows. ``ReplayBackend`` then hands those rows back, stacked into batches of
any size (it ignores the model's own batch axis), in the order the pipeline submits the images. The
evaluator around it is the real one: loader threads, batching, post-processing, COCO rows. So its
images/s is the most any backend can get through our pipeline, and its detections (hence AP) are the
real model's.

The replay is exact only when the image sequence repeats whole batches: give the pipeline a list whose
length is a multiple of the batch size (``replay_ids``), repeated whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.data.coco import CocoDataset
from common.data.images import load_image_rgb, preprocess
from common.eval.protocols import Backend, TensorSpec
from common.throughput.gpu_preprocess import U8Batch

__all__ = ["ReplayBackend", "record_outputs", "replay_ids"]


def replay_ids(ids: Sequence[int], batch: int) -> list[int]:
    """The longest prefix of ``ids`` that is whole batches (at least one batch: ids repeated if too few)."""
    ids = list(ids)
    if len(ids) < batch:
        ids = (ids * math.ceil(batch / len(ids)))[:batch]
    return ids[: len(ids) // batch * batch]


def record_outputs(
    backend: Backend, dataset: CocoDataset, ids: Sequence[int], size: int
) -> dict[int, list[np.ndarray]]:
    """Each image's outputs (batch axis dropped), one real inference per distinct image."""
    rec: dict[int, list[np.ndarray]] = {}
    for image_id in dict.fromkeys(ids):
        x, _ = preprocess(load_image_rgb(dataset.image_path(image_id), what=f"image id {image_id}"), size)
        rec[image_id] = [np.array(o[0]) for o in backend.infer(x[None])]
    return rec


class ReplayBackend:
    """A ``Backend`` (and ``Warmup``, ``DevicePreprocessing``) whose inference costs nothing.

    ``infer`` returns the next precomputed batch of recorded outputs: the cycle of ``order`` in batches
    of ``batch``. With ``enable_device_preprocess`` (GPU machines) the uint8 batch really goes up and
    through the letterbox kernel on its stream, as a device backend would do it, before the replay.
    """

    name = "replay"

    def __init__(
        self, recorded: dict[int, list[np.ndarray]], order: Sequence[int], batch: int, template: Backend
    ) -> None:
        if not order or len(order) % batch:
            raise UserError(f"replay: {len(order)} images are not whole batches of {batch}")
        n_out = len(template.outputs)
        self._batches = [
            [np.stack([recorded[i][k] for i in order[j : j + batch]]) for k in range(n_out)]
            for j in range(0, len(order), batch)
        ]
        self._cursor = 0
        spec = template.input
        self._input = TensorSpec(spec.name, (None, *spec.shape[1:]), spec.dtype)
        self._outputs = [TensorSpec(o.name, (None, *o.shape[1:]), o.dtype) for o in template.outputs]
        self.batch = batch
        self.preprocess = "cpu"
        self.postprocess: str | None = None  # the layout GPU post-processing was set up for
        self._dev: dict[str, Any] = {}

    @property
    def input(self) -> TensorSpec:
        return self._input

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def rewind(self) -> None:
        """Start again at the first recorded batch (before each pass over the image list)."""
        self._cursor = 0

    def warmup(self, batch: int, runs: int) -> None:
        """Nothing to warm (and the replay cursor must not move)."""

    def _cuda(self) -> dict[str, Any]:
        if not self._dev:
            from common.gpu.cuda_mem import CudaMemory

            mem = CudaMemory()
            self._dev = {"mem": mem, "stream": mem.stream()}
        return self._dev

    def enable_device_preprocess(self, mode: str) -> None:
        if mode == "cpu":
            return
        from common.throughput.gpu_preprocess import GpuPreprocessor, U8Stager

        dev = self._cuda()
        if "stager" not in dev:
            size = int(self._input.shape[2] or 640)
            dev["prep"] = GpuPreprocessor(0)
            dev["buf"] = dev["mem"].device_buffer(self.batch * 3 * size * size * 4)
            dev["stager"] = U8Stager(dev["mem"], dev["prep"], mode)
        dev["stager"].mode = self.preprocess = mode

    def enable_device_postprocess(self, layout: str, input_hw: tuple[int, int], opts: Any) -> None:
        """``DevicePostprocessing``: every recorded batch goes to the GPU once; ``infer`` then runs the
        post-processing kernels on those device-resident outputs and returns ``[GpuDetections]``."""
        from common.throughput.gpu_postprocess import GpuPostprocessor

        dev = self._cuda()
        first = self._batches[0][0]
        post = GpuPostprocessor(dev["mem"])
        try:
            post.prepare(layout, self.batch, tuple(first.shape[1:]), input_hw, opts, first.dtype)
        except BaseException:
            post.close()
            raise
        if "resident" not in dev:
            resident = []
            for outs in self._batches:
                a = np.ascontiguousarray(outs[0])
                buf = dev["mem"].device_buffer(a.nbytes)
                dev["mem"].copy_htod_async(buf.ptr, a.ctypes.data, a.nbytes, dev["stream"])
                dev["stream"].synchronize()
                resident.append(buf)
            dev["resident"] = resident
        if "post" in dev:
            dev["post"].close()
        dev["post"] = post
        self.postprocess = layout

    def disable_device_postprocess(self) -> None:
        """Back to the recorded head tensors (the CPU path); the resident copies stay for a later switch."""
        post = self._dev.pop("post", None)
        if post is not None:
            self._dev["stream"].synchronize()
            post.close()
        self.postprocess = None

    def infer(self, batch: Any) -> list[Any]:
        k = self._cursor % len(self._batches)
        out = self._batches[k]
        if int(batch.shape[0]) != out[0].shape[0]:
            raise RuntimeError(f"replay: a batch of {batch.shape[0]}, recorded batches of {out[0].shape[0]}")
        dev = self._dev
        if isinstance(batch, U8Batch):
            if "stager" not in dev:
                raise UserError(f"replay not set up for --preprocess {batch.mode}")
            dev["stager"].stage(batch, dev["buf"].ptr, dev["stream"])
        self._cursor += 1
        if "post" in dev:
            dev["post"].launch(dev["resident"][k].ptr, dev["stream"], int(batch.shape[0]))
            dev["stream"].synchronize()
            return [dev["post"].collect()]
        if dev:
            dev["stream"].synchronize()
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "batches": len(self._batches),
            "batch": self.batch,
            "preprocess": self.preprocess,
            "gpu_postprocess": self.postprocess,
        }

    def close(self) -> None:
        dev, self._dev = self._dev, {}
        if not dev:
            return
        dev["stream"].synchronize()
        for key in ("stager", "prep", "post"):
            if key in dev:
                dev[key].close()
        for buf in [dev.get("buf"), *dev.get("resident", [])]:
            if buf is not None:
                buf.free()
        dev["stream"].close()
