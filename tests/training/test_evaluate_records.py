"""``mittd evaluate`` (and ``mittd train``) on the daemon's IO records: a directory or a
glob of segments reads as the trace of the IOs that reached the device, and the
"served" ROC-AUC — of the P(slow) the daemon recorded, on the IOs the bundle decided —
equals the one computed by hand from the recorded columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mittd.predictor.bundle import load_bundle
from mittd.predictor.engines import make_engine
from mittd.predictor.features import make_featuriser
from mittd.predictor.graph import p_slow
from mittd.predictor.shipped import shipped_bundle
from mittd.traces.records import (
    D_ADMIT,
    D_REJECT,
    D_SHADOW_REJECT,
    DECISIONS,
    RECORD_KEY,
    RECORD_SCHEMA,
    reached_device,
    read_records,
)
from mittd.traces.schema import METADATA_KEY, build_metadata, read_trace, write_trace
from mittd.traces.shipped import shipped_trace
from mittd.training.evaluate import roc_auc
from tests.conftest import run_cli

REASONS = ("predicted", "deadline-beyond-model", "overrun", "probe", "fail-open",
           "reject-cap", "shadow")
OTHER_SHA = "c3" * 32
N = 4000


def _dict(codes: np.ndarray, names: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(names))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """Records of 4,000 IOs of the shipped trace as heimdall would have served them:
    its real P(slow); some IOs rejected (no latency), some shadow-rejected, some not
    predicted, 500 decided by another model, some still pending; two segments and one
    being written. Returns the records directory and the full records table."""
    trace = read_trace(shipped_trace()).slice(100_000, N).sort_by("ts_issue_us")
    path = shipped_bundle("heimdall")
    b = load_bundle(path)
    x = make_featuriser(b.featuriser).encode_trace(trace)
    p = p_slow(b.graph, make_engine("csr", b.graph, b.params).logits(x))[:, 0]
    i = np.arange(N)
    predicted = i % 10 != 7
    decision = np.full(N, D_ADMIT, np.int8)
    decision[predicted & (p > 0.5) & (i % 3 == 0)] = D_REJECT
    decision[predicted & (p > 0.5) & (i % 3 == 1)] = D_SHADOW_REJECT
    lat = trace.column("latency_us").to_numpy().copy()
    lat[decision == D_REJECT] = np.nan
    lat[i % 97 == 5] = np.nan  # still pending when the segment was written
    sha = np.where((i >= 3000) & (i < 3500), OTHER_SHA, b.sha256)
    cols = {
        **{c: trace.column(c) for c in ("ts_issue_us", "op", "offset", "size", "device")},
        "latency_us": pa.array(lat),
        "p_slow": pa.array(np.where(predicted, p, np.nan).astype(np.float32)),
        "decision": _dict(decision, DECISIONS),
        "reason": _dict(np.where(predicted, 0, 1).astype(np.int8), REASONS),
        "threshold_index": pa.array(np.where(predicted, 0, -1).astype(np.int8)),
        "deadline_us": pa.array(np.full(N, 188.0)),
        "model_sha": pa.array(sha.tolist(), pa.string()),
    }
    table = pa.table({f.name: cols[f.name] for f in RECORD_SCHEMA}, schema=RECORD_SCHEMA)
    d = tmp_path_factory.mktemp("records") / "vda"
    d.mkdir()
    meta = {METADATA_KEY: json.dumps(build_metadata("mittd-records", None)),
            RECORD_KEY: json.dumps({"device": "vda"})}
    for k, part in enumerate((table.slice(0, 2000), table.slice(2000))):
        pq.write_table(part.replace_schema_metadata(meta),
                       d / f"20261201T14{25 + k:02d}00000000Z-{k + 1:06d}.parquet")
    (d / "20261201T142700000000Z-000003.parquet.partial").write_bytes(b"PAR1")
    assert read_records(d).num_rows == N
    return d, table


def _by_hand(table: pa.Table, start: float = 0.0) -> tuple[int, float]:
    """served IOs and ROC-AUC straight from the recorded columns."""
    b = load_bundle(shipped_bundle("heimdall"))
    view = table.filter(pa.array(np.asarray(table.column("decision").to_pylist())
                                 != DECISIONS[D_REJECT]))
    lat = view.column("latency_us").to_numpy()
    p = view.column("p_slow").to_numpy(zero_copy_only=False).astype(np.float64)
    k = view.column("threshold_index").to_numpy()
    sha = np.asarray(view.column("model_sha").to_pylist())
    mine = np.isfinite(lat) & np.isfinite(p) & (k == 0) & (sha == b.sha256)
    mine[: int(start * len(mine))] = False
    y = lat[mine] > b.latency_thresholds_us()[0]
    return int(mine.sum()), roc_auc(y, p[mine])


def _evaluate(*args: str) -> tuple[str, list[dict]]:
    out = Path(args[-1])
    r = run_cli("evaluate", *args[:-1], "--json", str(out))
    assert r.returncode == 0, r.stderr
    return r.stdout, json.loads(out.read_text())


@pytest.mark.parametrize("how", ["dir", "glob"])
def test_served_roc_auc_is_that_of_the_recorded_p_slow(
        served: tuple[Path, pa.Table], tmp_path: Path, how: str) -> None:
    d, table = served
    spec = str(d) if how == "dir" else f"{d.parent}/*/*.parquet"
    out, rows = _evaluate(str(shipped_bundle("heimdall")), "--trace", spec,
                          str(tmp_path / "r.json"))
    n, auc = _by_hand(table)
    assert 2000 < n < 3500
    (row,) = rows
    assert row["served_ios"] == n
    assert row["served_roc_auc"] == pytest.approx(auc, abs=1e-12)
    assert 0.5 < auc < 1.0
    # the offline re-prediction scores every IO that reached the device with a latency
    view = reached_device(table)
    assert row["ios"] == int(np.isfinite(view.column("latency_us").to_numpy()).sum())
    assert 0.0 <= row["offline_roc_auc_on_served"] <= 1.0
    assert "served ROC-AUC |" in out.splitlines()[1]
    assert f"{auc:.3f} |" in out.splitlines()[3]


def test_offline_metrics_are_those_of_the_trace_view(served: tuple[Path, pa.Table],
                                                    tmp_path: Path) -> None:
    d, table = served
    plain = tmp_path / "view.parquet"
    write_trace(plain, reached_device(table), build_metadata("test", None))
    bundle = str(shipped_bundle("heimdall"))
    out_plain, (a,) = _evaluate(bundle, "--trace", str(plain), str(tmp_path / "a.json"))
    _, (b,) = _evaluate(bundle, "--trace", str(d), str(tmp_path / "b.json"))
    for key in ("ios", "roc_auc", "pr_auc", "accuracy", "recall", "precision", "fpr"):
        assert a[key] == b[key], key
    assert "served_roc_auc" not in a and "served" not in out_plain  # ordinary trace: as before


def test_served_follows_from_and_a_bundle_that_decided_nothing_shows_a_dash(
        served: tuple[Path, pa.Table], tmp_path: Path) -> None:
    d, table = served
    out, rows = _evaluate(str(shipped_bundle("heimdall")), str(shipped_bundle("linnos")),
                          "--trace", str(d), "--from", "0.5", str(tmp_path / "r.json"))
    n, auc = _by_hand(table, start=0.5)
    heimdall, linnos = rows
    assert heimdall["served_ios"] == n
    assert heimdall["served_roc_auc"] == pytest.approx(auc, abs=1e-12)
    assert linnos["served_ios"] == 0 and linnos["served_roc_auc"] is None
    line = next(ln for ln in out.splitlines() if ln.startswith("| linnos "))
    assert line.rstrip().endswith("| - |")


def test_evaluate_on_an_empty_records_dir_is_one_line(tmp_path: Path) -> None:
    r = run_cli("evaluate", str(shipped_bundle("heimdall")), "--trace", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"mittd: error: {tmp_path}: is a directory, expected a trace file (no *.parquet "
        "segment beneath it)"]


def test_train_on_a_records_directory(served: tuple[Path, pa.Table], tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_model_optimization")
    d, table = served
    out = tmp_path / "m.mittd"
    r = run_cli("train", str(d), "--model", "heimdall", "--slo", "188us", "--epochs", "1",
                "--replica", f"{d}/*.parquet", "-o", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    b = load_bundle(out)
    assert b.provenance["data"]["sources"] == [str(d.resolve())]
    assert b.provenance["data"]["traces"][0]["n_ios"] == reached_device(table).num_rows
    bad = run_cli("train", str(d), "--model", "heimdall", "--replica", f"{d}/nope*",
                  "-o", str(tmp_path / "n.mittd"), "--quiet")
    assert bad.returncode == 2 and "no trace segment matches" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
