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
decisions overran the budget. Beside them, the floors: a no-op Python call and a
no-op compiled (numba) call after the same idle spell, so a cold ``admit`` can be
read against what any call costs after idle on this machine (on our shared VM a
thread asleep for half a millisecond already wakes to cold caches; ``--busy``
spins instead, to tell sleeping from the neighbours' evictions). Timings are per
machine and never asserted.
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


def _predict_ns(adm: Any) -> float:
    """The device's summed timed prediction ns (the budget's clock) so far."""
    return float(adm.stats()["d"].predict_ns.sum)


def _decide(adm: Any, rng: np.random.Generator) -> tuple[float, float]:
    """One decision, completed at once if admitted: (µs of wall time of admit, µs of
    its timed prediction, the part the budget judges)."""
    off = int(rng.integers(0, 1 << 28)) * 4096
    p0 = _predict_ns(adm)
    t0 = time.perf_counter_ns()
    ticket = adm.admit("d", OP_READ, off, 4096, 0)
    dt = (time.perf_counter_ns() - t0) / 1000.0
    pt = (_predict_ns(adm) - p0) / 1000.0
    if ticket:
        adm.complete("d", ticket, float(rng.lognormal(4.5, 0.5)))
    return dt, pt


def _noop() -> None:
    """The Python floor: a call that does nothing."""


def _floor_calls() -> dict[str, Callable[[], Any]]:
    """The no-op calls timed after idle beside the decisions."""
    from mittd.daemon.fastpath import monotonic_ns

    monotonic_ns()  # compiled (or loaded) now, not in the first timed call
    return {"python no-op call": _noop, "compiled no-op call (numba clock read)": monotonic_ns}


def _time_call(f: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    f()
    return (time.perf_counter_ns() - t0) / 1000.0


def _idle(idle_ms: float, busy: bool) -> None:
    """Sleep ``idle_ms``, or spin on the clock for it (``busy``: the thread keeps its
    CPU, so what goes cold is what the rest of the machine evicts)."""
    if not busy:
        time.sleep(idle_ms / 1000.0)
        return
    end = time.perf_counter_ns() + int(idle_ms * 1e6)
    while time.perf_counter_ns() < end:
        pass


def _warm(call: Callable[[], Any]) -> np.ndarray:
    """``call``'s results back to back, WARM_IOS of them after as many unkept."""
    for _ in range(WARM_IOS):
        call()
    return np.array([call() for _ in range(WARM_IOS)])


def _cold(call: Callable[[], Any], idle_ms: float, ios: int, busy: bool) -> np.ndarray:
    """``call``'s results, ``ios`` of them, each after ``idle_ms`` of idling."""
    out = []
    for _ in range(ios):
        _idle(idle_ms, busy)
        out.append(call())
    return np.array(out)


def _floors(idle_ms: float, ios: int, busy: bool) -> dict[str, dict[str, np.ndarray]]:
    """Per no-op call: WARM_IOS back-to-back timings, and ``ios`` after ``idle_ms`` each."""
    out = {}
    for name, f in _floor_calls().items():
        def timed(f: Callable[[], Any] = f) -> float:
            return _time_call(f)

        out[name] = {"warm_us": _warm(timed), "cold_us": _cold(timed, idle_ms, ios, busy)}
    return out


def _one(bundle: Path, keep_warm_ms: int, idle_ms: float, ios: int, engine: str,
         budget_us: float, seed: int, busy: bool) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    with _admission(bundle, keep_warm_ms, engine, budget_us) as adm:
        warm = _warm(lambda: _decide(adm, rng))
        before = adm.stats()["d"]
        cold_a = _cold(lambda: _decide(adm, rng), idle_ms, ios, busy).reshape(-1, 2)
        after = adm.stats()["d"]
    return {"warm_us": warm[:, 0], "warm_predict_us": warm[:, 1],
            "cold_us": cold_a[:, 0], "cold_predict_us": cold_a[:, 1],
            "overruns": after.overruns - before.overruns,
            "cold_overruns": after.cold_overruns - before.cold_overruns,
            "warm_ticks": after.warm_ticks - before.warm_ticks}


def _spread(warm: np.ndarray, cold: np.ndarray, part: str = "") -> dict[str, float]:
    """Warm p50, cold p50 / p90 / max and cold p90 over warm p50 (µs), keyed with
    ``part`` after warm/cold (``_predict``: the timed prediction's)."""
    w50, c90 = float(np.median(warm)), float(np.percentile(cold, 90))
    return {f"warm{part}_p50_us": w50, f"cold{part}_p50_us": float(np.median(cold)),
            f"cold{part}_p90_us": c90, f"cold{part}_max_us": float(cold.max()),
            f"cold{part}_p90_over_warm_p50": c90 / w50 if w50 > 0 else float("inf")}


def run_cold(bundles: Sequence[str | Path], *, idle_ms: float = 1000.0, ios: int = 20,
             rounds: int = 1, keep_warm_ms: int = 100, engine: str = "auto",
             budget_us: float = 50.0, seed: int = 0, busy: bool = False,
             say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Per bundle, keep-warm off and on, interleaved over ``rounds``; ``busy`` spins
    through each idle spell instead of sleeping."""
    settings = (0, keep_warm_ms)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    floors: dict[str, list[dict[str, np.ndarray]]] = {}
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}: no-op calls ({ios} each, {idle_ms:g} ms apart)")
        for name, got in _floors(idle_ms, ios, busy).items():
            floors.setdefault(name, []).append(got)
        for b in bundles:
            order = settings if r % 2 == 0 else settings[::-1]
            for kw in order:
                say(f"round {r + 1}/{rounds}: {Path(b).name} keep_warm_ms={kw} "
                    f"({ios} IOs, {idle_ms:g} ms apart)")
                runs.setdefault((str(b), kw), []).append(
                    _one(Path(b), kw, idle_ms, ios, engine, budget_us, seed + r, busy))
    rows = []
    for (b, kw), rs in runs.items():
        warm, cold, warm_p, cold_p = (np.concatenate([x[key] for x in rs]) for key in (
            "warm_us", "cold_us", "warm_predict_us", "cold_predict_us"))
        n = len(cold)
        over = sum(x["overruns"] for x in rs)
        rows.append({
            "bundle": Path(b).name, "keep_warm_ms": kw, "cold_ios": n,
            **_spread(warm, cold), **_spread(warm_p, cold_p, "_predict"),
            "overruns": over, "overrun_share": over / n,
            "cold_overruns": sum(x["cold_overruns"] for x in rs),
            "warm_ticks": sum(x["warm_ticks"] for x in rs),
        })
    floor_rows = []
    for name, rs in floors.items():
        warm, cold = (np.concatenate([x[key] for x in rs]) for key in ("warm_us", "cold_us"))
        floor_rows.append({"call": name, "cold_calls": len(cold), **_spread(warm, cold)})
    return {"idle_ms": idle_ms, "busy": busy, "ios": ios, "rounds": rounds, "engine": engine,
            "budget_us": budget_us, "rows": rows, "floors": floor_rows}


def render(r: dict[str, Any]) -> str:
    idle = "spinning" if r.get("busy") else "idle"
    head = (f"decisions after {r['idle_ms']:g} ms {idle} ({r['ios']} per round, {r['rounds']} "
            f"round(s), engine {r['engine']}, budget {r['budget_us']:g} µs); wall time of "
            "admit, and of its timed prediction (featurise + model: what the budget "
            "judges), µs")
    cols = (f"{'bundle':<28}{'keep-warm':>10} | {'admit: warm p50':>15}{'cold p50':>9}"
            f"{'p90':>7}{'max':>7}{'p90/warm':>9} | {'predict: warm p50':>17}{'cold p50':>9}"
            f"{'p90':>7}{'max':>7}{'p90/warm':>9} | {'overruns':>9}{'ticks':>7}")
    lines = [head, cols]
    for x in r["rows"]:
        kw = f"{x['keep_warm_ms']} ms" if x["keep_warm_ms"] else "off"
        lines.append(
            f"{x['bundle']:<28}{kw:>10} | {x['warm_p50_us']:>15.1f}{x['cold_p50_us']:>9.1f}"
            f"{x['cold_p90_us']:>7.1f}{x['cold_max_us']:>7.0f}"
            f"{x['cold_p90_over_warm_p50']:>8.1f}x | {x['warm_predict_p50_us']:>17.2f}"
            f"{x['cold_predict_p50_us']:>9.2f}{x['cold_predict_p90_us']:>7.2f}"
            f"{x['cold_predict_max_us']:>7.0f}{x['cold_predict_p90_over_warm_p50']:>8.1f}x | "
            f"{x['overruns']:>4}/{x['cold_ios']:<4}{x['warm_ticks']:>7}")
    lines += ["", "floors: the same idle before a call that does nothing, µs",
              f"{'call':<40} | {'warm p50':>9}{'cold p50':>9}{'p90':>7}{'max':>7}"
              f"{'p90/warm':>9}"]
    for x in r.get("floors", []):
        lines.append(f"{x['call']:<40} | {x['warm_p50_us']:>9.2f}{x['cold_p50_us']:>9.2f}"
                     f"{x['cold_p90_us']:>7.1f}{x['cold_max_us']:>7.0f}"
                     f"{x['cold_p90_over_warm_p50']:>8.1f}x")
    return "\n".join(lines)
