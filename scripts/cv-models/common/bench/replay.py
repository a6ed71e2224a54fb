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
from common.gpu.preprocess import U8Batch

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

    def __init__(self, recorded: dict[int, list[np.ndarray]], order: Sequence[int], batch: int,
                 template: Backend) -> None:  # fmt: skip
        if not order or len(order) % batch:
            raise UserError(f"replay: {len(order)} images are not whole batches of {batch}")
        n_out = len(template.outputs)
        self._batches = [[np.stack([recorded[i][k] for i in order[j : j + batch]]) for k in range(n_out)]
                         for j in range(0, len(order), batch)]  # fmt: skip
        self._cursor = 0
        spec = template.input
        self._input = TensorSpec(spec.name, (None, *spec.shape[1:]), spec.dtype)
        self._outputs = [TensorSpec(o.name, (None, *o.shape[1:]), o.dtype) for o in template.outputs]
        self.batch = batch
        self.preprocess = "cpu"
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

    def enable_device_preprocess(self, mode: str) -> None:
        if mode == "cpu":
            return
        from common.gpu.cuda_mem import CudaMemory
        from common.gpu.preprocess import GpuPreprocessor, U8Stager

        if not self._dev:
            mem = CudaMemory()
            size = int(self._input.shape[2] or 640)
            self._dev = {"mem": mem, "stream": mem.stream(), "prep": GpuPreprocessor(0),
                         "buf": mem.device_buffer(self.batch * 3 * size * size * 4)}  # fmt: skip
            self._dev["stager"] = U8Stager(mem, self._dev["prep"], mode)
        self._dev["stager"].mode = self.preprocess = mode

    def infer(self, batch: Any) -> list[np.ndarray]:
        out = self._batches[self._cursor % len(self._batches)]
        if int(batch.shape[0]) != out[0].shape[0]:
            raise RuntimeError(f"replay: a batch of {batch.shape[0]}, recorded batches of {out[0].shape[0]}")
        if isinstance(batch, U8Batch):
            if not self._dev:
                raise UserError(f"replay not set up for --preprocess {batch.mode}")
            self._dev["stager"].stage(batch, self._dev["buf"].ptr, self._dev["stream"])
            self._dev["stream"].synchronize()
        self._cursor += 1
        return out

    def metadata(self) -> dict[str, Any]:
        return {"backend": self.name, "batches": len(self._batches), "batch": self.batch,
                "preprocess": self.preprocess}  # fmt: skip

    def close(self) -> None:
        if self._dev:
            self._dev["stream"].synchronize()
            self._dev["stager"].close()
            self._dev["buf"].free()
            self._dev["prep"].close()
            self._dev["stream"].close()
            self._dev = {}
