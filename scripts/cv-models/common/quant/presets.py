"""Precision candidates for TensorRT 11.x / TensorRT-RTX: what to keep in high precision, and what came out.

TensorRT 11 and TensorRT-RTX take precision only from the ONNX: FP16/BF16 from ModelOpt AutoCast,
INT8/FP8 from explicit Q/DQ nodes (ModelOpt ONNX PTQ). This module holds everything about that
step that does not need ModelOpt itself, so it runs and is tested in the base environment:

- the ``yolov10-head`` preset (node-name regexes kept out of INT8/FP8) and ``resolve_exclusions``,
  which validates user regexes the way ModelOpt applies them (``re.match`` on node names) and
  names near matches when one matches nothing;
- ``graph_stats``: Q/DQ counts and quantized node types of an output model, for the sidecar JSON;
- ``unquantized_violations``: excluded nodes that nevertheless read a DequantizeLinear output.

The ModelOpt calls themselves live in ``common.quant.modelopt`` (imported only in the quant venv).

The YOLOv10 head (``/model.23/``) in the fixture/Ultralytics exports
---------------------------------------------------------------------
Three conv towers per stride ``i`` (0, 1, 2): ``cv2.i`` (box: 64 DFL logits), ``cv3.i`` (class:
80 logits; depthwise-separable convs), final 1x1 convs ``cv2.i.2`` / ``cv3.i.2``. End-to-end
exports use the one-to-one copies ``one2one_cv2.i`` / ``one2one_cv3.i``. After the towers:
Reshape/Concat, then ``dfl/`` (Reshape, Transpose, Softmax over 16 bins, 1x1 Conv = expectation),
``Sigmoid`` (class scores), box arithmetic (Slice/Sub/Add/Mul), the final Concat; end-to-end graphs
add ReduceMax/TopK/GatherElements. The ``dfl144`` layout is cut at ``/model.23/Concat_dfl144``
(no DFL, no Sigmoid in the graph).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from common.core.errors import UserError
from common.model.onnx_facts import QDQ_OPS, input_spec, io_types

__all__ = [
    "AUTOCAST_MODES",
    "DEFAULT_PRESET",
    "HEAD",
    "MODES",
    "PRESETS",
    "PTQ_MODES",
    "QDQ_OPS",
    "Exclusions",
    "Preset",
    "default_preset",
    "graph_stats",
    "input_spec",
    "io_types",
    "match_patterns",
    "near_matches",
    "node_names",
    "op_types",
    "quantized_nodes",
    "resolve_exclusions",
    "unquantized_violations",
]

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("fp16", "bf16", "int8", "fp8", "nvfp4")
AUTOCAST_MODES: tuple[str, ...] = ("fp16", "bf16")
PTQ_MODES: tuple[str, ...] = ("int8", "fp8")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    node_patterns: tuple[str, ...]
    op_types: tuple[str, ...] = ()


HEAD = r"/model\.23/"
PRESETS: dict[str, Preset] = {
    "yolov10-head": Preset(
        name="yolov10-head",
        description=(
            "keep the YOLOv10 detect head's classification towers (cv3 / one2one_cv3: depthwise-separable "
            "convs feeding the score logits), the final 1x1 box convs (cv2.i.2), the DFL softmax/conv and all "
            "post-tower ops (Sigmoid, Concat, box arithmetic, TopK) in high precision; the backbone, neck "
            "and box towers are quantized"
        ),
        node_patterns=(
            # classification towers, whole: per-tensor INT8 on their depthwise convs squashes scores
            HEAD + r"(one2one_)?cv3\.",
            # final 1x1 box conv of each stride (DFL logits)
            HEAD + r"(one2one_)?cv2\.\d+/(one2one_)?cv2\.\d+\.2/",
            # DFL: Reshape/Transpose/Softmax/Conv
            HEAD + r"dfl/",
            # everything in the head outside the conv towers: Reshape, Concat, Sigmoid, Slice/Sub/Add/Mul,
            # ReduceMax/TopK/GatherElements (end-to-end), Concat_dfl144 (dfl144 cut)
            HEAD + r"(?!(one2one_)?cv[23]\.)",
        ),
    ),
    "none": Preset(name="none", description="quantize every node ModelOpt supports", node_patterns=()),
}
# Defaults per mode: the head preset for INT8 (fully INT8 YOLOv10 heads squash scores), none elsewhere.
DEFAULT_PRESET: dict[str, str] = {"int8": "yolov10-head", "fp8": "none", "fp16": "none", "bf16": "none"}


def default_preset(mode: str) -> str:
    return DEFAULT_PRESET.get(mode, "none")


def node_names(model: Any) -> list[str]:
    return [n.name for n in model.graph.node]


def op_types(model: Any) -> list[str]:
    return sorted({n.op_type for n in model.graph.node})


def match_patterns(
    names: Sequence[str], patterns: Iterable[str], flag: str = "--exclude-nodes"
) -> dict[str, list[str]]:
    """``{pattern: [matching node names]}`` with ModelOpt's rule (``re.match``, anchored at the start)."""
    out: dict[str, list[str]] = {}
    for pat in patterns:
        try:
            rx = re.compile(pat)
        except re.error as exc:
            raise UserError(f"{flag} {pat!r} is not a valid regular expression: {exc}") from exc
        out[pat] = [n for n in names if rx.match(n)]
    return out


def near_matches(pattern: str, names: Sequence[str], n: int = 5) -> list[str]:
    """Node names that look like ``pattern`` (regex syntax stripped), best first."""
    plain = re.sub(r"\\(.)", r"\1", pattern)
    plain = re.sub(r"[\^\$\*\+\?\(\)\[\]\{\}\|]", "", plain).replace(".", ".")
    close = difflib.get_close_matches(plain, names, n=n, cutoff=0.4)
    if len(close) < n:
        # prefix-based: names sharing the longest leading path of the pattern
        parts = plain.strip("/").split("/")
        for k in range(len(parts), 0, -1):
            prefix = "/" + "/".join(parts[:k])
            hits = [x for x in names if x.startswith(prefix) and x not in close]
            if hits:
                close += hits[: n - len(close)]
                break
    return close[:n]


@dataclass(frozen=True)
class Exclusions:
    preset: str
    preset_patterns: tuple[str, ...]
    user_patterns: tuple[str, ...]
    op_types: tuple[str, ...]
    nodes: tuple[str, ...]  # every node name the patterns match (what stays unquantized)

    @property
    def patterns(self) -> list[str]:
        return [*self.preset_patterns, *self.user_patterns]


def resolve_exclusions(
    model: Any,
    preset: str,
    user_patterns: Sequence[str] = (),
    user_op_types: Sequence[str] = (),
) -> Exclusions:
    """Preset + ``--exclude-nodes`` + ``--exclude-op-types`` checked against ``model``.

    A user regex that matches no node, or an op type the graph lacks, is a UserError that lists
    near matches. Preset patterns that match nothing are fine (not every layout has every part);
    a preset that matches nothing at all logs a warning (not a YOLOv10 graph?).
    """
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    names = node_names(model)
    p = PRESETS[preset]
    preset_hits = match_patterns(names, p.node_patterns, flag=f"preset {preset}")
    if p.node_patterns and not any(preset_hits.values()):
        log.warning("preset %s matches no node of this graph (no /model.23/ head?); nothing excluded by it", preset)
    user_hits = match_patterns(names, user_patterns)
    for pat, hits in user_hits.items():
        if not hits:
            near = near_matches(pat, names)
            hint = f"near matches: {', '.join(near)}" if near else "no similar node names"
            raise UserError(
                f"--exclude-nodes {pat!r} matches no node (patterns are Python regexes matched at the start of "
                f"the node name, as ModelOpt does); {hint}"
            )
    graph_ops = op_types(model)
    ops = [*p.op_types, *user_op_types]
    for op in user_op_types:
        if op not in graph_ops:
            near = difflib.get_close_matches(op, graph_ops, n=5, cutoff=0.5)
            hint = f"near matches: {', '.join(near)}" if near else f"graph op types: {', '.join(graph_ops)}"
            raise UserError(f"--exclude-op-types {op!r} is not an op type of this graph; {hint}")
    matched: dict[str, None] = {}
    for hits in (*preset_hits.values(), *user_hits.values()):
        matched.update(dict.fromkeys(hits))
    op_set = set(ops)
    matched.update(dict.fromkeys(n.name for n in model.graph.node if n.op_type in op_set))
    return Exclusions(preset, p.node_patterns, tuple(user_patterns), tuple(dict.fromkeys(ops)), tuple(matched))


def _producers(model: Any) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def quantized_nodes(model: Any) -> list[Any]:
    """Compute nodes (not Q/DQ) with at least one input produced by a DequantizeLinear."""
    prod = _producers(model)
    out = []
    for n in model.graph.node:
        if n.op_type in QDQ_OPS:
            continue
        if any(i in prod and prod[i].op_type == "DequantizeLinear" for i in n.input):
            out.append(n)
    return out


def unquantized_violations(model: Any, excluded_names: Iterable[str]) -> list[str]:
    """Names of nodes that should stay unquantized but read a DequantizeLinear output."""
    excluded = set(excluded_names)
    return [n.name for n in quantized_nodes(model) if n.name in excluded]


def _qdq_dtypes(model: Any) -> dict[str, int]:
    """Element types of the QuantizeLinear zero points (INT8, FLOAT8E4M3FN, ...): {type name: count}."""
    import onnx

    inits = {t.name: t for t in model.graph.initializer}
    consts = {
        n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    }
    counts: Counter[str] = Counter()
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear":
            continue
        zp = n.input[2] if len(n.input) > 2 else ""
        t = inits.get(zp) or consts.get(zp)
        counts[onnx.TensorProto.DataType.Name(t.data_type) if t is not None else "UINT8 (no zero point)"] += 1
    return dict(sorted(counts.items()))


def graph_stats(model: Any) -> dict[str, Any]:
    """What a precision candidate contains: Q/DQ counts, quantized node types, casts, float16 tensors."""
    import onnx

    ops = Counter(n.op_type for n in model.graph.node)
    qnodes = quantized_nodes(model)
    f16 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    bf16 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.BFLOAT16)
    return {
        "nodes": sum(ops.values()),
        "quantize_linear": ops.get("QuantizeLinear", 0),
        "dequantize_linear": ops.get("DequantizeLinear", 0),
        "qdq_types": _qdq_dtypes(model),
        "quantized_nodes": len(qnodes),
        "quantized_node_types": dict(sorted(Counter(n.op_type for n in qnodes).items())),
        "cast_nodes": ops.get("Cast", 0),
        "float16_initializers": f16,
        "bfloat16_initializers": bf16,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
    }
