"""A ModelOpt worker: quantization requests as JSON lines on stdin, one JSON reply per line on stdout.

Runs in the environment that has ModelOpt (``python -m common.quant.worker``; the quant Pixi
environment or .venv-quant). The precision search keeps one worker for the whole run, so ModelOpt
and torch are imported once, and scores candidates in its own environment (whichever ONNX Runtime
that has). Everything ModelOpt and ONNX Runtime print goes to stderr; stdout carries only replies.

Requests (``op`` and its fields; paths are absolute):

- ``hello``: -> ``modelopt``, ``onnxruntime`` versions;
- ``ptq``: ``src``, ``out``, ``mode`` (int8|fp8), ``calib`` (.npy), ``calib_count`` (first N images),
  ``method``, ``eps``, ``nodes_to_exclude`` (regexes), ``high_precision_dtype``, ``cache`` (or null);
- ``autocast``: ``src``, ``out``, ``mode`` (fp16|bf16), ``calib`` (or null), ``eps``.

Each reply is ``{"ok": true, "seconds": ...}`` or ``{"ok": false, "error": "...", "traceback": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["handle", "main"]


def _input_name(src: Path) -> str:
    import onnx

    from common.quant.presets import input_spec

    return input_spec(onnx.load(str(src), load_external_data=False))[0]


def _calib(path: str | None, count: int | None) -> Any:
    if path is None:
        return None
    import numpy as np

    from common.quant.calib import load_calib_tensor

    arr = load_calib_tensor(path)
    return np.ascontiguousarray(arr[:count] if count else arr)


def handle(req: dict[str, Any]) -> dict[str, Any]:
    """One request -> the fields of its reply (``ok`` is added by the caller)."""
    from common.quant import modelopt as qm

    op = req.get("op")
    if op == "hello":
        import onnxruntime

        return {"modelopt": qm.modelopt_version(), "onnxruntime": onnxruntime.__version__}
    t0 = time.perf_counter()
    src, out = Path(req["src"]), Path(req["out"])
    if op == "ptq":
        cache = Path(req["cache"]) if req.get("cache") else None
        qm.run_ptq(
            src,
            out,
            req["mode"],
            _calib(req["calib"], req.get("calib_count")),
            _input_name(src),
            req["method"],
            req["eps"],
            req.get("nodes_to_exclude") or [],
            [],
            req["high_precision_dtype"],
            calibration_cache=cache,
        )
    elif op == "autocast":
        calib = _calib(req.get("calib"), None)
        qm.run_autocast(src, out, req["mode"], calib, _input_name(src), [], [], req["eps"])
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"seconds": time.perf_counter() - t0}


def main() -> int:
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever ModelOpt or ONNX Runtime prints, from Python or C, lands on stderr
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = {"ok": True, **handle(json.loads(line))}
        except Exception as exc:  # every failure becomes a reply; the caller decides
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
