"""The precision search's plots (matplotlib, when installed):

- ``pareto.png``: ΔmAP vs FP16 against the share of conv MACs left in high precision (the cost proxy),
  every candidate (screen hollow, full set filled), FP16 and INT8-all, the budget line, the Pareto front;
- ``sensitivity.png``: each group's leave-one-out gain over INT8-all with its confidence interval;
- ``ladder.png``: ΔmAP vs FP16 of the ranked prefixes (the top K groups kept in FP16) over K.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from common.core.results import atomic_output
from common.quant.search import SearchResult
from common.quant.search_session import Record

__all__ = ["pareto_front", "write_plots"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and ΔmAP (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, delta in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or delta > front[-1][1]:
            front.append((cost, delta))
    return front


def _save(fig: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]


def _pareto(path: Path, records: Sequence[Record], budget: float, best: Record | None, calibration: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for subset, face in (("screen", "none"), ("full", "C0")):
        pts = [(1 - r.share, r.vs_fp16.delta) for r in records if r.subset == subset]
        if pts:
            ax.scatter(*zip(*pts, strict=True), facecolors=face, edgecolors="C0", label=f"candidates ({subset})")
    front = pareto_front([(1 - r.share, r.vs_fp16.delta) for r in records if r.subset == "full"])
    if front:
        ax.plot(*zip(*front, strict=True), "C0-", lw=1, label="Pareto front (full set)")
    int8 = [r for r in records if not r.excluded and r.calibration == calibration and r.subset == "screen"]
    int8 = int8 or [r for r in records if not r.excluded and r.calibration == calibration]
    if int8:
        ax.scatter([1 - int8[0].share], [int8[0].vs_fp16.delta], marker="s", color="C3", label="INT8-all")
    ax.scatter([1.0], [0.0], marker="D", color="C2", label="FP16")
    if best is not None:
        ax.scatter([1 - best.share], [best.vs_fp16.delta], marker="*", s=200, color="gold", edgecolors="k", zorder=5)
    ax.axhline(-budget, color="C1", ls="--", label=f"budget -{budget}")
    ax.set_xlabel("share of conv MACs left in high precision (cost proxy)")
    ax.set_ylabel("ΔmAP vs FP16 (paired)")
    ax.legend(fontsize=8)
    _save(fig, path)


def _sensitivity(path: Path, res: SearchResult) -> None:
    import matplotlib.pyplot as plt

    ranked = res.ranking
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(ranked) + 1.2))
    y = list(range(len(ranked)))[::-1]
    gains = [r.gain.delta for r in ranked]
    err = [[r.gain.delta - r.gain.low for r in ranked], [r.gain.high - r.gain.delta for r in ranked]]
    ax.barh(y, gains, xerr=err, color="C0", ecolor="k", capsize=2)
    ax.set_yticks(y, [r.group.label for r in ranked], fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("mAP gain over INT8-all when kept in high precision (screen, 95% CI)")
    _save(fig, path)


def _ladder(path: Path, res: SearchResult, budget: float, records: Sequence[Record]) -> None:
    import matplotlib.pyplot as plt

    prefixes = {frozenset(r.group.name for r in res.ranking[:k]): k for k in range(len(res.ranking) + 1)}
    calibration = res.ranking[0].record.calibration
    fig, ax = plt.subplots(figsize=(7, 4))
    for subset, marker in (("screen", "o"), ("full", "s")):
        pts = sorted(
            (prefixes[frozenset(r.excluded)], r.vs_fp16.delta)
            for r in records
            if r.subset == subset and r.calibration == calibration and frozenset(r.excluded) in prefixes
        )
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=marker, ls="-", label=subset)
    ax.axhline(-budget, color="C1", ls="--", label=f"budget -{budget}")
    ax.set_xlabel("K: the top K ranked groups kept in high precision")
    ax.set_ylabel("ΔmAP vs FP16 (paired)")
    ax.legend(fontsize=8)
    _save(fig, path)


def write_plots(
    folder: Path, res: SearchResult, records: Sequence[Record], budget: float, calibration: str
) -> list[str]:
    """The plots written (file names); [] when matplotlib is not installed. ``calibration``: the chosen one."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    written = []
    if records:
        _pareto(folder / "pareto.png", records, budget, res.best, calibration)
        written.append("pareto.png")
    if res.ranking:
        _sensitivity(folder / "sensitivity.png", res)
        _ladder(folder / "ladder.png", res, budget, records)
        written += ["sensitivity.png", "ladder.png"]
    return written
