"""No script imports another script, and no library loads a script by its path: CLIs are shells over common/."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT_DIRS = (REPO / "scripts" / "cv-models", REPO / "scripts" / "trt")
SCRIPTS = {p.stem for d in SCRIPT_DIRS for p in d.glob("*.py")}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_check_sees_a_script_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom eval_yolov10m_onnx_coco import main\n")
    assert imported_modules(bad) & SCRIPTS == {"eval_yolov10m_onnx_coco"}


def test_no_script_imports_a_script():
    found = {
        f"{p.relative_to(REPO)} imports {sorted(imported_modules(p) & SCRIPTS)}"
        for d in SCRIPT_DIRS
        for p in d.glob("*.py")
        if imported_modules(p) & SCRIPTS
    }
    assert not found


def test_no_library_loads_a_module_by_path():
    common = REPO / "scripts" / "cv-models" / "common"
    users = [p.relative_to(REPO) for p in common.rglob("*.py") if "spec_from_file_location" in p.read_text()]
    assert not users
