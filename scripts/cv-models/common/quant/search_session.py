"""One precision search's bookkeeping: make, score and record a candidate once, count evaluations.

A candidate is the set of groups kept in high precision (``excluded``) under one calibration; an
evaluation is one candidate scored on the screening subset or the full image set, paired with the
FP16 reference on the same images. Evaluations are memoised (``SearchState``), counted against
``--max-evals`` the first time the search asks for them, and written as ``search.jsonl`` rows.
The FP16 reference's own evaluations are not counted.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.core.results import atomic_write_text, dumps_json
from common.quant.candidates import CandidateMaker
from common.quant.groups import Group, nodes_of
from common.quant.qdq_graph import quantized_names
from common.quant.score import Delta
from common.quant.search_eval import Scored, Scorer
from common.quant.search_state import SearchState, key_file

__all__ = ["BudgetExhausted", "Record", "SearchOptions", "Session"]

log = logging.getLogger(__name__)
BUILD_MODES = ("none", "final", "all")


class BudgetExhausted(Exception):
    """--max-evals evaluations were used."""


@dataclass(frozen=True)
class SearchOptions:
    mode: str = "int8"
    budget: float = 0.005  # allowed mAP drop vs the FP16 reference (paired point estimate)
    max_evals: int = 40
    prune: bool = True
    worthwhile_share: float = 0.4  # INT8 share of conv MACs below which a result is "not worthwhile"
    build: str = "final"  # none | final | all
    keep_candidates: bool = False


@dataclass
class Record:
    """One evaluation: a candidate on one subset, compared with FP16 (and INT8-all) on the same images."""

    index: int
    phase: str
    cid: str
    subset: str
    calibration: str
    excluded: tuple[str, ...]
    excluded_nodes: list[str]
    facts: dict[str, Any]
    stats: dict[str, float]
    vs_fp16: Delta
    vs_int8: Delta | None
    within: bool
    seconds: dict[str, float]
    build: dict[str, Any] | None
    resumed: bool

    @property
    def share(self) -> float:
        return float(self.facts.get("int8_mac_share", 0.0))

    def row(self) -> dict[str, Any]:
        s = self.stats
        return {
            "eval": self.index,
            "phase": self.phase,
            "candidate": self.cid,
            "subset": self.subset,
            "calibration": self.calibration,
            "kept_groups": list(self.excluded),
            "excluded_nodes": self.excluded_nodes,
            **self.facts,
            "mAP": s["AP"],
            "AP50": s["AP50"],
            "APs": s["AP_small"],
            "APm": s["AP_medium"],
            "APl": s["AP_large"],
            "delta_vs_fp16": self.vs_fp16.as_dict(),
            "delta_vs_int8_all": self.vs_int8.as_dict() if self.vs_int8 else None,
            "within_budget": self.within,
            "latency": None,
            "seconds": self.seconds,
            "build": self.build,
            "from_state": self.resumed,
        }


@dataclass
class Session:
    """What the search algorithm asks: ``evaluate(excluded, subset, phase)`` and the references."""

    folder: Path
    groups: list[Group]
    scorer: Scorer
    state: SearchState
    opts: SearchOptions
    fp16_onnx: Path
    facts_of: Callable[[Path], dict[str, Any]]
    builder: Callable[[Path, Path], dict[str, Any]] | None = None
    on_record: Callable[[Record, int], None] | None = None
    makers: dict[str, CandidateMaker] = field(default_factory=dict)
    parallel: int = 1  # candidates made at once by prefetch (the makers must be thread-safe)
    calibration: str = ""
    records: list[Record] = field(default_factory=list)
    _touched: dict[str, Record] = field(default_factory=dict)
    _refs: dict[str, Scored] = field(default_factory=dict)
    _pending: dict[Path, concurrent.futures.Future[float]] = field(default_factory=dict)
    _executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def evals_used(self) -> int:
        return len(self._touched)

    def subset(self, subset: str) -> str:
        """``screen`` is ``full`` when the screening subset is the whole image set."""
        return "full" if self.scorer.ids("screen") == self.scorer.ids("full") else subset

    def cid(self, calibration: str, excluded: Sequence[str]) -> str:
        return "c" + key_file(f"{calibration}|{'+'.join(sorted(excluded))}")[:10]

    def onnx_path(self, calibration: str, excluded: Sequence[str]) -> Path:
        return self.folder / "candidates" / f"{self.cid(calibration, excluded)}.onnx"

    def _key(self, cal: str, excluded: Sequence[str], subset: str) -> str:
        return f"{cal}|{self.subset(subset)}|{'+'.join(sorted(excluded))}"

    def ensure_onnx(self, excluded: Sequence[str], calibration: str | None = None) -> tuple[Path, float]:
        """The candidate's ONNX, made when it is not on disk; (path, seconds spent making it)."""
        cal = calibration or self.calibration
        path = self.onnx_path(cal, excluded)
        pending = self._pending.pop(path, None)
        if pending is not None:
            return path, pending.result()
        if path.is_file():
            return path, 0.0
        return path, self.makers[cal].make(nodes_of(self.groups, excluded), path)

    def prefetch(self, candidates: Sequence[Sequence[str]], subset: str) -> None:
        """Start making the candidates the search evaluates next on ``subset`` (``parallel`` at a time, in
        the background); ``evaluate`` waits for each. Nothing beyond --max-evals, nothing already done."""
        if self.parallel <= 1:
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(self.parallel, thread_name_prefix="quantize")
        cal = self.calibration
        room = self.opts.max_evals - self.evals_used
        for excluded in candidates[: max(0, room)]:
            key, path = self._key(cal, excluded, subset), self.onnx_path(cal, excluded)
            if key in self._touched or self.state.get(key) is not None or path.is_file() or path in self._pending:
                continue
            self._pending[path] = self._executor.submit(self.makers[cal].make, nodes_of(self.groups, excluded), path)

    def close(self) -> None:
        """Cancel candidates not started; wait for those being made."""
        for fut in self._pending.values():
            fut.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._pending.clear()

    def quantizable_groups(self) -> tuple[list[Group], list[str]]:
        """Groups with a node that reads a DequantizeLinear output in INT8-all; and the names of the others."""
        import onnx

        path, _ = self.ensure_onnx(())
        q = quantized_names(onnx.load(str(path), load_external_data=False))
        keep = [g for g in self.groups if q.intersection(g.nodes)]
        return keep, [g.name for g in self.groups if not q.intersection(g.nodes)]

    def scored_reference(self, name: str, subset: str, onnx: Path) -> Scored:
        """A reference model on ``subset``, memoised in memory and in the state; not counted."""
        key = f"ref|{name}|{self.subset(subset)}"
        if key not in self._refs:
            entry = self.state.get(key)
            if entry is not None:
                scored = self.scorer.from_rows(self.state.rows(key), self.subset(subset))
            else:
                scored = self._run(onnx, self.subset(subset))
                self.state.put(key, {"seconds": {"eval": scored.seconds}}, scored.rows)
            self._refs[key] = scored
        return self._refs[key]

    def _run(self, onnx: Path, subset: str) -> Scored:
        """Score one model; the state remembers which runtime scored (saved with the evaluation)."""
        scored = self.scorer.run(onnx, subset)
        self.state.meta["scoring"] = self.scorer.runtime()
        return scored

    def fp16(self, subset: str) -> Scored:
        return self.scored_reference("fp16", subset, self.fp16_onnx)

    def int8_all(self, subset: str) -> Scored | None:
        return self._refs.get(f"int8|{self.calibration}|{self.subset(subset)}")

    def evaluate(self, excluded: Sequence[str], subset: str, phase: str, calibration: str | None = None) -> Record:
        """The candidate keeping ``excluded`` in high precision, scored on ``subset`` (once per search)."""
        cal = calibration or self.calibration
        subset = self.subset(subset)
        key = self._key(cal, excluded, subset)
        if key in self._touched:
            return self._touched[key]
        if self.evals_used >= self.opts.max_evals:
            raise BudgetExhausted
        scored, entry, resumed = self._score(key, cal, tuple(excluded), subset)
        if not excluded:
            self._refs[f"int8|{cal}|{subset}"] = scored
        record = self._record(key, phase, cal, tuple(excluded), subset, scored, entry, resumed)
        self._touched[key] = record
        self.records.append(record)
        self._drop_onnx(record)
        self.write_rows()
        if self.on_record is not None:
            self.on_record(record, self.evals_used)
        return record

    def _score(self, key: str, cal: str, excluded: tuple[str, ...], subset: str) -> tuple[Scored, dict, bool]:
        entry = self.state.get(key)
        if entry is not None:
            return self.scorer.from_rows(self.state.rows(key), subset), entry, True
        path, made = self.ensure_onnx(excluded, cal)
        build = self._build(path)
        scored = self._run(path, subset)
        entry = {
            "facts": self.facts_of(path),
            "seconds": {"quantize": round(made, 3), "eval": round(scored.seconds, 3)},
            "build": build,
        }
        if build is not None:
            entry["seconds"]["build"] = build.get("seconds")
        self.state.put(key, entry, scored.rows)
        return scored, entry, False

    def _build(self, path: Path) -> dict[str, Any] | None:
        """--build all: every candidate through the TensorRT builder (engine deleted, its facts kept)."""
        if self.builder is None or self.opts.build != "all":
            return None
        engine = path.with_suffix(".engine")
        result = self.builder(path, engine)
        if not self.opts.keep_candidates:
            engine.unlink(missing_ok=True)
            engine.with_name(engine.name + ".json").unlink(missing_ok=True)
        return result

    def _record(
        self,
        key: str,
        phase: str,
        cal: str,
        excluded: tuple[str, ...],
        subset: str,
        scored: Scored,
        entry: dict[str, Any],
        resumed: bool,
    ) -> Record:
        vs_fp16 = self.scorer.delta(scored, self.fp16(subset), key + "|fp16")
        base = self.int8_all(subset)
        vs_int8 = self.scorer.delta(scored, base, key + "|int8") if excluded and base is not None else None
        build = entry.get("build")
        builds = build is None or bool(build.get("ok"))
        within = vs_fp16.delta >= -self.opts.budget and builds
        return Record(
            index=self.evals_used + 1,
            phase=phase,
            cid=self.cid(cal, excluded),
            subset=subset,
            calibration=cal,
            excluded=excluded,
            excluded_nodes=nodes_of(self.groups, excluded),
            facts=dict(entry["facts"]),
            stats=scored.stats,
            vs_fp16=vs_fp16,
            vs_int8=vs_int8,
            within=within,
            seconds=dict(entry["seconds"]),
            build=build,
            resumed=resumed,
        )

    def _drop_onnx(self, record: Record) -> None:
        """Candidates that failed the budget are not kept (made again if ever needed), unless asked."""
        if self.opts.keep_candidates or record.within or not record.excluded:
            return
        self.onnx_path(record.calibration, record.excluded).unlink(missing_ok=True)

    def write_rows(self) -> None:
        text = "".join(dumps_json(r.row(), indent=None) + "\n" for r in self.records)
        atomic_write_text(self.folder / "search.jsonl", text)
