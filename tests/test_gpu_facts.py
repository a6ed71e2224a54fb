"""GPU facts from one source (NVML through nvidia-ml-py, import name ``pynvml``) in one shape:
run metadata (``run.gpu``), the CUDA memory layer's ``device_info`` (backend ``device`` / ``gpu``)
and the utilisation monitor all go through ``common.core.sysinfo``.

NVML is replaced by ``FakeNvml``, a module with the functions of the real ``pynvml`` we call
(checked against the real module where nvidia-ml-py is installed).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from common.core import sysinfo
from common.gpu import cuda_mem
from common.throughput.monitor import GpuMonitor

# The keys metrics.json had before (nvidia-smi: run.gpu; cuda-python: backend device/gpu): all kept.
OLD_SMI_KEYS = {"name", "compute_capability", "driver", "memory"}
OLD_CUDA_KEYS = {"name", "compute_capability", "total_memory_mib", "driver_version"}


class NVMLError(Exception):
    pass


def fake_nvml(gpus: dict[str, tuple[str, tuple[int, int], int]]) -> types.ModuleType:
    """``pynvml`` stand-in over {PCI bus id: (name, compute capability, total bytes)} in index order."""
    ids = list(gpus)
    nv: Any = types.ModuleType("pynvml")
    nv.calls = []
    nv.NVMLError = NVMLError

    def handle_of(index: int) -> str:
        if not 0 <= index < len(ids):
            raise NVMLError("Invalid Argument")
        return ids[index]

    def by_bus(bus: str) -> str:
        want = tuple(int(x, 16) for x in bus.replace(".", ":").split(":"))
        for bus_id in ids:
            if tuple(int(x, 16) for x in bus_id.replace(".", ":").split(":")) == want:
                return bus_id
        raise NVMLError("Not Found")

    nv.nvmlInit = lambda: nv.calls.append("init")
    nv.nvmlShutdown = lambda: nv.calls.append("shutdown")
    nv.nvmlDeviceGetHandleByIndex = handle_of
    nv.nvmlDeviceGetHandleByPciBusId = by_bus
    nv.nvmlDeviceGetIndex = ids.index
    nv.nvmlDeviceGetName = lambda h: gpus[h][0].encode()  # older nvidia-ml-py returned bytes
    nv.nvmlDeviceGetCudaComputeCapability = lambda h: gpus[h][1]
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=gpus[h][2], free=0, used=0)
    nv.nvmlSystemGetDriverVersion = lambda: "570.86.10"
    nv.nvmlSystemGetCudaDriverVersion = lambda: 12080
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=50, memory=10)
    return nv


GPUS = {
    "00000000:01:00.0": ("NVIDIA GeForce RTX 5090", (12, 0), 32607 << 20),
    "00000000:41:00.0": ("NVIDIA H200", (9, 0), 143771 << 20),
}


@pytest.fixture
def nvml(monkeypatch) -> Any:
    nv = fake_nvml(GPUS)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    return nv


def test_fake_matches_the_real_pynvml() -> None:
    real = pytest.importorskip("pynvml")
    fake = fake_nvml(GPUS)
    missing = [n for n in vars(fake) if n.startswith("nvml") and not callable(getattr(real, n, None))]
    assert not missing, f"the fake offers what nvidia-ml-py lacks: {missing}"


def test_one_shape_with_every_old_key(nvml) -> None:
    info = sysinfo.gpu_info()
    assert info == {
        "index": 0,
        "name": "NVIDIA GeForce RTX 5090",
        "compute_capability": "12.0",
        "driver": "570.86.10",
        "driver_version": 12080,
        "total_memory_mib": 32607,
        "memory": "32607 MiB",
    }
    assert OLD_SMI_KEYS | OLD_CUDA_KEYS <= set(info)
    assert nvml.calls == ["init", "shutdown"]
    assert sysinfo.run_metadata()["gpu"] == info


def test_cuda_device_is_matched_by_pci_bus_id(nvml, monkeypatch) -> None:
    """CUDA may number GPUs differently from NVML (CUDA_VISIBLE_DEVICES, fastest-first order):
    CUDA device 0 here is the second NVML GPU."""
    props = types.SimpleNamespace(pciDomainID=0, pciBusID=0x41, pciDeviceID=0, major=9, minor=0)
    rt = types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=0),
        cudaGetDeviceCount=lambda: (0, 1),
        cudaGetDeviceProperties=lambda device: (0, props),
    )
    monkeypatch.setattr(cuda_mem, "_runtime", lambda: rt)
    info = cuda_mem.device_info(0)
    assert info is not None and info["name"] == "NVIDIA H200" and info["index"] == 1
    assert set(info) == set(sysinfo.gpu_info() or {})  # one shape
    assert cuda_mem.device_info(1) is None  # no such CUDA device


def test_no_nvml_means_no_gpu_facts(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert sysinfo.gpu_info() is None
    assert sysinfo.run_metadata()["gpu"] is None
    with GpuMonitor() as mon:
        pass
    assert mon.summary()["samples"] == 0 and "pynvml" in mon.summary()["note"]


def test_monitor_on_a_missing_gpu_shuts_nvml_down(nvml) -> None:
    with GpuMonitor(device=7) as mon:
        pass
    assert "Invalid Argument" in mon.summary()["note"]
    assert nvml.calls == ["init", "shutdown"]


def test_cpu_seconds_counts_a_child_process_once_it_is_waited_for() -> None:
    """The second figure grows by a finished child's CPU time (the bench's loaders and COCO workers)."""
    import subprocess
    import sys

    from common.core.sysinfo import cpu_seconds

    me0, kids0 = cpu_seconds()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    me1, kids1 = cpu_seconds()
    assert kids1 - kids0 >= 0.25 and me1 >= me0
