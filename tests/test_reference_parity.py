"""ORT CPU evaluator vs the Ultralytics reference stats on the shared fixture set (valA).

dfl144 models are cut from the raw84 graphs of the same weights, so they are held to the
raw84 references. Skipped where ../shared/fixtures is absent.
"""

from __future__ import annotations

import json

import pytest
from conftest import fixture_path

from common.data.coco import open_dataset
from common.eval.pipeline import EvalOptions, evaluate
from common.ort.session import OrtBackend

CASES = [
    ("yolov10n-synth.onnx", "yolov10n-synth", "e2e"),
    ("yolov10n-synth-raw84.onnx", "yolov10n-synth-raw84", "raw84"),
    ("yolov10n-synth-dfl144.onnx", "yolov10n-synth-raw84", "dfl144"),
    pytest.param("yolov10m-synth-dfl144.onnx", "yolov10m-synth-raw84", "dfl144", marks=pytest.mark.heavy),
]


@pytest.mark.fixtures
@pytest.mark.parametrize(("model", "reference", "layout"), CASES)
def test_matches_ultralytics_reference(model: str, reference: str, layout: str) -> None:
    onnx_path = fixture_path("models", model)
    ref = json.loads(fixture_path("reference", f"ultralytics_{reference}_valA_stats.json").read_text())
    root = fixture_path("synthcoco")
    dataset = open_dataset(root / "annotations" / "instances_valA.json", root / "valA", 0)
    backend = OrtBackend(str(onnx_path), ["CPUExecutionProvider"])
    result = evaluate(backend, dataset, EvalOptions(workers=2, progress=False))
    got, want = result.stats, ref["stats"]
    print(
        f"{model}: AP {got['AP']:.4f} vs {want['AP']:.4f}, AP50 {got['AP50']:.4f} vs {want['AP50']:.4f}, "
        f"detections {len(result.detections)} vs {ref['num_detections']}"
    )
    assert result.layout == layout
    assert result.num_images == ref["images"] == 300
    assert abs(result.stats["AP"] - ref["stats"]["AP"]) <= 0.002, (result.stats["AP"], ref["stats"]["AP"])
    assert abs(result.stats["AP50"] - ref["stats"]["AP50"]) <= 0.002, (result.stats["AP50"], ref["stats"]["AP50"])
    # the detection count tracks the reference closely too (conf/NMS/max_det semantics)
    assert abs(len(result.detections) - ref["num_detections"]) <= 0.01 * ref["num_detections"]
