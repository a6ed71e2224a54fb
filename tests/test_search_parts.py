"""The precision search's parts without ModelOpt: paired bootstrap AP, layer groups, Q/DQ graph facts."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re

import numpy as np
import onnx
import pytest
from conftest import fixture_path
from onnx import TensorProto, helper, numpy_helper

from common.core.errors import UserError
from common.quant import groups as G
from common.quant import qdq_graph as Q
from common.quant.score import match_images, paired_delta, spearman, weighted_ap

# ----------------------------------------------------------------------------- paired bootstrap AP


@pytest.fixture(scope="module")
def reference():
    """The Ultralytics detections of the fixture yolov10n on the first 60 valA images, as coco_rows."""
    from common.data.coco import load_coco

    coco = load_coco(fixture_path("synthcoco", "annotations", "instances_valA.json"))
    ids = sorted(coco.getImgIds())[:60]
    path = fixture_path("reference", "ultralytics_yolov10n-synth-raw84_valA_detections.json.gz")
    with gzip.open(path, "rt") as fh:
        dets = [d for d in json.load(fh) if d["image_id"] in set(ids)]
    rows = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in dets], float)
    return coco, ids, rows


def _pycocotools_ap(gt, dets, ids=None) -> float:
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        if ids is not None:
            ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.mark.fixtures
def test_unit_weights_give_pycocotools_ap_exactly(reference):
    coco, ids, rows = reference
    stats, matches = match_images(coco, rows, ids)
    dets = [{"image_id": int(r[0]), "bbox": list(r[1:5]), "score": r[5], "category_id": int(r[6])} for r in rows]
    ap = _pycocotools_ap(coco, dets, ids)
    assert stats["AP"] == pytest.approx(ap, abs=1e-12)
    assert weighted_ap(matches, np.ones((1, len(ids))))[0] == pytest.approx(ap, abs=1e-12)


def _duplicated(coco, ids, rows, weights):
    """A COCO set where image i appears weights[i] times (new ids), with its detections."""
    from pycocotools.coco import COCO

    images, anns, dets, nid, aid = [], [], [], 1, 1
    for i, k in zip(ids, weights, strict=True):
        for _ in range(int(k)):
            images.append({**coco.imgs[i], "id": nid})
            for a in coco.imgToAnns[i]:
                anns.append({**a, "id": aid, "image_id": nid})
                aid += 1
            dets += [
                {"image_id": nid, "bbox": list(r[1:5]), "score": float(r[5]), "category_id": int(r[6])}
                for r in rows[rows[:, 0] == i]
            ]
            nid += 1
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": coco.dataset["categories"]}
        gt.createIndex()
    return gt, dets


@pytest.mark.fixtures
def test_integer_weights_equal_duplicating_the_images(reference):
    coco, ids, rows = reference
    _, matches = match_images(coco, rows, ids)
    rng = np.random.default_rng(7)
    for _ in range(2):
        w = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)))
        gt, dets = _duplicated(coco, ids, rows, w)
        # equal up to the order of detections with tied scores across the copies
        assert weighted_ap(matches, w[None].astype(float))[0] == pytest.approx(_pycocotools_ap(gt, dets), abs=2e-4)


@pytest.mark.fixtures
def test_paired_interval_is_zero_for_the_same_model_and_excludes_zero_for_a_worse_one(reference):
    coco, ids, rows = reference
    stats, m = match_images(coco, rows, ids)
    same = paired_delta(m, m, 0.0, replicates=100, seed=1)
    assert (same.low, same.high) == (0.0, 0.0)
    worse_rows = rows.copy()
    worse_rows[:, 1:3] += 6.0  # every box shifted by 6 px: a real, consistent loss
    worse_stats, worse = match_images(coco, worse_rows, ids)
    point = worse_stats["AP"] - stats["AP"]
    d = paired_delta(worse, m, point, replicates=200, seed=1)
    assert point < 0 and d.low <= point <= d.high and d.high < 0


@pytest.mark.fixtures
def test_no_detections_scores_zero():
    from common.data.coco import load_coco

    coco = load_coco(fixture_path("synthcoco", "annotations", "instances_valA.json"))
    ids = sorted(coco.getImgIds())[:5]
    stats, m = match_images(coco, np.zeros((0, 7)), ids)
    assert stats["AP"] == 0.0 and weighted_ap(m, np.ones((2, 5))).tolist() == [0.0, 0.0]


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x = 1, 2.5, 2.5, 4 and y = 1, 2, 3, 4: Pearson of the ranks = 0.9486832981
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832981, abs=1e-9)
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


# ----------------------------------------------------------------------------- layer groups


def _load(name: str) -> onnx.ModelProto:
    return onnx.load(str(fixture_path("models", f"{name}.onnx")), load_external_data=False)


@pytest.mark.fixtures
@pytest.mark.parametrize("name", ["yolov10n-synth-dfl144", "yolov10n-synth"])
def test_yolov10_groups_cover_every_node_once(name):
    model = _load(name)
    groups = G.yolov10_groups(model)
    nodes = [n for g in groups for n in g.nodes]
    assert sorted(nodes) == sorted(n.name for n in model.graph.node)
    names = [g.name for g in groups]
    assert names[:23] == [f"model.{i}" for i in range(23)]
    branch = "one2one_" if name == "yolov10n-synth" else ""  # the end-to-end export uses the one-to-one head
    for i, stride in enumerate((8, 16, 32)):
        box = next(g for g in groups if g.name == f"model.23.{branch}cv2.{i}")
        cls = next(g for g in groups if g.name == f"model.23.{branch}cv3.{i}")
        assert box.kind == "box" and cls.kind == "cls" and f"stride {stride}" in box.label
        assert all(n.startswith(f"/model.23/{branch}cv2.{i}/") for n in box.nodes)
        assert all(n.startswith(f"/model.23/{branch}cv3.{i}/") for n in cls.nodes)
    has_dfl = any(g.kind == "dfl" for g in groups)
    assert has_dfl == (name == "yolov10n-synth")  # the dfl144 cut has no DFL in the graph
    post = next(g for g in groups if g.kind == "post")
    assert all(n.startswith("/model.23/") for n in post.nodes)


def test_group_key_of_torch_and_onnx_names():
    assert G.group_key("model.2.m.0.cv1.conv", "model.23") == "model.2"
    assert G.group_key("/model.2/m.0/cv1/conv/Conv", "model.23") == "model.2"
    assert G.group_key("model.23.cv3.1.0.0.conv", "model.23") == "model.23.cv3.1"
    assert G.group_key("/model.23/one2one_cv2.2/one2one_cv2.2.0/conv/Conv", "model.23") == "model.23.one2one_cv2.2"
    assert G.group_key("model.23.dfl.conv", "model.23") == "model.23.dfl"
    assert G.group_key("/model.23/Concat_dfl144", "model.23") == "model.23.post"
    assert G.group_key("/Concat", "model.23") == "other"


def test_exclusion_patterns_match_exactly_the_named_node():
    names = ["/model.23/Concat", "/model.23/Concat_1", "/model.2/cv1/conv/Conv", "/model.2X/cv1/conv/Conv"]
    for pat, name in zip(G.exclusion_patterns(names), names, strict=True):
        assert [n for n in names if re.match(pat, n)] == [name]


@pytest.mark.fixtures
def test_user_group_file(tmp_path):
    model = _load("yolov10n-synth-dfl144")
    good = tmp_path / "g.json"
    good.write_text(json.dumps({"stem": [r"/model\.[01]/"], "head-cls": [r"/model\.23/cv3\."]}))
    groups = G.make_groups(model, str(good))
    assert [g.name for g in groups] == ["stem", "head-cls"]
    assert all(n.startswith(("/model.0/", "/model.1/")) for n in groups[0].nodes) and len(groups[0].nodes) == 6
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": [r"/model\.23/dfl/Softmx"]}))
    with pytest.raises(UserError, match=r"matches no node"):
        G.make_groups(model, str(bad))
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"a": [r"/model\.0/"], "b": [r"/model\.0/conv"]}))
    with pytest.raises(UserError, match=r"in both 'a' and 'b'"):
        G.make_groups(model, str(twice))
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps(["/model.0/"]))
    with pytest.raises(UserError, match=r"expected a JSON object"):
        G.make_groups(model, str(shape))
    with pytest.raises(UserError, match=r"no such file"):
        G.make_groups(model, str(tmp_path / "missing.json"))


# ----------------------------------------------------------------------------- Q/DQ graph facts


def _chain(quantized: tuple[bool, bool, bool]) -> onnx.ModelProto:
    """x[1,4,8,8] -> conv0 -> conv1 -> conv2 -> y; conv i reads Q/DQ'd input and weight when quantized[i]."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    inits.append(numpy_helper.from_array(np.array(0, np.int8), "zp"))
    for i, q in enumerate(quantized):
        w = numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), f"w{i}")
        inits += [w, numpy_helper.from_array(np.array(0.05, np.float32), f"s{i}")]
        x_in, w_in = prev, f"w{i}"
        if q:
            nodes += [
                helper.make_node("QuantizeLinear", [prev, f"s{i}", "zp"], [f"xq{i}"], name=f"q{i}"),
                helper.make_node("DequantizeLinear", [f"xq{i}", f"s{i}", "zp"], [f"xd{i}"], name=f"dq{i}"),
                helper.make_node("QuantizeLinear", [f"w{i}", f"s{i}", "zp"], [f"wq{i}"], name=f"wq{i}"),
                helper.make_node("DequantizeLinear", [f"wq{i}", f"s{i}", "zp"], [f"wd{i}"], name=f"wdq{i}"),
            ]
            x_in, w_in = f"xd{i}", f"wd{i}"
        out = "y" if i == len(quantized) - 1 else f"c{i}"
        nodes.append(helper.make_node("Conv", [x_in, w_in], [out], name=f"conv{i}", pads=[1, 1, 1, 1]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_conv_macs_share_and_boundaries_by_hand():
    model = _chain((True, False, True))
    macs = Q.conv_macs(model)
    assert macs == {f"conv{i}": 1 * 4 * 8 * 8 * 4 * 3 * 3 for i in range(3)}  # N*Cout*H*W*Cin*kh*kw
    assert Q.int8_mac_share(model, macs) == pytest.approx(2 / 3)
    # input -> conv0 (q): 1; conv0 -> conv1 (f): 1; conv1 -> conv2 (q): 1; conv2 (q) -> output: 1
    assert Q.precision_boundaries(model) == {"boundaries": 4, "islands": 2, "casts": 0}
    assert Q.precision_boundaries(_chain((True, True, True)))["islands"] == 1


def test_calibration_cache_round_trip(tmp_path):
    scales = {"images": 0.00392156862, "/model.0/act/Mul_output_0": 0.123456789}
    path = Q.write_calibration_cache(scales, tmp_path / "c.cache")
    lines = path.read_text().splitlines()
    assert lines[0] == Q.CACHE_HEADER and lines[1].startswith("images: ") and len(lines[1].split(": ")[1]) == 8
    back = Q.read_calibration_cache(path)
    assert back == {k: float(np.float32(v)) for k, v in scales.items()}
    (tmp_path / "bad.cache").write_text("hdr\nimages: xyz\n")
    with pytest.raises(UserError, match=r"bad.cache:2"):
        Q.read_calibration_cache(tmp_path / "bad.cache")


def test_activation_scales_are_the_activation_quantizers_only():
    scales = Q.activation_scales(_chain((True, False, True)))
    assert scales == {"x": pytest.approx(0.05), "c1": pytest.approx(0.05)}


def test_strip_qdq_restores_exactly_the_float_path():
    import onnxruntime as ort

    quant, plain = _chain((True, True, True)), _chain((True, False, True))
    stripped = Q.strip_qdq(quant, ["conv1"])
    onnx.checker.check_model(stripped)
    assert Q.quantized_names(stripped) == {"conv0", "conv2"}
    assert sum(n.op_type == "QuantizeLinear" for n in stripped.graph.node) == 4
    assert {t.name for t in stripped.graph.initializer} == {"zp", "w0", "w1", "w2", "s0", "s2"}
    x = np.random.default_rng(1).normal(size=(1, 4, 8, 8)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    np.testing.assert_array_equal(run(stripped), run(plain))


def test_strip_qdq_drops_a_shared_pair_that_only_passive_readers_keep():
    """As ModelOpt with nodes_to_exclude: a pair read by an excluded Conv and a Concat goes from both (a
    Concat never asks for one); a pair that a quantized Conv still reads stays, for it and the Concat."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 4, 1, 1), 0.1, np.float32), "w")
    sc, zp = numpy_helper.from_array(np.float32(0.05), "sc"), numpy_helper.from_array(np.int8(0), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q0"], name="q0"),
        helper.make_node("DequantizeLinear", ["q0", "sc", "zp"], ["d0"], name="dq0"),
        helper.make_node("Conv", ["d0", "w"], ["a"], name="convA"),
        helper.make_node("QuantizeLinear", ["a", "sc", "zp"], ["q1"], name="q1"),
        helper.make_node("DequantizeLinear", ["q1", "sc", "zp"], ["d1"], name="dq1"),
        helper.make_node("Concat", ["d0", "d1"], ["y1"], name="cat", axis=1),
        helper.make_node("Conv", ["d1", "w"], ["y2"], name="convB"),
        helper.make_node("Conv", ["d1", "w"], ["y3"], name="convC"),
    ]
    shapes = {"y1": [1, 8, 8, 8], "y2": [1, 4, 8, 8], "y3": [1, 4, 8, 8]}
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, v) for n, v in shapes.items()]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])], info, [w, sc, zp]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    stripped = Q.strip_qdq(model, ["convA", "convB"])
    onnx.checker.check_model(stripped)
    inputs = {n.name: list(n.input) for n in stripped.graph.node}
    assert inputs["convA"][0] == "x" and inputs["cat"] == ["x", "d1"]  # pair 0 is gone from the Concat too
    assert inputs["convB"][0] == "a" and inputs["convC"][0] == "d1"  # pair 1 stays for convC (and the Concat)
    assert [n.name for n in stripped.graph.node if n.op_type == "QuantizeLinear"] == ["q1"]
    x = np.random.default_rng(2).normal(size=(1, 4, 8, 8)).astype(np.float32)
    y1 = ort.InferenceSession(stripped.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y1"], {"x": x})
    np.testing.assert_array_equal(y1[0][:, :4], x)  # the Concat reads the float input, not its fake-quant


def test_resume_of_a_search_cut_by_other_rules_says_to_start_again(tmp_path):
    """A state written before the candidate rules changed is refused with its own one-line message; a
    state of other inputs keeps the inputs message."""
    from common.quant.search_state import SearchState

    state = SearchState.open(tmp_path, {"source_sha256": "a"}, resume=False)  # no strip_rules: an older tool
    state.save()
    with pytest.raises(UserError, match=r"earlier version of this tool \(strip_rules differ.*new --out"):
        SearchState.open(tmp_path, {"source_sha256": "a", "strip_rules": Q.STRIP_RULES}, resume=True)
    with pytest.raises(UserError, match=r"other inputs \(source_sha256, strip_rules differ"):
        SearchState.open(tmp_path, {"source_sha256": "b", "strip_rules": Q.STRIP_RULES}, resume=True)


# ----------------------------------------------------------------------------- proxy rankings


def test_proxy_files_of_both_schemas_sum_per_group(tmp_path):
    from common.quant.proxy import agreement, group_scores, read_proxy

    users = tmp_path / "layer-sensitivity-report.json"
    users.write_text(
        json.dumps(
            {
                "scheme": {},
                "layer_sensitivity": [
                    {"layer": "model.2.m.0.cv1.conv", "num_bits": 8, "sensitivity": 0.5, "size_cost": 1.0},
                    {"layer": "model.2.cv2.conv", "num_bits": 8, "sensitivity": 0.25, "size_cost": 1.0},
                    {"layer": "model.23.cv3.1.0.0.conv", "num_bits": 8, "sensitivity": 2.0, "size_cost": 1.0},
                    {"layer": "model.9.cv1.conv", "num_bits": 8, "sensitivity": 0.1, "size_cost": 1.0},
                ],
            }
        )
    )
    scores = group_scores(read_proxy(users))
    assert scores == {"model.2": 0.75, "model.23.cv3.1": 2.0, "model.9": 0.1}
    modelopt = tmp_path / "state.json"
    modelopt.write_text(json.dumps({"candidate_stats": {"model.4.cv1.conv.quant_recipe": {"scores": [0.3, 0.7]}}}))
    assert read_proxy(modelopt) == {"model.4.cv1.conv": 0.7}
    measured = [("model.23.cv3.1", 0.03), ("model.2", 0.01), ("model.9", 0.002), ("model.5", 0.0)]
    got = agreement(measured, scores)
    assert got["spearman"] == pytest.approx(1.0) and got["groups_compared"] == 3
    assert got["groups_without_proxy"] == ["model.5"]
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"layer_sensitivity": []}))
    with pytest.raises(UserError, match="no layer scores"):
        read_proxy(empty)
