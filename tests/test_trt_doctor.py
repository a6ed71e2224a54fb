"""trt-doctor on fake machines: tmp dirs with named libnvinfer files, a fake trtexec, a fake probe."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import trt_doctor
import trt_probe

from common.trt import env as trtenv

# ----------------------------------------------------------------------------- helpers


def make_libs(d: Path, version: str, plugin: bool = True) -> Path:
    """A TensorRT lib folder as NGC images lay it out: the real file plus its SONAME link."""
    d.mkdir(parents=True, exist_ok=True)
    major = version.split(".")[0]
    stems = ["libnvinfer", "libnvonnxparser"] + (["libnvinfer_plugin"] if plugin else [])
    for stem in stems:
        (d / f"{stem}.so.{version}").write_bytes(b"\x7fELF fake")
        os.symlink(f"{stem}.so.{version}", d / f"{stem}.so.{major}")
    return d


def make_trtexec(d: Path, output: str, rc: int = 0) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    exe = d / "trtexec"
    # a Python script via its absolute interpreter: the tests' PATH holds no shell tools
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({output + chr(10)!r})\nsys.exit({rc})\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def fake_probe(
    trt: str | None = None,
    gpu: tuple[str, str] | None = ("NVIDIA GeForce RTX 5090", "12.0"),
    providers: Sequence[str] = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    trt_ep_error: str | None = None,
    cuda_ep_error: str | None = None,
    ort: bool = True,
    cuda_ep_run_error: str | None = None,
    driver_cuda: str | None = "12.8",
    packages: dict[str, str] | None = None,
) -> dict[str, Any]:
    def ep(listed: bool, error: str | None, run_error: str | None = None) -> dict[str, Any]:
        ok = listed and error is None
        return {
            "listed": listed,
            "library": "/x/libonnxruntime_providers.so" if listed else None,
            "library_loads": (error is None) if listed else None,
            "load_error": error,
            "session_ok": (error is None) if listed else None,
            "session_error": error,
            "run_ok": (run_error is None) if ok else None,
            "run_error": run_error,
        }

    return {
        "python": {"executable": "/env/bin/python", "version": "3.12.8"},
        "tensorrt": {"ok": True, "version": trt, "file": "/env/site-packages/tensorrt/__init__.py"}
        if trt
        else {"ok": False, "error": "ModuleNotFoundError: No module named 'tensorrt'"},
        "tensorrt_rtx": {"ok": False, "error": "ModuleNotFoundError: No module named 'tensorrt_rtx'"},
        "tensorrt_libs_dirs": [],
        "cudnn_dirs": [],
        "gpu": {
            "ok": True,
            "available": True,
            "devices": [{"index": 0, "name": gpu[0], "compute_capability": gpu[1]}],
            "driver_cuda_version": driver_cuda,
            "runtime_version": "12.8",
        }
        if gpu
        else {"ok": False, "available": True, "devices": [], "error": "cudaGetDeviceCount: no CUDA-capable device"},
        "onnxruntime": {
            "ok": True,
            "version": "1.22.0",
            "file": "/env/site-packages/onnxruntime/__init__.py",
            "available_providers": list(providers),
            "eps": {
                "TensorrtExecutionProvider": ep("TensorrtExecutionProvider" in providers, trt_ep_error),
                "CUDAExecutionProvider": ep("CUDAExecutionProvider" in providers, cuda_ep_error, cuda_ep_run_error),
            },
        }
        if ort
        else {"ok": False, "error": "ModuleNotFoundError: No module named 'onnxruntime'"},
        "packages": dict(packages or {}),
    }


class FakeSmi:
    """Runs real commands (the fake trtexec) except nvidia-smi, whose answer is set here."""

    def __init__(self, output: str | None = None):
        self.output = output
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[int, str]:
        self.calls.append(list(cmd))
        if cmd[0] == "nvidia-smi":
            return (0, self.output) if self.output is not None else (127, "nvidia-smi: not found")
        return trt_doctor.run_command(cmd, env, timeout)


def inputs(
    tmp_path: Path,
    env: dict[str, str],
    probe: dict[str, Any],
    container: Sequence[Path] = (),
    trtexec_dirs: Sequence[Path] = (),
    smi: str | None = None,
) -> trt_doctor.DoctorInputs:
    return trt_doctor.DoctorInputs(
        env={"PATH": str(tmp_path / "empty-bin"), **env},
        python=sys.executable,
        container_lib_dirs=[str(p) for p in container],
        trtexec_dirs=[str(p) for p in trtexec_dirs],
        loader_dirs=(),
        cuda_lib_dirs=(),
        probe=lambda: probe,
        run=FakeSmi(smi),
    )


def run_doctor(inp: trt_doctor.DoctorInputs) -> tuple[dict[str, Any], trt_doctor.Diagnosis]:
    report = trt_doctor.collect(inp)
    return report, trt_doctor.diagnose(report)


def messages(dx: trt_doctor.Diagnosis, severity: str | None = None) -> list[str]:
    return [r["message"] for r in dx.recommendations if severity is None or r["severity"] == severity]


def status(dx: trt_doctor.Diagnosis, name: str) -> str:
    found = [c["status"] for c in dx.checks if c["check"] == name]
    assert found, f"no check named {name!r} in {[c['check'] for c in dx.checks]}"
    return found[0]


def banner(major: int, minor: int, patch: int) -> str:
    code = major * 10000 + minor * 100 + patch
    return f"&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] [b9] # trtexec --version"


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("name", "stem", "expected"),
    [
        ("libnvinfer.so.10.13.3", "libnvinfer", "10.13.3"),
        ("libnvinfer.so.11.4.0", "libnvinfer", "11.4.0"),
        ("libnvinfer.so.10", "libnvinfer", "10"),
        ("libnvinfer.so", "libnvinfer", None),
        ("libnvinfer_plugin.so.10.13.3", "libnvinfer", None),
        ("libnvinfer_plugin.so.10.13.3", "libnvinfer_plugin", "10.13.3"),
        ("libnvinfer.so.10.13.3.bak", "libnvinfer", None),
        ("libcudnn.so.9.10.2", "libcudnn", "9.10.2"),
    ],
)
def test_so_version(name: str, stem: str, expected: str | None) -> None:
    assert trtenv.so_version(name, stem) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (banner(10, 13, 3), "10.13.3"),
        (banner(10, 8, 0), "10.8.0"),
        (banner(11, 4, 0), "11.4.0"),
        ("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec", "8.6.1"),
        ("&&&& RUNNING TensorRT.trtexec [TensorRT v10.13.3] # trtexec", "10.13.3"),
        ("[I] TensorRT version: 10.9.0\n", "10.9.0"),
        ("trtexec: error while loading shared libraries: libnvinfer.so.10", None),
    ],
)
def test_parse_trtexec_version(text: str, expected: str | None) -> None:
    assert trtenv.parse_trtexec_version(text) == expected


def test_version_pin_and_requirement() -> None:
    assert trtenv.version_pin("10.13.3") == "==10.13.3.*"
    assert trtenv.version_pin("10.13.3.9") == "==10.13.3.9"
    assert trtenv.trt_requirement("11.4.0", 13) == "tensorrt-cu13-bindings==11.4.0.*"
    assert trtenv.trt_requirement("10.13.3", 12, full=True) == "tensorrt-cu12==10.13.3.*"
    with pytest.raises(ValueError):
        trtenv.version_pin("10")


def test_same_release() -> None:
    assert trtenv.same_release("10.13.3.9", "10.13.3")
    assert not trtenv.same_release("10.7.0", "10.13.3")
    assert not trtenv.same_release(None, "10.13.3")


def test_search_dirs_order_and_dedup(tmp_path: Path) -> None:
    env = {"LD_LIBRARY_PATH": "/a::/b:/a", "TENSORRT_HOME": "/opt/trt"}
    dirs = trtenv.search_dirs(env, ["/b", "/c"], ["/pip/tensorrt_libs"])
    assert [(d.path, d.source) for d in dirs] == [
        ("/a", "LD_LIBRARY_PATH"),
        ("/b", "LD_LIBRARY_PATH"),
        ("/opt/trt/lib", "TENSORRT_HOME"),
        ("/opt/trt/targets/x86_64-linux-gnu/lib", "TENSORRT_HOME"),
        ("/c", "container"),
        ("/pip/tensorrt_libs", "pip tensorrt_libs"),
    ]


def test_find_libs_reads_version_through_soname_link(tmp_path: Path) -> None:
    d = tmp_path / "lib"
    d.mkdir()
    (d / "libnvinfer.so.10.13.3").write_bytes(b"x")
    os.symlink("libnvinfer.so.10.13.3", d / "libnvinfer.so.10")
    os.symlink("libnvinfer.so.10", d / "libnvinfer.so")
    (d / "libnvinfer_plugin.so.10.13.3").write_bytes(b"x")
    only_link = tmp_path / "linkonly"
    only_link.mkdir()
    os.symlink(str(d / "libnvinfer.so.10.13.3"), only_link / "libnvinfer.so.10")
    libs = trtenv.find_libs([trtenv.SearchDir(str(d), "container"), trtenv.SearchDir(str(only_link), "x")])
    assert [(Path(lib.dir).name, lib.version) for lib in libs] == [("lib", "10.13.3"), ("linkonly", "10.13.3")]
    assert trtenv.distinct_versions(libs) == ["10.13.3"]


def test_detect_cuda_major(tmp_path: Path) -> None:
    cuda = tmp_path / "cuda"
    cuda.mkdir()
    (cuda / "libcudart.so.13.0.48").write_bytes(b"x")
    assert trtenv.detect_cuda_major({"CUDA_VERSION": "12.8.1.012"}, 10, [str(cuda)])[0] == 12
    assert trtenv.detect_cuda_major({}, 10, [str(cuda)])[0] == 13
    assert trtenv.detect_cuda_major({}, 11, [])[0] == 13
    assert trtenv.detect_cuda_major({}, 10, [])[0] == 12


# ----------------------------------------------------------------------------- diagnose


def healthy(tmp_path: Path, trt: str = "10.13.3", **probe_kw: Any) -> trt_doctor.DoctorInputs:
    lib = make_libs(tmp_path / "usr/local/tensorrt/lib", trt)
    major, minor, patch = (int(x) for x in trt.split("."))
    bin_dir = tmp_path / "opt/tensorrt/bin"
    make_trtexec(bin_dir, banner(major, minor, patch))
    env = {"LD_LIBRARY_PATH": str(lib), "CUDA_VERSION": "12.8.1.012"}
    probe = fake_probe(trt=probe_kw.pop("bindings", trt), **probe_kw)
    smi = "NVIDIA GeForce RTX 5090, 12.0, 575.51"
    return inputs(tmp_path, env, probe, container=[lib], trtexec_dirs=[bin_dir], smi=smi)


def test_healthy_machine_is_ready(tmp_path: Path) -> None:
    report, dx = run_doctor(healthy(tmp_path))
    assert dx.ready, dx.checks
    assert messages(dx) == []
    assert report["tensorrt"]["lib_version"] == "10.13.3"
    assert report["tensorrt"]["trtexec"][0]["version"] == "10.13.3"
    assert report["gpu"]["driver_version"] == "575.51"
    for name in ("libnvinfer", "import tensorrt", "bindings vs libs", "trtexec", "GPU", "ORT TensorRT EP"):
        assert status(dx, name) == trt_doctor.OK


def test_missing_bindings_recommends_setup_with_cuda12_pin(tmp_path: Path) -> None:
    _, dx = run_doctor(healthy(tmp_path, bindings=None))
    assert not dx.ready
    fails = messages(dx, trt_doctor.FAIL)
    assert len(fails) == 1
    assert "container has libnvinfer 10.13.3" in fails[0]
    assert "pixi run -e rtx5090 setup-tensorrt" in fails[0]
    assert "tensorrt-cu12-bindings==10.13.3.*" in fails[0]


def test_trt11_cuda13_layout_recommends_cu13_bindings(tmp_path: Path) -> None:
    lib = make_libs(tmp_path / "trt/targets/x86_64-linux-gnu/lib", "11.4.0")
    probe = fake_probe(trt=None)
    inp = inputs(tmp_path, {"LD_LIBRARY_PATH": str(lib), "CUDA_VERSION": "13.0.1"}, probe, container=[lib])
    _, dx = run_doctor(inp)
    assert any("tensorrt-cu13-bindings==11.4.0.*" in m for m in messages(dx, trt_doctor.FAIL))


def test_bindings_lib_mismatch_is_a_failure(tmp_path: Path) -> None:
    _, dx = run_doctor(healthy(tmp_path, bindings="10.7.0"))
    assert status(dx, "bindings vs libs") == trt_doctor.FAIL
    fails = messages(dx, trt_doctor.FAIL)
    assert any("10.7.0" in m and "10.13.3" in m and "do not match" in m for m in fails)
    # trtexec (10.13.3) disagrees with the bindings too
    assert any("trtexec 10.13.3" in m and "10.7.0" in m for m in messages(dx, trt_doctor.WARN))


def test_lib_dir_not_on_loader_path(tmp_path: Path) -> None:
    lib = make_libs(tmp_path / "usr/local/tensorrt/targets/x86_64-linux-gnu/lib", "10.13.3")
    inp = inputs(tmp_path, {"CUDA_VERSION": "12.8"}, fake_probe(trt=None), container=[lib])
    report, dx = run_doctor(inp)
    assert report["tensorrt"]["libnvinfer"][0]["on_loader_path"] is False
    assert any(m.startswith(f"LD_LIBRARY_PATH lacks {lib}") for m in messages(dx, trt_doctor.FAIL))


def test_no_tensorrt_at_all(tmp_path: Path) -> None:
    inp = inputs(tmp_path, {}, fake_probe(trt=None, gpu=None, ort=False), container=[tmp_path / "nope"])
    report, dx = run_doctor(inp)
    assert not dx.ready
    assert report["tensorrt"]["libnvinfer"] == []
    fails = messages(dx, trt_doctor.FAIL)
    assert any(m.startswith("no libnvinfer.so.* in") and str(tmp_path / "nope") in m for m in fails)
    assert any(m.startswith("no CUDA GPU visible") for m in fails)
    assert any(m.startswith("trtexec not found") for m in messages(dx, trt_doctor.WARN))
    assert any("onnxruntime is not importable" in m for m in messages(dx, trt_doctor.WARN))


def test_trtexec_that_cannot_load_libs(tmp_path: Path) -> None:
    inp = healthy(tmp_path)
    make_trtexec(
        tmp_path / "opt/tensorrt/bin",
        "trtexec: error while loading shared libraries: libnvinfer.so.10: cannot open shared object file",
        rc=127,
    )
    report, dx = run_doctor(inp)
    assert report["tensorrt"]["trtexec"][0]["version"] is None
    assert status(dx, "trtexec") == trt_doctor.WARN
    assert any("fails" in m and "LD_LIBRARY_PATH lacks" in m for m in messages(dx, trt_doctor.WARN))


def test_trtexec_found_on_path_first(tmp_path: Path) -> None:
    inp = healthy(tmp_path)
    on_path = tmp_path / "path-bin"
    make_trtexec(on_path, banner(10, 13, 3))
    inp.env = {**inp.env, "PATH": str(on_path)}
    report, _ = run_doctor(inp)
    assert [t["where"] for t in report["tensorrt"]["trtexec"]] == ["PATH", str(tmp_path / "opt/tensorrt/bin")]


def test_several_lib_versions_and_missing_plugin(tmp_path: Path) -> None:
    new = make_libs(tmp_path / "new", "10.13.3", plugin=False)
    old = make_libs(tmp_path / "old", "10.7.0")
    probe = fake_probe(trt="10.13.3")
    inp = inputs(tmp_path, {"LD_LIBRARY_PATH": f"{new}:{old}"}, probe, smi=None)
    report, dx = run_doctor(inp)
    assert report["tensorrt"]["lib_versions"] == ["10.13.3", "10.7.0"]
    warns = messages(dx, trt_doctor.WARN)
    assert any(m.startswith("several libnvinfer versions") for m in warns)
    assert any(m.startswith(f"no libnvinfer_plugin.so.* in {new}") for m in warns)


def test_nvidia_smi_fallback_when_cuda_python_fails(tmp_path: Path) -> None:
    inp = healthy(tmp_path, gpu=None)
    report, dx = run_doctor(inp)
    assert report["gpu"]["source"] == "nvidia-smi"
    assert report["gpu"]["devices"][0]["compute_capability"] == "12.0"
    assert status(dx, "GPU") == trt_doctor.OK
    assert any("nvidia-smi because cuda-python failed" in m for m in messages(dx, trt_doctor.WARN))


def test_blackwell_needs_trt_10_8(tmp_path: Path) -> None:
    _, dx = run_doctor(healthy(tmp_path, trt="10.7.0"))
    assert status(dx, "TensorRT supports GPU") == trt_doctor.FAIL
    assert any("compute capability 12.0" in m and ">= 10.8" in m for m in messages(dx, trt_doctor.FAIL))
    _, dx_hopper = run_doctor(healthy(tmp_path / "h", trt="10.7.0", gpu=("NVIDIA H100", "9.0")))
    assert dx_hopper.ready


def test_cpu_only_onnxruntime(tmp_path: Path) -> None:
    _, dx = run_doctor(healthy(tmp_path, providers=("AzureExecutionProvider", "CPUExecutionProvider")))
    assert dx.ready  # ORT is optional for direct TensorRT
    assert any("CPU-only build" in m for m in messages(dx, trt_doctor.WARN))


def test_ort_trt_ep_built_for_other_trt_major(tmp_path: Path) -> None:
    err = "libnvinfer.so.11: cannot open shared object file: No such file or directory"
    _, dx = run_doctor(healthy(tmp_path, trt_ep_error=err))
    assert dx.ready
    assert status(dx, "ORT TensorRT EP") == trt_doctor.WARN
    assert any("needs libnvinfer.so.11" in m and "TensorRT 10.13.3" in m for m in messages(dx, trt_doctor.WARN))


def test_ort_trt_ep_lib_not_on_loader_path(tmp_path: Path) -> None:
    err = "libnvinfer.so.10: cannot open shared object file: No such file or directory"
    _, dx = run_doctor(healthy(tmp_path, trt_ep_error=err))
    assert any("cannot load libnvinfer.so.10" in m and "LD_LIBRARY_PATH" in m for m in messages(dx, trt_doctor.WARN))


def test_ort_cuda_ep_without_cudnn(tmp_path: Path) -> None:
    err = "libcudnn.so.9: cannot open shared object file: No such file or directory"
    _, dx = run_doctor(healthy(tmp_path, cuda_ep_error=err, trt_ep_error=err))
    hints = [m for m in messages(dx, trt_doctor.WARN) if "cuDNN 9 not found" in m]
    assert len(hints) == 2
    assert all("nvidia-cudnn-cu12" in m for m in hints)


def test_probe_crash_is_reported(tmp_path: Path) -> None:
    inp = healthy(tmp_path)
    inp.probe = None
    inp.python = str(make_trtexec(tmp_path / "badpy", "Segmentation fault", rc=139))
    _, dx = run_doctor(inp)
    assert status(dx, "probe") == trt_doctor.FAIL
    assert not dx.ready


def test_render_table_lists_every_check(tmp_path: Path) -> None:
    report, dx = run_doctor(healthy(tmp_path, bindings=None))
    text = trt_doctor.render_table(report, dx)
    for c in dx.checks:
        assert c["check"] in text
    assert "NOT READY" in text
    assert dx.recommendations[0]["message"] in text


def test_main_writes_json_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "doctor.json"
    assert trt_doctor.main(["--json-out", str(out)], inputs=healthy(tmp_path / "ok")) == 0
    data = json.loads(out.read_text())
    assert data["ready"] is True and data["schema_version"] == 1
    assert trt_doctor.main(["--json-out", str(out)], inputs=healthy(tmp_path / "bad", bindings=None)) == 1
    data = json.loads(out.read_text())
    assert data["ready"] is False
    assert any("setup-tensorrt" in r["message"] for r in data["recommendations"])
    # --strict: a warning (CPU-only ORT) is enough to fail
    cpu_only = healthy(tmp_path / "strict", providers=("CPUExecutionProvider",))
    assert trt_doctor.main(["--json-out", str(out), "--strict"], inputs=cpu_only) == 1
    assert "READY" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the real probe


def test_real_probe_runs_here() -> None:
    proc = subprocess.run(
        [sys.executable, str(trt_doctor.PROBE_SCRIPT)], capture_output=True, text=True, timeout=120, check=True
    )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(data) >= {"python", "tensorrt", "tensorrt_rtx", "gpu", "onnxruntime"}
    assert data["python"]["executable"] == sys.executable
    for key in ("tensorrt", "tensorrt_rtx", "gpu"):
        assert isinstance(data[key]["ok"], bool)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_probe_session_on_cpu_provider() -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    res = trt_probe._session_probe(ort, trt_probe._tiny_model(), "CPUExecutionProvider")
    assert res == {"session_ok": True, "session_error": None, "run_ok": True, "run_error": None}
    missing = trt_probe._session_probe(ort, trt_probe._tiny_model(), "NoSuchExecutionProvider")
    assert missing["session_ok"] is False and missing["session_error"]


def test_doctor_cli_runs_for_real(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    script = Path(trt_doctor.__file__)
    proc = subprocess.run(
        [sys.executable, str(script), "--json-out", str(out)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(out.read_text())
    assert data["ready"] is (proc.returncode == 0)
    assert "recommendations:" in proc.stdout


# ----------------------------------------------------------------------------- issue 11: simulated RTX 5090


def test_rtx5090_with_post_release_trt_10_7_fails(tmp_path: Path) -> None:
    """PyPI's 10.7.0.post1 bindings (==10.7.0.* picks them) on an RTX 5090: sm_120 needs >= 10.8."""
    _, dx = run_doctor(healthy(tmp_path, trt="10.7.0", bindings="10.7.0.post1"))
    assert not dx.ready
    assert status(dx, "bindings vs libs") == trt_doctor.OK  # 10.7.0.post1 is release 10.7.0
    assert status(dx, "TensorRT supports GPU") == trt_doctor.FAIL
    assert any("compute capability 12.0" in m and ">= 10.8" in m for m in messages(dx, trt_doctor.FAIL))


def test_cuda13_wheel_on_cuda12_8_driver_fails(tmp_path: Path) -> None:
    pkgs = {"tensorrt-cu13-bindings": "10.13.3.9", "cuda-python": "13.0.1", "onnxruntime-gpu": "1.22.0"}
    _, dx = run_doctor(healthy(tmp_path, packages=pkgs))
    assert not dx.ready
    fails = messages(dx, trt_doctor.FAIL)
    trt = [m for m in fails if m.startswith("tensorrt-cu13-bindings 10.13.3.9 is built for CUDA 13")]
    assert len(trt) == 1 and "CUDA 12 at most" in trt[0] and "setup-tensorrt --cuda-major 12" in trt[0]
    assert any(m.startswith("cuda-python 13.0.1") and "cuda-python>=12,<13" in m for m in fails)
    _, ok = run_doctor(
        healthy(tmp_path / "ok", packages={"tensorrt-cu12-bindings": "10.13.3.9", "cuda-python": "12.9.0"})
    )
    assert ok.ready and status(ok, "driver vs CUDA") == trt_doctor.OK


def test_cuda13_container_on_r570_driver_seen_by_nvidia_smi_only(tmp_path: Path) -> None:
    """cuda-python cannot start (driver too old): nvidia-smi's driver 570.x means CUDA 12 at most."""
    lib = make_libs(tmp_path / "lib", "11.4.0")
    probe = fake_probe(trt="11.4.0.106", gpu=None, driver_cuda=None)
    inp = inputs(
        tmp_path,
        {"LD_LIBRARY_PATH": str(lib), "CUDA_VERSION": "13.0.1"},
        probe,
        container=[lib],
        smi="NVIDIA GeForce RTX 5090, 12.0, 570.124.06",
    )
    _, dx = run_doctor(inp)
    fails = messages(dx, trt_doctor.FAIL)
    assert any(m.startswith("container CUDA_VERSION=13.0.1 is built for CUDA 13") and "R580+" in m for m in fails)


def test_ort_whose_kernels_fail_is_a_failure(tmp_path: Path) -> None:
    err = (
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Relu node. Status Message: "
        "CUDA error cudaErrorNoKernelImageForDevice:no kernel image is available for execution on the device"
    )
    _, dx = run_doctor(healthy(tmp_path, cuda_ep_run_error=err))
    assert status(dx, "ORT CUDA EP") == trt_doctor.FAIL
    hint = [m for m in messages(dx, trt_doctor.FAIL) if m.startswith("ORT CUDA EP")]
    assert len(hint) == 1 and "no kernels for NVIDIA GeForce RTX 5090" in hint[0]
    assert "CMAKE_CUDA_ARCHITECTURES=120" in hint[0] and "sm_120" in hint[0]


class _Options:
    """onnxruntime.SessionOptions: the config entries a session is made with."""

    def __init__(self) -> None:
        self.config: dict[str, str] = {}

    def add_session_config_entry(self, key: str, value: str) -> None:
        self.config[key] = value


class _EpWithoutKernels:
    """An EP that registers but takes no node, as ONNX Runtime 1.32 behaves here: the CPU EP computes the
    graph unless fallback is disabled; then the session fails. CPU EP listed with fallback disabled: refused."""

    def __init__(self, model: bytes, sess_options: Any = None, providers: Sequence[str] = ()) -> None:
        no_fallback = (getattr(sess_options, "config", {}) or {}).get("session.disable_cpu_ep_fallback") == "1"
        if no_fallback and "CPUExecutionProvider" in providers:
            raise RuntimeError("Conflicting session configuration: explicitly added the CPU EP to the session")
        if no_fallback:
            raise RuntimeError("This session contains graph nodes that are assigned to the default CPU EP")
        self.providers = list(providers)

    def get_providers(self) -> list[str]:
        return self.providers

    def run(self, names: Any, feeds: Any) -> Any:
        import numpy as np

        return [np.maximum(feeds["x"], 0)]


def test_probe_reports_an_ep_that_falls_back_to_the_cpu_as_failing() -> None:
    class FakeOrt:
        SessionOptions = _Options
        InferenceSession = _EpWithoutKernels

    pytest.importorskip("onnx")
    res = trt_probe._session_probe(FakeOrt, trt_probe._tiny_model(), "TensorrtExecutionProvider")
    assert res["session_ok"] is False, res  # the CPU computed the Relu: the EP does not work
    assert "assigned to the default CPU EP" in res["session_error"]


class _FailingSession:
    def __init__(self, model: bytes, sess_options: Any = None, providers: Sequence[str] = ()) -> None:
        self.providers = list(providers)

    def get_providers(self) -> list[str]:
        return self.providers

    def run(self, names: Any, feeds: Any) -> Any:
        raise RuntimeError("CUDA error cudaErrorNoKernelImageForDevice:no kernel image is available")


def test_probe_runs_the_model_not_just_the_session() -> None:
    class FakeOrt:
        SessionOptions = _Options
        InferenceSession = _FailingSession

    pytest.importorskip("onnx")
    res = trt_probe._session_probe(FakeOrt, trt_probe._tiny_model(), "CUDAExecutionProvider")
    assert res["session_ok"] is True and res["run_ok"] is False
    assert "cudaErrorNoKernelImageForDevice" in res["run_error"]


def test_probe_lists_cuda_versioned_packages() -> None:
    pkgs = trt_probe.probe_packages()
    assert any(name.startswith("onnxruntime") for name in pkgs)
    assert all(name == name.lower() and "_" not in name for name in pkgs)


def test_bindings_only_layout_points_to_the_front_end(tmp_path: Path) -> None:
    """pip install tensorrt-cuXX-bindings: `tensorrt_bindings` imports, `tensorrt` does not."""
    inp = healthy(tmp_path, bindings=None)
    probe = inp.probe()
    probe["tensorrt_bindings"] = {"ok": True, "version": "10.13.3.9", "file": "/env/tensorrt_bindings/__init__.py"}
    inp.probe = lambda: probe
    _, dx = run_doctor(inp)
    fails = messages(dx, trt_doctor.FAIL)
    assert len(fails) == 1 and "tensorrt_bindings 10.13.3.9" in fails[0] and "front end" in fails[0]
    assert "setup-tensorrt" in fails[0]
