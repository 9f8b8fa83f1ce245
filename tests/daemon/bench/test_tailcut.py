"""``mittd bench tailcut``: the seeded workload space, and one tiny run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mittd.daemon.bench.tailcut import TailcutConfig, TailcutError, generate, run_tailcut
from tests.conftest import needs_fio, run_cli


def test_workloads_are_seeded_and_cover_the_space() -> None:
    a, b = generate(3, 24), generate(3, 24)
    assert a == b and generate(4, 24) != a
    shares = [w.read_share_target for w in a]
    assert min(shares) >= 0.5 and max(shares) <= 1.0
    readers = [w.jobs[0] for w in a]
    assert {r["rw"] for r in readers} == {"read", "randread"}  # sequential and random
    sizes = {int(r["bs"].removesuffix("k")) for r in readers}
    assert min(sizes) == 4 and max(sizes) >= 128
    depths = {int(r["iodepth"]) for r in readers}
    assert 1 in depths and max(depths) >= 16
    assert all(len(w.jobs) >= 2 for w in a)  # at least two concurrent jobs
    kinds = {tuple(sorted(j)) for w in a for j in w.jobs[1:]}
    assert any("thinktime_blocks" in k for k in kinds)  # bursty writers
    assert any("thinktime" in k and "thinktime_blocks" not in k for k in kinds)  # thinkers
    assert all("rate_iops" in j for w in a for j in w.jobs)  # rate-limited


def test_recordings_draw_their_own_burst_phase() -> None:
    w = next(w for w in generate(5, 40) if w.bursty)
    r1, r2 = w.jobs_for_recording(1), w.jobs_for_recording(2)
    i = w.bursty[0]
    assert r1[i]["startdelay"] != r2[i]["startdelay"]
    assert r1 == w.jobs_for_recording(1)  # seeded
    assert all(r1[j] == r2[j] for j in range(len(r1)) if j not in w.bursty)


@pytest.mark.parametrize(("cfg", "message"), [
    (TailcutConfig(workloads=-1), "--workloads"),
    (TailcutConfig(runtime_s=1), "--runtime"),
    (TailcutConfig(models=("linnos",)), "mittd's own"),
    (TailcutConfig(models=("nosuch",)), "unknown nosuch"),
    (TailcutConfig(reject_budget=0), "--reject-budget"),
    (TailcutConfig(workloads=0, shipped=False), "nothing to run"),
])
def test_bad_configs_are_refused_in_one_line(cfg: TailcutConfig, message: str,
                                             tmp_path: Path) -> None:
    cfg.out_dir = tmp_path
    with pytest.raises(TailcutError, match=message):
        run_tailcut(cfg)


@needs_fio
@pytest.mark.slow
def test_tiny_tailcut_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("bench", "tailcut", "--workloads", "1", "--runtime", "4", "--size", "64M",
                "--models", "precise_linear", "heimdall", "--epochs", "1", "--no-shipped",
                "--seed", "2", "--dir", str(tmp_path), "-o", str(out), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "aggregate over 1 workload(s)" in r.stdout and "the LBA question" in r.stdout
    res = json.loads((out / "tailcut.json").read_text())
    (run,) = res["runs"]
    assert run["replica_kind"] == "independent" and run["pick"] in (None, "precise_linear")
    rows = {row["policy"]: row for row in run["rows"]}
    assert {"baseline", "hedge", "precise_linear", "heimdall", "mittd", "oracle"} <= set(rows)
    # random rejection at mittd's rate, when mittd's pick rejects at all
    assert any(p.startswith("random") for p in rows) == (run["pick"] is not None)
    assert rows["mittd"]["mode"] == (rows[run["pick"]]["mode"] if run["pick"] else "hedge")
    assert rows["hedge"]["extra_ios"] > 0 and rows["baseline"]["extra_ios"] == 0
    assert set(run["targets"]) >= {"p99_vs_hedge", "no_lock_in", "predictable_cut"}
    sel = run["models"][0]["selection"]
    assert sel["policy"]["mode"] in ("reject", "hedge", "both") and sel["policy"]["reason"]
    assert (out / "tailcut.txt").read_text().startswith("w2-0")
    assert not list(tmp_path.glob("mittd-tailcut-*"))  # scratch files removed
