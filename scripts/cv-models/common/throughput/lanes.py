"""One staging and lane layer for every GPU backend (ONNX Runtime IO binding, TensorRT).

- ``HostLease``: owns one pinned host buffer; NumPy views handed out keep it alive.
- ``Staging``: one grow-only device + pinned buffer pair with ``upload`` / ``download`` on a stream.
- ``Lane``: a stream, two CUDA events around one batch's own work (H2D + compute [+ GPU
  post-processing] + D2H) and, in the serial order, two around its early upload, plus the backend's
  per-lane ``worker``. A lane's thread spins until its batch is done (``spin_wait=False``: sleeps).
- ``LanePool``: lanes with ``submit`` / ``wait``; ``max_in_flight`` = a batch per lane (and twin) plus the
  batches queued for the next free lane: one, and in the overlapped order one more per lane, so that while the
  caller waits for its oldest batch every lane that frees finds the next one waiting. Each batch's
  GPU time comes from its own lane's events, never from time it spent queued behind other batches. GPU order:
  serial (default; one batch at a time on the GPU, as trtexec's one stream) or overlapping lanes. In the
  overlapped order a lane may have twins (lanes on its stream with pinned buffers of their own): its thread then
  enqueues the next batch before it waits for the last, and the in-flight depth grows by one per twin.

A backend hands the pool ``prepare(lane, batch) -> Staged`` (host work: the batch into the lane's pinned
memory, and its H2D copy) and ``enqueue(lane, item) -> collect`` (the rest of the batch's work on
``lane.stream``; ``collect`` reads the results once the stream is done). The pool runs ``prepare`` and the
upload first, outside the GPU order, then, in the serial order under one lock, makes the lane's stream wait
for the previous batch's end event, records the start event, ``enqueue``, the end event; then it
synchronises, times the batch (upload span + main span) and calls ``collect``. In the overlapped order nothing
waits between the upload and the rest, so one span covers both.

All CUDA work goes through a ``common.gpu.cuda_mem.MemoryLayer``: ``CudaMemory`` on a GPU,
``tests/trt_double.FakeCudaMemory`` (host memory, work done at enqueue) in CI.

Each lane has one thread of its own for its whole life (``LanePool``): batches go to whichever lane is
free (one idle lane's thread is woken per batch), or to the lane ``submit`` names, and work that must run where
a lane's batches run (warm-up, where ONNX Runtime captures its CUDA graph per session and thread; the latency
pass) goes to that lane's thread through ``call_on``. ``common.throughput.caller_lanes.CallerLanePool`` is the
same pool with no threads: the caller's thread drives every lane.

Tested in CI through the doubles: threads and lane affinity, in-flight depth, per-lane timing, the serial
order's event chain, prepare outside the order. What ran on a GPU is listed in the README.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.gpu.cuda_mem import HostLease, Staging

__all__ = ["Collect", "HostLease", "Lane", "LanePool", "PostSetup", "Staged", "Staging"]

Collect = Callable[[], Any]


@dataclass
class _Job:
    """Work for a lane's thread: a batch (``fn`` None), or ``fn(lane)`` (``call_on``), and its future."""

    fut: cf.Future[Any]
    fn: Callable[[Lane], Any] | None = None
    batch: Any = None

    @property
    def is_batch(self) -> bool:
        return self.fn is None


@dataclass
class _Begun:
    """A batch enqueued on ``lane`` at host time ``t0`` and not yet waited for: ``collect`` reads its results."""

    fut: cf.Future[Any]
    lane: Lane
    collect: Collect
    t0: float


@dataclass
class Staged:
    """A batch prepared on its lane (``LanePool``'s ``prepare``): ``item`` is what ``enqueue`` gets;
    ``upload(stream)``, if any, enqueues its H2D copy. In the serial GPU order the copy goes on the lane's
    stream before the lane waits for its turn, so the copy engine moves it while another batch computes;
    its own pair of events times it, and the batch's GPU time is that span plus its main span."""

    item: Any
    upload: Callable[[Any], None] | None = None


class Lane:
    """A stream, start/end events around a batch's work (and, in the serial order, a pair around its early
    upload), and the backend's ``worker`` for this lane."""

    def __init__(
        self, mem: Any, worker: Any = None, stream: Any = None, owns_stream: bool = True, spin_wait: bool = True
    ) -> None:
        """``stream``: an existing stream (e.g. one a session was created for); closed by ``close`` when
        ``owns_stream``. Without one the lane makes and owns its own. The lane's thread waits for a batch on its
        end event: with ``spin_wait`` spinning on a core (CUDA's default for a process with fewer contexts than
        cores, as trtexec's ``--useSpinWait``), which picks the batch up soonest; otherwise asleep until the batch
        is done (a blocking-sync event, trtexec's default), leaving its core to the loaders and the COCO workers."""
        self.mem, self.worker = mem, worker
        self._owns_stream = owns_stream or stream is None
        self.stream = mem.stream() if stream is None else stream
        self.spin_wait = spin_wait
        self.start, self.end = mem.event(), mem.event(blocking=not spin_wait)
        self.up_start, self.up_end = mem.event(), mem.event()
        self._uploaded = False

    def elapsed_ms(self) -> float:
        """GPU time of the last batch (after its end event completed): start to end, plus its upload's
        span when it had one (``upload``)."""
        ms = float(self.mem.elapsed_ms(self.start, self.end))
        if self._uploaded:
            ms += float(self.mem.elapsed_ms(self.up_start, self.up_end))
        return ms

    def upload(self, staged: Staged) -> None:
        """Enqueue ``staged``'s H2D copy between the upload events (nothing when it has none)."""
        self._uploaded = staged.upload is not None
        if staged.upload is not None:
            self.up_start.record(self.stream)
            staged.upload(self.stream)
            self.up_end.record(self.stream)

    def begin_with_upload(self, enqueue: Callable[[Lane, Any], Collect], staged: Staged) -> Collect:
        """Enqueue ``staged``'s upload and its work as one span between the start and end events (the
        overlapped order, where nothing waits between them): two events a batch, not four."""
        self._uploaded = False
        self.start.record(self.stream)
        if staged.upload is not None:
            staged.upload(self.stream)
        collect = enqueue(self, staged.item)
        self.end.record(self.stream)
        return collect

    def begin(self, enqueue: Callable[[Lane, Any], Collect], batch: Any, after: Any = None) -> Collect:
        """Enqueue one batch between this lane's events; ``after``: an event of another lane that this
        batch's GPU work must wait for (it is enqueued before the start event, so the time waited is not
        in this batch's span)."""
        if after is not None:
            self.mem.stream_wait_event(self.stream, after)
        self.start.record(self.stream)
        collect = enqueue(self, batch)
        self.end.record(self.stream)
        return collect

    def finish(self, collect: Collect, t0: float) -> tuple[Any, float, float]:
        """Wait for the batch begun at host time ``t0``: (results, GPU ms from the events, host ms)."""
        self.end.synchronize()
        host_ms = (time.perf_counter() - t0) * 1000.0
        return collect(), self.elapsed_ms(), host_ms

    def close(self) -> None:
        for event in (self.start, self.end, self.up_start, self.up_end):
            event.close()
        if self._owns_stream and self.stream is not None:
            self.stream.close()
        self.stream = None


class LanePool:
    """``submit`` / ``wait`` over ``lanes``, one thread per lane (always the same one), ``len(lanes) + 1``
    batches in flight in the serial order, ``2 * len(lanes) + 1`` in the overlapped order (with twins: one more
    per twin).

    GPU order. By default (``overlap=False``) the batches' GPU work runs one after the other, in the
    order the lanes enqueued it, as trtexec runs one stream: each batch's stream waits for the previous
    batch's end event before its own start event. The host side still overlaps (the next batch is
    staged and enqueued while the GPU runs this one), and each batch's span between its events is its
    own work: H2D + compute (+ GPU post) + D2H, never another batch's. With ``overlap=True`` the lanes'
    GPU work may run concurrently (more images/s when one batch does not fill the GPU); a batch's span
    then also holds whatever the other lanes ran beside it.

    Twins (overlapped order only). ``twins[i]``: lanes on lane ``i``'s stream, served by lane ``i``'s thread,
    each with events and a worker of its own (its own pinned buffers) over the same session. That thread
    enqueues the next batch on a free twin before it waits for the batch it enqueued last, so its host work
    for one batch (staging, launches, reading the results) runs while the GPU computes the other, which the
    stream runs after it. A batch goes to a twin only when ``pipelines(twin, batch)``; otherwise (and for work
    pinned to the lane: ``call_on``, a batch ``submit`` names a lane for) the thread first waits for its
    batches in flight, then runs it on the lane itself.

    ``gpu_ms`` / ``host_ms`` hold each batch's lane-event time and its host time from the lane picking
    it up to its results being ready (neither includes time queued before a lane was free; with twins, the
    host time includes the wait for the batch before it on the stream).
    """

    def __init__(
        self,
        lanes: Sequence[Lane],
        enqueue: Callable[[Lane, Any], Collect],
        name: str = "lane",
        overlap: bool = False,
        prepare: Callable[[Lane, Any], Staged] | None = None,
        twins: Sequence[Sequence[Lane]] = (),
        pipelines: Callable[[Lane, Any], bool] | None = None,
    ) -> None:
        """``prepare(lane, batch) -> Staged``: the batch's host work on its lane (filling the lane's pinned
        staging) and its upload, both before the lane's turn on the GPU; ``enqueue`` gets ``Staged.item``."""
        if not lanes:
            raise ValueError("a LanePool needs at least one lane")
        if any(twins) and not overlap:
            raise ValueError("twin lanes need the overlapped GPU order")
        self.lanes = list(lanes)
        self._enqueue = enqueue
        self._prepare = prepare
        self._pipelines = pipelines or (lambda lane, batch: True)
        self.overlap = bool(overlap)
        self._slots = [[lane, *(twins[i] if i < len(twins) else ())] for i, lane in enumerate(self.lanes)]
        self.twins = [twin for slots in self._slots for twin in slots[1:]]
        self.depth = max(len(slots) for slots in self._slots)  # batches one lane's thread keeps enqueued
        self._order = threading.Lock()  # serial GPU order: wait + start .. end of one batch at a time
        self._last_end: Any = None
        # queued for the next free lane: one, and in the overlapped order one more per lane, so that lanes finishing
        # while the caller waits for a slower, older batch find work, not a queue that one lane has emptied
        self.max_in_flight = len(self.lanes) + len(self.twins) + 1 + (len(self.lanes) if self.overlap else 0)
        self._lock = threading.Lock()
        self.gpu_ms: list[float] = []
        self.host_ms: list[float] = []
        # one thread per lane, for the lane's whole life: a session may keep per-thread state (ONNX Runtime's
        # CUDA EP keeps its captured CUDA graph per thread), so every run of a lane, warm-up included
        # (``call_on``), happens on the same thread. Batches (``submit``) go to whichever lane is free, or to one.
        # a batch counts as running from being taken to its results, and starts only outside ``idle``
        self._cv = threading.Condition()
        self._shared: collections.deque[_Job] = collections.deque()
        self._pinned: list[collections.deque[_Job]] = [collections.deque() for _ in self.lanes]
        self._paused = 0  # idle(): no new batch starts while > 0
        self._running = 0  # batches being run now
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._start(name)

    def _start(self, name: str) -> None:
        """The lanes' threads, one each, started."""
        self._threads = [
            threading.Thread(target=self._serve, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(len(self.lanes))
        ]
        for t in self._threads:
            t.start()

    @property
    def all_lanes(self) -> list[Lane]:
        """Every lane and twin (each has a worker of its own)."""
        return [lane for slots in self._slots for lane in slots]

    def _next_job(self, index: int) -> _Job | None:
        """Lane ``index``'s next job (under ``_cv``): its own first, then a shared batch; no batch while idle."""
        pinned = self._pinned[index]
        for k, job in enumerate(pinned):  # while idle, a batch held back never blocks the work behind it
            if not (job.is_batch and self._paused):
                del pinned[k]
                return job
        if self._shared and not self._paused:
            return self._shared.popleft()
        return None

    def _take(self, index: int, begun: collections.deque[_Begun]) -> tuple[_Job | None, Lane | None]:
        """Lane ``index``'s next job and the lane to run it on: with nothing begun, waiting for one (None: stopped);
        else a shared batch for a free twin that ``pipelines`` it, if one is waiting (None: end a begun one)."""
        slots = self._slots[index]
        with self._cv:
            if not begun:
                while (job := self._next_job(index)) is None and not self._stop:
                    self._cv.wait()
                lane: Lane | None = slots[0]
            else:
                busy = {id(b.lane) for b in begun}
                lane = next((s for s in slots if id(s) not in busy), None)
                ok = lane is not None and self._shared and not self._paused
                job = self._shared.popleft() if ok and self._pipelines(lane, self._shared[0].batch) else None
            if job is not None and job.is_batch:
                self._running += 1
            return job, lane

    def _serve(self, index: int) -> None:
        begun: collections.deque[_Begun] = collections.deque()
        while True:
            job, lane = self._take(index, begun)
            if job is None:
                if not begun:
                    return  # stopped, nothing left for this lane
                self._end(begun.popleft())
                continue
            assert lane is not None
            if not job.fut.set_running_or_notify_cancel():
                if job.is_batch:
                    self._batch_done()
            elif job.fn is not None:
                try:
                    job.fut.set_result(job.fn(lane))
                except BaseException as exc:  # handed to the waiting caller
                    job.fut.set_exception(exc)
            else:
                t0 = time.perf_counter()
                try:
                    begun.append(_Begun(job.fut, lane, self._begin(lane, job.batch), t0))
                except BaseException as exc:
                    job.fut.set_exception(exc)
                    self._batch_done()

    def _end(self, b: _Begun) -> None:
        """Wait for begun batch ``b``; its timings, then its result (or exception) to its future."""
        try:
            out, gpu_ms, host_ms = b.lane.finish(b.collect, b.t0)
            with self._lock:
                self.gpu_ms.append(gpu_ms)
                self.host_ms.append(host_ms)
            b.fut.set_result(out)
        except BaseException as exc:  # handed to the waiting caller
            b.fut.set_exception(exc)
        finally:
            self._batch_done()

    def _batch_done(self) -> None:
        with self._cv:
            self._running -= 1
            if self._paused:  # only ``idle`` waits for the running batches to end
                self._cv.notify_all()

    def _post(self, job: _Job, index: int | None = None) -> cf.Future[Any]:
        with self._cv:
            if self._stop:
                raise RuntimeError("LanePool is closed")
            (self._shared if index is None else self._pinned[index]).append(job)
            if index is None and not self._paused:
                self._cv.notify()  # a batch: any idle lane's thread takes it, so one is woken, not every one
            else:
                self._cv.notify_all()  # work for one lane in particular, or batches held back by ``idle``
        return job.fut

    def call_on(self, index: int, fn: Callable[[Lane], Any]) -> Any:
        """``fn(lane)`` on lane ``index``'s own thread, with no batch in flight; its result (or exception)."""
        with self.idle():
            return self._post(_Job(cf.Future(), fn), index).result()

    def call_all(self, fn: Callable[[Lane], Any]) -> list[Any]:
        """``fn(lane)`` on every lane's own thread at once, with no batch in flight; the results in lane order
        (the first exception raised, once all are done)."""
        with self.idle():
            futures = [self._post(_Job(cf.Future(), fn), i) for i in range(len(self.lanes))]
            cf.wait(futures)
            return [f.result() for f in futures]

    def _begin(self, lane: Lane, batch: Any) -> Collect:
        """Enqueue one batch on ``lane`` (which the caller holds); ``collect`` reads its results once it is done."""
        # host work and the upload, outside the GPU order: the lane (its buffers) is ours alone
        staged = self._prepare(lane, batch) if self._prepare is not None else Staged(batch)
        if self.overlap:
            return lane.begin_with_upload(self._enqueue, staged)
        lane.upload(staged)
        with self._order:  # held while enqueueing only (a synchronous worker, e.g. ORT, holds it to the end)
            collect = lane.begin(self._enqueue, staged.item, after=self._last_end)
            self._last_end = lane.end
        return collect

    def run_on(self, lane: Lane, batch: Any) -> tuple[Any, float, float]:
        """One batch on ``lane`` (which the caller holds): (results, GPU ms, host ms)."""
        t0 = time.perf_counter()
        return lane.finish(self._begin(lane, batch), t0)

    def submit(self, batch: Any, lane: int | None = None) -> cf.Future[Any]:
        """Run ``batch`` on whichever lane is free first (its own thread); ``lane``: on that lane alone."""
        return self._post(_Job(cf.Future(), batch=batch), lane)

    def wait(self, token: cf.Future[Any]) -> Any:
        return token.result()

    def reset_timings(self) -> None:
        with self._lock:
            self.gpu_ms.clear()
            self.host_ms.clear()

    @contextlib.contextmanager
    def idle(self) -> Iterator[list[Lane]]:
        """Every lane, once no batch is running, in their fixed order; no batch starts until the block ends
        (batches submitted meanwhile wait). ``call_on`` still runs work on a lane's own thread in it."""
        with self._cv:
            self._paused += 1
            while self._running:
                self._cv.wait()
        try:
            yield list(self.lanes)
        finally:
            with self._cv:
                self._paused -= 1
                self._cv.notify_all()

    def set_preprocess(self, mem: Any, prep: Any, mode: str) -> None:
        """Every lane's worker stages ``U8Batch`` of ``mode`` through its own ``U8Stager`` (made once)."""
        from common.throughput.gpu_preprocess import U8Stager

        with self.idle():
            for lane in self.all_lanes:
                if lane.worker.stager is None:
                    lane.worker.stager = U8Stager(mem, prep, mode)
                lane.worker.stager.mode = mode

    def set_decoders(self, make: Callable[[], Any] | None) -> None:
        """Every lane's stager gets its own decoder from ``make()`` (None: images come decoded again);
        after ``set_preprocess``."""
        with self.idle():
            for lane in self.all_lanes:
                stager = lane.worker.stager
                if stager is None:
                    raise ValueError("set_decoders before set_preprocess")
                if make is None:
                    stager.decoder = None
                elif stager.decoder is None:
                    stager.decoder = make()

    def set_postprocess(self, setup: PostSetup | None, mem: Any) -> None:
        """Every lane's worker gets its own GPU post-processor of ``setup`` (None: head tensors again)."""
        with self.idle():
            for lane in self.all_lanes:
                if lane.worker.post is not None:
                    lane.worker.post.close()
                lane.worker.post = setup.make(mem) if setup is not None else None

    def timed_runs(self, batch: Any, runs: int, lane_index: int = 0) -> tuple[list[float], list[float]]:
        """``runs`` back-to-back single-batch runs on one lane (none other in flight): (GPU ms, host ms)
        each; nothing is added to ``gpu_ms`` / ``host_ms`` (the trtexec-style latency pass)."""
        gpu, host = [], []

        def runs_here(lane: Lane) -> None:
            for _ in range(runs):
                _, g, h = self.run_on(lane, batch)
                gpu.append(g)
                host.append(h)

        self.call_on(lane_index, runs_here)
        return gpu, host

    def close(self) -> None:
        """Stop the threads (after the batches in flight); the caller closes its workers, then the lanes."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for t in self._threads:
            t.join()
        with self._cv:  # nothing left to run it: whoever waits for a batch still queued is told so
            for job in [*self._shared, *(job for q in self._pinned for job in q)]:
                if job.fut.set_running_or_notify_cancel():
                    job.fut.set_exception(RuntimeError("LanePool closed before this batch ran"))
            self._shared.clear()
        self._last_end = None  # an event of a lane about to be closed


class PostSetup:
    """GPU post-processing as a backend set it up (``enable_device_postprocess``): one
    ``GpuPostprocessor`` per lane, prepared for ``max_batch`` outputs ``[B, *dims]`` of ``dtype``, all
    sharing one compiled kernel module. ``launch`` runs on the lane's stream right after compute and
    copies only the final rows back; ``collect`` reads them once the stream is done."""

    def __init__(
        self,
        layout: str,
        input_hw: tuple[int, int],
        opts: Any,
        dims: tuple[int, int],
        dtype: Any,
        max_batch: int,
        kernels: Any,
    ) -> None:
        from common.throughput.gpu_postprocess import plan_postprocess

        plan_postprocess(layout, max_batch, dims, input_hw, opts, dtype)  # UserError before any allocation
        self.layout, self.input_hw, self.opts, self.dims = layout, tuple(input_hw), opts, tuple(dims)
        self.dtype, self.max_batch, self.kernels = np.dtype(dtype), int(max_batch), kernels

    def make(self, mem: Any) -> Any:
        from common.throughput.gpu_postprocess import GpuPostprocessor

        post = GpuPostprocessor(mem, self.kernels)
        post.prepare(self.layout, self.max_batch, self.dims, self.input_hw, self.opts, self.dtype)
        return post

    def describe(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "input_hw": list(self.input_hw),
            "max_batch": self.max_batch,
            "dtype": str(self.dtype),
            "kernels": getattr(self.kernels, "arch", type(self.kernels).__name__),
        }
