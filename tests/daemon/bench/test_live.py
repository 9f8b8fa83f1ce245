"""``mittd bench live`` end to end on tiny sizes, its clean-up, and its one-line errors.

Latencies are measurements and never asserted; what is checked is that every
mode read, the JSON carries the percentiles, ``none`` never failed over,
hedging with a tiny delay counted its extra IOs, and that no daemon or fio
process (nor any file) is left behind, after a normal run and after Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mittd.daemon.bench.live import MODES, Schedule
from mittd.traces.collect import direct_io_error
from tests.conftest import needs_fio, run_cli

TINY = ("--period", "2", "--size", "64M", "--clients", "2", "--write-qd", "1")


def _o_direct(directory: Path) -> bool:
    return direct_io_error(directory) is None


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


def _left_behind(marker: Path) -> list[str]:
    """Command lines of live processes that mention ``marker`` (daemons' configs, fio jobs)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(marker) in cmd and "bench live" not in cmd:
            found.append(cmd)
    return found


def _wait_gone(marker: Path, timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := _left_behind(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_schedule_staggers_the_replicas() -> None:
    s = Schedule(replicas=2, period_s=3.0, busy=1 / 3)
    assert s.busy_at(0.5) == [True, False]
    assert s.busy_at(1.2) == [False, False]
    assert s.busy_at(2.0) == [False, True]
    assert s.busy_at(3.5) == [True, False]  # periodic
    assert s.windows() == [(0.0, 1.0), (1.5, 2.5)]


@needs_fio
def test_bench_live_runs_every_mode_and_leaves_nothing(disk_dir: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "live.json", tmp_path / "live.png"
    # --dir relative to the working directory (the daemons' configs need it absolute)
    r = run_cli("bench", "live", "--duration", "8", *TINY, "--hedge-after-us", "1",
                "--dir", disk_dir.name, "--json", str(out), "--png", str(png), "--quiet",
                cwd=disk_dir.parent)
    assert r.returncode == 0, r.stderr
    assert "| mittd |" in r.stdout and "| none |" in r.stdout and "| hedge |" in r.stdout
    res = json.loads(out.read_text())
    assert res["replicas"] == 2 and res["clients"] == 2
    assert res["deadline_us"] <= res["model_thresholds_us"][0]
    assert [s["mode"] for s in res["slices"]] == list(MODES)
    for name in MODES:
        m = res["modes"][name]
        assert m["reads"] > 0, name
        values = [m[k] for k in ("p50_us", "p90_us", "p95_us", "p99_us", "p99_9_us", "max_us")]
        assert all(v > 0 for v in values) and values == sorted(values), (name, values)
        assert m["mean_us"] > 0 and m["reads_per_s"] > 0
        assert len(m["cdf_us"]) == len(res["cdf_quantiles"])
    none, hedge = res["modes"]["none"], res["modes"]["hedge"]
    assert none["failovers"] == none["hedges"] == none["extra_rpcs"] == 0
    assert none["off_primary_fraction"] == 0.0
    # hedging after 1 µs duplicates (nearly) every read: extra device IOs, counted
    assert hedge["hedges"] > 0.5 * hedge["reads"]
    assert hedge["extra_device_ios"] >= hedge["hedges"]
    assert res["modes"]["mittd"]["hedges"] == 0
    assert len(res["daemons"]) == 2 and all(d["admit"] > 0 for d in res["daemons"])
    if png.exists():  # matplotlib installed
        assert png.stat().st_size > 1000
    assert _wait_gone(disk_dir) == []
    assert list(disk_dir.glob("mittd-live-*")) == []  # replica files, configs, logs removed


@needs_fio
def test_bench_live_ctrl_c_stops_daemons_and_fio(disk_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mittd.daemon.cli", "bench", "live", "--duration", "60", *TINY,
         "--dir", str(disk_dir)],
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


@pytest.mark.parametrize(("args", "message"), [
    (("--replicas", "1"), "--replicas must be >= 2"),
    (("--duration", "5", "--period", "3"), "is too short"),
    (("--size", "1X"), "expected a size like 512M"),
    (("--size", "8M"), "at least 16 MiB"),
    (("--busy", "2"), "--busy must be a fraction"),
    (("--decision-threshold", "1.5"), "--decision-threshold must be a probability"),
    (("--model", "/nonexistent/m.mittd"), "no such bundle"),
    (("--dir", "/nonexistent-dir"), "not a directory"),
])
def test_bench_live_bad_options_are_one_line_errors(args: tuple[str, ...],
                                                    message: str) -> None:
    r = run_cli("bench", "live", *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("mittd: error: ") and r.stderr.strip().count("\n") == 0
    assert message in r.stderr


def test_bench_live_refuses_tmpfs_and_missing_fio(tmp_path: Path, disk_dir: Path) -> None:
    if Path("/dev/shm").is_dir() and not _o_direct(Path("/dev/shm")):
        r = run_cli("bench", "live", "--dir", "/dev/shm")
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
        assert "refuses O_DIRECT" in r.stderr
    env = {**os.environ, "PATH": str(tmp_path)}  # no fio on this PATH
    r = subprocess.run([sys.executable, "-m", "mittd.daemon.cli", "bench", "live", "--dir",
                        str(disk_dir)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "mittd: error: fio not found" in r.stderr
