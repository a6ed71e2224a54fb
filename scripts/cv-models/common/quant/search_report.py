"""What a precision search leaves in its run folder: summary.md with the verdict line,
``layer-sensitivity-report.json`` (the AutoQuantize sweeps' schema), and ``best/`` (the chosen ONNX,
nodes_to_exclude.txt, the quantize command, metrics.json, the engine when one was built)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.core.results import atomic_write_json, atomic_write_text
from common.quant.search import SearchResult
from common.quant.search_eval import FAKE_QUANT_NOTE
from common.quant.search_session import Record, SearchOptions, Session

__all__ = ["RunInfo", "verdict", "write_best", "write_sensitivity_report", "write_summary"]

NO_ENGINE_NOTE = (
    "No TensorRT engine ran here: latency is not measured; INT8 MAC share and precision boundaries are "
    "graph proxies for it"
)


@dataclass
class RunInfo:
    """Facts about the run that the reports state."""

    source: Path
    mode: str
    high_precision_dtype: str
    groups_spec: str
    calibration: dict[str, Any]
    scoring: dict[str, Any]
    versions: dict[str, str]
    command: str
    group_macs: dict[str, int] = field(default_factory=dict)
    fp16_source: str = "ModelOpt AutoCast"
    proxy: dict[str, Any] | None = None
    wall_seconds: float = 0.0  # this run
    total_seconds: float = 0.0  # the whole search, earlier runs before --resume included
    warnings: list[str] = field(default_factory=list)
    engine: dict[str, Any] | None = None  # best/'s TensorRT build (builder's facts), when one ran


def _d(rec: Record) -> str:
    d = rec.vs_fp16
    return f"ΔmAP {d.delta:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"


def verdict(res: SearchResult, opts: SearchOptions, total_groups: int) -> str:
    """The one honest line: what was found, with its evidence."""
    if res.best is not None:
        b = res.best
        what = "INT8-all" if not b.excluded else f"{len(b.excluded)} of {total_groups} groups kept in FP16"
        ev = f"{_d(b)} vs FP16 on the full set ({b.stats['AP']:.4f} mAP), INT8 on {b.share:.0%} of conv MACs"
        if b.share < opts.worthwhile_share:
            return (
                f"VERDICT: not worthwhile -- the only candidates within the {opts.budget} budget keep INT8 on "
                f"{b.share:.0%} of conv MACs (< {opts.worthwhile_share:.0%}, the least that reaches 1.25x under an "
                f"ideal 2x INT8 speed-up); best: {what}, {ev}"
            )
        return f"VERDICT: within budget ({opts.budget}) -- {what}, {ev} (ORT fake-quant proxy, no latency measured)"
    tail = f"; the search stopped: {res.stopped}" if res.stopped else ""
    c = res.closest
    if c is None:
        return f"VERDICT: no candidate within the {opts.budget} budget was found{tail}"
    kept = "INT8-all" if not c.excluded else f"{len(c.excluded)} groups kept in FP16"
    return (
        f"VERDICT: no candidate within the {opts.budget} budget -- closest: {kept}, {_d(c)} vs FP16 on the "
        f"{c.subset} set, INT8 on {c.share:.0%} of conv MACs{tail}"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _ranking_lines(res: SearchResult, info: RunInfo) -> list[str]:
    total = sum(info.group_macs.values()) or 1
    rows = [
        (
            i,
            r.group.label,
            f"{r.gain.delta:+.4f}",
            f"[{r.gain.low:+.4f}, {r.gain.high:+.4f}]",
            f"{info.group_macs.get(r.group.name, 0) / total:.1%}",
        )
        for i, r in enumerate(res.ranking, 1)
    ]
    lines = _table(("rank", "group", "gain vs INT8-all", "95% CI", "conv MACs"), rows)
    if res.skipped_groups:
        lines += ["", f"Not quantized by ModelOpt (nothing to keep in FP16): {', '.join(res.skipped_groups)}."]
    if info.proxy:
        p = info.proxy
        rho = "n/a" if p.get("spearman") is None else f"{p['spearman']:+.3f}"
        lines += [
            "",
            f"Proxy ranking {p.get('file')}: Spearman {rho} over {p['groups_compared']} groups; "
            f"top 5 measured {p['top5_measured']}, top 5 proxy {p['top5_proxy']}.",
        ]
    return lines


def _eval_lines(records: Sequence[Record]) -> list[str]:
    rows = [
        (
            r.index,
            r.phase,
            r.subset,
            len(r.excluded),
            f"{r.stats['AP']:.4f}",
            _d(r),
            f"{r.share:.1%}",
            r.facts.get("boundaries", "-"),
            "yes" if r.within else "no",
        )
        for r in records
    ]
    head = ("eval", "phase", "subset", "groups in FP16", "mAP", "vs FP16 [95% CI]", "INT8 MACs*", "bounds*", "ok")
    return _table(head, rows)


def write_summary(folder: Path, res: SearchResult, session: Session, info: RunInfo) -> Path:
    opts = session.opts
    fp16 = {s: session.fp16(s).stats["AP"] for s in ("screen", "full") if _has_ref(session, s)}
    lines = [
        f"# Precision search: {info.source.name}, {info.mode.upper()} within {opts.budget} mAP of FP16",
        "",
        verdict(res, opts, len(session.groups)),
        "",
        f"> {FAKE_QUANT_NOTE}. {NO_ENGINE_NOTE} (columns marked *).",
        "",
        *[f"> warning: {w}\n" for w in info.warnings],
        "## References",
        "",
        *[f"- FP16 reference ({info.fp16_source}) on the {s} set: mAP {ap:.4f}" for s, ap in fp16.items()],
        *[
            f"- INT8-all, calibration {r.calibration}: mAP {r.stats['AP']:.4f}, {_d(r)} (screen)"
            for r in res.calibrations
        ],
        f"- chosen calibration: {session.calibration}; {info.calibration.get('note', '')}",
        f"- candidate maker: {info.calibration.get('candidate_maker', 'ModelOptMaker')}",
        *_runtime_lines(res),
        *_engine_lines(info.engine),
        "",
        "## Ranking: leave one group out (screen)",
        "",
        *_ranking_lines(res, info),
        "",
        "## Search path",
        "",
        *[f"- {p}" for p in res.path],
        "",
        *_eval_lines(session.records),
        "",
        "## Run",
        "",
        f"- command: `{info.command}`",
        f"- groups: {info.groups_spec} ({len(session.groups)}); high precision: {info.high_precision_dtype}",
        _scoring_line(info.scoring),
        f"- versions: {info.versions}",
        f"- evaluations: {session.evals_used} of --max-evals {opts.max_evals}; wall time {info.total_seconds:.1f} s"
        + (f" (this run {info.wall_seconds:.1f} s, after --resume)" if session.state.loaded else ""),
        "",
    ]
    return atomic_write_text(folder / "summary.md", "\n".join(lines))


def _scoring_line(sc: dict[str, Any]) -> str:
    return (
        f"- scoring: onnxruntime {sc.get('onnxruntime')} on {', '.join(sc.get('providers_used') or [])}; screen "
        f"{sc.get('screen_images')} / full {sc.get('full_images')} images; {sc.get('bootstrap_replicates')} "
        f"bootstrap replicates ({sc.get('confidence', 0.95):.0%} intervals)"
    )


def _engine_lines(engine: dict[str, Any] | None) -> list[str]:
    if not engine:
        return []
    if not engine.get("ok"):
        return [f"- best/ TensorRT build ({engine.get('api')}): FAILED -- {engine.get('error')}"]
    layers = engine.get("layer_summary") or {}
    return [
        f"- best/ TensorRT build ({engine.get('api')}): {engine.get('engine')} in {engine.get('seconds')} s; "
        f"{layers.get('num_layers')} network layers, outputs by dtype {layers.get('layer_outputs_by_dtype')} "
        "(details in best/metrics.json and the engine's .json)"
    ]


def _runtime_lines(res: SearchResult) -> list[str]:
    rc = res.runtime_check
    if not rc:
        return []
    d = rc["int8_all_fp16_minus_fp32"]
    verdict_ = "suspect" if rc["suspect"] else "consistent"
    return [
        f"- runtime check: INT8-all with FP16 minus FP32 high precision {d['delta']:+.4f} "
        f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] on the screen ({verdict_})"
    ]


def _has_ref(session: Session, subset: str) -> bool:
    return any(r.subset == session.subset(subset) for r in session.records)


def write_sensitivity_report(folder: Path, res: SearchResult, session: Session, info: RunInfo) -> Path:
    """layer-sensitivity-report.json in the schema of AutoQuantize sensitivity sweeps, one row per group (measured,
    not a proxy)."""
    rows = [
        {
            "layer": r.group.name,
            "num_bits": 8,
            "sensitivity": r.gain.delta,
            "size_cost": info.group_macs.get(r.group.name, 0),
            "ci": [r.gain.low, r.gain.high],
            "label": r.group.label,
            "onnx_nodes": len(r.group.nodes),
        }
        for r in sorted(res.ranking, key=lambda x: -x.gain.delta)
    ]
    best = res.best
    payload = {
        "scheme": {
            "name": "leave-one-group-out",
            "auto_quantize_bits": None,
            "auto_quantize_method": "measured paired COCO mAP gain (ONNX Runtime fake quantization)",
            "auto_quantize_score_size": len(session.scorer.ids("screen")),
            "coverage_mode": "full",
            "coverage_fraction": 1.0,
            "quant_formats": [info.mode.upper()],
        },
        "model": {"id": str(info.source)},
        "dataset": info.scoring,
        "quantization": {"mode": info.mode, "high_precision_dtype": info.high_precision_dtype, **info.calibration},
        "run_config": {"command": info.command, "groups": info.groups_spec, "size_cost_unit": "conv MACs"},
        "autoquant_state": {
            "constraints": {"map_drop_budget_vs_fp16": session.opts.budget},
            "score": best.vs_fp16.delta if best else None,
            "is_satisfied": best is not None,
        },
        "layer_sensitivity": rows,
        "proxy_agreement": info.proxy,
    }
    return atomic_write_json(folder / "layer-sensitivity-report.json", payload)


def write_best(
    folder: Path,
    res: SearchResult,
    session: Session,
    builder: Callable[[Path, Path], dict[str, Any]] | None,
) -> dict[str, Any] | None:
    """best/: model.onnx, nodes_to_exclude.txt, quantize_command.sh (+ the calibration it needs),
    metrics.json, the engine."""
    b = res.best
    if b is None:
        return None
    out = folder / "best"
    src, _ = session.ensure_onnx(b.excluded, b.calibration)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out / "model.onnx")
    atomic_write_text(out / "nodes_to_exclude.txt", "".join(f"{n}\n" for n in b.excluded_nodes))
    command = session.makers[b.calibration].reproduce(b.excluded_nodes, out / "model.requantized.onnx", out)
    script = "#!/usr/bin/env bash\n# Writes best/model.requantized.onnx, the same candidate as best/model.onnx.\n"
    atomic_write_text(out / "quantize_command.sh", script + command + "\n")
    engine = builder(out / "model.onnx", out / "model.engine") if builder is not None else None
    metrics = {
        "candidate": b.cid,
        "kept_groups": list(b.excluded),
        "excluded_nodes": len(b.excluded_nodes),
        "calibration": b.calibration,
        "full_set": b.stats,
        "delta_vs_fp16": b.vs_fp16.as_dict(),
        "fp16_full_set": session.fp16("full").stats,
        "proxies": b.facts,
        "engine": engine,
        "latency": None,
        "notes": [FAKE_QUANT_NOTE, NO_ENGINE_NOTE],
    }
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
