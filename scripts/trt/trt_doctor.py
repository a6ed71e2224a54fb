#!/usr/bin/env python3
"""trt-doctor: can this Python use TensorRT, trtexec, the ONNX Runtime TensorRT EP and the GPU?

Prints a table of checks and one actionable line per problem, and writes the full
inventory as JSON (``tmp/trt-doctor/<timestamp>/doctor.json`` unless ``--out``).
Exit code 0: ready for TensorRT (``import tensorrt`` works against the machine's
libnvinfer and a GPU is visible; with ``--smoke`` also: a one-layer engine was built, run on
the GPU with the plain runner and matched NumPy); 1: not ready, with the reasons; 2: bad usage.

Everything the doctor looks at comes through ``DoctorInputs`` (environment, search
folders, the import probe, the command runner), so tests can hand it a fake machine.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

# first: one line, not a traceback, when this Python lacks the toolkit's dependencies (common.core.envguard)
try:
    import common.core.envguard
except ModuleNotFoundError:  # a Python that has not installed the toolkit: its shared package, to say what to run
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cv-models"))
    import common.core.envguard  # noqa: F401

from common.core.cli import add_force_flag, add_old_spelling, make_parser, output_file, run_main, setup_logging
from common.core.errors import UserError
from common.core.results import atomic_write_json, check_output_paths, run_dir, stamp
from common.trt.doctor import *  # noqa: F403  (the CLI re-exports the doctor's names for its users)
from common.trt.doctor import WARN, DoctorInputs, collect, diagnose, render_table

REPO_ROOT = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None, inputs: DoctorInputs | None = None) -> int:
    parser = make_parser(
        __doc__.splitlines()[1],
        [
            "pixi run -e rtx5090 trt-doctor",
            "pixi run -e rtx5090 trt-doctor --out tmp/doctor.json --no-session",
            "pixi run -e rtx5090 trt-doctor --smoke   # also build, run and check a one-layer engine",
            "bash scripts/dev/venv.sh python scripts/trt/trt_doctor.py --python /usr/bin/python3   # probe the "
            "container's Python",
        ],
    )
    out = parser.add_argument(
        "--out",
        type=output_file("doctor.json"),
        help="write the JSON here; DIR/ means DIR/doctor.json (default tmp/trt-doctor/<timestamp>/doctor.json)",
    )
    add_old_spelling(parser, "--json-out", out)
    add_force_flag(parser)
    parser.add_argument("--python", default=sys.executable, help="Python to probe (default: this one)")
    parser.add_argument(
        "--no-session", action="store_true", help="do not build tiny ORT sessions (faster; EP load errors less precise)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="also build a one-layer engine (tensorrt if it imports, else tensorrt-rtx), run it on the GPU and "
        "compare with NumPy; READY then means that passed (default: off, READY says the check was skipped)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too (e.g. ORT TensorRT EP unusable)")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not Path(args.python).exists() and not shutil.which(args.python):
        raise UserError(f"--python {args.python}: no such interpreter; pass a path such as /usr/bin/python3")
    check_output_paths({"--out": args.out}, {}, force=args.force)  # before the probes

    inp = inputs or DoctorInputs(env=dict(os.environ), python=args.python, session=not args.no_session)
    inp.smoke = inp.smoke or args.smoke
    report = collect(inp)
    dx = diagnose(report)
    full = {**report, "checks": dx.checks, "recommendations": dx.recommendations, "ready": dx.ready}
    out = args.out or run_dir("trt-doctor", root=REPO_ROOT / "tmp") / "doctor.json"
    atomic_write_json(out, stamp(full))
    print(render_table(report, dx))
    print(f"\nJSON: {out}")
    failed = not dx.ready or (args.strict and any(c["status"] == WARN for c in dx.checks))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
