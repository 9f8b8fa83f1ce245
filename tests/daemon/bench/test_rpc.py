"""``mittd bench rpc`` runs end to end (tiny sizes) and reports every call kind.

Timings are not asserted (they are measurements); what is checked is that every
kind was measured, the stream decided every IO it sent, and bad options are
one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_bench_rpc_measures_every_kind_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "rpc.json"
    r = run_cli("bench", "rpc", "--calls", "30", "--rounds", "1", "--batches", "4",
                "--batch", "64", "--clients", "1,2", "--quiet", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "| Echo (gRPC floor) | 1 |" in r.stdout and "AdmitStream best:" in r.stdout
    res = json.loads(out.read_text())
    kinds = {(row["kind"], row["clients"]) for row in res["rows"]}
    for c in (1, 2):
        for k in ("echo", "admit", "read", "stream", "stream_msgs"):
            assert (k, c) in kinds
    for row in res["rows"]:
        assert row["p50_us"] > 0 and row["per_s"] > 0
        if row["kind"] in ("echo", "admit", "read"):
            assert row["calls"] == 30 * row["clients"]
        if row["kind"] == "stream":
            assert row["calls"] == 4 * row["clients"]


def test_bench_rpc_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    r = run_cli("bench", "rpc", "--clients", "0")
    assert r.returncode == 2 and "counts must be >= 1" in r.stderr
    r = run_cli("bench", "rpc", "--bundle", str(tmp_path / "nope.mittd"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "no such bundle" in r.stderr
