"""A device's decision policy, chosen on a validation window — never on the test part.

The window lies between the data a model was trained on and the data it is
judged on (``mittd train`` holds it out). On it, closed-loop replays through
the daemon's own admission core (rejected reads never reach the device, so the
queue and the history features react, as live) try:

- ``reject`` at a ladder of cutoffs, each the P(slow) that the open-loop
  prediction exceeds on a given share of the window's reads (0.25 % … the
  reject budget), the reject cap set just inside the budget;
- ``both``: each of those cutoffs with the admitted reads hedged, after the
  delay that keeps the extra IOs (failovers + hedges) at hedging's;
- ``hedge``: plain hedging after the window's p95, the bar.

A candidate counts only if it sends no more extra IOs than hedging (``both``
stays within 90 % of hedging's, a margin for drift), keeps p99.9 within 1.1×
hedging's, never raises p99 above no rejection, and shows no lock-in
signature. Each is scored by its *robust* p99: the worst p99 of itself and its
neighbours on the ladder, so a cutoff on a cliff (one step from a much worse
result) is not chosen. The best robust p99 wins if it beats hedging's p99 by
``margin`` (3 %) and a block bootstrap of the window says it beats hedging with
90 % confidence; otherwise the policy is ``hedge`` and says so in plain words:
the tail of this device is not predictable enough to beat hedging.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from mittd.daemon.replay.core import (
    DEFAULT_FAILOVER_COST_US,
    DEFAULT_PROBE_AFTER,
    Model,
    PolicyResult,
    hedged,
    make_states,
    replay_model,
    replica_latencies,
)
from mittd.daemon.replay.traces import ReplayError, ReplayTrace, Replica
from mittd.predictor.policy import DecisionPolicy

__all__ = ["REJECT_SHARES", "Outcome", "Selection", "select_policy"]

#: The ladder of open-loop reject shares whose cutoffs are tried (capped by the budget).
REJECT_SHARES = (0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10)
P999_SLACK = 1.1  # a policy's p99.9 may exceed hedging's by this factor, no more
#: The reject cap is this share of the budget: the cap's running share may overshoot
#: by one decision's weight, and the realised share must stay within the budget.
CAP_OF_BUDGET = 0.96
#: ``both`` hedges within this share of hedging's extra IOs on the validation window:
#: a drifting device raises both policies' hedges, and rejections the model got wrong
#: (reads that would have finished before hedging's delay) are extra IOs hedging never
#: sends, so the margin keeps ``both`` at or below hedging's count on later data.
EXTRA_MARGIN = 0.9
#: The chosen policy must beat hedging's p99 with this confidence: a block bootstrap
#: of the validation window (blocks of BLOCK_US, resampled BOOTSTRAPS times) gives the
#: gain's distribution; its lower quantile must be above zero. A window holds a few
#: thousand reads, so its p99 rests on a few dozen: a "best of 16 candidates" without
#: this is often luck that the test part does not repeat.
CONFIDENCE = 0.9
BLOCK_US = 100_000
BOOTSTRAPS = 300


@dataclass(frozen=True)
class Outcome:
    """One policy's result on the validation window (latencies over known reads)."""

    mode: str
    p_cutoff: float | None
    hedge_after_us: float | None
    mean_us: float
    p99_us: float
    p99_9_us: float
    extra_ios: int
    extra_fraction: float
    reject_share: float
    predicted_slow_share: float
    lock_in: bool
    robust_p99_us: float = math.nan
    feasible: bool = True
    why_not: str = ""

    def label(self) -> str:
        if self.mode == "hedge":
            return f"hedge after {self.hedge_after_us:,.0f} µs"
        if self.mode == "baseline":
            return "no rejection"
        text = f"{self.mode} at P(slow) > {self.p_cutoff:.4g}"
        if self.mode == "both":
            text += f", hedge after {self.hedge_after_us:,.0f} µs"
        return text


@dataclass
class Selection:
    """What :func:`select_policy` chose, and every candidate it weighed."""

    policy: DecisionPolicy
    p_cutoff: float  # the bundle's new thresholds.p_slow (1.0: never reject)
    chosen: Outcome  # hedging's own outcome when the policy is hedge
    baseline: Outcome
    hedge: Outcome
    candidates: list[Outcome] = field(default_factory=list)

    def table(self) -> str:
        """The candidates as a text table, the chosen one marked."""
        rows = [self.baseline, self.hedge, *self.candidates]
        out = [f"{'':2}{'policy':<44}{'p99':>9}{'robust':>9}{'p99.9':>9}{'extra':>8}"
               f"{'reject':>8}{'slow?':>7}  note"]
        for o in rows:
            mark = "*" if o == self.chosen else " "
            rob = "-" if math.isnan(o.robust_p99_us) else f"{o.robust_p99_us:,.0f}"
            out.append(f"{mark:2}{o.label():<44}{o.p99_us:>9,.0f}{rob:>9}{o.p99_9_us:>9,.0f}"
                       f"{o.extra_fraction:>8.1%}{o.reject_share:>8.1%}"
                       f"{o.predicted_slow_share:>7.1%}  {o.why_not}")
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "p_cutoff": self.p_cutoff,
                "chosen": asdict(self.chosen), "baseline": asdict(self.baseline),
                "hedge": asdict(self.hedge), "candidates": [asdict(c) for c in self.candidates]}


def _outcome(primary: ReplayTrace, lat: np.ndarray, extra: int, mode: str,
             p_cutoff: float | None = None, hedge_after_us: float | None = None,
             res: PolicyResult | None = None) -> Outcome:
    known = primary.known_reads
    n = int(known.sum())
    v = lat[known]
    p99, p999 = (float(x) for x in np.percentile(v, [99.0, 99.9]))
    rej = float(res.rejected[known].mean()) if res is not None else 0.0
    slow = res.predicted_slow_share if res is not None else 0.0
    return Outcome(mode, p_cutoff, hedge_after_us, float(v.mean()), p99, p999, extra,
                   extra / n if n else 0.0, rej, slow or 0.0,
                   bool(res.lock_in) if res is not None else False)


def _cut_for(p: np.ndarray, u: np.ndarray, share: float) -> float | None:
    """The cutoff that rejects at least ``share`` of the predictions ``p``: halfway
    between the quantile and the next lower distinct prediction, so that float
    rounding of the logit never moves a prediction across it (a tied mass of equal
    predictions is rejected whole rather than not at all). ``u``: ``np.unique(p)``."""
    q = float(np.quantile(p, 1.0 - share))
    i = int(np.searchsorted(u, q, side="left"))
    if i == 0:
        return None  # nothing lower: the cut would reject every read
    return float((u[i - 1] + min(q, float(u[min(i, u.size - 1)]))) / 2.0)


def gain_bounds(primary: ReplayTrace, latency_us: np.ndarray, hedge_us: np.ndarray,
                seed: int = 0) -> tuple[float, float]:
    """(gain, lower bound): 1 - p99(policy)/p99(hedging) over the window's known reads,
    and the (1 - CONFIDENCE) quantile of that gain over a block bootstrap (whole
    BLOCK_US slices of time resampled, so bursts stay together)."""
    known = primary.known_reads
    rel = (primary.cols.ts - primary.t0)[known]
    a, h = latency_us[known], hedge_us[known]
    gain = 1.0 - float(np.percentile(a, 99.0)) / float(np.percentile(h, 99.0))
    blocks = (rel // BLOCK_US).astype(np.int64)
    order = np.argsort(blocks, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(blocks[order]) != 0])
    groups = np.split(order, starts[1:])
    if len(groups) < 2:
        return gain, gain
    rng = np.random.default_rng(seed)
    gains = np.empty(BOOTSTRAPS)
    for b in range(BOOTSTRAPS):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        gains[b] = 1.0 - np.percentile(a[idx], 99.0) / np.percentile(h[idx], 99.0)
    return gain, float(np.quantile(gains, 1.0 - CONFIDENCE))


def _robust(outcomes: list[Outcome]) -> list[Outcome]:
    """Each outcome's robust p99: the worst p99 of itself and its ladder neighbours."""
    p = [o.p99_us for o in outcomes]
    return [replace(o, robust_p99_us=max(p[max(0, i - 1):i + 2]))
            for i, o in enumerate(outcomes)]


def _check(o: Outcome, baseline: Outcome, hedge: Outcome) -> Outcome:
    why = []
    if o.extra_ios > hedge.extra_ios:
        why.append("more extra IOs than hedging")
    if o.p99_9_us > P999_SLACK * hedge.p99_9_us:
        why.append(f"p99.9 > {P999_SLACK}x hedging's")
    if o.p99_us > baseline.p99_us:
        why.append("p99 above no rejection")
    if o.lock_in:
        why.append("lock-in signature")
    return replace(o, feasible=not why, why_not="; ".join(why))


def select_policy(
    model: Model,
    primary: ReplayTrace,
    replica: Replica,
    slo_us: float,
    *,
    reject_budget: float = 0.05,
    hedge_percentile: float = 95.0,
    margin: float = 0.03,
    engine: str = "auto",
    failover_cost_us: int = DEFAULT_FAILOVER_COST_US,
    probe_after: int = DEFAULT_PROBE_AFTER,
    shares: Sequence[float] = REJECT_SHARES,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> Selection:
    """Choose ``model``'s decision policy on the window ``primary`` (failing over to
    ``replica``): see the module docstring. ``reject_budget`` caps the reject share
    and the ladder; hedging's delay is the window's ``hedge_percentile``."""
    if not 0.0 < reject_budget <= 1.0:
        raise ReplayError(f"--reject-budget must be in (0, 1], got {reject_budget}")
    cap = CAP_OF_BUDGET * reject_budget
    if not 0.0 < hedge_percentile < 100.0:
        raise ReplayError(f"hedge percentile must be in (0, 100), got {hedge_percentile}")
    known = primary.known_reads
    lat = primary.cols.lat
    cost = int(failover_cost_us)
    rep_lat = replica_latencies(primary, [replica], cost)
    h = float(np.percentile(lat[known], hedge_percentile))
    baseline = _outcome(primary, lat, 0, "baseline")
    hlat, hn = hedged(primary, replica, lat, primary.reads, h)
    hedge = _outcome(primary, hlat, hn, "hedge", hedge_after_us=h)
    # one engine for every replay of the window ("auto" times formats once)
    eng = make_states(model, 1, engine, slo_us, None)[0].engine
    common = {"engine": eng, "failover_cost_us": cost, "rep_lat": rep_lat,
              "probe_after": probe_after}
    open_loop = replay_model(primary, [replica], model, slo_us, decision_threshold=1.0,
                             mode="reject", record_p_slow=True, max_reject_share=1.0,
                             **common)
    assert open_loop.p_slow is not None
    p = open_loop.p_slow[known & ~np.isnan(open_loop.p_slow)]
    if p.size == 0:
        raise ReplayError(f"{model.name}: made no prediction on the validation window "
                          f"(SLO {slo_us:g} µs beyond its thresholds?)")
    ladder = [s for s in shares if s <= reject_budget] or [reject_budget]
    distinct = np.unique(p)
    cuts = sorted({c for s in ladder if (c := _cut_for(p, distinct, s)) is not None},
                  reverse=True)
    rejects: list[Outcome] = []
    boths: list[Outcome] = []
    lats: dict[tuple[str, float], np.ndarray] = {}
    bar = tqdm(cuts, desc=f"{model.name}: validation", unit="cutoff", leave=False,
               disable=not progress)
    for c in bar:
        res = replay_model(primary, [replica], model, slo_us, decision_threshold=c,
                           mode="reject", max_reject_share=cap, **common)
        rejects.append(_outcome(primary, res.latency_us, res.failovers, "reject", c, None,
                                res))
        lats[("reject", c)] = res.latency_us
        spare = int(EXTRA_MARGIN * hedge.extra_ios) - res.failovers
        adm = known & (res.served_by == 0)
        if spare > 0 and adm.any():
            la = np.sort(res.latency_us[adm])
            hb = float(la[max(0, la.size - spare - 1)])
            if hb > 0:
                blat, bn = hedged(primary, replica, res.latency_us,
                                  primary.reads & (res.served_by == 0), hb)
                boths.append(_outcome(primary, blat, res.failovers + bn, "both", c, hb, res))
                lats[("both", c)] = blat
    bar.close()
    candidates = [_check(o, baseline, hedge) for o in _robust(rejects) + _robust(boths)]
    ok = [o for o in candidates if o.feasible]
    best = min(ok, key=lambda o: (o.robust_p99_us, o.p99_9_us)) if ok else None
    base_val = {"reads": int(known.sum()), "baseline_p99_us": baseline.p99_us,
                "hedge_p99_us": hedge.p99_us, "hedge_p99_9_us": hedge.p99_9_us,
                "hedge_extra_fraction": hedge.extra_fraction, "slo_us": float(slo_us),
                "reject_budget": reject_budget, "margin": margin}
    gain_lo = math.nan
    if best is not None:
        assert best.p_cutoff is not None
        _, gain_lo = gain_bounds(primary, lats[(best.mode, best.p_cutoff)], hlat)
        base_val["gain_lower_bound"] = gain_lo
        base_val["confidence"] = CONFIDENCE
    if best is not None and best.robust_p99_us <= (1.0 - margin) * hedge.p99_us \
            and gain_lo > 0.0:
        gain = 1.0 - best.robust_p99_us / hedge.p99_us
        reason = (f"on the validation window {best.label()} kept p99 at "
                  f"{best.robust_p99_us:,.0f} µs (robust) against hedging's "
                  f"{hedge.p99_us:,.0f} µs ({gain:.0%} lower; at least {gain_lo:.0%} with "
                  f"{CONFIDENCE:.0%} confidence) with {best.extra_fraction:.1%} extra IOs "
                  f"(hedging {hedge.extra_fraction:.1%})")
        pct = None
        if best.hedge_after_us is not None:
            pct = float(100.0 * (lat[known] <= best.hedge_after_us).mean())
            pct = min(max(pct, 0.01), 99.99)
        policy = DecisionPolicy(best.mode, cap, best.hedge_after_us, pct, reason,
                                {**base_val, "chosen_p99_us": best.p99_us,
                                 "chosen_robust_p99_us": best.robust_p99_us,
                                 "chosen_extra_fraction": best.extra_fraction})
        chosen, cutoff = best, float(best.p_cutoff or 0.5)
    else:
        near = (f"the best mittd policy ({best.label()}) reached p99 "
                f"{best.robust_p99_us:,.0f} µs (robust; gain over hedging at least "
                f"{gain_lo:+.0%} with {CONFIDENCE:.0%} confidence)" if best is not None else
                "no mittd policy met the limits (extra IOs, p99.9, no lock-in)")
        reason = (f"hedging recommended on this device: on the validation window {near} "
                  f"against hedging's {hedge.p99_us:,.0f} µs; the tail is not predictable "
                  f"enough to beat hedging by {margin:.0%} with confidence")
        policy = DecisionPolicy("hedge", cap, h, hedge_percentile, reason,
                                {**base_val, "chosen_p99_us": hedge.p99_us})
        chosen, cutoff = hedge, 1.0
    if say:
        say(f"{model.name}: policy {policy.describe()}")
    return Selection(policy, cutoff, chosen, baseline, hedge, candidates)
