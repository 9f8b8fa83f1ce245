"""``mittd collect``: a labelled trace from a real device, measured with fio.

fio runs the workload (a workload spec, or a recorded trace replayed as a fio
iolog) with direct IO by default, so latencies are the device's and not the
page cache's. Each job writes two logs:

- its per-IO latency log (``write_lat_log``, ``log_avg_msec=0``,
  ``log_offset=1``, ``log_unix_epoch=1``): latency in ns, but completion times
  only to the millisecond;
- its version-3 iolog (``write_iolog``): every IO in issue order with its issue
  time in microseconds.

The two are joined IO by IO on (op, offset, size, occurrence), which gives each
IO a microsecond issue time and a nanosecond latency; the iolog's clock is put
on the Unix epoch by the median gap between the two logs. Pending-request
features (predictor/) need that precision: at SSD speeds many IOs start and end
within one millisecond.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mittd.traces.errors import BadLines, TraceError
from mittd.traces.fio_iolog import read_iolog, write_iolog
from mittd.traces.formats.base import ReadOptions
from mittd.traces.formats.fio_log import FioLogFormat
from mittd.traces.registry import open_trace
from mittd.traces.schema import (
    OP_OTHER,
    OP_WRITE,
    SCHEMA,
    TraceWriter,
    build_metadata,
    make_batch,
)
from mittd.traces.units import parse_size

ALIGN = 4096  # replayed offsets and sizes are aligned to this for O_DIRECT
MAX_IODEPTH = 65536  # fio's own cap on iodepth
DEFAULT_RUNTIME_S = 30.0  # a workload spec's run time unless --runtime says otherwise
RW_MODES = ("read", "write", "randread", "randwrite", "rw", "readwrite", "randrw", "trim",
            "randtrim", "trimwrite")
# Options mittd sets itself; a --job spec may not override them.
RESERVED = {"filename", "directory", "write_lat_log", "write_iolog", "read_iolog",
            "log_avg_msec", "log_offset", "log_unix_epoch", "numjobs", "write_bw_log",
            "write_iops_log", "per_job_logs", "log_prio"}


@dataclass
class CollectSpec:
    """Everything ``mittd collect`` needs to know, validated before fio starts."""

    target: Path
    output: Path
    size: int | None = None
    runtime_s: float | None = None  # a workload: DEFAULT_RUNTIME_S; a replay: all of it
    jobs: list[dict[str, str]] = field(default_factory=lambda: [{}])
    rw: str = "randrw"
    rwmixread: int = 70
    bs: str = "4k"
    iodepth: int = 16
    ioengine: str = "libaio"
    direct: bool = True
    allow_write: bool = False
    replay: Path | None = None
    replay_format: str = "auto"
    replay_speed: float = 1.0
    device: str | None = None
    fio: str = "fio"
    keep_logs: Path | None = None
    force: bool = False


@dataclass
class Target:
    path: Path
    kind: str  # "file" or "block"
    size: int
    exists: bool


# -- checks --------------------------------------------------------------------

def find_fio(fio: str) -> tuple[str, str]:
    """Path and version of the fio binary, or a one-line error saying how to get it."""
    path = shutil.which(fio)
    if path is None:
        raise TraceError(
            f"fio not found ({fio!r} is not on PATH): install it (Debian/Ubuntu: "
            "apt-get install fio) or pass --fio /path/to/fio"
        )
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TraceError(f"{path}: cannot run fio: {e}") from None
    version = out.stdout.strip()
    m = re.match(r"fio-(\d+)\.(\d+)", version)
    if not m or (int(m.group(1)), int(m.group(2))) < (3, 31):
        raise TraceError(
            f"{path}: {version or 'unknown version'}; mittd collect needs fio >= 3.31 "
            "(for version-3 iologs with issue timestamps)"
        )
    return path, version


def _block_size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def check_target(spec: CollectSpec, writes: bool) -> Target:
    """Refuse targets that are missing, unsafe or unusable, with the reason."""
    p = spec.target
    if p.exists():
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise TraceError(f"{p}: is a directory; give a file or a block device")
        if stat.S_ISBLK(st.st_mode):
            if writes and not spec.allow_write:
                raise TraceError(
                    f"{p}: is a block device and this workload writes; writing destroys "
                    "its data, so pass --allow-write if that is really intended"
                )
            try:
                size = _block_size(p)
            except OSError as e:
                raise TraceError(f"{p}: cannot open block device: {e.strerror}") from None
            return Target(p, "block", size, True)
        if not stat.S_ISREG(st.st_mode):
            raise TraceError(f"{p}: is neither a regular file nor a block device")
        if not os.access(p, os.R_OK | (os.W_OK if writes else 0)):
            raise TraceError(f"{p}: permission denied")
        size = spec.size or st.st_size
        if size < ALIGN * 16:
            raise TraceError(
                f"{p}: file is {st.st_size} bytes; give --size (at least 64k) to lay it out"
            )
        return Target(p, "file", size, True)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise TraceError(f"{p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise TraceError(f"{p}: cannot create the file: directory {parent} is not writable")
    if spec.size is None:
        raise TraceError(f"{p}: does not exist; give --size to have fio create it")
    return Target(p, "file", spec.size, False)


def direct_io_error(path: Path) -> OSError | None:
    """Why an O_DIRECT open fails at ``path`` (a file, or a directory probed with a
    temporary file), or None when it works. Some file systems (tmpfs) refuse it."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
    tmp: str | None = None
    try:
        if Path(path).is_dir():
            fd_tmp, tmp = tempfile.mkstemp(dir=path, prefix=".mittd-odirect-")
            os.close(fd_tmp)
            path = Path(tmp)
        os.close(os.open(path, flags))
    except OSError as e:
        return e
    finally:
        if tmp:
            os.unlink(tmp)
    return None


def check_direct_io(target: Target) -> None:
    """O_DIRECT is refused by some file systems (tmpfs); say so before fio does."""
    e = direct_io_error(target.path if target.exists else target.path.parent)
    if e is not None:
        raise TraceError(
            f"{target.path}: the file system does not support direct IO ({e.strerror}); "
            "use a disk-backed path, or --buffered (latencies then include the page cache)"
        )


def _block_sizes(text: str, what: str) -> None:
    """fio's ``bs``: one size, or ``read,write[,trim]`` sizes; each a size > 0."""
    for part in text.split(","):
        try:
            n = parse_size(part, what) if part.strip() else 1  # "4k," keeps fio's default
        except ValueError as e:
            raise TraceError(str(e)) from None
        if n <= 0:
            raise TraceError(f"{what}: {text!r}: a block size must be > 0")


def _int_in(text: str | int, what: str, lo: int, hi: int | None = None) -> None:
    try:
        v = int(text)
    except ValueError:
        raise TraceError(f"{what}: expected an integer, got {text!r}") from None
    if v < lo or (hi is not None and v > hi):
        span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise TraceError(f"{what} must be an integer {span}, got {v}")


def check_spec(spec: CollectSpec) -> None:
    """Refuse workload numbers fio would reject late, or run as something else (a zero
    run time silently became the default 30 s), before fio is even looked for."""
    if spec.size is not None and spec.size <= 0:
        raise TraceError(f"--size must be > 0 bytes, got {spec.size}")
    if spec.runtime_s is not None and not (math.isfinite(spec.runtime_s)
                                           and spec.runtime_s > 0):
        raise TraceError(f"--runtime must be > 0, got {spec.runtime_s:g} s")
    _int_in(spec.rwmixread, "--rwmixread", 0, 100)
    _int_in(spec.iodepth, "--iodepth", 1, MAX_IODEPTH)
    _block_sizes(spec.bs, "--bs")
    if not (math.isfinite(spec.replay_speed) and spec.replay_speed > 0):
        raise TraceError(f"--replay-speed must be > 0, got {spec.replay_speed:g}")
    if spec.replay is not None and spec.replay.exists() and spec.output.exists() \
            and spec.replay.resolve() == spec.output.resolve():
        raise TraceError(f"{spec.output}: output would overwrite the --replay trace")
    if spec.keep_logs is not None and spec.keep_logs.exists() and not spec.keep_logs.is_dir():
        raise TraceError(f"--keep-logs {spec.keep_logs}: is a file, expected a directory")
    for job in spec.jobs:
        name = "--job " + ",".join(f"{k}={v}" for k, v in job.items())
        for key in ("bs", "blocksize"):
            if key in job:
                _block_sizes(job[key], f"{name}: {key}")
        if "iodepth" in job:
            _int_in(job["iodepth"], f"{name}: iodepth", 1, MAX_IODEPTH)
        for key in ("rwmixread", "rwmixwrite"):
            if key in job:
                _int_in(job[key], f"{name}: {key}", 0, 100)


def _parse_job(spec: str) -> dict[str, str]:
    job: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TraceError(f"--job {spec!r}: expected fio options as key=value,key=value")
        if key in RESERVED:
            raise TraceError(f"--job {spec!r}: {key} is set by mittd collect and cannot be "
                             "overridden")
        job[key] = value.strip()
    return job


def parse_jobs(specs: list[str] | None) -> list[dict[str, str]]:
    """fio option sets from ``--job`` arguments (one job each)."""
    return [_parse_job(s) for s in specs] if specs else [{}]


def _job_writes(spec: CollectSpec, job: dict[str, str]) -> bool:
    rw = job.get("rw", job.get("readwrite", spec.rw))
    if rw not in RW_MODES:
        raise TraceError(f"rw={rw!r} is not a fio IO pattern; choose one of {', '.join(RW_MODES)}")
    if rw in ("read", "randread"):
        return False
    if rw in ("rw", "readwrite", "randrw"):
        return int(job.get("rwmixread", spec.rwmixread)) < 100
    return True


# -- fio job -------------------------------------------------------------------

def _fio_path(p: Path) -> str:
    return str(p).replace(":", "\\:")


def build_jobfile(
    spec: CollectSpec, target: Target, logdir: Path, iologs: list[Path],
    runtime_s: float | None,
) -> str:
    """The fio job file: one section per job, each with its own logs.

    A workload spec runs its jobs with the chosen (asynchronous) engine. A replay
    runs one synchronous (psync) job per replay iolog: fio's paced replay reaps
    asynchronous completions only when the queue is full, which inflates the
    latencies it logs by the replay gaps, while a synchronous job times each IO
    exactly. ``--job`` options beside a replay are contention: concurrent jobs
    with the chosen engine for the replay's duration, logged like a workload's
    (their IOs are the device's other pending requests, so they are in the trace).
    """
    g = [
        "[global]",
        f"filename={_fio_path(target.path)}",
        f"direct={int(spec.direct)}",
        "log_avg_msec=0",
        "log_offset=1",
        "log_unix_epoch=1",
        "thread=0",
    ]
    if target.kind == "file":
        g.append(f"size={target.size}")
    if runtime_s:
        g.append(f"runtime={runtime_s:g}s")
    sections = ["\n".join(g)]
    for i, iolog in enumerate(iologs, start=1):
        sections.append("\n".join([f"[job{i}]", "ioengine=psync", f"read_iolog={iolog}",
                                   "replay_no_stall=0", f"write_lat_log={logdir / f'job{i}'}"]))
    for i, job in enumerate(contention_jobs(spec), start=len(iologs) + 1):
        defaults = {"ioengine": spec.ioengine, "time_based": "1", "rw": spec.rw,
                    "rwmixread": str(spec.rwmixread), "bs": spec.bs,
                    "iodepth": str(spec.iodepth), "randrepeat": "0", "norandommap": "1"}
        lines = [f"[job{i}]", *(f"{k}={v}" for k, v in {**defaults, **job}.items())]
        lines.append(f"write_lat_log={logdir / f'job{i}'}")
        lines.append(f"write_iolog={logdir / f'job{i}.iolog'}")  # fio refuses it beside
        sections.append("\n".join(lines))  # read_iolog: replay jobs have none
    return "\n\n".join(sections) + "\n"


def contention_jobs(spec: CollectSpec) -> list[dict[str, str]]:
    """The asynchronous jobs of a collection: the workload's (``--job``, or the default
    job), or beside a replay only the ``--job`` ones (concurrent contention)."""
    if spec.replay is None:
        return spec.jobs
    return [j for j in spec.jobs if j]


def run_fio(
    fio: str, jobfile: Path, logdir: Path, expected_s: float | None, readonly: bool,
    tick: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run fio to completion; a failure becomes one line quoting fio's own error."""
    cmd = [fio, str(jobfile), "--output-format=json", f"--output={logdir / 'fio.json'}",
           "--eta=never"]
    if readonly:
        cmd.append("--readonly")
    with open(logdir / "fio.stderr", "w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=logdir)
        start = time.monotonic()
        try:
            while proc.poll() is None:
                time.sleep(0.2)
                if tick:
                    tick(time.monotonic() - start)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        errs = [ln for ln in lines if "error" in ln.lower() or "fio:" in ln] or lines
        msg = errs[-1] if errs else f"exit status {proc.returncode}"
        raise TraceError(f"fio failed: {msg}")
    try:
        return json.loads((logdir / "fio.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def fill_file(fio: str, target: Target, direct: bool) -> None:
    """Write the whole file once with real data.

    fio lays out new files with fallocate, leaving unwritten extents that the
    file system answers with zeros without touching the device: reads of them
    would be labelled with latencies of a few microseconds that no device gave.
    """
    cmd = [fio, "--name=fill", f"--filename={_fio_path(target.path)}", f"--size={target.size}",
           "--rw=write", "--bs=1m", "--iodepth=4", "--ioengine=libaio", f"--direct={int(direct)}",
           "--fallocate=none", "--eta=never", "--output-format=terse"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()] or ["unknown error"]
        raise TraceError(f"fio failed writing {target.path}: {lines[-1].strip()}")


# -- replay ----------------------------------------------------------------------

def replay_iologs(
    spec: CollectSpec, target: Target, logdir: Path
) -> tuple[list[Path], int, float, bool]:
    """Turn a recorded trace into fio iologs on ``target``, dealt round-robin over
    ``spec.iodepth`` synchronous jobs; returns (iologs, IOs, seconds, writes, IOs past
    ``--runtime`` left out)."""
    assert spec.replay is not None
    stream = open_trace(spec.replay, spec.replay_format, ReadOptions())
    table = stream.table().sort_by("ts_issue_us")
    op = table.column("op").combine_chunks().indices.to_numpy(zero_copy_only=False)
    keep = op != OP_OTHER
    if not keep.any():
        raise TraceError(f"{spec.replay}: no reads or writes to replay")
    ts = table.column("ts_issue_us").to_numpy()[keep]
    ts = np.round((ts - ts[0]) / spec.replay_speed).astype(np.int64)
    size = table.column("size").to_numpy()[keep]
    size = np.clip((size + ALIGN - 1) // ALIGN * ALIGN, ALIGN, target.size // 2)
    offset = table.column("offset").to_numpy()[keep]
    span = np.maximum(target.size - size, ALIGN)
    offset = (offset % span) // ALIGN * ALIGN
    op = op[keep]
    left_out = 0
    if spec.runtime_s:
        inside = ts <= spec.runtime_s * 1e6
        left_out = int((~inside).sum())
        ts, op, offset, size = ts[inside], op[inside], offset[inside], size[inside]
        if not inside.any():
            raise TraceError(f"--runtime {spec.runtime_s:g}s: no IO of {spec.replay} falls "
                             "inside it")
    n_jobs = max(1, min(spec.iodepth, len(ts)))
    paths = []
    for j in range(n_jobs):
        path = logdir / f"replay.{j + 1}.iolog"
        sl = slice(j, None, n_jobs)
        write_iolog(path, str(target.path), ts[sl], op[sl], offset[sl], size[sl])
        paths.append(path)
    return paths, len(ts), float(ts[-1]) / 1e6, bool((op == OP_WRITE).any()), left_out



# -- join -------------------------------------------------------------------------

def _occurrence(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For rows sorted by ``order``, how many earlier rows share the same key."""
    k = keys[order]
    start = np.r_[True, k[1:] != k[:-1]]
    idx = np.arange(len(k))
    first = np.maximum.accumulate(np.where(start, idx, 0))
    occ = np.empty(len(k), dtype=np.int64)
    occ[order] = idx - first
    return occ


def join_job_logs(
    lat_log: Path, iolog: Path, device: str, replayed: bool = False
) -> tuple[pa.RecordBatch, dict]:
    """Pair one job's latency log with its iolog; returns the batch and join stats.

    ``iolog`` is what fio issued (``write_iolog``), or, for a replay, the iolog
    fio replayed: fio cannot write one while reading another, so the issue times
    are then the intended replay times, clamped into the millisecond window that
    the latency log allows (an IO that fio issued late, because the device fell
    behind, gets the earliest time consistent with its completion).
    """
    bad = BadLines(str(lat_log))
    lat_batches = list(FioLogFormat().read(lat_log, ReadOptions(device=device), bad))
    lat = pa.Table.from_batches(lat_batches, schema=SCHEMA) if lat_batches else None
    issued = read_iolog(iolog)
    if lat is None or lat.num_rows == 0:
        raise TraceError(f"{lat_log}: fio logged no IOs (is the runtime too short?)")
    l_op = lat.column("op").combine_chunks().indices.to_numpy(zero_copy_only=False)
    l_off = lat.column("offset").to_numpy()
    l_size = lat.column("size").to_numpy()
    l_lat = lat.column("latency_us").to_numpy()
    # the reader's ts is completion_ms*1000 - latency; undo that for the completion time
    l_done = lat.column("ts_issue_us").to_numpy() + np.round(l_lat).astype(np.int64)

    def keys(op: np.ndarray, off: np.ndarray, size: np.ndarray) -> np.ndarray:
        k = np.empty(len(op), dtype=[("op", "i1"), ("off", "i8"), ("size", "i8")])
        k["op"], k["off"], k["size"] = op, off, size
        return k

    lk = keys(l_op, l_off, l_size)
    ik = keys(issued["op"], issued["offset"], issued["size"])
    l_occ = _occurrence(lk, np.argsort(lk, kind="stable"))  # completion order within key
    i_occ = _occurrence(ik, np.argsort(ik, kind="stable"))  # issue order within key
    left = pa.table({"op": l_op, "off": l_off, "size": l_size, "occ": l_occ,
                     "li": np.arange(len(l_op))})
    right = pa.table({"op": issued["op"], "off": issued["offset"], "size": issued["size"],
                      "occ": i_occ, "ii": np.arange(len(i_occ))})
    joined = left.join(right, keys=["op", "off", "size", "occ"], join_type="inner")
    li = joined.column("li").to_numpy()
    ii = joined.column("ii").to_numpy()
    issue_us = issued["ts_us"][ii]
    lat_us = l_lat[li]
    gap = l_done[li] - (issue_us + lat_us)
    # fio truncates completion times to the millisecond: the gap is the clock offset
    # minus a uniform [0, 1000) µs, so the offset is its median plus 500 µs.
    clock = float(np.median(gap)) + 500.0
    inconsistent = int((np.abs(gap - (clock - 500.0)) > 1500.0).sum())
    ts = issue_us + clock
    if replayed:
        earliest = l_done[li] - lat_us  # completion ms (truncated) minus latency
        ts = np.clip(ts, earliest, earliest + 1000.0)
    ts = np.round(ts).astype(np.int64)
    batch = make_batch(ts, lat_us, l_op[li], l_off[li], l_size[li], device)
    stats = {
        "latency_log": lat_log.name,
        "iolog": iolog.name,
        "completed": len(l_op),
        "issued": len(i_occ),
        "matched": len(li),
        "clock_offset_us": clock,
        "inconsistent": inconsistent,  # > 1.5 ms off; in a replay: issued late
        "issue_times": "replay schedule" if replayed else "fio write_iolog",
        "malformed_lines": bad.count,
    }
    return batch, stats


def _fio_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for job in report.get("jobs", []):
        row: dict[str, Any] = {"job": job.get("jobname"), "error": job.get("error")}
        for d in ("read", "write"):
            s = job.get(d, {})
            if s.get("total_ios"):
                pct = s.get("lat_ns", {}).get("percentile") or s.get("clat_ns", {}).get(
                    "percentile", {})
                row[d] = {
                    "ios": s["total_ios"],
                    "iops": s.get("iops"),
                    "lat_mean_us": s.get("lat_ns", {}).get("mean", 0) / 1000,
                    "clat_p50_us": pct.get("50.000000", 0) / 1000 if pct else None,
                    "clat_p99_us": pct.get("99.000000", 0) / 1000 if pct else None,
                }
        out.append(row)
    return out


# -- the whole collection ----------------------------------------------------------

@dataclass
class CollectResult:
    ios: int
    output: Path
    join: list[dict[str, Any]]
    fio_version: str
    replay_truncated: int = 0  # IOs of a --replay trace past --runtime, not replayed


def collect(
    spec: CollectSpec, tick: Callable[[str, float, float], None] | None = None
) -> CollectResult:
    """Run the workload with fio and write the labelled canonical trace."""
    if spec.output.suffix != ".parquet":
        raise TraceError(f"{spec.output}: output must be a .parquet file")
    if spec.output.exists() and not spec.force:
        raise TraceError(f"{spec.output}: already exists (use --force to overwrite)")
    if not spec.output.parent.is_dir():
        raise TraceError(f"{spec.output.parent}: output directory does not exist")
    check_spec(spec)
    fio, fio_version = find_fio(spec.fio)
    # fio runs in its log folder: a relative target would name a file there
    spec = replace(spec, target=spec.target.absolute())
    writes = any(_job_writes(spec, job) for job in contention_jobs(spec))
    target = check_target(spec, writes)
    if spec.direct:
        check_direct_io(target)

    with tempfile.TemporaryDirectory(prefix="mittd-collect-") as tmp:
        logdir = spec.keep_logs or Path(tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        logdir = logdir.resolve()
        for old in [*logdir.glob("job*"), *logdir.glob("replay.*.iolog")]:
            old.unlink()
        iologs: list[Path] = []
        runtime = spec.runtime_s or DEFAULT_RUNTIME_S
        replay_info: dict[str, Any] = {}
        if spec.replay is not None:
            iologs, n, seconds, replay_writes, left_out = replay_iologs(spec, target, logdir)
            writes = writes or replay_writes
            if replay_writes and target.kind == "block" and not spec.allow_write:
                raise TraceError(
                    f"{target.path}: the replayed trace writes and the target is a block "
                    "device; pass --allow-write if destroying its data is intended"
                )
            replay_info = {"trace": str(spec.replay), "ios": n, "seconds": seconds,
                           "speed": spec.replay_speed, "jobs": len(iologs),
                           "truncated_to_s": spec.runtime_s,
                           "left_out": left_out,
                           "contention_jobs": contention_jobs(spec)}
            runtime = seconds + 1  # the whole (possibly --runtime-truncated) replay
        filled = False
        if target.kind == "file" and (
            not target.exists or target.path.stat().st_size < target.size
        ):
            if tick:
                tick("writing the target file", 0.0, 0.0)
            fill_file(fio, target, spec.direct)
            filled = True
        jobfile = logdir / "collect.fio"
        jobfile.write_text(build_jobfile(spec, target, logdir, iologs, runtime))
        expected = (replay_info.get("seconds") or runtime or 0.0)
        report = run_fio(
            fio, jobfile, logdir, expected, readonly=not writes,
            tick=(lambda t: tick("fio", t, expected)) if tick else None,
        )
        device = spec.device or target.path.name
        batches, joins = [], []
        njobs = len(iologs) + len(contention_jobs(spec))
        for i in range(1, njobs + 1):
            lat_logs = sorted(logdir.glob(f"job{i}_lat.*.log"))
            if not lat_logs:
                raise TraceError(f"fio wrote no latency log for job{i} (see {jobfile})")
            replayed = i <= len(iologs)
            issued = iologs[i - 1] if replayed else logdir / f"job{i}.iolog"
            batch, stats = join_job_logs(lat_logs[0], issued, device, replayed)
            batches.append(batch)
            joins.append(stats)
        table = pa.Table.from_batches(batches, schema=SCHEMA).sort_by("ts_issue_us")
        meta = build_metadata(
            "fio", str(target.path),
            collection={
                "tool": "mittd collect",
                "fio_version": fio_version,
                "target": str(target.path),
                "target_kind": target.kind,
                "target_size": target.size,
                "direct": spec.direct,
                "ioengine": spec.ioengine,
                "runtime_s": runtime,
                "jobs": contention_jobs(spec),
                "filled_target": filled,
                "defaults": {"rw": spec.rw, "rwmixread": spec.rwmixread, "bs": spec.bs,
                             "iodepth": spec.iodepth},
                "replay": replay_info,
                "jobfile": jobfile.read_text(),
                "join": joins,
                "fio_summary": _fio_summary(report),
                "host": {"kernel": platform.release(), "machine": platform.machine(),
                         "cpus": os.cpu_count()},
                "command": " ".join(sys.argv),
            },
        )
        with TraceWriter(spec.output, meta) as writer:
            for b in table.to_batches(max_chunksize=1 << 20):
                writer.write(b)
    return CollectResult(table.num_rows, spec.output, joins, fio_version,
                         int(replay_info.get("left_out", 0)))
