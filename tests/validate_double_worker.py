"""validate's worker with the TensorRT-RTX runtime replaced by the test double (ONNX Runtime on the CPU).

tests/test_validate.py passes this file to ``common.report.validate_run.validate(..., simulated_rtx_worker=...)``;
validation runs it instead of ``validate_e2e.py _worker`` for the TensorRT-RTX rows' evaluation. The double is
installed here, in the test's own process, so the product never imports anything from tests/ (this folder is on
sys.path because the script lives here).
"""

from __future__ import annotations

import sys
from typing import Any

import trt_double

from common.report.validate import worker_main
from common.trt.api import load_api


class _Patch:
    """The one method of pytest's monkeypatch that ``trt_double.use_double`` calls."""

    def setattr(self, target: Any, name: str, value: Any) -> None:
        setattr(target, name, value)


def main(argv: list[str]) -> int:
    if argv[:1] != ["_worker"]:
        print("usage: validate_double_worker.py _worker JOB.json", file=sys.stderr)
        return 2
    trt_double.use_double(_Patch(), load_api("tensorrt-rtx"))
    return worker_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
