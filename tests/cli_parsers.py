"""The argparse parser of each CLI under scripts/, taken without running the CLI.

A script either has ``build_parser()`` or builds its parser inside ``main``; for the latter, ``main`` is
called with ``parse_args`` replaced by a function that hands the parser back and stops, so nothing past
argument parsing ever runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from conftest import REPO


def is_argparse_cli(rel: str) -> bool:
    """Whether the script builds an argparse parser. The others (the probes the doctor runs in a child
    interpreter) are never imported and run here: their ``main`` does the work at once."""
    text = (REPO / rel).read_text()
    return "make_parser(" in text or "ArgumentParser(" in text


def cli_scripts() -> list[str]:
    """Every argparse CLI under scripts/ (repo-relative paths)."""
    found = sorted((REPO / "scripts" / "cv-models").glob("*.py")) + sorted((REPO / "scripts" / "trt").glob("*.py"))
    return [rel for rel in (str(p.relative_to(REPO)) for p in found) if is_argparse_cli(rel)]


def load_script(rel: str) -> ModuleType:
    path = REPO / rel
    name = "_cli_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, rel
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _Caught(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser caught")
        self.parser = parser


def parser_of(rel: str) -> argparse.ArgumentParser:
    """The parser of the script at ``rel`` (repo-relative)."""
    module = load_script(rel)
    build = getattr(module, "build_parser", None)
    if callable(build):
        return build()

    def catch(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Caught(self)

    saved = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_args = catch  # type: ignore[method-assign]
    argparse.ArgumentParser.parse_known_args = catch  # type: ignore[method-assign]
    try:
        module.main([])
    except _Caught as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = saved
    raise AssertionError(f"{rel}: main() returned without parsing arguments")


def script_of_task(task_cmd: str) -> tuple[str, list[str]]:
    """``python scripts/x.py --fixed arg`` (a Pixi task's command) -> (script path, fixed arguments)."""
    words = task_cmd.split()
    i = next(i for i, w in enumerate(words) if w.endswith(".py"))
    return words[i], words[i + 1 :]


def action_of(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return parser._option_string_actions.get(flag)


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        params = {**vars(action), "prog": parser.prog}
        params = {k: (v.__name__ if callable(v) and hasattr(v, "__name__") else v) for k, v in params.items()}
        text = text % params
    return text


def repo_path(rel: str) -> Path:
    return REPO / rel
