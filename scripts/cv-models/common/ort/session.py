"""ONNX Runtime behind the Backend protocol (``common.eval.protocols``): one session, ``infer(batch)``.

The pipeline calls ``backend.infer(batch)`` and gets back the model outputs as host NumPy
arrays, in ``outputs`` order; what else it may ask (submit/wait, device pre-processing, warm-up)
is stated in ``common.eval.protocols``. ONNX Runtime (this module, ``common.throughput.ort_lanes``) and
TensorRT (``common.trt.runtime``) implement it; the evaluators differ only in which backend
object they construct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.eval.protocols import Batch, TensorSpec
from common.ort.options import CPU_EP, CUDA_EP, provider_list

__all__ = ["OrtBackend"]


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


# ONNX Runtime's own switch: a node no requested EP takes fails the session instead of landing
# on the CPU EP (onnxruntime/core/session/onnxruntime_session_options_config_keys.h).
DISABLE_CPU_EP_FALLBACK = "session.disable_cpu_ep_fallback"
_REFUSED = "assigned to the default CPU EP"  # ORT's refusal under that switch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OrtBackend:
    """ONNX Runtime session behind the Backend protocol.

    ``providers`` is the ordered wish list. Providers this onnxruntime build doesn't offer are
    dropped with a warning -- unless ``disable_cpu_fallback`` is set, which makes ONNX Runtime
    itself refuse a node the requested accelerators can't take (``session.disable_cpu_ep_fallback``;
    the CPU EP is then left out of the session) and makes anything short of the first requested
    accelerator an error. ``require_accelerator`` keeps only that last check (the first
    accelerator must initialise; single nodes may still run on the CPU).
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str,
        providers: Sequence[str] = (CUDA_EP, CPU_EP),
        provider_options: dict[str, dict[str, str]] | None = None,
        disable_cpu_fallback: bool = False,
        log: Any = None,
        available: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        require_accelerator: bool = False,
    ) -> None:
        import os

        import onnxruntime as ort

        if not os.path.isfile(onnx_path):
            raise UserError(f"ONNX model not found: {onnx_path}; check --onnx-path")
        available = list(available) if available is not None else ort.get_available_providers()
        accel = [p for p in providers if p != CPU_EP]
        strict = disable_cpu_fallback and bool(accel)
        use = self._usable_providers(ort, providers, available, strict, log)
        if strict:
            use = [p for p in use if p != CPU_EP] or use
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if intra_op_threads is not None:  # GPU sessions: 1 thread, no spinning (cores stay with the pipeline)
            so.intra_op_num_threads = int(intra_op_threads)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if strict:
            so.add_session_config_entry(DISABLE_CPU_EP_FALLBACK, "1")
            so.log_severity_level = 4  # the refusal comes back as one UserError line, not twice
        self._session = self._open(ort, onnx_path, so, use, provider_options or {}, available, accel)
        self.providers_requested = list(providers)
        self.providers_used = list(self._session.get_providers())
        if (strict or require_accelerator) and accel and accel[0] not in self.providers_used:
            raise UserError(
                f"{accel[0]} failed to initialise (session uses {', '.join(self.providers_used)}); "
                "--disable-cpu-fallback forbids the fallback; run trt-doctor to see why"
            )
        self.provider_options = {p: dict(v) for p, v in self._session.get_provider_options().items()}
        if len(self._session.get_inputs()) != 1:
            raise UserError(f"{onnx_path} has {len(self._session.get_inputs())} inputs; a YOLO model has one")
        self._input = _ort_spec(self._session.get_inputs()[0])
        self._outputs = [_ort_spec(o) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]
        self.onnx_path = onnx_path
        self.version = ort.__version__

    @staticmethod
    def _usable_providers(
        ort: Any, providers: Sequence[str], available: Sequence[str], strict: bool, log: Any
    ) -> list[str]:
        """The requested providers this build offers; unknown names and (when strict) a missing first
        accelerator are UserErrors, other missing ones a warning."""
        plugins = [p for p in available if p not in ort.get_all_providers()]  # plugin EPs (TensorRT-RTX)
        known = set(ort.get_all_providers()) | set(plugins)
        unknown = [p for p in providers if p not in known]
        if unknown:
            raise UserError(
                f"unknown provider(s) {', '.join(unknown)} in --providers; known: {', '.join(sorted(known))}"
            )
        missing = [p for p in providers if p not in available]
        accel = [p for p in providers if p != CPU_EP]
        if missing:
            msg = f"provider(s) not available in onnxruntime {ort.__version__}: {', '.join(missing)}"
            if strict and accel[0] in missing:
                raise UserError(msg + "; --disable-cpu-fallback forbids running without it")
            (log or _warn)(f"warning: {msg}; available: {', '.join(available)}")
        return [p for p in providers if p in available] or [CPU_EP]

    @staticmethod
    def _open(
        ort: Any,
        onnx_path: str,
        so: Any,
        use: Sequence[str],
        opts: dict[str, dict[str, str]],
        available: Sequence[str],
        accel: Sequence[str],
    ) -> Any:
        plugins = [p for p in use if p in available and p not in ort.get_all_providers()]
        try:
            if plugins:
                # Plugin EPs are attached to devices; ORT adds the CPU EP behind them by itself
                # (unless session.disable_cpu_ep_fallback is set).
                for ep in plugins:
                    devices = [d for d in ort.get_ep_devices() if d.ep_name == ep]
                    so.add_provider_for_devices(devices, opts.get(ep, {}))
                return ort.InferenceSession(onnx_path, sess_options=so)
            return ort.InferenceSession(onnx_path, sess_options=so, providers=provider_list(use, opts))
        except Exception as exc:  # onnxruntime raises its own exception types
            if _REFUSED in str(exc):
                raise UserError(
                    f"{onnx_path}: {', '.join(accel)} cannot run every node (ONNX Runtime would put some on "
                    "the CPU EP); --disable-cpu-fallback forbids that: drop the flag to allow it"
                ) from exc
            raise UserError(f"cannot load ONNX model {onnx_path}: {_first_line(exc)}") from exc

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
