"""GPU utilisation sampled in a background thread through NVML (nvidia-ml-py), when present."""

from __future__ import annotations

import threading
from typing import Any


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

    def __enter__(self) -> GpuMonitor:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device)
            self._nvml = pynvml
        except Exception as exc:  # ImportError, NVMLError, ...
            self.error = f"{type(exc).__name__}: {exc}".strip()
            return self
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
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None, "samples": 0, "note": self.error or "no samples"}
        return {
            "gpu_util_mean": sum(self.samples) / len(self.samples),
            "gpu_util_max": max(self.samples),
            "samples": len(self.samples),
        }
