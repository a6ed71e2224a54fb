"""Every shell script of the repository is shellcheck-clean (the extern/ build script has its own test)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import REPO

SCRIPTS = [*sorted(str(p.relative_to(REPO)) for p in (REPO / "scripts").rglob("*.sh")), ".ci/run"]


def test_the_list_holds_the_dev_scripts() -> None:
    assert {"scripts/dev/venv.sh", "scripts/dev/bench-batch1.sh", ".ci/run"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_clean(script: str) -> None:
    sc = shutil.which("shellcheck")
    if sc is None:
        pytest.skip("shellcheck not on PATH (apt-get install -y shellcheck)")
    proc = subprocess.run([sc, "-x", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
