"""ONNX Runtime behind the Backend protocol (``common.backend_protocols``), and ``max_batch_of``.

The pipeline calls ``backend.infer(batch)`` and gets back the model outputs as host NumPy
arrays, in ``outputs`` order; what else it may ask (submit/wait, device pre-processing, warm-up)
is stated in ``common.backend_protocols``. ONNX Runtime (this module, ``common.ort_cuda``) and
TensorRT (``common.trt_runtime``) implement it; the evaluators differ only in which backend
object they construct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from common.backend_protocols import Backend, Batch, TensorSpec
from common.errors import UserError

__all__ = ["Backend", "OrtBackend", "TensorSpec", "max_batch_of"]  # Backend, TensorSpec: re-exported


def max_batch_of(backend: Backend) -> int | None:
    """The batch size a backend accepts: None when the batch axis is dynamic."""
    first = backend.input.shape[0] if backend.input.shape else 1
    return None if first is None else int(first)


_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
}


def _ort_spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return TensorSpec(arg.name, shape, np.dtype(_ORT_DTYPES.get(arg.type, np.float32)))


def _warn(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


class OrtBackend:
    """ONNX Runtime session behind the Backend protocol.

    ``providers`` is the ordered wish list. Providers this onnxruntime build doesn't
    offer are dropped with a warning -- unless ``disable_cpu_fallback`` is set, in which
    case anything short of the first requested accelerator is an error.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str,
        providers: Sequence[str] = ("CUDAExecutionProvider", "CPUExecutionProvider"),
        provider_options: dict[str, dict[str, str]] | None = None,
        disable_cpu_fallback: bool = False,
        log: Any = None,
        available: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        import os

        import onnxruntime as ort

        if not os.path.isfile(onnx_path):
            raise UserError(f"ONNX model not found: {onnx_path}; check --onnx-path")
        available = list(available) if available is not None else ort.get_available_providers()
        plugins = [p for p in available if p not in ort.get_all_providers()]  # plugin EPs (TensorRT-RTX)
        known = set(ort.get_all_providers()) | set(plugins)
        unknown = [p for p in providers if p not in known]
        if unknown:
            raise UserError(
                f"unknown provider(s) {', '.join(unknown)} in --providers; known: {', '.join(sorted(known))}"
            )
        missing = [p for p in providers if p not in available]
        accel = [p for p in providers if p != "CPUExecutionProvider"]
        if missing:
            msg = f"provider(s) not available in onnxruntime {ort.__version__}: {', '.join(missing)}"
            if disable_cpu_fallback and accel and accel[0] in missing:
                raise UserError(msg + "; --disable-cpu-fallback forbids running without it")
            (log or _warn)(f"warning: {msg}; available: {', '.join(available)}")
        use = [p for p in providers if p in available]
        if not use:
            use = ["CPUExecutionProvider"]
        opts = provider_options or {}
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if intra_op_threads is not None:  # GPU sessions: 1 thread, no spinning (cores stay with the pipeline)
            so.intra_op_num_threads = int(intra_op_threads)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        use_plugins = [p for p in use if p in plugins]
        try:
            if use_plugins:
                # Plugin EPs are attached to devices; ORT adds the CPU EP behind them by itself.
                for ep in use_plugins:
                    devices = [d for d in ort.get_ep_devices() if d.ep_name == ep]
                    so.add_provider_for_devices(devices, opts.get(ep, {}))
                self._session = ort.InferenceSession(onnx_path, sess_options=so)
            else:
                self._session = ort.InferenceSession(
                    onnx_path, sess_options=so, providers=[(p, opts.get(p, {})) for p in use]
                )
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load ONNX model {onnx_path}: {first}") from exc
        self.providers_requested = list(providers)
        self.providers_used = list(self._session.get_providers())
        if disable_cpu_fallback and accel and accel[0] not in self.providers_used:
            raise UserError(
                f"{accel[0]} failed to initialise (session uses {', '.join(self.providers_used)}); "
                "--disable-cpu-fallback forbids the fallback; run trt-doctor to see why"
            )
        self.provider_options = {p: dict(v) for p, v in self._session.get_provider_options().items()}
        self._input = _ort_spec(self._session.get_inputs()[0])
        if len(self._session.get_inputs()) != 1:
            raise UserError(f"{onnx_path} has {len(self._session.get_inputs())} inputs; a YOLO model has one")
        self._outputs = [_ort_spec(o) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]
        self.onnx_path = onnx_path
        self.version = ort.__version__

    @property
    def input(self) -> TensorSpec:
        return self._input

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def infer(self, batch: Batch) -> list[np.ndarray]:
        if not isinstance(batch, np.ndarray):  # a U8Batch: this session takes host float arrays only
            raise UserError(f"--preprocess {batch.mode} needs --io-binding; this session takes host float arrays")
        return self._session.run(self._output_names, {self._input.name: batch})

    def metadata(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "onnxruntime": self.version,
            "providers_requested": self.providers_requested,
            "providers_used": self.providers_used,
            "provider_options": self.provider_options,
        }

    def close(self) -> None:
        self._session = None
