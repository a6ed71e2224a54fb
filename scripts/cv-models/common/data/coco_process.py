"""The streamed COCO evaluation in Python processes of their own, so it never waits on this process's GIL.

``ProcessCocoEval`` starts one or more ``python -m common.data.coco_process`` workers (fresh interpreters,
never forks of a process holding inference threads), each owning a share of the categories
(``common.data.coco_partition``), and sends each the indexed ground truth of its categories; both happen on
one thread of its own (``_Sender``), so the caller goes on at once. ``add`` hands that thread each batch
as it came (the image ids and each image's rows), and returns: the thread gathers the rows into one [N, 7]
array and sends each worker the rows of its categories (``category_index``), each image's count of them and
every image id. The workers match as the batches come (``StreamingCocoEval``) and at ``finish`` accumulate
their categories side by side, each in up to ``MAX_ACCUMULATE_PARTS`` forked copies of itself (its share of
the cores; threads where it can't fork), returning only their slices of the precision and recall arrays;
this process puts them together and summarises, so the 12 stats are the streamed evaluation's, equal to
pycocotools'. A worker error is one line (RuntimeError); if this process dies, the workers read the end of
their sockets and exit.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from common.core.children import child_env
from common.data.coco_accumulate import summarize
from common.data.coco_partition import (
    accumulate_forked,
    auto_workers,
    available_cpus,
    partition_categories,
    scatter,
    subset_ground_truth,
)
from common.data.coco_stream import (
    CHUNK_ROWS,
    GroundTruth,
    StreamingCocoEval,
    category_index,
    prepare_ground_truth,
)

__all__ = ["PROCESS_MIN_IMAGES", "ProcessCocoEval"]

PROCESS_MIN_IMAGES = 1000  # selections this large match in worker processes on the pipelined path
# the workers' CPU priority below this process's (nice): their matching has slack until the last batch, so
# they never take a core from the loaders or the inference threads that the run waits on
WORKER_NICE = 10
# forked processes (threads where it can't fork) a worker accumulates its categories in, at most: after the last
# batch, when the run no longer needs the cores
MAX_ACCUMULATE_PARTS = 8


# glibc malloc (ignored elsewhere): the worker's large NumPy temporaries come from a heap it keeps, not from fresh
# mappings that fault in page by page on every allocation, which slowed the accumulation at ``finish``
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
# one BLAS / OpenMP thread in a worker, whatever the environment says: its accumulation threads are its share of
# the cores, and a BLAS pool of one thread per core, which spins a while after each product, would take the rest
WORKER_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _lower_priority(pid: int, nice: int) -> None:
    """Give process ``pid`` ``nice`` more niceness than this process (where the platform has priorities)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
    except OSError:
        pass  # it runs at this process's priority


class _Worker:
    """One worker process and its connection (``_Sender`` writes to it)."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair()
        # a session of its own: a terminal's Ctrl-C reaches this process alone, which stops the worker (close)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "common.data.coco_process", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        theirs.close()
        _lower_priority(self.proc.pid, WORKER_NICE)
        self.conn = Connection(ours.detach())
        self.send_error: Exception | None = None

    def send(self, msg: tuple[Any, ...]) -> None:
        """Write one message (a send error is kept for the next ``add`` or ``finish``, never a silent stall)."""
        if self.send_error is not None:
            return
        try:
            if msg[0] == "rows":  # the array's bytes go as they are (a flat byte view: no copy)
                self.conn.send(msg[:3])
                self.conn.send_bytes(np.ascontiguousarray(msg[3]).reshape(-1).view(np.uint8))
            else:
                self.conn.send(msg)
        except Exception as exc:
            self.send_error = exc

    def died(self) -> RuntimeError:
        """The error to raise when the worker is gone, or when a message could not be sent to it."""
        exc = self.send_error
        if exc is not None and not isinstance(exc, OSError):
            return RuntimeError(f"a batch could not be sent to the COCO evaluation worker: {type(exc).__name__}: {exc}")
        code = self.proc.poll()
        state = f"exited with code {code}" if code is not None else "closed its connection"
        return RuntimeError(f"the COCO evaluation worker process {state} before returning its result")

    def recv(self) -> tuple[Any, ...]:
        try:
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            raise self.died() from exc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class _Sender:
    """One thread that first starts the workers (``spawn``, which fills ``workers``), then writes the queued
    messages to them in order (the sockets wait here, never in ``add``): one wake-up per batch for all the
    workers, not one per worker. A batch's rows are gathered and split here (``route``: one message per worker,
    with the rows of its categories alone), so each worker is sent its share, not every row, and the caller's
    thread does none of that work. ``spawned`` is set once no worker will start any more; ``error`` is why
    ``spawn`` failed, ``route_error`` why a batch could not be routed (after either, no message is written)."""

    def __init__(
        self,
        spawn: Callable[[list[_Worker]], None],
        route: Callable[[tuple[Any, ...]], list[tuple[Any, ...]]],
    ) -> None:
        self.workers: list[_Worker] = []
        self.spawned = threading.Event()
        self.error: Exception | None = None
        self.route_error: Exception | None = None
        self._spawn = spawn
        self._route = route
        self.outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._send_all, name="coco-eval-send", daemon=True)
        self._thread.start()

    def _send_all(self) -> None:
        try:
            self._spawn(self.workers)
        except Exception as exc:  # handed to the caller by ``add`` / ``finish``
            self.error = exc
        finally:
            self.spawned.set()
        while (msg := self.outbox.get()) is not None:
            if self.error is not None or self.route_error is not None:
                continue
            try:
                parts = self._route(msg) if msg[0] == "rows" else [msg] * len(self.workers)
            except Exception as exc:  # handed to the caller by ``add`` / ``finish``, never a lost batch
                self.route_error = exc
                continue
            for w, part in zip(self.workers, parts, strict=True):
                w.send(part)

    def put(self, msg: tuple[Any, ...]) -> None:
        """Queue ``msg`` for every worker."""
        self.outbox.put(msg)

    def stop(self) -> None:
        """Let the thread write what is queued, and end it."""
        if self._thread.is_alive():
            self.outbox.put(None)
            self._thread.join()


def _gathered(msg: tuple[Any, ...]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """``add``'s ("rows", image ids, rows per image) as ("rows", ids, each image's row count, all rows [N, 7])."""
    tag, image_ids, rows_per_image = msg
    counts = np.array([len(r) for r in rows_per_image], np.int64)
    parts = [np.asarray(r, np.float64).reshape(-1, 7) for r in rows_per_image]
    rows = np.concatenate(parts) if parts else np.zeros((0, 7), np.float64)
    return tag, np.asarray(image_ids, np.int64), counts, rows


def _owners(n_cats: int, groups: list[np.ndarray]) -> np.ndarray | None:
    """The worker of each category index (-1: none); None where one worker has them all."""
    if len(groups) == 1:
        return None
    owner = np.full(n_cats, -1, np.int64)
    for w, cats in enumerate(groups):
        owner[cats] = w
    return owner


class ProcessCocoEval:
    """COCOeval (bbox) over ``image_ids`` of ``coco``, its matching and accumulation in worker processes;
    ``add`` / ``finish`` / ``close`` as ``StreamingCocoEval``. ``workers``: how many (0: ``auto_workers`` for
    this machine's cores; never more than the categories with counted ground truth). The ground truth is
    indexed here; the workers start at ``start`` (or the first ``add``), so that a caller can keep their boot
    away from other start-up work (loader processes booting, a warm-up) that needs the cores."""

    def __init__(self, coco: Any, image_ids: Sequence[int], chunk_rows: int = CHUNK_ROWS, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0: automatic), got {workers}")
        self.gt = prepare_ground_truth(coco, image_ids)
        n_present = int(self.gt.counted.any(axis=1).sum()) if len(self.gt.counted) else 0
        wanted = workers or auto_workers(n_present, available_cpus())
        self.groups = partition_categories(self.gt.counted, wanted) or [np.arange(len(self.gt.cat_ids))]
        self.workers = len(self.groups)  # the worker processes that run
        self._owner = _owners(len(self.gt.cat_ids), self.groups)
        self.match_seconds = 0.0  # the workers' matching, all of them together (known at ``finish``)
        self.accumulate_seconds = 0.0  # the slowest worker's accumulation, after the last batch (``finish``)
        self.worker_cpu_seconds = 0.0  # the workers' CPU time, all of them, start-up included (known at ``finish``)
        self.feed_seconds = 0.0  # this process's time in ``add``
        self.feed_cpu_seconds = 0.0  # of which the calling thread's CPU time (the rest: waiting for a core or the GIL)
        self.start_seconds = 0.0  # from starting the workers to the last one ready to match (known at ``finish``)
        self.num_detections = 0
        # rows a worker matches together: its share of ``chunk_rows``, as it is sent only its share of the rows, so
        # it matches as often as one sent every row would, and the rows left at ``finish`` stay as few
        self._chunk_rows = max(1, chunk_rows // self.workers)
        # parts each worker accumulates in after the last batch, when the run no longer needs the cores
        self.accumulate_parts = max(1, min(MAX_ACCUMULATE_PARTS, available_cpus() // self.workers))
        self.accumulated_in = ""  # "processes" or "threads": how the workers' parts ran (known at ``finish``)
        self._t0 = 0.0
        self._sender: _Sender | None = None

    @property
    def _workers(self) -> list[_Worker]:
        """The workers started so far (all of them once ``_sender.spawned`` is set)."""
        return self._sender.workers if self._sender is not None else []

    def start(self) -> None:
        """Start the worker processes, each with the ground truth of its categories (once), on the sender's
        thread: this thread goes on at once, and the batches wait in the sender's queue until they are up."""
        if self._sender is not None:
            return
        self._t0 = time.time()
        self._sender = _Sender(self._spawn, self._route)

    def _spawn(self, workers: list[_Worker]) -> None:
        env = child_env(WORKER_MALLOC_ENV, **WORKER_THREAD_ENV)
        for cats in self.groups:
            workers.append(_Worker(env))
            workers[-1].send(("gt", subset_ground_truth(self.gt, cats), self._chunk_rows, self.accumulate_parts))

    def _route(self, msg: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """A "rows" message (``add``'s image ids and rows per image) as one message per worker: every image
        id, with the rows of the worker's categories alone (in their order) and each image's count of them.
        A row of a category no worker has goes to none: every worker would drop it."""
        tag, ids, counts, rows = _gathered(msg)
        if self._owner is None:
            return [(tag, ids, counts, rows)] * self.workers
        k = category_index(self.gt.cat_ids, rows[:, 6])
        owner = np.where(k >= 0, self._owner[np.maximum(k, 0)], -1)
        image = np.repeat(np.arange(len(ids)), counts)
        parts = []
        for w in range(self.workers):
            mine = np.flatnonzero(owner == w)
            parts.append((tag, ids, np.bincount(image.take(mine), minlength=len(ids)), rows.take(mine, axis=0)))
        return parts

    def _check_sender(self) -> None:
        """RuntimeError when the workers could not start or a message could not reach one."""
        assert self._sender is not None
        if self._sender.error is not None:
            exc = self._sender.error
            raise RuntimeError(f"the COCO evaluation workers could not start: {type(exc).__name__}: {exc}") from exc
        if self._sender.route_error is not None:
            exc = self._sender.route_error
            raise RuntimeError(
                f"a batch could not be handed to the COCO evaluation: {type(exc).__name__}: {exc}"
            ) from exc
        for w in self._workers:
            if w.send_error is not None:
                raise w.died() from w.send_error

    def add(self, image_ids: Sequence[int], rows_per_image: Sequence[np.ndarray]) -> None:
        """Hand a batch to the sender's thread as it is, which gathers and splits the rows: this thread, which
        the run waits on, only queues it. The arrays must not change afterwards (the evaluator's never do)."""
        self.start()
        t0, c0 = time.perf_counter(), time.thread_time()
        self.num_detections += sum(map(len, rows_per_image))
        self._check_sender()
        assert self._sender is not None
        self._sender.put(("rows", list(image_ids), list(rows_per_image)))
        self.feed_seconds += time.perf_counter() - t0
        self.feed_cpu_seconds += time.thread_time() - c0

    def _result(self, w: _Worker) -> tuple[Any, ...]:
        """One worker's reply to ``finish``: ("done", precision, recall, match s, accumulate s, CPU s, how)."""
        reply = w.recv()
        if reply[0] == "ready":
            self.start_seconds = max(self.start_seconds, reply[1] - self._t0)
            reply = w.recv()
        if reply[0] == "error":
            raise RuntimeError(f"COCO evaluation worker: {reply[1]}")
        return reply

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """Wait for the workers' matching and accumulation of everything added: pycocotools' precision
        [T, R, K, A, M] and recall [T, K, A, M]."""
        self.start()
        assert self._sender is not None
        self._sender.put(("finish",))
        try:
            self._sender.stop()
            self._check_sender()
            parts, hows = [], set()
            for w, cats in zip(self._workers, self.groups, strict=True):
                _, precision, recall, match_s, accumulate_s, cpu_s, how = self._result(w)
                parts.append((cats, precision, recall))
                hows.add(how)
                self.match_seconds += match_s
                self.worker_cpu_seconds += cpu_s
                self.accumulate_seconds = max(self.accumulate_seconds, accumulate_s)
            # "threads" if any worker accumulated on threads ("" without workers)
            self.accumulated_in = "threads" if "threads" in hows else next(iter(hows), "")
        finally:
            self.close()
        return scatter(len(self.gt.cat_ids), self.gt.counted.shape[1], parts)

    def finish(self) -> np.ndarray:
        """The 12 stats, as pycocotools' ``COCOeval.stats``."""
        return summarize(*self.precision_recall())

    def close(self) -> None:
        """Stop the workers (after ``finish``, or without a result when the run failed)."""
        if self._sender is not None:
            self._sender.spawned.wait()  # no worker starts after this
        for w in self._workers:
            w.kill()
        if self._sender is not None:
            self._sender.stop()  # a send blocked on a worker fails now that it is gone
        for w in self._workers:
            w.conn.close()


def _reader(conn: Connection, inbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
    """Drain the socket while the matching runs, so the sender's ``add`` never waits on it; done after
    ``finish``, the last message."""
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "rows":
                msg = (*msg, np.frombuffer(conn.recv_bytes(), np.float64).reshape(-1, 7))
            inbox.put(msg)
            if msg[0] == "finish":
                return
    except (EOFError, OSError):
        inbox.put(None)


def _finished(ev: StreamingCocoEval, parts: int) -> tuple[Any, ...]:
    """The worker's reply to ``finish``: its categories' precision and recall (accumulated in ``parts`` forked
    processes, or threads), its matching and accumulation seconds, its CPU seconds since it started (its
    forked processes' too), and how the parts ran."""
    ev.flush()
    t0 = time.perf_counter()
    (precision, recall), how = accumulate_forked(ev.scored(), ev.gt.counted, parts)
    cpu = os.times()
    cpu_s = cpu.user + cpu.system + cpu.children_user + cpu.children_system
    return ("done", precision, recall, ev.match_seconds, time.perf_counter() - t0, cpu_s, how)


def _serve(conn: Connection) -> None:
    """The worker: match each batch as it comes; at ``finish``, reply ``_finished`` or an error."""
    sys.setswitchinterval(0.001)  # the reader gets the GIL back soon while the matching holds it
    _, gt, chunk_rows, parts = conn.recv()
    ev = StreamingCocoEval.from_ground_truth(gt, chunk_rows) if isinstance(gt, GroundTruth) else None
    conn.send(("ready", time.time()))
    inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    reader = threading.Thread(target=_reader, args=(conn, inbox), daemon=True)
    reader.start()
    error = None if ev is not None else "the ground truth message is not a GroundTruth"
    while (msg := inbox.get()) is not None:
        if msg[0] == "finish":
            reader.join()  # done reading: the accumulation may fork this process, which then has one thread
            conn.send(("error", error) if error or ev is None else _finished(ev, parts))
            return
        if error is not None or ev is None or not len(msg[2]):
            continue
        try:
            _, ids, counts, rows = msg
            ev.add(ids.tolist(), np.split(rows, np.cumsum(counts)[:-1]))
        except Exception as exc:  # handed to the caller at finish, as one line
            error = f"{type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    conn = Connection(int(argv[0]))
    try:
        _serve(conn)
    except (EOFError, OSError, KeyboardInterrupt):
        return 1  # the caller went away or stopped the run
    except Exception as exc:  # one line to the caller where it still listens
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
