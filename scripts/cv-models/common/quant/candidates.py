"""Precision candidates: an ONNX in which chosen nodes stay in high precision and the rest is quantized.

Every candidate of one search shares one calibration (``Calibration``): with INT8 the activation
ranges are a calibration cache written once from the calibrated model, and ModelOpt reuses it for
every candidate (its ``calibration_cache_path``: only tensors the cache names are quantized, with the
cached scales; the short calibration pass it still runs is overwritten). ModelOpt 0.47 ignores the
cache for FP8, so an FP8 candidate is calibrated again on the same images with the same method, which
gives the same ranges (the ranges come from the float model, whatever is excluded).

Candidates differ only in ``nodes_to_exclude``. Makers:

- ``ModelOptMaker``: ModelOpt ONNX PTQ through the worker (``common.quant.worker``);
- ``StripMaker``: the float path of the excluded nodes restored in a given quantized model by
  removing their Q/DQ pairs (no ModelOpt: models quantized elsewhere, e.g. on a machine with ModelOpt
  for a search on one without). Given the calibration cache the model was quantized with, its
  ``reproduce`` is ModelOpt's command for the same candidate (nodes_to_exclude + that cache).
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.core.results import atomic_output
from common.quant.groups import exclusion_patterns
from common.quant.qdq_graph import strip_qdq

__all__ = ["CALIBRATION_PASS_METHOD", "Calibration", "CandidateMaker", "ModelOptMaker", "StripMaker"]

# With a cache, ModelOpt still calibrates (on one batch here) before it overwrites the ranges: the
# cheapest method does.
CALIBRATION_PASS_METHOD = "max"


@dataclass(frozen=True)
class Calibration:
    """Where every candidate's ranges come from."""

    name: str  # e.g. entropy-32
    method: str  # entropy | max
    count: int  # images of the calibration tensor used
    calib: Path | None  # the calibration tensor (None: ranges given by an injected model)
    cache: Path | None = None  # int8: the ranges as a calibration cache


class CandidateMaker(Protocol):
    """Writes the candidate that keeps ``exclude_nodes`` in high precision."""

    def make(self, exclude_nodes: Sequence[str], out: Path) -> float:
        """Write ``out``; returns the seconds it took."""
        ...

    def reproduce(self, exclude_nodes: Sequence[str], out: Path, folder: Path) -> str:
        """Write into ``folder`` what making the candidate again needs; return the shell command that does."""
        ...


class ModelOptMaker:
    """ModelOpt ONNX PTQ of ``source`` through a ``ModelOptWorker``, ranges from ``calibration``."""

    def __init__(
        self,
        worker: Any,
        source: Path,
        mode: str,
        calibration: Calibration,
        high_precision_dtype: str,
        eps: Sequence[str],
        batch: int = 1,
    ) -> None:
        self.worker, self.source, self.mode = worker, source, mode
        self.calibration, self.high_precision_dtype = calibration, high_precision_dtype
        self.eps, self.batch = list(eps), batch

    def _request(self, exclude_nodes: Sequence[str], out: Path) -> dict[str, Any]:
        cal = self.calibration
        cached = cal.cache is not None
        return {
            "src": str(self.source.resolve()),
            "out": str(out.resolve()),
            "mode": self.mode,
            "calib": str(cal.calib.resolve()) if cal.calib else None,
            "calib_count": self.batch if cached else cal.count,
            "method": CALIBRATION_PASS_METHOD if cached else cal.method,
            "eps": self.eps,
            "nodes_to_exclude": exclusion_patterns(exclude_nodes),
            "high_precision_dtype": self.high_precision_dtype,
            "cache": str(cal.cache.resolve()) if cached else None,
        }

    def make(self, exclude_nodes: Sequence[str], out: Path) -> float:
        t0 = time.perf_counter()
        with atomic_output(out, suffix=".onnx") as tmp:
            self.worker.call("ptq", **self._request(exclude_nodes, tmp))
        return time.perf_counter() - t0

    def reproduce(self, exclude_nodes: Sequence[str], out: Path, folder: Path) -> str:
        """Copy the calibration into ``folder`` (the cache, or the calibration images used) and return
        ModelOpt's own CLI command that writes the candidate again to ``out``. With a cache the CLI
        calibrates on random data (its --calibration_data_path and --calibration_cache_path exclude each
        other) and then overwrites every activation range with the cached one."""
        import numpy as np

        cal = self.calibration
        if cal.cache is not None:
            spec = (self.source, self.mode, self.high_precision_dtype, self.eps)
            return cached_command(shlex.quote(self.worker.python), spec, cal.cache, exclude_nodes, out, folder)
        args = [self.worker.python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(self.source.resolve())]
        args += ["--quantize_mode", self.mode, "--high_precision_dtype", self.high_precision_dtype]
        if cal.calib is not None:
            images = np.load(cal.calib, mmap_mode="r")
            data = cal.calib
            if cal.count < images.shape[0]:
                data = folder / "calibration_images.npy"
                with atomic_output(data, suffix=".npy") as tmp:
                    np.save(tmp, np.ascontiguousarray(images[: cal.count]))
            args += ["--calibration_data_path", str(data.resolve()), "--calibration_method", cal.method]
        args += ["--calibration_eps", *self.eps, "--output_path", str(out.resolve())]
        if exclude_nodes:
            args += ["--nodes_to_exclude", *exclusion_patterns(exclude_nodes)]
        return " ".join(shlex.quote(a) for a in args)


def cached_command(
    python: str,
    spec: tuple[Path, str, str, Sequence[str]],
    cache: Path,
    exclude_nodes: Sequence[str],
    out: Path,
    folder: Path,
) -> str:
    """ModelOpt's CLI command quantizing ``spec`` = (float source, mode, high precision dtype, calibration
    EPs) with the ranges of ``cache`` (copied to ``folder/calibration.cache``), ``exclude_nodes`` kept out.
    ``python``: the interpreter, already shell-quoted."""
    source, mode, high_precision_dtype, eps = spec
    copy = folder / "calibration.cache"
    if cache.resolve() != copy.resolve():
        shutil.copyfile(cache, copy)
    args = ["-m", "modelopt.onnx.quantization", "--onnx_path", str(source.resolve()), "--quantize_mode", mode]
    args += ["--high_precision_dtype", high_precision_dtype]
    args += ["--calibration_cache_path", str(copy.resolve()), "--calibration_method", CALIBRATION_PASS_METHOD]
    args += ["--calibration_eps", *eps, "--output_path", str(out.resolve())]
    if exclude_nodes:
        args += ["--nodes_to_exclude", *exclusion_patterns(exclude_nodes)]
    return python + " " + " ".join(shlex.quote(a) for a in args)


class StripMaker:
    """The excluded nodes' Q/DQ pairs removed from an already quantized model (no ModelOpt).

    With ``cache`` (the calibration cache ``quantized`` was made with) and ``source`` (its float model),
    ``reproduce`` writes ModelOpt's command for the same candidate; ``python`` is the ModelOpt interpreter
    it names (the script lets $QUANT_PYTHON override it)."""

    def __init__(
        self,
        quantized: Path,
        cache: Path | None = None,
        source: Path | None = None,
        mode: str = "int8",
        python: str = "python",
        eps: Sequence[str] = ("cpu",),
    ) -> None:
        import onnx

        self.quantized, self.cache, self.source, self.mode = quantized, cache, source, mode
        self.python, self.eps = python, list(eps)
        self._model = onnx.load(str(quantized))
        fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in self._model.graph.initializer)
        self.high_precision_dtype = "fp16" if fp16 else "fp32"

    def make(self, exclude_nodes: Sequence[str], out: Path) -> float:
        import onnx

        t0 = time.perf_counter()
        with atomic_output(out, suffix=".onnx") as tmp:
            onnx.save(strip_qdq(self._model, exclude_nodes), str(tmp))
        return time.perf_counter() - t0

    def reproduce(self, exclude_nodes: Sequence[str], out: Path, folder: Path) -> str:
        what = (
            f"# {out.name}: {self.quantized} with the Q/DQ pairs feeding the {len(exclude_nodes)} nodes of "
            "nodes_to_exclude.txt removed (common.quant.qdq_graph.strip_qdq)"
        )
        if self.cache is None or self.source is None:
            return what + "; no ModelOpt command made it (no calibration cache beside the given model)"
        python = f'"${{QUANT_PYTHON:-{self.python}}}"'
        spec = (self.source, self.mode, self.high_precision_dtype, self.eps)
        return (
            what + "; ModelOpt makes the same candidate from the calibration cache it was quantized with "
            "(set QUANT_PYTHON to the ModelOpt environment's python):\n"
            + cached_command(python, spec, self.cache, exclude_nodes, out, folder)
        )
