"""``mittd collect`` against a real file with the real fio."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mittd.traces.collect import CollectSpec, _occurrence, check_target, collect, parse_jobs
from mittd.traces.errors import TraceError
from mittd.traces.schema import make_batch, read_trace, trace_metadata, write_trace
from tests.conftest import needs_fio, run_cli


@needs_fio
def test_collect_labels_every_io(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    spec = CollectSpec(target=tmp_path / "dev.img", output=out, size=16 << 20, runtime_s=1.0,
                       iodepth=8)
    result = collect(spec)
    table = read_trace(out)
    assert result.ios == table.num_rows > 100
    ts = table.column("ts_issue_us").to_numpy()
    lat = table.column("latency_us").to_numpy()
    assert np.all(np.diff(ts) >= 0)  # sorted by issue time
    assert np.all(lat > 0) and np.isfinite(lat).all()
    assert set(table.column("op").to_pylist()) == {"read", "write"}
    assert (table.column("offset").to_numpy() % 4096 == 0).all()
    assert set(table.column("size").to_pylist()) == {4096}
    assert table.column("device").to_pylist()[0] == "dev.img"
    (join,) = result.join
    assert join["matched"] == join["completed"] == join["issued"]
    assert join["inconsistent"] <= 0.01 * join["matched"]
    meta = trace_metadata(out)["collection"]
    assert meta["direct"] is True and "write_lat_log" in meta["jobfile"]
    # issue times are microsecond-precise, not rounded to fio's milliseconds
    assert (ts % 1000 != 0).mean() > 0.5


@needs_fio
def test_collect_several_jobs_share_one_timeline(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    spec = CollectSpec(target=tmp_path / "dev.img", output=out, size=16 << 20, runtime_s=1.0,
                       jobs=parse_jobs(["rw=randread,iodepth=4", "rw=write,bs=64k,iodepth=1"]))
    result = collect(spec)
    assert len(result.join) == 2
    table = read_trace(out)
    sizes = set(table.column("size").to_pylist())
    assert sizes == {4096, 65536}
    reads = table.filter(table.column("size").to_numpy() == 4096).column("ts_issue_us")
    writes = table.filter(table.column("size").to_numpy() == 65536).column("ts_issue_us")
    # both jobs ran at the same time: their time ranges overlap
    assert reads.to_numpy().min() < writes.to_numpy().max()
    assert writes.to_numpy().min() < reads.to_numpy().max()


@needs_fio
def test_collect_replays_a_trace(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "r.parquet"
    spec = CollectSpec(target=tmp_path / "dev.img", output=out, size=16 << 20,
                       replay=data / "msr_sample.csv")
    result = collect(spec)
    table = read_trace(out)
    assert result.ios == 4
    assert table.column("op").to_pylist().count("write") == 2
    assert (table.column("offset").to_numpy() < 16 << 20).all()
    # the gaps of the source trace (about 1 s each) are honoured
    ts = table.column("ts_issue_us").to_numpy()
    assert 2.5e6 < ts[-1] - ts[0] < 4.5e6


def test_cli_says_how_to_get_fio(tmp_path: Path) -> None:
    r = run_cli("collect", str(tmp_path / "d.img"), "--size", "1M", "-o",
                str(tmp_path / "t.parquet"), "--fio", "no-such-fio")
    assert r.returncode == 2
    assert "fio not found" in r.stderr and "apt-get install fio" in r.stderr
    assert "Traceback" not in r.stderr


@needs_fio
@pytest.mark.parametrize(("extra", "message"), [
    (["--size", "lots"], "--size: 'lots' is not a size"),
    (["--job", "filename=/etc/passwd"], "filename is set by mittd collect"),
    (["--job", "nonsense"], "expected fio options as key=value"),
    ([], "give --size"),
])
def test_cli_bad_options(tmp_path: Path, extra: list[str], message: str) -> None:
    r = run_cli("collect", str(tmp_path / "new.img"), "-o", str(tmp_path / "t.parquet"), *extra)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


@needs_fio
def test_directory_target_is_refused(tmp_path: Path) -> None:
    r = run_cli("collect", str(tmp_path), "-o", str(tmp_path / "t.parquet"))
    assert r.returncode == 2 and "is a directory" in r.stderr


@needs_fio
def test_fio_error_is_reported_in_one_line(tmp_path: Path) -> None:
    r = run_cli("collect", str(tmp_path / "d.img"), "--size", "1M", "--runtime", "1s",
                "--ioengine", "no-such-engine", "-o", str(tmp_path / "t.parquet"))
    assert r.returncode == 2
    assert r.stderr.startswith("mittd: error: fio failed")
    assert not (tmp_path / "t.parquet").exists()


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
@needs_fio
def test_tmpfs_without_direct_io_is_explained() -> None:
    if os.statvfs("/dev/shm").f_fsid == os.statvfs("/").f_fsid:
        pytest.skip("/dev/shm is not a separate tmpfs here")
    from mittd.traces.collect import Target, check_direct_io

    try:
        check_direct_io(Target(Path("/dev/shm/mittd-probe.img"), "file", 1 << 20, False))
    except TraceError as e:
        assert "does not support direct IO" in str(e) and "--buffered" in str(e)
    else:
        pytest.skip("this tmpfs accepts O_DIRECT")


def test_block_device_writes_need_allow_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    dev = tmp_path / "fake-nvme"
    dev.write_bytes(b"\0" * 4096)
    real_stat = Path.stat

    def fake_stat(self: Path, **kw: object) -> os.stat_result:
        st = real_stat(self)
        if self == dev:
            return os.stat_result((stat.S_IFBLK | 0o660, *tuple(st)[1:]))
        return st

    monkeypatch.setattr(Path, "stat", fake_stat)
    spec = CollectSpec(target=dev, output=tmp_path / "t.parquet")
    with pytest.raises(TraceError, match="--allow-write"):
        check_target(spec, writes=True)
    assert check_target(spec, writes=False).kind == "block"
    spec.allow_write = True
    assert check_target(spec, writes=True).kind == "block"


def test_occurrence_counts_repeats_in_order() -> None:
    keys = np.array([5, 3, 5, 5, 3, 9])
    occ = _occurrence(keys, np.argsort(keys, kind="stable"))
    assert occ.tolist() == [0, 0, 1, 2, 1, 0]


@needs_fio
def test_relative_target_is_the_one_the_user_named(tmp_path: Path) -> None:
    """fio runs in its log folder: a relative target must still be the caller's file."""
    (tmp_path / "work").mkdir()
    r = run_cli("collect", "rel.img", "--size", "16M", "--runtime", "1s", "-o", "t.parquet",
                "--no-progress", cwd=tmp_path / "work")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "work" / "rel.img").stat().st_size == 16 << 20
    meta = trace_metadata(tmp_path / "work" / "t.parquet")["collection"]
    assert meta["target"] == str(tmp_path / "work" / "rel.img")


@needs_fio
def test_replay_is_whole_unless_runtime_truncates_it_and_says_so(tmp_path: Path) -> None:
    src = tmp_path / "src.parquet"
    ts = np.arange(0, 3_000_000, 100_000)  # 30 reads over 2.9 s
    write_trace(src, pa.Table.from_batches([make_batch(
        ts, np.full(ts.size, 100.0), np.zeros(ts.size, np.int8), ts % (1 << 20) // 4096 * 4096,
        np.full(ts.size, 4096), "src")]), {"source": "test"})
    whole = tmp_path / "whole.parquet"
    r = run_cli("collect", str(tmp_path / "d.img"), "--size", "16M", "--replay", str(src),
                "-o", str(whole), "--no-progress")
    assert r.returncode == 0, r.stderr
    # (a timing note about fio's completion times may appear on a loaded machine)
    assert read_trace(whole).num_rows == 30 and "left out" not in r.stderr
    part = tmp_path / "part.parquet"
    r = run_cli("collect", str(tmp_path / "d.img"), "--size", "16M", "--replay", str(src),
                "--runtime", "1s", "-o", str(part), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert read_trace(part).num_rows == 11 and "19 later IOs were left out" in r.stderr


@needs_fio
def test_replay_with_contention_jobs(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "r.parquet"
    spec = CollectSpec(target=tmp_path / "dev.img", output=out, size=16 << 20,
                       replay=data / "msr_sample.csv",
                       jobs=parse_jobs(["rw=write,bs=192k,iodepth=1,rate_iops=50"]))
    result = collect(spec)
    table = read_trace(out)
    sizes = table.column("size").to_numpy()
    assert len(result.join) == 4 + 1  # a job per replayed IO (4 < iodepth) + contention
    contention = sizes == 192 << 10
    assert contention.sum() > 50  # ~3 s of 50 IOPS of writes, in the trace
    ts = table.column("ts_issue_us").to_numpy()
    replayed = ts[~contention]
    assert replayed.size == 4 and 2.5e6 < replayed[-1] - replayed[0] < 4.5e6
