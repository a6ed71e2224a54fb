"""Compare evaluation runs: metrics.json files (any machine) -> summary.md, summary.json, summary.png.

A *row* is one metrics.json (one backend x one model). Rows are read from files or run
folders; a folder written by ``validate_e2e.py`` also carries ``status.json`` beside each
metrics.json (backend key, model label, precision) and skipped/failed backends, which are
listed as not run.

- ΔAP is against the *reference row*: ``--reference`` (a row label), else the baseline
  model on ORT CUDA, else on ORT CPU, else the first row.
- Detection parity (``common.report.parity``) compares each row's detections.json with the
  detections of the reference backend on the *same model file* (ORT CUDA, else ORT CPU) and
  judges it with the thresholds of the model's precision.
- Warnings: rows measured on different GPUs, rows of one model name whose sha256 differ,
  rows over different image counts.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.core.errors import UserError
from common.core.results import (
    METRICS_SCHEMA_VERSION,
    METRICS_SCHEMA_VERSIONS_READ,
    atomic_write_json,
    atomic_write_text,
    file_digests,
    image_ids_sha256,
    stamp,
)
from common.model.onnx_facts import precision_of
from common.report.compare_render import matplotlib_available, plot, render_markdown
from common.report.parity import Thresholds, detection_parity, judge, load_detections, thresholds_for

__all__ = [
    "BACKEND_ORDER",
    "PROVIDER_KEYS",
    "REFERENCE_ORDER",
    "SUMMARY_FILES",
    "SUMMARY_SCHEMA_VERSION",
    "Collection",
    "NotRun",
    "ParityOptions",
    "Row",
    "backend_key",
    "collect",
    "compute_parity",
    "image_set",
    "latency_timing",
    "load_metrics",
    "parity_reference",
    "pick_reference",
    "precision_of",
    "runner_key",
    "same_images",
    "summarize",
    "verdict",
    "warnings_for",
]

SUMMARY_SCHEMA_VERSION = 1
REFERENCE_ORDER: tuple[str, ...] = ("ort-cuda", "ort-cpu")
BACKEND_ORDER: tuple[str, ...] = ("ort-cpu", "ort-cuda", "trt", "trt-rtx", "ort-trt-ep", "ort-rtx-ep")
PROVIDER_KEYS = {
    "CPUExecutionProvider": "ort-cpu",
    "CUDAExecutionProvider": "ort-cuda",
    "TensorrtExecutionProvider": "ort-trt-ep",
    "NvTensorRTRTXExecutionProvider": "ort-rtx-ep",
}
_REQUIRED = (
    ("schema_version",),
    ("model_path",),
    ("metrics", "mAP_50_95"),
    ("metrics", "mAP_50"),
    ("metrics", "num_images"),
    ("latency", "median_ms"),
    ("latency", "p99_ms"),
    ("latency", "throughput_fps"),
    ("run", "backend"),
)


# ----------------------------------------------------------------------------- reading


def load_metrics(path: Path) -> dict[str, Any]:
    """A metrics.json of the schema ``common.eval.cli.run_eval`` writes; UserError naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"metrics file not found: {path}") from None
    except (OSError, ValueError) as exc:
        msg = f"{path} is not readable JSON ({exc}); pass metrics.json files written by the evaluators"
        raise UserError(msg) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a metrics.json (top level is {type(data).__name__}, expected an object)")
    version = data.get("schema_version")
    if version not in METRICS_SCHEMA_VERSIONS_READ:
        raise UserError(
            f"{path}: metrics schema_version {version!r}, this tool reads {METRICS_SCHEMA_VERSIONS_READ}; pass "
            "metrics.json files written by eval_yolov10m_onnx_coco.py / eval_yolov10m_trt_coco.py (or rerun them)"
        )
    for keys in _REQUIRED:
        node: Any = data
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise UserError(
                    f"{path}: not a metrics.json of schema {METRICS_SCHEMA_VERSION}: missing key {'.'.join(keys)!r}"
                )
            node = node[k]
        if keys[0] in ("metrics", "latency") and not _is_number(node):
            raise UserError(
                f"{path}: {'.'.join(keys)} is {json.dumps(node)}, not a number; was the run interrupted? "
                "rerun the evaluator or leave this file out"
            )
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def runner_key(payload: Mapping[str, Any]) -> str:
    """ort-cpu | ort-cuda | ort-trt-ep | ort-rtx-ep | trt | trt-rtx | <backend name>."""
    meta = payload.get("run", {}).get("backend") or {}
    name = str(meta.get("backend") or "unknown")
    if name == "onnxruntime":
        used = meta.get("providers_used") or []
        return PROVIDER_KEYS.get(used[0], "ort") if used else "ort"
    return {"tensorrt": "trt", "tensorrt-rtx": "trt-rtx"}.get(name, name)


def _gpu_name(payload: Mapping[str, Any]) -> str | None:
    gpu = payload.get("run", {}).get("gpu")
    if isinstance(gpu, dict):
        return gpu.get("name")
    return None


@dataclass
class Row:
    """One metrics.json. ``runner`` is the row key (ort-cpu, trt-rtx, ...: which runtime and how it was driven);
    summary.json keeps calling it "backend"."""

    label: str
    runner: str
    precision: str
    model: str  # model label (validate) or model file stem
    model_sha256: str | None
    metrics_path: Path
    payload: dict[str, Any]
    detections_path: Path | None = None
    runtime_double: bool = False
    parity: dict[str, Any] | None = None
    tensor_errors: list[dict[str, Any]] | None = None
    delta_ap: float | None = None
    display: str = ""  # the backend cell of the table

    @property
    def map50_95(self) -> float:
        return float(self.payload["metrics"]["mAP_50_95"])

    @property
    def latency(self) -> dict[str, Any]:
        return self.payload["latency"]

    @property
    def gpu(self) -> str | None:
        return _gpu_name(self.payload)

    @property
    def host(self) -> str | None:
        return (self.payload.get("run", {}).get("host") or {}).get("hostname")

    @property
    def num_images(self) -> int:
        return int(self.payload["metrics"]["num_images"])


@dataclass
class NotRun:
    runner: str
    model: str
    precision: str
    status: str  # skipped | failed
    reason: str

    def to_dict(self) -> dict[str, str]:
        """summary.json's shape (the row key stays "backend" there)."""
        return {
            "backend": self.runner,
            "model": self.model,
            "precision": self.precision,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass
class Collection:
    rows: list[Row] = field(default_factory=list)
    not_run: list[NotRun] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    baseline_model: str | None = None  # model label of the baseline (validate runs)
    tensor_errors: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


def _read_status(folder: Path) -> dict[str, Any] | None:
    p = folder / "status.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _row_from(path: Path, status: Mapping[str, Any] | None) -> Row:
    payload = load_metrics(path)
    model_path = payload.get("model_path")
    if status:
        backend = str(status.get("backend") or runner_key(payload))
        model = str(status.get("model") or Path(str(model_path)).stem)
        precision = str(status.get("precision") or precision_of(model_path))
        double = bool(status.get("runtime_double"))
    else:
        backend, model, precision, double = runner_key(payload), Path(str(model_path)).stem, "", False
        precision = precision_of(model_path)
    dets = path.with_name("detections.json")
    return Row(
        label=backend,
        runner=backend,
        precision=precision,
        model=model,
        model_sha256=payload.get("run", {}).get("model_sha256"),
        metrics_path=path,
        payload=payload,
        detections_path=dets if dets.is_file() else None,
        runtime_double=double,
    )


def collect(paths: Sequence[str | Path]) -> Collection:
    """Rows from metrics.json files and run folders (searched recursively)."""
    if not paths:
        raise UserError("give metrics.json files or run folders to compare")
    col = Collection()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(p.rglob("metrics.json"))
            statuses = sorted(p.rglob("status.json"))
            if not found and not statuses:
                raise UserError(f"{p}: no metrics.json below this folder; pass a validate run root or metrics files")
            val = p / "validation.json"
            if val.is_file():
                try:
                    record = json.loads(val.read_text(encoding="utf-8"))
                    col.baseline_model = col.baseline_model or record.get("baseline_model")
                    for t in record.get("tensor_errors") or []:
                        col.tensor_errors[(str(t["model"]), str(t["backend"]))] = t["errors"]
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    pass
            for m in found:
                col.rows.append(_row_from(m, _read_status(m.parent)))
            for s in statuses:
                st = _read_status(s.parent)
                if st and st.get("status") in ("skipped", "failed"):
                    col.not_run.append(
                        NotRun(
                            str(st.get("backend")),
                            str(st.get("model")),
                            str(st.get("precision", "?")),
                            str(st["status"]),
                            str(st.get("reason") or ""),
                        )
                    )
            col.sources.append(str(p))
        elif p.is_file():
            col.rows.append(_row_from(p, _read_status(p.parent)))
            col.sources.append(str(p))
        else:
            raise UserError(f"{p}: no such file or folder; pass metrics.json files or a run root")
    if not col.rows:
        raise UserError(f"no backend produced a metrics.json in {', '.join(col.sources)}; nothing to compare")
    order = {k: i for i, k in enumerate(BACKEND_ORDER)}
    first_seen = {m: i for i, m in reversed(list(enumerate(r.model for r in col.rows)))}
    model_rank = {m: (m != col.baseline_model, first_seen[m]) for m in first_seen}
    col.rows.sort(key=lambda r: (model_rank[r.model], order.get(r.runner, 99)))
    col.not_run.sort(key=lambda n: (model_rank.get(n.model, (True, 99)), order.get(n.runner, 99)))
    _unique_labels(col.rows)
    return col


def _unique_labels(rows: list[Row]) -> None:
    models_per_precision: dict[str, set[str]] = {}
    for r in rows:
        models_per_precision.setdefault(r.precision, set()).add(r.model)
    seen: dict[str, int] = {}
    for r in rows:
        display = r.runner + (" (runtime double)" if r.runtime_double else "")
        if len(models_per_precision[r.precision]) > 1:
            display += f" [{r.model}]"
        label = f"{r.runner} {r.precision}" + (f" {r.model}" if len(models_per_precision[r.precision]) > 1 else "")
        n = seen.get(label, 0) + 1
        seen[label] = n
        r.label = label if n == 1 else f"{label} #{n}"
        r.display = display if n == 1 else f"{display} #{n}"


# ----------------------------------------------------------------------------- analysis


def _model_key(row: Row) -> str:
    return row.model_sha256 or row.model


def pick_reference(rows: Sequence[Row], label: str | None = None, baseline_model: str | None = None) -> Row:
    if label is not None:
        for r in rows:
            if r.label == label:
                return r
        raise UserError(f"--reference {label!r}: no such row; rows are: {', '.join(r.label for r in rows)}")
    pool = [r for r in rows if r.model == baseline_model] if baseline_model else []
    pool = pool or [r for r in rows if r.precision.startswith("fp32")] or list(rows)
    for key in REFERENCE_ORDER:
        for r in pool:
            if r.runner == key and not r.runtime_double:
                return r
    return pool[0]


def parity_reference(rows: Sequence[Row], row: Row) -> Row | None:
    """The reference backend's row on the same model file (ORT CUDA, else ORT CPU)."""
    same = [r for r in rows if _model_key(r) == _model_key(row) and r.detections_path is not None]
    for key in REFERENCE_ORDER:
        for r in same:
            if r.runner == key:
                return r
    return None


@dataclass
class ParityOptions:
    iou: float = 0.5
    conf: float = 0.25
    worst: int = 5
    min_matched: Mapping[str, float] = field(default_factory=dict)
    min_mean_iou: Mapping[str, float] = field(default_factory=dict)
    max_median_dscore: Mapping[str, float] = field(default_factory=dict)

    def limits(self, precision: str) -> Thresholds:
        return thresholds_for(precision.rstrip("?"), self.min_matched, self.min_mean_iou, self.max_median_dscore)


def image_set(row: Row) -> str | None:
    """The fingerprint of the images a row evaluated (``image_ids_sha256``, or made from its ``image_ids``);
    None when its metrics.json records neither."""
    recorded = row.payload.get("image_ids_sha256")
    if isinstance(recorded, str) and recorded:
        return recorded
    ids = row.payload.get("image_ids")
    if isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids):
        return image_ids_sha256(ids)
    return None


def same_images(a: Row, b: Row) -> bool:
    return image_set(a) is not None and image_set(a) == image_set(b)


def verdict(rows: Sequence[Row], ref: Row) -> dict[str, Any]:
    """Whether the rows could be compared at all: every row on the reference's images, and at least one
    row that is not the reference's own model on the reference's backend. ``conclusive`` False lists why
    (the CLIs then say INCONCLUSIVE and exit with ``EXIT_INCONCLUSIVE``)."""
    reasons = [
        f"{r.label} ({r.metrics_path}) does not record which images it evaluated (an older evaluator wrote it): "
        "rerun it"
        for r in rows
        if image_set(r) is None
    ]
    other = [r for r in rows if image_set(r) is not None and image_set(ref) is not None and not same_images(r, ref)]
    if other:
        reasons.append(
            f"{', '.join(r.label for r in other)} evaluated other images than the reference {ref.label} "
            f"({len(other)} row(s); image_ids_sha256 differs): ΔAP and parity would compare different image sets; "
            "evaluate the same --max-images / --image-ids-list"
        )
    compared = [
        r
        for r in rows
        if r is not ref and same_images(r, ref) and not (_model_key(r) == _model_key(ref) and r.runner == ref.runner)
    ]
    if not compared:
        reasons.append(
            "nothing was compared: "
            + (
                "only one run"
                if len(rows) == 1
                else f"every row is the reference's model ({ref.model}) on its backend ({ref.runner}) or was left out"
            )
        )
    return {"conclusive": not reasons, "comparisons": len(compared), "reasons": reasons}


def compute_parity(rows: Sequence[Row], opts: ParityOptions) -> None:
    """Fill ``row.parity`` for every row with a reference row of the same model (the reference itself excluded)."""
    cache: dict[Path, list[dict[str, Any]]] = {}

    def dets(p: Path) -> list[dict[str, Any]]:
        if p not in cache:
            cache[p] = load_detections(p)
        return cache[p]

    for row in rows:
        ref = parity_reference(rows, row)
        if ref is None or row.detections_path is None:
            row.parity = {
                "status": "n/a",
                "reason": "no reference backend (ORT CUDA / ORT CPU) ran this model"
                if ref is None
                else "no detections.json beside metrics.json",
            }
            continue
        if ref is row:
            row.parity = {"status": "reference"}
            continue
        if not same_images(row, ref):
            row.parity = {"status": "n/a", "reason": f"not the images {ref.label} evaluated"}
            continue
        summary = detection_parity(
            dets(ref.detections_path), dets(row.detections_path), None, opts.iou, opts.conf, opts.worst
        )
        limits = opts.limits(row.precision)
        broken = judge(summary, limits)
        row.parity = {
            "status": "pass" if not broken else "FAIL",
            "reference": ref.label,
            "thresholds": {"precision": row.precision, **limits.__dict__},
            "failures": broken,
            **summary,
        }


def latency_timing(payload: Mapping[str, Any]) -> str:
    """What a metrics.json's latency block measures: the kind named before ':' in latency_timing (schema 2);
    schema 1 files timed on the host, queueing included."""
    timing = payload.get("latency_timing")
    return str(timing).split(":")[0] if timing else "host (schema 1, queueing included)"


def warnings_for(rows: Sequence[Row]) -> list[str]:
    out = []
    gpus = sorted({r.gpu or "no GPU (nvidia-smi absent)" for r in rows})
    if len(gpus) > 1:
        where = "; ".join(
            f"{g}: {', '.join(r.label for r in rows if (r.gpu or 'no GPU (nvidia-smi absent)') == g)}" for g in gpus
        )
        out.append(f"rows come from different GPUs ({where}); latencies are not comparable across them")
    by_name: dict[str, set[str]] = {}
    for r in rows:
        by_name.setdefault(Path(str(r.payload.get("model_path"))).name, set()).add(r.model_sha256 or "?")
    for name, hashes in sorted(by_name.items()):
        if len(hashes) > 1:
            short = ", ".join(sorted(h[:12] for h in hashes))
            out.append(f"model {name} has different sha256 across rows ({short}): these are different models")
    timings = {latency_timing(r.payload) for r in rows}
    if len(timings) > 1:
        kinds = "; ".join(
            f"{t}: {', '.join(r.label for r in rows if latency_timing(r.payload) == t)}" for t in sorted(timings)
        )
        out.append(f"latency columns measure different things ({kinds}); compare latency within one kind only")
    counts = sorted({r.num_images for r in rows})
    if len(counts) > 1:
        out.append(f"rows evaluated different image counts ({', '.join(map(str, counts))}); mAP is not comparable")
    return out


# ----------------------------------------------------------------------------- writing


SUMMARY_FILES = ("summary.md", "summary.json", "summary.png")


def summarize(
    col: Collection,
    out_dir: Path,
    parity: ParityOptions | None = None,
    reference: str | None = None,
    tensor_errors: Mapping[tuple[str, str], list[dict[str, Any]]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute ΔAP and parity, write summary.md/json/png into ``out_dir``; return the summary dict.

    Without matplotlib the plot is skipped (``summary["plot"]`` is None) and summary.md says so
    instead of linking a png that was never written.
    """
    opts = parity or ParityOptions()
    rows = col.rows
    ref = pick_reference(rows, reference, col.baseline_model)
    errors = tensor_errors if tensor_errors is not None else col.tensor_errors
    for r in rows:  # no ΔAP between different image sets
        r.delta_ap = r.map50_95 - ref.map50_95 if r is ref or same_images(r, ref) else None
        r.tensor_errors = errors.get((r.model, r.runner))
    compute_parity(rows, opts)
    warnings = warnings_for(rows)
    failures = [f"{r.label}: {'; '.join(r.parity['failures'])}" for r in rows if r.parity and r.parity.get("failures")]
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "sources": col.sources,
        "reference": {"label": ref.label, "backend": ref.runner, "model": ref.model, "mAP_50_95": ref.map50_95},
        "parity": {"iou": opts.iou, "conf": opts.conf},
        "warnings": warnings,
        "rows": [
            {
                "label": r.label,
                "backend": r.runner,
                "precision": r.precision,
                "model": r.model,
                "model_path": r.payload.get("model_path"),
                "model_sha256": r.model_sha256,
                "runtime_double": r.runtime_double,
                "mAP_50_95": r.map50_95,
                "mAP_50": float(r.payload["metrics"]["mAP_50"]),
                "delta_ap": r.delta_ap,
                "num_images": r.num_images,
                "num_detections": r.payload["metrics"].get("num_detections"),
                "median_ms": r.latency["median_ms"],
                "p99_ms": r.latency["p99_ms"],
                "throughput_fps": r.latency["throughput_fps"],
                "host": r.host,
                "gpu": r.gpu,
                "metrics_path": str(r.metrics_path),
                "parity": r.parity,
                "tensor_errors": r.tensor_errors,
            }
            for r in rows
        ],
        "not_run": [n.to_dict() for n in col.not_run],
        "parity_failures": failures,
        "verdict": verdict(rows, ref),
        **(extra or {}),
    }
    out_dir = Path(out_dir)
    gpus = sorted({r.gpu for r in rows if r.gpu})
    title = f"latency vs mAP — {len(rows)} runs" + (f" — {', '.join(gpus)}" if gpus else " — no GPU")
    plotting = matplotlib_available()
    summary["plot"] = "summary.png" if plotting else None
    written = [atomic_write_text(out_dir / "summary.md", render_markdown(summary, rows, col.not_run, summary["plot"]))]
    if plotting:
        plot(rows, out_dir / "summary.png", title)
        written.append(out_dir / "summary.png")
    atomic_write_json(out_dir / "summary.json", stamp(summary, file_digests(*written)))  # last: it vouches for them
    return summary


backend_key = runner_key  # the old name
