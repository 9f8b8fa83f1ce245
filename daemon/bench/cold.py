"""``mittd bench cold``: is a decision after an idle spell judged, and how long does it take?

Why: at one IO a second the first prediction after a quiet spell runs on cold
caches; when it takes longer than ``predict_budget_us`` it is an overrun, and
with ``fail_open_on_overrun`` a would-be EBUSY is admitted unjudged (counted in
``cold_overruns``). ``keep_warm_ms`` (the daemon's and ``Embedded``'s keep-warm
thread) runs the idle model untimed to prevent that. This measures both sides,
interleaved round by round so a noisy machine slows all alike: per bundle and
keep-warm setting, ``--ios`` decisions each after ``--idle-ms`` of nothing
(the in-process ``Embedded`` path: ``admit`` + ``complete``), beside the same
admission's back-to-back (warm) decisions. Reported: warm p50, cold p50 / p90 /
max of the wall time of ``admit``, cold p90 / warm p50, and how many of the cold
decisions overran the budget. Timings are per machine and never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mittd.traces.schema import OP_READ

__all__ = ["render", "run_cold"]

WARM_IOS = 500  # back-to-back decisions: the warm baseline (after as many unmeasured)


def _admission(bundle: Path, keep_warm_ms: int, engine: str, budget_us: float) -> Any:
    from mittd.daemon.embedded import Embedded

    return Embedded.from_bundles({"d": bundle}, engine=engine, keep_warm_ms=keep_warm_ms,
                                 predict_budget_us=budget_us)


def _decide(adm: Any, rng: np.random.Generator) -> float:
    """One timed decision (µs of wall time of admit), completed at once if admitted."""
    off = int(rng.integers(0, 1 << 28)) * 4096
    t0 = time.perf_counter_ns()
    ticket = adm.admit("d", OP_READ, off, 4096, 0)
    dt = (time.perf_counter_ns() - t0) / 1000.0
    if ticket:
        adm.complete("d", ticket, float(rng.lognormal(4.5, 0.5)))
    return dt


def _one(bundle: Path, keep_warm_ms: int, idle_ms: float, ios: int, engine: str,
         budget_us: float, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    with _admission(bundle, keep_warm_ms, engine, budget_us) as adm:
        for _ in range(WARM_IOS):
            _decide(adm, rng)
        warm = [_decide(adm, rng) for _ in range(WARM_IOS)]
        before = adm.stats()["d"]
        cold = []
        for _ in range(ios):
            time.sleep(idle_ms / 1000.0)
            cold.append(_decide(adm, rng))
        after = adm.stats()["d"]
    return {"warm_us": warm, "cold_us": cold,
            "overruns": after.overruns - before.overruns,
            "cold_overruns": after.cold_overruns - before.cold_overruns,
            "warm_ticks": after.warm_ticks - before.warm_ticks}


def run_cold(bundles: Sequence[str | Path], *, idle_ms: float = 1000.0, ios: int = 20,
             rounds: int = 1, keep_warm_ms: int = 100, engine: str = "auto",
             budget_us: float = 50.0, seed: int = 0,
             say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Per bundle, keep-warm off and on, interleaved over ``rounds``."""
    settings = (0, keep_warm_ms)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in range(rounds):
        for b in bundles:
            order = settings if r % 2 == 0 else settings[::-1]
            for kw in order:
                say(f"round {r + 1}/{rounds}: {Path(b).name} keep_warm_ms={kw} "
                    f"({ios} IOs, {idle_ms:g} ms apart)")
                runs.setdefault((str(b), kw), []).append(
                    _one(Path(b), kw, idle_ms, ios, engine, budget_us, seed + r))
    rows = []
    for (b, kw), rs in runs.items():
        warm = np.concatenate([x["warm_us"] for x in rs])
        cold = np.concatenate([x["cold_us"] for x in rs])
        n = len(cold)
        over = sum(x["overruns"] for x in rs)
        w50, c90 = float(np.median(warm)), float(np.percentile(cold, 90))
        rows.append({
            "bundle": Path(b).name, "keep_warm_ms": kw, "cold_ios": n,
            "warm_p50_us": w50, "cold_p50_us": float(np.median(cold)), "cold_p90_us": c90,
            "cold_max_us": float(cold.max()), "cold_p90_over_warm_p50": c90 / w50,
            "overruns": over, "overrun_share": over / n,
            "cold_overruns": sum(x["cold_overruns"] for x in rs),
            "warm_ticks": sum(x["warm_ticks"] for x in rs),
        })
    return {"idle_ms": idle_ms, "ios": ios, "rounds": rounds, "engine": engine,
            "budget_us": budget_us, "rows": rows}


def render(r: dict[str, Any]) -> str:
    head = (f"decisions after {r['idle_ms']:g} ms idle ({r['ios']} per round, {r['rounds']} "
            f"round(s), engine {r['engine']}, budget {r['budget_us']:g} µs); wall time of "
            "admit, µs")
    cols = (f"{'bundle':<32}{'keep-warm':>10}{'warm p50':>10}{'cold p50':>10}{'p90':>9}"
            f"{'max':>9}{'p90/warm':>10}{'overruns':>10}{'ticks':>7}")
    lines = [head, cols]
    for x in r["rows"]:
        kw = f"{x['keep_warm_ms']} ms" if x["keep_warm_ms"] else "off"
        lines.append(
            f"{x['bundle']:<32}{kw:>10}{x['warm_p50_us']:>10.1f}{x['cold_p50_us']:>10.1f}"
            f"{x['cold_p90_us']:>9.1f}{x['cold_max_us']:>9.0f}"
            f"{x['cold_p90_over_warm_p50']:>9.1f}x"
            f"{x['overruns']:>5}/{x['cold_ios']:<4}{x['warm_ticks']:>7}")
    return "\n".join(lines)
