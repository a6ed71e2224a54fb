"""Run a TensorRT / TensorRT-RTX engine once on given or random inputs, optionally benchmark it: the library
behind infer_trt_engine.py. ``InferOptions`` holds a run's options (validated when made); ``infer(opts)`` runs it
and writes one <output>.npy per engine output plus infer.json into ``opts.out``."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.core.checks import check_param
from common.core.errors import UserError
from common.core.results import (
    atomic_output,
    atomic_write_json,
    check_output_dir,
    check_output_paths,
    file_digests,
    latency_stats,
    run_dir,
    stamp,
)
from common.trt.api import load_api
from common.trt.runner import TrtRunner
from common.trt.runtime import TrtSession

__all__ = [
    "STAGES",
    "InferOptions",
    "benchmark",
    "format_benchmark",
    "infer",
    "load_npy",
    "output_filename",
    "parse_input_shapes",
    "parse_inputs",
    "random_input",
]

STAGES = {
    "gpu_compute": "compute_ms",
    "h2d": "h2d_ms",
    "d2h": "d2h_ms",
    "enqueue": "enqueue_ms",
    "latency": "latency_ms",
    "end_to_end_host": "host_ms",
}


@dataclass(frozen=True)
class InferOptions:
    """One engine run: ``inputs`` name -> .npy file (the others get random data of ``seed``), ``input_shapes``
    name -> concrete shape of a dynamic random input (default: the profile's opt shape), ``out`` the output folder
    (None: ``tmp/infer-trt/<timestamp>/``); ``benchmark``: ``warmup_runs`` untimed then ``iterations`` timed runs."""

    engine_path: Path
    api: str | None = None  # tensorrt | tensorrt-rtx (None: tensorrt if it imports, else tensorrt-rtx)
    verbosity: str = "warning"
    inputs: Mapping[str, Path] = field(default_factory=dict)
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    seed: int = 0
    out: Path | None = None
    benchmark: bool = False
    warmup_runs: int = 10
    iterations: int = 100
    cuda_graph: bool = False
    runtime_cache: Path | None = None
    force: bool = False  # replace output files this toolkit did not write

    def __post_init__(self) -> None:
        check_param("iterations", self.iterations, 1)
        check_param("warmup_runs", self.warmup_runs, 0)


def parse_input_shapes(specs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``NAME:NxCxHxW`` (one concrete shape per input) -> {name: dims}."""
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        parts = dims.split("x")
        if not sep or not name or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise UserError(
                f"--input-shape {spec!r}: expected NAME:NxCxHxW with positive sizes, e.g. images:4x3x640x640"
            )
        if name in out:
            raise UserError(f"--input-shape: input {name!r} given twice")
        out[name] = tuple(int(p) for p in parts)
    return out


def parse_inputs(items: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise UserError(f"--input {item!r}: expected NAME=FILE.npy, e.g. images=batch.npy")
        p = Path(path)
        if not p.is_file():
            raise UserError(f"--input {name}={path}: no such file")
        out[name] = p
    return out


def load_npy(name: str, path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"--input {name}={path}: not a readable .npy array ({exc})") from exc
    return np.ascontiguousarray(arr)


def random_input(session: TrtSession, name: str, shape: tuple[int, ...] | None, rng: np.random.Generator) -> Any:
    tensor = next(t for t in session.inputs if t.name == name)
    shape = shape or session.default_shape(tensor)
    dt = tensor.dtype
    if dt.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dt)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(0, 100, size=shape).astype(dt)


def output_filename(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "output"
    fname, n = f"{base}.npy", 1
    while fname in used:
        n += 1
        fname = f"{base}_{n}.npy"
    used.add(fname)
    return fname


def benchmark(session: TrtSession, feeds: dict[str, np.ndarray], warmup: int, iterations: int) -> dict[str, Any]:
    for _ in range(warmup):
        session.run(feeds, copy_outputs=False)
    samples: dict[str, list[float]] = {k: [] for k in STAGES}
    graph_runs = 0
    t0 = time.perf_counter()
    for _ in range(iterations):
        session.run(feeds, copy_outputs=False)
        for key, stat in STAGES.items():
            samples[key].append(session.last_timing[stat] / 1000.0)
        graph_runs += int(session.last_timing.get("cuda_graph", 0))
    wall = time.perf_counter() - t0
    batch = int(next(iter(feeds.values())).shape[0]) if feeds and next(iter(feeds.values())).ndim else 1
    return {
        "warmup": warmup,
        "iterations": iterations,
        "batch": batch,
        "wall_seconds": wall,
        "throughput_qps": iterations / wall if wall > 0 else 0.0,
        "throughput_items_per_s": iterations * batch / wall if wall > 0 else 0.0,
        "cuda_graph_replays": graph_runs,
        **{k: latency_stats(v) for k, v in samples.items()},
    }


def format_benchmark(b: dict[str, Any]) -> str:
    lines = [
        f"throughput: {b['throughput_qps']:.1f} qps ({b['throughput_items_per_s']:.1f} items/s, "
        f"batch {b['batch']}, {b['iterations']} iterations)"
    ]
    for key in STAGES:
        s = b[key]
        lines.append(
            f"{key:<16} mean {s['mean_ms']:.3f}  median {s['median_ms']:.3f}  p90 {s['p90_ms']:.3f}  "
            f"p95 {s['p95_ms']:.3f}  p99 {s['p99_ms']:.3f} ms"
        )
    return "\n".join(lines)


def _check_outputs(opts: InferOptions, files: Mapping[str, str], inputs: Mapping[str, Path | None]) -> None:
    """The files this run writes: not an input, before any inference."""
    if opts.out is None:
        return
    writes: dict[str, Path | None] = {f"--out file for output {n!r}": opts.out / f for n, f in files.items()}
    writes["--out file"] = opts.out / "infer.json"
    check_output_paths(
        writes, {**inputs, "--runtime-cache": opts.runtime_cache}, force=opts.force, vouchers=[opts.out / "infer.json"]
    )


def _run_engine(opts: InferOptions, inputs: Mapping[str, Path | None]) -> tuple[dict[str, Any], dict[str, str]]:
    """Open the engine, feed it, run once (and the benchmark): feeds, outputs, timings, facts, output files."""
    api = load_api(opts.api)
    with TrtRunner.open(
        opts.engine_path,
        api,
        cuda_graph=opts.cuda_graph,
        verbosity=opts.verbosity,
        runtime_cache=opts.runtime_cache,
        image_input=False,
    ) as runner:
        session = runner.session
        names = [t.name for t in session.inputs]
        for name in [*opts.inputs, *opts.input_shapes]:
            if name not in names:
                raise UserError(f"engine has no input {name!r}; its inputs are {', '.join(names)}")
        used: set[str] = set()
        files = {t.name: output_filename(t.name, used) for t in session.outputs}
        _check_outputs(opts, files, inputs)
        rng = np.random.default_rng(opts.seed)
        feeds = {
            n: load_npy(n, opts.inputs[n])
            if n in opts.inputs
            else random_input(session, n, opts.input_shapes.get(n), rng)
            for n in names
        }
        session.validate(feeds)
        outputs = session.run(feeds)
        first = dict(session.last_timing)
        bench = benchmark(session, feeds, opts.warmup_runs, opts.iterations) if opts.benchmark else None
        facts = session.describe()
    for name in outputs:
        files.setdefault(name, output_filename(name, used))
    return {"feeds": feeds, "outputs": outputs, "first": first, "bench": bench, "facts": facts}, files


def infer(opts: InferOptions) -> Path:
    """Run the engine (and benchmark it); write the outputs and infer.json; the output folder."""
    inputs: dict[str, Path | None] = {"--engine-path": opts.engine_path}
    inputs.update({f"--input {n}": f for n, f in opts.inputs.items()})
    check_output_dir("--out", opts.out)
    check_output_paths({"--runtime-cache": opts.runtime_cache}, inputs, caches=["--runtime-cache"])
    run, files = _run_engine(opts, inputs)
    out_dir = opts.out or run_dir("infer-trt")
    for name, arr in run["outputs"].items():
        with atomic_output(out_dir / files[name], suffix=".npy") as tmp:
            np.save(tmp, arr)
    report = {
        "engine": run["facts"],
        "inputs": {
            n: {
                "source": str(opts.inputs[n]) if n in opts.inputs else f"random(seed={opts.seed})",
                "shape": list(a.shape),
                "dtype": str(a.dtype),
            }
            for n, a in run["feeds"].items()
        },
        "outputs": {
            n: {"file": files[n], "shape": list(a.shape), "dtype": str(a.dtype)} for n, a in run["outputs"].items()
        },
        "first_run_ms": run["first"],
        "benchmark": run["bench"],
    }
    digests = file_digests(*(out_dir / files[n] for n in run["outputs"]))
    atomic_write_json(out_dir / "infer.json", stamp(report, digests))
    for n, a in run["outputs"].items():
        print(f"{n}: {list(a.shape)} {a.dtype} -> {out_dir / files[n]}")
    if run["bench"]:
        print(format_benchmark(run["bench"]))
    print(f"report: {out_dir / 'infer.json'}")
    return out_dir
