"""trt-doctor's logic: collect the inventory (probe, libraries, trtexec, GPU) and diagnose it.

Everything the doctor looks at comes through ``DoctorInputs`` (environment, search
folders, the import probe, the command runner), so tests can hand it a fake machine.
scripts/trt/trt_doctor.py is the CLI; common.report.validate reads the same inventory.
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.ort.options import CUDA_EP, TRT_EP
from common.trt import env as trtenv

__all__ = [
    "BUILD_ORT_DOC",
    "DRIVER_FOR_CUDA_MAJOR",
    "FAIL",
    "INFO",
    "MIN_TRT_FOR_CC",
    "OK",
    "PROBE_SCRIPT",
    "SCHEMA_VERSION",
    "SETUP_CMD",
    "SMOKE_CMD",
    "SMOKE_SCRIPT",
    "WARN",
    "Diagnosis",
    "DoctorInputs",
    "Runner",
    "collect",
    "cuda_components",
    "diagnose",
    "driver_cuda_major",
    "render_table",
    "run_command",
    "run_probe",
    "run_smoke",
    "verdict",
]

# The probe stays a standalone stdlib-only script: the doctor runs it in other interpreters.
PROBE_SCRIPT = Path(__file__).resolve().parents[3] / "trt" / "trt_probe.py"
SMOKE_SCRIPT = PROBE_SCRIPT.with_name("trt_smoke.py")
SMOKE_CMD = "trt-doctor --smoke"
SCHEMA_VERSION = 1
SETUP_CMD = "pixi run -e rtx5090 setup-tensorrt"
BUILD_ORT_DOC = "extern/howto-build-onnxruntime-with-pixi-tensorrt.md"
# First TensorRT release with Blackwell (sm_100 / sm_120) support.
MIN_TRT_FOR_CC = {(12, 0): (10, 8), (10, 0): (10, 8)}

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"

Runner = Callable[[Sequence[str], Mapping[str, str], float], tuple[int, str]]


run_command = trtenv.run_command


@dataclass
class DoctorInputs:
    env: Mapping[str, str]
    python: str = sys.executable
    container_lib_dirs: Sequence[str] = trtenv.CONTAINER_LIB_DIRS
    trtexec_dirs: Sequence[str] = trtenv.TRTEXEC_DIRS
    loader_dirs: Sequence[str] = trtenv.SYSTEM_LOADER_DIRS
    cuda_lib_dirs: Sequence[str] = trtenv.CUDA_LIB_DIRS
    probe: Callable[[], dict[str, Any]] | None = None  # None: run trt_probe.py in ``python``
    run: Runner = run_command
    session: bool = True  # build tiny ORT sessions to prove the EP libraries load
    probe_timeout: float = 300.0
    smoke: bool = False  # build and run a one-layer engine (``--smoke``)
    smoke_run: Callable[[], dict[str, Any]] | None = None  # None: run trt_smoke.py in ``python``


@dataclass
class Diagnosis:
    checks: list[dict[str, str]] = field(default_factory=list)
    recommendations: list[dict[str, str]] = field(default_factory=list)

    def check(self, name: str, status: str, detail: str) -> None:
        self.checks.append({"check": name, "status": status, "detail": detail})

    def recommend(self, severity: str, message: str) -> None:
        self.recommendations.append({"severity": severity, "message": message})

    @property
    def ready(self) -> bool:
        return not any(c["status"] == FAIL for c in self.checks)


# ----------------------------------------------------------------------------- collect


def _child_report(inp: DoctorInputs, cmd: list[str]) -> tuple[dict[str, Any] | None, str]:
    """Run ``cmd`` in ``inp``'s environment: (its last JSON line, or None, and what went wrong then)."""
    import json

    rc, out = inp.run(cmd, inp.env, inp.probe_timeout)
    last = [ln for ln in out.splitlines() if ln.startswith("{")]
    if rc == 0 and last:
        try:
            return json.loads(last[-1]), ""
        except ValueError:
            pass
    tail = " | ".join(out.strip().splitlines()[-3:])
    return None, f"{shlex.join(cmd)} exited {rc}: {tail}"


def run_probe(inp: DoctorInputs) -> dict[str, Any]:
    report, detail = _child_report(inp, [inp.python, str(PROBE_SCRIPT)] + ([] if inp.session else ["--no-session"]))
    return report if report is not None else {"probe_error": detail}


def run_smoke(inp: DoctorInputs) -> dict[str, Any]:
    """``SmokeResult.to_dict()`` of trt_smoke.py run in ``inp.python`` (a crash becomes a failed run)."""
    report, detail = _child_report(inp, [inp.python, str(SMOKE_SCRIPT)])
    if report is not None:
        return report
    return {"stage": "run", "detail": detail, "passed": False, "built": False, "summary": f"smoke: crashed: {detail}"}


def _nvidia_smi(inp: DoctorInputs) -> dict[str, Any]:
    cmd = ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
    rc, out = inp.run(cmd, inp.env, 30)
    if rc != 0:
        return {"ok": False, "error": f"nvidia-smi: {' '.join(out.split())[:300] or f'exit {rc}'}"}
    devices = []
    driver = None
    for i, line in enumerate(ln for ln in out.splitlines() if ln.strip()):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            devices.append({"index": i, "name": parts[0], "compute_capability": parts[1]})
            driver = parts[2]
    return {"ok": bool(devices), "devices": devices, "driver_version": driver, "error": None if devices else "none"}


def _lib_entries(libs: Sequence[trtenv.LibFile], inp: DoctorInputs) -> list[dict[str, Any]]:
    return [
        {**lib.to_dict(), "on_loader_path": trtenv.loader_visible(lib.dir, inp.env, inp.loader_dirs)} for lib in libs
    ]


def collect(inp: DoctorInputs) -> dict[str, Any]:
    """The inventory: every fact the checks need, JSON-ready."""
    probe = inp.probe() if inp.probe is not None else run_probe(inp)
    env = inp.env
    dirs = trtenv.search_dirs(env, inp.container_lib_dirs, probe.get("tensorrt_libs_dirs") or ())
    libs = trtenv.find_libs(dirs, "libnvinfer")
    primary = trtenv.primary_lib(libs)
    plugin = trtenv.find_libs(dirs, "libnvinfer_plugin")
    parser = trtenv.find_libs(dirs, "libnvonnxparser")

    trtexecs = []
    for path, where in trtenv.find_trtexec(env, inp.trtexec_dirs):
        rc, out = inp.run([path, "--version"], env, 60)
        trtexecs.append(
            {
                "path": path,
                "where": where,
                "rc": rc,
                "version": trtenv.parse_trtexec_version(out),
                "output_tail": " | ".join(out.strip().splitlines()[-2:])[:400],
            }
        )

    gpu = dict(probe.get("gpu") or {"ok": False, "error": "probe did not run"})
    gpu["source"] = "cuda-python"
    smi = _nvidia_smi(inp)
    if not gpu.get("ok"):
        cuda_python_error = gpu.get("error")
        if smi.get("ok"):
            gpu = {**gpu, **smi, "source": "nvidia-smi"}
        gpu["cuda_python_error"] = cuda_python_error
        gpu["nvidia_smi_error"] = smi.get("error")
    if smi.get("driver_version"):
        gpu["driver_version"] = smi["driver_version"]

    cuda_dirs = [d.path for d in dirs if d.source != trtenv.SOURCE_PIP] + list(inp.cuda_lib_dirs)
    cudart = trtenv.find_libs((trtenv.SearchDir(d, "cuda") for d in cuda_dirs), "libcudart")
    cudnn_dirs = [trtenv.SearchDir(d.path, d.source) for d in dirs if d.source != trtenv.SOURCE_PIP]
    cudnn_dirs += [trtenv.SearchDir(d, "pip nvidia-cudnn") for d in probe.get("cudnn_dirs") or ()]
    cudnn = trtenv.find_libs(cudnn_dirs, "libcudnn")

    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": probe.get("python") or {"executable": inp.python},
        "probe_error": probe.get("probe_error"),
        "env": {k: env.get(k) for k in ("LD_LIBRARY_PATH", "PATH", "TENSORRT_HOME", "CUDA_VERSION", "CONDA_PREFIX")},
        "tensorrt": {
            "bindings": probe.get("tensorrt") or {"ok": False, "error": "probe did not run"},
            "tensorrt_bindings": probe.get("tensorrt_bindings") or {"ok": False, "error": "probe did not run"},
            "search_dirs": [{"path": d.path, "source": d.source, "exists": os.path.isdir(d.path)} for d in dirs],
            "libnvinfer": _lib_entries(libs, inp),
            "lib_version": primary.version if primary else None,
            "lib_versions": trtenv.distinct_versions(libs),
            "libnvinfer_plugin": _lib_entries(plugin, inp),
            "libnvonnxparser": _lib_entries(parser, inp),
            "trtexec": trtexecs,
        },
        "tensorrt_rtx": probe.get("tensorrt_rtx") or {"ok": False, "error": "probe did not run"},
        "gpu": gpu,
        "cuda": {
            "CUDA_VERSION": env.get("CUDA_VERSION"),
            "runtime_version": gpu.get("runtime_version"),
            "libcudart": [lib.to_dict() for lib in cudart],
        },
        "cudnn": {"libcudnn": _lib_entries(cudnn, inp)},
        "onnxruntime": probe.get("onnxruntime") or {"ok": False, "error": "probe did not run"},
        "packages": probe.get("packages") or {},
        "smoke": (inp.smoke_run or (lambda: run_smoke(inp)))() if inp.smoke else None,
    }


# ----------------------------------------------------------------------------- diagnose


def _short(text: str | None, n: int = 240) -> str:
    one = " ".join((text or "").split())
    return one if len(one) <= n else one[: n - 3] + "..."


def _full(version: str | None) -> bool:
    """At least major.minor (PEP 440)."""
    return len(trtenv.parse_version(version) or ()) >= 2


def _cuda_major(report: dict[str, Any], trt_version: str | None) -> int:
    """Same rule as ``trtenv.detect_cuda_major``, applied to the collected facts."""
    from_env = trtenv.cuda_major_from_env({"CUDA_VERSION": report["env"].get("CUDA_VERSION") or ""})
    if from_env:
        return from_env
    majors = [m for m in (trtenv.version_major(x["version"]) for x in report["cuda"]["libcudart"]) if m]
    if majors:
        return majors[0]
    major = trtenv.version_major(trt_version)
    return trtenv.default_cuda_major_for_trt(major) if major else 12


@dataclass(frozen=True)
class _TrtSeen:
    """The TensorRT facts every check reads: libraries, the one the loader takes, the bindings, CUDA major."""

    trt: dict[str, Any]
    libs: list[dict[str, Any]]
    lib_version: str | None
    primary: dict[str, Any] | None
    bindings: dict[str, Any]
    cuda_major: int
    py: str

    @classmethod
    def of(cls, report: dict[str, Any]) -> _TrtSeen:
        trt = report["tensorrt"]
        libs, lib_version = trt["libnvinfer"], trt["lib_version"]
        primary = next((lib for lib in libs if lib["version"] == lib_version), libs[0] if libs else None)
        py = report["python"].get("executable") or "this Python"
        return cls(trt, libs, lib_version, primary, trt["bindings"], _cuda_major(report, lib_version), py)


def diagnose(report: dict[str, Any]) -> Diagnosis:
    """Every check, in the order the table shows them, each with its one actionable recommendation."""
    dx = Diagnosis()
    seen = _TrtSeen.of(report)
    _diagnose_probe(dx, report)
    _diagnose_libnvinfer(dx, seen)
    _diagnose_bindings(dx, seen)
    _diagnose_trtexec(dx, seen)
    _diagnose_rtx(dx, report)
    device = _diagnose_gpu(dx, report, seen)
    rt = report["cuda"].get("runtime_version")
    dx.check("CUDA", INFO, f"runtime {rt or '?'}, CUDA_VERSION={report['cuda'].get('CUDA_VERSION') or '-'}")
    _diagnose_cuda_majors(dx, report)
    _diagnose_ort(dx, report, seen.lib_version, seen.cuda_major, device)
    _diagnose_smoke(dx, report.get("smoke"))
    return dx


SMOKE_HINTS = {
    "import": "no TensorRT API imports in this Python: fix the `import tensorrt` line above first",
    "build": "the builder could not build a one-layer engine: a driver too old for this TensorRT's CUDA "
    "(cudaError 35), no usable GPU, or a libnvinfer that does not match the bindings; see the detail",
    "run": "the engine was built but could not run: no CUDA device here, a runtime without this GPU's SM, or "
    "a CUDA error; see the detail",
    "compare": "the engine ran but computed a wrong Relu: the library or the driver is broken for this GPU; "
    "reinstall TensorRT for this driver and rerun",
}


def _diagnose_smoke(dx: Diagnosis, smoke: dict[str, Any] | None) -> None:
    """``--smoke``: one line per step reached (build, run), FAIL at the step that failed."""
    if smoke is None:
        return
    stage = smoke.get("stage")
    detail = _short(smoke.get("detail"), 200)
    if stage == "import":
        dx.check("smoke build", FAIL, f"not run: {detail}")
    elif stage == "build":
        dx.check("smoke build", FAIL, detail)
    else:
        dx.check("smoke build", OK, f"one-layer engine built with {smoke.get('api')}")
        status = OK if stage == "passed" else FAIL
        what = {"passed": f"ran on the GPU, output matches NumPy ({detail})", "compare": f"output wrong: {detail}"}
        dx.check("smoke run", status, what.get(str(stage), detail))
    if stage in SMOKE_HINTS:
        dx.recommend(FAIL, f"{smoke.get('summary') or detail} -- {SMOKE_HINTS[str(stage)]}")


def _diagnose_probe(dx: Diagnosis, report: dict[str, Any]) -> None:
    if report.get("probe_error"):
        dx.check("probe", FAIL, _short(report["probe_error"]))
        dx.recommend(FAIL, f"the import probe crashed ({_short(report['probe_error'], 160)}); rerun with --verbose")


def _diagnose_libnvinfer(dx: Diagnosis, seen: _TrtSeen) -> None:
    trt, libs, lib_version, primary = seen.trt, seen.libs, seen.lib_version, seen.primary
    if not libs:
        searched = ", ".join(d["path"] for d in trt["search_dirs"]) or "(nothing)"
        dx.check("libnvinfer", FAIL, "no libnvinfer.so.* found")
        dx.recommend(
            FAIL,
            f"no libnvinfer.so.* in {searched}; run inside the NGC TensorRT container, set TENSORRT_HOME to a "
            f"TensorRT install, or install the pip libs with `{SETUP_CMD} --full --trt-version <X.Y.Z>`",
        )
    else:
        dx.check("libnvinfer", OK, f"{lib_version} at {primary['path']} ({primary['source']})")
        if len(trt["lib_versions"]) > 1:
            where = "; ".join(f"{lib['version']} in {lib['dir']}" for lib in libs)
            dx.check("libnvinfer versions", WARN, f"several TensorRT versions: {where}")
            dx.recommend(
                WARN,
                f"several libnvinfer versions are installed ({where}); the loader takes the first on "
                "LD_LIBRARY_PATH: remove the ones you do not use (e.g. `pip uninstall tensorrt-libs`)",
            )
        if primary["source"] != trtenv.SOURCE_PIP and not primary["on_loader_path"]:
            dx.check("loader path", FAIL, f"{primary['dir']} is not on LD_LIBRARY_PATH")
            dx.recommend(
                FAIL,
                f"LD_LIBRARY_PATH lacks {primary['dir']} (holds libnvinfer.so.{lib_version}); use `pixi run -e "
                f"rtx5090 ...` (its activation adds it) or `export LD_LIBRARY_PATH={primary['dir']}:$LD_LIBRARY_PATH`"
                " (SSH sessions often start without it)",
            )
        elif primary["source"] != trtenv.SOURCE_PIP:
            dx.check("loader path", OK, f"{primary['dir']} is searched by the loader")
        plugins = [p for p in trt["libnvinfer_plugin"] if p["dir"] == primary["dir"]]
        if plugins:
            dx.check(
                "libnvinfer_plugin",
                OK,
                f"{plugins[0]['path']} (registered before parsing and deserializing; TensorRT-RTX has no plugin "
                "library and no EfficientNMS)",
            )
        else:
            dx.check("libnvinfer_plugin", WARN, f"no libnvinfer_plugin.so.* beside {primary['path']}")
            dx.recommend(
                WARN,
                f"no libnvinfer_plugin.so.* in {primary['dir']}: models with TensorRT plugins (EfficientNMS...) "
                "fail to build; install the TensorRT plugin package or point TENSORRT_HOME at a full install",
            )


def _diagnose_bindings(dx: Diagnosis, seen: _TrtSeen) -> None:
    trt, libs, lib_version, primary, bindings = seen.trt, seen.libs, seen.lib_version, seen.primary, seen.bindings
    cuda_major, py = seen.cuda_major, seen.py
    if bindings.get("ok"):
        dx.check("import tensorrt", OK, f"{bindings.get('version')} ({bindings.get('file')})")
        bver = bindings.get("version")
        if lib_version and trtenv.parse_version(bver) and not trtenv.same_release(bver, lib_version):
            req = trtenv.trt_requirement(lib_version, cuda_major) if _full(lib_version) else "?"
            dx.check("bindings vs libs", FAIL, f"tensorrt {bver} != libnvinfer {lib_version}")
            dx.recommend(
                FAIL,
                f"tensorrt bindings {bver} ({bindings.get('file')}) do not match libnvinfer {lib_version} "
                f"({primary['path'] if primary else '?'}); run `{SETUP_CMD}` to install {req}",
            )
        elif lib_version:
            dx.check("bindings vs libs", OK, f"{bver} matches libnvinfer {lib_version}")
    else:
        err = _short(bindings.get("error"), 160)
        dx.check("import tensorrt", FAIL, err or "not importable")
        only = trt.get("tensorrt_bindings") or {}
        if only.get("ok") and "No module named 'tensorrt'" in (bindings.get("error") or ""):
            dx.recommend(
                FAIL,
                f"{py} has tensorrt_bindings {only.get('version')} (the tensorrt-cuXX-bindings wheel) but no "
                f"`tensorrt` front end; run `{SETUP_CMD}`: it writes the front end (no download, no pip libraries)",
            )
        elif _full(lib_version):
            req = trtenv.trt_requirement(lib_version, cuda_major)
            dx.recommend(
                FAIL,
                f"container has libnvinfer {lib_version} but {py} cannot import tensorrt ({err}); run "
                f"`{SETUP_CMD}` to install {req} (the bindings only, using the container's libs)",
            )
        elif libs:
            dx.recommend(
                FAIL,
                f"{py} cannot import tensorrt and the libnvinfer version is unknown ({primary['path']}); run "
                f"`{SETUP_CMD} --trt-version <X.Y.Z>`",
            )


def _diagnose_trtexec(dx: Diagnosis, seen: _TrtSeen) -> None:
    trt, lib_version, bindings = seen.trt, seen.lib_version, seen.bindings
    trtexecs = trt["trtexec"]
    if not trtexecs:
        dx.check("trtexec", WARN, "not found")
        dx.recommend(
            WARN,
            f"trtexec not found on PATH or in {', '.join(trtenv.TRTEXEC_DIRS)}; add its folder to PATH (the rtx5090 "
            "activation adds the container's) -- it is needed only to build engines with trtexec",
        )
    else:
        te = trtexecs[0]
        if te["version"]:  # it printed its banner, so it runs (old ones exit 1 on --version)
            dx.check("trtexec", OK, f"{te['version']} at {te['path']}")
            ref = bindings.get("version") if bindings.get("ok") else lib_version
            if ref and not trtenv.same_release(te["version"], ref):
                what = "tensorrt bindings" if bindings.get("ok") else "libnvinfer"
                dx.check("trtexec vs tensorrt", WARN, f"trtexec {te['version']} != {what} {ref}")
                dx.recommend(
                    WARN,
                    f"trtexec {te['version']} ({te['path']}) and {what} {ref} differ: engines built by one are "
                    f"rejected by the other; align them (`{SETUP_CMD}` installs bindings matching the container)",
                )
        else:
            dx.check("trtexec", WARN, f"{te['path']} does not run: {_short(te['output_tail'], 160)}")
            hint = (
                "LD_LIBRARY_PATH lacks the TensorRT lib folder"
                if "error while loading shared libraries" in te["output_tail"]
                else "check the output above"
            )
            dx.recommend(WARN, f"trtexec at {te['path']} fails ({_short(te['output_tail'], 160)}); {hint}")


def _diagnose_rtx(dx: Diagnosis, report: dict[str, Any]) -> None:
    rtx = report["tensorrt_rtx"]
    if rtx.get("ok"):
        dx.check("import tensorrt_rtx", INFO, f"{rtx.get('version')} ({rtx.get('file')})")
    else:
        dx.check("import tensorrt_rtx", INFO, "not importable (optional)")


def _diagnose_gpu(dx: Diagnosis, report: dict[str, Any], seen: _TrtSeen) -> dict[str, Any] | None:
    """The GPU checks; the first device (or None) for the ONNX Runtime checks."""
    bindings, lib_version = seen.bindings, seen.lib_version
    gpu = report["gpu"]
    devices = gpu.get("devices") or []
    if devices:
        d0 = devices[0]
        more = f" (+{len(devices) - 1} more)" if len(devices) > 1 else ""
        drv = gpu.get("driver_version") or gpu.get("driver_cuda_version") or "?"
        dx.check("GPU", OK, f"{d0['name']}, compute {d0['compute_capability']}, driver {drv} [{gpu['source']}]{more}")
        if gpu.get("source") == "nvidia-smi":
            dx.recommend(
                WARN,
                "GPU facts came from nvidia-smi because cuda-python failed "
                f"({_short(gpu.get('cuda_python_error'), 120)}); install cuda-python in this env "
                "(`pip install cuda-python`)",
            )
        cc = trtenv.parse_version(d0["compute_capability"])
        trt_text = bindings.get("version") if bindings.get("ok") else lib_version
        trt_ver = trtenv.parse_version(trt_text)
        need = MIN_TRT_FOR_CC.get(cc[:2]) if cc else None
        if need and trt_ver and trt_ver[:2] < need:
            needed = ".".join(map(str, need))
            dx.check("TensorRT supports GPU", FAIL, f"compute {d0['compute_capability']} needs TensorRT >= {needed}")
            dx.recommend(
                FAIL,
                f"TensorRT {trt_text} cannot build engines for compute capability "
                f"{d0['compute_capability']} ({d0['name']}); use a container with TensorRT >= {needed}",
            )
    else:
        cuda_err = gpu.get("cuda_python_error") or gpu.get("error")
        errs = "; ".join(e for e in (cuda_err, gpu.get("nvidia_smi_error")) if e)
        dx.check("GPU", FAIL, _short(errs, 160) or "no GPU")
        dx.recommend(
            FAIL,
            f"no CUDA GPU visible ({_short(errs, 160)}); start the container with `--gpus all` and check the "
            "driver with `nvidia-smi`",
        )
    return devices[0] if devices else None


# Linux driver branches and the newest CUDA major they run (CUDA's release notes, "minimum driver").
# GeForce/RTX cards get no forward compatibility (cuda-compat is for data-center GPUs), so a component
# built for a newer CUDA major than the driver's fails with cudaErrorInsufficientDriver / "driver too old".
DRIVER_FOR_CUDA_MAJOR = {13: (580, 65), 12: (525, 60)}


def driver_cuda_major(gpu: dict[str, Any]) -> tuple[int | None, str]:
    """The CUDA major the driver supports: cudaDriverGetVersion (the probe), else from nvidia-smi's
    driver version via DRIVER_FOR_CUDA_MAJOR. ``(major, where from)``."""
    drv_cuda = trtenv.parse_version(gpu.get("driver_cuda_version"))
    if drv_cuda:
        return drv_cuda[0], f"driver supports CUDA {gpu.get('driver_cuda_version')}"
    drv = trtenv.parse_version(gpu.get("driver_version"))
    if drv:
        for major, need in sorted(DRIVER_FOR_CUDA_MAJOR.items(), reverse=True):
            if drv[:2] >= need:
                return major, f"driver {gpu.get('driver_version')} supports CUDA {major}.x"
        return 11, f"driver {gpu.get('driver_version')} predates CUDA 12"
    return None, "driver version unknown"


def _package_cuda_major(name: str, version: str | None) -> int | None:
    """The CUDA major a pip package is built for: ``-cuNN`` in its name, else cuda-python's own major."""
    import re

    m = re.search(r"-cu(\d+)(?:-|$)", name)
    if m:
        return int(m.group(1))
    if name in ("cuda-python", "cuda-bindings", "nvidia-cuda-nvrtc", "nvidia-cuda-runtime"):
        return trtenv.version_major(version)
    return None


def cuda_components(report: dict[str, Any]) -> list[tuple[str, int, bool, str]]:
    """``(what, CUDA major it needs, needed for TensorRT, how to fix)`` for every CUDA-versioned piece found."""
    out: list[tuple[str, int, bool, str]] = []
    env_cuda = report["env"].get("CUDA_VERSION")
    major = trtenv.version_major(env_cuda)
    if major:
        out.append(
            (
                f"container CUDA_VERSION={env_cuda}",
                major,
                True,
                "use an NGC container whose CUDA major the driver runs (check its release notes)",
            )
        )
    for lib in report["cuda"].get("libcudart") or []:
        m = trtenv.version_major(lib.get("version"))
        if m and lib.get("source") != "pip":
            out.append(
                (
                    f"libcudart.so.{m} ({lib.get('path')})",
                    m,
                    True,
                    "put a libcudart matching the driver first on LD_LIBRARY_PATH (or use a matching container)",
                )
            )
            break
    for name, version in sorted((report.get("packages") or {}).items()):
        m = _package_cuda_major(name, version)
        if m is None:
            continue
        if name.startswith("tensorrt-cu") or name in ("tensorrt-bindings",):
            fix = f"`{SETUP_CMD} --cuda-major {m - 1}` (the cu{m - 1} wheels)"
            out.append((f"{name} {version}", m, True, fix))
        elif name in ("cuda-python", "cuda-bindings"):
            out.append((f"{name} {version}", m, True, f'`pip install "cuda-python>={m - 1},<{m}"` in this env'))
        else:
            out.append((f"{name} {version}", m, False, f"install the cu{m - 1} build of {name} in this env"))
    ort = report.get("onnxruntime") or {}
    m = trtenv.version_major(ort.get("cuda_version"))
    if ort.get("ok") and m:
        out.append(
            (
                f"onnxruntime {ort.get('version')} (built for CUDA {ort.get('cuda_version')})",
                m,
                False,
                f"install an onnxruntime-gpu built for CUDA {m - 1}",
            )
        )
    return out


def _diagnose_cuda_majors(dx: Diagnosis, report: dict[str, Any]) -> None:
    """FAIL when a component needs a newer CUDA major than the driver runs (no forward compatibility on GeForce)."""
    drv_major, where = driver_cuda_major(report["gpu"])
    if drv_major is None:
        return
    too_new = [(what, m, needed, fix) for what, m, needed, fix in cuda_components(report) if m > drv_major]
    if not too_new:
        dx.check("driver vs CUDA", OK, f"{where}; every CUDA component found is for CUDA <= {drv_major}")
        return
    for what, m, needed, fix in too_new:
        dx.check("driver vs CUDA", FAIL if needed else WARN, f"{what} needs CUDA {m}; {where}")
        dx.recommend(
            FAIL if needed else WARN,
            f"{what} is built for CUDA {m} but the driver runs CUDA {drv_major} at most ({where}); it fails at the "
            f"first build or run (no forward compatibility on GeForce): {fix}, or upgrade the driver to "
            f"R{DRIVER_FOR_CUDA_MAJOR.get(m, (0,))[0]}+",
        )


def _diagnose_ort(
    dx: Diagnosis, report: dict[str, Any], lib_version: str | None, cuda_major: int, device: dict[str, Any] | None
) -> None:
    ort = report["onnxruntime"]
    if not ort.get("ok"):
        dx.check("onnxruntime", WARN, _short(ort.get("error"), 160))
        dx.recommend(WARN, "onnxruntime is not importable; `pixi install -e rtx5090` installs onnxruntime-gpu")
        return
    providers = ort.get("available_providers") or []
    dx.check("onnxruntime", OK, f"{ort.get('version')}: {', '.join(providers)}")
    eps = ort.get("eps") or {}
    if TRT_EP not in providers and CUDA_EP not in providers:
        dx.recommend(
            WARN,
            f"onnxruntime {ort.get('version')} is a CPU-only build (providers: {', '.join(providers)}); in the "
            "rtx5090 env run `pip uninstall -y onnxruntime onnxruntime-gpu` then `pixi install -e rtx5090` "
            "(onnxruntime-gpu; never both)",
        )
    cudnn = report["cudnn"]["libcudnn"]
    for ep, label in ((TRT_EP, "ORT TensorRT EP"), (CUDA_EP, "ORT CUDA EP")):
        info = eps.get(ep) or {}
        if ep not in providers:
            dx.check(label, WARN if providers and ep == TRT_EP else INFO, "not in get_available_providers()")
            continue
        if info.get("session_ok") and info.get("run_ok") is False:
            err = info.get("run_error") or "unknown error"
            dx.check(label, FAIL, f"session created but running a 1-node model fails: {_short(err, 120)}")
            dx.recommend(FAIL, _ort_run_hint(label, err, ort.get("version"), device))
            continue
        if info.get("session_ok") or (info.get("session_ok") is None and info.get("library_loads")):
            what = "session created" if info.get("session_ok") else "library loads"
            if info.get("run_ok"):
                what = "ran a 1-node model"
            dx.check(label, OK, what)
            continue
        err = info.get("load_error") or info.get("session_error") or "unknown error"
        if info.get("session_ok") is None and info.get("library_loads") is None:
            dx.check(label, INFO, "listed; not probed (--no-session)")
            continue
        dx.check(label, WARN, _short(err, 160))
        dx.recommend(WARN, _ort_hint(label, err, ort.get("version"), lib_version, cuda_major, cudnn))


def _ort_run_hint(label: str, err: str, ort_version: str | None, device: dict[str, Any] | None) -> str:
    """The EP creates sessions but its kernels fail (microsoft/onnxruntime 26230, 26245 on Blackwell)."""
    gpu = f"{device['name']} (compute {device['compute_capability']})" if device else "this GPU"
    sm = "sm_" + device["compute_capability"].replace(".", "") if device else "this GPU's architecture"
    short = _short(err, 160)
    if "NoKernelImage" in err or "no kernel image" in err:
        return (
            f"{label}: onnxruntime {ort_version} has no kernels for {gpu} ({short}); install an onnxruntime-gpu "
            f"built with {sm} kernels, or build it from source with CMAKE_CUDA_ARCHITECTURES="
            f"{sm.removeprefix('sm_')} ({BUILD_ORT_DOC}); meanwhile use another provider (--providers "
            "TensorrtExecutionProvider or CPUExecutionProvider)"
        )
    return (
        f"{label}: onnxruntime {ort_version} creates a session but running a 1-node model fails ({short}); "
        f"reinstall onnxruntime-gpu for this CUDA/driver (`pixi install -e rtx5090`) or see {BUILD_ORT_DOC}"
    )


def _ort_hint(
    label: str, err: str, ort_version: str | None, lib_version: str | None, cuda_major: int, cudnn: list[dict[str, Any]]
) -> str:
    import re

    short = _short(err, 160)
    m = re.search(r"libnvinfer\.so\.(\d+)", err)
    have = trtenv.version_major(lib_version)
    if m and have is not None and int(m.group(1)) != have:
        return (
            f"{label} of onnxruntime {ort_version} needs libnvinfer.so.{m.group(1)} but this machine has TensorRT "
            f"{lib_version}: install an onnxruntime-gpu built for TensorRT {have} (ORT >= 1.27 for TensorRT 11) or "
            f"build one from source ({BUILD_ORT_DOC})"
        )
    if m:
        return (
            f"{label} cannot load libnvinfer.so.{m.group(1)} ({short}); LD_LIBRARY_PATH lacks the TensorRT lib folder"
        )
    if "libcudnn" in err:
        found = ", ".join(sorted({c["dir"] for c in cudnn if trtenv.version_major(c["version"]) == 9}))
        where = f"libcudnn.so.9 is in {found} but not on the loader path" if found else "no libcudnn.so.9 found"
        return (
            f"{label}: cuDNN 9 not found ({short}); {where}: `pip install nvidia-cudnn-cu{cuda_major}` in this env "
            "or add the folder holding libcudnn.so.9 to LD_LIBRARY_PATH"
        )
    m = re.search(r"(lib(?:cublas|cublasLt|cudart|cufft|curand|nvrtc)\S*\.so\.\d+)", err)
    if m:
        return f"{label}: CUDA library {m.group(1)} not found ({short}); add the CUDA lib folder to LD_LIBRARY_PATH"
    return f"{label} fails to load ({short}); see {BUILD_ORT_DOC}"


# ----------------------------------------------------------------------------- render


def render_table(report: dict[str, Any], dx: Diagnosis) -> str:
    rows = [(c["check"], c["status"], c["detail"]) for c in dx.checks]
    w0 = max([len("check")] + [len(r[0]) for r in rows])
    w1 = max([len("status")] + [len(r[1]) for r in rows])
    lines = [f"trt-doctor  python: {report['python'].get('executable')} {report['python'].get('version', '')}".rstrip()]
    lines.append(f"{'check':<{w0}}  {'status':<{w1}}  detail")
    lines.append(f"{'-' * w0}  {'-' * w1}  {'-' * 6}")
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lines.append("")
    if dx.recommendations:
        lines.append("recommendations:")
        lines += [f"  [{r['severity']}] {r['message']}" for r in dx.recommendations]
    else:
        lines.append("recommendations: none")
    lines.append("")
    lines.append(verdict(report, dx))
    return "\n".join(lines)


def verdict(report: dict[str, Any], dx: Diagnosis) -> str:
    """The last line: READY says whether an engine was built and run here, or that the smoke check was skipped."""
    if not dx.ready:
        return "NOT READY for TensorRT (see the FAIL lines above)"
    smoke = report.get("smoke")
    if smoke and smoke.get("passed"):
        return "READY for TensorRT (smoke check passed: a one-layer engine was built, run and matched NumPy)"
    return f"READY for TensorRT (smoke check skipped: no engine was built or run; `{SMOKE_CMD}` does)"
