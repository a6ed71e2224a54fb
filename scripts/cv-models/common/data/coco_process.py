"""The streamed COCO evaluation's matching in a Python process of its own, so it never waits on this process's GIL.

``ProcessCocoEval`` starts ``python -m common.data.coco_process`` (a fresh interpreter, never a fork of a
process holding inference threads) and sends it the indexed ground truth (``prepare_ground_truth``). ``add``
sends each batch as one message: the image ids, each image's row count and all rows as one [N, 7] array.
The worker matches as they come (``StreamingCocoEval``) and at ``finish`` returns its matched detections
(``Scored``); this process accumulates and summarises them, so the 12 stats are the streamed evaluation's,
equal to pycocotools'. A worker error is one line (RuntimeError); if this process dies, the worker reads the
end of its socket and exits.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from common.data.coco_accumulate import Scored, accumulate, summarize
from common.data.coco_stream import CHUNK_ROWS, GroundTruth, StreamingCocoEval, prepare_ground_truth

__all__ = ["PROCESS_MIN_IMAGES", "ProcessCocoEval"]

PROCESS_MIN_IMAGES = 1000  # selections this large match in a worker process on the pipelined path


class ProcessCocoEval:
    """COCOeval (bbox) over ``image_ids`` of ``coco``, its matching in a worker process; ``add`` / ``finish`` /
    ``close`` as ``StreamingCocoEval``. The worker starts here and boots while the caller does other work."""

    def __init__(self, coco: Any, image_ids: Sequence[int], chunk_rows: int = CHUNK_ROWS) -> None:
        self.gt = prepare_ground_truth(coco, image_ids)
        self.match_seconds = 0.0  # the worker's matching (known at ``finish``)
        self.feed_seconds = 0.0  # this process's time in ``add``
        self.feed_cpu_seconds = 0.0  # of which the calling thread's CPU time (the rest: waiting for a core or the GIL)
        self.start_seconds = 0.0  # from starting the worker to it being ready to match (known at ``finish``)
        self.num_detections = 0
        here = str(Path(__file__).resolve().parents[2])  # the folder holding ``common``, for the worker's path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
        ours, theirs = socket.socketpair()
        self._t0 = time.time()
        # a session of its own: a terminal's Ctrl-C reaches this process alone, which stops the worker (close)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "common.data.coco_process", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._send_error: OSError | None = None
        self._sender = threading.Thread(target=self._send_all, name="coco-eval-send", daemon=True)
        self._sender.start()
        self._outbox.put(("gt", self.gt, chunk_rows))

    def _send_all(self) -> None:
        """Write the queued messages to the worker (the socket waits here, never in ``add``)."""
        while (msg := self._outbox.get()) is not None:
            if self._send_error is None:
                try:
                    if msg[0] == "rows":  # the array's bytes go as they are: no pickled copy
                        self._conn.send(msg[:3])
                        self._conn.send_bytes(msg[3])
                    else:
                        self._conn.send(msg)
                except OSError as exc:
                    self._send_error = exc

    def _died(self) -> RuntimeError:
        code = self._proc.poll()
        state = f"exited with code {code}" if code is not None else "closed its connection"
        return RuntimeError(f"the COCO evaluation worker process {state} before returning its result")

    def _stop_sending(self) -> None:
        """Let the sender write what is queued, and end it."""
        if self._sender.is_alive():
            self._outbox.put(None)
            self._sender.join()

    def add(self, image_ids: Sequence[int], rows_per_image: Sequence[np.ndarray]) -> None:
        """Hand a batch to the worker: one message with every image's rows in one array."""
        t0, c0 = time.perf_counter(), time.thread_time()
        counts = np.array([len(r) for r in rows_per_image], np.int64)
        parts = [np.asarray(r, np.float64).reshape(-1, 7) for r in rows_per_image]
        rows = np.concatenate(parts) if parts else np.zeros((0, 7), np.float64)
        self.num_detections += len(rows)
        if self._send_error is not None:
            raise self._died() from self._send_error
        self._outbox.put(("rows", np.asarray(image_ids, np.int64), counts, rows))
        self.feed_seconds += time.perf_counter() - t0
        self.feed_cpu_seconds += time.thread_time() - c0

    def _recv(self) -> tuple[Any, ...]:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died() from exc

    def scored(self) -> Scored:
        """Wait for the worker's matching of everything added: its matched detections."""
        self._outbox.put(("finish",))
        self._stop_sending()
        if self._send_error is not None:
            self.close()
            raise self._died() from self._send_error
        reply = self._recv()
        if reply[0] == "ready":
            self.start_seconds = reply[1] - self._t0
            reply = self._recv()
        self.close()
        if reply[0] == "error":
            raise RuntimeError(f"COCO evaluation worker: {reply[1]}")
        _, scored, self.match_seconds = reply
        return scored

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        return accumulate(self.scored(), self.gt.counted)

    def finish(self) -> np.ndarray:
        """The 12 stats, as pycocotools' ``COCOeval.stats``."""
        return summarize(*self.precision_recall())

    def close(self) -> None:
        """Stop the worker (after ``finish``, or without a result when the run failed)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._stop_sending()  # a send blocked on the worker fails now that it is gone
        self._conn.close()


def _reader(conn: Connection, inbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
    """Drain the socket while the matching runs, so the sender's ``add`` never waits on it."""
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "rows":
                msg = (*msg, np.frombuffer(conn.recv_bytes(), np.float64).reshape(-1, 7))
            inbox.put(msg)
    except (EOFError, OSError):
        inbox.put(None)


def _serve(conn: Connection) -> None:
    """The worker: match each batch as it comes; at ``finish``, reply (``done``, Scored, seconds) or an error."""
    sys.setswitchinterval(0.001)  # the reader gets the GIL back soon while the matching holds it
    _, gt, chunk_rows = conn.recv()
    ev = StreamingCocoEval.from_ground_truth(gt, chunk_rows) if isinstance(gt, GroundTruth) else None
    conn.send(("ready", time.time()))
    inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    threading.Thread(target=_reader, args=(conn, inbox), daemon=True).start()
    error = None if ev is not None else "the ground truth message is not a GroundTruth"
    while (msg := inbox.get()) is not None:
        if msg[0] == "finish":
            conn.send(("error", error) if error or ev is None else ("done", ev.scored(), ev.match_seconds))
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
