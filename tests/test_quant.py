"""common.quant.presets without ModelOpt: the yolov10-head preset on the fixture graphs, exclusion checks, stats."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from conftest import DEMO_MODEL, fixture_path
from onnx import TensorProto, helper, numpy_helper

from common.core.errors import UserError
from common.quant import presets as quant

FIXTURE_MODELS = ["yolov10n-synth", "yolov10n-synth-raw84", "yolov10n-synth-dfl144", "yolov10m-synth-dfl144"]


def _load(name: str) -> onnx.ModelProto:
    return onnx.load(str(fixture_path("models", f"{name}.onnx")), load_external_data=False)


def _head_part(name: str) -> str:
    """Classify a node by name, independently of the preset's regexes."""
    if not name.startswith("/model.23/"):
        return "body"
    rest = name[len("/model.23/") :]
    first = rest.split("/")[0]
    if first.startswith(("cv3.", "one2one_cv3.")):
        return "cls_tower"
    if first.startswith(("cv2.", "one2one_cv2.")):
        # /model.23/cv2.0/cv2.0.2/Conv is the final box conv; cv2.0.0/... and cv2.0.1/... are the tower
        sub = rest.split("/")[1]
        return "box_final" if sub.endswith(".2") else "box_tower"
    return "tail"  # dfl/, Sigmoid, Concat*, Reshape*, TopK, ... : everything after the towers


@pytest.mark.fixtures
@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_head_preset_selects_the_sensitive_head_and_nothing_else(name):
    model = _load(name)
    excl = set(quant.resolve_exclusions(model, "yolov10-head").nodes)
    parts: dict[str, list[str]] = {}
    for n in model.graph.node:
        parts.setdefault(_head_part(n.name), []).append(n.name)
    assert parts["cls_tower"] and parts["box_tower"] and parts["tail"]
    assert set(parts["cls_tower"]) <= excl
    assert set(parts["box_final"]) <= excl and len(parts["box_final"]) == 3
    assert set(parts["tail"]) <= excl
    assert not excl & set(parts["body"]), "backbone/neck must stay quantizable"
    assert not excl & set(parts["box_tower"]), "box towers stay quantizable"
    ops = {n.name: n.op_type for n in model.graph.node}
    if not name.endswith("dfl144"):
        # the DFL softmax and the score sigmoid exist in decoded graphs and are kept
        assert "/model.23/dfl/Softmax" in excl and ops["/model.23/dfl/Softmax"] == "Softmax"
        assert "/model.23/Sigmoid" in excl
    else:
        assert "/model.23/Concat_dfl144" in excl


@pytest.mark.fixtures
def test_user_regex_that_matches_nothing_lists_near_matches():
    model = _load("yolov10n-synth")
    with pytest.raises(UserError) as exc:
        quant.resolve_exclusions(model, "none", [r"/model\.23/dfl/Softmx"])
    msg = str(exc.value)
    assert "--exclude-nodes" in msg and "near matches" in msg and "/model.23/dfl/Softmax" in msg


@pytest.mark.fixtures
def test_user_regex_and_op_types_add_to_the_preset():
    model = _load("yolov10n-synth")
    base = set(quant.resolve_exclusions(model, "yolov10-head").nodes)
    more = quant.resolve_exclusions(model, "yolov10-head", [r"/model\.22/"], ["MatMul"])
    extra = set(more.nodes) - base
    assert extra and all(x.startswith("/model.22/") or x.endswith("MatMul") or "MatMul" in x for x in extra)
    assert {n.name for n in model.graph.node if n.op_type == "MatMul"} <= set(more.nodes)
    assert more.patterns[-1] == r"/model\.22/"
    with pytest.raises(UserError, match=r"--exclude-op-types 'Softmx'.*Softmax"):
        quant.resolve_exclusions(model, "none", [], ["Softmx"])


def test_bad_regex_and_unknown_preset():
    model = onnx.load(str(DEMO_MODEL), load_external_data=False)
    with pytest.raises(UserError, match=r"not a valid regular expression"):
        quant.resolve_exclusions(model, "none", ["/model.23/(unclosed"])
    with pytest.raises(UserError, match=r"--preset 'fancy' is unknown"):
        quant.resolve_exclusions(model, "fancy")


def test_match_uses_modelopts_anchored_rule():
    names = ["/model.23/dfl/Softmax", "/x/model.23/dfl/Softmax"]
    hits = quant.match_patterns(names, [r"/model\.23/dfl/"])
    assert hits == {r"/model\.23/dfl/": ["/model.23/dfl/Softmax"]}  # re.match, not re.search


def _qdq_model() -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(w via DQ) -> Relu -> Sigmoid (not quantized); Relu -> Q -> DQ -> Identity: 2 Q, 3 DQ."""
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.int8), "w_q")
    ws = numpy_helper.from_array(np.array(0.1, np.float32), "w_s")
    xs = numpy_helper.from_array(np.array(0.02, np.float32), "x_s")
    zp = numpy_helper.from_array(np.array(0, np.int8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "zp"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "zp"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "zp"], ["wd"], name="dq_w"),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="/model.0/conv/Conv"),
        helper.make_node("Relu", ["c"], ["r"], name="/model.0/act/Relu"),
        helper.make_node("QuantizeLinear", ["r", "x_s", "zp"], ["rq"], name="q_r"),
        helper.make_node("DequantizeLinear", ["rq", "x_s", "zp"], ["rd"], name="dq_r"),
        helper.make_node("Sigmoid", ["r"], ["y"], name="/model.23/Sigmoid"),
        helper.make_node("Identity", ["rd"], ["y2"], name="/model.23/Identity"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 1, 4, 4]),
        ],
        initializer=[w, ws, xs, zp],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(m)
    return m


def test_graph_stats_counts_by_construction():
    s = quant.graph_stats(_qdq_model())
    assert s["quantize_linear"] == 2 and s["dequantize_linear"] == 3
    assert s["quantized_node_types"] == {"Conv": 1, "Identity": 1}
    assert s["quantized_nodes"] == 2
    assert s["qdq_types"] == {"INT8": 2}
    assert s["opset"] == 19


def test_unquantized_violations():
    m = _qdq_model()
    assert quant.unquantized_violations(m, ["/model.23/Sigmoid"]) == []
    assert quant.unquantized_violations(m, ["/model.23/Sigmoid", "/model.23/Identity"]) == ["/model.23/Identity"]
    assert quant.unquantized_violations(m, ["/model.0/conv/Conv"]) == ["/model.0/conv/Conv"]


def test_input_spec_and_io_types():
    model = onnx.load(str(DEMO_MODEL), load_external_data=False)
    name, shape = quant.input_spec(model)
    assert name == model.graph.input[0].name and shape == (1, 3, 640, 640)
    assert set(quant.io_types(model).values()) == {"FLOAT"}


def test_presets_are_documented():
    for name, p in quant.PRESETS.items():
        assert p.name == name and p.description
        for pat in p.node_patterns:
            re.compile(pat)
    assert quant.default_preset("int8") == "yolov10-head"


def test_qdq_candidates_keep_the_unquantized_layers_in_fp16_by_default():
    """TensorRT builds a Q/DQ ONNX strongly typed, even on 10.x where --fp16 exists: the dtype ModelOpt leaves
    the unquantized layers in is the one they run in, so the default is fp16 (trtexec --int8 --fp16), not fp32."""
    import quantize_onnx

    parser = quantize_onnx.build_parser()
    args = parser.parse_args(["--mode", "int8", "--onnx-path", "m.onnx", "--out", "q.onnx"])
    assert args.high_precision_dtype == "fp16"
    explicit = parser.parse_args(
        ["--mode", "int8", "--onnx-path", "m.onnx", "--out", "q.onnx", "--high-precision-dtype", "fp32"]
    )
    assert explicit.high_precision_dtype == "fp32"
