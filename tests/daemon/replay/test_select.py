"""Decision policies chosen on a validation window: the lock-in regression, the reject
cap, the selection rule (hedging when the tail is not predictable), mittd+hedging,
and the replica warnings."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from mittd.daemon.replay import Model, Replica, replay_model, self_replica, trace_from_table
from mittd.daemon.replay.select import select_policy
from mittd.daemon.replay.traces import replica_notes, slow_correlation
from mittd.predictor.bundle import Bundle
from mittd.predictor.features import LinnOSFeaturiser
from mittd.predictor.models import build_model
from mittd.predictor.policy import REJECT_WINDOW, DecisionPolicy
from mittd.traces.schema import make_batch


def empty_queue_model(cap: float | None = None) -> Model:
    """LinnOS's network, set by hand to answer P(slow) ~ 0.99 when the device's queue is
    empty and ~ 0.007 otherwise: confident exactly where rejections drive it."""
    feat = LinnOSFeaturiser()
    g = build_model("linnos")
    k1 = np.zeros((31, 256), np.float32)
    b1 = np.zeros(256, np.float32)
    k1[:3, 0] = -10.0  # the current queue length's three digits
    b1[0] = 1.0  # unit 0 = relu(1 - 10 * digits): 1 on an empty queue, else 0
    k2 = np.zeros((256, 2), np.float32)
    b2 = np.array([0.0, -5.0], np.float32)
    k2[0, 1] = 10.0  # slow - fast = 10 * unit0 - 5
    policy = {} if cap is None else {"mode": "reject", "max_reject_share": cap}
    b = Bundle(g, {"fc1": (k1, b1), "logits": (k2, b2)}, feat.config(),
               thresholds={"latency_us": [200.0], "p_slow": [0.5]}, policy=policy)
    return Model("empty-queue", "empty-queue.mittd", b)


def trace(n: int = 6000, seed: int = 0, burst_every: int = 1500) -> pa.Table:
    """Reads every 100 µs (each takes 60 µs: the queue is mostly empty), slow in bursts."""
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 100
    lat = rng.uniform(40, 80, n)
    for s in range(burst_every // 3, n, burst_every):
        lat[s:s + 60] = rng.uniform(800, 1500, 60)
    return pa.Table.from_batches([make_batch(ts, lat, np.zeros(n, np.int8),
                                             rng.integers(0, 1 << 18, n) * 4096,
                                             np.full(n, 4096), "dev")])


def test_a_model_confident_on_empty_queues_locks_in_without_the_cap() -> None:
    tr = trace_from_table(trace(), "t")
    res = replay_model(tr, [self_replica(tr)], empty_queue_model(), 200.0, engine="dense",
                       max_reject_share=1.0)
    share = float(res.rejected[tr.known_reads].mean())
    assert share > 0.9  # the old failure: only the probes get through
    assert res.lock_in and any("lock-in signature" in n for n in res.notes)


@pytest.mark.parametrize("cap", [0.05, 0.2])
def test_the_reject_cap_holds_whatever_the_model_says(cap: float) -> None:
    tr = trace_from_table(trace(), "t")
    res = replay_model(tr, [self_replica(tr)], empty_queue_model(cap), 200.0, engine="dense")
    share = float(res.rejected[tr.known_reads].mean())
    n = int(tr.known_reads.sum())
    assert share <= cap + (REJECT_WINDOW * math.log(1 / (1 - cap)) + 1) / n  # the docs' bound
    assert share >= 0.8 * cap  # and the cap is what binds, not the model
    assert res.counters["primary"].capped > 0
    assert res.lock_in  # the signature is still reported: the model is out of support


def test_selection_never_picks_a_locked_in_model() -> None:
    tr = trace_from_table(trace(), "t")
    sel = select_policy(empty_queue_model(), tr, self_replica(tr), 200.0, engine="dense")
    assert sel.policy.mode == "hedge" and sel.p_cutoff == 1.0
    assert "hedging recommended on this device" in sel.policy.reason
    assert all(not c.feasible for c in sel.candidates if c.lock_in)


def oracle_like_model(tr_table: pa.Table) -> Model:
    """A model that sees the future: P(slow) from the read's own latency, encoded in its
    LBA (the scripted trace puts each read's latency class in its offset)."""
    from mittd.predictor.features import LBAFeaturiser
    from mittd.predictor.graph import GraphBuilder

    feat = LBAFeaturiser(pending=0, lba_bytes=4)
    b = GraphBuilder("oracle_like", feat.dim)
    g = b.build(b.dense("input", 1, name="out"), head="sigmoid")
    k = np.zeros((feat.dim, 1), np.float32)
    k[31, 0] = 12.0  # the LBA's lowest bit: 1 for slow reads
    return Model("oracle-like", "o.mittd",
                 Bundle(g, {"out": (k, np.array([-6.0], np.float32))}, feat.config(),
                        thresholds={"latency_us": [200.0], "p_slow": [0.5]}))


def predictable_trace(n: int = 20000, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 100
    slow = rng.random(n) < 0.02
    lat = np.where(slow, rng.uniform(2000, 4000, n), rng.uniform(40, 120, n))
    lba = rng.integers(0, 1 << 17, n) * 2 + slow  # the lowest LBA bit says "slow"
    return pa.Table.from_batches([make_batch(ts, lat, np.zeros(n, np.int8), lba * 4096,
                                             np.full(n, 4096), "dev")])


def test_selection_rejects_when_the_tail_is_predictable() -> None:
    t = predictable_trace()
    tr = trace_from_table(t, "p")
    rep = Replica("r", trace_from_table(predictable_trace(seed=2), "r"))
    sel = select_policy(oracle_like_model(t), tr, rep, 200.0, engine="dense")
    assert sel.policy.mode in ("reject", "both")
    assert sel.chosen.robust_p99_us <= 0.97 * sel.hedge.p99_us
    assert sel.chosen.extra_ios <= sel.hedge.extra_ios
    assert 0.0 < sel.p_cutoff < 1.0 and sel.policy.max_reject_share == pytest.approx(0.048)
    assert "lower" in sel.policy.reason


def test_mittd_plus_hedging_hedges_the_admitted_reads() -> None:
    t = predictable_trace()
    tr = trace_from_table(t, "p")
    rep = Replica("r", trace_from_table(predictable_trace(seed=2), "r"))
    m = oracle_like_model(t)
    reject = replay_model(tr, [rep], m, 200.0, engine="dense", mode="reject")
    both = replay_model(tr, [rep], m, 200.0, engine="dense", mode="both", hedge_after_us=100.0)
    assert both.failovers == reject.failovers and both.hedges > 0
    admitted = tr.known_reads & (both.served_by == 0)
    assert np.all(both.latency_us[admitted] <= reject.latency_us[admitted])
    assert np.array_equal(both.latency_us[~admitted], reject.latency_us[~admitted])
    with pytest.raises(Exception, match="hedging delay"):
        replay_model(tr, [rep], m, 200.0, engine="dense", mode="both")


def test_replica_notes_warn_about_self_shift_and_correlated_slowness() -> None:
    tr = trace_from_table(trace(n=6000, burst_every=1000), "t")  # bursts every 0.1 s
    shifted = self_replica(tr)  # half the duration: a multiple of the burst period
    notes = replica_notes(tr, [shifted], given=False)
    assert any("shifted" in n for n in notes)
    assert slow_correlation(tr, shifted) > 0.5
    assert any("lines up periodic bursts" in n for n in notes)
    other = Replica("other", trace_from_table(trace(n=6000, seed=3, burst_every=1370), "o"))
    assert slow_correlation(tr, other) < 0.3
    assert replica_notes(tr, [other], given=True) == []


def test_decision_policy_fields_are_validated() -> None:
    assert DecisionPolicy.from_dict({}).mode == "reject"
    p = DecisionPolicy.from_dict({"mode": "both", "hedge_after_us": 250, "max_reject_share": 0.02,
                                  "reason": "why"})
    assert p.rejects and p.hedges and "hedge after 250 µs" in p.describe()
    for bad, field in [({"mode": "maybe"}, "mode"), ({"mode": "hedge"}, "hedge_after_us"),
                       ({"max_reject_share": 0}, "max_reject_share"),
                       ({"max_reject_share": "x"}, "max_reject_share"),
                       ({"surprise": 1}, "unknown field"), ({"hedge_percentile": 100}, "pct")]:
        with pytest.raises(ValueError, match=field.replace("pct", "hedge_percentile")):
            DecisionPolicy.from_dict(bad)
