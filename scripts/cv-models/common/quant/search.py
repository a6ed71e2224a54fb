"""The precision search: the fewest layer groups kept in FP16 so that INT8/FP8 stays within an mAP budget.

Steps (every evaluation is paired with the FP16 reference on the same images):

1. **Calibration sweep**: INT8-all (FP8-all) under each calibration (method x image count) on the
   screening subset; the best becomes the calibration of every later candidate. If INT8-all is within
   budget on the screen and then on the full set, the search stops there.
2. **Rank**: leave one group out -- INT8-all with one group kept in high precision -- for every group
   that ModelOpt quantizes; the gain over INT8-all (paired, with its bootstrap interval) ranks them.
3. **Bisect** over the ranked prefixes (keep the top K groups) for the smallest K within budget on the
   screen. Effects are not additive, so this assumes only that a larger prefix is not worse.
4. **Confirm** that K on the full set; when it fails, step up (K+1, K+2, K+4, ... then bisect back).
5. **Prune**: drop each kept group in turn, least sensitive first, and keep it quantized when the
   budget still holds (screen, then full set).

``--max-evals`` bounds the evaluations of quantized candidates; when it runs out the best candidate
confirmed on the full set so far is the result. The result is the set the steps confirmed last; when
the search stopped before confirming one, the full-set candidate within budget with the largest INT8
share of conv MACs; without any, the closest candidate is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.quant.candidates import CandidateMaker
from common.quant.groups import Group
from common.quant.score import Delta
from common.quant.search_session import BudgetExhausted, Record, Session

__all__ = [
    "Ranked",
    "SearchResult",
    "bisect_screen",
    "calibrate",
    "choose",
    "confirm",
    "min_evals",
    "prune",
    "rank",
    "run_search",
]


@dataclass(frozen=True)
class Ranked:
    group: Group
    record: Record
    gain: Delta  # AP(INT8-all with this group in FP16) - AP(INT8-all), screen


@dataclass
class SearchResult:
    calibrations: list[Record] = field(default_factory=list)
    ranking: list[Ranked] = field(default_factory=list)
    skipped_groups: list[str] = field(default_factory=list)  # not quantized by ModelOpt: nothing to keep
    screen_k: int | None = None
    confirmed_k: int | None = None
    kept: tuple[str, ...] | None = None
    best: Record | None = None
    closest: Record | None = None
    stopped: str | None = None
    path: list[str] = field(default_factory=list)
    runtime_check: dict[str, Any] | None = None


def min_evals(sweep: int, groups: int) -> int:
    """The fewest evaluations a search over ``groups`` needs: sweep, one per group, bisection, one confirmation."""
    return sweep + groups + math.ceil(math.log2(groups + 1)) + 1


def calibrate(session: Session, makers: dict[str, CandidateMaker]) -> list[Record]:
    """INT8-all under each calibration on the screen; the best (highest AP) becomes the session's."""
    session.makers.update(makers)
    records = [session.evaluate((), "screen", "calibration", calibration=name) for name in makers]
    best = max(records, key=lambda r: (r.stats["AP"], -r.index))
    session.calibration = best.calibration
    return records


def rank(session: Session, groups: Sequence[Group]) -> list[Ranked]:
    """Leave one group out on the screen; most sensitive (largest gain) first, ties in group order."""
    session.prefetch([(g.name,) for g in groups], "screen")
    out = []
    for g in groups:
        rec = session.evaluate((g.name,), "screen", "rank")
        gain = rec.vs_int8 if rec.vs_int8 is not None else rec.vs_fp16
        out.append(Ranked(g, rec, gain))
    order = {g.name: i for i, g in enumerate(groups)}
    return sorted(out, key=lambda r: (-r.gain.delta, order[r.group.name]))


def _prefix(ranked: Sequence[Ranked], k: int) -> tuple[str, ...]:
    return tuple(r.group.name for r in ranked[:k])


def bisect_screen(session: Session, ranked: Sequence[Ranked], lo: int = 0) -> int | None:
    """Smallest K > ``lo`` whose prefix is within budget on the screen (prefix ``lo`` known to fail)."""
    hi, hi_known = len(ranked), False
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if session.evaluate(_prefix(ranked, mid), "screen", "bisect").within:
            hi, hi_known = mid, True
        else:
            lo = mid
    if not hi_known and not session.evaluate(_prefix(ranked, hi), "screen", "bisect").within:
        return None
    return hi


def confirm(session: Session, ranked: Sequence[Ranked], k: int) -> int | None:
    """K confirmed on the full set, stepping up (+1, +2, +4, ... then bisecting back) while it fails."""
    top = len(ranked)
    fail: int | None = None
    cand, step = k, 1
    while not session.evaluate(_prefix(ranked, cand), "full", "confirm" if fail is None else "step-up").within:
        fail = cand
        if cand >= top:
            return None
        cand, step = min(top, cand + step), step * 2
    lo, hi = (fail, cand) if fail is not None else (cand, cand)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if session.evaluate(_prefix(ranked, mid), "full", "step-up").within:
            hi = mid
        else:
            lo = mid
    return hi


def prune(session: Session, ranked: Sequence[Ranked], k: int, res: SearchResult) -> tuple[str, ...]:
    """Each kept group, least sensitive first, quantized again when the budget still holds (screen, then
    full set); ``res.kept`` follows every confirmed removal, so a search stopped here keeps them."""
    kept = list(_prefix(ranked, k))
    for name in reversed(_prefix(ranked, k)):
        trial = tuple(x for x in kept if x != name)
        if not trial:
            continue  # INT8-all: already known to fail
        if session.evaluate(trial, "screen", "prune").within and session.evaluate(trial, "full", "prune").within:
            kept = list(trial)
            res.kept = trial
    return tuple(kept)


def choose(records: Sequence[Record], kept: tuple[str, ...] | None) -> tuple[Record | None, Record | None]:
    """(best, closest). Best: the full-set evaluation of ``kept`` (the search's confirmed set); without one,
    the full-set candidate within budget with the largest INT8 MAC share (then the smallest mAP drop).
    Without any, the candidate closest to the budget (full set first)."""
    full = [r for r in records if r.subset == "full"]
    ok = [r for r in full if r.within]
    if kept is not None:
        mine = [r for r in ok if set(r.excluded) == set(kept)]
        if mine:
            return mine[-1], None
    if ok:
        return max(ok, key=lambda r: (round(r.share, 9), r.vs_fp16.delta, -r.index)), None
    pool = full or [r for r in records if r.excluded or r.phase == "calibration"]
    closest = max(pool, key=lambda r: (r.vs_fp16.delta, r.share, -r.index)) if pool else None
    return None, closest


def run_search(session: Session, makers: dict[str, CandidateMaker]) -> SearchResult:
    """Steps 1-5 of the module docstring; stops early when INT8-all holds, or at --max-evals."""
    res = SearchResult()
    try:
        _steps(session, makers, res)
    except BudgetExhausted:
        res.stopped = f"--max-evals {session.opts.max_evals} reached"
        res.path.append(res.stopped)
    res.best, res.closest = choose(session.records, res.kept)
    return res


def _steps(session: Session, makers: dict[str, CandidateMaker], res: SearchResult) -> None:
    res.calibrations = calibrate(session, makers)
    int8 = next(r for r in res.calibrations if r.calibration == session.calibration)
    res.path.append(f"calibration {session.calibration}: INT8-all {int8.vs_fp16.delta:+.4f} vs FP16 (screen)")
    start = 0
    if int8.within:
        if session.evaluate((), "full", "confirm").within:
            res.kept, res.confirmed_k = (), 0
            res.path.append("INT8-all is within budget on the full set: nothing needs FP16")
            return
        res.path.append("INT8-all passes the screen but not the full set")
        start = None  # the screen cannot tell: step up from K=0 on the full set
    groups, res.skipped_groups = session.quantizable_groups()
    res.ranking = rank(session, groups)
    if start is None:
        k: int | None = 0
    else:
        k = bisect_screen(session, res.ranking, start)
        res.screen_k = k
        res.path.append(f"bisect: K={k} on the screen" if k is not None else "bisect: no prefix within budget")
        if k is None:
            return
    res.confirmed_k = confirm(session, res.ranking, k)
    if res.confirmed_k is None:
        res.path.append("confirmation: no prefix within budget on the full set")
        return
    res.path.append(f"confirmed: K={res.confirmed_k} on the full set")
    res.kept = _prefix(res.ranking, res.confirmed_k)
    if session.opts.prune and res.confirmed_k > 1:
        res.kept = prune(session, res.ranking, res.confirmed_k, res)
        res.path.append(f"prune: {len(res.kept)} group(s) kept in high precision")
