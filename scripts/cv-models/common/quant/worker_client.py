"""Start and talk to a ModelOpt worker (``common.quant.worker``) in the environment that has ModelOpt.

ModelOpt pulls onnxruntime-gpu and torch and lives in its own environment (the quant Pixi
environment, or .venv-quant); the precision search scores candidates with the ONNX Runtime of the
environment it runs in. The worker is that bridge: one process for the whole search, requests and
replies as JSON lines, its log (ModelOpt's output) in a file of the run folder. A ``WorkerPool``
runs several, so that candidates known in advance (the leave-one-out ranking) are quantized in parallel.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import queue
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from common.core.children import SCRIPTS_DIR, child_env
from common.core.errors import UserError

__all__ = ["ModelOptWorker", "WorkerPool", "default_quant_python"]

_REPO = SCRIPTS_DIR.parents[1]


def default_quant_python() -> str:
    """$YOLO_QUANT_PYTHON, else this interpreter when it has ModelOpt, else .venv-quant/bin/python."""
    env = os.environ.get("YOLO_QUANT_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("modelopt") is not None:
        return sys.executable
    return str(_REPO / ".venv-quant" / "bin" / "python")


class ModelOptWorker:
    """``with ModelOptWorker(python, log) as w: w.call("ptq", ...)``; a failed request is a UserError."""

    def __init__(self, python: str, log_path: Path) -> None:
        self.python = python
        self.log_path = log_path
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self.versions: dict[str, str] = {}

    def __enter__(self) -> ModelOptWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> dict[str, str]:
        if not Path(self.python).is_file():
            raise UserError(
                f"--quant-python {self.python}: no such interpreter; create the ModelOpt environment "
                "(bash scripts/dev/setup-quant-venv.sh, or pixi install -e quant) or set YOLO_QUANT_PYTHON"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", encoding="utf-8")
        env = child_env(PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            [self.python, "-m", "common.quant.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        reply = self._send({"op": "hello"}, "hello")
        if not reply.get("ok"):
            self.close()
            raise UserError(
                f"--quant-python {self.python} cannot run ModelOpt ({reply.get('error')}); point --quant-python "
                "or YOLO_QUANT_PYTHON at the interpreter of the ModelOpt environment"
            )
        self.versions = {"modelopt": reply["modelopt"], "onnxruntime": reply["onnxruntime"]}
        return self.versions

    def _send(self, request: dict[str, Any], what: str) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise UserError(f"the ModelOpt worker ({self.python}) died during {what}; its log: {self.log_path}")
        return json.loads(line)

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; its reply, or a UserError naming the worker log."""
        if self._proc is None:
            self.start()
        reply = self._send({"op": op, **fields}, op)
        if not reply.get("ok"):
            if self._log is not None:
                self._log.write(reply.get("traceback", "") + "\n")
                self._log.flush()
            raise UserError(f"ModelOpt {op} of {fields.get('src')} failed: {reply.get('error')}; log: {self.log_path}")
        return reply

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class WorkerPool:
    """``size`` ModelOpt workers behind one thread-safe ``call``: each call takes a free worker."""

    def __init__(self, python: str, log_path: Path, size: int = 1) -> None:
        self.python = python
        names = [log_path] + [log_path.with_name(f"{log_path.stem}-{i}{log_path.suffix}") for i in range(1, size)]
        self._workers = [ModelOptWorker(python, p) for p in names]
        self._free: queue.Queue[ModelOptWorker] = queue.Queue()
        self.versions: dict[str, str] = {}

    @property
    def size(self) -> int:
        return len(self._workers)

    def __enter__(self) -> WorkerPool:
        try:
            with concurrent.futures.ThreadPoolExecutor(len(self._workers)) as ex:
                for versions in ex.map(lambda w: w.start(), self._workers):
                    self.versions = versions
        except BaseException:
            self.close()
            raise
        for w in self._workers:
            self._free.put(w)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        w = self._free.get()
        try:
            return w.call(op, **fields)
        finally:
            self._free.put(w)

    def close(self) -> None:
        for w in self._workers:
            w.close()
