"""Score precision candidates with ONNX Runtime on a screening subset or the full image set.

Every candidate runs through the toolkit's one evaluation loop (``common.eval.pipeline.evaluate``)
with an ONNX Runtime session, then ``common.quant.score.match_images`` computes the COCO stats and
keeps the per-image matches that the paired bootstrap needs. ONNX Runtime runs Q/DQ graphs as
fake quantization (float compute between quantize/dequantize steps): a proxy for TensorRT's INT8/FP8
kernels, not the same arithmetic.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.data.coco import CocoDataset
from common.eval.pipeline import EvalOptions, evaluate
from common.ort.session import OrtBackend
from common.quant.score import Delta, ImageMatches, match_images, paired_delta

__all__ = ["FAKE_QUANT_NOTE", "SUBSETS", "ScoreOptions", "Scored", "Scorer"]

SUBSETS = ("screen", "full")
FAKE_QUANT_NOTE = (
    "ONNX Runtime runs Q/DQ graphs as fake quantization (dequantized float math): its mAP is a proxy for "
    "TensorRT's INT8/FP8 kernels, not a TensorRT measurement"
)


@dataclass(frozen=True)
class ScoreOptions:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    imgsz: int = 640
    batch_size: int = 1
    workers: int = 2
    replicates: int = 200  # bootstrap replicates per paired difference (0: no interval)
    confidence: float = 0.95


@dataclass
class Scored:
    """One model on one subset: the 12 COCO stats, the per-image matches, the detections."""

    subset: str
    stats: dict[str, float]
    matches: ImageMatches
    rows: np.ndarray
    seconds: float


class Scorer:
    """``run(onnx, subset)`` -> ``Scored``; ``delta(a, b)`` -> paired ΔAP with its bootstrap interval."""

    def __init__(self, dataset: CocoDataset, screen_ids: list[int], opts: ScoreOptions) -> None:
        self.dataset = dataset
        self.opts = opts
        self._ids = {"screen": list(screen_ids), "full": list(dataset.image_ids)}
        self.providers_used: list[str] = []
        self.onnxruntime = ""

    def ids(self, subset: str) -> list[int]:
        return self._ids[subset]

    def runtime(self) -> dict[str, Any]:
        """What scored the evaluations of this process (empty before the first)."""
        return {"providers_used": self.providers_used, "onnxruntime": self.onnxruntime}

    def restore(self, runtime: dict[str, Any]) -> None:
        """Take ``runtime()`` of an earlier run, until this one scores something itself."""
        self.providers_used = list(runtime.get("providers_used") or [])
        self.onnxruntime = str(runtime.get("onnxruntime") or "")

    def check_providers(self, what: str) -> None:
        """Refuse to score on anything but the first requested accelerator: a score's runtime is part of it."""
        import onnxruntime as ort

        accel = [p for p in self.opts.providers if p != "CPUExecutionProvider"]
        if accel and accel[0] not in ort.get_available_providers():
            raise UserError(
                f"{what} needs scoring on {accel[0]}, which this ONNX Runtime {ort.__version__} lacks; a search "
                "scored with it continues here only when every evaluation is already in state.json: finish it on "
                "a machine that has it"
            )

    def run(self, onnx_path: Path, subset: str) -> Scored:
        self.check_providers(f"{onnx_path.name} on the {subset} set")
        t0 = time.perf_counter()
        backend = OrtBackend(str(onnx_path), providers=self.opts.providers, require_accelerator=True)
        try:
            self.providers_used = backend.providers_used
            self.onnxruntime = backend.version
            data = dataclasses.replace(self.dataset, image_ids=self.ids(subset))
            opts = EvalOptions(
                imgsz=self.opts.imgsz,
                batch_size=self.opts.batch_size,
                workers=self.opts.workers,
                progress=False,
                coco_eval=False,
                postprocess="cpu",
            )
            rows = evaluate(backend, data, opts).rows
        finally:
            backend.close()
        scored = self.from_rows(rows, subset)
        scored.seconds = time.perf_counter() - t0
        return scored

    def from_rows(self, rows: np.ndarray, subset: str) -> Scored:
        stats, matches = match_images(self.dataset.coco, rows, self.ids(subset))
        return Scored(subset, stats, matches, rows, 0.0)

    def delta(self, a: Scored, b: Scored, tag: str) -> Delta:
        """AP(a) - AP(b) on the same subset; ``tag`` seeds the bootstrap (same pair, same interval)."""
        if a.subset != b.subset:
            raise ValueError("a paired difference needs both models on the same subset")
        point = a.stats["AP"] - b.stats["AP"]
        seed = zlib.crc32(tag.encode("utf-8"))
        return paired_delta(a.matches, b.matches, point, self.opts.replicates, seed, self.opts.confidence)

    def describe(self) -> dict[str, Any]:
        return {
            "providers_requested": list(self.opts.providers),
            "providers_used": self.providers_used,
            "onnxruntime": self.onnxruntime,
            "screen_images": len(self._ids["screen"]),
            "full_images": len(self._ids["full"]),
            "bootstrap_replicates": self.opts.replicates,
            "confidence": self.opts.confidence,
            "note": FAKE_QUANT_NOTE,
        }
