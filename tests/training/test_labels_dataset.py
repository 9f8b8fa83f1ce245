"""SLO parsing, labels, threshold ladders and the time-split dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mittd.predictor.features import HeimdallFeaturiser, trace_columns
from mittd.traces.schema import OP_READ, make_batch, read_trace, write_trace
from mittd.traces.shipped import shipped_trace
from mittd.training.dataset import MIN_LABELLED, load_dataset
from mittd.training.labels import (
    inflection_point,
    labels,
    ladder,
    parse_slo,
    threshold_index_for,
)
from tests.conftest import DATA

SAMPLE = shipped_trace()


# -- parse_slo --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("500us", 500.0),
        ("500µs", 500.0),
        ("0.5ms", 500.0),
        ("2ms", 2000.0),
        (" 2 MS ", 2000.0),
        ("1s", 1e6),
        ("250ns", 0.25),
        ("750", 750.0),
        ("1.5e3us", 1500.0),
        ("1234.5us", 1234.5),
    ],
)
def test_parse_slo_durations(text: str, us: float) -> None:
    assert parse_slo(text, np.array([1.0, 2.0])) == pytest.approx(us)


def test_parse_slo_percentiles_use_the_given_latencies() -> None:
    lat = np.r_[np.arange(1.0, 1001.0), np.nan]
    assert parse_slo("p95", lat) == pytest.approx(np.percentile(lat[:-1], 95))
    assert parse_slo("P99.9", lat) == pytest.approx(np.percentile(lat[:-1], 99.9))
    assert parse_slo("p100", lat) == 1000.0


@pytest.mark.parametrize("bad", ["fast", "", "p0", "p101", "-5us", "0ms", "5 minutes", "p",
                                 "1.2.3ms", "inf"])
def test_parse_slo_rejects_bad_values_naming_them(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_slo(bad, np.arange(1.0, 100.0))


def test_parse_slo_percentile_needs_known_latencies() -> None:
    with pytest.raises(ValueError, match="known"):
        parse_slo("p99", np.full(3, np.nan))


def _bimodal(seed: int, slow_frac: float, n: int = 20_000) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ns = int(n * slow_frac)
    fast = rng.lognormal(np.log(100.0), 0.25, n - ns)
    slow = rng.lognormal(np.log(2000.0), 0.3, ns)
    lat = np.r_[fast, slow]
    rng.shuffle(lat)
    return lat, fast, slow


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("slow_frac", [0.05, 0.1, 0.2])
def test_auto_slo_lands_between_the_modes(seed: int, slow_frac: float) -> None:
    lat, fast, slow = _bimodal(seed, slow_frac)
    knee = parse_slo("auto", lat)
    assert knee == inflection_point(lat)
    assert np.percentile(fast, 95) < knee < np.percentile(slow, 5)
    # it separates the modes: the slow share it labels is close to the true one
    assert abs(float((lat > knee).mean()) - slow_frac) < 0.02


def test_auto_slo_ignores_nan_and_far_outliers() -> None:
    lat, _, _ = _bimodal(0, 0.1)
    knee = inflection_point(lat)
    assert inflection_point(np.r_[lat, np.full(50, np.nan)]) == knee
    # a handful of huge outliers sits above the 97th percentile the finder keeps
    assert inflection_point(np.r_[lat, np.full(20, 1e7)]) == pytest.approx(knee, rel=0.02)


def test_auto_slo_on_the_real_sample_is_in_the_reads_knee() -> None:
    t = read_trace(SAMPLE)
    lat = t.column("latency_us").to_numpy()
    reads = t.column("op").combine_chunks().indices.to_numpy() == OP_READ
    knee = parse_slo("auto", lat[reads])
    # reads: p50 91 µs, p99 1.7 ms; the knee is where the body ends
    assert np.percentile(lat[reads], 90) < knee < np.percentile(lat[reads], 99)


# -- labels, ladder, deadlines ----------------------------------------------------------------


def test_labels_shapes_and_strict_threshold() -> None:
    lat = np.array([50.0, 100.0, 100.5, 600.0, 2000.0])
    y = labels(lat, 100.0)
    assert y.shape == (5,)
    assert y.tolist() == [0, 0, 1, 1, 1]  # equal to the threshold is fast
    y2 = labels(lat, [100.0, 500.0, 1000.0])
    assert y2.shape == (5, 3)
    assert y2.tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert labels(lat, [100.0]).shape == (5, 1)
    assert np.all(np.diff(y2, axis=1) <= 0)  # slow at a higher threshold ⇒ slow below


def test_labels_refuse_nan_and_unsorted_ladders() -> None:
    with pytest.raises(ValueError, match="NaN"):
        labels(np.array([1.0, np.nan]), 10.0)
    with pytest.raises(ValueError, match="ascending"):
        labels(np.array([1.0, 2.0]), [500.0, 100.0])
    with pytest.raises(ValueError, match="ascending"):
        labels(np.array([1.0, 2.0]), [100.0, 100.0])
    with pytest.raises(ValueError, match="non-empty"):
        labels(np.array([1.0, 2.0]), [])


def test_ladder_default_percentiles_rounded() -> None:
    lat = np.arange(1.0, 100_001.0)
    assert ladder(lat) == [90_000.0, 95_000.0, 99_000.0, 100_000.0]
    assert ladder(lat, 2) == [95_000.0, 99_000.0]
    lat2 = np.random.default_rng(0).lognormal(np.log(100.0), 1.0, 50_000)
    lad = ladder(lat2, 4)
    assert lad == sorted(set(lad)) and len(lad) == 4
    for t, q in zip(lad, (90, 95, 99, 99.9), strict=True):
        assert t == pytest.approx(np.percentile(lat2, q), rel=0.06)  # 2 significant figures


def test_ladder_merges_equal_rungs_and_checks_k() -> None:
    assert ladder(np.r_[np.full(990, 100.0), np.full(11, 5000.0)], 4) == [100.0, 5000.0]
    for k in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match="ladder k"):
            ladder(np.arange(1.0, 10.0), k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("deadline", "index"),
    [(1.0, 0), (99.9, 0), (100.0, 0), (100.1, 1), (200.0, 1), (499.0, 2), (1000.0, 3),
     (1000.1, None), (1e9, None)],
)
def test_threshold_index_for_uses_smallest_threshold_at_or_above(
    deadline: float, index: int | None
) -> None:
    assert threshold_index_for(deadline, [100.0, 200.0, 500.0, 1000.0]) == index


def test_threshold_index_for_validates() -> None:
    with pytest.raises(ValueError, match="NaN"):
        threshold_index_for(float("nan"), [100.0])
    with pytest.raises(ValueError, match="ascending"):
        threshold_index_for(150.0, [200.0, 100.0])
    assert threshold_index_for(150.0, [200.0]) == 0
    assert threshold_index_for(250.0, [200.0]) is None


# -- dataset ----------------------------------------------------------------------------------


def _trace(
    path: Path,
    n: int = 3000,
    seed: int = 0,
    t0: int = 1_000_000,
    nan_frac: float = 0.05,
    test_scale: float = 1.0,
    test_size: int = 4096,
) -> Path:
    """A labelled trace: reads and writes, timestamps with ties (3 IOs share each),
    slow periods spread over time, some unknown latencies; the last 20 % of IOs can
    be made slower (``test_scale``) or larger (``test_size``)."""
    rng = np.random.default_rng(seed)
    ts = t0 + (np.arange(n) // 3) * 50
    op = (rng.random(n) < 0.25).astype(np.int8)  # 25 % writes
    busy = (np.arange(n) // 100) % 7 == 3  # slow periods
    lat = np.where(busy, rng.lognormal(np.log(2000.0), 0.3, n),
                   rng.lognormal(np.log(100.0), 0.2, n))
    lat = np.where(op == 1, lat + 10_000.0, lat)  # writes are recognisable
    late = np.arange(n) >= int(0.8 * n)
    lat = np.where(late, lat * test_scale, lat)
    lat[rng.random(n) < nan_frac] = np.nan
    size = np.where(late, test_size, 4096)
    off = rng.integers(0, 1 << 30, n) // 4096 * 4096
    perm = rng.permutation(n)  # stored out of order: the loader must sort by issue time
    batch = make_batch(ts[perm], lat[perm], op[perm], off[perm], size[perm], "sda")
    write_trace(path, pa.Table.from_batches([batch]), {"source_format": "test"})
    return path


def _split_rows(path: Path, ds_info: dict, index: int, reads_only: bool = False) -> np.ndarray:
    cols = trace_columns(read_trace(path))
    keep = np.isfinite(cols.lat)
    if reads_only:
        keep &= cols.op == OP_READ
    split = ds_info["traces"][index]["split_ts_us"]
    return keep & (cols.ts < split)


def test_split_is_by_time_per_trace(tmp_path: Path) -> None:
    a = _trace(tmp_path / "a.parquet", seed=1)
    b = _trace(tmp_path / "b.parquet", seed=2, t0=0)  # earlier timestamps than a
    ds = load_dataset([a, b], "linnos", slo="p90", test_fraction=0.3)
    assert ds.source_train.tolist() == sorted(ds.source_train.tolist())  # files in order
    for i in (0, 1):
        tr = ds.ts_train[ds.source_train == i]
        te = ds.ts_test[ds.source_test == i]
        assert tr.size and te.size
        assert tr.max() < te.min()  # even though 3 IOs share every timestamp
        assert np.all(np.diff(tr) >= 0) and np.all(np.diff(te) >= 0)  # issue order kept
        frac = te.size / (tr.size + te.size)
        assert abs(frac - 0.3) < 0.01
        info = ds.info["traces"][i]
        assert info["n_train"] == tr.size and info["n_test"] == te.size
        assert info["split_ts_us"] == te.min()
    assert len(ds.x_train) == len(ds.y_train) == len(ds.lat_train) == len(ds.ts_train)
    assert len(ds.x_test) == len(ds.y_test) == len(ds.lat_test) == len(ds.ts_test)
    json.dumps(ds.info, allow_nan=False)  # goes into the bundle's provenance


def test_rows_align_with_features_and_drop_unknown_latency(tmp_path: Path) -> None:
    path = _trace(tmp_path / "t.parquet")
    ds = load_dataset([path], "lba", slo="p90")
    table = read_trace(path)
    cols = trace_columns(table)
    known = np.isfinite(cols.lat)
    assert not np.isnan(ds.lat_train).any() and not np.isnan(ds.lat_test).any()
    assert len(ds.lat_train) + len(ds.lat_test) == int(known.sum())
    full = ds.featuriser.encode_trace(table)  # every IO featurised, then examples picked
    np.testing.assert_array_equal(np.vstack([ds.x_train, ds.x_test]), full[known])
    np.testing.assert_array_equal(np.r_[ds.lat_train, ds.lat_test], cols.lat[known])
    assert ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.y_train, (ds.lat_train > ds.thresholds_us[0]))


def test_reads_only_keeps_reads(tmp_path: Path) -> None:
    path = _trace(tmp_path / "t.parquet")
    ds = load_dataset([path], "heimdall", reads_only=True, slo="p90")
    cols = trace_columns(read_trace(path))
    n_reads = int((np.isfinite(cols.lat) & (cols.op == OP_READ)).sum())
    assert len(ds.lat_train) + len(ds.lat_test) == n_reads
    assert np.r_[ds.lat_train, ds.lat_test].max() < 10_000.0  # no write latency got in


def test_slo_comes_from_training_latencies_only(tmp_path: Path) -> None:
    path = _trace(tmp_path / "t.parquet", test_scale=100.0)  # the future is much slower
    ds = load_dataset([path], "linnos", slo="p90", reads_only=True)
    assert ds.thresholds_us == [pytest.approx(np.percentile(ds.lat_train, 90))]
    everything = np.r_[ds.lat_train, ds.lat_test]
    assert ds.thresholds_us[0] < 0.5 * np.percentile(everything, 90)
    auto = load_dataset([path], "linnos", reads_only=True)
    assert auto.thresholds_us == [inflection_point(auto.lat_train)]
    assert auto.info["slow_fraction_test"][0] > auto.info["slow_fraction_train"][0]


def test_heimdall_bounds_fitted_on_training_part_only(tmp_path: Path) -> None:
    path = _trace(tmp_path / "t.parquet", test_size=1 << 20)  # the future has 1 MiB IOs
    ds = load_dataset([path], "heimdall", slo="p90")
    feat = ds.featuriser
    assert isinstance(feat, HeimdallFeaturiser) and feat.fitted
    assert ds.info["featuriser_fit"] == "training split"
    raw = HeimdallFeaturiser().raw_trace(read_trace(path))
    train_rows = _split_rows(path, ds.info, 0)
    assert feat.lo is not None and feat.hi is not None
    np.testing.assert_allclose(feat.lo, raw[train_rows].min(axis=0))
    np.testing.assert_allclose(feat.hi, raw[train_rows].max(axis=0))
    assert feat.hi[0] == 4096.0  # the size bound never saw the test part's 1 MiB IOs
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    # bounds given in a config (a bundle's featuriser) are kept, not refitted
    given = load_dataset([path], "heimdall", slo="p90", featuriser_config=feat.config())
    assert given.info["featuriser_fit"] == "bounds given in featuriser_config"
    np.testing.assert_array_equal(given.x_test, ds.x_test)


def test_class_weights_balance_the_slow_class(tmp_path: Path) -> None:
    path = _trace(tmp_path / "t.parquet")
    ds = load_dataset([path], "linnos", slo="p90")
    cw = ds.class_weight
    assert isinstance(cw, dict)
    n1 = int(ds.y_train.sum())
    n0 = len(ds.y_train) - n1
    assert cw[0] == pytest.approx(len(ds.y_train) / (2 * n0))
    assert cw[1] == pytest.approx(len(ds.y_train) / (2 * n1))
    assert cw[0] * n0 == pytest.approx(cw[1] * n1)  # equal total weight per class
    assert ds.info["slow_fraction_train"] == [pytest.approx(n1 / len(ds.y_train))]


def test_ladder_dataset(tmp_path: Path) -> None:
    path = _trace(tmp_path / "t.parquet", n=20_000)
    ds = load_dataset([path], "heimdall", ladder_k=3)
    assert ds.thresholds_us == ladder(ds.lat_train, 3)
    assert ds.y_train.shape == (len(ds.lat_train), 3)
    assert ds.y_test.shape == (len(ds.lat_test), 3)
    cw = ds.class_weight
    assert isinstance(cw, list) and len(cw) == 3
    for j, w in enumerate(cw):
        n1 = ds.y_train[:, j].sum()
        assert w == pytest.approx((len(ds.y_train) - n1) / n1)
    assert cw == sorted(cw)  # rarer slow class at higher thresholds, heavier positives
    with pytest.raises(ValueError, match="either slo"):
        load_dataset([path], "heimdall", slo="p99", ladder_k=3)


def test_real_sample(tmp_path: Path) -> None:
    ds = load_dataset([SAMPLE], "linnos", reads_only=True)
    assert ds.x_train.shape == (84_000, 31) and ds.x_test.shape == (36_000, 31)
    assert 91.0 < ds.thresholds_us[0] < 1700.0
    assert 0.02 < ds.info["slow_fraction_train"][0] < 0.2
    assert ds.ts_train.max() < ds.ts_test.min()


# -- clear errors -----------------------------------------------------------------------------


def test_error_no_latency_alibaba(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no IO has a known latency"):
        load_dataset([DATA / "alibaba_sample.csv"], "lba")
    nan_trace = _trace(tmp_path / "nan.parquet", nan_frac=1.0)
    with pytest.raises(ValueError, match=r"nan\.parquet: no IO has a known latency"):
        load_dataset([nan_trace], "lba")


def test_error_too_few_labelled(tmp_path: Path) -> None:
    path = _trace(tmp_path / "small.parquet", n=MIN_LABELLED, nan_frac=0.1)
    with pytest.raises(ValueError, match=f"at least {MIN_LABELLED}"):
        load_dataset([path], "lba")


def test_error_no_slow_or_no_fast_in_training(tmp_path: Path) -> None:
    path = _trace(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="no slow IO"):
        load_dataset([path], "lba", slo="1s")
    with pytest.raises(ValueError, match="every IO is slow"):
        load_dataset([path], "lba", slo="1ns")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"featuriser_name": "nope"}, "unknown featuriser"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"slo": "soon"}, "'soon'"),
        ({"featuriser_config": {"name": "lba"}, "featuriser_name": "linnos"}, "not the"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    path = _trace(tmp_path / "t.parquet")
    args = {"featuriser_name": "linnos", **kwargs}
    with pytest.raises(ValueError, match=message):
        load_dataset([path], **args)
