"""The defaults the runbook and the performance page quote are the parsers' defaults.

Every table whose first header cell is "`TASK` flag" and whose second is "default" is read: TASK is a
Pixi task (pyproject.toml says which script it runs), each row names flags in its first cell and their
default in its second. A default written as one code span (`` `10` ``) must equal the parser's default,
or, where the parser's default is None (worked out at run time), appear in the flag's --help as
"default X" / "default: X". A default written as "off" must be a flag that takes no value and is off by
default. Anything else is prose (a default worked out at run time) and is not compared.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from cli_parsers import action_of, help_text, parser_of, script_of_task
from conftest import REPO
from test_docs_commands import pixi_tasks

DOCS = [REPO / "models" / "cv-models" / "yolov10m" / "README.md", REPO / "docs" / "performance.md"]
HEADER = re.compile(r"^\|\s*`([\w-]+)` flag\s*\|\s*default\s*\|")
CODE = re.compile(r"^`([^`]+)`$")


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def quoted_defaults(doc: Path) -> list[tuple[str, str, str, str]]:
    """(where, task, flag, default cell) of every row of every `TASK` flag | default table in ``doc``."""
    rows, task = [], None
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        m = HEADER.match(line)
        if m:
            task = m.group(1)
            continue
        if task and line.startswith("|"):
            first, default = cells(line)[:2]
            if set(first) <= set("-: "):  # the |---|---| row
                continue
            for flag in re.findall(r"`(--[\w-]+)`", first):
                rows.append((f"{doc.relative_to(REPO)}:{n}", task, flag, default))
        else:
            task = None
    return rows


ROWS = [row for doc in DOCS for row in quoted_defaults(doc)]


def same(documented: str, value: object) -> bool:
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return False
    try:
        return float(documented) == float(str(value))
    except ValueError:
        return documented == str(value)


def check(parser: argparse.ArgumentParser, flag: str, cell: str) -> str | None:
    """What is wrong with documenting ``cell`` as the default of ``flag`` (None: nothing)."""
    action = action_of(parser, flag)
    if action is None:
        return f"{flag} is not a flag of this CLI"
    if cell == "off":
        if action.nargs != 0 or action.default not in (False, None):
            return f"{flag}: documented 'off', but it takes a value or is on by default ({action.default!r})"
        return None
    m = CODE.match(cell)
    if not m:
        return None  # prose: a default worked out at run time
    documented = m.group(1)
    if action.default is None or action.default is argparse.SUPPRESS:
        text = help_text(parser, action)
        if not re.search(r"default:?\s+" + re.escape(documented) + r"(?![\w/.<-])", text):
            return f"{flag}: documented {documented!r}; the parser's default is None and --help says {text!r}"
        return None
    if not same(documented, action.default):
        return f"{flag}: documented {documented!r}, the parser's default is {action.default!r}"
    return None


def test_docs_quote_defaults() -> None:
    tasks = {task for _, task, _, _ in ROWS}
    assert {"eval-onnx", "eval-trt", "build-engine", "bench-eval", "quantize", "calib"} <= tasks, sorted(tasks)


@pytest.mark.parametrize(("where", "task", "flag", "cell"), ROWS, ids=[f"{r[1]} {r[2]}" for r in ROWS])
def test_quoted_default_is_the_parsers(where: str, task: str, flag: str, cell: str) -> None:
    tasks = pixi_tasks()
    assert task in tasks, f"{where}: {task!r} is not a Pixi task"
    script, _fixed = script_of_task(tasks[task])
    problem = check(parser_of(script), flag, cell)
    assert problem is None, f"{where} ({task}): {problem}"


def test_the_check_catches_a_wrong_default() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--size", type=int, default=None, help="images (default 100)")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--eps", nargs="+", default=["a", "b"])
    assert check(parser, "--runs", "`10`") is None
    assert check(parser, "--runs", "`3`") is not None
    assert check(parser, "--mode", "`auto`") is None
    assert check(parser, "--mode", "`serial`") is not None
    assert check(parser, "--size", "`100`") is None
    assert check(parser, "--size", "`10`") is not None
    assert check(parser, "--fast", "off") is None
    assert check(parser, "--runs", "off") is not None
    assert check(parser, "--eps", "`a b`") is None
    assert check(parser, "--nope", "`1`") is not None
    assert check(parser, "--runs", "one per core") is None  # prose is not compared
