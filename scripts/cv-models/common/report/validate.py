"""End-to-end validation: every backend on a baseline ONNX and its Q/DQ candidate, in one run root.

Layout (``<root>`` = ``<out>/<task>/<timestamp>``)::

    <root>/validation.json       models, availability, statuses, tensor errors, verdict
    <root>/doctor.json           the trt-doctor inventory the availability came from
    <root>/summary.{md,json,png} common.report.compare (ΔAP, parity, latency vs mAP)
    <root>/quantize/             calib.npy, the candidate ONNX and its log (--quantize)
    <root>/tensor-inputs.npy     the letterboxed sample images for the raw-output comparison
    <root>/<model>/<backend>/    status.json, metrics.json, detections.json, *.log, engine/

Each backend x model runs in its own subprocess (a TensorRT / EP crash cannot take the
validation down): the TensorRT flavours first build the engine with build_trt_engine.py,
then a worker (``validate_e2e.py _worker <folder>/job.json``) evaluates through the library
(``common.eval.api.evaluate_onnx`` / ``evaluate_engine``, the evaluators' own pipeline: a plain
ONNX Runtime session, or one plain TensorRT runner) and, once the evaluation is written, feeds
the sample images through the very same backend object to save its raw outputs.

Availability comes from trt-doctor's inventory (scripts/trt/trt_doctor.py); an unavailable
backend is recorded as ``skipped`` with the doctor's reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.core.results import atomic_output, atomic_write_json, sha256_file
from common.eval.options import DataOptions, EvalOptions, OutputOptions
from common.model.onnx_facts import io_signature, precision_of
from common.model.yolov10 import PostprocessOptions
from common.ort.options import CPU_EP, CUDA_EP, RTX_EP, TRT_EP

__all__ = [
    "BACKEND_KEYS",
    "REGISTRY",
    "SCRIPTS",
    "VALIDATION_SCHEMA_VERSION",
    "Availability",
    "BackendRun",
    "BackendSpec",
    "ModelInfo",
    "RunConfig",
    "Step",
    "WorkerJob",
    "availability",
    "check_candidate",
    "dump_raw_outputs",
    "error_from_log",
    "load_raw",
    "model_info",
    "model_labels",
    "plan_steps",
    "raw_output_errors",
    "run_backend",
    "run_doctor",
    "run_job",
    "run_step",
    "sample_inputs",
    "worker_main",
    "write_json",
]

SCRIPTS = Path(__file__).resolve().parents[2]
VALIDATION_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BackendSpec:
    key: str
    title: str
    trt: str | None = None  # TensorRT API for build_trt_engine.py / --trt-api
    providers: tuple[str, ...] = ()


REGISTRY: dict[str, BackendSpec] = {
    s.key: s
    for s in (
        BackendSpec("ort-cpu", "ONNX Runtime CPU", providers=(CPU_EP,)),
        BackendSpec("ort-cuda", "ONNX Runtime CUDA EP", providers=(CUDA_EP, CPU_EP)),
        BackendSpec("trt", "TensorRT (direct)", trt="tensorrt"),
        BackendSpec("trt-rtx", "TensorRT-RTX (direct)", trt="tensorrt-rtx"),
        BackendSpec("ort-trt-ep", "ONNX Runtime TensorRT EP", providers=(TRT_EP, CUDA_EP, CPU_EP)),
        BackendSpec("ort-rtx-ep", "ONNX Runtime TensorRT-RTX EP", providers=(RTX_EP, CPU_EP)),
    )
}
BACKEND_KEYS: tuple[str, ...] = tuple(REGISTRY)


# ----------------------------------------------------------------------------- availability (trt-doctor)


@dataclass
class Availability:
    ok: bool
    reason: str = ""


def run_doctor() -> dict[str, Any]:
    """trt-doctor's inventory + diagnosis for this Python (its probe runs in a child process)."""
    from common.trt import doctor

    report = doctor.collect(doctor.DoctorInputs(env=dict(os.environ), python=sys.executable))
    dx = doctor.diagnose(report)
    return {**report, "checks": dx.checks, "recommendations": dx.recommendations, "ready": dx.ready}


def _check(doc: Mapping[str, Any], name: str) -> dict[str, str] | None:
    return next((c for c in doc.get("checks", []) if c.get("check") == name), None)


def _advice(doc: Mapping[str, Any], *needles: str) -> str:
    for r in doc.get("recommendations", []):
        if any(n in r.get("message", "") for n in needles):
            return r["message"]
    return ""


def _why(doc: Mapping[str, Any], check: str, *needles: str, default: str = "") -> str:
    c = _check(doc, check)
    head = f"trt-doctor [{check}] {c['detail']}" if c else default
    tip = _advice(doc, *needles) if needles else ""
    return f"{head}; {tip}" if tip and tip not in head else head


def availability(
    doc: Mapping[str, Any], keys: Sequence[str], runtime_double: bool = False, rtx_ep_available: bool | None = None
) -> dict[str, Availability]:
    """Which backends can run here, and the doctor's reason for those that cannot."""
    ort = doc.get("onnxruntime") or {}
    providers = list(ort.get("available_providers") or [])
    eps = ort.get("eps") or {}
    gpu = doc.get("gpu") or {}
    has_gpu = bool(gpu.get("devices"))
    gpu_why = _why(doc, "GPU", "no CUDA GPU visible", default="no CUDA GPU visible")
    out: dict[str, Availability] = {}
    for key in keys:
        if key in ("ort-cpu", "ort-cuda", "ort-trt-ep", "ort-rtx-ep") and not ort.get("ok"):
            out[key] = Availability(False, f"trt-doctor [onnxruntime] {ort.get('error') or 'not importable'}")
            continue
        if key == "ort-cpu":
            out[key] = Availability(CPU_EP in providers, "" if CPU_EP in providers else "CPUExecutionProvider missing")
        elif key in ("ort-cuda", "ort-trt-ep"):
            ep, label = (CUDA_EP, "ORT CUDA EP") if key == "ort-cuda" else (TRT_EP, "ORT TensorRT EP")
            info = eps.get(ep) or {}
            if ep not in providers:
                why = _why(doc, label, label, "CPU-only build", default=f"{ep} not offered")
                out[key] = Availability(False, f"{ep} not in onnxruntime {ort.get('version')}'s providers ({why})")
            elif info.get("session_ok") is False or info.get("library_loads") is False:
                out[key] = Availability(False, _why(doc, label, label))
            elif not has_gpu:
                out[key] = Availability(False, gpu_why)
            else:
                out[key] = Availability(True)
        elif key == "ort-rtx-ep":
            if rtx_ep_available is None:
                rtx_ep_available = _rtx_ep_available()
            out[key] = Availability(
                bool(rtx_ep_available),
                ""
                if rtx_ep_available
                else (
                    f"{RTX_EP} not offered by onnxruntime {ort.get('version')} (providers: {', '.join(providers)}; "
                    "trt-doctor does not probe it): install onnxruntime-ep-nv-tensorrt-rtx-cu13 in the GPU environment"
                ),
            )
        elif key == "trt":
            bindings = (doc.get("tensorrt") or {}).get("bindings") or {}
            if not bindings.get("ok"):
                out[key] = Availability(False, _why(doc, "import tensorrt", "cannot import tensorrt", "libnvinfer"))
            elif not has_gpu:
                out[key] = Availability(False, gpu_why)
            elif not doc.get("ready", False):
                fails = [f"[{c['check']}] {c['detail']}" for c in doc.get("checks", []) if c.get("status") == "FAIL"]
                out[key] = Availability(False, "trt-doctor: not ready: " + "; ".join(fails))
            else:
                out[key] = Availability(True)
        elif key == "trt-rtx":
            rtx = doc.get("tensorrt_rtx") or {}
            if not rtx.get("ok"):
                err = rtx.get("error") or "not importable"
                out[key] = Availability(False, f"trt-doctor [import tensorrt_rtx] {err}; pip install tensorrt-rtx-cu13")
            elif not has_gpu and not runtime_double:
                out[key] = Availability(False, gpu_why)
            else:
                out[key] = Availability(True)
        else:
            raise UserError(f"--backends: unknown backend {key!r}; choose from {', '.join(BACKEND_KEYS)}")
    return out


def _rtx_ep_available() -> bool:
    try:
        from common.ort.options import available_providers

        return RTX_EP in available_providers()
    except Exception:
        return False


# ----------------------------------------------------------------------------- models


@dataclass
class ModelInfo:
    label: str
    path: Path
    role: str  # baseline | candidate
    precision: str
    sha256: str
    inputs: list[dict[str, Any]]
    layout_hint: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "path": str(self.path),
            "role": self.role,
            "precision": self.precision,
            "sha256": self.sha256,
            "inputs": self.inputs,
            "outputs": self.layout_hint,
        }


def model_info(path: Path, role: str, flag: str, label: str) -> ModelInfo:
    inputs, outputs = io_signature(path, flag)
    return ModelInfo(label, path, role, precision_of(path), sha256_file(path), inputs, outputs)


def check_candidate(base: ModelInfo, cand: ModelInfo, flag: str) -> None:
    def fmt(sig: list[dict[str, Any]]) -> str:
        return ", ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in sig)

    if base.inputs != cand.inputs:
        raise UserError(
            f"{flag} {cand.path}: its input ({fmt(cand.inputs)}) differs from the baseline's ({fmt(base.inputs)}); "
            "the candidate must be the baseline ONNX quantized (same export, same input)"
        )
    if [o["shape"] for o in base.layout_hint] != [o["shape"] for o in cand.layout_hint]:
        raise UserError(
            f"{flag} {cand.path}: its outputs ({fmt(cand.layout_hint)}) differ from the baseline's "
            f"({fmt(base.layout_hint)}); parity needs the same output layout"
        )


def model_labels(base: Path, cand: Path | None) -> tuple[str, str | None]:
    if cand is None:
        return base.stem, None
    if cand.stem == base.stem:
        return f"baseline-{base.stem}", f"candidate-{cand.stem}"
    return base.stem, cand.stem


# ----------------------------------------------------------------------------- subprocess steps


@dataclass
class Step:
    name: str
    cmd: list[str]
    rc: int | None = None
    seconds: float = 0.0
    log: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cmd": self.cmd,
            "rc": self.rc,
            "seconds": round(self.seconds, 3),
            "log": self.log,
            "error": self.error,
        }


def error_from_log(text: str, rc: int) -> str:
    """One line: the script's ``error: ...`` line, else the tail of its output, plus how it ended."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        how = f"crashed with {sig}"
    elif rc == 124:
        how = "timed out"
    else:
        how = f"exit code {rc}"
    detail = errors[-1][len("error:") :].strip() if errors else " | ".join(lines[-3:])
    return f"{how}: {detail[:600]}" if detail else how


def run_step(step: Step, folder: Path, timeout: float, env: Mapping[str, str] | None = None) -> Step:
    log_path = folder / f"{step.name}.log"
    step.log = log_path.name
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8", errors="replace") as fh:
        fh.write("$ " + " ".join(step.cmd) + "\n")
        fh.flush()
        try:
            proc = subprocess.run(
                step.cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=dict(env) if env is not None else None,
                check=False,
            )
            step.rc = proc.returncode
        except subprocess.TimeoutExpired:
            step.rc = 124
        except OSError as exc:
            step.rc = 127
            fh.write(f"error: cannot start {step.cmd[0]}: {exc}\n")
    step.seconds = time.perf_counter() - t0
    if step.rc != 0:
        step.error = error_from_log(log_path.read_text(encoding="utf-8", errors="replace"), step.rc)
    return step


# ----------------------------------------------------------------------------- the worker (child process)


def dump_raw_outputs(backend: Any, inputs: np.ndarray, out: Path) -> dict[str, Any]:
    """Each sample image through ``backend.infer`` (batch 1); outputs stacked per output, saved as .npz."""
    names = [o.name for o in backend.outputs]
    per: list[list[np.ndarray]] = [[] for _ in names]
    for i in range(inputs.shape[0]):
        outs = backend.infer(np.ascontiguousarray(inputs[i : i + 1]))
        for k, arr in enumerate(outs):
            per[k].append(np.asarray(arr)[0])
    arrays = {f"out{k}": np.stack(v) for k, v in enumerate(per)}
    with atomic_output(out, suffix=".npz") as tmp:
        np.savez(tmp, names=np.asarray(names), **arrays)
    return {"file": out.name, "names": names, "images": int(inputs.shape[0])}


@dataclass(frozen=True)
class WorkerJob:
    """One backend x model evaluation, as the worker process reads it (``job.json`` in the run's folder)."""

    backend: str
    model: Path  # the ONNX (for a TensorRT row: the ONNX the engine is built from)
    data: DataOptions
    eval: EvalOptions
    out: OutputOptions
    engine: Path | None = None  # TensorRT rows: built (or reused) from ``model``, then evaluated
    provider_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    require_accelerator: bool = False  # ONNX Runtime rows: the first EP must initialise (single nodes may not)
    allow_imgsz_mismatch: bool = False
    tensor_inputs: Path | None = None  # sample images whose raw outputs go to ``tensor_out``
    tensor_out: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerJob:
        def path(v: Any) -> Path | None:
            return None if v is None else Path(v)

        data = {k: path(v) if k in _DATA_PATHS else v for k, v in d["data"].items()}
        ev = dict(d["eval"])
        ev["post"] = PostprocessOptions(**ev["post"])
        out = d["out"]
        return cls(
            backend=d["backend"],
            model=Path(d["model"]),
            data=DataOptions(**data),
            eval=EvalOptions(**ev),
            out=OutputOptions(out["task"], path(out["out"]), path(out["detections_out"])),
            engine=path(d["engine"]),
            provider_options=d["provider_options"],
            require_accelerator=d["require_accelerator"],
            allow_imgsz_mismatch=d["allow_imgsz_mismatch"],
            tensor_inputs=path(d["tensor_inputs"]),
            tensor_out=path(d["tensor_out"]),
        )


_DATA_PATHS = ("data_root", "instances", "images_dir", "image_ids_list")


def _dump_after(job: WorkerJob) -> Any:
    """The ``after`` hook of the evaluation: the sample images through the same backend object."""

    def dump(backend: Any) -> None:
        if job.tensor_inputs is None or job.tensor_out is None:
            return
        try:
            info = dump_raw_outputs(backend, np.load(job.tensor_inputs), job.tensor_out)
            print(f"raw outputs of {info['images']} sample image(s): {job.tensor_out}")
        except Exception as exc:  # the evaluation stands; the tensor comparison reports the gap
            print(f"warning: raw-output dump failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    return dump


def run_job(job: WorkerJob) -> int:
    """Evaluate one backend x model through the library (``common.eval.api``), then dump the raw outputs."""
    from common.eval.api import evaluate_engine, evaluate_onnx

    spec = REGISTRY[job.backend]
    if spec.trt is None:
        evaluate_onnx(
            job.model,
            job.data,
            job.eval,
            job.out,
            spec.providers,
            job.provider_options,
            require_accelerator=job.require_accelerator,
            allow_imgsz_mismatch=job.allow_imgsz_mismatch,
            after=_dump_after(job),
        )
        return 0
    from common.trt.api import load_api
    from common.trt.build import BuildOptions, build_or_reuse, current_gpu

    api = load_api(spec.trt)
    built = build_or_reuse(job.model, job.engine, BuildOptions(), api, verbosity="error", gpu=current_gpu())
    print(f"{api.describe()}: {'cache hit' if built.cache_hit else 'built'}: {built.engine_path}")
    evaluate_engine(
        built.engine_path,
        job.data,
        job.eval,
        job.out,
        api,
        model_path=job.model,
        verbosity="error",
        extra_run={"trt": {"engine_cache_hit": built.cache_hit}},
        after=_dump_after(job),
    )
    return 0


def worker_main(argv: Sequence[str]) -> int:
    """``validate_e2e.py _worker JOB.json``: run that job (``run_job``) under the CLI's error contract."""
    from common.core.cli import run_main

    if len(argv) != 1:
        raise UserError("usage: validate_e2e.py _worker JOB.json (validation runs it; not for users)")
    job = WorkerJob.from_dict(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    return run_main(lambda _argv: run_job(job), [])


# ----------------------------------------------------------------------------- orchestration


@dataclass
class RunConfig:
    """How the backend x model runs go: ``data``/``eval`` are every evaluation's options.

    ``simulated_rtx_worker``: a Python script run instead of ``validate_e2e.py`` for the TensorRT-RTX rows'
    evaluation (after a real build), e.g. one that installs a simulated runtime in its own process and then
    calls ``worker_main``; those rows are recorded with ``runtime_double``."""

    root: Path
    data: DataOptions = field(default_factory=DataOptions)
    eval: EvalOptions = field(default_factory=lambda: EvalOptions(progress=False))
    allow_imgsz_mismatch: bool = False
    python: str = sys.executable
    step_timeout: float = 3600.0
    simulated_rtx_worker: Path | None = None
    tensor_inputs: Path | None = None
    log: Any = print


@dataclass
class BackendRun:
    backend: str
    model: ModelInfo
    status: str  # ok | skipped | failed
    reason: str = ""
    folder: Path | None = None
    steps: list[Step] = field(default_factory=list)
    runtime_double: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "title": REGISTRY[self.backend].title,
            "model": self.model.label,
            "model_path": str(self.model.path),
            "precision": self.model.precision,
            "status": self.status,
            "reason": self.reason,
            "runtime_double": self.runtime_double,
            "steps": [s.to_dict() for s in self.steps],
        }


def _worker_cmd(cfg: RunConfig, job: WorkerJob, folder: Path, simulated: bool) -> list[str]:
    """The eval step: the job written to ``job.json``, run by ``validate_e2e.py _worker`` (its own process)."""
    folder.mkdir(parents=True, exist_ok=True)
    job_path = folder / "job.json"
    atomic_write_json(job_path, job.to_dict())
    entry = cfg.simulated_rtx_worker if simulated and cfg.simulated_rtx_worker else SCRIPTS / "validate_e2e.py"
    return [cfg.python, str(entry), "_worker", str(job_path)]


def plan_steps(cfg: RunConfig, spec: BackendSpec, model: ModelInfo, folder: Path) -> tuple[list[Step], bool]:
    """The subprocess steps of one backend x model; and whether it runs on a simulated runtime."""
    job = WorkerJob(
        backend=spec.key,
        model=model.path,
        data=cfg.data,
        eval=cfg.eval,
        out=OutputOptions("validate", folder / "metrics.json", folder / "detections.json"),
        require_accelerator=bool(spec.providers) and spec.providers[0] != CPU_EP,  # shape nodes may stay on the CPU
        allow_imgsz_mismatch=cfg.allow_imgsz_mismatch,
        tensor_inputs=cfg.tensor_inputs,
        tensor_out=folder / "raw_outputs.npz" if cfg.tensor_inputs is not None else None,
    )
    if spec.trt is not None:
        simulated = cfg.simulated_rtx_worker is not None and spec.trt == "tensorrt-rtx"
        engine = folder / "engine" / f"{model.path.stem}.{spec.trt}.engine"
        build = [
            cfg.python,
            str(SCRIPTS / "build_trt_engine.py"),
            "--onnx-path",
            str(model.path),
            "--trt-api",
            spec.trt,
            "--engine-path",
            str(engine),
            "--trt-verbosity",
            "error",
        ]
        # the real build stays real; a simulated runtime builds and runs a fake engine of its own
        job = replace(job, engine=engine.with_name(engine.stem + ".double.engine") if simulated else engine)
        return [Step("build", build), Step("eval", _worker_cmd(cfg, job, folder, simulated))], simulated
    if spec.key == "ort-trt-ep":
        cache = folder / "ort-trt-cache"
        job = replace(
            job,
            provider_options={
                TRT_EP: {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": str(cache),
                }
            },
        )
        cache.mkdir(parents=True, exist_ok=True)
    return [Step("eval", _worker_cmd(cfg, job, folder, False))], False


def run_backend(cfg: RunConfig, key: str, model: ModelInfo, avail: Availability) -> BackendRun:
    spec = REGISTRY[key]
    folder = cfg.root / model.label / key
    folder.mkdir(parents=True, exist_ok=True)
    run = BackendRun(key, model, "skipped", avail.reason, folder)
    tag = f"[{model.label} / {key}]"
    if avail.ok:
        steps, run.runtime_double = plan_steps(cfg, spec, model, folder)
        run.status, run.reason = "ok", ""
        for step in steps:
            cfg.log(f"{tag} {step.name} ...")
            run.steps.append(run_step(step, folder, cfg.step_timeout))
            if step.rc != 0:
                run.status, run.reason = "failed", f"{step.name}: {step.error} (log: {folder / step.log})"
                cfg.log(f"{tag} FAILED {run.reason}")
                break
            cfg.log(f"{tag} {step.name} ok ({step.seconds:.1f} s)")
        if run.status == "ok" and not (folder / "metrics.json").is_file():
            run.status, run.reason = "failed", f"eval exited 0 but wrote no metrics.json (log: {folder / 'eval.log'})"
    atomic_write_json(folder / "status.json", run.to_dict())
    return run


def sample_inputs(dataset: Any, imgsz: int, count: int, out: Path) -> list[int]:
    """Letterbox the first ``count`` selected images exactly as the evaluation does; save [N,3,S,S]."""
    from common.data.images import load_image_rgb, preprocess

    ids = list(dataset.image_ids[: max(0, count)])
    if not ids:
        return []
    arr = np.stack([preprocess(load_image_rgb(dataset.image_path(i)), imgsz)[0] for i in ids]).astype(np.float32)
    with atomic_output(out, suffix=".npy") as tmp:
        np.save(tmp, arr)
    return ids


def load_raw(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as z:
        names = [str(n) for n in z["names"]]
        return {n: z[f"out{k}"] for k, n in enumerate(names)}


def raw_output_errors(runs: Sequence[BackendRun], keep: bool) -> list[dict[str, Any]]:
    """Raw-output error of every run against the reference backend's run on the same model."""
    from common.report.compare import REFERENCE_ORDER
    from common.report.parity import tensor_errors

    out = []
    by_model: dict[str, list[BackendRun]] = {}
    for r in runs:
        if r.status == "ok" and r.folder is not None:
            by_model.setdefault(r.model.label, []).append(r)
    for label, group in by_model.items():
        ref = next((r for key in REFERENCE_ORDER for r in group if r.backend == key), None)
        if ref is None or ref.folder is None:
            continue
        ref_raw = load_raw(ref.folder / "raw_outputs.npz")
        if ref_raw is None:
            continue
        for r in group:
            if r is ref or r.folder is None:
                continue
            raw = load_raw(r.folder / "raw_outputs.npz")
            errors = tensor_errors(ref_raw, raw) if raw is not None else [{"name": "*", "note": "no raw outputs"}]
            out.append({"model": label, "backend": r.backend, "reference": ref.backend, "errors": errors})
    if not keep:
        for r in runs:
            if r.folder is not None:
                (r.folder / "raw_outputs.npz").unlink(missing_ok=True)
    return out


def write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, json.loads(json.dumps(obj, default=str)))
