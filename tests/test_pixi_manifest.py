"""The [tool.pixi] table of pyproject.toml against Pixi's published schema (Pixi can't run here)."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCHEMA = REPO.parent / "shared" / "schemas" / "pixi-manifest-partial-v0.77.0.json"


def manifest() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_tool_pixi_matches_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"schema not present: {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest()["tool"]["pixi"]), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_environments_and_tasks_exist() -> None:
    pixi = manifest()["tool"]["pixi"]
    assert {"default", "rtx5090"} <= set(pixi["environments"])
    assert {"demo", "test", "eval-onnx"} <= set(pixi["tasks"])
    rtx = pixi["feature"]["rtx5090"]
    assert "onnxruntime-gpu" in rtx["pypi-dependencies"] and "cuda-python" in rtx["pypi-dependencies"]
    # onnxruntime (CPU) and onnxruntime-gpu must never share an environment
    for name, env in pixi["environments"].items():
        features = env["features"] if isinstance(env, dict) else env
        deps = {d for f in features for d in pixi["feature"].get(f, {}).get("pypi-dependencies", {})}
        assert not {"onnxruntime", "onnxruntime-gpu"} <= deps, name


def test_activation_script_prepends_existing_dirs_only(tmp_path) -> None:
    import subprocess

    script = REPO / "scripts" / "env" / "activate-tensorrt-paths.sh"
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/keep/me"}
    out = subprocess.run(
        ["bash", "-c", f'source "{script}"; echo "$LD_LIBRARY_PATH"; echo "$PATH"'],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.splitlines()
    assert out[0].endswith("/keep/me") and "::" not in out[0] and not out[0].startswith(":")
    assert out[1].endswith("/usr/bin:/bin")
    unset = subprocess.run(
        ["bash", "-c", f'source "{script}"; echo "[$LD_LIBRARY_PATH]"'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert "::" not in unset and not unset.startswith("[:") and not unset.strip().endswith(":]")
