"""No function or method in scripts/ is longer than 80 lines (issue 13, finding 4), except those listed here."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 80

# qualified-name prefixes (file relative to scripts/ : function or Class.) allowed to be longer, and why
ALLOWED: dict[str, str] = {}  # none today


def long_units(root: Path) -> list[tuple[str, int]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()

        def walk(node: ast.AST, qual: str, rel: str = rel) -> None:
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{qual}{ch.name}"
                    if not isinstance(ch, ast.ClassDef) and ch.end_lineno - ch.lineno + 1 > MAX_LINES:
                        found.append((f"{rel}:{name}", ch.end_lineno - ch.lineno + 1))
                    walk(ch, f"{name}.")
                else:
                    walk(ch, qual)

        walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"class K:\n    def f(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n")
    assert long_units(tmp_path) == [("m.py:K.f", MAX_LINES + 1)]


def test_no_long_functions_in_scripts():
    too_long = [(name, n) for name, n in long_units(REPO / "scripts") if not name.startswith(tuple(ALLOWED))]
    assert not too_long, f"split these into named steps (max {MAX_LINES} lines): {too_long}"
