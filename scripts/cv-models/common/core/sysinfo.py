"""Run metadata: package versions, host, GPU (never fails; absent facts are None).

GPU facts come from NVML alone (nvidia-ml-py, import name ``pynvml``), in one shape (``gpu_facts``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import platform
from collections.abc import Iterator
from typing import Any

__all__ = [
    "PACKAGES",
    "cpu_seconds",
    "gpu_facts",
    "gpu_info",
    "host_info",
    "nvml",
    "package_versions",
    "run_metadata",
]

PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "pycocotools",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "tensorrt-rtx",
    "tensorrt-rtx-cu13",
    "cuda-python",
    "cuda-bindings",
    "nvidia-modelopt",
    "nvidia-ml-py",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return found


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def nvml() -> Iterator[Any]:
    """The initialised ``pynvml`` module (package nvidia-ml-py), shut down afterwards.

    The one place GPU facts come from; raises ImportError or ``pynvml.NVMLError`` without NVML.
    """
    import pynvml

    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def gpu_facts(nv: Any, handle: Any) -> dict[str, Any]:
    """One GPU in the one shape metrics.json uses everywhere (``run.gpu``, backend ``device``/``gpu``).

    ``driver`` is the driver version (as nvidia-smi shows it), ``driver_version`` the CUDA version
    the driver supports as an int (12080 = 12.8, as ``cudaDriverGetVersion``); ``memory`` is the
    old nvidia-smi text of ``total_memory_mib``.
    """
    major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
    mib = int(nv.nvmlDeviceGetMemoryInfo(handle).total) // (1 << 20)
    return {
        "index": int(nv.nvmlDeviceGetIndex(handle)),
        "name": _text(nv.nvmlDeviceGetName(handle)),
        "compute_capability": f"{major}.{minor}",
        "driver": _text(nv.nvmlSystemGetDriverVersion()),
        "driver_version": int(nv.nvmlSystemGetCudaDriverVersion()),
        "total_memory_mib": mib,
        "memory": f"{mib} MiB",
    }


def gpu_info(device: int = 0, pci_bus_id: str | None = None) -> dict[str, Any] | None:
    """``gpu_facts`` of the GPU at NVML ``device`` index (or at ``pci_bus_id``, which is how a CUDA
    device ordinal is matched), or None without NVML or without that GPU."""
    try:
        with nvml() as nv:
            if pci_bus_id is not None:
                handle = nv.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
            else:
                handle = nv.nvmlDeviceGetHandleByIndex(device)
            return gpu_facts(nv, handle)
    except Exception:  # ImportError (no nvidia-ml-py), NVMLError (no driver / no such GPU), ...
        return None


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process, and of its child processes waited for so far (a call's
    loader processes and COCO workers, once it has closed them); (0, 0) where the platform has no ``getrusage``."""
    try:
        import resource
    except ImportError:
        return 0.0, 0.0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def host_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def run_metadata() -> dict[str, Any]:
    return {"host": host_info(), "gpu": gpu_info(), "packages": package_versions()}
