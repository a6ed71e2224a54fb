"""common.model.onnx_facts: the one Q/DQ op set, precision facts, inputs/outputs, external data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common.model import onnx_facts as F
from common.quant import presets
from common.trt import build


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _dynamic_q_model() -> onnx.ModelProto:
    """x -> Q -> DQ -> DynamicQuantizeLinear -> DQ -> Relu: quantized only through DynamicQuantizeLinear + DQ."""
    s = numpy_helper.from_array(np.array(0.02, np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, np.uint8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_x"),
        helper.make_node("DynamicQuantizeLinear", ["xd"], ["yq", "ys", "yzp"], name="dyn_q"),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yzp"], ["yd"], name="dq_y"),
        helper.make_node("Relu", ["yd"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[s, zp],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _only_dynamic_q(path: Path) -> Path:
    """x -> DynamicQuantizeLinear -> DequantizeLinear: no QuantizeLinear at all."""
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["yq", "ys", "yzp"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yzp"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)


def test_one_qdq_op_set_is_shared():
    assert presets.QDQ_OPS is F.QDQ_OPS
    assert {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"} == F.QDQ_OPS
    assert build.inspect_onnx is F.inspect_onnx


def test_dynamic_quantize_linear_is_a_qdq_node_not_a_quantized_compute_node():
    m = _dynamic_q_model()
    # the quant side used to list DynamicQuantizeLinear (it reads a DQ output) as a quantized compute node
    assert [n.name for n in presets.quantized_nodes(m)] == ["relu"]
    assert presets.unquantized_violations(m, ["dyn_q"]) == []


def test_dynamic_quantize_linear_alone_means_a_quantized_graph(tmp_path):
    facts = F.inspect_onnx(_only_dynamic_q(tmp_path / "dq.onnx"))
    assert facts.readable and facts.has_qdq and facts.needs_strong_typing
    assert F.precision_of(tmp_path / "dq.onnx") == "int8"


def test_precision_facts_and_signature(tmp_path):
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT16, ["N", 6])
    cast = helper.make_node("Cast", ["images"], ["h"], to=TensorProto.FLOAT16)
    red = helper.make_node("ReduceMean", ["h"], ["out"], keepdims=0, axes=[2, 3])
    graph = helper.make_graph([cast, red], "g", [x], [y])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    facts = F.inspect_onnx(path)
    assert facts.inputs == {"images": (None, 3, 32, 32)} and not facts.has_qdq
    assert facts.reduced_types == ["float16"] and F.precision_of(path) == "fp16"
    ins, outs = F.io_signature(path, "--onnx-path")
    assert ins == [{"name": "images", "dtype": "float", "shape": ["N", 3, 32, 32]}]
    assert outs == [{"name": "out", "dtype": "float16", "shape": ["N", 6]}]
    assert F.input_spec(onnx.load(str(path))) == ("images", (None, 3, 32, 32))
    assert F.precision_of(tmp_path / "absent.int8.onnx") == "int8"  # not here: from the name


def test_external_data_files(tmp_path):
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    inline = _save(model, tmp_path / "inline.onnx")
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin", size_threshold=0)
    assert F.external_data_files(tmp_path / "ext.onnx") == ["ext.bin"]
    assert F.external_data_files(inline) == []
    assert F.external_data_files(tmp_path / "missing.onnx") == []
