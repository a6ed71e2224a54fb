"""Facts about a Q/DQ precision candidate read from its graph, and the edits the search makes to one.

Proxies (nothing here runs an engine; they stand in for TensorRT's latency):

- ``conv_macs``: multiply-accumulates of every Conv, from the float model's inferred shapes;
- ``int8_mac_share``: the share of those MACs in Convs that read a DequantizeLinear output (INT8/FP8);
- ``precision_boundaries``: how often the precision changes between consecutive Conv/MatMul/Gemm
  nodes (each change is a reformat in an engine), the quantized islands and the Cast nodes.

Calibration ranges: ``activation_scales`` reads the activation scales of a quantized model and
``write_calibration_cache`` writes them in the TensorRT calibration-cache text format that ModelOpt's
``calibration_cache_path`` reads (first line a header, then ``tensor: <float32 big-endian hex>``).

``strip_qdq`` restores the float path of chosen nodes in a quantized model (their inputs read the
tensor before its QuantizeLinear) without calling ModelOpt.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.core.results import atomic_write_text
from common.quant.presets import QDQ_OPS, quantized_nodes

__all__ = [
    "CACHE_HEADER",
    "HEAVY_OPS",
    "PASSIVE_OPS",
    "STRIP_RULES",
    "activation_scales",
    "candidate_facts",
    "conv_macs",
    "int8_mac_share",
    "precision_boundaries",
    "qdq_feeding",
    "quantized_names",
    "read_calibration_cache",
    "strip_qdq",
    "write_calibration_cache",
]

CACHE_HEADER = "TRT-8501-EntropyCalibration2"
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# ops whose inputs ModelOpt's INT8/FP8 ONNX quantization never quantizes (it takes them out of ONNX Runtime's
# Q/DQ registry): they read a Q/DQ pair only when it is shared with a consumer that asked for it
PASSIVE_OPS = frozenset(
    {
        "ArgMax",
        "Concat",
        "EmbedLayerNormalization",
        "Gather",
        "GatherElements",
        "GatherND",
        "InstanceNormalization",
        "LeakyRelu",
        "Pad",
        "Relu",
        "Reshape",
        "Slice",
        "Sigmoid",
        "Softmax",
        "Split",
        "Squeeze",
        "Transpose",
        "Unsqueeze",
        "Where",
    }
)
STRIP_RULES = 2  # the version of ``strip_qdq``'s rules: a search's candidates depend on it


def quantized_names(model: Any) -> set[str]:
    """Names of the compute nodes that read a DequantizeLinear output."""
    return {n.name for n in quantized_nodes(model)}


def conv_macs(model: Any) -> dict[str, int]:
    """``{Conv node: MACs}`` for one inference at the model's input shape (shape inference on ``model``)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        dims = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        y, w = shapes.get(n.output[0]), weights.get(n.input[1]) or shapes.get(n.input[1])
        if y and w:
            out[n.name] = int(np.prod(y, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    return out


def int8_mac_share(model: Any, macs: Mapping[str, int]) -> float:
    """Share of ``macs`` (from the float model) in Convs of ``model`` that read a DequantizeLinear output."""
    total = sum(macs.values())
    if total == 0:
        return 0.0
    q = quantized_names(model)
    return sum(v for k, v in macs.items() if k in q) / total


def _consumers(model: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _reach(model: Any) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """For each heavy node: the heavy nodes its output reaches through other nodes (TensorRT fuses or
    reformats those); the heavy nodes reached from the graph inputs; those that reach a graph output."""
    cons = _consumers(model)
    outputs = {o.name for o in model.graph.output}

    def walk(tensors: Iterable[str]) -> tuple[set[str], bool]:
        seen: set[str] = set()
        found: set[str] = set()
        stack, to_output = list(tensors), False
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            to_output = to_output or t in outputs
            for r in cons.get(t, []):
                if r.op_type in HEAVY_OPS:
                    found.add(r.name)
                else:
                    stack.extend(r.output)
        return found, to_output

    inits = {t.name for t in model.graph.initializer}
    succ: dict[str, set[str]] = {}
    at_output: set[str] = set()
    for n in model.graph.node:
        if n.op_type in HEAVY_OPS:
            succ[n.name], out = walk(n.output)
            if out:
                at_output.add(n.name)
    from_input, _ = walk(i.name for i in model.graph.input if i.name not in inits)
    return succ, from_input, at_output


def precision_boundaries(model: Any) -> dict[str, int]:
    """Precision changes between the heavy nodes (Conv, ConvTranspose, MatMul, Gemm) of a candidate.

    Heavy node B follows A when A's output reaches B through other nodes only (activations, Q/DQ,
    reshapes, concats: what TensorRT fuses into A or B or turns into a reformat). ``boundaries`` counts
    the A -> B links whose precisions differ (quantized: reads a DequantizeLinear output), plus a float
    graph input or output next to a quantized heavy node; ``islands`` counts the groups of quantized
    heavy nodes linked to each other; ``casts`` the Cast nodes.
    """
    q = quantized_names(model)
    succ, from_input, at_output = _reach(model)
    parent = {name: name for name in succ if name in q}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    crossings = sum(1 for b in from_input if b in q) + sum(1 for a in at_output if a in q)
    for a, followers in succ.items():
        for b in followers:
            if (a in q) != (b in q):
                crossings += 1
            elif a in q:
                parent[find(b)] = find(a)
    islands = len({find(x) for x in parent})
    casts = sum(1 for n in model.graph.node if n.op_type == "Cast")
    return {"boundaries": crossings, "islands": islands, "casts": casts}


def activation_scales(model: Any) -> dict[str, float]:
    """``{activation tensor: scale}`` of the per-tensor activation QuantizeLinear nodes of ``model``."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, float] = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        scale = inits.get(n.input[1])
        if scale is None:
            continue
        arr = numpy_helper.to_array(scale)
        if arr.size == 1:
            out[n.input[0]] = float(arr.reshape(()))
    return out


def write_calibration_cache(scales: Mapping[str, float], path: Path) -> Path:
    """The TensorRT calibration-cache text format (ModelOpt ``calibration_cache_path``), written atomically."""
    lines = [CACHE_HEADER, *(f"{name}: {struct.pack('!f', value).hex()}" for name, value in scales.items())]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_calibration_cache(path: Path) -> dict[str, float]:
    """``{tensor: scale}`` from a calibration cache written by ``write_calibration_cache`` (or TensorRT)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"calibration cache {path} is not readable ({exc})") from None
    out: dict[str, float] = {}
    for no, line in enumerate(lines[1:], 2):
        name, sep, hexval = line.rpartition(": ")
        try:
            out[name] = struct.unpack("!f", bytes.fromhex(hexval))[0]
        except ValueError:
            raise UserError(f"calibration cache {path}:{no}: expected 'tensor: <8 hex digits>'") from None
        if not sep:
            raise UserError(f"calibration cache {path}:{no}: expected 'tensor: <8 hex digits>'")
    return out


def qdq_feeding(model: Any, nodes: Iterable[str]) -> list[tuple[Any, Any]]:
    """(QuantizeLinear, DequantizeLinear) pairs whose DequantizeLinear output one of ``nodes`` reads."""
    wanted = set(nodes)
    prod = {o: n for n in model.graph.node for o in n.output}
    pairs: dict[str, tuple[Any, Any]] = {}
    for n in model.graph.node:
        if n.name not in wanted:
            continue
        for i in n.input:
            dq = prod.get(i)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            qn = prod.get(dq.input[0])
            if qn is not None and qn.op_type == "QuantizeLinear":
                pairs[dq.name] = (qn, dq)
    return list(pairs.values())


def strip_qdq(model: Any, nodes: Iterable[str]) -> Any:
    """A copy of ``model`` where ``nodes`` read the float tensors behind their Q/DQ pairs, as ModelOpt
    quantizes with ``nodes_to_exclude``: a pair that one of ``nodes`` read goes from every reader when the
    only others left are ``PASSIVE_OPS`` (they read it because it was shared, never asked for it). Pairs left
    unread (and initializers left unused) are removed."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    wanted = set(nodes)
    readers = _consumers(out)
    source: dict[str, str] = {}  # a stripped pair's DequantizeLinear output -> the float tensor behind it
    gone: set[str] = set()  # of those, the pairs that go from every reader
    for qn, dq in qdq_feeding(out, wanted):
        source[dq.output[0]] = qn.input[0]
        others = [c for c in readers.get(dq.output[0], []) if c.name not in wanted]
        if all(c.op_type in PASSIVE_OPS for c in others):
            gone.add(dq.output[0])
    for n in out.graph.node:
        for k, i in enumerate(n.input):
            if i in source and (n.name in wanted or i in gone):
                n.input[k] = source[i]
    _prune(out)
    return out


def _prune(model: Any) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads (repeatedly), then unused initializers."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in QDQ_OPS and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    read = {i for n in model.graph.node for i in n.input} | outputs
    for t in [t for t in model.graph.initializer if t.name not in read]:
        model.graph.initializer.remove(t)


def candidate_facts(path: Path, macs: Mapping[str, int]) -> dict[str, Any]:
    """What search.jsonl records about a candidate's graph: Q/DQ counts and the proxies."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    return {
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "int8_mac_share": round(int8_mac_share(model, macs), 6),
        **precision_boundaries(model),
    }
