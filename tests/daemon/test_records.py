"""What the core records of each IO (the ring), shadow mode, and live quality.

The ring is written by the fused kernel and by the Python path; both must record
the same rows for the same IOs, a completion must land in its own IO's row, and
a rejected IO's row must never get a latency. Shadow mode must never reject, yet
count what enforcing would have rejected; live quality must be the ROC-AUC,
precision and recall of the recorded scores against the recorded latencies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mittd.daemon import fastpath, ring
from mittd.daemon.admission import NEVER_ISSUED, AdmissionCore
from mittd.daemon.devices import build_state, read_bundle
from mittd.daemon.embedded import OP_READ, Embedded, EmbeddedError
from mittd.daemon.quality import MIN_LABELLED, live_quality
from mittd.predictor.ranking import roc_auc
from mittd.predictor.shipped import shipped_bundle
from tests.daemon.test_embedded import _cores, _replay


def _rows(core: AdmissionCore) -> dict[str, np.ndarray]:
    rg = core.state("d").ring
    rows = rg.copy(0, rg.head)
    return {k: v.copy() for k, v in rows.cols.items()}


@pytest.mark.parametrize("name", ["heimdall", "linnos", "precise_linear_hist_node95"])
def test_fused_and_python_paths_record_the_same_rows(name: str) -> None:
    fused, python = _cores(name, 0.3, 3, 1.0)
    _replay(fused, 11)
    _replay(python, 11)
    a, b = _rows(fused), _rows(python)
    assert len(a["ts"]) == 600  # one row per decided IO
    for col in ("ts", "offset", "size", "codes", "deadline"):
        assert np.array_equal(a[col], b[col]), col
    np.testing.assert_allclose(a["margin"], b["margin"], rtol=1e-5, equal_nan=True)
    assert np.array_equal(np.isnan(a["latency"]), np.isnan(b["latency"]))
    np.testing.assert_array_equal(a["latency"][~np.isnan(a["latency"])],
                                  b["latency"][~np.isnan(b["latency"])])


def test_a_completion_fills_its_own_row_and_a_rejected_row_stays_empty() -> None:
    fused, _ = _cores("heimdall", 0.5)
    st = fused.state("d")
    lat = {}
    admitted = []
    for i in range(300):
        d = fused.admit("d", OP_READ, i * 4096, 4096, 0, i, 1_000 + 10 * i)
        if d.admit:
            admitted.append(i)
    for j, rid in enumerate(admitted[::2]):
        lat[rid] = 50.0 + j
        assert fused.complete("d", rid, lat[rid], 5_000 + j)
    rows = st.ring.copy(0, st.ring.head).cols
    outcome = (rows["codes"] >> 2) & 63
    for i in range(300):
        got = rows["latency"][i]
        if i in lat:
            assert got == lat[i]
        else:
            assert math.isnan(got)
        assert rows["offset"][i] == i * 4096
        assert (outcome[i] in NEVER_ISSUED) == (i not in admitted)


def test_burst_paths_record_decisions_and_latencies() -> None:
    core, _ = _cores("heimdall", 0.5)
    n = 64
    ids = np.arange(n, dtype=np.int64)
    d = core.admit_burst("d", np.zeros(n, np.int64), ids * 4096, np.full(n, 4096),
                         np.zeros(n), ids, 1_000)
    adm = ids[d.admit]
    core.complete_burst("d", adm, np.full(len(adm), 77.0), 2_000)
    rows = core.state("d").ring.copy(0, n).cols
    assert np.array_equal(rows["offset"], ids * 4096)
    assert np.array_equal(~np.isnan(rows["latency"]), d.admit)


def test_a_full_ring_with_a_writer_drops_new_rows_and_never_blocks() -> None:
    b = read_bundle(shipped_bundle("heimdall"))
    st = build_state(b, "csr")
    st.ring = ring.Ring(st.featuriser.capacity, b.sha256, rows=64)
    st.bind()
    core = AdmissionCore({"d": st}, predict_budget_us=1e9)
    core.keep_records("d", True)
    for i in range(100):
        core.admit("d", OP_READ, i * 4096, 4096, 0, i, 1_000 + i)
    assert st.ring.head == 64
    assert st.stats().records_dropped == 36
    assert st.stats().admitted + st.stats().rejected == 100  # every IO still decided
    rows = core.take_records("d", 0, everything=True)
    assert rows is not None and len(rows) == 64
    core.admit("d", OP_READ, 0, 4096, 0, 1000, 5_000)  # room again
    assert st.ring.head == 65
    core.keep_records("d", False)  # no writer: the ring overwrites its oldest rows
    for i in range(200):
        core.admit("d", OP_READ, i * 4096, 4096, 0, 2000 + i, 6_000 + i)
    assert st.stats().records_dropped == 36


def test_take_waits_for_pending_latencies_then_gives_up_after_settling() -> None:
    core, _ = _cores("heimdall", 1.0)  # admit everything
    now = fastpath.monotonic_ns() // 1000
    for i in range(10):
        core.admit("d", OP_READ, i * 4096, 4096, 0, i, now + i)
    for i in range(5):
        core.complete("d", i, 90.0, now + 20)
    core.keep_records("d", True)
    for i in range(10, 20):
        core.admit("d", OP_READ, i * 4096, 4096, 0, i, now + i)
    for i in range(10, 15):
        core.complete("d", i, 90.0, now + 40)
    rows = core.take_records("d", settle_us=60_000_000)
    assert rows is not None and len(rows) == 5  # up to the first still-pending IO
    assert core.take_records("d", settle_us=60_000_000) is None
    rows = core.take_records("d", settle_us=0)  # old enough: written without latency
    assert rows is not None and len(rows) == 5 and np.isnan(rows.cols["latency"]).all()


def test_shadow_mode_never_rejects_but_counts_what_enforcing_would() -> None:
    b = read_bundle(shipped_bundle("heimdall"))
    core = AdmissionCore({"d": build_state(b, "csr", decision_threshold=0.5,
                                           max_reject_share=1.0, mode="shadow")},
                         predict_budget_us=1e9, probe_after=0)
    assert core.mode("d") == "shadow"
    said_slow = 0
    rng = np.random.default_rng(0)
    now = 1_000
    for i in range(2000):
        now += int(rng.integers(0, 60))
        d = core.admit("d", OP_READ, int(rng.integers(0, 1 << 20)) * 4096, 4096, 0, i, now)
        assert d.admit
        said_slow += d.p_slow > 0.5
        if d.reason == "shadow":
            assert d.p_slow > 0.5
        core.complete("d", i, float(rng.lognormal(5, 0.6)), now + 1)
    s = core.stats()["d"]
    assert s.rejected == 0 and s.mode == "shadow"
    assert s.shadow_rejects == said_slow > 0
    assert s.admitted == 2000
    rows = core.state("d").ring.copy(0, 2000).cols
    outcome = (rows["codes"] >> 2) & 63
    assert np.count_nonzero(outcome == fastpath.O_SHADOW) == said_slow
    q = core.quality("d")
    assert q.mode == "shadow" and q.labelled == 2000
    assert q.would_reject_share == pytest.approx(said_slow / 2000)
    core.set_mode("d", "enforce")
    assert not all(core.admit("d", OP_READ, 0, 4096, 0, 10_000 + i, now + 2 + i).admit
                   for i in range(200))
    with pytest.raises(ValueError, match="mode must be one of enforce, shadow"):
        core.set_mode("d", "watch")


def test_live_quality_is_the_recorded_scores_against_the_recorded_latencies() -> None:
    core, _ = _cores("heimdall", 0.5)
    st = core.state("d")
    rng = np.random.default_rng(1)
    now = 1_000
    for i in range(3000):
        now += int(rng.integers(0, 80))
        d = core.admit("d", OP_READ, int(rng.integers(0, 1 << 20)) * 4096, 4096, 0, i, now)
        if d.admit:
            core.complete("d", i, float(rng.lognormal(5.1, 0.5)), now + 1)
    q = core.quality("d")
    rows = st.ring.copy(0, st.ring.head).cols
    done = ~np.isnan(rows["latency"])
    y = rows["latency"][done] > st.thresholds_us[0]
    assert q.decided == 3000 and q.labelled == int(done.sum()) and q.slow == int(y.sum())
    assert q.roc_auc == pytest.approx(roc_auc(y, rows["margin"][done]))
    said = rows["margin"][done] > st.cutoffs[0]
    assert q.precision == pytest.approx((said & y).sum() / said.sum())
    assert q.recall == pytest.approx((said & y).sum() / y.sum())
    assert q.validation_roc_auc == pytest.approx(0.943, abs=1e-3)


def test_drift_needs_both_classes_and_a_margin_below_validation() -> None:
    rng = np.random.default_rng(2)
    n = 400
    y = rng.random(n) < 0.3
    good = np.where(y, 2.0, -2.0) + rng.normal(0, 0.5, n)
    noise = rng.normal(0, 1, n)
    lat = np.where(y, 300.0, 100.0)
    th, cut = np.full(n, 200.0), np.zeros(n)
    q = live_quality("shadow", n, good, cut, lat, th, 0.95, 0.05)
    assert q.roc_auc > 0.95 and not q.drift
    q = live_quality("shadow", n, noise, cut, lat, th, 0.95, 0.05)
    assert q.roc_auc < 0.7 and q.drift
    few = slice(0, MIN_LABELLED)  # too few of each class to call it
    q = live_quality("shadow", n, noise[few], cut[few], lat[few], th[few], 0.95, 0.05)
    assert not q.drift
    q = live_quality("shadow", n, noise, cut, lat, th, math.nan, 0.05)  # nothing to compare
    assert not q.drift
    q = live_quality("enforce", n, noise[:0], cut[:0], lat[:0], th[:0], 0.95, 0.05)
    assert math.isnan(q.roc_auc) and q.labelled == 0 and math.isnan(q.would_reject_share)


def test_quality_after_a_swap_counts_the_new_model_only() -> None:
    core, _ = _cores("heimdall", 0.5)
    for i in range(50):
        core.admit("d", OP_READ, i * 4096, 4096, 0, i, 1_000 + i)
    b = read_bundle(shipped_bundle("linnos"))
    core.swap("d", build_state(b, "csr"))
    assert core.quality("d").decided == 0
    for i in range(20):
        core.admit("d", OP_READ, i * 4096, 4096, 0, 100 + i, 2_000 + i)
    assert core.quality("d").decided == 20
    rows = core.state("d").ring.copy(0, 70)
    assert set(rows.model_sha[:50]) == {read_bundle(shipped_bundle("heimdall")).sha256}
    assert set(rows.model_sha[50:]) == {b.sha256}


def test_embedded_modes_and_their_errors(tmp_path) -> None:
    emb = Embedded.from_bundles({"d": shipped_bundle("heimdall")}, mode="shadow")
    assert emb.mode("d") == "shadow"
    emb.set_mode("d", "enforce")
    emb.reload(force=True)
    assert emb.mode("d") == "enforce"  # a run-time switch survives a reload
    emb.set_mode("d", "shadow")
    emb.reload(force=True)
    assert emb.mode("d") == "shadow"
    for kw, msg in ((dict(mode="watch"), "mode must be one of"),
                    (dict(drift_margin=2), "drift_margin must be in"),
                    (dict(quality_window=5), "quality_window must be an int"),
                    (dict(records=""), "records: dir: expected a directory path")):
        with pytest.raises(EmbeddedError, match=msg):
            Embedded.from_bundles({"d": shipped_bundle("heimdall")}, **kw)


def test_the_live_roc_auc_in_the_metrics_is_what_evaluate_finds_on_the_records(tmp_path
                                                                               ) -> None:
    """No skew between serving and the offline tools: an event-driven device (latency
    grows with the queue), decided live in shadow mode, recorded; the ROC-AUC the
    Prometheus collector exports equals ``mittd evaluate``'s on the records read back
    (the records re-featurised offline, as training does)."""
    import heapq

    from prometheus_client import CollectorRegistry

    from mittd.daemon.metrics import CoreCollector
    from mittd.daemon.recorder import Recorder, RecordsConfig
    from mittd.traces.registry import open_trace
    from mittd.training.offline_eval import evaluate_bundle

    path = shipped_bundle("heimdall")
    core = AdmissionCore({"d": build_state(read_bundle(path), "csr", mode="shadow")},
                         predict_budget_us=1e9)
    rec = Recorder(core, RecordsConfig(tmp_path))
    rng = np.random.default_rng(5)
    done: list[tuple[int, int, float]] = []
    now = 1_000_000
    for i in range(4000):
        now += int(rng.exponential(60))
        while done and done[0][0] <= now:
            t, rid, lat = heapq.heappop(done)
            core.complete("d", rid, lat, t)
        qlen = len(done)
        lat = float(int(60 + 45 * qlen + rng.exponential(40)))
        core.admit("d", OP_READ, int(rng.integers(0, 1 << 20)) * 4096, 4096, 0, i, now)
        heapq.heappush(done, (now + int(lat), i, lat))
    while done:
        t, rid, lat = heapq.heappop(done)
        core.complete("d", rid, lat, t)
    rec.close()
    reg = CollectorRegistry()
    reg.register(CoreCollector(core.stats, quality=core.quality))
    live = reg.get_sample_value("mittd_live_roc_auc", {"device": "d"})
    offline = evaluate_bundle(path, open_trace(tmp_path / "d").table())
    assert live is not None and 0.0 < live < 1.0
    assert offline["ios"] == 4000
    assert abs(live - offline["roc_auc"]) <= 0.01, (live, offline["roc_auc"])


def _window(core: AdmissionCore, start: int, n: int, good: bool, rng) -> None:
    """n IOs decided then completed: slow (30 %) the highest-scored ones when ``good``
    (ROC-AUC 1), random ones otherwise (ROC-AUC ~0.5)."""
    p = {}
    for i in range(start, start + n):
        d = core.admit("d", OP_READ, int(rng.integers(0, 1 << 20)) * 4096, 4096, 0, i,
                       1_000 + 10 * i)
        p[i] = d.p_slow
    order = sorted(p, key=p.__getitem__, reverse=True) if good else list(rng.permutation(
        list(p)))
    slow = set(order[: int(0.3 * n)])
    for i in p:
        core.complete("d", i, 900.0 if i in slow else 80.0, 1_000 + 10 * i + 5)


def test_drift_is_called_when_the_roc_auc_stays_low_for_every_window() -> None:
    from mittd.predictor.synthetic import synthetic_bundle

    rng = np.random.default_rng(3)
    b = synthetic_bundle("precise_linear")  # dense on the LBA bits: a score per offset
    b.provenance["test_metrics"] = {"roc_auc": 0.95}
    core = AdmissionCore({"d": build_state(b, "dense", mode="shadow", quality_window=100,
                                           drift_windows=3)}, predict_budget_us=1e9)
    _window(core, 0, 100, False, rng)
    _window(core, 100, 100, False, rng)
    q = core.quality("d")
    assert q.windows_below == 2 and not q.drift  # two bad windows: a burst, not yet drift
    _window(core, 200, 100, False, rng)
    q = core.quality("d")
    assert q.windows_below == 3 and q.drift and q.drift_windows == 3
    _window(core, 300, 100, True, rng)  # the newest window is good again
    q = core.quality("d")
    assert q.roc_auc > 0.99 and q.windows_below == 0 and not q.drift
    _window(core, 400, 100, False, rng)
    _window(core, 500, 100, False, rng)
    assert core.quality("d").windows_below == 2 and not core.quality("d").drift
