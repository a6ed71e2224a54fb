"""Import probes that ``trt_doctor.py`` runs in a child Python; prints one JSON object.

A child process keeps a crash or hang in a native library (libnvinfer, an ONNX Runtime
provider, the CUDA driver) out of the doctor, and lets it capture what those libraries
print to stderr. Standard library only at import time: every probe catches its own
failure and reports the error text.

Usage: python trt_probe.py [--no-session]
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EP_LIBS = {
    "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so",
    "CUDAExecutionProvider": "libonnxruntime_providers_cuda.so",
}


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


# pip distributions whose builds are tied to a CUDA major (by a -cuNN suffix or, for cuda-python, their own major).
PACKAGE_PREFIXES = ("tensorrt", "cuda-python", "cuda-bindings", "nvidia-", "onnxruntime")


def probe_packages() -> dict[str, str]:
    """Installed distributions that the doctor checks against the driver's CUDA major: name -> version."""
    import importlib.metadata as md

    out: dict[str, str] = {}
    try:
        for dist in md.distributions():
            name = (dist.metadata["Name"] or "").strip().lower().replace("_", "-").replace(".", "-")
            if name.startswith(PACKAGE_PREFIXES):
                out[name] = str(dist.version)
    except BaseException:
        pass
    return dict(sorted(out.items()))


def probe_module(name: str) -> dict[str, Any]:
    try:
        mod = __import__(name)
    except BaseException as exc:
        return {"ok": False, "error": _err(exc)}
    return {"ok": True, "version": str(getattr(mod, "__version__", "") or ""), "file": getattr(mod, "__file__", None)}


def _cuda_version_text(n: int) -> str:
    return f"{n // 1000}.{(n % 1000) // 10}"


def probe_gpu() -> dict[str, Any]:
    """GPUs through cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except BaseException:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except BaseException as exc:
            return {"ok": False, "error": _err(exc), "available": False}
    out: dict[str, Any] = {"available": True, "devices": []}
    try:
        err, drv = cudart.cudaDriverGetVersion()
        if int(err) == 0:
            # 0 means no driver is loaded (a machine without an NVIDIA GPU)
            out["driver_cuda_version"] = _cuda_version_text(int(drv)) if int(drv) > 0 else None
        err, rt = cudart.cudaRuntimeGetVersion()
        if int(err) == 0:
            out["runtime_version"] = _cuda_version_text(int(rt))
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0:
            _, msg = cudart.cudaGetErrorString(err)
            text = msg.decode() if isinstance(msg, bytes) else str(msg)
            return {**out, "ok": False, "error": f"cudaGetDeviceCount: {text}"}
        for i in range(int(count)):
            err, prop = cudart.cudaGetDeviceProperties(i)
            if int(err) != 0:
                continue
            name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
            cc = f"{prop.major}.{prop.minor}"
            out["devices"].append({"index": i, "name": name.rstrip("\x00"), "compute_capability": cc})
    except BaseException as exc:
        return {**out, "ok": False, "error": _err(exc)}
    out["ok"] = bool(out["devices"])
    if not out["devices"]:
        out["error"] = "cuda-python sees no CUDA device"
    return out


@contextlib.contextmanager
def capture_fd2() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (ONNX Runtime's logger)."""
    box: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield box
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box.append(tmp.read().decode("utf-8", errors="replace"))


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "trt_doctor_probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # old enough for every ONNX Runtime we support
    return model.SerializeToString()


def _dlopen(path: Path) -> str | None:
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        return str(exc)
    return None


def probe_ort(session: bool = True) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except BaseException as exc:
        return {"ok": False, "error": _err(exc)}
    out: dict[str, Any] = {"ok": True, "version": ort.__version__, "file": ort.__file__}
    try:
        out["available_providers"] = list(ort.get_available_providers())
    except BaseException as exc:
        out["available_providers"] = []
        out["providers_error"] = _err(exc)
    try:
        out["device"] = ort.get_device()
    except BaseException:
        out["device"] = None
    try:  # the CUDA version onnxruntime-gpu was built with (absent in CPU builds)
        from onnxruntime.capi import build_and_package_info as bpi

        out["cuda_version"] = getattr(bpi, "cuda_version", None) or None
    except BaseException:
        out["cuda_version"] = None
    capi = Path(ort.__file__).parent / "capi"
    shared = capi / "libonnxruntime_providers_shared.so"
    shared_err = _dlopen(shared) if shared.exists() else None
    model: bytes | None = None
    model_err: str | None = None
    if session:
        try:
            model = _tiny_model()
        except BaseException as exc:
            model_err = _err(exc)
    eps: dict[str, Any] = {}
    for ep, libname in EP_LIBS.items():
        lib = capi / libname
        info: dict[str, Any] = {
            "listed": ep in out["available_providers"],
            "library": str(lib) if lib.exists() else None,
            "library_loads": None,
            "load_error": None,
            "session_ok": None,
            "session_error": None,
            "run_ok": None,
            "run_error": None,
        }
        if lib.exists():
            err = shared_err or _dlopen(lib)
            info["library_loads"] = err is None
            info["load_error"] = err
        if session and info["listed"]:
            if model is None:
                info["session_error"] = f"cannot build the probe model: {model_err}"
            else:
                info.update(_session_probe(ort, model, ep))
        eps[ep] = info
    out["eps"] = eps
    return out


def _session_probe(ort: Any, model: bytes, ep: str) -> dict[str, Any]:
    """Create a session on ``ep`` and run the tiny model once: a session alone proves nothing (builds without
    kernels for this GPU create sessions, then fail every kernel with cudaErrorNoKernelImageForDevice)."""
    logged = ""
    used: list[str] = []
    exc_text: str | None = None
    run: dict[str, Any] = {"run_ok": None, "run_error": None}
    with capture_fd2() as box:
        try:
            sess = ort.InferenceSession(model, sess_options=_probe_options(ort, ep), providers=[ep])
            used = list(sess.get_providers())
            if ep in used:
                run = _run_probe(sess)
        except BaseException as exc:
            exc_text = _err(exc)
    logged = (box[0] if box else "").strip()
    if ep in used:
        return {"session_ok": True, "session_error": None, **run}
    lines = [ln for ln in logged.splitlines() if ln.strip()]
    relevant = [ln for ln in lines if "E:" in ln or "rror" in ln or "cannot open" in ln or "fail" in ln.lower()]
    text = exc_text or " | ".join((relevant or lines)[-3:]) or f"{ep} was not used (session fell back to {used})"
    return {"session_ok": False, "session_error": text[:2000]}


CPU_EP = "CPUExecutionProvider"
NO_CPU_FALLBACK = "session.disable_cpu_ep_fallback"


def _probe_options(ort: Any, ep: str) -> Any:
    """Session options for probing ``ep`` alone: with CPU fallback disabled, a node the EP cannot take fails the
    session instead of running quietly on the CPU (which would report a broken EP as working). ONNX Runtime
    refuses the option together with an explicit CPU EP, so the CPU EP itself is probed without it."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 2
    if ep != CPU_EP:
        opts.add_session_config_entry(NO_CPU_FALLBACK, "1")
    return opts


def _run_probe(sess: Any) -> dict[str, Any]:
    """Run the Relu model once and check its numbers."""
    x = [[-1.0, 0.5, 2.0, -3.0]]
    try:
        import numpy as np

        got = sess.run(None, {"x": np.asarray(x, dtype=np.float32)})[0].tolist()
    except BaseException as exc:
        return {"run_ok": False, "run_error": _err(exc)[:2000]}
    want = [[max(v, 0.0) for v in x[0]]]
    if got != want:
        return {"run_ok": False, "run_error": f"wrong result: Relu({x}) gave {got}, expected {want}"}
    return {"run_ok": True, "run_error": None}


def package_dirs(name: str, sub: str = "") -> list[str]:
    """Folders of an installed package (located, not imported), e.g. pip's ``tensorrt_libs``."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except BaseException:
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [str(Path(p) / sub) if sub else str(Path(p)) for p in spec.submodule_search_locations]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    session = "--no-session" not in args
    report = {
        "python": {"executable": sys.executable, "version": sys.version.split()[0]},
        "tensorrt": probe_module("tensorrt"),
        "tensorrt_bindings": probe_module("tensorrt_bindings"),  # the module of tensorrt-cuXX-bindings
        "tensorrt_rtx": probe_module("tensorrt_rtx"),
        "tensorrt_libs_dirs": package_dirs("tensorrt_libs"),
        "cudnn_dirs": package_dirs("nvidia.cudnn", "lib"),
        "gpu": probe_gpu(),
        "onnxruntime": probe_ort(session=session),
        "packages": probe_packages(),
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
