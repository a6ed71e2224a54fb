"""--disable-cpu-fallback goes through ONNX Runtime's own switch (session.disable_cpu_ep_fallback):
a node the requested EP can't take fails the run with one line instead of running on the CPU.

The cheap way to get such a node on a CPU-only machine: ONNX Runtime's Azure EP is always
available in the PyPI wheels and takes no node of a plain model, so every node would fall back.
The old after-the-fact check (is the first EP among the session's providers?) let that pass.
"""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest
from conftest import DEMO_MODEL, MINI, run_script
from test_eval_cli import assert_clean_failure

from common.core.errors import UserError
from common.ort.session import DISABLE_CPU_EP_FALLBACK, OrtBackend

AZURE = "AzureExecutionProvider"


@pytest.fixture
def azure() -> str:
    if AZURE not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no Azure EP")
    return AZURE


def test_nodes_that_would_fall_back_to_the_cpu_fail_the_session(azure) -> None:
    with pytest.raises(UserError, match="--disable-cpu-fallback") as info:
        OrtBackend(str(DEMO_MODEL), [azure, "CPUExecutionProvider"], disable_cpu_fallback=True)
    msg = str(info.value)
    assert "\n" not in msg and azure in msg and "cannot run every node" in msg


def test_without_the_flag_the_cpu_takes_those_nodes(azure) -> None:
    backend = OrtBackend(str(DEMO_MODEL), [azure, "CPUExecutionProvider"])
    try:
        assert "CPUExecutionProvider" in backend.providers_used
        with pytest.raises(RuntimeError, match="does not have configuration"):  # the switch is not set
            backend._session.get_session_options().get_session_config_entry(DISABLE_CPU_EP_FALLBACK)
    finally:
        backend.close()


def test_require_accelerator_keeps_only_the_initialisation_check(azure) -> None:
    """The IO-binding lanes ask only that their EP initialises (single CPU nodes stay allowed)."""
    backend = OrtBackend(str(DEMO_MODEL), [azure, "CPUExecutionProvider"], require_accelerator=True)
    backend.close()


def test_cpu_only_run_is_not_affected_by_the_flag() -> None:
    backend = OrtBackend(str(DEMO_MODEL), ["CPUExecutionProvider"], disable_cpu_fallback=True)
    backend.close()


def test_eval_cli_exits_2_with_one_line(tmp_path, azure) -> None:
    out = tmp_path / "m.json"
    proc = run_script(
        "eval_yolov10m_onnx_coco.py",
        "--onnx-path",
        str(DEMO_MODEL),
        "--data-root",
        str(MINI),
        "--providers",
        azure,
        "CPUExecutionProvider",
        "--disable-cpu-fallback",
        "--max-images",
        "2",
        "--out",
        str(out),
    )
    assert_clean_failure(proc, azure, "--disable-cpu-fallback")
    assert not out.exists()


def test_eval_cli_require_accelerator_allows_single_cpu_nodes(tmp_path, azure) -> None:
    """validate's GPU rows pass --require-accelerator, not --disable-cpu-fallback: a model whose shape nodes the
    accelerator leaves to the CPU (here: every node) still evaluates, as long as the accelerator initialises."""
    out = tmp_path / "m.json"
    proc = run_script(
        "eval_yolov10m_onnx_coco.py",
        "--onnx-path",
        str(DEMO_MODEL),
        "--data-root",
        str(MINI),
        "--providers",
        azure,
        "CPUExecutionProvider",
        "--require-accelerator",
        "--max-images",
        "2",
        "--warmup-runs",
        "0",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert out.exists()


def test_validate_gpu_rows_require_the_accelerator_only(tmp_path) -> None:
    from common.report import validate as V

    model = V.ModelInfo("m", DEMO_MODEL, "baseline", "fp32", "0" * 64, [])
    cfg = V.RunConfig(root=tmp_path)

    def job_of(key: str) -> V.WorkerJob:
        (step,), _ = V.plan_steps(cfg, V.REGISTRY[key], model, tmp_path / key)
        assert step.cmd[-2:] == ["_worker", str(tmp_path / key / "job.json")]
        return V.WorkerJob.from_dict(json.loads((tmp_path / key / "job.json").read_text()))

    for key in ("ort-cuda", "ort-trt-ep", "ort-rtx-ep"):
        assert job_of(key).require_accelerator, key
    assert not job_of("ort-cpu").require_accelerator
