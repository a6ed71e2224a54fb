"""Run metadata: package versions, host, GPU (never fails; absent facts are None)."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import subprocess
from typing import Any

PACKAGES = (
    "numpy", "opencv-python-headless", "opencv-python", "pycocotools", "onnx", "onnxruntime",
    "onnxruntime-gpu", "tensorrt", "tensorrt-rtx", "tensorrt-rtx-cu13", "cuda-python", "cuda-bindings",
    "nvidia-modelopt",
)  # fmt: skip


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return found


def gpu_info() -> dict[str, Any] | None:
    """First GPU's name, compute capability and driver from nvidia-smi, or None."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    parts = [p.strip() for p in out[0].split(",")]
    keys = ("name", "compute_capability", "driver", "memory")
    return dict(zip(keys, parts, strict=False))


def host_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def run_metadata() -> dict[str, Any]:
    return {"host": host_info(), "gpu": gpu_info(), "packages": package_versions()}
