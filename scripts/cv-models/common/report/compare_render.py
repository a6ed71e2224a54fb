"""The comparison's summary.md (``render_markdown``) and summary.png (``plot``: mAP against latency, one point per
row), from the rows ``common.report.compare`` collected and judged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.core.results import atomic_output

if TYPE_CHECKING:
    from common.report.compare import NotRun, Row

__all__ = ["PLOT_SKIPPED", "matplotlib_available", "plot", "render_markdown"]


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _parity_cell(row: Row) -> str:
    p = row.parity or {}
    status = p.get("status")
    if status == "reference":
        return "reference"
    if status in ("pass", "FAIL"):
        cell = (
            f"{p['matched_fraction'] * 100:.1f}% matched, IoU {p['mean_iou']:.3f}, "
            f"median Δscore {p['median_abs_dscore']:.4f}"
        )
        cell += " ✓" if status == "pass" else " ✗ " + "; ".join(p["failures"])
        return cell.replace("|", "/")
    return "n/a"


def render_markdown(
    summary: Mapping[str, Any], rows: Sequence[Row], not_run: Sequence[NotRun], plot_file: str | None = "summary.png"
) -> str:
    ref = summary["reference"]
    lines = [
        "# Backend comparison",
        "",
        f"Reference for ΔAP: **{ref['label']}** (model {ref['model']}, mAP_50_95 {ref['mAP_50_95']:.4f}). "
        "Parity: detections matched per image to the reference backend on the same model "
        f"(same class, IoU ≥ {summary['parity']['iou']}, scores ≥ {summary['parity']['conf']}).",
        "",
    ]
    lines += [f"> **INCONCLUSIVE:** {w}" for w in summary.get("verdict", {}).get("reasons", [])]
    if summary.get("verdict", {}).get("reasons"):
        lines.append("")
    if summary["warnings"]:
        lines += [f"> **warning:** {w}" for w in summary["warnings"]] + [""]
    lines += [
        "| backend | precision | mAP_50_95 | ΔAP vs reference | median ms | p99 ms | throughput img/s | parity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat = r.latency
        d = "—" if r.delta_ap is None else f"{r.delta_ap:+.4f}"
        lines.append(
            f"| {r.display} | {r.precision} | {r.map50_95:.4f} | {d} | {lat['median_ms']:.2f} | "
            f"{lat['p99_ms']:.2f} | {lat['throughput_fps']:.1f} | {_parity_cell(r)} |"
        )
    several = len({r.model for r in rows} | {n.model for n in not_run}) > 1
    for n in not_run:
        short = n.reason if len(n.reason) <= 90 else n.reason[:87].rstrip() + "..."
        name = f"{n.runner} [{n.model}]" if several else n.runner
        lines.append(f"| {name} | {n.precision} | — | — | — | — | — | {n.status}: {short.replace('|', '/')} |")
    lines.append("")
    if any(r.runtime_double for r in rows):
        lines += [
            "*(runtime double)*: a test stand-in that executes the ONNX with ONNX Runtime on the CPU after a "
            "real engine build; its accuracy and latency say nothing about TensorRT.",
            "",
        ]
    if not_run:
        lines += ["## Not run", ""]
        lines += [f"- **{n.runner}** on {n.model} ({n.precision}): {n.status}: {n.reason}" for n in not_run]
        lines.append("")
    worst = [(r, r.parity) for r in rows if r.parity and r.parity.get("worst_images")]
    if worst:
        lines += ["## Worst images (parity)", ""]
        for r, p in worst:
            items = ", ".join(
                f"{w['image_id']} (dropped {w['dropped']}, extra {w['extra']}, IoU {w['mean_iou']:.3f})"
                for w in p["worst_images"]
            )
            lines.append(f"- **{r.label}** vs {p['reference']}: {items}")
        lines.append("")
    lines += _tensor_error_lines(rows)
    hosts = sorted({f"{r.host or '?'} / {r.gpu or 'no GPU'}" for r in rows})
    lines += ["## Machines", "", *[f"- {h}" for h in hosts], ""]
    if plot_file:
        lines += [f"![latency vs mAP]({plot_file})", ""]
    else:
        lines += [f"*({PLOT_SKIPPED})*", ""]
    return "\n".join(lines)


def _tensor_error_lines(rows: Sequence[Row]) -> list[str]:
    """The raw-output error table of the rows that sampled tensors (none: no lines)."""
    tens = [r for r in rows if r.tensor_errors]
    if not tens:
        return []
    lines = [
        "## Raw output error vs reference (sample images; informational)",
        "",
        "| backend | precision | output | max abs | mean abs | max rel | mean rel | ref max abs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in tens:
        for t in r.tensor_errors or []:
            if "max_abs" not in t:
                lines.append(f"| {r.label} | {r.precision} | {t['name']} | {t.get('note', '')} | | | | |")
                continue
            lines.append(
                f"| {r.label} | {r.precision} | {t['name']} | {t['max_abs']:.3g} | {t['mean_abs']:.3g} | "
                f"{t['max_rel']:.3g} | {t['mean_rel']:.3g} | {t['ref_max_abs']:.3g} |"
                + (f" {t['note']}" if t.get("note") else "")
            )
    if any(r.payload.get("run", {}).get("output_layout") == "e2e" for r in tens):
        lines.append("")
        lines.append(
            "End-to-end heads ([B,K,6]) may order near-tied rows differently: their raw error is "
            "expected to be large; judge them by detection parity."
        )
    lines.append("")
    return lines


def _label_offsets(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[int, int, str]]:
    """Label offsets (points) that keep labels of nearby markers apart: right-up, right-down, left-up, left-down."""
    import math

    choices = [(7, 6, "left"), (7, -14, "left"), (-7, 6, "right"), (-7, -14, "right")]
    lx = [math.log10(x) for x in xs]
    span_x = (max(lx) - min(lx)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    out: list[tuple[int, int, str]] = []
    for i in range(len(xs)):
        near = sum(1 for j in range(i) if abs(lx[i] - lx[j]) / span_x < 0.25 and abs(ys[i] - ys[j]) / span_y < 0.08)
        out.append(choices[near % len(choices)])
    return out


PLOT_SKIPPED = "plot skipped (pip install matplotlib)"


def matplotlib_available() -> bool:
    """matplotlib is optional (the venv of README's `venv.sh demo` lacks it): without it there is no plot."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(rows: Sequence[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "fp32": "#1f77b4",
        "fp16": "#2ca02c",
        "bf16": "#17becf",
        "int8": "#d62728",
        "fp8": "#ff7f0e",
        "nvfp4": "#9467bd",
    }
    markers = {"ort-cpu": "s", "ort-cuda": "o", "ort-trt-ep": "^", "ort-rtx-ep": "v", "trt": "D", "trt-rtx": "P"}
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    xs = [max(r.latency["median_ms"], 1e-3) for r in rows]
    offsets = _label_offsets(xs, [r.map50_95 for r in rows])
    for r, x, (dx, dy, ha) in zip(rows, xs, offsets, strict=True):
        ax.scatter(
            x,
            r.map50_95,
            s=70,
            color=colors.get(r.precision.rstrip("?"), "#7f7f7f"),
            marker=markers.get(r.runner, "o"),
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
        )
        if r.parity and r.parity.get("status") == "reference":
            ax.scatter(x, r.map50_95, s=260, facecolors="none", edgecolors="black", linewidths=0.8, zorder=2)
        ax.annotate(
            f"{r.display} {r.precision}",
            (x, r.map50_95),
            textcoords="offset points",
            xytext=(dx, dy),
            ha=ha,
            fontsize=8,
        )
    if xs and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("median inference latency per batch (ms)  — lower is better")
    ax.set_ylabel("COCO mAP@[.50:.95]  — higher is better")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3, zorder=0)
    ys = [r.map50_95 for r in rows]
    if ys:
        pad = max(0.01, (max(ys) - min(ys)) * 0.15)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.margins(x=0.25)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=c, label=p)
        for p, c in colors.items()
        if any(r.precision.rstrip("?") == p for r in rows)
    ]
    handles += [
        plt.Line2D([], [], marker=mk, ls="", color="white", markeredgecolor="black", label=b)
        for b, mk in markers.items()
        if any(r.runner == b for r in rows)
    ]
    handles.append(
        plt.Line2D(
            [], [], marker="o", ls="", markersize=12, color="white", markeredgecolor="black", label="parity reference"
        )
    )
    ax.legend(handles=handles, fontsize=8, loc="best", title="colour: precision, marker: backend", title_fontsize=8)
    fig.tight_layout()
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
