"""Featurisers: live == offline bit for bit, exact layouts, scaling, configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mittd.predictor.features import (
    FEATURISERS,
    Featuriser,
    HeimdallFeaturiser,
    LBAFeaturiser,
    LBAHistFeaturiser,
    LinnOSFeaturiser,
    MinMaxFeaturiser,
    NotFittedError,
    issue_order,
    make_featuriser,
)
from mittd.predictor.tracker import PendingTracker
from mittd.traces.schema import make_batch, read_trace
from mittd.traces.shipped import shipped_trace

SAMPLE = shipped_trace()


def make_table(ts, lat, op, off, size, device="dev") -> pa.Table:  # type: ignore[no-untyped-def]
    batch = make_batch(
        np.asarray(ts, np.int64), np.asarray(lat, np.float64), np.asarray(op, np.int8),
        np.asarray(off, np.int64), np.asarray(size, np.int64),
        device if isinstance(device, str) else pa.array(device, pa.string()),
    )
    return pa.Table.from_batches([batch])


def live_encode(feat: Featuriser, table: pa.Table) -> np.ndarray:
    """Reference: drive live trackers IO by IO exactly as the daemon / replayer would.

    Completion time of an IO is ts + ceil(latency) (latency < 0 counts as 0), applied
    in (completion time, issue order) before any later issue at a time >= it.
    """
    order = np.argsort(table.column("ts_issue_us").to_numpy(), kind="stable")
    t = table.take(pa.array(order))
    ts = t.column("ts_issue_us").to_pylist()
    lat = t.column("latency_us").to_pylist()
    op = [("read", "write", "other").index(v) for v in t.column("op").to_pylist()]
    off = t.column("offset").to_pylist()
    size = t.column("size").to_pylist()
    dev = t.column("device").to_pylist()
    events = sorted(
        (ts[k] + math.ceil(max(lat[k], 0.0)), k)
        for k in range(len(ts))
        if lat[k] is not None and math.isfinite(lat[k])
    )
    trackers: dict[str, PendingTracker] = {}
    out = np.full((len(ts), feat.dim), np.nan, np.float32)
    e = 0
    for j in range(len(ts)):
        while e < len(events) and events[e][0] <= ts[j] and events[e][1] < j:
            c, k = events[e]
            e += 1
            trackers[dev[k]].complete(k, c, lat[k])
        tr = trackers.setdefault(dev[j], feat.make_tracker())
        if j % 2:
            feat.encode_live(tr, off[j], size[j], op[j], out=out[j], now_us=ts[j])
        else:
            tr.expire(ts[j])
            out[j] = feat.encode_live(tr, off[j], size[j], op[j])
        tr.issue(j, ts[j], off[j], size[j], op[j])
    return out


def all_featurisers(table: pa.Table, **kw: int) -> list[Featuriser]:
    heim = HeimdallFeaturiser(**kw)
    heim.fit(table)
    hist = LBAHistFeaturiser(**kw)
    hist.fit(table)
    return [LBAFeaturiser(**kw), LinnOSFeaturiser(**kw), heim, hist]


# -- live == offline --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> pa.Table:
    return read_trace(SAMPLE).slice(0, 20_000)


@pytest.mark.parametrize("kw", [{}, {"timeout_us": 2_000, "capacity": 6}])
def test_live_equals_offline_on_sample_trace(sample: pa.Table, kw: dict[str, int]) -> None:
    for feat in all_featurisers(sample, **kw):
        offline = feat.encode_trace(sample)
        live = live_encode(feat, sample)
        assert offline.dtype == np.float32 and offline.shape == (sample.num_rows, feat.dim)
        assert np.array_equal(live, offline), feat.name
        assert offline.any(axis=0).sum() > feat.dim // 3, feat.name  # features really vary


@st.composite
def traces(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(0, 50))
    gaps = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    ts = 1_000 + np.cumsum(np.array(gaps, np.int64))
    latency = st.one_of(
        st.integers(0, 60).map(float),  # whole µs: equal completion times
        st.floats(-5, 80, allow_nan=False),
        st.just(math.nan),
        st.just(math.inf),
        st.floats(1e3, 1e9),  # beyond any timeout drawn below
    )
    lat = draw(st.lists(latency, min_size=n, max_size=n))
    ops = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    offsets = draw(st.lists(
        st.one_of(st.integers(0, 64).map(lambda b: b * 4096), st.integers(0, 2**62)),
        min_size=n, max_size=n,
    ))
    sizes = draw(st.lists(st.sampled_from([512, 4096, 65536, 1 << 20]), min_size=n, max_size=n))
    devices = draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n))
    table = make_table(ts, lat, ops, offsets, sizes, devices)
    if draw(st.booleans()):  # rows out of issue order
        perm = draw(st.permutations(range(n)))
        table = table.take(pa.array(np.array(perm, np.int64)))
    return table


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=traces(),
    timeout=st.integers(1, 120),
    capacity=st.integers(1, 8),
    k=st.integers(0, 5),
    nbytes=st.integers(1, 8),
    unit=st.sampled_from([1, 512, 4096]),
    nreads=st.integers(0, 5),
    qd=st.integers(1, 3),
    ld=st.integers(1, 4),
    hdepth=st.integers(0, 4),
)
def test_live_equals_offline_on_generated_traces(
    table: pa.Table, timeout: int, capacity: int, k: int, nbytes: int, unit: int,
    nreads: int, qd: int, ld: int, hdepth: int,
) -> None:
    tk = {"timeout_us": timeout, "capacity": capacity}
    heim = HeimdallFeaturiser(history=hdepth, **tk)
    if table.num_rows:
        heim.fit(table)
    else:
        heim.fit_raw(np.zeros((1, heim.dim)))
    hist = LBAHistFeaturiser(pending=k, lba_bytes=nbytes, lba_unit=unit, n_reads=nreads,
                             queue_digits=qd, latency_digits=ld, history=hdepth,
                             min=heim.config()["min"], max=heim.config()["max"], **tk)
    feats = [
        LBAFeaturiser(pending=k, lba_bytes=nbytes, lba_unit=unit, **tk),
        LinnOSFeaturiser(n_reads=nreads, queue_digits=qd, latency_digits=ld, **tk),
        heim,
        hist,
    ]
    rows = []
    for feat in feats:
        offline = feat.encode_trace(table)
        assert offline.shape == (table.num_rows, feat.dim)
        assert np.array_equal(live_encode(feat, table), offline), feat.config()
        rows.append(offline)
    # lba_hist is the other three side by side, bit for bit
    assert np.array_equal(rows[3], np.concatenate(rows[:3], axis=1))


def test_unsorted_trace_rows_follow_issue_order() -> None:
    table = make_table([5, 1, 3, 1], [1.0, 9.0, 2.0, 1.0], [0, 0, 1, 0],
                       [4096, 8192, 0, 12288], [4096] * 4)
    order = issue_order(table)
    assert order.tolist() == [1, 3, 2, 0]  # stable on the tie at t=1
    for feat in all_featurisers(table):
        np.testing.assert_array_equal(
            feat.encode_trace(table), feat.encode_trace(table.take(pa.array(order)))
        )


def test_devices_are_featurised_separately() -> None:
    a = make_table([0, 1, 2], [50.0] * 3, [0] * 3, [4096, 8192, 12288], [4096] * 3, "a")
    mixed = make_table([0, 0, 1, 1, 2, 2], [50.0] * 6, [0] * 6,
                       [4096, 1 << 30, 8192, 1 << 31, 12288, 1 << 32], [4096] * 6,
                       ["a", "b"] * 3)
    feat = LBAFeaturiser()
    np.testing.assert_array_equal(feat.encode_trace(mixed)[::2], feat.encode_trace(a))


# -- lba ---------------------------------------------------------------------------------------


def bits(*byte_values: int) -> list[float]:
    return [float((b >> (7 - i)) & 1) for b in byte_values for i in range(8)]


def test_lba_layout_hand_computed() -> None:
    feat = LBAFeaturiser()
    assert feat.dim == 352
    tr = feat.make_tracker()
    v = feat.encode_live(tr, 4096 * 0x01020304, 4096, 0)
    assert v.dtype == np.float32 and v.shape == (352,)
    assert v[:32].tolist() == bits(0x01, 0x02, 0x03, 0x04)
    assert np.flatnonzero(v).tolist() == [7, 14, 22, 23, 29]
    assert not v[32:].any()  # nothing pending: zero padding


def test_lba_modulo_unit_and_byte_count() -> None:
    tr = PendingTracker()
    v = LBAFeaturiser().encode_live(tr, 4096 * 0x1_02030405 + 4095, 1, 0)
    assert v[:32].tolist() == bits(0x02, 0x03, 0x04, 0x05)  # modulo 2^32, rounded down
    v = LBAFeaturiser(pending=0, lba_bytes=2, lba_unit=512).encode_live(tr, 512 * 0xABCD, 1, 0)
    assert v.tolist() == bits(0xAB, 0xCD)
    v = LBAFeaturiser(pending=0, lba_bytes=8, lba_unit=1).encode_live(tr, 2**62 + 1, 1, 0)
    assert v.tolist() == bits(0x40, 0, 0, 0, 0, 0, 0, 0x01)


def test_lba_pending_most_recent_first_and_zero_padded() -> None:
    feat = LBAFeaturiser(pending=4, lba_bytes=1)
    tr = feat.make_tracker()
    for i, lba in enumerate([0x11, 0x22, 0x33]):
        tr.issue(i, i, 4096 * lba, 4096, 0)
    v = feat.encode_live(tr, 4096 * 0x44, 4096, 1)
    assert v.tolist() == bits(0x44, 0x33, 0x22, 0x11, 0x00)
    tr.complete(1, 5)
    v = feat.encode_live(tr, 4096 * 0x44, 4096, 1)
    assert v.tolist() == bits(0x44, 0x33, 0x11, 0x00, 0x00)


def test_lba_only_k_most_recent_pending() -> None:
    feat = LBAFeaturiser(pending=2, lba_bytes=1)
    tr = feat.make_tracker()
    for i in range(1, 6):
        tr.issue(i, i, 4096 * i, 4096, 0)
    assert feat.encode_live(tr, 0, 4096, 0).tolist() == bits(0, 5, 4)


# -- linnos ------------------------------------------------------------------------------------


def test_linnos_digits_hand_scenario() -> None:
    feat = LinnOSFeaturiser()
    assert feat.dim == 31
    tr = feat.make_tracker()
    tr.issue(0, 0, 0, 4096, 0)  # read, saw 0
    tr.issue(1, 1, 0, 4096, 0)  # read, saw 1
    tr.issue(2, 2, 0, 4096, 1)  # write, saw 2
    tr.issue(3, 3, 0, 4096, 0)  # read, saw 3
    tr.complete(1, 20_000, 12_345.7)  # capped at 9999
    tr.complete(2, 20_001, 77.0)  # a write: not in the read history
    tr.complete(0, 20_002, 57.9)  # rounded down to 57
    v = feat.encode_live(tr, 0, 4096, 0)
    want = [0, 0, 1]  # one pending (request 3)
    want += [0, 0, 0] + [0, 0, 1] + [0] * 6  # queue lengths at issue, most recent read first
    want += [0, 0, 5, 7] + [9, 9, 9, 9] + [0] * 8  # latencies
    assert v.tolist() == want


def test_linnos_queue_length_capped() -> None:
    feat = LinnOSFeaturiser(n_reads=1)
    tr = feat.make_tracker()
    for i in range(1200):
        tr.issue(i, 0, 0, 1, 0)
    tr.complete(1100, 5)  # saw 1100 -> 999
    # queue 1199 -> 999; the read saw 1100 -> 999; its latency 5 µs -> 0005
    assert feat.encode_live(tr, 0, 1, 0).tolist() == [9, 9, 9, 9, 9, 9, 0, 0, 0, 5]


# -- heimdall ----------------------------------------------------------------------------------


def test_heimdall_raw_features_and_scaling() -> None:
    feat = HeimdallFeaturiser(history=2)
    assert feat.dim == 8
    feat.fit_raw(np.array([[0.0] * 8, [100.0, 10, 10, 1000, 100, 10, 1000, 100]]))
    tr = feat.make_tracker()
    tr.issue(0, 0, 0, 8192, 1)  # saw 0
    tr.issue(1, 0, 0, 4096, 0)  # saw 1
    tr.complete(0, 400)  # latency 400, throughput 8192/400
    tr.complete(1, 0, 0.5)  # latency 0.5 -> throughput 4096 / 1 µs
    tr.issue(2, 500, 0, 1, 0)
    v = feat.encode_live(tr, 0, 50, 0)
    raw = [50, 1, 1, 0.5, 4096, 0, 400, 8192 / 400]
    hi = [100.0, 10, 10, 1000, 100, 10, 1000, 100]
    want = np.clip(np.array(raw) / np.array(hi), 0, 1).astype(np.float32)
    assert v.tolist() == want.tolist()
    assert v[4] == 1.0  # 4096 bytes/µs clips to the fitted max


def test_heimdall_fit_on_trace_and_constant_feature() -> None:
    table = make_table([0, 10, 20, 30], [5.0, 5.0, 5.0, 5.0], [0] * 4, [0] * 4, [4096] * 4)
    feat = HeimdallFeaturiser().fit(table)
    raw = feat.raw_trace(table)
    assert feat.config()["min"] == raw.min(axis=0).tolist()
    x = feat.encode_trace(table)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert (x[:, 0] == 0.0).all()  # size is constant (min == max) -> 0
    tr = feat.make_tracker()
    assert feat.encode_live(tr, 0, 8192, 0)[0] == 1.0  # above a constant feature's bound


def test_heimdall_unfitted_raises() -> None:
    feat = HeimdallFeaturiser()
    with pytest.raises(NotFittedError, match="fit"):
        feat.encode_live(feat.make_tracker(), 0, 4096, 0)
    with pytest.raises(NotFittedError):
        feat.encode_trace(make_table([0], [1.0], [0], [0], [1]))
    with pytest.raises(ValueError, match="non-empty"):
        feat.fit_raw(np.zeros((0, 11)))
    with pytest.raises(ValueError, match="together"):
        HeimdallFeaturiser(min=[0.0] * 11)


# -- lba_hist ----------------------------------------------------------------------------------


def test_lba_hist_is_lba_linnos_heimdall_side_by_side(sample: pa.Table) -> None:
    small = sample.slice(0, 5_000)
    hist = LBAHistFeaturiser().fit(small)
    heim = HeimdallFeaturiser().fit(small)
    assert hist.dim == 352 + 31 + 11 == 394 and hist.fit_dim == 11
    assert hist.parts == {"lba": (0, 352), "linnos": (352, 383), "heimdall": (383, 394)}
    assert hist.history_needed == 4
    assert hist.config()["min"] == heim.config()["min"]
    want = np.concatenate([LBAFeaturiser().encode_trace(small),
                           LinnOSFeaturiser().encode_trace(small),
                           heim.encode_trace(small)], axis=1)
    assert np.array_equal(hist.encode_trace(small), want)


def test_lba_hist_unfitted_and_bad_params() -> None:
    feat = LBAHistFeaturiser()
    assert isinstance(feat, MinMaxFeaturiser) and not feat.fitted
    assert LBAFeaturiser().fitted and LinnOSFeaturiser().fitted
    with pytest.raises(NotFittedError, match="lba_hist featuriser is not fitted"):
        feat.encode_live(feat.make_tracker(), 0, 4096, 0)
    with pytest.raises(ValueError, match=r"\(N, 11\)"):
        feat.fit_raw(np.zeros((3, 394)))
    with pytest.raises(ValueError, match="min must hold 11"):
        LBAHistFeaturiser(min=[0.0] * 394, max=[1.0] * 394)
    with pytest.raises(ValueError, match="queue_digits"):
        make_featuriser({**feat.config(), "queue_digits": 0})
    feat.fit_raw(np.zeros((1, 11)))
    with pytest.raises(ValueError, match="history 3 < 4"):  # n_reads=4 > history=3
        feat.encode_live(PendingTracker(history=3), 0, 4096, 0)


# -- configs and checks ------------------------------------------------------------------------


def test_config_round_trip(sample: pa.Table) -> None:
    small = sample.slice(0, 2_000)
    feats = [*all_featurisers(small), LBAFeaturiser(pending=3, lba_bytes=5, lba_unit=512,
                                                     timeout_us=77, capacity=9)]
    for feat in feats:
        cfg = json.loads(json.dumps(feat.config()))
        assert cfg["version"] == 1 and cfg["dim"] == feat.dim
        again = make_featuriser(cfg)
        assert type(again) is type(feat) and again.config() == feat.config()
        assert np.array_equal(again.encode_trace(small), feat.encode_trace(small))
        assert FEATURISERS[cfg["name"]].from_config(cfg) == feat


def test_bad_configs_are_named() -> None:
    with pytest.raises(ValueError, match="unknown featuriser"):
        make_featuriser({"name": "nope"})
    with pytest.raises(ValueError, match="version"):
        make_featuriser({**LBAFeaturiser().config(), "version": 99})
    with pytest.raises(ValueError, match="dim"):
        make_featuriser({**LBAFeaturiser().config(), "dim": 351})
    with pytest.raises(ValueError, match="lba_bytes"):
        make_featuriser({**LBAFeaturiser().config(), "lba_bytes": 9})
    with pytest.raises(ValueError, match="bad linnos"):
        make_featuriser({**LinnOSFeaturiser().config(), "surprise": 1})
    with pytest.raises(ValueError, match="min must hold"):
        make_featuriser({**HeimdallFeaturiser().config(), "min": [0.0], "max": [1.0]})


def test_tracker_must_match_and_out_is_reused() -> None:
    feat = LBAFeaturiser(timeout_us=1000)
    with pytest.raises(ValueError, match="make_tracker"):
        feat.encode_live(PendingTracker(), 0, 4096, 0)
    with pytest.raises(ValueError, match="history"):
        LinnOSFeaturiser().encode_live(PendingTracker(history=2), 0, 4096, 0)
    tr = feat.make_tracker()
    buf = np.zeros(feat.dim, np.float32)
    assert feat.encode_live(tr, 4096, 4096, 0, out=buf) is buf
    with pytest.raises(ValueError, match="float32"):
        feat.encode_live(tr, 4096, 4096, 0, out=np.zeros(feat.dim))
    with pytest.raises(ValueError, match="float32"):
        feat.encode_live(tr, 4096, 4096, 0, out=np.zeros(feat.dim + 1, np.float32))


def test_encode_trace_into_out(sample: pa.Table) -> None:
    small = sample.slice(0, 500)
    feat = LinnOSFeaturiser()
    buf = np.full((500, feat.dim), -1.0, np.float32)
    assert feat.encode_trace(small, out=buf) is buf
    assert np.array_equal(buf, feat.encode_trace(small))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        feat.encode_trace(small, out=np.zeros((499, feat.dim), np.float32))
