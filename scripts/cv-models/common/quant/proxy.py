"""A proxy sensitivity ranking from elsewhere, summed per group, and how well it agrees with the measured one.

Accepted files:

- an AutoQuantize sensitivity sweep's ``layer-sensitivity-report.json``:
  ``{"layer_sensitivity": [{"layer": ..., "sensitivity": ...}]}``;
- the manifest of such a sweep, or a ModelOpt AutoQuantize state dumped to JSON:
  ``{"layer_sensitivity" | "candidate_stats": {layer: {"scores": [...], ...}}}`` (a layer's score is
  the largest of its scores).

Layer names are Torch module names (``model.2.m.0.cv1.conv``, a ``.quant_recipe`` suffix is dropped)
or ONNX node names; ``common.quant.groups.group_key`` puts each in its ``yolov10`` group, and a group's
proxy score is the sum over its layers (AutoQuantize scores estimate each layer's added loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.core.errors import UserError
from common.quant.groups import group_key, head_block, read_json_input
from common.quant.score import spearman

__all__ = ["agreement", "group_scores", "read_proxy"]


def _score(entry: Any) -> float | None:
    if isinstance(entry, (int, float)):
        return float(entry)
    if not isinstance(entry, Mapping):
        return None
    for key in ("sensitivity", "importance", "score"):
        if isinstance(entry.get(key), (int, float)):
            return float(entry[key])
    scores = [float(s) for s in entry.get("scores") or [] if isinstance(s, (int, float))]
    return max(scores) if scores else None


def read_proxy(path: Path) -> dict[str, float]:
    """``{layer name: score}`` from a proxy file (see the module docstring)."""
    data = read_json_input("--proxy-ranking", path)
    table = None
    if isinstance(data, Mapping):
        table = data.get("layer_sensitivity", data.get("candidate_stats"))
    out: dict[str, float] = {}
    if isinstance(table, list):
        for row in table:
            if isinstance(row, Mapping) and isinstance(row.get("layer"), str) and _score(row) is not None:
                out[row["layer"]] = _score(row)  # type: ignore[assignment]
    elif isinstance(table, Mapping):
        out = {str(k): v for k, v in ((k, _score(e)) for k, e in table.items()) if v is not None}
    if not out:
        raise UserError(
            f"--proxy-ranking {path}: no layer scores found; expected a layer-sensitivity-report.json "
            "(layer_sensitivity: [{layer, sensitivity}]) or an AutoQuantize manifest (candidate_stats)"
        )
    return {k.removesuffix(".quant_recipe"): v for k, v in out.items()}


def group_scores(layers: Mapping[str, float]) -> dict[str, float]:
    """Proxy scores summed per ``yolov10`` group."""
    head = head_block(layers)
    out: dict[str, float] = {}
    for name, score in layers.items():
        key = group_key(name, head)
        out[key] = out.get(key, 0.0) + score
    return out


def agreement(measured: Sequence[tuple[str, float]], proxy: Mapping[str, float]) -> dict[str, Any]:
    """Spearman correlation of the measured gains and the proxy scores over the groups both have."""
    common = [(name, gain, proxy[name]) for name, gain in measured if name in proxy]
    rho = spearman([c[1] for c in common], [c[2] for c in common]) if common else None
    missing = [name for name, _ in measured if name not in proxy]
    top_measured = [c[0] for c in sorted(common, key=lambda c: -c[1])[:5]]
    top_proxy = [c[0] for c in sorted(common, key=lambda c: -c[2])[:5]]
    return {
        "spearman": rho,
        "groups_compared": len(common),
        "groups_without_proxy": missing,
        "top5_measured": top_measured,
        "top5_proxy": top_proxy,
    }
