"""``mittd bench live`` end to end on tiny sizes, its clean-up, and its one-line errors.

Latencies are measurements and never asserted; what is checked is that every
mode read, the JSON carries the percentiles and the costs, ``none`` never failed
over, hedging with a tiny delay counted its extra IOs, the in-process path
decided (and timed) its reads, a tmpfs replica is read buffered and gets no
writer, and that no daemon or fio process (nor any file) is left behind, after a
normal run and after Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mittd.daemon.bench.live import MODES, LiveError, Schedule, parse_busy, render, run_live
from mittd.daemon.bench.live.modes import VALIDATION, Shared, plan
from mittd.daemon.bench.live.targets import fs_type, place_files
from mittd.daemon.bench.live.validation import OFF_TEXT, candidates, choose
from mittd.traces.collect import direct_io_error
from mittd.traces.shipped import shipped_trace
from tests.conftest import needs_fio, run_cli

TINY = ("--period", "1", "--size", "16M", "--clients", "2", "--write-qd", "1")
SHM = Path("/dev/shm")


def _o_direct(directory: Path) -> bool:
    return direct_io_error(directory) is None


def _ram_dir() -> Path | None:
    """/dev/shm when it is a writable tmpfs, else None."""
    if SHM.is_dir() and os.access(SHM, os.W_OK) and fs_type(SHM) == "tmpfs":
        return SHM
    return None


needs_tmpfs = pytest.mark.skipif(_ram_dir() is None, reason="no tmpfs at /dev/shm")


@pytest.fixture
def disk_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory where O_DIRECT works: tmp_path, else one under /var/tmp."""
    if _o_direct(tmp_path):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="mittd-test-live-", dir="/var/tmp"))
    try:
        if not _o_direct(d):
            pytest.skip("no file system with O_DIRECT for the replica files")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _left_behind(marker: Path, runner: str = "bench live") -> list[str]:
    """Command lines of live processes that mention ``marker`` (daemons' configs, fio jobs),
    other than the ``runner`` bench itself."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(marker) in cmd and runner not in cmd:
            found.append(cmd)
    return found


def _wait_gone(marker: Path, timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := _left_behind(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _check_modes(res: dict[str, Any]) -> None:
    """What every run's result holds, whatever the latencies."""
    assert [s["mode"] for s in res["slices"]][: len(MODES)] == list(MODES)
    for name in MODES:
        m = res["modes"][name]
        assert m["reads"] > 0, name
        values = [m[k] for k in ("p50_us", "p90_us", "p95_us", "p99_us", "p99_9_us",
                                 "p99_99_us", "max_us")]
        assert all(v > 0 for v in values) and values == sorted(values), (name, values)
        assert m["mean_us"] > 0 and m["reads_per_s"] > 0
        assert m["cpu_s"] > 0 and m["cpu_us_per_read"] > 0
        assert len(m["cdf_us"]) == len(res["cdf_quantiles"])
    none, hedge, both = res["modes"]["none"], res["modes"]["hedge"], res["modes"]["both"]
    assert none["failovers"] == none["hedges"] == none["extra_device_ios"] == 0
    assert none["off_primary_fraction"] == 0.0
    # hedging after 1 µs duplicates (nearly) every read a disk primary serves: extra
    # device IOs, counted (a duplicate still queued when a RAM primary answered is
    # dropped before its IO). Primaries are drawn at random, and a RAM primary's read
    # (a few µs) races the 1 µs timer, so only the disk primaries' share is certain:
    # at one RAM replica of two it was 39-44 % of reads in three runs, not above half
    disk_share = 1 - len(res.get("ram_replicas", [])) / len(res["busy"])
    assert hedge["hedges"] > 0.5 * disk_share * hedge["reads"] and hedge["failovers"] == 0
    assert 0 < hedge["extra_device_ios"] <= hedge["hedges"]
    assert both["hedges"] > 0
    assert res["modes"]["mittd"]["hedges"] == 0


# -- unit: schedule, --busy, placement ----------------------------------------------------


def test_schedule_staggers_the_replicas() -> None:
    s = Schedule(replicas=2, period_s=3.0, busy=1 / 3)
    assert s.busy_at(0.5) == [True, False]
    assert s.busy_at(1.2) == [False, False]
    assert s.busy_at(2.0) == [False, True]
    assert s.busy_at(3.5) == [True, False]  # periodic
    assert s.windows() == [(0.0, 1.0), (1.5, 2.5)]


def test_schedule_takes_one_busy_share_per_replica() -> None:
    s = Schedule(replicas=2, period_s=3.0, busy=(0.5, 0.0))
    assert s.busy_at(1.0) == [True, False] and s.busy_at(2.0) == [False, False]
    assert s.busy_at(1.6) == [False, False]  # replica 1's window is empty
    assert s.windows() == [(0.0, 1.5), (1.5, 1.5)]
    import numpy as np

    m = s.busy_matrix(np.array([0.1, 1.6, 3.2]))
    assert m.tolist() == [[True, False], [False, False], [True, False]]
    assert s.any_busy and not Schedule(2, 3.0, 0.0).any_busy
    with pytest.raises(ValueError, match="3 fractions for 2 replicas"):
        Schedule(2, 3.0, (0.1, 0.2, 0.3))


def test_busy_parsing() -> None:
    assert parse_busy("0.5,0", 2, [False, False]) == (0.5, 0.0)
    assert parse_busy("0.25", 3, [False] * 3) == (0.25,) * 3
    assert parse_busy(0.5, 2, [False, False]) == (0.5, 0.5)
    assert parse_busy([0.1, 0.2], 2, [False, False]) == (0.1, 0.2)
    assert parse_busy(None, 2, [False, True]) == (1 / 3, 0.0)  # targets default to 0
    for bad, msg in (("0.5,x", "--busy '0.5,x': expected fractions"),
                     ("0.1,0.2,0.3", "--busy: 3 fractions for 2 replicas"),
                     ("0.5,2", "--busy must be a fraction of the period in [0, 1], got 2")):
        with pytest.raises(LiveError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            parse_busy(bad, 2, [False, False])


@needs_tmpfs
def test_placement_accepts_tmpfs_as_a_ram_replica(disk_dir: Path) -> None:
    reps = place_files(f"{disk_dir},{SHM}", 3, 16 << 20, disk_dir)
    assert [r.base for r in reps] == [disk_dir, SHM, disk_dir]  # replica i in dir i mod n
    assert reps[0].direct and not reps[0].ram and "O_DIRECT (the disk)" in reps[0].medium
    assert reps[1].ram and reps[1].medium.startswith("tmpfs: RAM (")  # buffered or O_DIRECT
    assert reps[1].direct == _o_direct(SHM)
    assert [r.path.name for r in reps] == ["replica0.img", "replica1.img", "replica2.img"]


# -- unit: one-line errors ------------------------------------------------------------------


def _block_device() -> Path | None:
    for name in sorted(os.listdir("/dev")):
        p = Path("/dev") / name
        try:
            if stat.S_ISBLK(p.stat().st_mode):
                return p
        except OSError:
            continue
    return None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"path": "rdma"}, "--path must be one of inproc, grpc, got 'rdma'"),
    ({"replicas": 1}, "--replicas must be >= 2"),
    ({"duration_s": 5, "period_s": 3}, "is too short"),
    ({"clients": 0}, "--clients must be >= 1"),
    ({"busy": "0.5,0.5,0.5"}, "--busy: 3 fractions for 2 replicas"),
    ({"max_reject_share": 0.0}, "--max-reject-share must be in (0, 1]"),
    ({"probe_after": -1}, "--probe-after must be >= 0"),
    ({"trace_speed": 0.0}, "--trace-speed must be > 0"),
    ({"decision_threshold": 1.5}, "--decision-threshold must be a probability"),
    ({"hedge_after_us": -1.0}, "--hedge-after-us must be > 0"),
    ({"model": "/nonexistent/m.mittd"}, "--model /nonexistent/m.mittd: no such bundle"),
    ({"directory": "/nonexistent-dir"}, "--dir /nonexistent-dir: not a directory"),
    ({"targets": ["/nonexistent-target"] * 2}, "--target /nonexistent-target: No such file"),
    ({"targets": ["/dev/null", "/dev/null"]}, "not a regular file or block device"),
    ({"targets": ["/dev/null"], "directory": "/tmp"}, "--target and --dir exclude each other"),
])
def test_bad_options_are_one_line_live_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LiveError) as e:
        run_live(**{"duration_s": 60.0, **kwargs})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_targets_are_never_written_unless_asked(tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    for f in (a, b):
        with open(f, "wb") as fh:
            fh.truncate(16 << 20)
    with pytest.raises(LiveError, match="--replicas 3 with 2 --target"):
        run_live(targets=[a, b], replicas=3)
    with pytest.raises(LiveError) as e:
        run_live(targets=[a, b], busy="0.5,0")
    assert "--busy: replica 0 is --target" in str(e.value) and "--write-targets" in str(e.value)
    with pytest.raises(LiveError, match="--size 32 MiB is more than the smallest --target"):
        run_live(targets=[a, b], size=32 << 20)
    dev = _block_device()
    if dev is not None:  # refused before it is opened: nothing is read or written
        with pytest.raises(LiveError, match="a block device; pass --allow-block-device"):
            run_live(targets=[dev, a])


def test_trace_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(LiveError, match=r"--trace /nonexistent\.parquet: "):
        run_live(trace="/nonexistent.parquet")
    empty = tmp_path / "t.csv"
    empty.write_text("nonsense\n")
    with pytest.raises(LiveError) as e:
        run_live(trace=empty)
    assert str(e.value).startswith(f"--trace {empty}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize(("args", "message"), [
    (("--size", "1X"), "expected a size like 512M"),
    (("--size", "8M"), "at least 16 MiB"),
    (("--busy", "2"), "--busy must be a fraction"),
    (("--dir", "/nonexistent-dir"), "not a directory"),
])
def test_bench_live_cli_errors_are_one_line(args: tuple[str, ...], message: str) -> None:
    r = run_cli("bench", "live", *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("mittd: error: ") and r.stderr.strip().count("\n") == 0
    assert message in r.stderr


def test_bench_live_without_fio_is_one_line(tmp_path: Path, disk_dir: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no fio on this PATH
    r = subprocess.run([sys.executable, "-m", "mittd.daemon.cli", "bench", "live", "--dir",
                        str(disk_dir)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "mittd: error: fio not found" in r.stderr


# -- unit: the validation window's candidates and choice rule -------------------------------


def _rows(**p99: float | None) -> dict[str, dict[str, Any]]:
    """Made-up validation rows: ``name=p99`` (µs), failover rate 0."""
    return {k.replace("_", " "): {"p99_us": v, "failover_rate": 0.0} for k, v in p99.items()}


def test_choice_picks_the_lowest_p99_beyond_the_margin() -> None:
    rows = _rows(off=1000.0, a=900.0, b=700.0, c=800.0)
    assert choose(rows) == "b"
    assert choose(_rows(off=1000.0, a=960.0)) == "a"  # 4 % below off: beyond 3 %


def test_choice_stays_off_when_nothing_beats_off() -> None:
    assert choose(_rows(off=1000.0, a=1200.0, b=1000.0)) == "off"
    assert choose(_rows(off=1000.0, a=975.0)) == "off"  # 2.5 % better: within the margin
    assert choose(_rows(off=1000.0, a=970.0)) == "off"  # exactly 3 %: not beyond it
    assert choose(_rows(off=1000.0, a=None)) == "off"  # too few reads to judge
    assert choose(_rows(off=None, a=10.0)) == "off"  # nothing to beat: no evidence
    assert choose(_rows(off=1000.0)) == "off"
    assert choose({"off": {"p99_us": 1000.0}, "a": {"p99_us": float("nan")}}) == "off"


def test_choice_ties_go_to_fewer_failovers_then_the_first_listed() -> None:
    rows = _rows(off=1000.0, a=500.0, b=500.0, c=500.0)
    assert choose(rows) == "a"
    rows["a"]["failover_rate"], rows["b"]["failover_rate"] = 0.4, 0.1
    rows["c"]["failover_rate"] = 0.1
    assert choose(rows) == "b"
    assert choose(rows, margin=0.6) == "off"  # the margin is a parameter


def test_candidates_are_off_the_ladder_and_the_strictest_uncapped() -> None:
    c = candidates([0.97, 0.5, 0.8, 0.9, 0.99], 0.5)
    assert [x.name for x in c] == ["off", "P(slow) > 0.5", "P(slow) > 0.8", "P(slow) > 0.9",
                                   "P(slow) > 0.97", "P(slow) > 0.99",
                                   "P(slow) > 0.97, no cap", "P(slow) > 0.99, no cap"]
    assert c[0].off and c[0].cutoff is None and not c[1].off
    assert [x.max_reject_share for x in c[1:]] == [0.5] * 5 + [1.0] * 2
    assert len(candidates([0.9], 1.0)) == 2  # the cap is already lifted: no duplicates
    assert len(candidates([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 0.5)) == 8  # room for one
    with pytest.raises(ValueError, match="at most 7"):
        candidates([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], 0.5)
    with pytest.raises(ValueError, match="not a probability"):
        candidates([1.5], 0.5)


def test_plan_reads_candidates_and_an_off_choice_without_admission() -> None:
    sh = Shared(backend=None, n=2, blocks=1, seed=0)  # type: ignore[arg-type]
    sh.candidates = [None, 0, 1]
    assert plan(VALIDATION, sh) == ("none", None)
    assert plan(VALIDATION + 2, sh) == ("mittd", 1)
    sh.admission = 1
    assert [plan(m, sh) for m in range(len(MODES))] == [
        ("none", 1), ("mittd", 1), ("hedge", 1), ("both", 1)]
    sh.admission = None  # the validation chose off
    assert [plan(m, sh)[0] for m in range(len(MODES))] == ["none", "none", "hedge", "hedge"]


def test_duration_must_hold_the_validation_window() -> None:
    # warm-up 1 + 2 rounds x 8 candidates + 4 test slices = 21 periods > 20 s
    with pytest.raises(LiveError) as e:
        run_live(duration_s=20, period_s=1)
    msg = str(e.value)
    assert "--duration 20 s is too short" in msg and "2 validation round(s) of 8" in msg
    assert "--validation-rounds 0" in msg and "at least 21 s" in msg and "\n" not in msg
    with pytest.raises(LiveError, match="1 validation round"):
        run_live(duration_s=8, period_s=1, validation_rounds=1)
    with pytest.raises(LiveError, match="--validation-rounds must be >= 0"):
        run_live(validation_rounds=-1)
    with pytest.raises(LiveError, match="in-process path only"):
        run_live(path="grpc", validation_rounds=1)
    with pytest.raises(LiveError, match="--validation-cutoffs: cutoff 2 is not"):
        run_live(validation_cutoffs=[2.0])


# -- end to end -------------------------------------------------------------------------------


@needs_fio
def test_bench_live_inproc_runs_every_mode_and_leaves_nothing(disk_dir: Path,
                                                               tmp_path: Path) -> None:
    out, png = tmp_path / "live.json", tmp_path / "live.png"
    # --dir relative to the working directory (the daemons' configs need it absolute)
    r = run_cli("bench", "live", "--duration", "5", *TINY, "--hedge-after-us", "1",
                "--validation-rounds", "0", "--dir", disk_dir.name, "--json", str(out),
                "--png", str(png), "--quiet", cwd=disk_dir.parent)
    assert r.returncode == 0, r.stderr
    for name in MODES:
        assert f"| {name} |" in r.stdout
    assert "path: in-process" in r.stdout and "targets (replicas on one disk)" in r.stdout
    res = json.loads(out.read_text())
    assert res["path"] == "inproc" and res["load"] == "closed-loop"
    assert res["replicas"] == 2 and res["clients"] == 2 and res["busy"] == [1 / 3, 1 / 3]
    assert res["direct_io"] == [True, True] and res["ram_replicas"] == []
    assert res["deadline_us"] <= res["model_thresholds_us"][0]
    assert "precise_linear_hist" in res["model"] and res["probe_after"] == 32
    assert res["decision_threshold"] == 0.97
    assert res["decision_threshold_source"] == "the default operating point"
    assert res["validation"] is None and res["mittd_off"] is False
    assert res["policy"]["mode"] in ("reject", "hedge", "both")
    _check_modes(res)
    mittd = res["modes"]["mittd"]
    assert mittd["decisions"] > 0 and mittd["predict_mean_us"] > 0
    assert mittd["admit_call_us"] > 0 and mittd["decision_us_per_read"] > 0
    assert mittd["extra_rpcs"] == 0  # in-process: a failover costs no RPC and no IO
    assert mittd["extra_device_ios"] == 0
    assert res["modes"]["none"]["decisions"] == 0  # no admission at all
    assert len(res["targets"]) == 1 and res["daemons"] == []
    if png.exists():  # matplotlib installed
        assert png.stat().st_size > 1000
    assert _wait_gone(disk_dir) == []
    assert list(disk_dir.glob("mittd-live-*")) == []  # replica files, logs removed


@needs_fio
@needs_tmpfs
def test_bench_live_disk_and_ram_trace_driven(disk_dir: Path, tmp_path: Path) -> None:
    """Replica 1 on tmpfs (RAM, no writer), the shipped trace's reads at 0.2× speed."""
    r = run_live(duration_s=5, period_s=1, size=16 << 20, write_qd=1, hedge_after_us=1,
                 directory=[disk_dir, SHM], busy="0.5,0", trace=shipped_trace(),
                 trace_speed=0.2, out_dir=tmp_path / "o", quiet=True, validation_rounds=0)
    assert r["ram_replicas"] == [1] and r["direct_io"][0] is True
    assert r["replica_media"][1].startswith("tmpfs: RAM") and r["busy"] == [0.5, 0.0]
    assert r["busy_windows_s"][1][0] == r["busy_windows_s"][1][1]  # no writer on RAM
    assert r["load"] == "trace" and r["clients"] == 4 and r["trace"]["reads"] > 1000
    _check_modes(r)
    for name in MODES:
        assert r["modes"][name]["lag_mean_us"] >= 0
        assert 0 <= r["modes"][name]["behind_fraction"] <= 1
    assert r["targets"][0]["target"] == "mittd p99 <= 0.6 x none p99"
    assert len(r["targets"]) == 4
    text = (tmp_path / "o" / "live.txt").read_text()
    assert "is on tmpfs: its reads are RAM copies" in text
    assert "trace-driven lag" in text and "targets (disk + RAM)" in text
    assert json.loads((tmp_path / "o" / "live.json").read_text())["path"] == "inproc"
    assert list(disk_dir.glob("mittd-live-*")) == [] and list(SHM.glob("mittd-live-*")) == []


@needs_fio
def test_bench_live_validation_window_chooses_and_stays_out_of_the_test(
        disk_dir: Path, tmp_path: Path) -> None:
    """One validation round of 5 candidates, then one test round: a table and a choice,
    the validation reads counted apart from the test rows."""
    r = run_live(duration_s=5, period_s=0.5, size=16 << 20, write_qd=1, hedge_after_us=1,
                 directory=disk_dir, validation_rounds=1, validation_cutoffs=[0.9, 0.97],
                 out_dir=tmp_path / "o", quiet=True)
    v = r["validation"]
    names = [c["name"] for c in v["candidates"]]
    assert names == ["off", "P(slow) > 0.9", "P(slow) > 0.97", "P(slow) > 0.9, no cap",
                     "P(slow) > 0.97, no cap"]
    assert v["rounds"] == 1 and len(v["slices"]) == 5 and v["choice"] in names
    assert sorted(s["candidate"] for s in v["slices"]) == sorted(names)
    for c in v["candidates"]:
        assert c["reads"] > 0 and c["p50_us"] > 0, c
    off = v["candidates"][0]
    assert off["failover_rate"] == 0.0 and off["decisions"] == 0  # off asks nothing
    assert sum(c["decisions"] for c in v["candidates"][1:]) > 0
    assert v["reads"] == sum(c["reads"] for c in v["candidates"])
    assert v["off"] == (v["choice"] == "off") == r["mittd_off"]
    assert r["decision_threshold_source"].endswith("chosen on the validation window")
    assert r["decision_threshold"] == v["chosen_cutoff"]
    # the test rows hold the test slices' reads only (and the few done at a switch,
    # while the counters are read), never the validation's thousands
    assert r["duration_s"] == 5.0 and [s["mode"] for s in r["slices"]] == list(MODES)
    for name in MODES:
        in_slices = sum(s["reads"] for s in r["slices"] if s["mode"] == name)
        assert in_slices <= r["modes"][name]["reads"] <= 1.05 * in_slices + 10, name
    assert v["reads"] > sum(s["reads"] for s in r["slices"]) / 4
    text = (tmp_path / "o" / "live.txt").read_text()
    assert "Validation window: mittd's operating point chosen here" in text
    assert "choice rule: the candidate with the lowest p99" in text and "← chosen" in text
    assert json.loads((tmp_path / "o" / "live.json").read_text())["validation"]["choice"] \
        == v["choice"]
    # how an "off" choice reads (whatever this run chose)
    off_r = {**r, "mittd_off": True, "decision_threshold": None,
             "validation": {**v, "choice": "off", "off": True, "verdict": OFF_TEXT}}
    text = render(off_r)
    assert "mittd stays off on this setup" in text and "| mittd (chose off" in text
    assert "mittd off (chosen on the validation window" in text
    assert list(disk_dir.glob("mittd-live-*")) == []


def test_bench_live_reads_given_targets_as_they_are(disk_dir: Path) -> None:
    """Two existing files as --target replicas: no fio needed, nothing written or removed."""
    files = [disk_dir / "a.img", disk_dir / "b.img"]
    for f in files:
        f.write_bytes(os.urandom(16 << 20))
    before = [(f.stat().st_mtime_ns, f.stat().st_size) for f in files]
    r = run_live(duration_s=5, period_s=1, targets=files, hedge_after_us=1, quiet=True,
                 validation_rounds=0)
    assert r["targets_given"] and r["busy"] == [0.0, 0.0] and r["contention"] == "none"
    assert r["replica_paths"] == [str(f) for f in files] and r["size_bytes"] == 16 << 20
    assert all(r["modes"][m]["reads"] > 0 for m in MODES)
    assert [(f.stat().st_mtime_ns, f.stat().st_size) for f in files] == before


@needs_fio
def test_bench_live_grpc_path_runs_every_mode(disk_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "live.json"
    r = run_cli("bench", "live", "--path", "grpc", "--duration", "5", *TINY,
                "--hedge-after-us", "1", "--dir", str(disk_dir), "--json", str(out),
                "--quiet")
    assert r.returncode == 0, r.stderr
    assert "path: gRPC" in r.stdout
    res = json.loads(out.read_text())
    assert res["path"] == "grpc"
    _check_modes(res)
    assert len(res["daemons"]) == 2 and all(d["admit"] > 0 for d in res["daemons"])
    assert res["modes"]["mittd"]["daemon_cpu_s"] > 0
    assert _wait_gone(disk_dir) == []
    assert list(disk_dir.glob("mittd-live-*")) == []


@needs_fio
def test_bench_live_ctrl_c_stops_daemons_and_fio(disk_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mittd.daemon.cli", "bench", "live", "--path", "grpc",
         "--duration", "60", *TINY, "--dir", str(disk_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the clients run (daemons and fio are up)
            if "warm-up (none)" in line:
                break
        else:
            pytest.fail(f"no progress line; exit {proc.wait()}")
        assert len(_left_behind(disk_dir)) == 4  # 2 daemons + 2 fio writers
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(60) == 130, err
        assert "mittd: interrupted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _wait_gone(disk_dir) == []
    assert list(disk_dir.glob("mittd-live-*")) == []
