#!/usr/bin/env python3
"""Compare evaluation runs: metrics.json files or run roots -> summary.md, summary.json, summary.png.

Rows are metrics.json files (from any machine) or every metrics.json under a folder (a
validate_e2e.py run root also lists its skipped/failed backends). The table gives backend,
precision, mAP_50_95, ΔAP vs the reference row, median/p99 latency, throughput and detection
parity against the reference backend (ORT CUDA, else ORT CPU) on the same model, when each
run's detections.json sits beside its metrics.json. Warns when rows come from different GPUs
or one model name has different sha256.

Exit code: 0 compared; 1 --check and a row broke its parity threshold; 2 bad usage; 3 INCONCLUSIVE:
the rows could not be compared (a row evaluated other images than the reference row, or does not record
which; or nothing was compared: one run only, or only the reference's own model on its backend).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import (
    EXIT_INCONCLUSIVE,
    add_force_flag,
    add_old_spelling,
    check_range,
    make_parser,
    run_main,
    setup_logging,
)
from common.core.errors import UserError
from common.core.results import check_output_dir, check_output_paths, run_dir
from common.report.compare import SUMMARY_FILES, ParityOptions, collect, pick_reference, summarize
from common.report.compare_render import PLOT_SKIPPED
from common.report.parity import parse_threshold_overrides


def build_parser():
    doc = __doc__ or ""
    parser = make_parser(
        doc.splitlines()[0] + "\n\n" + doc[doc.index("Exit code") :].strip(),
        [
            "python scripts/cv-models/compare_runs.py tmp/validate/20260101-120000",
            "python scripts/cv-models/compare_runs.py tmp/eval-onnx/20260101-120000/metrics.json "
            "tmp/eval-trt/20260101-120500/metrics.json --out tmp/cmp",
            "python scripts/cv-models/compare_runs.py tmp/validate/A tmp/validate/B --reference 'ort-cuda fp32'",
        ],
    )
    parser.add_argument("paths", nargs="+", type=Path, help="metrics.json files and/or run folders")
    out = parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for summary.* (default: the run folder when exactly one folder is given, "
        "else tmp/compare/<timestamp>/)",
    )
    add_old_spelling(parser, "--out-dir", out)
    parser.add_argument(
        "--reference",
        default=None,
        help="row label for ΔAP, e.g. 'ort-cuda fp32' (see summary.md; default: ORT CUDA, else ORT CPU, "
        "of the baseline)",
    )
    parser.add_argument("--parity-iou", type=float, default=0.5, help="IoU for a match, in (0, 1] (default 0.5)")
    parser.add_argument(
        "--parity-conf", type=float, default=0.25, help="score from which detections count, in [0, 1] (default 0.25)"
    )
    parser.add_argument(
        "--min-matched",
        action="append",
        default=[],
        metavar="[PREC=]X",
        help="minimum matched fraction (default per precision)",
    )
    parser.add_argument(
        "--min-mean-iou",
        action="append",
        default=[],
        metavar="[PREC=]X",
        help="minimum mean IoU of matches (default per precision)",
    )
    parser.add_argument(
        "--max-median-dscore",
        action="append",
        default=[],
        metavar="[PREC=]X",
        help="maximum median |Δscore| of matches (default per precision)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a row breaks its parity threshold")
    add_force_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    check_range("--parity-iou", args.parity_iou, 0, 1, lo_open=True)
    check_range("--parity-conf", args.parity_conf, 0, 1)
    opts = ParityOptions(
        iou=args.parity_iou,
        conf=args.parity_conf,
        min_matched=parse_threshold_overrides(args.min_matched, "--min-matched"),
        min_mean_iou=parse_threshold_overrides(args.min_mean_iou, "--min-mean-iou"),
        max_median_dscore=parse_threshold_overrides(args.max_median_dscore, "--max-median-dscore"),
    )
    check_output_dir("--out", args.out)
    col = collect(args.paths)
    out_dir = args.out
    if out_dir is None:
        dirs = [p for p in args.paths if p.is_dir()]
        out_dir = dirs[0] if len(args.paths) == 1 and dirs else None
    pick_reference(col.rows, args.reference, col.baseline_model)  # an unknown --reference fails before any write
    inputs = {f"input {i}": r.metrics_path for i, r in enumerate(col.rows)}
    if out_dir is not None:
        check_output_dir("--out", out_dir)
        outputs = {f"--out file {n}": out_dir / n for n in SUMMARY_FILES}
        check_output_paths(outputs, inputs, force=args.force, vouchers=[out_dir / "summary.json"])
    else:
        out_dir = run_dir("compare")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"--out {out_dir}: cannot create it ({exc.strerror or exc}); pass a writable folder"
        raise UserError(msg) from None
    summary = summarize(col, out_dir, opts, reference=args.reference)
    for w in summary["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    text = (out_dir / "summary.md").read_text(encoding="utf-8")
    print("\n".join(ln for ln in text.splitlines() if ln.startswith("|")))
    if summary["plot"]:
        print(f"\nsummary: {out_dir / 'summary.md'} (+ summary.json, summary.png)")
    else:
        print(f"\nsummary: {out_dir / 'summary.md'} (+ summary.json); {PLOT_SKIPPED}")
    if args.check and summary["parity_failures"]:
        for f in summary["parity_failures"]:
            print(f"parity FAIL: {f}", file=sys.stderr)
        return 1
    if not summary["verdict"]["conclusive"]:
        for reason in summary["verdict"]["reasons"]:
            print(f"INCONCLUSIVE: {reason}", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
