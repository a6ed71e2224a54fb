"""Detections and stats do not depend on worker count, batch size or completion order."""

from __future__ import annotations

import pytest
from conftest import DEMO_MODEL, fixture_path

from common.core.errors import UserError
from common.eval.pipeline import EvalOptions, evaluate
from common.ort.session import OrtBackend


def run(backend, dataset, **kw):
    return evaluate(backend, dataset, EvalOptions(progress=False, **kw))


def test_worker_count_does_not_change_results(mini_coco) -> None:
    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    one = run(backend, mini_coco, workers=1)
    many = run(backend, mini_coco, workers=3, prefetch_batches=5)
    assert one.detections == many.detections
    assert one.stats == many.stats


def test_sequential_path_equals_the_pipelined_one(mini_coco) -> None:
    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    seq = run(backend, mini_coco, workers=0)
    par = run(backend, mini_coco, workers=2, post_workers=2)
    assert seq.timings["mode"] == "sequential" and par.timings["mode"] == "pipelined"
    assert seq.detections == par.detections and seq.stats == par.stats


class AsyncWrapper:
    """A backend with submit/wait whose results come back late and out of call order."""

    max_in_flight = 2

    def __init__(self, inner: OrtBackend) -> None:
        self.inner, self.name, self.queue, self.count = inner, "async-fake", {}, 0
        self.input, self.outputs = inner.input, inner.outputs

    def infer(self, batch):
        return self.inner.infer(batch)

    def submit(self, batch):
        token, self.count = self.count, self.count + 1
        self.queue[token] = batch.copy()
        return token

    def wait(self, token):
        return self.inner.infer(self.queue.pop(token))

    def metadata(self):
        return {}

    def close(self) -> None:
        pass


def test_async_backend_gets_the_same_results(mini_coco) -> None:
    inner = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    ref = run(inner, mini_coco, workers=2)
    got = run(AsyncWrapper(inner), mini_coco, workers=2)
    assert got.timings["mode"] == "pipelined-async"
    assert got.detections == ref.detections


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


def test_switch_interval_is_applied_only_during_the_run(mini_coco) -> None:
    import sys

    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    before = sys.getswitchinterval()
    ref = run(backend, mini_coco, workers=2)
    got = run(backend, mini_coco, workers=2, switch_interval_ms=0.5)
    assert got.detections == ref.detections and got.timings["switch_interval_ms"] == 0.5
    assert sys.getswitchinterval() == before
    with pytest.raises(UserError, match="switch_interval_ms"):
        run(backend, mini_coco, switch_interval_ms=0)
    assert sys.getswitchinterval() == before
