"""Facts read from an ONNX file without running it: inputs/outputs (names, shapes, element types),
Q/DQ nodes, reduced-precision tensors, the precision they add up to, and external-data files.

The one place the toolkit inspects an ONNX graph: TensorRT builds (strong typing, cache keys),
quantization (presets, graph stats), validation (model signatures) and compare (precision labels).
The ``onnx`` package is imported lazily, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.core.errors import UserError

__all__ = [
    "QDQ_OPS",
    "REDUCED_ONNX_TYPES",
    "OnnxFacts",
    "external_data_files",
    "graph_inputs",
    "input_spec",
    "inspect_onnx",
    "io_signature",
    "io_types",
    "precision_from_facts",
    "precision_of",
    "static_dims",
]

# Every ONNX operator that quantizes or dequantizes a tensor: a graph with any of them carries its precision
# (TensorRT must build it strongly typed), and none of them is a "compute" node that quantization covers.
# DynamicQuantizeLinear computes its scale at run time but is still a Q node (ONNX opset 11+).
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})

# ONNX element types that mean "precision is already in the graph" (strongly typed build).
REDUCED_ONNX_TYPES = {
    10: "float16",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
}


@dataclass
class OnnxFacts:
    """What we read from the ONNX file before TensorRT parses it."""

    inputs: dict[str, tuple[int | None, ...]] = field(default_factory=dict)
    has_qdq: bool = False
    reduced_types: list[str] = field(default_factory=list)
    readable: bool = True

    @property
    def needs_strong_typing(self) -> bool:
        return self.has_qdq or bool(self.reduced_types)


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False)


def static_dims(vi: Any) -> tuple[int | None, ...]:
    """Dims of a ValueInfo; None for a dynamic (symbolic or unset) one."""
    return tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in vi.type.tensor_type.shape.dim
    )


def graph_inputs(model: Any) -> list[Any]:
    """The graph inputs that are real inputs (initializers listed as inputs excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _subgraphs(g: Any) -> Iterator[Any]:
    """``g`` and every graph nested in its nodes' attributes (If/Loop/Scan bodies), depth first."""
    import onnx

    yield g
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)
            for sub in attr.graphs:
                yield from _subgraphs(sub)


def inspect_onnx(path: Path) -> OnnxFacts:
    """Q/DQ nodes and reduced-precision tensors; tolerant: an unreadable file is left to TensorRT's parser."""
    try:
        import onnx

        model = _load(path)
    except Exception:
        return OnnxFacts(readable=False)
    facts = OnnxFacts(inputs={vi.name: static_dims(vi) for vi in graph_inputs(model)})
    types: set[int] = set()
    for g in _subgraphs(model.graph):
        types.update(t.data_type for t in g.initializer)
        types.update(vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info])
        for node in g.node:
            facts.has_qdq = facts.has_qdq or node.op_type in QDQ_OPS
            for attr in node.attribute:
                if node.op_type == "Cast" and attr.name == "to":
                    types.add(int(attr.i))
                if attr.type == onnx.AttributeProto.TENSOR:
                    types.add(attr.t.data_type)
    facts.reduced_types = sorted(REDUCED_ONNX_TYPES[t] for t in types if t in REDUCED_ONNX_TYPES)
    return facts


def precision_from_facts(facts: OnnxFacts) -> str:
    """fp32 | fp16 | bf16 | int8 | fp8 | nvfp4 from what the graph carries."""
    types = set(facts.reduced_types)
    if facts.has_qdq:
        if "float4e2m1" in types:
            return "nvfp4"
        if any(t.startswith("float8") for t in types):
            return "fp8"
        return "int8"
    if "bfloat16" in types:
        return "bf16"
    if "float16" in types:
        return "fp16"
    return "fp32"


def precision_of(model_path: str | Path | None) -> str:
    """fp32 | fp16 | bf16 | int8 | fp8 | nvfp4 from the ONNX graph; from the file name when it is not here."""
    if model_path is None:
        return "?"
    p = Path(model_path)
    if p.suffix == ".onnx" and p.is_file():
        facts = inspect_onnx(p)
        if facts.readable:
            return precision_from_facts(facts)
    name = p.name.lower()
    for prec in ("nvfp4", "int8", "fp8", "bf16", "fp16"):
        if prec in name:
            return prec
    return "fp32?"


def external_data_files(path: Path) -> list[str]:
    """The external-data files an ONNX references (``location`` of EXTERNAL tensors, relative to its folder),
    sorted; [] for a self-contained or unreadable model. TensorRT's ``parse_from_file`` reads them too."""
    try:
        import onnx

        model = _load(path)
    except Exception:
        return []
    found: set[str] = set()

    def tensor(t: Any) -> None:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            found.update(e.value for e in t.external_data if e.key == "location")

    for g in _subgraphs(model.graph):
        for t in g.initializer:
            tensor(t)
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensor(attr.t)
                for t in attr.tensors:
                    tensor(t)
    return sorted(found)


def io_signature(path: Path, flag: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Graph inputs (initializers excluded) and outputs: name, element type, dims (int or symbol).
    Strict: a missing or unreadable file is a UserError naming ``flag``."""
    import onnx

    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file")
    try:
        model = _load(path)
    except Exception as exc:
        raise UserError(f"{flag} {path}: not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from exc

    def sig(vi: Any) -> dict[str, Any]:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return {"name": vi.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims}

    return [sig(v) for v in graph_inputs(model)], [sig(v) for v in model.graph.output]


def io_types(model: Any) -> dict[str, str]:
    """``{tensor: element type}`` of graph inputs and outputs."""
    import onnx

    return {
        v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
        for v in (*model.graph.input, *model.graph.output)
    }


def input_spec(model: Any) -> tuple[str, tuple[int | None, ...]]:
    """Name and shape (None = dynamic) of the model's single image input."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise UserError(f"expected one image input, the model has {len(inputs)}: {[i.name for i in inputs]}")
    return inputs[0].name, static_dims(inputs[0])
