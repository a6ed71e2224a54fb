"""Docs, --help texts and docstrings describe behaviour for users, not the toolkit's development history.

Scanned: the README, the runbook and the performance page (CHANGELOG.md is where history goes), the
--help of every CLI under scripts/, and every module, class and function docstring under scripts/. They
must not name issues or leases, speak of "the users'" or of hardware "we could borrow", or tell how things
used to be. --help texts and docstrings also carry no measured figures and no GPU models: those belong on
docs/performance.md and in the README's "What runs where".
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from cli_parsers import cli_scripts, parser_of
from conftest import REPO

HISTORY = [
    r"\bissues?\s*#?\d+",
    r"\bissue-\d+",
    r"\bleases?\b",
    r"\bleased\b",
    r"\bthe users'",
    r"\bwe could borrow\b",
    r"\bborrowed\b",
    r"\bused to (land|be|run|take)\b",
    r"\bnow defaults\b",
    r"\bin an earlier (run|lease)\b",
    r"\bbefore the move\b",
    r"\bwhere this toolkit is developed\b",
]
# Only in --help and docstrings (the README says once what ran where; the performance page holds figures).
NOT_IN_CODE_TEXT = [
    r"\bH[12]00\b",
    r"\b(was|were|been|not) measured\b",
    r"\bmeasured (faster|slower|on (the|an?) )",
    r"\b\d+\.\d+\s?[x×](?![\w\d])",  # a ratio such as 1.8x
    r"\bmeasurements/",
]
DOCS = [REPO / "README.md", REPO / "models" / "cv-models" / "yolov10m" / "README.md", REPO / "docs" / "performance.md"]
RUNBOOK = REPO / "models" / "cv-models" / "yolov10m" / "README.md"


def hits(text: str, patterns: list[str]) -> list[str]:
    found = []
    for pattern in patterns:
        for m in re.finditer(pattern, text, re.IGNORECASE):
            start = text.rfind("\n", 0, m.start()) + 1
            end = text.find("\n", m.end())
            found.append(f"{m.group(0)!r} in: {text[start : end if end >= 0 else None].strip()[:160]}")
    return found


def docstrings(path: Path) -> list[tuple[str, str]]:
    """(where, docstring) of the module and of every class and function in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 1)}"
                out.append((where, doc))
    return out


PY_FILES = sorted((REPO / "scripts").rglob("*.py"))


@pytest.mark.parametrize("doc", DOCS, ids=[d.name if d.name != "README.md" else str(d.parent.name) for d in DOCS])
def test_docs_carry_no_history(doc: Path) -> None:
    patterns = HISTORY + ([r"\bH[12]00\b"] if doc == RUNBOOK else [])
    found = hits(doc.read_text(), patterns)
    assert not found, f"{doc.relative_to(REPO)}:\n" + "\n".join(found)


def test_changelog_exists_and_is_dated_newest_first() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    dates = re.findall(r"^## (\d{4}-\d{2}-\d{2})", text, re.MULTILINE)
    assert dates, "CHANGELOG.md has no dated sections (## YYYY-MM-DD)"
    assert dates == sorted(dates, reverse=True), f"CHANGELOG.md sections are not newest first: {dates}"


@pytest.mark.parametrize("script", cli_scripts())
def test_help_carries_no_history_or_figures(script: str) -> None:
    found = hits(parser_of(script).format_help(), HISTORY + NOT_IN_CODE_TEXT)
    assert not found, f"{script} --help:\n" + "\n".join(found)


@pytest.mark.parametrize("script", cli_scripts())
def test_help_examples_use_the_runbook_paths(script: str) -> None:
    """Models under models/cv-models/ or tmp/ (the runbook's), engines under tmp/, calibration on train2017."""
    epilog = parser_of(script).epilog or ""
    for flag, value in re.findall(r"(--onnx-path|--candidate|--engine-path)\s+(\S+)", epilog):
        assert value.startswith(("models/cv-models/", "tmp/")), f"{script} --help example: {flag} {value}"
    if "make_calib_npy" in script:
        dirs = re.findall(r"--images-dir\s+(\S+)", epilog)
        assert dirs and all("train" in d for d in dirs), f"{script} --help calibrates on {dirs}, not a train split"


def test_docstrings_carry_no_history_or_figures() -> None:
    found = []
    for path in PY_FILES:
        for where, doc in docstrings(path):
            found += [f"{where}: {h}" for h in hits(doc, HISTORY + NOT_IN_CODE_TEXT)]
    assert not found, "\n".join(found)


def test_the_scan_finds_what_it_looks_for() -> None:
    assert hits("Timing and GPU work (issue 14).", HISTORY)
    assert hits("measured in an earlier lease", HISTORY)
    assert hits("the users' evaluator flags", HISTORY)
    assert hits("the H100/H200 we could borrow", HISTORY)
    assert hits("on the H100, 3 lanes ran yolov10m at 1.8x one lane", NOT_IN_CODE_TEXT)
    assert hits("overlap measured faster there", NOT_IN_CODE_TEXT)
    assert hits("default 2, not measured on a real engine", NOT_IN_CODE_TEXT)
    assert hits("warnings: rows measured on different GPUs", NOT_IN_CODE_TEXT) == []
    assert hits("``HostLease`` keeps a pinned buffer", HISTORY) == []
    assert hits("input [1,3,640,640] or 1x3x640x640", NOT_IN_CODE_TEXT) == []
    assert hits("TensorRT releases 10.7.0 and 10.7.0.post1", HISTORY) == []


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 120, f"README.md has {len(lines)} lines; keep it to 120 (details go to the runbook)"


def test_models_hold_no_run_scripts_or_logs() -> None:
    """models/ holds models and their runbook, not the scripts, logs and commit stamps of individual runs."""
    found = [
        str(p.relative_to(REPO))
        for p in (REPO / "models").rglob("*")
        if p.is_file() and (p.suffix in (".sh", ".log") or p.name.startswith("COMMIT"))
    ]
    assert not found, f"run scripts or logs under models/: {found}"
