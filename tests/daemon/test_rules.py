"""One decision routine: the same IOs decided one by one (``admit``) and in bursts
(``admit_burst``) get the same decisions, reasons, P(slow) and counters, through
every rule — beyond the model, predicted admit/reject, probes, overruns, fail-open.

The model is scripted: a stand-in engine reads the request's own LBA from the
first 32 input bits (the ``lba`` featuriser's slot 0) and answers a margin chosen
per LBA, so a decision does not depend on what else is pending and the bursts'
"earlier IOs of the burst are pending" rule cannot make the two paths differ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mittd.daemon.admission import COUNT_NAMES, REASONS, AdmissionCore
from mittd.daemon.devices import build_state
from mittd.predictor.bundle import Bundle
from mittd.predictor.engine import Engine
from mittd.predictor.features import LBAFeaturiser
from mittd.predictor.graph import GraphBuilder, init_params

BITS = 1 << np.arange(31, -1, -1, dtype=np.int64)  # slot 0, byte 0 first, MSB first
THRESHOLD_US = 500.0


class ScriptedEngine(Engine):
    """Margin per request LBA; LBAs in ``failing`` raise (a predictor fault)."""

    name = "scripted"

    def __init__(self, bundle: Bundle, margins: dict[int, float], failing: set[int]) -> None:
        super().__init__(bundle.graph, bundle.params)
        self._in = np.zeros(bundle.graph.input_dim, np.float32)
        self._out = np.zeros(1, np.float32)
        self.margins_by_lba = margins
        self.failing = failing

    @property
    def input(self) -> np.ndarray:
        return self._in

    def _margin(self, row: np.ndarray) -> float:
        lba = int(row[:32].astype(np.int64) @ BITS)
        if lba in self.failing:
            raise FloatingPointError(f"scripted fault at LBA {lba}")
        return self.margins_by_lba[lba]

    def run1(self) -> np.ndarray:
        self._out[0] = self._margin(self._in)
        return self._out

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.array([[self._margin(r)] for r in x], np.float32)


class ScriptedClock:
    """perf_counter_ns stand-in: the prediction after ``overrun_next()`` takes 1 s."""

    def __init__(self) -> None:
        self.t = 0
        self.calls = 0
        self.slow = False

    def overrun_next(self, slow: bool) -> None:
        self.slow, self.calls = slow, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls % 2 == 0 and self.slow:
            self.t += 1_000_000_000
        self.t += 100
        return self.t


def bundle() -> Bundle:
    feat = LBAFeaturiser(pending=3, lba_bytes=4)
    b = GraphBuilder("scripted", feat.dim)
    graph = b.build(b.dense("input", 1, name="out"), head="sigmoid")
    return Bundle(graph, init_params(graph), feat.config(),
                  thresholds={"latency_us": [THRESHOLD_US], "p_slow": [0.5]},
                  policy={"mode": "reject", "max_reject_share": 0.06})  # the cap binds


def workload(n: int, seed: int) -> dict[str, np.ndarray]:
    """n reads on distinct LBAs: a third predicted slow in runs (probes fire), some
    deadlines beyond the model and a few below it, a few predictor faults and
    overruns."""
    rng = np.random.default_rng(seed)
    lba = rng.permutation(1 << 20)[:n].astype(np.int64) + 1
    slow = rng.random(n) < 0.35
    slow[n // 4:n // 4 + 12] = True  # a long run of predicted rejections: probes
    margin = np.where(slow, 4.0, -4.0) + rng.normal(0, 0.5, n)
    beyond = rng.random(n) < 0.1
    fail, overrun = rng.random(n) < 0.05, rng.random(n) < 0.08
    below = ~beyond & (rng.random(n) < 0.04)  # deadline-below-model: EBUSY, not asked
    return {"lba": lba, "margin": margin,
            "deadline": np.where(beyond, 1e7, np.where(below, 1.0, 0.0)),
            "fail": fail, "overrun": overrun}


def cores(w: dict[str, np.ndarray], probe_after: int, fail_open_on_overrun: bool = True,
          mode: str = "enforce",
          ) -> tuple[AdmissionCore, AdmissionCore, ScriptedClock, ScriptedClock]:
    b = bundle()
    margins = dict(zip(w["lba"].tolist(), w["margin"].tolist(), strict=True))
    failing = set(w["lba"][w["fail"]].tolist())
    made = []
    for _ in range(2):
        clock = ScriptedClock()
        engine = ScriptedEngine(b, margins, failing)
        core = AdmissionCore({"d": build_state(b, engine, mode=mode)}, predict_budget_us=50.0,
                             clock=clock, probe_after=probe_after,
                             fail_open_on_overrun=fail_open_on_overrun)
        made += [core, clock]
    return made[0], made[2], made[1], made[3]


def counts(core: AdmissionCore) -> dict[str, int]:
    s = core.stats()["d"]
    return {**{k: getattr(s, k) for k in COUNT_NAMES}, "pending": s.pending}


@pytest.mark.parametrize(("probe_after", "fail_open_on_overrun", "mode"),
                         [(3, True, "enforce"), (0, True, "enforce"), (2, False, "enforce"),
                          (3, True, "shadow"), (2, False, "shadow")])
def test_admit_and_bursts_of_one_agree_on_every_rule(probe_after: int,
                                                     fail_open_on_overrun: bool,
                                                     mode: str) -> None:
    w = workload(400, seed=probe_after)
    one, burst, c1, c2 = cores(w, probe_after, fail_open_on_overrun, mode)
    seen = set()
    for i in range(len(w["lba"])):
        off = int(w["lba"][i]) * 4096
        dl = float(w["deadline"][i])
        c1.overrun_next(bool(w["overrun"][i]))
        d = one.admit("d", 0, off, 4096, dl, i + 1, 10 * i)
        c2.overrun_next(bool(w["overrun"][i]))
        b = burst.admit_burst("d", np.zeros(1), np.array([off]), np.array([4096]),
                              np.array([dl]), np.array([i + 1]), 10 * i)
        assert bool(b.admit[0]) == d.admit, i
        assert REASONS[b.reason[0]] == d.reason.split(":")[0], i
        assert bool(b.fail_open[0]) == d.fail_open, i
        assert (b.threshold_index[0] if b.threshold_index[0] >= 0 else None) == \
            d.threshold_index, i
        if math.isnan(d.p_slow):
            assert math.isnan(b.p_slow[0]), i
        else:
            assert b.p_slow[0] == pytest.approx(d.p_slow, abs=1e-6), i
        seen.add(d.reason.split(":")[0])
        if i % 7 == 3:  # completions keep the pending sets equal too
            assert one.complete("d", i + 1, 100.0, 10 * i + 5) == \
                bool(burst.complete_burst("d", np.array([i + 1]), np.array([100.0]),
                                          10 * i + 5))
    assert counts(one) == counts(burst)
    assert seen == set(REASONS) - ({"probe"} if probe_after == 0 else set()) - (
        {"shadow"} if mode == "enforce" else {"deadline-below-model"})
    if mode == "shadow":  # never rejects; counts what enforcing would have rejected
        assert counts(one)["rejected"] == 0 and counts(one)["shadow_rejects"] > 0


def test_bursts_decide_as_one_by_one_when_features_do_not_differ() -> None:
    w = workload(300, seed=7)
    w["fail"][:] = False  # a fault fails a whole burst open, one IO alone
    w["overrun"][:] = False  # an overrun is judged for a whole burst
    one, burst, _, _ = cores(w, probe_after=3)
    lba, dl = w["lba"], w["deadline"]
    single = [one.admit("d", 0, int(lba[i]) * 4096, 4096, float(dl[i]), i + 1, 5)
              for i in range(len(lba))]
    got = []
    for lo in range(0, len(lba), 32):
        hi = min(lo + 32, len(lba))
        n = hi - lo
        b = burst.admit_burst("d", np.zeros(n), lba[lo:hi] * 4096, np.full(n, 4096),
                              dl[lo:hi], np.arange(lo, hi) + 1, 5)
        got += [(bool(a), REASONS[r]) for a, r in zip(b.admit, b.reason, strict=True)]
    assert got == [(d.admit, d.reason) for d in single]
    assert counts(one) == counts(burst)
    assert {r for _, r in got} == {"predicted", "deadline-beyond-model", "probe", "reject-cap",
                                   "deadline-below-model"}
