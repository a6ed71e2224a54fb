"""The smoke check that ``trt-doctor --smoke`` runs in a child Python; prints one JSON object.

It builds a one-layer engine, runs it with the plain runner and compares the output with NumPy
(``common.trt.smoke``). A child process keeps a crash in a native library out of the doctor.

Usage: python trt_smoke.py [--trt-api tensorrt|tensorrt-rtx]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cv-models"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    api = args[args.index("--trt-api") + 1] if "--trt-api" in args[:-1] else None
    from common.trt.smoke import smoke_check

    sys.stdout.write(json.dumps(smoke_check(api).to_dict()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
