"""common.throughput.lanes (the staging and lane layer of the ORT IO-binding and TensorRT backends) on the
runtime double's host memory (tests/trt_double.FakeCudaMemory): no GPU needed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import trt_double as D

from common.throughput.lanes import HostLease, Lane, LanePool, Staged, Staging


class ClockMemory(D.FakeCudaMemory):
    """FakeCudaMemory whose events read a per-stream "GPU clock" that only the work enqueued on that
    stream advances: elapsed times are then exact and independent of host scheduling."""

    def __init__(self) -> None:
        super().__init__()
        self.clock: dict[int, float] = {}

    def event(self, blocking: bool = False) -> ClockEvent:
        return ClockEvent(self)

    def work(self, stream: object, ms: float) -> None:
        handle = stream.handle  # type: ignore[attr-defined]
        self.enqueue(handle, lambda: self.clock.__setitem__(handle, self.clock.get(handle, 0.0) + ms))

    def elapsed_ms(self, start: ClockEvent, end: ClockEvent) -> float:
        assert start.t is not None and end.t is not None, "double: event not recorded"
        return end.t - start.t

    def stream_wait_event(self, stream: object, event: ClockEvent) -> None:
        """The stream's clock moves on to the event's time if that is later (a cross-stream dependency)."""
        handle = stream.handle  # type: ignore[attr-defined]
        self.waits.append((handle, event))
        self.enqueue(handle, lambda: self.clock.__setitem__(handle, max(self.clock.get(handle, 0.0), event.t or 0.0)))


class ClockEvent:
    def __init__(self, mem: ClockMemory) -> None:
        self.mem, self.t = mem, None

    def record(self, stream: object) -> None:
        handle = stream.handle  # type: ignore[attr-defined]
        self.mem.enqueue(handle, lambda: setattr(self, "t", self.mem.clock.get(handle, 0.0)))

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_staging_grows_only_and_round_trips() -> None:
    mem = D.FakeCudaMemory()
    s = Staging(mem, "tensor 'x'")
    stream = mem.stream()
    assert s.ensure(64) is True and s.capacity == 64
    first = s.device_ptr
    assert s.ensure(32) is False and s.device_ptr == first  # never shrinks, same address
    data = np.arange(12, dtype=np.float32)
    s.upload(data, stream)
    s.view(np.float32, (12,))[:] = 0  # the pinned side is cleared; the device side keeps the data
    s.download(data.nbytes, stream)
    np.testing.assert_array_equal(s.view(np.float32, (12,)), data)
    assert s.ensure(4096) is True and s.capacity == 4096
    s.free()
    stream.close()
    assert mem.live == 0


def test_host_lease_outlives_its_staging_while_a_view_is_held() -> None:
    mem = D.FakeCudaMemory()
    s = Staging(mem)
    s.ensure(16)
    view = s.view(np.int32, (4,))
    view[:] = [1, 2, 3, 4]
    s.free()
    assert mem.live == 1  # the pinned buffer: still referenced by ``view``
    assert list(view) == [1, 2, 3, 4]
    del view
    assert mem.live == 0
    with pytest.raises(ValueError, match="does not fit"):
        HostLease(mem.pinned_buffer(8)).view(np.float64, (2,))


class OneGpuMemory(ClockMemory):
    """A GPU that runs one piece of work at a time, in the order it is enqueued, on one clock shared by
    every stream: a batch whose span has another lane's work enqueued inside it gets that time too."""

    def work(self, stream: object, ms: float) -> None:
        handle = stream.handle  # type: ignore[attr-defined]
        self.enqueue(handle, lambda: self.clock.__setitem__(0, self.clock.get(0, 0.0) + ms))

    def event(self, blocking: bool = False) -> ClockEvent:
        return _SharedClockEvent(self)


class _SharedClockEvent(ClockEvent):
    def record(self, stream: object) -> None:
        self.mem.enqueue(stream.handle, lambda: setattr(self, "t", self.mem.clock.get(0, 0.0)))  # type: ignore[attr-defined]


def _pool(
    mem: ClockMemory,
    lanes: int,
    work_ms: dict[int, float],
    gate: threading.Event | None = None,
    overlap: bool = False,
    pieces: int = 1,
) -> LanePool:
    def enqueue(lane: Lane, batch: int):
        if gate is not None:
            gate.wait(10)
        for _ in range(pieces):  # H2D, compute, D2H...: other lanes' threads may enqueue in between
            mem.work(lane.stream, work_ms[batch] / pieces)
        return lambda: batch * 10

    return LanePool([Lane(mem) for _ in range(lanes)], enqueue, "test-lane", overlap=overlap)


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("lanes", [1, 3])
def test_pool_returns_each_batch_and_times_only_its_own_work(lanes: int, overlap: bool) -> None:
    """Each batch's GPU time is its own lane's work, however long it waited for a free lane: with one
    lane and every batch submitted at once, a timer started at submit would grow batch after batch."""
    mem = ClockMemory()
    work = {i: 1.0 + i for i in range(8)}
    gate = threading.Event()
    pool = _pool(mem, lanes, work, gate, overlap=overlap)
    assert pool.max_in_flight == lanes + 1 + (lanes if overlap else 0)  # overlapped: one more queued per lane
    tokens = [pool.submit(i) for i in range(8)]  # all queued before any lane may start
    gate.set()
    assert [pool.wait(t) for t in tokens] == [i * 10 for i in range(8)]
    assert sorted(pool.gpu_ms) == sorted(work.values())
    assert len(pool.host_ms) == 8
    pool.close()
    for lane in pool.lanes:
        lane.close()
    assert not mem.streams


def test_serial_gpu_order_chains_every_batch_behind_the_one_before() -> None:
    """The default GPU order: each batch's stream waits for the end event of the batch enqueued before
    it, before its own start event; on a GPU that runs one thing at a time every span is then that
    batch's own work, even with three lanes' threads enqueueing at once."""
    mem = OneGpuMemory()
    work = {i: 1.0 + i for i in range(12)}
    pool = _pool(mem, 3, work, pieces=3)
    assert not pool.overlap
    tokens = [pool.submit(i) for i in range(12)]
    assert [pool.wait(t) for t in tokens] == [i * 10 for i in range(12)]
    assert sorted(round(ms, 9) for ms in pool.gpu_ms) == sorted(work.values())
    assert len(mem.waits) == 11  # every batch but the first waited for another's end event
    ends = {id(lane.end) for lane in pool.lanes}
    assert all(id(event) in ends for _, event in mem.waits)
    assert mem.clock[0] == sum(work.values())
    pool.close()


def test_overlapping_lanes_do_not_wait_for_each_other() -> None:
    mem = OneGpuMemory()
    pool = _pool(mem, 3, {i: 1.0 for i in range(6)}, overlap=True)
    assert [pool.wait(t) for t in [pool.submit(i) for i in range(6)]] == [i * 10 for i in range(6)]
    assert mem.waits == []
    pool.close()


def test_timed_runs_use_one_lane_and_leave_the_run_timings_alone() -> None:
    mem = ClockMemory()
    pool = _pool(mem, 2, {0: 2.5})
    pool.wait(pool.submit(0))
    gpu, host = pool.timed_runs(0, 5, lane_index=1)
    assert gpu == [2.5] * 5 and len(host) == 5
    assert pool.gpu_ms == [2.5]  # the latency pass is reported apart from the evaluation's batches
    assert mem.clock[pool.lanes[1].stream.handle] == 2.5 + 12.5  # it first waited for lane 0's batch
    pool.close()


def test_each_lane_runs_on_one_thread_of_its_own() -> None:
    """A lane's batches, its warm-up (``call_on``) and its latency pass all run on the lane's own thread, and
    no two lanes share one: ONNX Runtime's CUDA EP keeps a captured CUDA graph per session and thread, so a
    lane hopping threads would capture again in the middle of a run."""
    mem = ClockMemory()
    seen: dict[int, set[int]] = {}
    pool_lanes = [Lane(mem) for _ in range(3)]

    def enqueue(lane: Lane, batch: int):
        seen.setdefault(pool_lanes.index(lane), set()).add(threading.get_ident())
        mem.work(lane.stream, 0.5)
        return lambda: batch

    pool = LanePool(pool_lanes, enqueue, "affinity")
    for i in range(3):  # warm-up: lane i on lane i's thread, one after the other
        assert pool.call_on(i, lambda lane, i=i: (pool.run_on(lane, -1), pool.lanes.index(lane))[1]) == i
    tokens = [pool.submit(i) for i in range(60)]
    assert [pool.wait(t) for t in tokens] == list(range(60))
    pool.timed_runs(7, 4, lane_index=2)
    pool.close()
    assert sorted(seen) == [0, 1, 2] and all(len(threads) == 1 for threads in seen.values()), seen
    assert len(set().union(*seen.values())) == 3 and threading.get_ident() not in set().union(*seen.values())
    for lane in pool_lanes:
        lane.close()


def test_idle_holds_new_batches_back_and_close_runs_what_was_queued() -> None:
    mem = ClockMemory()
    started: list[int] = []

    def enqueue(lane: Lane, batch: int):
        started.append(batch)
        return lambda: batch

    pool = LanePool([Lane(mem), Lane(mem)], enqueue, "idle")
    with pool.idle():
        tokens = [pool.submit(i) for i in range(4)]
        assert pool.call_on(1, lambda lane: "pinned runs while idle") == "pinned runs while idle"
        assert started == []  # no batch started inside idle()
    assert [pool.wait(t) for t in tokens] == [0, 1, 2, 3]
    late = [pool.submit(i) for i in range(4, 8)]
    pool.close()  # the batches already queued still run
    assert [t.result() for t in late] == [4, 5, 6, 7]
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(9)
    for lane in pool.lanes:
        lane.close()


class _CountingCondition(threading.Condition):
    """A condition that counts how many waiting threads its notifications woke (at most)."""

    woken = 0

    def notify(self, n: int = 1) -> None:
        _CountingCondition.woken += min(n, len(self._waiters))  # type: ignore[attr-defined]
        super().notify(n)

    def notify_all(self) -> None:
        self.notify(len(self._waiters))  # type: ignore[attr-defined]


def test_a_batch_wakes_one_lane_thread_not_every_idle_one(monkeypatch) -> None:
    """With eight idle lanes, each batch handed over wakes one lane's thread; waking all of them at every
    batch and every batch's end makes seven threads fight for the GIL for nothing (batch 1 is host-bound)."""
    from common.throughput import lanes as lanes_module

    mem = D.FakeCudaMemory()
    monkeypatch.setattr(lanes_module.threading, "Condition", _CountingCondition)
    pool = LanePool([Lane(mem) for _ in range(8)], lambda lane, batch: lambda: batch, "wake")
    monkeypatch.undo()  # the pool's condition counts; the batches' futures keep their own
    assert isinstance(pool._cv, _CountingCondition)
    for i in range(40):  # one at a time: all eight lanes idle at every hand-over
        _CountingCondition.woken = 0
        assert pool.wait(pool.submit(i)) == i
        assert _CountingCondition.woken <= 1, f"batch {i} woke {_CountingCondition.woken} lane threads"
    with pool.idle():  # held back while idle, and run once it ends
        token = pool.submit(99)
    assert pool.wait(token) == 99
    pool.close()
    for lane in pool.lanes:
        lane.close()


def test_a_batch_for_one_lane_waits_out_idle_without_blocking_that_lanes_other_work() -> None:
    mem = D.FakeCudaMemory()
    started: list[int] = []

    def enqueue(lane: Lane, batch: int):
        started.append(batch)
        return lambda: batch

    pool = LanePool([Lane(mem), Lane(mem)], enqueue, "pinned")
    got: list[str] = []
    with pool.idle():
        token = pool.submit(5, lane=1)
        caller = threading.Thread(target=lambda: got.append(pool.call_on(1, lambda lane: "after it, still runs")))
        caller.start()
        caller.join(10)  # a lane blocked by the held-back batch would never run it
        assert got == ["after it, still runs"]
        assert started == []  # the batch waits for the end of idle()
    assert pool.wait(token) == 5 and started == [5]
    pool.close()
    for lane in pool.lanes:
        lane.close()


def test_a_failing_batch_frees_its_lane() -> None:
    mem = D.FakeCudaMemory()

    def enqueue(lane: Lane, batch: int):
        if batch < 0:
            raise RuntimeError("boom")
        return lambda: batch

    pool = LanePool([Lane(mem)], enqueue)
    with pytest.raises(RuntimeError, match="boom"):
        pool.wait(pool.submit(-1))
    assert pool.wait(pool.submit(3)) == 3  # the one lane came back
    pool.close()


# ----------------------------------------------------------------------------- ORT IO-binding lanes on doubles


class _FakeIoBinding:
    def __init__(self) -> None:
        self.inputs: list[tuple] = []
        self.outputs: list[tuple] = []

    def bind_input(self, name, device, device_id, dtype, shape, ptr) -> None:
        assert device == "cuda", "double: IO binding must bind device memory"
        self.inputs.append((name, np.dtype(dtype), tuple(shape), ptr))

    def bind_output(self, name, device, device_id, dtype, shape, ptr) -> None:
        assert device == "cuda", "double: IO binding must bind device memory"
        self.outputs.append((name, np.dtype(dtype), tuple(shape), ptr))


class _FakeIoSession:
    """``run_with_iobinding`` on the runtime double's host "device" memory: reads the bound input at its
    address, runs the real CPU session, writes the outputs to their bound addresses."""

    def __init__(self, real) -> None:
        self.real = real

    def io_binding(self) -> _FakeIoBinding:
        return _FakeIoBinding()

    def run_with_iobinding(self, io: _FakeIoBinding, run_options=None) -> None:
        from post_double import _view

        feeds = {name: _view(ptr, dt, shape).copy() for name, dt, shape, ptr in io.inputs}
        outs = self.real.run([o[0] for o in io.outputs], feeds)
        for (_, dt, shape, ptr), out in zip(io.outputs, outs, strict=True):
            assert out.shape == shape and out.dtype == dt, "double: output does not fit its binding"
            _view(ptr, dt, shape)[...] = out


def test_ort_io_binding_lanes_with_gpu_postprocess_equal_the_plain_session(monkeypatch) -> None:
    """OrtCudaBackend through common.throughput.lanes with the post-processing kernels' host double on each
    lane: the same detections and stats as a plain CPU session with the NumPy post-processing; latency
    is lane-event time. (The real CUDA EP path ran on an H100/H200 before the lanes moved; this checks
    the lane plumbing in CI.)"""
    from conftest import DEMO_MODEL, MINI
    from post_double import FakePostprocessKernels

    from common.data.coco import open_dataset
    from common.eval.pipeline import EvalOptions, evaluate
    from common.ort.session import OrtBackend
    from common.throughput import ort_lanes as ort_cuda

    mem = D.FakeCudaMemory()
    kernels = FakePostprocessKernels(mem)

    def lane_session(path, providers, options, **kwargs):
        backend = OrtBackend(path, ["CPUExecutionProvider"])
        backend._session = _FakeIoSession(backend._session)
        return backend

    monkeypatch.setattr(ort_cuda, "OrtBackend", lane_session)
    ds = open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 6)
    plain = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"])
    ref = evaluate(plain, ds, EvalOptions(progress=False, workers=2))
    backend = ort_cuda.OrtCudaBackend(str(DEMO_MODEL), lanes=2, memory=mem, post_kernels=lambda: kernels)
    try:
        got = evaluate(
            backend, ds, EvalOptions(progress=False, workers=2, postprocess="gpu", warmup_runs=1, latency_runs=3)
        )
        meta = backend.metadata()
    finally:
        backend.close()
    assert "e2e_select" in kernels.launches
    assert got.detections == ref.detections and got.stats == ref.stats
    assert got.timings["inference_gpu"]["count"] == 6 and got.timings["latency_pass"]["gpu"]["count"] == 3
    assert meta["gpu_compute_ms"]["count"] == 6 and meta["postprocess"]["layout"] == "e2e"  # latency pass apart
    # auto GPU order at batch 1: ORT's runs block the host, so the lanes overlap; the latency is then a lone
    # batch's, from the latency pass
    assert meta["gpu_order"].startswith("overlap")
    assert got.timings["latency_timing"].startswith("gpu-lane-events, lone batch")
    assert got.timings["latency"] == got.timings["latency_pass"]["gpu"]
    assert mem.live == 0


class _StreamIoSession(_FakeIoSession):
    """``_FakeIoSession`` whose run is enqueued on the lane's stream (the CUDA EP's ``user_compute_stream``), as
    ONNX Runtime enqueues its kernels there: it reads its input when the stream gets to it."""

    def __init__(self, real, mem, stream: int) -> None:
        super().__init__(real)
        self.mem, self.stream = mem, stream

    def run_with_iobinding(self, io: _FakeIoBinding, run_options=None) -> None:
        self.mem.enqueue(self.stream, lambda: _FakeIoSession.run_with_iobinding(self, io))


@pytest.mark.parametrize(
    ("order", "batch", "model", "depth"),
    [
        ("overlap", 1, None, None),
        ("serial", 1, None, None),
        ("serial", 2, "yolov10n-synth-dynbatch.onnx", None),
        ("overlap", 2, "yolov10n-synth-dynbatch.onnx", None),
        ("overlap", 1, "yolov10n-synth-dfl144.onnx", None),
        ("overlap", 1, None, 2),
        ("overlap", 2, "yolov10n-synth-dynbatch.onnx", 2),
        ("overlap", 1, "yolov10n-synth-dfl144.onnx", 2),
    ],
)
def test_lanes_are_stream_ordered_when_the_gpu_runs_work_as_late_as_it_may(
    monkeypatch, order, batch, model, depth
) -> None:
    """The lanes of OrtCudaBackend (GPU letterbox, GPU post-processing) on ``DeferredCudaMemory``, whose "GPU" runs
    each copy and kernel only once the host waits for it: no host write lands on memory that queued work has yet
    to read, and no result is read before it is waited for, or the detections would differ from the plain
    CPU session's. (``FakeCudaMemory`` runs the same work at enqueue, the other extreme.) With twins
    (``depth`` 2), each lane's thread has two batches on its stream, each staged in its own pinned memory."""
    got, ref, meta, on_twins, mem = _deferred_lanes_run(monkeypatch, order, batch, model, depth)
    assert meta["lane_depth"] == (depth or 1) and meta["in_flight"] == 3 * (depth or 1) + (
        4 if order == "overlap" else 1
    )
    assert any(on_twins) is (depth == 2)  # with twins, some batches ran on them
    assert got.timings["preprocess_mode"] == "gpu-letterbox" and got.timings["postprocess_mode"] == "gpu"
    assert got.detections == ref.detections and got.stats == ref.stats
    assert got.timings["inference_gpu"]["count"] == -(-7 // batch)
    assert mem.live == 0


def test_the_deferred_double_catches_a_twin_that_shares_its_lanes_pinned_memory(monkeypatch) -> None:
    """The check above can fail: a twin with its lane's own worker (one pinned staging, one post-processor) lets
    the thread fill the next batch's images over the ones the stream has yet to copy up."""
    from common.throughput import ort_lanes as ort_cuda
    from common.throughput.lanes import Lane as LaneClass

    def shared_twin(self, lane):
        return LaneClass(self.mem, lane.worker, stream=lane.stream, owns_stream=False)

    monkeypatch.setattr(ort_cuda.OrtCudaBackend, "_twin", shared_twin)
    got, ref, _, on_twins, _ = _deferred_lanes_run(monkeypatch, "overlap", 1, None, 2)
    assert any(on_twins) and got.detections != ref.detections


def _deferred_lanes_run(
    monkeypatch, order: str, batch: int, model: str | None, depth: int | None, lane_threads: str = "per-lane"
):
    """eval on 7 images through OrtCudaBackend's lanes (3) on ``DeferredCudaMemory`` and through a plain CPU
    session: (lanes' result, plain result, lanes' metadata, per batch whether it ran on a twin, the memory)."""
    from conftest import DEMO_MODEL, MINI, fixture_path
    from post_double import FakePostprocessKernels

    from common.data.coco import open_dataset
    from common.eval.pipeline import EvalOptions, evaluate
    from common.ort.options import CUDA_EP
    from common.ort.session import OrtBackend
    from common.throughput import gpu_preprocess
    from common.throughput import ort_lanes as ort_cuda

    mem = D.DeferredCudaMemory()
    kernels = FakePostprocessKernels(mem)

    def lane_session(path, providers, options, **kwargs):
        backend = OrtBackend(path, ["CPUExecutionProvider"])
        backend._session = _StreamIoSession(backend._session, mem, int(options[CUDA_EP]["user_compute_stream"]))
        return backend

    monkeypatch.setattr(ort_cuda, "OrtBackend", lane_session)
    monkeypatch.setattr(gpu_preprocess, "GpuPreprocessor", lambda device_id: D.FakeGpuPreprocessor(mem))
    onnx = str(fixture_path("models", model) if model else DEMO_MODEL)
    ds = open_dataset(MINI / "annotations" / "instances_val2017.json", MINI / "val2017", 7)
    plain = OrtBackend(onnx, ["CPUExecutionProvider"])
    ref = evaluate(plain, ds, EvalOptions(progress=False, workers=0))
    backend = ort_cuda.OrtCudaBackend(
        onnx,
        lanes=3,
        max_batch=batch,
        memory=mem,
        post_kernels=lambda: kernels,
        gpu_order=order,
        lane_depth=depth,
        lane_threads=lane_threads,
    )
    on_twins: list[bool] = []
    enqueue = backend._lanes._enqueue
    twins = {id(t) for t in backend._lanes.twins}
    backend._lanes._enqueue = lambda lane, item: (on_twins.append(id(lane) in twins), enqueue(lane, item))[1]
    try:
        opts = EvalOptions(
            progress=False,
            workers=2,
            batch_size=batch,
            preprocess="gpu-letterbox",
            postprocess="gpu",
            warmup_runs=1,
            latency_runs=2,
        )
        got = evaluate(backend, ds, opts)
        assert backend.gpu_overlap is (order == "overlap")
        meta = backend.metadata()
    finally:
        backend.close()
    return got, ref, meta, on_twins, mem


def test_the_deferred_double_catches_a_host_write_before_the_queued_copy() -> None:
    """``DeferredCudaMemory`` is a test that can fail: writing pinned memory again before the stream's copy of it
    ran leaves the new bytes on the "device", while the eager double copies the old ones."""
    got = {}
    for mem in (D.FakeCudaMemory(), D.DeferredCudaMemory()):
        stream, pinned, dev = mem.stream(), mem.pinned_buffer(4), mem.device_buffer(4)
        pinned.view(np.int32, (1,))[0] = 1
        mem.copy_htod_async(dev.ptr, pinned.ptr, 4, stream)
        pinned.view(np.int32, (1,))[0] = 2  # too early: the copy may not have run
        stream.synchronize()
        got[type(mem).__name__] = int(dev.view(np.int32, (1,))[0])
        for buf in (pinned, dev):
            buf.free()
        stream.close()
    assert got == {"FakeCudaMemory": 1, "DeferredCudaMemory": 2}


def test_the_deferred_double_runs_a_waiting_stream_after_the_event_it_waits_on() -> None:
    mem = D.DeferredCudaMemory()
    a, b = mem.stream(), mem.stream()
    ran: list[str] = []
    mem.enqueue(a.handle, lambda: ran.append("a1"))
    ev = mem.event()
    ev.record(a)
    mem.enqueue(a.handle, lambda: ran.append("a2"))
    mem.stream_wait_event(b, ev)
    mem.enqueue(b.handle, lambda: ran.append("b1"))
    assert ran == []  # nothing runs before the host waits
    b.synchronize()
    assert ran == ["a1", "b1"]  # a's work up to the event, not after it
    a.synchronize()
    assert ran == ["a1", "b1", "a2"]


def test_host_work_is_prepared_before_the_lanes_turn_on_the_gpu() -> None:
    """``prepare`` (filling pinned memory) and its upload run outside the serial GPU order, so one lane's
    host copies never hold the GPU idle behind them; ``enqueue`` runs inside it and gets the prepared
    item. The batch's GPU time is its upload's span plus its main span."""
    mem = ClockMemory()
    seen: list[tuple[str, bool, object]] = []
    pool: LanePool

    def prepare(lane: Lane, batch: int) -> Staged:
        seen.append(("prepare", pool._order.locked(), batch))

        def upload(stream: object) -> None:
            seen.append(("upload", pool._order.locked(), batch))
            mem.work(stream, 0.25)

        return Staged(("staged", batch), upload)

    def enqueue(lane: Lane, item: tuple[str, int]):
        seen.append(("enqueue", pool._order.locked(), item))
        mem.work(lane.stream, 1.0)
        return lambda: item[1]

    pool = LanePool([Lane(mem)], enqueue, prepare=prepare)
    assert pool.wait(pool.submit(7)) == 7
    gpu, host = pool.timed_runs(8, 1)
    assert pool.gpu_ms == [1.25] and gpu == [1.25] and len(host) == 1
    assert seen == [
        ("prepare", False, 7),
        ("upload", False, 7),
        ("enqueue", True, ("staged", 7)),
        ("prepare", False, 8),
        ("upload", False, 8),
        ("enqueue", True, ("staged", 8)),
    ]
    pool.close()


def test_overlapped_lanes_time_the_upload_and_the_work_as_one_span() -> None:
    """In the overlapped order nothing waits between a batch's upload and its work: one pair of events
    spans both (the upload's own pair is not recorded), and the batch's GPU time still holds its upload."""
    mem = ClockMemory()
    order: list[str] = []

    def prepare(lane: Lane, batch: int) -> Staged:
        def upload(stream: object) -> None:
            order.append("upload")
            mem.work(stream, 0.25)

        return Staged(batch, upload)

    def enqueue(lane: Lane, item: int):
        order.append("enqueue")
        mem.work(lane.stream, 1.0)
        return lambda: item

    pool = LanePool([Lane(mem)], enqueue, overlap=True, prepare=prepare)
    assert pool.wait(pool.submit(3)) == 3
    lane = pool.lanes[0]
    assert pool.gpu_ms == [1.25] and order == ["upload", "enqueue"]
    assert lane.up_start.t is None and lane.up_end.t is None
    assert (lane.start.t, lane.end.t) == (0.0, 1.25)
    pool.close()


def test_lane_threads_spin_on_their_batch_unless_told_to_sleep() -> None:
    """A lane's thread waits on its end event: a default (spinning) event unless told to sleep, then a
    blocking-sync event (the thread sleeps and its core goes to the loaders); the timing events stay default."""
    mem = D.FakeCudaMemory()
    sleeping, spinning = Lane(mem, spin_wait=False), Lane(mem)
    assert sleeping.end.blocking is True and spinning.end.blocking is False
    assert not any(e.blocking for lane in (sleeping, spinning) for e in (lane.start, lane.up_start, lane.up_end))
    for lane in (sleeping, spinning):
        lane.close()


@pytest.mark.parametrize(
    ("order", "synchronous", "batch", "overlap"),
    [
        ("auto", True, 1, True),
        ("auto", True, 15, True),
        ("auto", True, 16, False),
        ("auto", False, 1, False),
        ("serial", True, 1, False),
        ("overlap", False, 32, True),
    ],
)
def test_gpu_order_auto_overlaps_only_blocking_runs_of_small_batches(order, synchronous, batch, overlap) -> None:
    from common.throughput.lane_backend import resolve_gpu_order

    assert resolve_gpu_order(order, synchronous, batch) is overlap


@pytest.mark.parametrize(
    ("order", "batch", "overlap"),
    [("auto", 1, True), ("auto", 2, False), ("auto", 32, False), ("serial", 1, False), ("overlap", 32, True)],
)
def test_gpu_order_auto_overlaps_graph_replays_at_batch_1(order, batch, overlap) -> None:
    from common.throughput.lane_backend import resolve_gpu_order

    assert resolve_gpu_order(order, False, batch, graph_replays=True) is overlap


def test_call_all_runs_on_every_lane_thread_at_once_with_no_batch_in_flight() -> None:
    """The overlapped ceiling's primitive: each lane's function on its own thread, all started before any
    finishes (a barrier every lane must reach), results in lane order; batches wait meanwhile."""
    mem = ClockMemory()
    lanes = [Lane(mem) for _ in range(3)]
    barrier = threading.Barrier(3, timeout=10)
    pool = LanePool(lanes, lambda lane, b: lambda: b, name="t")

    def fn(lane: Lane) -> tuple[int, str]:
        barrier.wait()  # fails (BrokenBarrierError) unless all three run at the same time
        return lanes.index(lane), threading.current_thread().name

    got = pool.call_all(fn)
    assert [i for i, _ in got] == [0, 1, 2] and [t for _, t in got] == ["t-0", "t-1", "t-2"]
    assert pool.wait(pool.submit(5)) == 5
    pool.close()


def test_unknown_gpu_order_is_a_user_error() -> None:
    from common.core.errors import UserError
    from common.throughput.lane_backend import resolve_gpu_order

    with pytest.raises(UserError, match="--gpu-order sideways: choose one of auto, serial, overlap"):
        resolve_gpu_order("sideways", True, 1)


def _graph_lanes(monkeypatch, fail_capture: bool = False):
    """OrtCudaBackend's lane sessions as ``_FakeIoSession`` over CPU sessions, recording what each was asked
    for and every run; ``fail_capture``: a graph session's run raises as ORT's failed capture does."""
    from common.ort.options import CUDA_EP
    from common.ort.session import OrtBackend
    from common.throughput import ort_lanes as ort_cuda

    asked: list[dict] = []
    calls: list[tuple] = []

    class GraphSession(_FakeIoSession):
        def __init__(self, real, graph: bool) -> None:
            super().__init__(real)
            self.graph, self.captured, self.outside, self.thread = graph, None, False, None

        def run_with_iobinding(self, io, run_options=None) -> None:
            calls.append((io.inputs[0][2], run_options, self.graph))
            if self.graph and fail_capture:
                raise RuntimeError("CUDA failure 901: operation failed due to a previous error during capture")
            graph_id = run_options.get_run_config_entry("gpu_graph_id") if run_options is not None else None
            if self.graph and graph_id == "-1":  # a run outside the graph, in the graph's session
                self.outside = True
            elif self.graph:  # ORT replays the captured graph whatever is bound: one shape only
                # ORT's CUDA EP keeps the graph per session and thread: on another thread it would warm up and
                # capture again, in the middle of a run, beside other threads' CUDA work
                self.thread = self.thread or threading.get_ident()
                assert self.thread == threading.get_ident(), "double: a CUDA-graph session run from a second thread"
                # as on an H100: a run outside the graph at another shape reused the graph's memory, and the
                # next replay read freed memory
                if self.outside:
                    raise RuntimeError("CUDA failure 700: an illegal memory access was encountered")
                self.captured = self.captured or io.inputs[0][2]
                assert io.inputs[0][2] == self.captured, "double: a CUDA-graph replay bound at another shape"
            super().run_with_iobinding(io)

    def lane_session(path, providers, options, **kwargs):
        asked.append(dict(options[CUDA_EP]))
        backend = OrtBackend(path, ["CPUExecutionProvider"])
        backend._session = GraphSession(backend._session, options[CUDA_EP].get("enable_cuda_graph") == "1")
        return backend

    monkeypatch.setattr(ort_cuda, "OrtBackend", lane_session)
    return ort_cuda, asked, calls


def test_ort_cuda_graph_lanes_capture_at_construction_bind_one_shape_and_return_early(monkeypatch, tmp_path) -> None:
    """--io-binding with CUDA graphs: every lane's session is asked for a graph and warmed alone when the backend
    is made (ORT captures there, before any other CUDA user starts), every full batch replays the graph at the
    captured shape and returns without ORT's stream sync; a partial batch runs at its own shape in a plain
    session on the first lane's stream (synchronous), as a plain session runs it, and the graph replays on."""
    import onnxruntime as ort

    from common.ort.options import CUDA_EP

    ort_cuda, asked, calls = _graph_lanes(monkeypatch)
    mem = D.FakeCudaMemory()
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    backend = ort_cuda.OrtCudaBackend(
        str(onnx), {CUDA_EP: {"enable_cuda_graph": "1"}}, max_batch=4, lanes=2, memory=mem
    )
    assert len(calls) == 2 * ort_cuda.GRAPH_WARMUP_RUNS  # each lane warmed (captured) before anything else
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    lane0 = str(backend._lanes.lanes[0].stream.handle)
    try:
        full, partial = backend.infer(x)[0], backend.infer(x[:3])[0]
        again = [backend.infer(x)[0] for _ in range(2)]  # replays after the partial batch
        meta = backend.metadata()
    finally:
        backend.close()
    ref = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for out in (full, *again):
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(partial, ref[:3], rtol=1e-6, atol=1e-6)
    assert partial.shape == (3, 4, 8, 8)
    # the lanes' graph sessions, then one plain session, on the first lane's stream, for the partial batch
    assert [a.get("enable_cuda_graph") for a in asked] == ["1", "1", None]
    assert asked[2]["user_compute_stream"] == lane0
    assert len(calls) == 2 * ort_cuda.GRAPH_WARMUP_RUNS + 4
    plain = [c for c in calls if not c[2]]
    replays = [c for c in calls if c[2]]
    assert {shape for shape, _, _ in replays} == {(4, 3, 8, 8)}  # one shape: the captured graph's
    assert all(o.get_run_config_entry("disable_synchronize_execution_providers") == "1" for _, o, _ in replays)
    assert all(o.get_run_config_entry("gpu_graph_id") == "0" for _, o, _ in replays)
    assert [(shape, o) for shape, o, _ in plain] == [((3, 3, 8, 8), None)]  # ORT's own synchronous default
    # runs no longer block the host: auto picks the serial GPU order, as for TensorRT
    assert meta["cuda_graph"] is True and meta["cuda_graph_fallback"] is None
    assert meta["gpu_order"].startswith("serial")
    assert mem.live == 0


@pytest.mark.parametrize("graph", ["1", "0"])
def test_a_partial_batch_is_warmed_and_run_on_the_first_lane_alone(monkeypatch, tmp_path, graph: str) -> None:
    """Each session searches cuDNN's algorithms again at a new shape (a second or more per session on a GPU):
    the partial last batch's shape is warmed on one lane, and the partial batch runs there, whichever lanes
    are free; full batches still go to every lane."""
    from common.ort.options import CUDA_EP

    ort_cuda, _, _ = _graph_lanes(monkeypatch)
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    backend = ort_cuda.OrtCudaBackend(
        str(onnx), {CUDA_EP: {"enable_cuda_graph": graph}}, max_batch=4, lanes=3, memory=D.FakeCudaMemory()
    )
    runs: list[tuple[int, int]] = []  # (lane, batch) of every run from now on

    def record(session, i: int) -> None:
        real = session.run_with_iobinding

        def recorded(io, run_options=None) -> None:
            runs.append((i, io.inputs[0][2][0]))
            real(io, run_options)

        session.run_with_iobinding = recorded

    workers = [lane.worker for lane in backend._lanes.lanes]
    for i, w in enumerate(workers):
        record(w.backend._session, i)
    made_plain = backend._plain

    def plain(lane):  # a graph lane's plain session (its partial batches) counts as that lane's
        w = lane.worker
        fresh = w.plain is None
        sess = made_plain(lane)
        if fresh:
            record(sess._session, workers.index(w))
        return sess

    backend._plain = plain
    x = np.zeros((4, 3, 8, 8), np.float32)
    try:
        backend.warmup(3, 2)
        assert runs == [(0, 3), (0, 3)] if graph == "0" else {lane for lane, _ in runs} == {0}
        runs.clear()
        backend.warmup(4, 2)
        assert {lane for lane, _ in runs} == {0, 1, 2}
        runs.clear()
        tokens = [backend.submit(x if k % 2 else x[:3]) for k in range(12)]
        for t in tokens:
            backend.wait(t)
    finally:
        backend.close()
    assert {lane for lane, b in runs if b == 3} == {0}
    assert len([b for _, b in runs if b == 3]) == 6 and len([b for _, b in runs if b == 4]) == 6


@pytest.mark.parametrize("graph", ["auto", "on"])
def test_ort_cuda_graph_capture_failure_falls_back_or_is_refused(monkeypatch, tmp_path, graph: str) -> None:
    """auto (eval-onnx --io-binding): a capture ORT can't make leaves per-kernel lanes, rebuilt from scratch,
    and metadata says why; --cuda-graph (on) makes it a one-line UserError. Nothing leaks either way."""
    from common.core.errors import UserError

    ort_cuda, asked, calls = _graph_lanes(monkeypatch, fail_capture=True)
    mem = D.FakeCudaMemory()
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    if graph == "on":
        with pytest.raises(UserError, match=r"--cuda-graph: ONNX Runtime cannot run .*CUDA failure 901"):
            ort_cuda.OrtCudaBackend(str(onnx), max_batch=2, lanes=2, memory=mem, graph=graph)
        assert mem.live == 0
        return
    backend = ort_cuda.OrtCudaBackend(str(onnx), max_batch=2, lanes=2, memory=mem, graph=graph)
    try:
        out = backend.infer(np.zeros((2, 3, 8, 8), np.float32))[0]
        meta = backend.metadata()
    finally:
        backend.close()
    assert out.shape == (2, 4, 8, 8)
    assert [a.get("enable_cuda_graph") for a in asked] == ["1", "1", None, None]  # graph lanes, then plain ones
    assert calls[-1][1] is None and calls[-1][2] is False  # the batch ran synchronously on a plain session
    assert meta["cuda_graph"] is False and "CUDA failure 901" in meta["cuda_graph_fallback"]
    assert meta["gpu_order"].startswith("overlap")  # blocking runs at batch 2: auto overlaps the lanes
    assert mem.live == 0


@pytest.mark.parametrize("graph", ["auto", "on"])
def test_ort_cuda_graph_lanes_pass_on_errors_that_are_not_the_graphs(monkeypatch, tmp_path, graph: str) -> None:
    """A static batch axis with another --batch-size fails the per-kernel lanes too: that message, not a
    CUDA-graph one, reaches the user."""
    from common.core.errors import UserError

    ort_cuda, asked, _ = _graph_lanes(monkeypatch)
    mem = D.FakeCudaMemory()
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=False)
    with pytest.raises(UserError, match=r"^--batch-size 2: the model's batch axis is static \(1\)$"):
        ort_cuda.OrtCudaBackend(str(onnx), max_batch=2, lanes=2, memory=mem, graph=graph)
    assert [a.get("enable_cuda_graph") for a in asked] == ["1", None]  # the plain lane said what is wrong
    assert mem.live == 0


def test_ort_cuda_graph_can_be_turned_off(monkeypatch, tmp_path) -> None:
    """--provider-option CUDAExecutionProvider:enable_cuda_graph=0 wins over the auto default."""
    from common.ort.options import CUDA_EP

    ort_cuda, asked, calls = _graph_lanes(monkeypatch)
    mem = D.FakeCudaMemory()
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    backend = ort_cuda.OrtCudaBackend(
        str(onnx), {CUDA_EP: {"enable_cuda_graph": "0"}}, max_batch=2, lanes=2, memory=mem, graph="auto"
    )
    try:
        backend.infer(np.zeros((1, 3, 8, 8), np.float32))
        assert backend.metadata()["cuda_graph"] is False
    finally:
        backend.close()
    assert [a.get("enable_cuda_graph") for a in asked] == [None, None] and calls == [((1, 3, 8, 8), None, False)]
    assert mem.live == 0


# ----------------------------------------------------------------------------- twins: two batches on one stream


def _twin_pool(mem, log: list, pipelines=None, hook=None) -> tuple[LanePool, Lane, Lane]:
    lane = Lane(mem)
    twin = Lane(mem, stream=lane.stream, owns_stream=False)

    def enqueue(on: Lane, batch: int):
        if hook is not None:
            hook(batch)
        log.append(("begin", batch, "twin" if on is twin else "lane"))
        mem.work(on.stream, 1.0)
        return lambda: log.append(("collect", batch)) or batch

    pool = LanePool([lane], enqueue, "twin", overlap=True, twins=[[twin]], pipelines=pipelines)
    return pool, lane, twin


def _close(pool: LanePool, lane: Lane, twin: Lane) -> None:
    pool.close()
    twin.close()
    lane.close()


def test_a_lanes_thread_enqueues_the_next_batch_on_its_twin_before_it_waits_for_the_last() -> None:
    mem = ClockMemory()
    log: list = []
    pool, lane, twin = _twin_pool(mem, log)
    assert pool.depth == 2 and pool.max_in_flight == 4 and pool.all_lanes == [lane, twin] and pool.twins == [twin]
    with pool.idle():  # every batch queued before the thread takes one
        tokens = [pool.submit(i) for i in range(5)]
    assert [pool.wait(t) for t in tokens] == list(range(5))
    assert log == [
        ("begin", 0, "lane"),
        ("begin", 1, "twin"),
        ("collect", 0),
        ("begin", 2, "lane"),
        ("collect", 1),
        ("begin", 3, "twin"),
        ("collect", 2),
        ("begin", 4, "lane"),
        ("collect", 3),
        ("collect", 4),
    ]
    # each batch's span is its own work on the shared stream, not the one before it
    assert pool.gpu_ms == [1.0] * 5 and mem.clock[lane.stream.handle] == 5.0
    _close(pool, lane, twin)


def test_a_batch_the_twin_may_not_take_waits_for_the_lanes_batches_in_flight() -> None:
    mem = ClockMemory()
    log: list = []
    pool, lane, twin = _twin_pool(mem, log, pipelines=lambda on, batch: batch % 2 == 0)
    with pool.idle():
        tokens = [pool.submit(i) for i in (0, 2, 3, 4)]
    assert [pool.wait(t) for t in tokens] == [0, 2, 3, 4]
    assert log == [
        ("begin", 0, "lane"),
        ("begin", 2, "twin"),
        ("collect", 0),
        ("collect", 2),  # 3 is not for the twin: the lane's batches end first
        ("begin", 3, "lane"),
        ("begin", 4, "twin"),
        ("collect", 3),
        ("collect", 4),
    ]
    _close(pool, lane, twin)


def test_work_pinned_to_a_lane_runs_on_the_lane_itself_after_its_batches_in_flight() -> None:
    mem = ClockMemory()
    log: list = []
    gate, entered = threading.Event(), threading.Event()

    def held(batch: int) -> None:
        if batch == 1:  # the twin's batch: the pinned one arrives while both are in flight
            entered.set()
            assert gate.wait(10)

    pool, lane, twin = _twin_pool(mem, log, hook=held)
    with pool.idle():
        tokens = [pool.submit(0), pool.submit(1)]
    assert entered.wait(10)
    tokens.append(pool.submit(9, lane=0))
    gate.set()
    assert [pool.wait(t) for t in tokens] == [0, 1, 9]
    assert log == [
        ("begin", 0, "lane"),
        ("begin", 1, "twin"),
        ("collect", 0),
        ("collect", 1),
        ("begin", 9, "lane"),
        ("collect", 9),
    ]
    assert pool.call_on(0, lambda on: on is lane) is True
    gpu, _ = pool.timed_runs(5, 2)
    assert gpu == [1.0, 1.0] and len(pool.gpu_ms) == 3
    _close(pool, lane, twin)


def test_a_failing_batch_on_a_twin_reaches_its_caller_and_frees_the_twin() -> None:
    mem = D.FakeCudaMemory()
    lane = Lane(mem)
    twin = Lane(mem, stream=lane.stream, owns_stream=False)

    def enqueue(on: Lane, batch: int):
        if batch < 0:
            raise RuntimeError("boom")
        return lambda: batch

    pool = LanePool([lane], enqueue, overlap=True, twins=[[twin]])
    with pool.idle():
        tokens = [pool.submit(1), pool.submit(-1), pool.submit(2)]
    assert pool.wait(tokens[0]) == 1
    with pytest.raises(RuntimeError, match="boom"):
        pool.wait(tokens[1])
    assert pool.wait(tokens[2]) == 2 and pool.wait(pool.submit(3)) == 3
    with pool.idle():
        pass  # every batch ended: nothing counts as running
    _close(pool, lane, twin)


def test_twins_need_the_overlapped_order() -> None:
    mem = D.FakeCudaMemory()
    lane = Lane(mem)
    twin = Lane(mem, stream=lane.stream, owns_stream=False)
    with pytest.raises(ValueError, match="overlapped"):
        LanePool([lane], lambda on, b: lambda: b, twins=[[twin]])
    twin.close()
    lane.close()


def test_a_twin_that_cannot_be_made_leaves_nothing_open(monkeypatch) -> None:
    """The lanes' sessions, buffers, streams and the twins made so far all go when a twin fails to start."""
    from conftest import DEMO_MODEL

    from common.ort.session import OrtBackend
    from common.throughput import ort_lanes as ort_cuda

    mem = D.FakeCudaMemory()
    closed: list[object] = []

    def lane_session(path, providers, options, **kwargs):
        backend = OrtBackend(path, ["CPUExecutionProvider"])
        backend._session = _FakeIoSession(backend._session)
        backend.close = lambda: closed.append(backend)  # type: ignore[method-assign]
        return backend

    made: list[Lane] = []
    real_twin = ort_cuda.OrtCudaBackend._twin

    def twin(self, lane):
        if len(made) == 2:
            raise RuntimeError("no more events")
        made.append(real_twin(self, lane))
        return made[-1]

    monkeypatch.setattr(ort_cuda, "OrtBackend", lane_session)
    monkeypatch.setattr(ort_cuda.OrtCudaBackend, "_twin", twin)
    with pytest.raises(RuntimeError, match="no more events"):
        ort_cuda.OrtCudaBackend(str(DEMO_MODEL), lanes=3, memory=mem, gpu_order="overlap", lane_depth=2)
    assert len(made) == 2 and all(t.stream is None for t in made)  # the twins made were closed
    assert len(closed) == 3 and mem.live == 0 and not mem.streams


@pytest.mark.parametrize(("batch", "depth"), [(1, 2), (4, 1)])
def test_graph_lanes_keep_two_batches_each_where_they_overlap(monkeypatch, tmp_path, batch: int, depth: int) -> None:
    """``lane_depth`` auto: graph replays return before the GPU is done, so where the lanes overlap (batch 1) each
    lane gets a twin; in the serial order (larger batches) it keeps one batch."""
    from common.ort.options import CUDA_EP

    ort_cuda, _, _ = _graph_lanes(monkeypatch)
    onnx = D.tiny_model(tmp_path / "m.onnx", dynamic=True)
    mem = D.FakeCudaMemory()
    backend = ort_cuda.OrtCudaBackend(
        str(onnx), {CUDA_EP: {"enable_cuda_graph": "1"}}, max_batch=batch, lanes=3, memory=mem
    )
    try:
        meta = backend.metadata()
        assert meta["cuda_graph"] is True and meta["gpu_order"].startswith("overlap" if batch == 1 else "serial")
        assert meta["lane_depth"] == depth and meta["in_flight"] == 3 * depth + (4 if batch == 1 else 1)
        assert len(backend._lanes.twins) == 3 * (depth - 1)
        pairs = zip(backend._lanes.lanes, backend._lanes.twins, strict=False)  # none at depth 1
        assert all(t.stream is lane.stream for lane, t in pairs)
    finally:
        backend.close()
    assert mem.live == 0 and not mem.streams
