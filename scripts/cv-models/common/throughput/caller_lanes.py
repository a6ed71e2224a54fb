"""Lanes driven by the caller's own thread: ``CallerLanePool``.

``common.throughput.lanes.LanePool`` gives each lane a thread of its own. At batch 1 on many lanes those threads,
the loaders' reader and the main thread all take turns at the interpreter, and each turn handed from one thread
to another costs a wake-up: the host, not the GPU, then sets the pace. ``CallerLanePool`` has no threads.
``submit`` stages the batch and enqueues its work on the next lane slot in the caller's thread, and returns once
the work is queued on the slot's stream; ``wait`` waits for that batch's end event. The lanes' work is
asynchronous on their streams (CUDA-graph replays return once launched), so one thread keeps every stream fed,
and what it waits for is the GPU, not another thread.

Slots: every lane and twin, in an order that alternates streams (lane 0, lane 1, ..., then their twins),
taken in turn; a slot still busy when its turn comes is waited for first, its result kept for ``wait``. A
batch a twin may not take (``pipelines``), and one ``submit`` names a lane for, runs on the stream's own lane
once every batch on that stream is done, as ``LanePool`` runs it. ``max_in_flight`` is the number of slots.

ONNX Runtime's CUDA EP keeps a captured CUDA graph per session and thread, so the thread that made the pool
makes every call on it (warm-up, batches, the latency pass); a call from another thread is refused.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from common.throughput.lanes import Lane, LanePool, _Begun

__all__ = ["CallerLanePool"]


class CallerLanePool(LanePool):
    """``LanePool``'s ``submit`` / ``wait`` / ``call_on`` / ``idle``, all run on the caller's thread (module
    docstring). ``call_all`` runs ``fn`` on one lane after the other."""

    def _start(self, name: str) -> None:
        self._owner = threading.get_ident()
        self._name = name
        # (stream index, slot) in turn: the streams' first slots, then their second ones...
        self._ring = [(k, slots[d]) for d in range(self.depth) for k, slots in enumerate(self._slots) if d < len(slots)]
        self._turn = 0
        self._busy: dict[int, _Begun] = {}  # id(lane) -> its batch begun and not yet waited for, oldest first
        self.max_in_flight = len(self._ring)

    def _check_thread(self) -> None:
        if threading.get_ident() != self._owner:
            raise RuntimeError(
                f"{self._name}: lanes driven by their caller take calls only from the thread that made them "
                "(ONNX Runtime keeps a captured CUDA graph per session and thread)"
            )

    def _batch_done(self) -> None:
        """Nothing to count: no thread waits for the batches running (``idle`` waits for them itself)."""

    def _finish(self, lane: Lane) -> None:
        """Wait for the batch begun on ``lane``, if any; its result goes to its future."""
        begun = self._busy.pop(id(lane), None)
        if begun is not None:
            self._end(begun)

    def _finish_all(self) -> None:
        for key in list(self._busy):
            self._end(self._busy.pop(key))

    def submit(self, batch: Any, lane: int | None = None) -> cf.Future[Any]:
        """Stage and enqueue ``batch`` on the next slot (``lane``: on that lane itself); its future."""
        self._check_thread()
        if self._stop:
            raise RuntimeError("LanePool is closed")
        k, slot = self._ring[self._turn]
        if lane is not None or not self._pipelines(slot, batch):
            stream = self._slots[lane if lane is not None else k]
            for other in stream:  # the stream's own lane takes it, once nothing else is on the stream
                self._finish(other)
            slot = stream[0]
        else:
            self._finish(slot)
        self._turn = (self._turn + 1) % len(self._ring)
        fut: cf.Future[Any] = cf.Future()
        fut.set_running_or_notify_cancel()
        t0 = time.perf_counter()
        try:
            self._busy[id(slot)] = _Begun(fut, slot, self._begin(slot, batch), t0)
        except BaseException as exc:  # handed to the caller's wait, as a lane thread hands it
            fut.set_exception(exc)
        return fut

    def wait(self, token: cf.Future[Any]) -> Any:
        self._check_thread()
        if not token.done():
            begun = next((b for b in self._busy.values() if b.fut is token), None)
            if begun is None:
                raise RuntimeError("wait: not a batch submitted to this pool")
            self._finish(begun.lane)
        return token.result()

    def call_on(self, index: int, fn: Callable[[Lane], Any]) -> Any:
        with self.idle():
            return fn(self.lanes[index])

    def call_all(self, fn: Callable[[Lane], Any]) -> list[Any]:
        """``fn(lane)`` on every lane, one after the other (there is one thread), with no batch in flight; the
        results in lane order (the first exception raised, once all are done)."""
        with self.idle():
            futures: list[cf.Future[Any]] = []
            for lane in self.lanes:
                futures.append(cf.Future())
                try:
                    futures[-1].set_result(fn(lane))
                except BaseException as exc:
                    futures[-1].set_exception(exc)
            return [f.result() for f in futures]

    @contextlib.contextmanager
    def idle(self) -> Iterator[list[Lane]]:
        """Every lane, once the batches in flight are done (their results kept for ``wait``)."""
        self._check_thread()
        self._finish_all()
        yield list(self.lanes)

    def close(self) -> None:
        """Wait for the batches in flight (their results kept for ``wait``); no batch is taken after."""
        self._check_thread()
        self._finish_all()
        self._stop = True
        self._last_end = None
