"""The search algorithm (calibrate, rank, bisect, confirm, step up, prune, --max-evals) against scripted mAPs.

A fake session answers ``evaluate`` from a formula of the groups kept in FP16, so every expected
result below follows from the formula, not from the search.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from common.quant.groups import Group
from common.quant.score import Delta
from common.quant.search import choose, min_evals, run_search
from common.quant.search_session import BudgetExhausted, Record, SearchOptions

Formula = Callable[[frozenset[str], str, str], float]  # (kept in FP16, subset, calibration) -> ΔmAP vs FP16


class FakeSession:
    """What the search asks of a Session, answered by ``formula``; evaluations counted like the real one."""

    def __init__(self, names: list[str], formula: Formula, budget: float = 0.005, max_evals: int = 100) -> None:
        self.groups = [Group(n, "block", n, (f"/{n}/Conv",)) for n in names]
        self.formula = formula
        self.opts = SearchOptions(budget=budget, max_evals=max_evals)
        self.records: list[Record] = []
        self.makers: dict[str, object] = {}
        self.calibration = ""
        self._touched: dict[str, Record] = {}

    @property
    def evals_used(self) -> int:
        return len(self._touched)

    def quantizable_groups(self):
        return self.groups, []

    def prefetch(self, candidates, subset) -> None:
        pass

    def evaluate(self, excluded, subset, phase, calibration=None) -> Record:
        cal = calibration or self.calibration
        key = f"{cal}|{subset}|{'+'.join(sorted(excluded))}"
        if key in self._touched:
            return self._touched[key]
        if self.evals_used >= self.opts.max_evals:
            raise BudgetExhausted
        kept = frozenset(excluded)
        d = self.formula(kept, subset, cal)
        base = self.formula(frozenset(), subset, cal)
        share = 1 - len(kept) / len(self.groups)
        rec = Record(
            index=self.evals_used + 1,
            phase=phase,
            cid=key,
            subset=subset,
            calibration=cal,
            excluded=tuple(excluded),
            excluded_nodes=[],
            facts={"int8_mac_share": share},
            stats={"AP": 0.5 + d},
            vs_fp16=Delta(d, d - 0.01, d + 0.01, 0, 0.95),
            vs_int8=Delta(d - base, d - base - 0.01, d - base + 0.01, 0, 0.95) if excluded else None,
            within=d >= -self.opts.budget,
            seconds={},
            build=None,
            resumed=False,
        )
        self._touched[key] = rec
        self.records.append(rec)
        return rec


NAMES = [f"g{i}" for i in range(8)]
COST = {"g0": 0.001, "g1": 0.012, "g2": 0.0, "g3": 0.004, "g4": 0.002, "g5": 0.02, "g6": 0.0005, "g7": 0.003}


def additive(kept: frozenset[str], subset: str, cal: str) -> float:
    return -sum(c for g, c in COST.items() if g not in kept)


def smallest_by_brute_force(formula: Formula, budget: float) -> int:
    for k in range(len(NAMES) + 1):
        if any(formula(frozenset(s), "full", "") >= -budget for s in itertools.combinations(NAMES, k)):
            return k
    raise AssertionError("no set fits")


def test_additive_effects_give_the_smallest_set():
    s = FakeSession(NAMES, additive)
    res = run_search(s, {"cal": None})
    assert [r.group.name for r in res.ranking] == sorted(NAMES, key=lambda g: (-COST[g], NAMES.index(g)))
    assert res.best is not None and res.best.subset == "full"
    assert len(res.best.excluded) == smallest_by_brute_force(additive, 0.005) == 4
    assert set(res.best.excluded) == {"g5", "g1", "g3", "g7"}  # left quantized: 0.002+0.001+0.0005 = 0.0035


def test_int8_all_within_budget_stops_after_the_sweep():
    s = FakeSession(NAMES, lambda kept, subset, cal: -0.004 if cal == "b" else -0.02)
    res = run_search(s, {"a": None, "b": None})
    assert s.calibration == "b" and res.kept == () and not res.ranking
    assert res.best is not None and res.best.excluded == () and s.evals_used == 3  # 2 calibrations + 1 full


def test_the_better_calibration_is_used_for_every_candidate():
    def formula(kept, subset, cal):
        return additive(kept, subset, cal) + (0.004 if cal == "max" else 0.0)

    s = FakeSession(NAMES, formula)
    res = run_search(s, {"entropy": None, "max": None})
    assert s.calibration == "max"
    assert all(r.calibration == "max" for r in s.records if r.phase != "calibration")
    assert set(res.best.excluded) == {"g5", "g1", "g3"}  # 0.004 recovered by calibration: 0.0065 - 0.004 fits


def test_failed_confirmation_steps_up():
    # the screen is optimistic by 0.0045: K=3 (0.0065 left) passes there, the full set needs K=4 (0.0035)
    def formula(kept, subset, cal):
        return additive(kept, subset, cal) + (0.0045 if subset == "screen" else 0.0)

    s = FakeSession(NAMES, formula)
    res = run_search(s, {"cal": None})
    assert res.screen_k == 3 and res.confirmed_k == 4
    phases = [r.phase for r in s.records if r.subset == "full"]
    assert phases[:2] == ["confirm", "step-up"]
    assert set(res.best.excluded) == {"g5", "g1", "g3", "g7"}


def test_prune_drops_a_group_ranked_high_by_screen_noise():
    costs = {"a": 0.02, "n": 0.0, "b": 0.004, "c": 0.004}

    def formula(kept, subset, cal):
        noise = 0.006 if (subset == "screen" and kept == {"n"}) else 0.0  # n alone looks useful on the screen
        return -sum(v for g, v in costs.items() if g not in kept) + noise

    s = FakeSession(list(costs), formula)
    res = run_search(s, {"cal": None})
    assert [r.group.name for r in res.ranking][:2] == ["a", "n"]
    assert res.confirmed_k == 3 and set(res.kept) == {"a", "b"}
    assert set(res.best.excluded) == {"a", "b"}


def test_a_group_that_makes_things_worse_is_never_kept():
    def formula(kept, subset, cal):
        return additive(kept, subset, cal) - (0.01 if "g2" in kept else 0.0)  # FP16 g2 hurts

    s = FakeSession(NAMES, formula)
    res = run_search(s, {"cal": None})
    assert res.ranking[-1].group.name == "g2" and res.ranking[-1].gain.delta < 0
    assert "g2" not in res.best.excluded


def test_max_evals_stops_with_the_best_confirmed_so_far():
    s = FakeSession(NAMES, additive, max_evals=min_evals(1, len(NAMES)))
    res = run_search(s, {"cal": None})
    assert s.evals_used == min_evals(1, len(NAMES))
    assert res.stopped == f"--max-evals {s.opts.max_evals} reached"
    # 1 calibration + 8 ranks + 3 bisection steps + 1 confirmation = 13; the prune's first step is the 14th
    assert res.best is not None and set(res.best.excluded) == {"g5", "g1", "g3", "g7"}


def test_no_candidate_reports_the_closest():
    s = FakeSession(NAMES, lambda kept, subset, cal: -0.02 + 0.001 * len(kept), budget=0.005)
    res = run_search(s, {"cal": None})
    assert res.best is None and res.closest is not None
    assert res.closest.vs_fp16.delta == pytest.approx(-0.02 + 0.001 * len(NAMES))


def test_choose_takes_the_confirmed_set_else_the_largest_int8_share_on_the_full_set():
    s = FakeSession(NAMES, additive)
    for kept in (("g5", "g1", "g3", "g7", "g4"), ("g5", "g1", "g3", "g7"), ("g5",)):  # within, within, not
        s.evaluate(kept, "full", "x")
    s.evaluate(("g5", "g1", "g3", "g7"), "screen", "x")
    best, closest = choose(s.records, None)
    assert best.excluded == ("g5", "g1", "g3", "g7") and best.subset == "full" and closest is None
    best, _ = choose(s.records, ("g4", "g7", "g3", "g1", "g5"))
    assert set(best.excluded) == {"g5", "g1", "g3", "g7", "g4"}
