"""``mittd replay``: the admission core on a virtual clock, its policies and its report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mittd.daemon.cli import main
from mittd.daemon.replay import (
    Model,
    ReplayError,
    Replica,
    replay_model,
    run_replay,
    self_replica,
    trace_from_table,
)
from mittd.daemon.replay.report import build_report, format_table
from mittd.predictor.bundle import save_bundle
from mittd.predictor.engines import DenseNumpyEngine
from mittd.predictor.features import make_featuriser
from mittd.predictor.synthetic import synthetic_bundle
from mittd.traces.schema import make_batch, read_trace, write_trace
from mittd.traces.shipped import shipped_trace
from tests.conftest import run_cli

SAMPLE = shipped_trace()
SLO = "300us"  # below the synthetic bundles' trained threshold (500 µs): they predict


@pytest.fixture(scope="module")
def sample_table() -> pa.Table:
    return read_trace(SAMPLE).slice(0, 3000)


@pytest.fixture(scope="module")
def sample(sample_table: pa.Table):
    return trace_from_table(sample_table, "sample")


def table(ts, lat, op, off=None, size=None) -> pa.Table:
    n = len(ts)
    off = np.arange(n, dtype=np.int64) * 4096 if off is None else off
    size = np.full(n, 4096, np.int64) if size is None else size
    return pa.Table.from_batches([make_batch(np.asarray(ts, np.int64), np.asarray(lat, float),
                                             np.asarray(op, np.int8), off, size, "dev")])


def model(name: str = "heimdall", fit: pa.Table | None = None, seed: int = 0) -> Model:
    b = synthetic_bundle(name, seed=seed)
    if fit is not None and name == "heimdall":  # bounds from the data: features that vary
        b.featuriser = make_featuriser(b.featuriser).fit(fit).config()
    return Model(name, f"{name}.mittd", b)


def test_baseline_reproduces_the_traces_read_latencies(sample) -> None:
    rep = run_replay(sample, [], [], ["baseline"], SLO)
    (base,) = rep.results
    reads = sample.reads
    assert np.array_equal(base.latency_us[reads], sample.cols.lat[reads])
    assert not base.rejected.any() and base.extra_ios == 0
    row = build_report(rep)["policies"][0]
    assert row["p99_us"] == np.percentile(sample.cols.lat[reads], 99)
    assert row["mean_us"] == pytest.approx(sample.cols.lat[reads].mean())


def test_oracle_rejects_exactly_the_slow_reads(sample) -> None:
    rep = run_replay(sample, [], [], ["baseline", "oracle"], SLO)
    slo = rep.slo_us
    oracle = rep.get("oracle")
    reads = sample.reads
    assert np.array_equal(oracle.rejected, reads & (sample.cols.lat > slo))
    rows = {r["policy"]: r for r in build_report(rep)["policies"]}
    assert rows["oracle"]["p99_us"] <= rows["baseline"]["p99_us"]
    assert rows["oracle"]["false_reject_rate"] == 0.0
    assert rows["oracle"]["false_admit_rate"] == 0.0
    assert rows["oracle"]["oracle_p99_gain"] == 1.0 and rows["baseline"]["oracle_p99_gain"] == 0


def test_always_rejecting_model_sends_every_read_to_the_replica(sample) -> None:
    m = model("heimdall", fit=None)
    one = replay_model(sample, [self_replica(sample)], m, 300.0, engine="dense",
                       decision_threshold=0.0, failover_cost_us=7, probe_after=0,
                       max_reject_share=1.0)
    reads = sample.reads
    assert one.rejected[reads].all() and np.all(one.served_by[reads] == 1)
    expect = 7 + self_replica(sample).latency_at(sample.cols.ts - sample.t0 + 7)
    assert np.array_equal(one.latency_us[reads], expect[reads])
    assert one.failovers == reads.sum()
    # three replicas: the two intermediate ones reject too, the last never does
    reps = [Replica(f"r{j}", sample, shift_us=1000 * j) for j in (1, 2, 3)]
    three = replay_model(sample, reps, m, 300.0, engine="dense", decision_threshold=0.0,
                         max_reject_share=1.0,
                         probe_after=0)
    assert np.all(three.served_by[reads] == 3)
    assert three.failovers == 3 * reads.sum()
    assert three.decisions == 3 * reads.sum()
    c = three.counters
    assert c["primary"].rejected == reads.sum() and c["primary"].admitted == (~reads).sum()
    # with probes (the daemon's default), one read in every probe_after + 1 is admitted
    probed = replay_model(sample, [self_replica(sample)], m, 300.0, engine="dense",
                          decision_threshold=0.0, probe_after=4, max_reject_share=1.0)
    assert probed.counters["primary"].probes == reads.sum() // 5
    for alias in ("replica1", "replica2"):
        # fed with its own trace's IOs (admitted, no prediction), rejects every failover
        assert c[alias].rejected == reads.sum()
        assert c[alias].admitted >= 0.99 * sample.n  # own IOs up to the last failover
        assert c[alias].beyond_model == c[alias].admitted


def test_intermediate_replica_decides_on_its_own_state(sample, sample_table) -> None:
    m = model("heimdall", fit=sample_table)
    reps = [Replica("r1", sample, 500), Replica("r2", sample, 900)]
    res = replay_model(sample, reps, m, 300.0, engine="dense", decision_threshold=0.0,
                       probe_after=0, max_reject_share=1.0)
    assert np.all(res.served_by[sample.reads] == 2)  # threshold 0 everywhere: last replica
    res = replay_model(sample, reps, m, 300.0, engine="dense", decision_threshold=0.5)
    served = res.served_by[sample.reads]
    assert (served == 1).any() and (served == 2).any()
    r1 = res.counters["replica1"]
    assert r1.admitted - r1.beyond_model == (served == 1).sum()  # failovers it took
    assert r1.rejected == (served == 2).sum()
    assert res.decisions == sample.reads.sum() + (served > 0).sum()


def test_failover_latency_comes_from_the_replica_at_that_time() -> None:
    # primary: reads every 100 µs, every 4th one slow; replica: other t0, its own latencies
    n = 40
    ts = 1_000_000 + 100 * np.arange(n)
    lat = np.where(np.arange(n) % 4 == 3, 5000.0, 50.0)
    primary = trace_from_table(table(ts, lat, np.zeros(n)), "p")
    rts = 7_000_000 + 30 * np.arange(200)  # 6000 µs long: shorter than the primary
    rlat = 10.0 + np.arange(200)
    rop = np.where(np.arange(200) % 2 == 0, 0, 1)  # only even rows are reads
    replica = Replica("r", trace_from_table(table(rts, rlat, rop), "r"))
    rep = run_replay(primary, [replica], [], ["oracle"], "1000us", failover_cost_us=25)
    o = rep.results[0]
    for i in np.flatnonzero(o.rejected):
        u = (100 * i + 25) % replica.period_us  # relative time of arrival, circular
        j = next((k for k in range(0, 200, 2) if 30 * k >= u), 0)  # first read at/after
        assert o.latency_us[i] == 25 + rlat[j]
    assert o.rejected.sum() == n // 4
    # the default replica: the trace itself, half its duration later (circular)
    me = self_replica(primary)
    assert me.shift_us == primary.period_us // 2
    got = me.latency_at(np.array([0, primary.period_us - me.shift_us]))
    assert list(got) == [lat[(me.shift_us + 99) // 100], lat[0]]


def test_hedge_is_min_of_primary_and_p95_plus_replica() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    ts = 10 * np.arange(n)
    lat = rng.lognormal(4.5, 0.8, n)
    primary = trace_from_table(table(ts, lat, np.zeros(n)), "p")
    replica = Replica("r", trace_from_table(table(ts, np.full(n, 40.0), np.zeros(n)), "r"))
    rep = run_replay(primary, [replica], [], ["hedge"], "200us")
    h = float(np.percentile(lat, 95))
    (res,) = rep.results
    assert np.allclose(res.latency_us, np.minimum(lat, h + 40.0))
    assert res.hedges == int((lat > h).sum()) == 100
    row = build_report(rep)["policies"][0]
    assert row["extra_ios"] == 100 and row["extra_io_fraction"] == 100 / n
    assert row["reject_rate"] == 0.0


def test_random_rejects_at_the_best_models_rate(sample, sample_table) -> None:
    models = [model("heimdall", fit=sample_table, seed=s) for s in (0, 1)]
    models[1].name = "heimdall#2"
    rep = run_replay(sample, [], models, ["models", "random", "baseline"], SLO,
                     engine="dense", seed=3)
    assert [r.name for r in rep.results] == ["heimdall", "heimdall#2", "random", "baseline"]
    best = min(rep.results[:2], key=lambda r: np.percentile(r.latency_us[sample.reads], 99))
    reads = sample.reads
    rnd = rep.get("random")
    assert rep.random_rate_from == best.name
    assert rnd.rejected[reads].sum() == round(best.rejected[reads].mean() * reads.sum())
    again = run_replay(sample, [], models, ["models", "random"], SLO, engine="dense", seed=3)
    assert np.array_equal(again.get("random").rejected, rnd.rejected)
    # no model: the oracle's rate
    alone = run_replay(sample, [], [], ["random"], SLO)
    slow = (sample.cols.lat[reads] > alone.slo_us).sum()
    assert alone.get("random").rejected.sum() == slow and alone.random_rate_from == "oracle"


class Recording(DenseNumpyEngine):
    """The dense engine, keeping a copy of every input it is run on."""

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.rows: list[np.ndarray] = []

    def run1(self) -> np.ndarray:
        self.rows.append(self.input.copy())
        return super().run1()


@pytest.mark.parametrize("name", ["precise_linear", "linnos", "heimdall"])
def test_always_admit_replay_sees_the_features_of_encode_trace(name, sample_table,
                                                               sample) -> None:
    m = model(name, fit=sample_table)
    eng = Recording(m.bundle.graph, m.bundle.params)
    res = replay_model(sample, [self_replica(sample)], m, 300.0, engine=eng,
                       decision_threshold=1.0, record_p_slow=True)
    reads = sample.reads
    assert not res.rejected.any()
    x = make_featuriser(m.bundle.featuriser).encode_trace(sample_table)
    assert np.array_equal(np.stack(eng.rows), x[reads])  # bit-identical, row for row
    ref = DenseNumpyEngine(m.bundle.graph, m.bundle.params)
    margins = ref.margins(x[reads])
    p_ref = 1.0 / (1.0 + np.exp(-margins.astype(np.float64)))
    assert np.allclose(res.p_slow[reads], p_ref, rtol=1e-5, atol=1e-6)
    assert np.isnan(res.p_slow[~reads]).all()
    assert np.ptp(p_ref) > 1e-4  # the check means something: the inputs move the output


def test_slo_beyond_the_model_is_reported(sample) -> None:
    rep = run_replay(sample, [], [model()], ["models"], "2ms", engine="dense")
    (res,) = rep.results
    assert not res.rejected.any()
    assert any("above every threshold" in n for n in rep.notes)
    assert "note:" in format_table(build_report(rep))


def _write(tmp: Path, name: str, t: pa.Table) -> str:
    p = tmp / name
    write_trace(p, t, {})
    return str(p)


def test_cli_writes_report_json_and_png(tmp_path: Path, sample_table: pa.Table) -> None:
    trace = _write(tmp_path, "t.parquet", sample_table)
    b = synthetic_bundle("heimdall")
    b.featuriser = make_featuriser(b.featuriser).fit(sample_table).config()
    save_bundle(b, tmp_path / "hd.mittd")
    out = tmp_path / "rep"
    r = run_cli("replay", trace, "--model", str(tmp_path / "hd.mittd"), "--slo", "300us",
                "--engine", "dense", "-o", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "hd" in r.stdout and "oracle" in r.stdout and "baseline" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    assert [p["policy"] for p in rep["policies"]] == ["baseline", "hd", "hedge", "random",
                                                       "oracle"]
    assert rep["slo"]["us"] == 300.0 and rep["ios"] == 3000
    hd = rep["policies"][1]
    assert hd["model"]["version"] == b.version_id and hd["decisions"] > 0
    assert math.isfinite(hd["decisions_per_s"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in r.stderr
    else:
        assert (out / "latency_cdf.png").read_bytes()[:4] == b"\x89PNG"


def _err(capsys, *args: str) -> str:
    assert main(["replay", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mittd: error: ") and "\n" not in err, err
    return err


def test_user_errors_are_one_line(tmp_path: Path, capsys, sample_table: pa.Table) -> None:
    good = _write(tmp_path, "t.parquet", sample_table.slice(0, 200))
    save_bundle(synthetic_bundle("linnos"), tmp_path / "ln.mittd")
    bundle = str(tmp_path / "ln.mittd")
    out = str(tmp_path / "o")
    assert "no such file" in _err(capsys, str(tmp_path / "nope.parquet"), "-m", bundle, "-o", out)
    assert "no such bundle" in _err(capsys, good, "-m", str(tmp_path / "x.mittd"), "-o", out)
    assert "bad SLO" in _err(capsys, good, "-m", bundle, "--slo", "fast", "-o", out)
    assert "unknown policy" in _err(capsys, good, "-m", bundle, "--policy", "bogus", "-o", out)
    assert "--model" in _err(capsys, good, "-o", out)
    nolat = _write(tmp_path, "nolat.parquet", table([1, 2, 3], [math.nan] * 3, [0, 1, 0]))
    assert "known latency" in _err(capsys, nolat, "-m", bundle, "-o", out)
    empty = _write(tmp_path, "empty.parquet", table([], [], []))
    assert "no IOs" in _err(capsys, empty, "-m", bundle, "-o", out)
    writes = _write(tmp_path, "w.parquet", table([1, 2], [5.0, 6.0], [1, 1]))
    assert "no reads" in _err(capsys, writes, "-m", bundle, "-o", out)
    bad = synthetic_bundle("linnos")
    bad.featuriser = {**bad.featuriser, "name": "lba"}  # a model/featuriser mismatch
    save_bundle(bad, tmp_path / "bad.mittd", validate=False)
    err = _err(capsys, good, "-m", str(tmp_path / "bad.mittd"), "-o", out)
    assert "bad.mittd: manifest field featuriser" in err
    dims = synthetic_bundle("linnos")
    dims.featuriser = {**dims.featuriser, "n_reads": 2, "dim": None}  # 17 inputs, model: 31
    save_bundle(dims, tmp_path / "dims.mittd", validate=False)
    assert "mismatch" in _err(capsys, good, "-m", str(tmp_path / "dims.mittd"), "-o", out)


def test_replay_error_is_a_user_error() -> None:
    from mittd.daemon.cli import USER_ERRORS

    assert ReplayError in USER_ERRORS


def test_a_bundle_at_its_own_operating_point(tmp_path: Path) -> None:
    from mittd.daemon.replay import split_operating_point

    assert split_operating_point("a/b.mittd@0.97") == ("a/b.mittd", 0.97)
    assert split_operating_point("a/b@c.mittd") == ("a/b@c.mittd", None)
    with pytest.raises(ReplayError, match="cutoff"):
        split_operating_point("b.mittd@x")
    path = tmp_path / "m.mittd"
    save_bundle(synthetic_bundle("precise_linear", 0.95, "node"), path)
    r = run_cli("replay", str(SAMPLE), "--limit", "3000", "-m", str(path),
                "-m", f"{path}@1.0", "--policy", "baseline,models", "--slo", "300us",
                "-q", "-o", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    rows = {p["policy"]: p for p in json.loads((tmp_path / "rep" / "report.json")
                                               .read_text())["policies"]}
    assert rows["m@1"]["reject_rate"] == 0.0  # P(slow) > 1 never holds
    assert "m" in rows
