"""Loader processes (--loaders processes) hand on exactly what the loader threads do, free their shared-memory
slots, fall back to pickling when a slot is missing or too small, and fail loudly instead of hanging."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from conftest import DEMO_MODEL, MINI, fixture_path, run_script

from common.core.errors import OptionError, UserError
from common.data.loading import ThreadLoaders, load_image, tensor_bytes
from common.eval.cli import loader_factory
from common.eval.options import check_loaders, resolve_loaders
from common.eval.pipeline import EvalOptions, evaluate
from common.ort.session import OrtBackend
from common.throughput.loader_processes import ProcessLoaders, SlotRing

MODES = ("cpu", "gpu-normalize", "gpu-letterbox")


def _jobs(dataset, n=6):
    return [(i, str(dataset.image_path(i))) for i in dataset.image_ids[:n]]


def _biggest(dataset, mode, size=640):
    imgs = dataset.coco.imgs
    return max(tensor_bytes(mode, size, imgs[i]["width"], imgs[i]["height"]) for i in dataset.image_ids)


def _same(a, b) -> None:
    assert [x.image_id for x in a] == [x.image_id for x in b]
    for x, y in zip(a, b, strict=True):
        assert x.meta == y.meta
        assert x.tensor.dtype == y.tensor.dtype and x.tensor.shape == y.tensor.shape
        assert np.array_equal(x.tensor, y.tensor)


@pytest.mark.parametrize("mode", MODES)
def test_processes_hand_on_what_threads_do(mini_coco, mode) -> None:
    jobs = _jobs(mini_coco)
    with ThreadLoaders(2, 640, mode) as threads:
        want = threads.load(jobs).result()
    with ProcessLoaders(2, 640, mode, slots=8, slot_bytes=_biggest(mini_coco, mode)) as procs:
        got = procs.load(jobs[:3]).result() + procs.load(jobs[3:]).result()
        assert procs.ring.free == 8 - len(jobs)  # each image holds its slot while a view of it lives
        _same(got, want)
        del got
        gc.collect()
        assert procs.ring.free == 8  # ... and frees it with the last view


def test_small_or_missing_slots_travel_pickled(mini_coco) -> None:
    jobs = _jobs(mini_coco, 4)
    want = [load_image(p, i, 640, "gpu-letterbox") for i, p in jobs]
    with ProcessLoaders(1, 640, "gpu-letterbox", slots=2, slot_bytes=16) as procs:  # nothing fits
        small = procs.load(jobs).result()
        assert procs.ring.free == 2  # no slot taken while the arrays live: they came pickled
        _same(small, want)
    with ProcessLoaders(1, 640, "gpu-letterbox", slots=1, slot_bytes=_biggest(mini_coco, "gpu-letterbox")) as procs:
        few = procs.load(jobs).result()  # one slot for four images: three come pickled
        assert procs.ring.free == 0
        _same(few, want)


def test_an_unreadable_image_is_a_user_error_naming_it(mini_coco, tmp_path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    jobs = [*_jobs(mini_coco, 1), (999, str(bad))]
    with ProcessLoaders(1, 640, "cpu", slots=4, slot_bytes=tensor_bytes("cpu", 640, 0, 0)) as procs:
        with pytest.raises(UserError, match=r"broken\.jpg"):
            procs.load(jobs).result(timeout=60)
        assert procs.ring.free == 4  # the failed chunk's slots came back
        assert len(procs.load(jobs[:1]).result(timeout=60)) == 1  # the worker is still there


def test_a_chunk_handed_to_a_worker_cannot_be_cancelled(mini_coco) -> None:
    with ProcessLoaders(1, 640, "gpu-letterbox", slots=4, slot_bytes=_biggest(mini_coco, "gpu-letterbox")) as procs:
        fut = procs.load(_jobs(mini_coco, 2))
        assert not fut.cancel()  # the evaluator cancels what is pending on an error: the reader must still deliver
        assert len(fut.result(timeout=60)) == 2


def test_a_dead_worker_fails_its_chunks_instead_of_hanging(mini_coco) -> None:
    with ProcessLoaders(1, 640, "gpu-letterbox", slots=4, slot_bytes=_biggest(mini_coco, "gpu-letterbox")) as procs:
        procs.load(_jobs(mini_coco, 1)).result(timeout=60)
        procs._procs[0].kill()
        procs._procs[0].wait()
        with pytest.raises(RuntimeError, match="loader process 0"):
            procs.load(_jobs(mini_coco, 2)).result(timeout=60)


def test_a_worker_that_cannot_start_is_reported(monkeypatch) -> None:
    import common.throughput.loader_processes as L

    monkeypatch.setattr(L.sys, "executable", "/bin/false")  # exits at once, never says it is ready
    with ProcessLoaders(1, 640, "cpu", slots=1, slot_bytes=16) as procs:
        with pytest.raises(RuntimeError, match="loader process 0 did not start"):
            procs.ready()


def test_ring_slots_are_reused_and_exhaustion_is_reported() -> None:
    ring = SlotRing(2, 64)
    a = ring.view(ring.acquire(), (4, 4), np.float32)
    b = ring.view(ring.acquire(), (64,), np.uint8)
    assert ring.acquire() == -1 and ring.free == 0
    a[:] = 1.5
    del a, b
    gc.collect()
    assert ring.free == 2
    ring.close_fd()


def test_check_loaders_refuses_what_cannot_run() -> None:
    check_loaders("threads", "gpu")
    check_loaders("processes", "cpu")
    with pytest.raises(OptionError, match=r"^loaders processes.*with decode gpu") as err:
        check_loaders("processes", "gpu")
    assert err.value.param == "loaders"
    assert err.value.render().startswith("--loaders processes decodes with OpenCV; with --decode gpu")
    with pytest.raises(OptionError, match=r"^loaders fork: choose one of auto, threads, processes"):
        check_loaders("fork")


def test_auto_loaders_are_processes_only_for_large_gpu_runs_on_many_cores() -> None:
    big, gpu = 5000, "gpu-letterbox"
    assert resolve_loaders("auto", big, "cpu", gpu, cores=16) == "processes"
    assert resolve_loaders("auto", big, "cpu", "gpu-normalize", cores=8) == "processes"
    assert resolve_loaders("auto", 999, "cpu", gpu, cores=16) == "threads"  # too few images to pay the start
    assert resolve_loaders("auto", big, "cpu", gpu, cores=7) == "threads"  # too few cores
    assert resolve_loaders("auto", big, "cpu", "cpu", cores=16) == "threads"  # a CPU run keeps threads
    assert resolve_loaders("auto", big, "gpu", gpu, cores=16) == "threads"  # the lanes decode
    assert resolve_loaders("threads", big, "cpu", gpu, cores=16) == "threads"  # explicit values win
    assert resolve_loaders("processes", 1, "cpu", "cpu", cores=1) == "processes"


def test_auto_loaders_resolve_in_the_evaluation_and_are_recorded(mini_coco) -> None:
    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    opts = EvalOptions(loaders="auto", workers=2, progress=False)
    res = evaluate(backend, mini_coco, opts, loader_factory(opts))
    assert res.timings["loaders"] == "threads"  # a CPU run of a few images


@pytest.mark.parametrize("batch", [1, 3])
def test_evaluation_with_loader_processes_equals_threads(mini_coco, batch) -> None:
    model = DEMO_MODEL if batch == 1 else fixture_path("models", "yolov10n-synth-dynbatch.onnx")
    backend = OrtBackend(str(model), ["CPUExecutionProvider"])
    opts = {"batch_size": batch, "workers": 2, "progress": False}
    threads = evaluate(backend, mini_coco, EvalOptions(**opts))
    popts = EvalOptions(loaders="processes", **opts)
    procs = evaluate(backend, mini_coco, popts, loader_factory(popts))
    assert procs.timings["loaders"] == "processes" and threads.timings["loaders"] == "threads"
    assert np.array_equal(procs.rows, threads.rows) and procs.stats == threads.stats


def test_cli_refuses_processes_with_gpu_decoding_before_any_work(tmp_path) -> None:
    out = tmp_path / "m.json"
    flags = ["--loaders", "processes", "--preprocess", "gpu-letterbox", "--decode", "gpu", "--out", str(out)]
    r = run_script("eval_yolov10m_onnx_coco.py", "--onnx-path", str(DEMO_MODEL), "--data-root", str(MINI), *flags)
    assert r.returncode == 2, r.stderr
    assert "--loaders processes" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_a_slot_view_is_the_slot_and_frees_it_with_the_last_view() -> None:
    ring = SlotRing(2, 64)
    slot = ring.acquire()
    with pytest.raises(ValueError, match="does not fit a 64-byte slot"):
        ring.view(slot, (65,), np.uint8)
    a = ring.view(slot, (4, 4), np.float32)
    b = a.reshape(16)  # a view of the view holds the slot too
    a[...] = 2.5
    assert b.tolist() == [2.5] * 16 and ring.free == 1
    other = ring.view(ring.acquire(), (64,), np.uint8)
    other[...] = 7
    assert b.tolist() == [2.5] * 16 and ring.free == 0  # slots do not overlap
    del a
    assert ring.free == 0  # b still holds it
    del b
    assert ring.free == 1
    del other
    assert ring.free == 2
    ring.close_fd()
