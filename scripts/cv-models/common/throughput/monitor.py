"""GPU utilisation sampled in a background thread through NVML (``common.core.sysinfo.nvml``), when present."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from common.core.sysinfo import nvml

__all__ = ["GpuMonitor"]


class GpuMonitor:
    """``with GpuMonitor() as mon: ...`` then ``mon.summary()``: mean/max SM utilisation in %.

    Without NVML (no nvidia-ml-py, or no GPU) it records nothing and ``summary()`` says why.
    """

    def __init__(self, device: int = 0, interval_s: float = 0.05) -> None:
        self.device, self.interval_s = device, interval_s
        self.samples: list[int] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> GpuMonitor:
        self._stack = contextlib.ExitStack()
        try:
            nv = self._stack.enter_context(nvml())
            self._handle = nv.nvmlDeviceGetHandleByIndex(self.device)
        except Exception as exc:  # ImportError (no nvidia-ml-py), NVMLError, ...
            self._stack.close()
            self.error = f"{type(exc).__name__}: {exc}".strip()
            return self
        self._nvml = nv
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            except Exception as exc:
                self.error = str(exc)
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._stack.close()
        self._nvml = None

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None, "samples": 0, "note": self.error or "no samples"}
        return {
            "gpu_util_mean": sum(self.samples) / len(self.samples),
            "gpu_util_max": max(self.samples),
            "samples": len(self.samples),
        }
