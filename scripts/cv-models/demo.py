#!/usr/bin/env python3
"""Evaluate the bundled YOLOv10n-synth model on the bundled 50-image synthetic COCO set.

No downloads: everything it reads is in the repository. Runs on the GPU through the
CUDA EP when onnxruntime-gpu sees one, else on the CPU. Takes the evaluator's flags
(e.g. --workers 4, --out FILE), with the bundled data and all of its images by default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import make_parser, run_main, setup_logging
from common.eval.cli import add_eval_args, check_onnx_input, eval_config, open_data, run_eval
from common.ort.options import CPU_EP, CUDA_EP, available_providers
from common.ort.session import OrtBackend

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "models/cv-models/yolov10n-synth/yolov10n-synth.onnx"
DEMO_DATA = REPO / "datasets/synthcoco-mini"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__ or "", ["python scripts/cv-models/demo.py --workers 2"], usage="%(prog)s [options]")
    add_eval_args(parser, task="demo")
    parser.set_defaults(data_root=DEMO_DATA, max_images=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    config = eval_config(args)
    dataset = open_data(config.data, config.out, {"model": DEMO_MODEL}, config.eval)
    check_onnx_input("model", DEMO_MODEL, config.eval.imgsz)
    available = available_providers()
    on_gpu = CUDA_EP in available
    providers = [CUDA_EP, CPU_EP]
    backend = OrtBackend(str(DEMO_MODEL), providers, available=available, intra_op_threads=1 if on_gpu else None)
    print(f"onnxruntime {backend.version}: providers in use: {', '.join(backend.providers_used)}")
    try:
        record = {"onnx_path": str(DEMO_MODEL), "providers": providers}  # the model and EPs the demo chose
        return run_eval(args, config, backend, DEMO_MODEL, dataset, record_extra=record)
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(run_main(main))
