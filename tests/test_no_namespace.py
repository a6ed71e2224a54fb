"""Options are parsed once at the CLI edge: no library function takes an argparse ``Namespace``.

CLI modules (allowed to read a parsed command line): every ``common/**/cli.py`` and the scripts. Elsewhere in
``common/`` no parameter is annotated ``Namespace`` and no function reads attributes of a parameter called
``args`` / ``namespace`` (argparse ``Action.__call__`` excepted: it is argparse's own hook).
"""

from __future__ import annotations

import ast
from pathlib import Path

COMMON = Path(__file__).resolve().parents[1] / "scripts" / "cv-models" / "common"
ARG_NAMES = {"args", "namespace", "ns"}


def library_modules() -> list[Path]:
    return sorted(p for p in COMMON.rglob("*.py") if p.name != "cli.py")


def namespace_uses(source: str) -> list[str]:
    """``line: function(param)`` for each function taking or reading a parsed command line."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name == "__call__":
            continue
        params = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        for p in params:
            note = ast.unparse(p.annotation) if p.annotation is not None else ""
            read = p.arg in ARG_NAMES and any(
                isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == p.arg
                for n in ast.walk(fn)
            )
            if "Namespace" in note or read:
                found.append(f"{fn.lineno}: {fn.name}({p.arg})")
    return found


def test_no_library_function_takes_a_namespace() -> None:
    bad = {str(p.relative_to(COMMON)): u for p in library_modules() if (u := namespace_uses(p.read_text()))}
    assert not bad, f"library functions taking an argparse Namespace (move to a cli.py): {bad}"


def test_the_scan_finds_a_namespace() -> None:
    src = "import argparse\ndef f(args: argparse.Namespace): pass\ndef g(args):\n    return args.x\n"
    assert namespace_uses(src) == ["2: f(args)", "3: g(args)"]
    assert namespace_uses("def h(args: list):\n    args.append(1)\n") == ["1: h(args)"]
