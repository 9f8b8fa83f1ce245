"""The policies beside the model (no rejection, hedging, random, oracle; vectorised)
and one whole replay run (see ``mittd.daemon.replay``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mittd.daemon.replay.core import (
    DEFAULT_FAILOVER_COST_US,
    DEFAULT_PROBE_AFTER,
    Model,
    PolicyResult,
    _result,
    hedged,
    replay_model,
    replica_latencies,
    resolve_slo,
    split_operating_point,
)
from mittd.daemon.replay.traces import (
    ReplayError,
    ReplayTrace,
    Replica,
    replica_notes,
    self_replica,
)

__all__ = ["HEDGE_PERCENTILE", "POLICIES", "Replay", "best_model", "hedge_delay_us",
           "parse_policies", "replay_baseline", "replay_hedge", "replay_oracle",
           "replay_random", "run_replay", "unique_names"]

POLICIES = ("baseline", "models", "hedge", "random", "oracle")
HEDGE_PERCENTILE = 95.0


def unique_names(paths: Sequence[str | Path]) -> list[str]:
    """File stems, made unique (``pl``, ``pl#2``) and distinct from the policy names."""
    out: list[str] = []
    for p in paths:
        file, cut = split_operating_point(p)
        base = (Path(file).stem or file) + (f"@{cut:g}" if cut is not None else "")
        name, k = base, 1
        while name in out or name in POLICIES:
            k += 1
            name = f"{base}#{k}"
        out.append(name)
    return out


def parse_policies(text: str) -> list[str]:
    items = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in POLICIES]
    if bad or not items:
        raise ReplayError(f"--policy: unknown policy {', '.join(map(repr, bad)) or repr(text)}; "
                          f"use a comma-separated list of: {', '.join(POLICIES)}")
    return list(dict.fromkeys(items))


# -- the other policies (vectorised) -----------------------------------------------------------


def replay_baseline(primary: ReplayTrace, rep_lat: Sequence[np.ndarray], cost: int
                    ) -> PolicyResult:
    t0 = time.perf_counter()
    served = np.zeros(primary.n, np.int8)
    return _result("baseline", "baseline", primary, served, rep_lat, cost, 0,
                   time.perf_counter() - t0)


def replay_oracle(primary: ReplayTrace, rep_lat: Sequence[np.ndarray], cost: int,
                  slo_us: float) -> PolicyResult:
    t0 = time.perf_counter()
    k = len(rep_lat)
    served = np.zeros(primary.n, np.int8)
    waiting = primary.reads & (primary.cols.lat > slo_us)
    decisions = int(primary.reads.sum())
    for j in range(1, k):
        decisions += int(waiting.sum())
        ok = waiting & (rep_lat[j - 1] <= slo_us)
        served[ok] = j
        waiting &= ~ok
    served[waiting] = k
    return _result("oracle", "oracle", primary, served, rep_lat, cost, decisions,
                   time.perf_counter() - t0)


def replay_random(primary: ReplayTrace, rep_lat: Sequence[np.ndarray], cost: int,
                  rate: float, seed: int) -> PolicyResult:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    k = len(rep_lat)
    served = np.zeros(primary.n, np.int8)
    reads = np.flatnonzero(primary.reads)
    decisions = int(reads.size)
    waiting = _pick(rng, reads, rate)  # exactly round(rate * arrivals) rejects per hop
    for j in range(1, k):
        decisions += int(waiting.size)
        rejected = _pick(rng, waiting, rate)
        served[np.setdiff1d(waiting, rejected, assume_unique=True)] = j
        waiting = rejected
    served[waiting] = k
    return _result("random", "random", primary, served, rep_lat, cost, decisions,
                   time.perf_counter() - t0)


def _pick(rng: np.random.Generator, idx: np.ndarray, rate: float) -> np.ndarray:
    n = round(rate * idx.size)
    return np.sort(rng.choice(idx, size=n, replace=False)) if n else idx[:0]


def replay_hedge(primary: ReplayTrace, replica: Replica, after_us: float | None = None
                 ) -> PolicyResult:
    """Hedging after ``after_us`` (default: the p95 of the replayed reads themselves,
    which tunes hedging on the data it is judged on; pass a delay learnt earlier, as
    ``mittd bench tailcut`` does, for a fair comparison)."""
    t0 = time.perf_counter()
    h = hedge_delay_us(primary) if after_us is None else float(after_us)
    out, n = hedged(primary, replica, primary.cols.lat, primary.reads, h)
    served = np.zeros(primary.n, np.int8)
    res = PolicyResult("hedge", "hedge", out, served > 0, served, 0, n, 0,
                       time.perf_counter() - t0, hedge_after_us=h)
    src = "p95 of the primary's read latencies" if after_us is None else "given"
    res.notes.append(f"hedge: duplicate to {replica.name} after {h:.1f} µs ({src})")
    return res


def hedge_delay_us(primary: ReplayTrace) -> float:
    return float(np.percentile(primary.cols.lat[primary.known_reads], HEDGE_PERCENTILE))


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Replay:
    """A finished replay: inputs, the SLO and one result per policy (report order)."""

    primary: ReplayTrace
    replicas: list[Replica]
    slo_text: str
    slo_us: float
    failover_cost_us: int
    engine: str
    seed: int
    decision_threshold: float | None
    results: list[PolicyResult]
    random_rate: float | None = None
    random_rate_from: str | None = None
    notes: list[str] = field(default_factory=list)

    def get(self, name: str) -> PolicyResult | None:
        return next((r for r in self.results if r.name == name), None)


def best_model(results: Sequence[PolicyResult], primary: ReplayTrace) -> PolicyResult | None:
    """The model row with the lowest read p99 (then the lowest mean)."""
    known = primary.known_reads
    rows = [r for r in results if r.kind == "model"]
    if not rows:
        return None
    return min(rows, key=lambda r: (float(np.percentile(r.latency_us[known], 99.0)),
                                    float(r.latency_us[known].mean())))


def run_replay(
    primary: ReplayTrace,
    replicas: Sequence[Replica],
    models: Sequence[Model],
    policies: Sequence[str],
    slo_text: str,
    *,
    failover_cost_us: int = DEFAULT_FAILOVER_COST_US,
    engine: str = "auto",
    decision_threshold: float | None = None,
    seed: int = 0,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    probe_after: int = DEFAULT_PROBE_AFTER,
    max_reject_share: float | None = None,
    hedge_after_us: float | None = None,
) -> Replay:
    """Replay every requested policy; results follow the order of ``policies``
    (``models`` expands to one row per model, in the order given).

    ``max_reject_share`` overrides every model's reject cap; ``hedge_after_us`` is
    the ``hedge`` row's delay (default: the p95 of the replayed reads)."""
    if failover_cost_us < 0:
        raise ReplayError(f"--failover-cost-us must be >= 0, got {failover_cost_us}")
    if probe_after < 0:
        raise ReplayError(f"--probe-after must be >= 0, got {probe_after}")
    if decision_threshold is not None and not 0.0 <= decision_threshold <= 1.0:
        raise ReplayError(f"--decision-threshold must be in [0, 1], got {decision_threshold}")
    if "models" in policies and not models:
        raise ReplayError("the 'models' policy needs at least one --model BUNDLE "
                          "(or leave 'models' out of --policy)")
    if max_reject_share is not None and not 0.0 < max_reject_share <= 1.0:
        raise ReplayError(f"--max-reject-share must be in (0, 1], got {max_reject_share}")
    if hedge_after_us is not None and not hedge_after_us > 0:
        raise ReplayError(f"--hedge-after-us must be > 0, got {hedge_after_us}")
    reps = list(replicas) or [self_replica(primary)]
    slo = resolve_slo(slo_text, primary, models)
    cost = int(failover_cost_us)
    rep_lat = replica_latencies(primary, reps, cost)
    done: dict[str, PolicyResult] = {}
    if "models" in policies:
        for m in models:
            if say:
                say(f"replaying {m.name} ({m.bundle.version_id}) over {primary.n:,} IOs")
            done[m.name] = replay_model(
                primary, reps, m, slo, engine=engine, failover_cost_us=cost,
                decision_threshold=(decision_threshold if m.decision_threshold is None
                                    else m.decision_threshold),
                rep_lat=rep_lat, progress=progress,
                probe_after=probe_after, max_reject_share=max_reject_share)
    if "baseline" in policies:
        done["baseline"] = replay_baseline(primary, rep_lat, cost)
    if "hedge" in policies:
        done["hedge"] = replay_hedge(primary, reps[0], hedge_after_us)
    oracle = replay_oracle(primary, rep_lat, cost, slo)
    if "oracle" in policies:
        done["oracle"] = oracle
    rate = rate_from = None
    if "random" in policies:
        best = best_model(list(done.values()), primary)
        src = best or oracle
        known = primary.known_reads
        rate = float(src.rejected[known].mean())
        rate_from = src.name
        done["random"] = replay_random(primary, rep_lat, cost, rate, seed)
        done["random"].notes.append(
            f"random: rejects with p = {rate:.4f}, the reject rate of {rate_from} "
            f"({'best model by p99' if best else 'no model ran: the oracle'}), seed {seed}")
    order: list[str] = []
    for p in policies:
        order += [m.name for m in models] if p == "models" else [p]
    results = [done[n] for n in order if n in done]
    notes = replica_notes(primary, reps, bool(replicas)) + [n for r in results for n in r.notes]
    return Replay(primary, reps, slo_text, slo, cost, engine, seed, decision_threshold, results,
                  rate, rate_from, notes)
