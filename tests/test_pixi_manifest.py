"""The [tool.pixi] table of pyproject.toml against Pixi's published schema (Pixi can't run here),
and the way Pixi will read it: features from the extras, environments, solve-groups, and which
environment each `pixi run [-e ENV] TASK` of the docs lands in."""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO
from test_docs_commands import DOCS, code_lines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCHEMA = FIXTURES.parent / "schemas" / "pixi-manifest-partial-v0.77.0.json"
PRODUCTION = ("default", "rtx5090", "rtx5090-quant", "quant")
TEST_TOOLS = {"pytest", "ruff", "jsonschema"}


def manifest(path: Path = REPO / "pyproject.toml") -> dict:
    return tomllib.loads(path.read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


class Workspace:
    """What Pixi makes of the manifest: features (the extras become features of the same name,
    merged with [tool.pixi.feature.<name>]), environments and the tasks each one has."""

    def __init__(self, doc: dict) -> None:
        self.doc, self.pixi = doc, doc["tool"]["pixi"]
        extras = doc["project"].get("optional-dependencies", {})
        groups = doc.get("dependency-groups", {})
        self.features: dict[str, dict] = {name: {"pypi": [_name(r) for r in reqs]} for name, reqs in extras.items()}
        for name, reqs in groups.items():
            self.features.setdefault(name, {"pypi": []})["pypi"] += [_name(r) for r in reqs if isinstance(r, str)]
        for name, table in self.pixi.get("feature", {}).items():
            feat = self.features.setdefault(name, {"pypi": []})
            feat["pypi"] += [_name(r) for r in table.get("pypi-dependencies", {})]
            feat["tasks"] = table.get("tasks", {})
        self.default_tasks = self.pixi.get("tasks", {})
        self.environments = {
            name: env if isinstance(env, dict) else {"features": env} for name, env in self.pixi["environments"].items()
        }

    def tasks_of(self, env: str) -> dict[str, object]:
        spec = self.environments[env]
        tasks = {} if spec.get("no-default-feature") else dict(self.default_tasks)
        for feat in spec.get("features", []):
            tasks.update(self.features[feat].get("tasks", {}))
        return tasks

    def packages_of(self, env: str) -> set[str]:
        spec = self.environments[env]
        base = [] if spec.get("no-default-feature") else [_name(r) for r in self.doc["project"]["dependencies"]]
        return set(base) | {p for f in spec.get("features", []) for p in self.features[f]["pypi"]}

    def resolve(self, task: str, env: str | None = None) -> str:
        """The environment `pixi run [-e env] task` runs in, as Pixi picks it; AssertionError where
        Pixi would stop (unknown environment, task not there, ambiguous)."""
        if env is not None:
            assert env in self.environments, f"no environment {env!r}"
            assert task in self.tasks_of(env), f"environment {env!r} has no task {task!r}"
            return env
        if task in self.tasks_of("default"):
            return "default"
        having = [e for e in self.environments if task in self.tasks_of(e)]
        assert having, f"no environment has task {task!r}"
        specs = {json.dumps(self.tasks_of(e)[task], sort_keys=True) for e in having}
        assert len(specs) == 1, f"task {task!r} differs between environments {having}"
        spec = self.tasks_of(having[0])[task]
        default_env = spec.get("default-environment") if isinstance(spec, dict) else None
        if default_env is not None:
            assert default_env in having, f"{task}: default-environment {default_env!r} lacks the task"
            return default_env
        assert len(having) == 1, f"the task {task!r} is ambiguous: environments {having} have it"
        return having[0]


@pytest.fixture(scope="module")
def ws() -> Workspace:
    return Workspace(manifest())


def test_tool_pixi_matches_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"schema not present: {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest()["tool"]["pixi"]), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_every_environment_is_made_of_known_features(ws) -> None:
    for name, env in ws.environments.items():
        unknown = [f for f in env.get("features", []) if f not in ws.features]
        assert not unknown, f"environment {name}: unknown feature(s) {unknown}"


def test_each_dependency_is_stated_once() -> None:
    doc = manifest()
    pixi = doc["tool"]["pixi"]
    names = [_name(r) for r in doc["project"]["dependencies"]]
    names += [_name(r) for reqs in doc["project"].get("optional-dependencies", {}).values() for r in reqs]
    names += [_name(r) for reqs in doc.get("dependency-groups", {}).values() for r in reqs if isinstance(r, str)]
    names += [_name(n) for n in pixi.get("pypi-dependencies", {}) if n != doc["project"]["name"]]
    for feat in pixi.get("feature", {}).values():
        names += [_name(n) for n in feat.get("pypi-dependencies", {})]
    twice = {n: c for n, c in Counter(names).items() if c > 1}
    # cuda-python is the one name in two extras, with different pins on purpose: gpu (12.x, the
    # rtx5090 containers' drivers) and trt-rtx (13.x, what tensorrt-rtx-cu13 is built against).
    assert twice == {"cuda-python": 2}, twice
    self_dep = pixi["pypi-dependencies"][doc["project"]["name"]]
    assert "extras" not in self_dep, "extras on the project itself would put them in every environment"


def test_environments_solve_groups_and_onnxruntime(ws) -> None:
    envs = ws.environments
    assert {"default", "rtx5090", "rtx5090-quant", "quant", "test"} <= set(envs)
    groups = Counter(e["solve-group"] for e in envs.values() if "solve-group" in e)
    assert all(n >= 2 for n in groups.values()), f"single-member solve-groups: {groups}"
    assert envs["rtx5090"]["solve-group"] == envs["rtx5090-quant"]["solve-group"]
    assert envs["test"]["solve-group"] == envs["default"]["solve-group"]
    features = {name: tuple(sorted(e.get("features", []))) for name, e in envs.items()}
    assert len(set(features.values())) == len(features), f"two environments are the same: {features}"
    for name in envs:
        pkgs = ws.packages_of(name)
        assert not {"onnxruntime", "onnxruntime-gpu"} <= pkgs, f"{name}: onnxruntime and onnxruntime-gpu together"
    assert {"onnxruntime-gpu", "cuda-python"} <= ws.packages_of("rtx5090")


def test_test_tools_stay_out_of_production(ws) -> None:
    for name in PRODUCTION:
        assert not TEST_TOOLS & ws.packages_of(name), f"{name} holds {TEST_TOOLS & ws.packages_of(name)}"
    assert TEST_TOOLS <= ws.packages_of("test")


def doc_runs() -> list[tuple[str, str | None, str]]:
    """(doc line, -e ENV or None, TASK) of every `pixi run` in the README and the runbook."""
    runs = []
    for doc in DOCS:
        for line in code_lines(doc.read_text()):
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if words[:2] != ["pixi", "run"]:
                continue
            rest, env = words[2:], None
            if rest[:1] in (["-e"], ["--environment"]):
                env, rest = rest[1], rest[2:]
            if rest and rest[0] not in ("python", "python3"):
                runs.append((line, env, rest[0]))
    for line in (REPO / "README.md").read_text().splitlines():  # the two commands of the README's table
        for env, task in re.findall(r"`pixi run (?:-e (\S+) )?([\w-]+)`", line):
            runs.append((f"README: pixi run {task}", env or None, task))
    return runs


# The users' design card runs these two; the second without -e.
DESIGN_CARD = [("design card", "rtx5090", "build-engine"), ("design card", None, "eval-trt")]


@pytest.mark.parametrize(("line", "env", "task"), doc_runs() + DESIGN_CARD)
def test_every_documented_pixi_run_resolves(ws, line, env, task) -> None:
    ws.resolve(task, env)


def test_tensorrt_tasks_land_in_rtx5090_and_test_in_test(ws) -> None:
    for task in ("build-engine", "infer-trt", "eval-trt", "setup-tensorrt"):
        assert ws.resolve(task) == "rtx5090"
    assert ws.resolve("test") == ws.resolve("lint") == "test"
    assert ws.resolve("quantize") == "quant"
    assert ws.resolve("eval-onnx") == ws.resolve("build-engine-rtx") == "default"


def test_resolution_finds_the_ambiguity_pixi_reports(ws, tmp_path) -> None:
    """The old manifest: eval-trt in the rtx5090 feature, which two environments share."""
    doc = manifest()
    for task in doc["tool"]["pixi"]["feature"]["rtx5090"]["tasks"].values():
        task.pop("default-environment", None)
    old = Workspace(doc)
    with pytest.raises(AssertionError, match="ambiguous"):
        old.resolve("eval-trt")
    assert old.resolve("eval-trt", "rtx5090") == "rtx5090"


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
