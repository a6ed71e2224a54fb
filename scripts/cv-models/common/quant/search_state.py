"""The resumable state of a precision search: every finished evaluation, kept in the run folder.

The search is deterministic given its evaluations, so resuming replays it from the start and takes
each evaluation already done from here instead of running it again. ``state.json`` holds what each
evaluation found (graph facts, timings) and ``evals/<key>.npz`` its detections, from which the COCO
stats and the per-image matches are recomputed. Both are written atomically after every evaluation.

The fingerprint names what the evaluations depend on (model, calibration data, mode, images,
runtime); resuming with a different one is refused. Budget, --max-evals and the like may change:
they steer the search, they do not change an evaluation.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.core.results import atomic_write_bytes, atomic_write_json

__all__ = ["STATE_FILE", "STATE_SCHEMA", "TOOL_RULES", "SearchState", "key_file", "saved_providers"]

STATE_FILE = "state.json"
STATE_SCHEMA = 1
# fingerprint entries that are this tool's own rules, not the user's inputs
TOOL_RULES = frozenset({"strip_rules"})


def key_file(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def saved_providers(folder: Path) -> list[str]:
    """The scoring providers of the search in ``folder`` (its fingerprint's); [] when it has none."""
    try:
        saved = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"--resume: {folder / STATE_FILE} is not readable ({exc})") from None
    return list(saved.get("fingerprint", {}).get("providers") or [])


class SearchState:
    """``get(key)`` / ``put(key, entry, rows)`` over state.json and evals/*.npz."""

    def __init__(
        self,
        folder: Path,
        fingerprint: dict[str, Any],
        entries: dict[str, Any] | None = None,
        prior: float = 0.0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.entries: dict[str, Any] = dict(entries or {})
        self.loaded = set(self.entries)
        self.prior_seconds = prior  # wall time of the earlier runs of this search (before --resume)
        self.meta: dict[str, Any] = dict(meta or {})  # e.g. the runtime that scored the evaluations
        self._started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Wall seconds of this search so far, the earlier runs of a resumed one included."""
        return self.prior_seconds + time.perf_counter() - self._started

    @classmethod
    def open(cls, folder: Path, fingerprint: dict[str, Any], resume: bool) -> SearchState:
        """A new state, or (``resume``) the one in ``folder`` after checking its fingerprint."""
        path = folder / STATE_FILE
        if not resume:
            if path.exists():
                raise UserError(f"--out {folder} holds a search already; pass --resume to continue it or a new --out")
            return cls(folder, fingerprint)
        if not path.is_file():
            raise UserError(f"--resume: no {STATE_FILE} in --out {folder}; start a new search without --resume")
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"--resume: {path} is not readable ({exc}); start a new search in another --out") from None
        if saved.get("schema") != STATE_SCHEMA:
            raise UserError(f"--resume: {path} has schema {saved.get('schema')}, this tool writes {STATE_SCHEMA}")
        old = saved.get("fingerprint", {})
        changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if changed and set(changed) <= TOOL_RULES:
            raise UserError(
                f"--resume: {folder} was searched by an earlier version of this tool ({', '.join(changed)} "
                "differ: its candidates were made another way); start the search again in a new --out"
            )
        if changed:
            raise UserError(
                f"--resume: {folder} was searched with other inputs ({', '.join(changed)} differ); "
                "rerun with the same model, calibration, mode and images, or start a new --out"
            )
        prior = float(saved.get("elapsed_seconds", 0.0))
        return cls(folder, fingerprint, saved.get("entries", {}), prior, saved.get("meta"))

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def rows(self, key: str) -> np.ndarray:
        path = self.folder / "evals" / f"{key_file(key)}.npz"
        try:
            with np.load(path) as data:
                return data["rows"]
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"--resume: {path} is missing or damaged ({exc}); start a new --out") from None

    def put(self, key: str, entry: dict[str, Any], rows: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, rows=rows)
        atomic_write_bytes(self.folder / "evals" / f"{key_file(key)}.npz", buf.getvalue())
        self.entries[key] = entry
        self.save()

    def save(self) -> None:
        atomic_write_json(
            self.folder / STATE_FILE,
            {
                "schema": STATE_SCHEMA,
                "fingerprint": self.fingerprint,
                "elapsed_seconds": round(self.elapsed, 3),
                "meta": self.meta,
                "entries": self.entries,
            },
        )
