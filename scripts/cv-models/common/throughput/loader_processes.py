"""Loader processes (``--loaders processes``): the evaluator's ``Loaders`` as fresh Python processes.

Loaders are threads (``common.data.loading.ThreadLoaders``: OpenCV releases the GIL while it decodes)
unless ``--loaders`` picks processes (``auto``, the default, does for large GPU runs on many cores).
``ProcessLoaders`` run the same ``load_chunk`` in fresh Python processes
(``python -m common.throughput.loader_processes``; never a
fork of this process, which holds CUDA and ONNX Runtime threads) and take nothing of this interpreter's GIL
but one message per chunk: each worker writes the images into slots of one shared-memory ring (a ``memfd``,
so Docker's small default ``/dev/shm`` does not limit it) and sends back their shapes and letterbox geometry.
An image's slot is free again once the last NumPy view of it is gone (the batch was staged). An image that
does not fit its slot, or finds no free slot, travels pickled instead: slower, never wrong.

A job is ``(image_id, path)``; a chunk is a list of jobs, loaded in order by one worker.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import ctypes
import itertools
import math
import mmap
import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from common.core.children import child_env
from common.core.errors import UserError
from common.data.loading import LoadedImage, ThreadLoaders, load_image, tensor_bytes
from common.eval.protocols import LoaderPlan, Loaders

__all__ = ["ProcessLoaders", "SlotRing", "main", "process_loaders"]

Job = tuple[int, str]


class _SlotLease:
    """Holds one ring slot; the slot is free again when this object is gone (with the views holding it)."""

    __slots__ = ("_free", "_slot")

    def __init__(self, free: collections.deque[int], slot: int) -> None:
        self._free, self._slot = free, slot

    def __del__(self) -> None:
        self._free.append(self._slot)  # atomic, on whichever thread dropped the last view


class SlotRing:
    """``slots`` slots of ``slot_bytes`` in one shared mapping of a memfd (``fd``: for the workers)."""

    def __init__(self, slots: int, slot_bytes: int) -> None:
        self.slots, self.slot_bytes = max(1, int(slots)), max(1, int(slot_bytes))
        self.nbytes = self.slots * self.slot_bytes
        self.fd = os.memfd_create("yolo-loaders-ring")
        try:
            os.ftruncate(self.fd, self.nbytes)
            self._map = mmap.mmap(self.fd, self.nbytes)
        except OSError as exc:
            os.close(self.fd)
            raise UserError(
                f"--loaders processes: cannot map {self.nbytes / 2**20:.0f} MiB of shared memory "
                f"({exc}); use --loaders threads"
            ) from exc
        self._free: collections.deque[int] = collections.deque(range(self.slots - 1, -1, -1))
        self._slot_type = ctypes.c_uint8 * self.slot_bytes  # one ctypes type for every view (``view``)

    def acquire(self) -> int:
        """A free slot, or -1 when none is (the image then travels pickled)."""
        try:
            return self._free.pop()  # atomic; slots come back from finalizers on any thread
        except IndexError:
            return -1

    def release(self, slot: int) -> None:
        self._free.append(slot)

    @property
    def free(self) -> int:
        return len(self._free)

    def view(self, slot: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Slot ``slot`` as an array; the slot is released when the last view of it is gone."""
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        if count * dtype.itemsize > self.slot_bytes:
            raise ValueError(f"{count} x {dtype} does not fit a {self.slot_bytes}-byte slot")
        raw = self._slot_type.from_buffer(self._map, slot * self.slot_bytes)
        raw._lease = _SlotLease(self._free, slot)  # type: ignore[attr-defined]
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def close_fd(self) -> None:
        """The workers have their own copy of the descriptor; the mapping stays until unused."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ProcessLoaders:
    """``workers`` loader processes writing into a ``SlotRing`` of ``slots`` x ``slot_bytes``."""

    def __init__(self, workers: int, size: int, mode: str, slots: int, slot_bytes: int) -> None:
        self.size, self.mode = size, mode
        self.ring = SlotRing(slots, slot_bytes)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._tasks: dict[int, tuple[int, cf.Future[list[LoadedImage]], list[int]]] = {}  # task -> (worker, ..)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._conns: list[Connection] = []
        env = child_env()
        try:
            for _ in range(max(1, workers)):
                ours, theirs = socket.socketpair()
                cmd = [
                    sys.executable,
                    "-m",
                    "common.throughput.loader_processes",
                    str(theirs.fileno()),
                    str(self.ring.fd),
                    str(self.ring.nbytes),
                    str(self.ring.slot_bytes),
                ]
                # a session of their own: a terminal's Ctrl-C reaches this process alone, which stops them (close)
                # instead of each printing a KeyboardInterrupt traceback of its own
                proc = subprocess.Popen(
                    cmd,
                    pass_fds=(theirs.fileno(), self.ring.fd),
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
                self._procs.append(proc)
                theirs.close()
                self._conns.append(Connection(ours.detach()))
        except BaseException:
            self.close()
            raise
        self.ring.close_fd()
        self._reader: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self.start_seconds = 0.0  # from starting the processes to all of them ready (``ready``)

    def ready(self) -> float:
        """Wait until every process has imported its modules and mapped the ring (they boot while the caller
        does other work, e.g. warm-up); the seconds it took from the start. RuntimeError if one died."""
        if self._reader is not None:
            return self.start_seconds
        for worker, conn in enumerate(self._conns):
            try:
                hello = conn.recv()
            except (EOFError, OSError):
                hello = None
            if hello != "ready":
                code = self._procs[worker].poll()
                raise RuntimeError(
                    f"loader process {worker} did not start (exit code {code}; its error is above); "
                    "rerun with --loaders threads"
                )
        self.start_seconds = time.perf_counter() - self._t0
        self._reader = threading.Thread(target=self._read, name="load-procs", daemon=True)
        self._reader.start()
        return self.start_seconds

    def load(self, jobs: list[Job]) -> cf.Future[list[LoadedImage]]:
        self.ready()
        fut: cf.Future[list[LoadedImage]] = cf.Future()
        fut.set_running_or_notify_cancel()  # running from now on: a worker has it, ``cancel`` can't take it back
        slots = [self.ring.acquire() for _ in jobs]
        with self._lock:
            busy = collections.Counter(w for w, _, _ in self._tasks.values())
            worker = min(range(len(self._conns)), key=busy.__getitem__)  # the one with the fewest chunks
            task = next(self._ids)
            self._tasks[task] = (worker, fut, slots)
        try:
            self._conns[worker].send(
                (task, [(i, p, s) for (i, p), s in zip(jobs, slots, strict=True)], self.size, self.mode)
            )
        except OSError as exc:
            self._fail(task, RuntimeError(f"loader process {worker} is gone ({exc}); rerun with --loaders threads"))
        return fut

    def _fail(self, task: int, exc: BaseException) -> None:
        with self._lock:
            entry = self._tasks.pop(task, None)
        if entry is not None:
            _, fut, slots = entry
            for s in slots:
                if s >= 0:
                    self.ring.release(s)
            fut.set_exception(exc)

    def _read(self) -> None:
        live = dict(enumerate(self._conns))
        while live:
            for conn in wait(list(live.values())):
                worker = self._conns.index(conn)  # type: ignore[arg-type]
                try:
                    task, items, error = conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    del live[worker]
                    code = self._procs[worker].poll()
                    with self._lock:
                        lost = [t for t, (w, _, _) in self._tasks.items() if w == worker]
                    for t in lost:
                        self._fail(
                            t,
                            RuntimeError(
                                f"loader process {worker} exited (code {code}); see its error "
                                "above, or rerun with --loaders threads"
                            ),
                        )
                    continue
                if error is not None:
                    kind, message = error
                    self._fail(task, UserError(message) if kind == "user" else RuntimeError(message))
                    continue
                self._deliver(task, items)

    def _deliver(self, task: int, items: list[tuple[Any, ...]]) -> None:
        with self._lock:
            _, fut, slots = self._tasks.pop(task)
        out = []
        for (image_id, slot, shape, dtype, meta, seconds, array), asked in zip(items, slots, strict=True):
            if slot < 0 and asked >= 0:
                self.ring.release(asked)  # it did not fit the slot: it came pickled
            tensor = array if slot < 0 else self.ring.view(slot, shape, dtype)
            out.append(LoadedImage(image_id, tensor, meta, seconds))
        fut.set_result(out)

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader = getattr(self, "_reader", None)
        if reader is not None and reader.is_alive():
            reader.join(timeout=10)
        for conn in self._conns:
            conn.close()
        self.ring.close_fd()

    def __enter__(self) -> ProcessLoaders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Connection, ring_fd: int, ring_bytes: int, slot_bytes: int) -> None:
    """A worker: load each chunk it is sent, write the arrays into their slots, answer with the rest."""
    import cv2

    cv2.setNumThreads(1)  # one image at a time per process; the processes are the parallelism
    ring = mmap.mmap(ring_fd, ring_bytes)
    os.close(ring_fd)
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task, jobs, size, mode = msg
        try:
            out = []
            for image_id, path, slot in jobs:
                it = load_image(path, image_id, size, mode)
                arr = np.ascontiguousarray(it.tensor)
                if 0 <= slot and arr.nbytes <= slot_bytes:
                    dst = np.frombuffer(ring, np.uint8, arr.nbytes, slot * slot_bytes)
                    dst[:] = arr.reshape(-1).view(np.uint8)
                    del dst
                    out.append((image_id, slot, arr.shape, arr.dtype.str, it.meta, it.seconds, None))
                else:
                    out.append((image_id, -1, arr.shape, arr.dtype.str, it.meta, it.seconds, arr))
            conn.send((task, out, None))
        except UserError as exc:
            conn.send((task, None, ("user", str(exc))))
        except Exception as exc:  # handed to the evaluator, which raises it
            conn.send((task, None, ("error", f"loader process: {type(exc).__name__}: {exc}")))


def main(argv: list[str]) -> None:
    """A loader process's entry (``ProcessLoaders`` starts it): connection fd, ring fd, ring and slot bytes."""
    _serve(Connection(int(argv[0])), int(argv[1]), int(argv[2]), int(argv[3]))


def process_loaders(plan: LoaderPlan) -> Loaders:
    """The ``LoaderFactory`` of ``--loaders processes``: a slot for every image loading or held by a batch in
    flight, each as large as the largest array the selected images give (their sizes from the instances file;
    an image larger than it says still loads, pickled). ``workers`` 0 loads inline, in the caller's thread."""
    if plan.workers <= 0:
        return ThreadLoaders(0, plan.size, plan.mode, plan.decode)
    imgs = plan.dataset.coco.imgs
    ids = dict.fromkeys(plan.dataset.image_ids)
    dims = [(int(imgs[i].get("width") or 0), int(imgs[i].get("height") or 0)) for i in ids]
    slot = max((tensor_bytes(plan.mode, plan.size, w, h) for w, h in dims), default=0)
    slot = slot or tensor_bytes(plan.mode, plan.size, plan.size, plan.size)
    return ProcessLoaders(plan.workers, plan.size, plan.mode, plan.slots, slot)


if __name__ == "__main__":
    main(sys.argv[1:])
