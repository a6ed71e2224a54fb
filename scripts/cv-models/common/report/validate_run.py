"""One validation run end to end: ``validate(opts)`` -- the library behind validate_e2e.py.

Inputs are opened and checked first (dataset, baseline, candidate, quantization interpreter); then trt-doctor's
availability, the optional quantization, every backend x model in its own subprocess (``common.report.validate``),
the comparison (``common.report.compare``) and ``validation.json`` with its verdict.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.core.checks import check_param
from common.core.cli import EXIT_INCONCLUSIVE
from common.core.errors import OptionError, UserError
from common.core.results import run_dir, timestamp
from common.data.check import check_dataset, describe
from common.eval.checks import check_onnx_input
from common.eval.options import DataOptions, EvalOptions
from common.report import validate as V
from common.report.compare import ParityOptions, collect, summarize
from common.report.compare_render import PLOT_SKIPPED

__all__ = ["QUANT_MODES", "ValidateOptions", "check_quantize_python", "validate"]

QUANT_MODES = ("int8", "fp8")


@dataclass(frozen=True)
class ValidateOptions:
    """A validation: the baseline ONNX, the candidate (``candidate``, or made by ``quantize``), the backends, the
    evaluation every backend runs, the parity thresholds and where the run goes (``out/task/<timestamp>/``).

    ``backends_named``: the backends were asked for by name (one that cannot run then fails the run);
    ``record``: the command line, kept under ``args`` in validation.json."""

    onnx_path: Path
    data: DataOptions = field(default_factory=DataOptions)
    eval: EvalOptions = field(default_factory=lambda: EvalOptions(progress=False))
    parity: ParityOptions = field(default_factory=ParityOptions)
    candidate: Path | None = None
    quantize: str | None = None
    quantize_python: str = sys.executable
    calib: Path | None = None
    calib_images: int = 32
    backends: tuple[str, ...] = V.BACKEND_KEYS
    backends_named: bool = False
    out: Path = Path("tmp")
    task: str = "validate"
    step_timeout: float = 3600.0
    allow_imgsz_mismatch: bool = False
    max_ap_drop: float | None = None
    tensor_samples: int = 4
    keep_tensors: bool = False
    record: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.candidate is not None and self.quantize is not None:
            raise OptionError("quantize", "pass either {candidate} ONNX or {quantize} MODE, not both")
        if self.quantize is not None and self.quantize not in QUANT_MODES:
            raise OptionError("quantize", "{quantize} " + f"{self.quantize}: choose one of {', '.join(QUANT_MODES)}")
        check_param("tensor_samples", self.tensor_samples, 0)
        check_param("calib_images", self.calib_images, 1)
        check_param("step_timeout", self.step_timeout, 0, lo_open=True)
        check_param("max_ap_drop", self.max_ap_drop, 0)
        for key in self.backends:
            if key not in V.REGISTRY:
                raise OptionError("backends", "{backends} " + f"{key}: choose from {', '.join(V.BACKEND_KEYS)}")


def check_quantize_python(python: str, mode: str) -> str:
    """nvidia-modelopt's version in ``python``; UserError saying what to pass when it does not import."""
    try:
        proc = subprocess.run(
            [python, "-c", "import modelopt; print(modelopt.__version__)"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except OSError as exc:
        raise UserError(f"--quantize-python {python}: cannot run it ({exc.strerror or exc})") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"--quantize-python {python}: `import modelopt` did not finish in 300 s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["import failed"])[-1]
        raise UserError(
            f"--quantize {mode}: nvidia-modelopt is not importable by --quantize-python {python} ({last}); pass the "
            "quant environment's interpreter (e.g. --quantize-python .venv-quant/bin/python) or make the candidate "
            "elsewhere and pass --candidate"
        )
    return proc.stdout.strip()


@dataclass
class _Inputs:
    """The dataset and the models, opened and checked before anything runs."""

    dataset: Any
    images: Path
    base: V.ModelInfo
    cand: V.ModelInfo | None
    cand_label: str | None


def _open_inputs(opts: ValidateOptions) -> _Inputs:
    from common.data.coco import open_dataset

    data = opts.data
    dataset = open_dataset(data.instances_path, data.images_path, data.max_images, data.image_ids_list)
    dataset.check_report = check_dataset(dataset, data.skip_unreadable_images)
    print(f"dataset check: {describe(dataset.check_report)}")
    quantized = Path(f"{opts.onnx_path.stem}.{opts.quantize}.onnx") if opts.quantize else None
    base_label, cand_label = V.model_labels(opts.onnx_path, opts.candidate or quantized)
    base = V.model_info(opts.onnx_path, "baseline", "--onnx-path", base_label)
    check_onnx_input(
        "--onnx-path",
        opts.onnx_path,
        opts.eval.imgsz,
        output_format=opts.eval.output_format,
        output_name=opts.eval.output_name,
        allow_imgsz_mismatch=opts.allow_imgsz_mismatch,
    )
    cand = None
    if opts.candidate is not None:
        cand = V.model_info(opts.candidate, "candidate", "--candidate", cand_label or "candidate")
        V.check_candidate(base, cand, "--candidate")
        if cand.sha256 == base.sha256:
            raise UserError(
                f"--candidate {opts.candidate} is the same model as --onnx-path {opts.onnx_path} (sha256 "
                f"{base.sha256[:12]}...): validating it against itself proves nothing; pass the quantized model"
            )
    if opts.quantize is not None:
        if not (V.SCRIPTS / "quantize_onnx.py").is_file():
            raise UserError("--quantize: scripts/cv-models/quantize_onnx.py is missing; pass --candidate instead")
        if opts.calib is not None and not opts.calib.is_file():
            raise UserError(f"--calib {opts.calib}: no such file; make one with make_calib_npy.py or leave it out")
        version = check_quantize_python(opts.quantize_python, opts.quantize)
        print(f"quantize: nvidia-modelopt {version} in {opts.quantize_python}")
    return _Inputs(dataset, data.images_path, base, cand, cand_label)


def _make_root(opts: ValidateOptions) -> Path:
    try:
        return run_dir(opts.task, root=opts.out, stamp=timestamp())
    except UserError as exc:
        raise UserError(f"--out {opts.out}: {exc}; pass a writable --out folder") from None


def _quantize(opts: ValidateOptions, root: Path, images_dir: Path) -> tuple[Path, V.Step]:
    """calib.npy (unless given) and the quantized candidate, each by its script in a subprocess."""
    folder = root / "quantize"
    folder.mkdir(parents=True, exist_ok=True)
    calib = opts.calib
    if calib is None:
        calib = folder / "calib.npy"
        cmd = [sys.executable, str(V.SCRIPTS / "make_calib_npy.py"), "--images-dir", str(images_dir)]
        cmd += ["--max-images", str(opts.calib_images), "--seed", "0", "--imgsz", str(opts.eval.imgsz)]
        step = V.run_step(V.Step("calib", [*cmd, "--out", str(calib), "--no-progress"]), folder, opts.step_timeout)
        if step.rc != 0:
            return calib, step
    out = folder / f"{opts.onnx_path.stem}.{opts.quantize}.onnx"
    cmd = [opts.quantize_python, str(V.SCRIPTS / "quantize_onnx.py"), "--mode", str(opts.quantize)]
    cmd += ["--onnx-path", str(opts.onnx_path), "--calib", str(calib), "--out", str(out), "--force"]
    return out, V.run_step(V.Step("quantize", cmd), folder, opts.step_timeout)


def _quantize_candidate(opts: ValidateOptions, root: Path, inputs: _Inputs) -> V.Step:
    """The candidate by quantization (``inputs.cand`` is set when it succeeds)."""
    print(f"quantize: {opts.quantize} with {opts.quantize_python} ...")
    out, step = _quantize(opts, root, inputs.images)
    if step.rc == 0:
        inputs.cand = V.model_info(out, "candidate", "--quantize", inputs.cand_label or "candidate")
        V.check_candidate(inputs.base, inputs.cand, "--quantize")
        print(f"quantize: {out} ({step.seconds:.1f} s)")
    else:
        print(f"quantize FAILED: {step.error}; validating the baseline only", file=sys.stderr)
    return step


def validate(opts: ValidateOptions, simulated_rtx_worker: Path | None = None) -> int:
    """Run the validation; 0 when it passes, 1 when a backend failed, broke a threshold or could not run though
    named. ``simulated_rtx_worker``: see ``common.report.validate.RunConfig`` (the TensorRT-RTX rows' evaluation
    by that script, e.g. on a simulated runtime)."""
    inputs = _open_inputs(opts)  # every usage error before anything runs
    if simulated_rtx_worker is not None and not simulated_rtx_worker.is_file():
        raise UserError(f"simulated_rtx_worker {simulated_rtx_worker}: no such script")
    root = _make_root(opts)
    print(f"run root: {root}")
    doc = V.run_doctor()
    V.write_json(root / "doctor.json", doc)
    keys = list(opts.backends)
    avail = V.availability(doc, keys, runtime_double=simulated_rtx_worker is not None)
    for k in keys:  # each skip reason is said here, once (run_backend does not repeat it per model)
        print(f"  {k:<11} {'available' if avail[k].ok else 'skipped: ' + avail[k].reason}")
    quant_step = _quantize_candidate(opts, root, inputs) if opts.quantize is not None else None
    tensor_inputs, tensor_ids = None, []
    if opts.tensor_samples > 0:  # sample images for the raw-output comparison
        tensor_inputs = root / "tensor-inputs.npy"
        tensor_ids = V.sample_inputs(inputs.dataset, opts.eval.imgsz, opts.tensor_samples, tensor_inputs)
    cfg = V.RunConfig(
        root=root,
        data=opts.data,
        eval=opts.eval,
        allow_imgsz_mismatch=opts.allow_imgsz_mismatch,
        step_timeout=opts.step_timeout,
        simulated_rtx_worker=simulated_rtx_worker,
        tensor_inputs=tensor_inputs,
    )
    models = [m for m in (inputs.base, inputs.cand) if m is not None]
    runs = [V.run_backend(cfg, key, model, avail[key]) for model in models for key in keys]
    record = {
        "schema_version": V.VALIDATION_SCHEMA_VERSION,
        "run_root": str(root),
        "baseline_model": inputs.base.label,
        "models": [m.to_dict() for m in models],
        "quantize": quant_step.to_dict() if quant_step else None,
        "backends_requested": keys,
        "availability": {k: {"ok": a.ok, "reason": a.reason} for k, a in avail.items()},
        "runs": [r.to_dict() for r in runs],
        "tensor_samples": tensor_ids,
        "tensor_errors": V.raw_output_errors(runs, keep=opts.keep_tensors),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in opts.record.items()},
    }
    V.write_json(root / "validation.json", record)
    problems, inconclusive = _compare(opts, root, inputs.base, runs)
    problems += _run_problems(opts, root, runs, quant_step)
    record["verdict"] = {"pass": not problems and not inconclusive, "problems": problems, "inconclusive": inconclusive}
    V.write_json(root / "validation.json", record)
    return _report(root, problems, inconclusive)


def _compare(
    opts: ValidateOptions, root: Path, base: V.ModelInfo, runs: Sequence[V.BackendRun]
) -> tuple[list[str], list[str]]:
    """ΔAP, parity and the summary files; the problems they found, and why nothing could be compared
    (``common.report.compare.verdict``: runs over other images, or no row but the reference's own)."""
    if not any(r.status == "ok" for r in runs):
        return ["no backend produced metrics; nothing to compare"], []
    col = collect([root])
    col.baseline_model = base.label
    summary = summarize(col, root, opts.parity)
    problems = [f"parity: {f}" for f in summary["parity_failures"]]
    if opts.max_ap_drop is not None:
        problems += [
            f"accuracy: {r['label']} ΔAP {r['delta_ap']:+.4f} is below -{opts.max_ap_drop}"
            for r in summary["rows"]
            if r["model"] != base.label and r["delta_ap"] is not None and r["delta_ap"] < -opts.max_ap_drop
        ]
    print()
    text = (root / "summary.md").read_text(encoding="utf-8")
    print("\n".join(ln for ln in text.splitlines() if ln.startswith(("|", ">"))))
    if not summary["plot"]:
        print(PLOT_SKIPPED)
    return problems, list(summary["verdict"]["reasons"])


def _run_problems(
    opts: ValidateOptions, root: Path, runs: Sequence[V.BackendRun], quant_step: V.Step | None
) -> list[str]:
    """Failed runs, backends asked for by name but skipped (one reason per backend), a failed quantization."""
    problems = [f"failed: {r.model.label} / {r.backend}: {r.reason}" for r in runs if r.status == "failed"]
    if opts.backends_named:
        skipped: dict[str, list[V.BackendRun]] = {}
        for r in runs:
            if r.status == "skipped":
                skipped.setdefault(r.backend, []).append(r)
        problems += [
            f"requested but skipped: {key} ({', '.join(r.model.label for r in rs)}): {rs[0].reason}"
            for key, rs in skipped.items()
        ]  # one reason per backend, not per model
    if quant_step is not None and quant_step.rc != 0:
        problems.append(f"quantize failed: {quant_step.error} (log: {root / 'quantize' / quant_step.log})")
    return problems


def _report(root: Path, problems: Sequence[str], inconclusive: Sequence[str] = ()) -> int:
    """FAILED (exit 1) where something broke, else INCONCLUSIVE (``EXIT_INCONCLUSIVE``) where nothing could be
    compared, else PASSED."""
    print()
    print(f"summary:    {root / 'summary.md'}")
    print(f"validation: {root / 'validation.json'}")
    if problems:
        print("VALIDATION FAILED:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    if inconclusive:
        print("VALIDATION INCONCLUSIVE (nothing to pass or fail):", file=sys.stderr)
        for p in inconclusive:
            print(f"  - {p}", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    print("VALIDATION PASSED")
    return 0
