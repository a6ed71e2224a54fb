"""Every command the README, the runbook and the performance page show must at least answer --help.

Code blocks of the docs are scanned for `pixi run [-e ENV] TASK ...` and `python scripts/... .py`
lines. Pixi tasks are resolved through pyproject.toml to the script they run; each script is then
run with --help (plus the fixed arguments of its task) and must exit 0 and print a usage line.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCS = [
    REPO / "README.md",
    REPO / "models" / "cv-models" / "yolov10m" / "README.md",
    REPO / "docs" / "performance.md",
]


VENV_SH = "scripts/dev/venv.sh"
VENV_PYTHON_JOBS = ("python", "python-gpu", "python-quant")
VENV_JOBS = ("demo", "test", "lint", *VENV_PYTHON_JOBS)


def code_lines(text: str) -> list[str]:
    lines, inside, buf = [], False, ""
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        buf += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if buf.strip():
                lines.append(buf.strip())
            buf = ""
    return lines


def pixi_tasks() -> dict[str, str]:
    pixi = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pixi"]
    tables = [pixi.get("tasks", {})] + [f.get("tasks", {}) for f in pixi.get("feature", {}).values()]
    tasks = {}
    for table in tables:
        for name, spec in table.items():
            tasks[name] = spec if isinstance(spec, str) else spec["cmd"]
    return tasks


def doc_invocations() -> list[tuple[str, str, list[str], list[str]]]:
    """(doc: line, command that runs the script, the script's arguments on that line) of every command line."""
    tasks = pixi_tasks()
    out = []
    for doc in DOCS:
        for line in code_lines(doc.read_text()):
            try:
                words = shlex.split(line)
            except ValueError:  # prose or a shell construct, not a command we run
                continue
            if not words:
                continue
            if words[:2] == ["pixi", "run"]:
                rest = words[2:]
                if rest[:1] == ["-e"]:
                    rest = rest[2:]
                task = rest[0]
                if task in ("python", "python3"):  # `pixi run -e X python scripts/...py`
                    cmd, args = ["python", rest[1]], rest[2:]
                else:
                    assert task in tasks, f"{doc.name}: `{line}` names task {task!r}, not in pyproject.toml"
                    if task in ("test", "lint", "demo"):
                        continue
                    cmd, args = shlex.split(tasks[task]), rest[1:]
            elif words[0] in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
                cmd, args = ["python", words[1]], words[2:]
            elif words[:2] == ["bash", VENV_SH] and len(words) > 3 and words[2] in VENV_PYTHON_JOBS:
                cmd, args = ["python", words[3]], words[4:]  # `bash scripts/dev/venv.sh python[-gpu|-quant] ...py`
            elif words[:2] == ["bash", VENV_SH]:
                assert words[2:3] and words[2] in VENV_JOBS, f"{doc.name}: `{line}` names no job of {VENV_SH}"
                continue
            else:
                continue
            if next((w for w in cmd if w.endswith((".py", ".sh"))), None) is None:
                continue
            out.append((f"{doc.relative_to(REPO)}: {line}", " ".join(cmd), cmd, args))
    return out


def doc_commands() -> list[tuple[str, str]]:
    """(doc line, command that runs its script with --help), one per command."""
    found: dict[str, str] = {}
    for where, key, _cmd, _args in doc_invocations():
        found.setdefault(key, where)
    return [(line, key) for key, line in found.items()]


COMMANDS = doc_commands()


def test_docs_name_commands() -> None:
    scripts = {c.split()[1] for _, c in COMMANDS}
    for needed in (
        "scripts/cv-models/eval_yolov10m_onnx_coco.py",
        "scripts/cv-models/build_trt_engine.py",
        "scripts/cv-models/eval_yolov10m_trt_coco.py",
        "scripts/trt/trt_doctor.py",
        "scripts/cv-models/quantize_onnx.py",
        "scripts/cv-models/validate_e2e.py",
    ):
        assert needed in scripts, f"the docs never show {needed}"


@pytest.mark.parametrize(("line", "cmd"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_answers_help(line: str, cmd: str) -> None:
    words = shlex.split(cmd)
    argv = [sys.executable, *words[1:]] if words[0] == "python" else ["bash", *words[1:]]
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, f"`{line}`: {cmd} --help failed:\n{proc.stderr[-2000:]}"
    assert re.search(r"usage", proc.stdout + proc.stderr, re.IGNORECASE), f"{cmd} --help printed no usage"


def test_venv_jobs_the_docs_may_name_are_the_scripts_jobs() -> None:
    text = (REPO / VENV_SH).read_text()
    jobs = set(re.findall(r"^  ([a-z][\w-]*)\)", text, re.MULTILINE))
    assert jobs == set(VENV_JOBS), f"{VENV_SH} has jobs {sorted(jobs)}, the docs test knows {sorted(VENV_JOBS)}"


PY_INVOCATIONS = [(w, cmd, args) for w, _key, cmd, args in doc_invocations() if cmd[1].endswith(".py")]


@pytest.mark.parametrize(("where", "cmd", "args"), PY_INVOCATIONS, ids=[w for w, _, _ in PY_INVOCATIONS])
def test_documented_command_parses(where: str, cmd: list[str], args: list[str]) -> None:
    """Every flag a documented command passes exists, and its value is one the parser takes."""
    from cli_parsers import is_argparse_cli, parser_of

    script, fixed = cmd[1], cmd[2:]
    assert is_argparse_cli(script), f"`{where}`: {script} is not an argparse CLI"
    parser = parser_of(script)
    try:
        parser.parse_args([*fixed, *args])
    except SystemExit as exc:
        pytest.fail(f"`{where}`: the parser of {script} refuses it (exit {exc.code})")
