#!/usr/bin/env python3
"""Run a TensorRT / TensorRT-RTX engine on .npy inputs (or seeded random data); optionally benchmark it.

Writes one <output>.npy per engine output and infer.json (I/O, timings) into --output-dir.
--benchmark reports trtexec's figures: GPU compute, H2D, D2H, enqueue, latency (H2D+compute+D2H,
CUDA events), end-to-end host time and throughput, each as mean/median/p90/p95/p99.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)

# isort: split
import numpy as np

from common.core.cli import add_force_flag, check_range, make_parser, run_main, setup_logging
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
from common.trt.api import add_api_args, load_api
from common.trt.build import parse_shapes
from common.trt.runner import TrtRunner
from common.trt.runtime import TrtSession

STAGES = {
    "gpu_compute": "compute_ms",
    "h2d": "h2d_ms",
    "d2h": "d2h_ms",
    "enqueue": "enqueue_ms",
    "latency": "latency_ms",
    "end_to_end_host": "host_ms",
}


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        __doc__ or "",
        [
            "python scripts/cv-models/infer_trt_engine.py --engine-path tmp/build-engine/trt/yolov10m.tensorrt.engine "
            "--input images=tmp/calib/one.npy --output-dir tmp/infer-trt/run1",
            "python scripts/cv-models/infer_trt_engine.py --engine-path tmp/build-engine/trt/yolov10m.tensorrt.engine "
            "--seed 0 --benchmark --cuda-graph --iterations 500",
            "python scripts/cv-models/infer_trt_engine.py "
            "--engine-path tmp/build-engine/trt/yolov10m-dynbatch.tensorrt.engine "
            "--shapes images:4x3x640x640 --benchmark",
        ],
    )
    parser.add_argument(
        "--engine-path",
        "--engine",
        dest="engine_path",
        type=Path,
        required=True,
        help="serialized engine (build_trt_engine.py); --engine is the old spelling",
    )
    add_api_args(parser)
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="input tensor from a .npy file (repeatable); others get random data",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument(
        "--shapes",
        "--shape",
        dest="shapes",
        action="append",
        default=[],
        metavar="NAME:NxCxHxW",
        help="shape of a random dynamic input, repeatable (default: the profile's opt shape); "
        "--shape is the old spelling",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the outputs (.npy) and infer.json go (default: tmp/infer-trt/<timestamp>/); files there are "
        "replaced only when this toolkit wrote them, or with --force",
    )
    add_force_flag(parser)
    parser.add_argument("--benchmark", action="store_true", help="time warm-up + --iterations runs")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs before timing (default 10)")
    parser.add_argument("--iterations", type=int, default=100, help="timed runs (default 100)")
    parser.add_argument("--cuda-graph", action="store_true", help="replay the enqueue as a CUDA graph")
    parser.add_argument(
        "--runtime-cache",
        type=Path,
        default=None,
        help="TensorRT-RTX runtime (JIT kernel) cache file, loaded and saved",
    )
    return parser


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
        for key, field in STAGES.items():
            samples[key].append(session.last_timing[field] / 1000.0)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    check_range("--iterations", args.iterations, 1)
    check_range("--warmup", args.warmup, 0)
    given = parse_inputs(args.input)  # missing files fail before anything is opened
    shapes = {p.name: p.opt for p in parse_shapes(args.shapes)}
    inputs: dict[str, Path | None] = {"--engine-path": args.engine_path}
    inputs.update({f"--input {n}": f for n, f in given.items()})
    check_output_dir("--output-dir", args.output_dir)
    check_output_paths({"--runtime-cache": args.runtime_cache}, inputs, caches=["--runtime-cache"])
    api = load_api(args.trt_api)
    verbosity = "verbose" if args.verbose else args.trt_verbosity
    with TrtRunner.open(
        args.engine_path,
        api,
        cuda_graph=args.cuda_graph,
        verbosity=verbosity,
        runtime_cache=args.runtime_cache,
        image_input=False,
    ) as runner:
        session = runner.session
        names = [t.name for t in session.inputs]
        for name in [*given, *shapes]:
            if name not in names:
                raise UserError(f"engine has no input {name!r}; its inputs are {', '.join(names)}")
        used: set[str] = set()
        files = {t.name: output_filename(t.name, used) for t in session.outputs}
        if args.output_dir is not None:  # the files this run writes: not an input, before any inference
            writes = {f"--output-dir file for output {n!r}": args.output_dir / f for n, f in files.items()}
            writes["--output-dir file"] = args.output_dir / "infer.json"
            check_output_paths(
                writes,
                {**inputs, "--runtime-cache": args.runtime_cache},
                force=args.force,
                vouchers=[args.output_dir / "infer.json"],
            )
        rng = np.random.default_rng(args.seed)
        feeds = {
            n: load_npy(n, given[n]) if n in given else random_input(session, n, shapes.get(n), rng) for n in names
        }
        session.validate(feeds)
        outputs = session.run(feeds)
        first = dict(session.last_timing)
        bench = benchmark(session, feeds, args.warmup, args.iterations) if args.benchmark else None
        facts = session.describe()

    out_dir = args.output_dir or run_dir("infer-trt")
    for name, arr in outputs.items():
        files.setdefault(name, output_filename(name, used))
        with atomic_output(out_dir / files[name], suffix=".npy") as tmp:
            np.save(tmp, arr)
    report = {
        "engine": facts,
        "inputs": {
            n: {
                "source": str(given[n]) if n in given else f"random(seed={args.seed})",
                "shape": list(a.shape),
                "dtype": str(a.dtype),
            }
            for n, a in feeds.items()
        },
        "outputs": {n: {"file": files[n], "shape": list(a.shape), "dtype": str(a.dtype)} for n, a in outputs.items()},
        "first_run_ms": first,
        "benchmark": bench,
    }
    atomic_write_json(out_dir / "infer.json", stamp(report, file_digests(*(out_dir / files[n] for n in outputs))))
    for n, a in outputs.items():
        print(f"{n}: {list(a.shape)} {a.dtype} -> {out_dir / files[n]}")
    if bench:
        print(format_benchmark(bench))
    print(f"report: {out_dir / 'infer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
