"""``mittd demo`` on what the repository ships: the offline half, a short version of
its live half (in-process; ``mittd bench live`` itself is exercised by
tests/daemon/bench/test_live.py), and ``mittd replay --from``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mittd.daemon.bench import demo
from mittd.traces.collect import direct_io_error
from mittd.traces.shipped import shipped_trace
from tests.conftest import REPO, needs_fio, run_cli

SAMPLE = shipped_trace()


def test_demo_offline_prints_the_before_after_table(tmp_path: Path) -> None:
    r = run_cli("demo", "--no-live", "--quiet", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "| offline, shipped trace's held-out 30 %: precise_linear_hist_node95@0.97 |" in r.stdout
    assert "p99 without mittd" in r.stdout and "peers on the same replay" in r.stdout
    assert "reads sent elsewhere, mittd" in r.stdout
    report = json.loads((tmp_path / "replay" / "report.json").read_text())
    rows = {p["policy"]: p for p in report["policies"]}
    for name in ("baseline", "precise_linear_node95", "precise_linear_hist_node95",
                 "precise_linear_hist_node95@0.97",
                 "heimdall", "linnos", "hedge", "random", "oracle"):
        assert name in rows
    # the held-out 30 % of the shipped trace (39,277 of 130,923 IOs)
    assert rows["baseline"]["reads"] < 0.31 * 130_923
    assert rows["oracle"]["p99_us"] <= rows["baseline"]["p99_us"]


@needs_fio
def test_demo_live_part_runs_in_process(tmp_path: Path) -> None:
    if direct_io_error(tmp_path) is not None:
        pytest.skip("no O_DIRECT where the test's files go")
    on = demo.live(tmp_path / "live", 5.0, quiet=True, size=16 << 20, directory=tmp_path)
    assert on is not None and on["path"] == "inproc"
    assert "precise_linear_hist" in on["model"] and on["decision_threshold"] == 0.97
    assert all(on["modes"][m]["reads"] > 0 for m in ("none", "mittd", "hedge", "both"))
    rows = demo.live_rows(on)
    assert rows[0].startswith("| live, this machine, 5 s of real IO (in-process): ")
    assert (tmp_path / "live" / "live.json").is_file()
    assert list(tmp_path.glob("mittd-live-*")) == []


def test_demo_bad_duration_is_one_line() -> None:
    r = run_cli("demo", "--duration", "600")
    assert r.returncode == 2 and r.stderr.strip() == (
        "mittd: error: --duration must be between 5 and 60 s, got 600")


def test_replay_from_keeps_the_tail_of_the_trace(tmp_path: Path) -> None:
    r = run_cli("replay", str(SAMPLE), "--from", "90%", "--policy", "baseline,oracle",
                "--slo", "300us", "-q", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    n = rep["policies"][0]["reads"]
    assert 0.09 * 120_000 < n < 0.11 * 120_000
    bad = run_cli("replay", str(SAMPLE), "--from", "1.5", "-o", str(tmp_path))
    assert bad.returncode == 2 and "must be in [0, 1)" in bad.stderr


def test_evaluate_scores_shipped_bundles_on_a_trace(tmp_path: Path) -> None:
    bundles = REPO / "predictor" / "bundles"
    out = tmp_path / "eval.json"
    r = run_cli("evaluate", str(bundles / "heimdall.mittd"),
                str(bundles / "precise_linear_node95.mittd"), "--trace", str(SAMPLE),
                "--from", "0.9", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "| heimdall |" in r.stdout and "ROC-AUC" in r.stdout
    rows = json.loads(out.read_text())
    assert len(rows) == 2 and all(0.5 < row["roc_auc"] <= 1.0 for row in rows)
    assert rows[0]["ios"] == rows[1]["ios"] < 0.11 * 130_923
    bad = run_cli("evaluate", str(bundles / "heimdall.mittd"), "--trace", str(SAMPLE),
                  "--from", "2")
    assert bad.returncode == 2 and "--from: must be a number in [0, 1)" in bad.stderr
