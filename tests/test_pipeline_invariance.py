"""Detections and stats do not depend on worker count, batch size or completion order."""

from __future__ import annotations

import pytest
from conftest import DEMO_MODEL, fixture_path

from common.backends import OrtBackend
from common.errors import UserError
from common.pipeline import EvalOptions, evaluate


def run(backend, dataset, **kw):
    return evaluate(backend, dataset, EvalOptions(progress=False, **kw))


def test_worker_count_does_not_change_results(mini_coco) -> None:
    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    one = run(backend, mini_coco, workers=1)
    many = run(backend, mini_coco, workers=3, prefetch_batches=5)
    assert one.detections == many.detections
    assert one.stats == many.stats


def test_static_batch_model_rejects_batch_above_one(mini_coco) -> None:
    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    with pytest.raises(UserError, match="static"):
        run(backend, mini_coco, batch_size=4)


@pytest.mark.fixtures
def test_batch_size_does_not_change_results(mini_coco) -> None:
    backend = OrtBackend(str(fixture_path("models", "yolov10n-synth-dynbatch.onnx")), ["CPUExecutionProvider"])
    assert backend.input.batch_dynamic
    one = run(backend, mini_coco, workers=1, batch_size=1)
    four = run(backend, mini_coco, workers=2, batch_size=4)  # 50 images: the last batch is partial
    assert four.batch_size == 4
    assert one.detections == four.detections
    assert one.stats == four.stats
