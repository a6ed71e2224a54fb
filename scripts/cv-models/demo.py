#!/usr/bin/env python3
"""Evaluate the bundled YOLOv10n-synth model on the bundled 50-image synthetic COCO set.

No downloads: everything it reads is in the repository. Runs on the GPU through the
CUDA EP when onnxruntime-gpu sees one, else on the CPU. Extra flags are passed on to
eval_yolov10m_onnx_coco.py (e.g. --workers 4, --out FILE).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

import eval_yolov10m_onnx_coco as onnx_eval  # noqa: E402

from common.core.cli import run_main  # noqa: E402

DEMO_MODEL = REPO / "models/cv-models/yolov10n-synth/yolov10n-synth.onnx"
DEMO_DATA = REPO / "datasets/synthcoco-mini"


def demo_argv(extra: Sequence[str]) -> list[str]:
    return [
        "--onnx-path",
        str(DEMO_MODEL),
        "--data-root",
        str(DEMO_DATA),
        "--max-images",
        "0",
        "--providers",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
        "--task",
        "demo",
        *extra,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    if "-h" in extra or "--help" in extra:
        print(__doc__)
        print("example:\n  python scripts/cv-models/demo.py --workers 2")
        return 0
    return onnx_eval.main(demo_argv(extra))


if __name__ == "__main__":
    sys.exit(run_main(main))
