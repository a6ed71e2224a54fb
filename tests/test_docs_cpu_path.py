"""The runbook's CPU-only pip path runs as written, up to the TensorRT-RTX engine build.

The code block after "The CPU path on the bundled model" is run line by line in a scratch folder that
holds links to the repository's scripts, models and datasets, so every `tmp/...` output lands there.
`bash scripts/dev/venv.sh python` becomes this interpreter and `... python-quant` the ModelOpt one
(YOLO_QUANT_PYTHON, as in test_quant_flow.py): the venv set-up itself is not repeated here.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_docs_commands import code_lines

RUNBOOK = REPO / "models" / "cv-models" / "yolov10m" / "README.md"
MARKER = "The CPU path on the bundled model"
QUANT_PY = Path(os.environ.get("YOLO_QUANT_PYTHON", REPO / ".venv-quant" / "bin" / "python"))


def cpu_path_commands() -> list[list[str]]:
    text = RUNBOOK.read_text()
    assert MARKER in text, f"the runbook lost its section '{MARKER}'"
    block = text[text.index(MARKER) :]
    start = block.index("```")
    end = block.index("```", start + 3) + 3
    return [shlex.split(line) for line in code_lines(block[start:end])]


def test_cpu_path_uses_only_the_venv_jobs_and_ends_with_the_rtx_build() -> None:
    cmds = cpu_path_commands()
    assert all(c[:2] == ["bash", "scripts/dev/venv.sh"] and c[2] in ("python", "python-quant") for c in cmds)
    assert cmds[-1][3].endswith("build_trt_engine.py") and "tensorrt-rtx" in cmds[-1]


@pytest.mark.slow
def test_cpu_path_runs_as_written(tmp_path: Path) -> None:
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt_rtx (the trt-rtx extra) is not installed")
    if not QUANT_PY.is_file():
        if os.environ.get("YOLO_REQUIRE_QUANT") == "1":
            pytest.fail(f"quant venv not found at {QUANT_PY}")
        pytest.skip(f"quant venv not found at {QUANT_PY}")
    for name in ("scripts", "models", "datasets"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "scripts" / "cv-models"), os.environ.get("PYTHONPATH", "")]),
    }
    python = {"python": sys.executable, "python-quant": str(QUANT_PY)}
    for cmd in cpu_path_commands():
        argv = [python[cmd[2]], *cmd[3:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}"
    engine = tmp_path / "tmp" / "build-engine" / "trt" / "yolov10n-synth.fp16.tensorrt-rtx.engine"
    assert engine.is_file() and engine.stat().st_size > 0
    assert (
        "built in" in proc.stdout and ": tmp/build-engine/trt/yolov10n-synth.fp16.tensorrt-rtx.engine (" in proc.stdout
    )
