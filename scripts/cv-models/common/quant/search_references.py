"""A search's reference phase alone, for a search that runs on a machine without ModelOpt.

``make_references(config)`` writes into the run folder what a search makes with ModelOpt before it
scores anything: the FP16 reference (``references/fp16.onnx``, AutoCast) and, for each calibration
of the sweep, the calibration cache and the INT8-all (FP8-all) model beside it
(``calibration/<name>.cache``, ``calibration/<name>.onnx``). A later search elsewhere takes them as
``--fp16-onnx`` and ``--int8-onnx``: each INT8-all becomes a calibration of its sweep, named after
the file, and the cache beside it lets best/quantize_command.sh reproduce the chosen candidate with
ModelOpt.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from common.core.results import sha256_file
from common.quant.modelopt_calibration import calibrations, int8_all_models, make_fp16
from common.quant.search_run import RunConfig, check_config
from common.quant.worker_client import WorkerPool

__all__ = ["References", "make_references"]


@dataclass(frozen=True)
class References:
    fp16: Path
    int8_all: tuple[Path, ...]
    caches: tuple[Path, ...]  # beside the INT8-all models (none for FP8)
    modelopt: str  # its version

    def files(self) -> list[Path]:
        return [self.fp16, *self.int8_all, *self.caches]

    def flags(self) -> str:
        """The search flags that use these references instead of ModelOpt."""
        return shlex.join(["--fp16-onnx", str(self.fp16), "--int8-onnx", *map(str, self.int8_all)])

    def listing(self) -> str:
        """One line per file: its size and sha256."""
        return "\n".join(f"{p}  {p.stat().st_size} bytes  sha256 {sha256_file(p)}" for p in self.files())


def make_references(cfg: RunConfig) -> References:
    """The references of ``cfg`` in ``cfg.out`` (made once: a rerun on the same folder keeps them)."""
    import onnx

    assert cfg.out is not None and cfg.calib is not None
    batch = check_config(cfg, onnx.load(str(cfg.source), load_external_data=False), None)
    with WorkerPool(cfg.quant_python, cfg.out / "modelopt.log", 1) as worker:
        eps = cfg.calibration_eps
        fp16 = make_fp16(worker, cfg.source, cfg.calib, eps, cfg.out)
        cals = calibrations(worker, cfg.source, cfg.calib, cfg.search.mode, cfg.sweep, eps, cfg.out)
        hp = cfg.high_precision_dtype
        models = int8_all_models(worker, cfg.source, cfg.search.mode, cals, hp, eps, batch, cfg.out)
        version = worker.versions.get("modelopt", "")
    caches = tuple(c.cache for c in cals if c.cache is not None)
    return References(fp16, tuple(models), caches, version)
