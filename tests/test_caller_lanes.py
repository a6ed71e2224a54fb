"""common.throughput.caller_lanes (lanes driven by the caller's thread) on the runtime doubles' host memory."""

from __future__ import annotations

import threading

import pytest
import trt_double as D
from test_gpu_lanes import ClockMemory, _deferred_lanes_run

from common.throughput.caller_lanes import CallerLanePool
from common.throughput.lanes import Lane


def _caller_pool(mem, lanes: int, depth: int, log: list, pipelines=None) -> CallerLanePool:
    base = [Lane(mem) for _ in range(lanes)]
    twins = [[Lane(mem, stream=lane.stream, owns_stream=False) for _ in range(depth - 1)] for lane in base]
    names = {id(lane): f"{i}" for i, lane in enumerate(base)}
    names.update({id(t): f"{i}.{k + 1}" for i, ts in enumerate(twins) for k, t in enumerate(ts)})

    def enqueue(on: Lane, batch: int):
        log.append(("begin", batch, names[id(on)], threading.get_ident()))
        mem.work(on.stream, 1.0 + batch)
        return lambda: log.append(("collect", batch)) or batch * 10

    return CallerLanePool(base, enqueue, "caller", overlap=True, twins=twins, pipelines=pipelines)


def _close(pool: CallerLanePool) -> None:
    pool.close()
    for lane in [*pool.twins, *pool.lanes]:
        lane.close()


def test_the_callers_thread_runs_every_batch_one_slot_after_the_other_alternating_streams() -> None:
    mem = ClockMemory()
    log: list = []
    threads_before = threading.active_count()
    pool = _caller_pool(mem, 3, 2, log)
    assert threading.active_count() == threads_before  # no thread of its own
    assert pool.max_in_flight == 6  # a batch per slot, none queued behind them
    tokens = [pool.submit(i) for i in range(6)]
    assert [entry[2] for entry in log] == ["0", "1", "2", "0.1", "1.1", "2.1"]
    assert not any(entry[0] == "collect" for entry in log)  # submit only enqueues
    assert [pool.wait(t) for t in tokens] == [i * 10 for i in range(6)]
    assert {entry[3] for entry in log if entry[0] == "begin"} == {threading.get_ident()}
    assert sorted(pool.gpu_ms) == [1.0 + i for i in range(6)]  # each batch's own work, not its stream's
    _close(pool)
    assert not mem.streams


def test_a_slot_still_busy_at_its_turn_is_waited_for_and_its_result_kept() -> None:
    mem = ClockMemory()
    log: list = []
    pool = _caller_pool(mem, 2, 1, log)
    tokens = [pool.submit(i) for i in range(5)]  # two slots: batch 2 needs batch 0's slot
    assert [e[:3] for e in log] == [
        ("begin", 0, "0"),
        ("begin", 1, "1"),
        ("collect", 0),
        ("begin", 2, "0"),
        ("collect", 1),
        ("begin", 3, "1"),
        ("collect", 2),
        ("begin", 4, "0"),
    ]
    assert [pool.wait(t) for t in reversed(tokens)] == [40, 30, 20, 10, 0]
    _close(pool)


def test_a_batch_for_the_lane_itself_waits_for_its_streams_batches_and_runs_on_the_lane() -> None:
    mem = ClockMemory()
    log: list = []
    pool = _caller_pool(mem, 2, 2, log, pipelines=lambda on, batch: batch != 7)
    first = [pool.submit(i) for i in range(3)]  # slots 0, 1, 0.1
    odd = pool.submit(7)  # the next slot is 1.1, which may not take it: lane 1 once its stream is free
    pinned = pool.submit(8, lane=0)
    assert [e[:3] for e in log] == [
        ("begin", 0, "0"),
        ("begin", 1, "1"),
        ("begin", 2, "0.1"),
        ("collect", 1),
        ("begin", 7, "1"),
        ("collect", 0),
        ("collect", 2),
        ("begin", 8, "0"),
    ]
    assert [pool.wait(t) for t in [*first, odd, pinned]] == [0, 10, 20, 70, 80]
    _close(pool)


def test_warm_up_and_the_latency_pass_run_on_the_callers_thread_with_nothing_in_flight() -> None:
    mem = ClockMemory()
    log: list = []
    pool = _caller_pool(mem, 2, 1, log)
    token = pool.submit(1)
    assert pool.call_on(1, lambda lane: lane is pool.lanes[1]) is True
    assert token.done() and pool.wait(token) == 10  # finished before the call ran
    assert pool.call_all(lambda lane: pool.lanes.index(lane)) == [0, 1]
    gpu, host = pool.timed_runs(2, 3, lane_index=1)
    assert gpu == [3.0, 3.0, 3.0] and len(host) == 3 and len(pool.gpu_ms) == 1
    _close(pool)


def test_another_thread_is_refused() -> None:
    mem = D.FakeCudaMemory()
    pool = _caller_pool(mem, 1, 1, [])
    errors: list[BaseException] = []

    def other() -> None:
        try:
            pool.submit(0)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and "thread that made them" in str(errors[0])
    _close(pool)


def test_a_failing_batch_reaches_its_caller_and_frees_its_slot() -> None:
    mem = D.FakeCudaMemory()
    lane = Lane(mem)

    def enqueue(on: Lane, batch: int):
        if batch == 1:
            raise ValueError("bad batch")
        return lambda: batch

    pool = CallerLanePool([lane], enqueue, "caller")
    bad = pool.submit(1)
    with pytest.raises(ValueError, match="bad batch"):
        pool.wait(bad)
    assert pool.wait(pool.submit(2)) == 2
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(3)
    lane.close()


@pytest.mark.parametrize(
    ("order", "batch", "model", "depth"),
    [("overlap", 1, None, 2), ("overlap", 1, None, 1), ("serial", 2, "yolov10n-synth-dynbatch.onnx", None)],
)
def test_caller_driven_lanes_give_the_plain_sessions_detections_on_the_deferred_double(
    monkeypatch, order, batch, model, depth
) -> None:
    """OrtCudaBackend's lanes (GPU letterbox, GPU post-processing) driven by the evaluator's thread on
    ``DeferredCudaMemory``: every batch equals the plain CPU session's, the partial last batch too."""
    got, ref, meta, on_twins, mem = _deferred_lanes_run(monkeypatch, order, batch, model, depth, lane_threads="main")
    assert meta["lane_threads"] == "main"
    assert meta["in_flight"] == 3 * (depth or 1)
    assert any(on_twins) is (depth == 2)
    assert got.detections == ref.detections and got.stats == ref.stats
    assert got.timings["inference_gpu"]["count"] == -(-7 // batch)
    assert mem.live == 0


def test_caller_driven_graph_lanes_capture_and_replay_on_the_callers_thread(monkeypatch, tmp_path) -> None:
    """ONNX Runtime keeps a captured CUDA graph per session and thread (the double refuses a graph session run
    from a second thread): driven by the caller, every lane captures, replays, runs the partial batch and the
    latency pass on the thread that made the backend."""
    import numpy as np
    import onnxruntime as ort
    from test_gpu_lanes import _graph_lanes

    from common.ort.options import CUDA_EP

    ort_cuda, _, calls = _graph_lanes(monkeypatch)
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    backend = ort_cuda.OrtCudaBackend(
        str(onnx),
        {CUDA_EP: {"enable_cuda_graph": "1"}},
        max_batch=4,
        lanes=3,
        memory=D.FakeCudaMemory(),
        gpu_order="overlap",
        lane_threads="main",
    )
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    try:
        tokens = [backend.submit(x) for _ in range(backend.max_in_flight)]
        outs = [backend.wait(t)[0] for t in tokens] + [backend.infer(x[:3])[0]]
        timed = backend.latency_runs(x, 2)
        meta = backend.metadata()
    finally:
        backend.close()
    ref = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for out in outs[:-1]:
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outs[-1], ref[:3], rtol=1e-6, atol=1e-6)
    assert len(timed["gpu_ms"]) == 2 and meta["lane_threads"] == "main" and meta["in_flight"] == 6
    assert len(calls) == 3 * ort_cuda.GRAPH_WARMUP_RUNS + 6 + 1 + 2  # a batch per lane and twin


def test_the_graph_double_refuses_a_session_run_from_a_second_thread(monkeypatch, tmp_path) -> None:
    """The check above can fail: a lane captured on its own thread, then run from the caller's."""
    from test_gpu_lanes import _graph_lanes

    from common.ort.options import CUDA_EP

    ort_cuda, _, _ = _graph_lanes(monkeypatch)
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    backend = ort_cuda.OrtCudaBackend(
        str(onnx), {CUDA_EP: {"enable_cuda_graph": "1"}}, max_batch=4, lanes=1, memory=D.FakeCudaMemory()
    )
    try:
        with pytest.raises(AssertionError, match="second thread"):
            backend._run(backend._lanes.lanes[0], 4)
    finally:
        backend.close()


def test_an_unknown_lane_threads_value_is_refused_before_any_session(monkeypatch, tmp_path) -> None:
    from test_gpu_lanes import _graph_lanes

    ort_cuda, asked, _ = _graph_lanes(monkeypatch)
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    with pytest.raises(ValueError, match="lane_threads must be one of per-lane, main, got 'both'"):
        ort_cuda.OrtCudaBackend(str(onnx), max_batch=2, lanes=2, memory=D.FakeCudaMemory(), lane_threads="both")
    assert asked == []
