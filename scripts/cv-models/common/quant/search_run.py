"""A whole precision-search run: references, calibrations, the search, best/, reports and plots.

``run(config, dataset, screen_ids)`` is what ``search_precision.py`` calls. ModelOpt runs in its own
environment through a worker process (``common.quant.worker_client``); candidates are scored here
with ONNX Runtime. Pass ``fp16_onnx`` and ``int8_onnx`` (quantized INT8-all models made elsewhere,
e.g. by ``common.quant.search_references``) and no ModelOpt is needed at all: each INT8-all is one
calibration of the sweep (named after its file), and candidates restore their groups' float path by
removing Q/DQ pairs. A calibration cache beside a given model (``<name>.cache`` beside
``<name>.onnx``) goes into best/, whose quantize command then reproduces the candidate with ModelOpt.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.core.errors import UserError
from common.core.results import run_dir, sha256_file
from common.data.coco import CocoDataset
from common.quant.calib import load_calib_tensor
from common.quant.candidates import CandidateMaker, ModelOptMaker, StripMaker
from common.quant.groups import Group, make_groups
from common.quant.modelopt_calibration import calibrations, make_fp16
from common.quant.presets import input_spec
from common.quant.proxy import agreement, group_scores, read_proxy
from common.quant.qdq_graph import STRIP_RULES, candidate_facts, conv_macs
from common.quant.search import SearchResult, min_evals, run_search
from common.quant.search_eval import ScoreOptions, Scorer
from common.quant.search_plots import write_plots
from common.quant.search_report import RunInfo, verdict, write_best, write_sensitivity_report, write_summary
from common.quant.search_session import Record, SearchOptions, Session
from common.quant.search_state import STATE_FILE, SearchState
from common.quant.worker_client import WorkerPool

__all__ = ["Outcome", "RunConfig", "check_config", "given_calibrations", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    source: Path
    out: Path | None = None  # default: tmp/search/<timestamp>
    calib: Path | None = None
    sweep: tuple[tuple[str, int], ...] = (("entropy", 0), ("max", 0))  # (method, images; 0 = all)
    calibration_eps: tuple[str, ...] = ("cpu",)
    high_precision_dtype: str = "fp16"
    groups: str = "yolov10"
    quant_python: str = ""
    quant_workers: int = 1  # ModelOpt workers: candidates of the ranking are made this many at a time
    proxy: Path | None = None
    trt_api: str = "tensorrt-rtx"
    fp16_onnx: Path | None = None
    int8_onnx: tuple[Path, ...] = ()  # INT8-all (FP8-all) models made elsewhere: one calibration each
    resume: bool = False
    progress: bool = True
    command: str = ""
    search: SearchOptions = field(default_factory=SearchOptions)
    score: ScoreOptions = field(default_factory=ScoreOptions)


@dataclass
class Outcome:
    result: SearchResult
    session: Session
    verdict: str
    wall_seconds: float  # this run
    total_seconds: float  # the whole search, earlier runs before --resume included
    best_metrics: dict[str, Any] | None


def _ids_hash(ids: list[int]) -> str:
    return hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:16]


def _fingerprint(cfg: RunConfig, groups: list[Group], scorer: Scorer, versions: dict[str, str]) -> dict[str, Any]:
    """What an evaluation depends on; a resumed search must match it."""
    layout = hashlib.sha1(json.dumps([[g.name, list(g.nodes)] for g in groups]).encode()).hexdigest()[:16]
    return {
        "source_sha256": sha256_file(cfg.source),
        "calib_sha256": sha256_file(cfg.calib) if cfg.calib else None,
        "fp16_onnx_sha256": sha256_file(cfg.fp16_onnx) if cfg.fp16_onnx else None,
        "int8_onnx_sha256": {n: sha256_file(p) for n, (p, _) in given_calibrations(cfg.int8_onnx).items()} or None,
        "mode": cfg.search.mode,
        "high_precision_dtype": cfg.high_precision_dtype,
        "groups": layout,
        "screen_ids": _ids_hash(scorer.ids("screen")),
        "full_ids": _ids_hash(scorer.ids("full")),
        "providers": list(cfg.score.providers),
        "imgsz": cfg.score.imgsz,
        "modelopt": versions.get("modelopt"),
        "strip_rules": STRIP_RULES,  # how candidates are cut from an INT8-all model
    }


def given_calibrations(int8_onnx: tuple[Path, ...]) -> dict[str, tuple[Path, Path | None]]:
    """Each given INT8-all model by calibration name (its file name without .onnx), with the calibration
    cache beside it (``<name>.cache``) when there is one."""
    out: dict[str, tuple[Path, Path | None]] = {}
    for path in int8_onnx:
        name = path.name.removesuffix(".onnx")
        if name in out:
            raise UserError(f"--int8-onnx: {out[name][0]} and {path} would both be calibration {name!r}; rename one")
        cache = path.with_name(name + ".cache")
        out[name] = (path, cache if cache.is_file() else None)
    return out


def check_config(cfg: RunConfig, model: Any, groups: list[Group] | None) -> int:
    """Cheap checks before any ModelOpt call or evaluation; returns the model's static batch (1 if dynamic).
    ``groups`` None: the reference phase alone (no search budget to check)."""
    _, shape = input_spec(model)
    batch = shape[0] if shape and shape[0] else 1
    if not cfg.int8_onnx:
        if cfg.calib is None:
            raise UserError("--calib is required (make one with make_calib_npy.py), unless --int8-onnx is given")
        hw = (shape[2], shape[3]) if len(shape) == 4 else None
        n = load_calib_tensor(cfg.calib, expected_hw=hw, expected_batch=batch).shape[0]
        for _, count in cfg.sweep:
            if count > n or count % batch:
                raise UserError(
                    f"--calib-counts {count}: the calibration tensor has {n} images; use 0 (all) or a multiple "
                    f"of the batch size {batch} up to {n}"
                )
    if groups is None:
        return batch
    sweep = len(given_calibrations(cfg.int8_onnx)) or len(cfg.sweep)
    need = min_evals(sweep, len(groups))
    if cfg.search.max_evals < need:
        raise UserError(
            f"--max-evals {cfg.search.max_evals} is too small for {len(groups)} groups and {sweep} calibration(s): "
            f"a search needs at least {need}; raise --max-evals or use coarser --groups"
        )
    return batch


def _builder(cfg: RunConfig) -> tuple[Callable[[Path, Path], dict[str, Any]] | None, str | None]:
    """The TensorRT builder for best/ (and every candidate with --build all), or why there is none."""
    if cfg.search.build == "none":
        return None, "--build none"
    from common.trt.api import load_api
    from common.trt.build import BuildOptions, build_or_reuse

    try:
        api = load_api(cfg.trt_api)
    except UserError as exc:
        return None, str(exc)

    def build(onnx: Path, engine: Path) -> dict[str, Any]:
        try:
            res = build_or_reuse(onnx, engine, BuildOptions(), api, use_timing_cache=False, verbosity="error")
        except Exception as exc:  # a graph TensorRT refuses is a finding, not a crash
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return {"ok": False, "api": api.describe(), "error": first[:500]}
        meta = res.metadata
        return {
            "ok": True,
            "api": api.describe(),
            "engine": str(res.engine_path),
            "seconds": meta.get("build_seconds"),
            "layer_summary": meta.get("layer_summary"),
        }

    return build, None


def _makers(
    cfg: RunConfig, worker: WorkerPool | None, batch: int
) -> tuple[dict[str, CandidateMaker], dict[str, Any], CandidateMaker | None]:
    """Candidate makers per calibration, what the reports say about the calibration, and the maker of
    INT8-all with float32 high precision (the runtime check), when ModelOpt makes the candidates."""
    if cfg.int8_onnx:
        return _strip_makers(cfg)
    assert worker is not None and cfg.calib is not None
    cals = calibrations(worker, cfg.source, cfg.calib, cfg.search.mode, cfg.sweep, cfg.calibration_eps, cfg.out)
    hp, eps = cfg.high_precision_dtype, cfg.calibration_eps
    makers: dict[str, CandidateMaker] = {
        c.name: ModelOptMaker(worker, cfg.source, cfg.search.mode, c, hp, eps, batch) for c in cals
    }
    note = (
        "every candidate reuses the chosen calibration's ranges (ModelOpt calibration_cache_path)"
        if cfg.search.mode == "int8"
        else "ModelOpt ignores calibration caches for FP8: every candidate is calibrated again on the same images "
        "with the same method (the ranges come from the float model, so they are the same)"
    )
    info = {
        "candidate_maker": "ModelOptMaker",
        "calibration_tensor": str(cfg.calib),
        "sweep": [c.name for c in cals],
        "note": note,
    }
    check = None
    if hp == "fp16":
        check = {c.name: ModelOptMaker(worker, cfg.source, cfg.search.mode, c, "fp32", eps, batch) for c in cals}
    return makers, info, check  # type: ignore[return-value]


def _strip_makers(cfg: RunConfig) -> tuple[dict[str, CandidateMaker], dict[str, Any], None]:
    """One StripMaker calibration per given INT8-all model (no ModelOpt runs)."""
    given = given_calibrations(cfg.int8_onnx)
    makers: dict[str, CandidateMaker] = {
        name: StripMaker(path, cache, cfg.source, cfg.search.mode, cfg.quant_python or "python", cfg.calibration_eps)
        for name, (path, cache) in given.items()
    }
    note = (
        "ranges of the given quantized models; candidates remove the excluded nodes' Q/DQ pairs from the chosen "
        "one (StripMaker, no ModelOpt)"
    )
    info = {
        "candidate_maker": "StripMaker",
        "given_int8_onnx": {name: str(path) for name, (path, _) in given.items()},
        "calibration_caches": {name: str(cache) for name, (_, cache) in given.items() if cache is not None},
        "sweep": list(given),
        "note": note,
    }
    return makers, info, None


def _runtime_check(session: Session, check: dict[str, CandidateMaker] | None) -> dict[str, Any] | None:
    """INT8-all with FP16 vs FP32 high precision on the screen: this runtime's FP16 Q/DQ path should agree.
    Suspect: a difference larger than the budget whose interval excludes 0."""
    base = session.int8_all("screen")
    if not check or base is None:
        return None
    path = session.folder / "references" / f"int8-all-fp32-{session.calibration}.onnx"
    if not path.is_file():
        check[session.calibration].make([], path)
    ref = session.scored_reference(f"int8-fp32-{session.calibration}", "screen", path)
    d = session.scorer.delta(base, ref, "runtime-check")
    systematic = d.replicates > 0 and (d.low > 0 or d.high < 0)  # the interval excludes 0
    return {"int8_all_fp16_minus_fp32": d.as_dict(), "suspect": systematic and abs(d.delta) > session.opts.budget}


def _on_record(cfg: RunConfig) -> tuple[Callable[[Record, int], None], Any]:
    from tqdm import tqdm

    bar = tqdm(total=cfg.search.max_evals, desc="precision search", unit="eval", disable=not cfg.progress)

    def report(rec: Record, used: int) -> None:
        bar.update(1)
        mark = "within" if rec.within else "outside"
        bar.write(
            f"[{used}] {rec.phase:<11} {rec.subset:<6} FP16 groups {len(rec.excluded):>2}  mAP {rec.stats['AP']:.4f}  "
            f"Δ {rec.vs_fp16.delta:+.4f} [{rec.vs_fp16.low:+.4f}, {rec.vs_fp16.high:+.4f}]  INT8 MACs {rec.share:.0%}  "
            f"{mark}{'  (from state)' if rec.resumed else ''}",
            file=sys.stderr,
        )

    return report, bar


def run(cfg: RunConfig, dataset: CocoDataset, screen_ids: list[int]) -> Outcome:
    """The run described in the module docstring; writes everything under ``cfg.out`` (default
    ``tmp/search/<timestamp>``, made once the cheap checks pass). A run that fails before its first
    evaluation leaves no folder behind."""
    import onnx

    t0 = time.perf_counter()
    model = onnx.load(str(cfg.source))
    groups = make_groups(model, cfg.groups)
    batch = check_config(cfg, model, groups)
    proxy = read_proxy(cfg.proxy) if cfg.proxy else None
    fresh = cfg.out is None or not cfg.out.exists()
    cfg = replace(cfg, out=cfg.out or run_dir("search"))
    try:
        return _run(cfg, dataset, screen_ids, model, groups, batch, proxy, t0)
    except UserError:
        if fresh and not (cfg.out / STATE_FILE).exists():
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise


def _run(
    cfg: RunConfig,
    dataset: CocoDataset,
    screen_ids: list[int],
    model: Any,
    groups: list[Group],
    batch: int,
    proxy: dict[str, float] | None,
    t0: float,
) -> Outcome:
    macs = conv_macs(model)
    scorer = Scorer(dataset, screen_ids, cfg.score)
    needs_modelopt = not cfg.int8_onnx or cfg.fp16_onnx is None
    with contextlib.ExitStack() as stack:
        worker = None
        if needs_modelopt:
            worker = stack.enter_context(WorkerPool(cfg.quant_python, cfg.out / "modelopt.log", cfg.quant_workers))
        versions = dict(worker.versions) if worker else {}
        state = SearchState.open(cfg.out, _fingerprint(cfg, groups, scorer, versions), cfg.resume)
        scorer.restore(state.meta.get("scoring", {}))
        fp16 = cfg.fp16_onnx or make_fp16(worker, cfg.source, cfg.calib, cfg.calibration_eps, cfg.out)
        makers, cal_info, check = _makers(cfg, worker, batch)
        builder, no_build = _builder(cfg)
        report, bar = _on_record(cfg)
        facts = functools.partial(candidate_facts, macs=macs)
        session = Session(cfg.out, groups, scorer, state, cfg.search, fp16, facts, builder, report)
        session.parallel = cfg.quant_workers
        stack.callback(session.close)
        with bar:
            result = run_search(session, makers)
        result.runtime_check = _runtime_check(session, check)
        best = write_best(cfg.out, result, session, builder)
    info = _info(cfg, session, result, cal_info, versions, macs, proxy, no_build)
    info.engine = best.get("engine") if best else None
    info.wall_seconds = time.perf_counter() - t0
    state.save()
    info.total_seconds = state.elapsed
    return _finish(cfg, session, result, info, best)


def _info(
    cfg: RunConfig,
    session: Session,
    result: SearchResult,
    cal_info: dict[str, Any],
    versions: dict[str, str],
    macs: dict[str, int],
    proxy: dict[str, float] | None,
    no_build: str | None,
) -> RunInfo:
    group_macs = {g.name: sum(macs.get(n, 0) for n in g.nodes) for g in session.groups}
    info = RunInfo(
        source=cfg.source,
        mode=cfg.search.mode,
        high_precision_dtype=cfg.high_precision_dtype,
        groups_spec=cfg.groups,
        calibration=cal_info,
        scoring=session.scorer.describe(),
        versions={**versions, "onnxruntime (scoring)": session.scorer.onnxruntime},
        command=cfg.command,
        group_macs=group_macs,
        fp16_source=str(cfg.fp16_onnx) if cfg.fp16_onnx else "ModelOpt AutoCast",
    )
    if proxy is not None:
        measured = [(r.group.name, r.gain.delta) for r in result.ranking]
        info.proxy = {"file": str(cfg.proxy), **agreement(measured, group_scores(proxy))}
    if no_build and cfg.search.build != "none":
        info.warnings.append(f"no TensorRT build: {no_build}")
    rc = result.runtime_check
    if rc and rc["suspect"]:
        d = rc["int8_all_fp16_minus_fp32"]["delta"]
        info.warnings.append(
            f"this ONNX Runtime scores INT8-all with FP16 high precision {d:+.4f} mAP away from FP32 high precision "
            "on the screen: its FP16 Q/DQ path is suspect; rerun with --high-precision-dtype fp32 or another runtime"
        )
    return info


def _finish(cfg: RunConfig, session: Session, result: SearchResult, info: RunInfo, best: Any) -> Outcome:
    line = verdict(result, cfg.search, len(session.groups))
    write_summary(cfg.out, result, session, info)
    write_sensitivity_report(cfg.out, result, session, info)
    plots = write_plots(cfg.out, result, session.records, cfg.search.budget, session.calibration)
    if not plots:
        info.warnings.append("matplotlib is not installed: no plots")
        write_summary(cfg.out, result, session, info)
    for w in info.warnings:
        log.warning("warning: %s", w)
    return Outcome(result, session, line, info.wall_seconds, info.total_seconds, best)
