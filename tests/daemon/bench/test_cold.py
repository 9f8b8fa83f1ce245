"""``mittd bench cold``: both keep-warm settings measured side by side, ticks only when on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mittd.daemon.bench.cold import render, run_cold
from mittd.daemon.cli import main
from mittd.predictor.shipped import shipped_bundle


def test_runs_both_settings_and_counts_ticks_only_when_on() -> None:
    r = run_cold([shipped_bundle("heimdall")], idle_ms=40, ios=3, rounds=2, keep_warm_ms=10,
                 engine="csr")
    rows = {x["keep_warm_ms"]: x for x in r["rows"]}
    assert set(rows) == {0, 10}
    for x in rows.values():
        assert x["cold_ios"] == 6  # 3 per round, 2 rounds
        assert x["warm_p50_us"] > 0 and x["cold_p50_us"] <= x["cold_p90_us"] <= x["cold_max_us"]
        assert 0 <= x["cold_overruns"] <= x["overruns"] <= x["cold_ios"]
    assert rows[0]["warm_ticks"] == 0
    assert rows[10]["warm_ticks"] > 0  # 40 ms idle, a tick after 10 ms of it
    assert [f["call"] for f in r["floors"]] == ["python no-op call",
                                                "compiled no-op call (numba clock read)"]
    for f in r["floors"]:
        assert f["cold_calls"] == 6
        assert f["warm_p50_us"] > 0 and f["cold_p50_us"] <= f["cold_p90_us"] <= f["cold_max_us"]
    text = render(r)
    assert "heimdall.mittd" in text and "off" in text and "10 ms" in text
    assert "python no-op call" in text


def test_cli_writes_json_and_refuses_a_bad_bundle(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cold.json"
    assert main(["bench", "cold", "--bundle", "linnos", "--ios", "1", "--idle-ms", "5",
                 "--quiet", "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 2
    assert main(["bench", "cold", "--bundle", str(tmp_path / "no.mittd")]) == 2
    assert "no.mittd: no such bundle file" in capsys.readouterr().err


def test_busy_idle_spins_on_the_cpu_and_sleep_does_not() -> None:
    import time

    from mittd.daemon.bench.cold import _idle

    c0 = time.process_time()
    _idle(50, busy=True)
    spun = time.process_time() - c0
    c0 = time.process_time()
    _idle(50, busy=False)
    slept = time.process_time() - c0
    assert spun >= 0.025 and slept < 0.02  # CPU seconds: half the spell at least, if preempted
    r = run_cold([shipped_bundle("linnos")], idle_ms=5, ios=2, keep_warm_ms=5, engine="csr",
                 busy=True)
    assert r["busy"] is True and "ms spinning" in render(r)
    assert all(x["cold_ios"] == 2 for x in r["rows"])
