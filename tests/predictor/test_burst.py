"""The burst path (AdmitStream columns): with a compiled plan, the whole burst in one
kernel call that decides each IO as ``admit`` would alone; otherwise featurise many
IOs in one kernel call, decide them with one batched model run, withdraw the
rejected; batched completions; the core's histograms and their Prometheus form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mittd.daemon import ring
from mittd.daemon.admission import COUNT_NAMES, REASONS, AdmissionCore
from mittd.daemon.devices import build_state
from mittd.daemon.histogram import Histogram
from mittd.daemon.metrics import CoreCollector
from mittd.predictor.burst import encode_burst
from mittd.predictor.features import (
    HeimdallFeaturiser,
    LBAFeaturiser,
    LBAHistFeaturiser,
    LinnOSFeaturiser,
)
from mittd.predictor.synthetic import synthetic_bundle

N = 64


@pytest.fixture(scope="module")
def bundle():  # type: ignore[no-untyped-def]
    return synthetic_bundle("precise_linear", 0.95, "node")


def core(bundle, p=None, budget=1e9, fuse=True, **kw) -> AdmissionCore:  # type: ignore[no-untyped-def]
    return AdmissionCore({"d": build_state(bundle, "auto", decision_threshold=p,
                                           max_reject_share=1.0)},
                         predict_budget_us=budget, fuse=fuse, **kw)


def ios(n: int = N, seed: int = 0, base: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, n), rng.integers(0, 1 << 22, n) * 4096,
            rng.choice([4096, 16384], n), np.zeros(n), base + np.arange(1, n + 1))


def heimdall() -> HeimdallFeaturiser:
    f = HeimdallFeaturiser()
    rng = np.random.default_rng(1)
    return f.fit_raw(rng.random((50, f.dim)) * 1000)


def lba_hist() -> LBAHistFeaturiser:
    f = LBAHistFeaturiser()
    rng = np.random.default_rng(1)
    return f.fit_raw(rng.random((50, f.fit_dim)) * 1000)


class _Slow(LBAFeaturiser):
    """A subclass: encode_burst must take the one-by-one fallback for it."""


@pytest.mark.parametrize("make", [LBAFeaturiser, LinnOSFeaturiser, heimdall, lba_hist])
def test_burst_kernel_equals_encode_then_issue_one_by_one(make) -> None:  # type: ignore[no-untyped-def]
    f = make()
    fast, slow = f.make_tracker(), f.make_tracker()
    for i in range(30):  # some history and pending requests first
        off = (i * 7919 % 1000) * 4096
        for t in (fast, slow):
            t.issue(1000 + i, i * 10, off, 4096, i % 2)
            if i % 3 == 0:
                t.complete(1000 + i, i * 10 + 5, 40.0 + i)
    op, off, size, _, ids = ios(40)
    x_fast = np.zeros((40, f.dim), np.float32)
    encode_burst(f, fast, 400, ids, off, size, op, x_fast)
    x_slow = np.zeros((40, f.dim), np.float32)
    slow.expire(400)
    for j in range(40):
        f.encode_live(slow, int(off[j]), int(size[j]), int(op[j]), x_slow[j])
        slow.issue(int(ids[j]), 400, int(off[j]), int(size[j]), int(op[j]))
    assert np.array_equal(x_fast, x_slow)
    assert np.array_equal(fast.pend, slow.pend) and np.array_equal(fast.meta, slow.meta)
    assert set(fast.pending_ids()) == set(slow.pending_ids())


def test_fallback_for_unknown_featuriser_classes_matches_the_kernel() -> None:
    a, b = LBAFeaturiser(), _Slow()
    ta, tb = a.make_tracker(), b.make_tracker()
    op, off, size, _, ids = ios(N)
    xa, xb = np.zeros((N, a.dim), np.float32), np.zeros((N, b.dim), np.float32)
    encode_burst(a, ta, 10, ids, off, size, op, xa)
    encode_burst(b, tb, 10, ids, off, size, op, xb)
    assert np.array_equal(xa, xb) and np.array_equal(ta.pend, tb.pend)


def test_burst_with_every_io_admitted_equals_admit_one_by_one(bundle) -> None:  # type: ignore[no-untyped-def]
    burst, single = core(bundle, p=1.0), core(bundle, p=1.0)
    op, off, size, dl, ids = ios()
    d = burst.admit_burst("d", op, off, size, dl, ids, 500)
    ref = [single.admit("d", int(o), int(f), int(s), 0.0, int(i), 500)
           for o, f, s, i in zip(op, off, size, ids, strict=True)]
    assert d.admit.all() and all(r.admit for r in ref)
    np.testing.assert_allclose(d.p_slow, [r.p_slow for r in ref], rtol=1e-4, atol=1e-6)
    a, b = burst.state("d").tracker, single.state("d").tracker
    assert np.array_equal(a.pend, b.pend) and set(a.pending_ids()) == set(b.pending_ids())
    assert burst.stats()["d"].admitted == N


def test_rejected_ios_are_withdrawn_and_counted(bundle) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle, p=0.0)  # P(slow) > 0: every prediction rejects
    op, off, size, dl, ids = ios()
    d = c.admit_burst("d", op, off, size, dl, ids, 500)
    assert not d.admit.any() and not d.fail_open.any()
    st = c.stats()["d"]
    assert st.rejected == N and st.admitted == 0 and st.pending == 0
    t = c.state("d").tracker
    assert t.stats().dropped == 0 and len(t.pending_ids()) == 0
    assert st.predict_ns.count == N


def test_mixed_decisions_leave_exactly_the_admitted_pending(bundle) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle)
    op, off, size, dl, ids = ios(256)
    d = c.admit_burst("d", op, off, size, dl, ids, 500)
    assert set(c.state("d").tracker.pending_ids()) == set(ids[d.admit].tolist())
    assert set(c.state("d").deadlines) == set(ids[d.admit].tolist())


def test_deadline_beyond_the_model_admits_without_prediction(bundle) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle, p=0.0)
    op, off, size, _, ids = ios(8)
    dl = np.full(8, 3_600_000_000.0)
    dl[:4] = 0  # the default: the first threshold, judged (and rejected)
    d = c.admit_burst("d", op, off, size, dl, ids, 1)
    assert list(d.admit) == [False] * 4 + [True] * 4
    assert np.isnan(d.p_slow[4:]).all() and (d.threshold_index[4:] == -1).all()
    assert c.stats()["d"].beyond_model == 4


def test_a_predictor_fault_admits_the_whole_burst(bundle) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle, p=0.0, fuse=False)  # the batched path: its engine call can fail
    def boom(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("engine down")
    c.state("d").engine.logits = boom  # type: ignore[method-assign]
    op, off, size, dl, ids = ios(16)
    d = c.admit_burst("d", op, off, size, dl, ids, 1)
    assert d.admit.all() and d.fail_open.all() and np.isnan(d.p_slow).all()
    st = c.stats()["d"]
    assert st.fail_open == 16 and st.pending == 16


@pytest.mark.parametrize("fuse", [True, False])
def test_an_overrun_burst_fails_open(bundle, fuse) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle, p=0.0, budget=0.0, fuse=fuse)  # every burst (and IO) overruns a zero budget
    op, off, size, dl, ids = ios(16)
    d = c.admit_burst("d", op, off, size, dl, ids, 1)
    assert d.admit.all() and d.fail_open.all()
    assert c.stats()["d"].overruns == 16


def test_bad_bursts_are_refused(bundle) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle)
    op, off, size, dl, ids = ios(4)
    with pytest.raises(ValueError, match="unique"):
        c.admit_burst("d", op, off, size, dl, np.array([1, 2, 2, 3]), 1)
    with pytest.raises(ValueError, match="NaN"):
        c.admit_burst("d", op, off, size, np.array([0, math.nan, 0, 0]), ids, 1)
    with pytest.raises(ValueError, match="same length"):
        c.admit_burst("d", op[:3], off, size, dl, ids, 1)
    assert c.stats()["d"].pending == 0


@pytest.mark.parametrize(("column", "value", "message"),
                         [(0, 3, "ops[2] must be an op code: 0 read, 1 write, 2 other, got 3"),
                          (1, -4096, "offsets[2] must be an int >= 0, got -4096"),
                          (2, 0, "lengths[2] must be an int > 0, got 0")])
@pytest.mark.parametrize("fuse", [True, False])
def test_a_bad_column_value_is_named_and_nothing_is_decided(bundle, fuse, column, value,  # type: ignore[no-untyped-def]
                                                            message) -> None:
    c = core(bundle, fuse=fuse)
    cols = list(ios(4))
    cols[column] = cols[column].copy()
    cols[column][2] = value
    with pytest.raises(ValueError) as e:
        c.admit_burst("d", *cols, 1)
    assert str(e.value) == message
    st = c.stats()["d"]
    assert st.pending == 0 and st.admitted == st.rejected == 0


def _mixed_traffic(c: AdmissionCore, rounds: int = 12) -> list[tuple]:
    """Bursts of 1-300 IOs (up to the tracker's capacity and past it), ids reused while
    pending, deadlines beyond and below the model, completions and expiries between;
    the answers, as comparable tuples."""
    rng = np.random.default_rng(5)
    st = c.state("d")
    th = st.thresholds_us
    got: list[tuple] = []
    now, rid = 1_000, 1
    for r in range(rounds):
        n = int(rng.choice([1, 3, 17, 64, 300]))
        op, off, size, _, _ = ios(n, seed=r)
        ids = np.arange(rid, rid + n)
        rid += n
        if r % 4 == 3:
            ids[: n // 2] -= n  # half the ids are the last burst's: replaced where pending
        dl = rng.choice([0.0, th[0] - 5.0, th[0], th[-1], 1e12], n)
        got.append(c.admit_burst("d", op, off, size, dl, ids, now))
        pend = sorted(c.state("d").tracker.pending_ids())
        done = np.array(pend[: len(pend) // 3], np.int64)
        c.complete_burst("d", done, rng.random(len(done)) * 900.0, now + 50)
        now += int(rng.choice([100, 10_000, st.timeout_us + 1]))  # the last expires them all
    return got


def test_a_fused_burst_decides_each_io_as_admit_alone(bundle) -> None:  # type: ignore[no-untyped-def]
    """The fused burst (one kernel call) against ``admit`` one by one at the burst's
    time on the same fused kernel: the same answers, counters, pending set, deadline
    map and record rows, through expiries, drops, reused ids and every head."""
    fused = core(bundle, probe_after=2)
    calls = []
    st = fused.state("d")
    many = st.admit_many
    st.admit_many = lambda *a: calls.append(1) or many(*a)
    single = core(bundle, probe_after=2)

    class OneByOne:
        """admit_burst as admit per IO (the reference)."""

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(single, name)

        def admit_burst(self, device, ops, offs, sizes, dls, ids, now):  # type: ignore[no-untyped-def]
            ds = [single.admit(device, int(o), int(f), int(s), float(d), int(i), now)
                  for o, f, s, d, i in zip(ops, offs, sizes, dls, ids, strict=True)]
            return ds

    a, b = _mixed_traffic(fused), _mixed_traffic(OneByOne())  # type: ignore[arg-type]
    assert len(calls) == len(a)  # one kernel call per burst
    reasons = set()
    for burst, ones in zip(a, b, strict=True):
        for j, d in enumerate(ones):
            assert bool(burst.admit[j]) == d.admit
            assert REASONS[burst.reason[j]] == d.reason
            assert bool(burst.fail_open[j]) == d.fail_open
            assert (None if burst.threshold_index[j] < 0 else burst.threshold_index[j]) == \
                d.threshold_index
            assert (math.isnan(d.p_slow) and math.isnan(burst.p_slow[j])) or \
                burst.p_slow[j] == np.float32(d.p_slow)
            reasons.add(d.reason)
    assert {"predicted", "deadline-beyond-model", "deadline-below-model"} <= reasons
    sa, sb = fused.stats()["d"], single.stats()["d"]
    for key in COUNT_NAMES:
        assert getattr(sa, key) == getattr(sb, key), key
    assert sa.pending == sb.pending > 0
    ta, tb = fused.state("d").tracker, single.state("d").tracker
    for x, y in ((ta.pend, tb.pend), (ta.free, tb.free), (ta.meta, tb.meta),
                 (ta.hist, tb.hist)):  # the state, slot for slot (not the scratch)
        np.testing.assert_array_equal(x, y)
    assert ta.stats().dropped > 0 and ta.stats().expired > 0  # replaced, timed out
    assert ta._slots == tb._slots
    da, db = fused.state("d").deadlines, single.state("d").deadlines  # admit trims lazily
    assert da == {rid: db[rid] for rid in ta._slots}
    ra, rb = ring.columns(*_ring(fused)), ring.columns(*_ring(single))
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)  # NaNs equal


def _ring(c: AdmissionCore) -> tuple[np.ndarray, np.ndarray]:
    r = c.state("d").ring
    return r.rec, r.recf


def test_a_pending_id_asked_again_is_replaced(bundle) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle, p=1.0)
    op, off, size, dl, ids = ios(4)
    c.admit_burst("d", op, off, size, dl, ids, 1)
    c.admit_burst("d", op, off, size, dl, ids, 2)
    assert c.stats()["d"].pending == 4


def test_complete_burst_equals_complete_one_by_one(bundle) -> None:  # type: ignore[no-untyped-def]
    a, b = core(bundle, p=1.0), core(bundle, p=1.0)
    op, off, size, _, ids = ios(32)
    th = bundle.latency_thresholds_us()[0]  # judged: not below the model (EBUSY unasked)
    dl = np.full(32, th)
    for c in (a, b):
        c.admit_burst("d", op, off, size, dl, ids, 10)
    lat = np.linspace(10.0, 400.0, 40)
    done = np.concatenate([ids, [999_999] * 8])  # 8 unknown ids
    known = a.complete_burst("d", done, lat, 300)
    ref = sum(b.complete("d", int(i), float(x), 300) for i, x in zip(done, lat, strict=True))
    assert known == ref == 32
    sa, sb = a.stats()["d"], b.stats()["d"]
    for key in ("completions", "unknown_completions", "slo_violations", "pending"):
        assert getattr(sa, key) == getattr(sb, key), key
    assert sa.slo_violations == int(np.sum(lat[:32] > th))
    assert sa.io_latency_us == sb.io_latency_us
    assert np.array_equal(a.state("d").tracker.hist, b.state("d").tracker.hist)


def test_histogram_buckets_are_le_bounds() -> None:
    h = Histogram((10, 100))
    for v in (5, 10, 11, 100, 101, 1e9):
        h.observe(v)
    assert h.counts == [2, 2, 2]
    g = Histogram((10, 100))
    g.observe_many(np.array([5, 10, 11, 100, 101, 1e9], np.float64))
    assert g.counts == h.counts and g.total == h.total
    with pytest.raises(ValueError):
        Histogram((10, 5))


def test_prometheus_exposes_both_histograms_in_seconds(bundle) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle, p=1.0)
    op, off, size, dl, ids = ios(10)
    c.admit_burst("d", op, off, size, dl, ids, 1)
    c.admit("d", 0, 4096, 4096, 0.0, 77, 2)
    c.complete_burst("d", ids[:4], np.array([50.0, 150.0, 250.0, 2500.0]), 3)
    reg = CollectorRegistry()
    reg.register(CoreCollector(c.stats))
    text = generate_latest(reg).decode()
    assert 'mittd_prediction_seconds_count{device="d"} 11.0' in text
    assert 'mittd_device_io_latency_seconds_count{device="d"} 4.0' in text
    assert 'mittd_device_io_latency_seconds_bucket{device="d",le="0.0001"} 1.0' in text
    assert 'mittd_device_io_latency_seconds_bucket{device="d",le="+Inf"} 4.0' in text
    assert 'mittd_device_io_latency_seconds_sum{device="d"} 0.00295' in text
    assert f'sha256="{c.state("d").bundle.sha256}"' in text


def test_probe_after_n_rejections_admits_one(bundle) -> None:  # type: ignore[no-untyped-def]
    single = AdmissionCore({"d": build_state(bundle, "auto", decision_threshold=0.0)},
                           predict_budget_us=1e9, probe_after=3)
    got = [single.admit("d", 0, i * 4096, 4096, 0.0, i + 1, i).admit for i in range(9)]
    assert got == [False, False, False, True] * 2 + [False]
    assert single.stats()["d"].probes == 2
    assert single.admit("d", 0, 0, 4096, 0.0, 1, 99).reason == "predicted"
    burst = AdmissionCore({"d": build_state(bundle, "auto", decision_threshold=0.0)},
                          predict_budget_us=1e9, probe_after=3)
    op, off, size, dl, ids = ios(6)
    first = burst.admit_burst("d", op, off, size, dl, ids, 1)
    second = burst.admit_burst("d", op[:3], off[:3], size[:3], dl[:3], ids[:3] + 100, 2)
    # the run of rejections carries over from one burst to the next
    assert list(first.admit) + list(second.admit) == [False, False, False, True,
                                                      False, False, False, True, False]
    assert burst.stats()["d"].probes == 2 and burst.stats()["d"].pending == 2
    with pytest.raises(ValueError, match="probe_after"):
        AdmissionCore({}, probe_after=-1)


def test_a_late_lock_holder_with_an_earlier_clock_keeps_the_issue_order(bundle) -> None:  # type: ignore[no-untyped-def]
    from mittd.predictor.tracker import M_LAST_TS, M_UNORDERED

    c = core(bundle, p=1.0)
    c.admit("d", 0, 0, 4096, 0.0, 1, 1_000)
    c.admit("d", 0, 4096, 4096, 0.0, 2, 990)  # read the clock first, got the lock second
    op, off, size, dl, ids = ios(4, base=10)
    c.admit_burst("d", op, off, size, dl, ids, 995)
    meta = c.state("d").tracker.meta
    assert meta[M_UNORDERED] == 0 and meta[M_LAST_TS] == 1_000


def test_every_counter_is_exported(bundle) -> None:  # type: ignore[no-untyped-def]
    c = core(bundle)
    counters = c.state("d").counters
    for j, name in enumerate(COUNT_NAMES):
        setattr(counters, name, 7001 + j)
    reg = CollectorRegistry()
    reg.register(CoreCollector(c.stats))
    values = [line.rsplit(" ", 1)[1] for line in generate_latest(reg).decode().splitlines()
              if line.startswith("mittd_") and "_created" not in line]
    count = {name: 7001 + j for j, name in enumerate(COUNT_NAMES)}
    # outcome="admit" is what is left of admitted after fail-opens and beyond-model
    # admissions (the outcomes partition the decisions)
    count["admitted"] -= count["fail_open"] + count["beyond_model"]
    for name, v in count.items():
        assert f"{v}.0" in values, name
