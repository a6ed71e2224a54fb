"""The mission core reads on its own: no core module imports the throughput wing (``common.throughput``).

Core: every module of ``common`` outside ``common/throughput/``. The CLI edge (``EDGE``) turns flags into the
wing's objects, so it may import the wing, but only inside the function that needs it (never at import time).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = REPO / "scripts" / "cv-models" / "common"
WING = "common.throughput"
EDGE = {"common.eval.cli"}


def module_name(path: Path) -> str:
    rel = path.relative_to(COMMON.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules(root: Path = COMMON) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if (root / "throughput") not in p.parents)


def wing_imports(path: Path, package: str) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) of every import of the wing in ``path``."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                pkg = package.split(".")
                base = ".".join(pkg[: len(pkg) - node.level] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name == WING or name.startswith(WING + "."):
                found.append((node.lineno, name, id(node) in top))
                break
    return found


def test_the_check_sees_a_wing_import(tmp_path):
    pkg = tmp_path / "common" / "data"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("def f():\n    from common.throughput import lanes\n")
    (pkg / "n.py").write_text("from ..throughput.lanes import Lane\n")
    assert wing_imports(pkg / "m.py", "common.data.m") == [(2, "common.throughput", False)]
    assert wing_imports(pkg / "n.py", "common.data.n") == [(1, "common.throughput.lanes", True)]


def test_no_core_module_imports_the_wing():
    bad = []
    for path in core_modules():
        name = module_name(path)
        for line, imported, top_level in wing_imports(path, name):
            if name in EDGE and not top_level:
                continue  # the CLI edge builds the wing's objects when a flag asks for them
            bad.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert not bad, "the mission core must not import the throughput wing:\n" + "\n".join(bad)


def test_importing_the_core_loads_no_wing_module():
    names = [module_name(p) for p in core_modules()]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}:\n"
        "    importlib.import_module(n)\n"
        f"print(sorted(m for m in sys.modules if m == {WING!r} or m.startswith({WING + '.'!r})))\n"
    )
    env_path = f"{REPO / 'scripts' / 'cv-models'}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": env_path, "PATH": ""}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"importing the core loaded wing modules: {out.stdout}"


def test_generic_things_live_with_the_protocols():
    from common.eval import protocols

    for name in ("Backend", "TensorSpec", "max_batch_of", "U8Batch", "GpuDetections", "LoaderPlan"):
        assert getattr(protocols, name).__module__ == "common.eval.protocols", name
