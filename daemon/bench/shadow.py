"""``mittd bench shadow``: a recording session as an operator runs it before enforcing.

Why: before a model may reject anything on a device it must be shown to rank that
device's slow IOs above its fast ones, on the device's own IOs, and the numbers the
daemon exports (``mittd_model_*``, :class:`~mittd.daemon.quality.LiveQuality`) must
be the numbers an offline evaluation would give, or neither can be trusted. This
session measures both on the same IOs:

1. one replica file is placed in ``--dir`` (as ``mittd bench live`` places its
   files: :func:`~mittd.daemon.bench.live.targets.place_files`), written in full,
   and fio's 1 MiB writers make it slow for the ``--busy`` share of every
   ``--period`` (the live bench's schedule and writers, SIGSTOP/SIGCONT);
2. ``--clients`` closed-loop threads (the live bench's
   :func:`~mittd.daemon.bench.live.modes.worker`) read ``--read-size`` blocks at
   random, QD1 each, ``O_DIRECT`` where the file system takes it, through an
   :class:`~mittd.daemon.embedded.Embedded` in shadow mode: every read is
   predicted and recorded (``--records``), none is rejected; each read is timed
   like the live bench's (admit + read + complete, as the client saw it) and its
   ticket completed with the device latency;
3. at the end the admission is closed (every record written), the live quality
   over the last ``--window`` decisions is set beside the offline ROC-AUC of the
   same bundle on the same IOs (the records read back as a trace, re-featurised by
   :func:`~mittd.training.offline_eval.evaluate_bundle` with the earlier IOs still
   seen, only the last ``window`` scored) and the ROC-AUC of the P(slow) the
   records hold; the issue's target is ``|live - offline| <= 0.01``.

fio and the admission are stopped however the run ends (an error, Ctrl-C,
SIGTERM); the replica file is removed, the records are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mittd.daemon.bench.live.modes import MODES, READ_BYTES, REC, STOP, Schedule, Shared, worker
from mittd.daemon.bench.live.procs import Scheduler, fio_jobfile, spawn, stop_process, tail
from mittd.daemon.bench.live.run import DEFAULT_BUSY, LiveError, parse_busy
from mittd.daemon.bench.live.targets import PlacementError, Replica, place_files

__all__ = ["ALIAS", "DEFAULT_WINDOW", "TARGET", "ShadowError", "render", "run_shadow"]

ALIAS = "shadow"  # the device alias: the records land in RECORDS/shadow/*.parquet
DEFAULT_WINDOW = 10_000  # decisions in the live quality window (the daemon's default)
DEFAULT_PERIOD_S = 3.0  # the live bench's contention period
TARGET = 0.01  # the bound on |live ROC-AUC - offline ROC-AUC|
MiB = 1 << 20
MAX_READ = MiB
_MODE = MODES.index("mittd")  # what the client records are tagged with (one mode here)


class ShadowError(Exception):
    """The session cannot run; the message is one line for the user."""


class _Terminated(SystemExit):
    """SIGTERM while running: unwinds like Ctrl-C so that the clean-up runs."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _silent(_msg: str) -> None:
    pass


# -- options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """:func:`run_shadow`'s arguments, checked."""

    replica: Replica
    bundle_path: Path
    records: Path
    seconds: float
    busy: float
    period_s: float
    clients: int
    read_size: int
    size: int
    window: int
    seed: int
    write_qd: int
    fio: str | None
    say: Callable[[str], None]


def _options(*, directory: str | Path | None, bundle: str | Path | None, seconds: float,
             records: str | Path | None, busy: float | str | None, period_s: float | None,
             clients: int, read_size: int, size: int, window: int, seed: int, write_qd: int,
             quiet: bool, say: Callable[[str], None] | None) -> _Options:
    """The arguments checked in order; the first bad one is a ShadowError naming it."""
    from mittd.daemon.ring import RING_ROWS
    from mittd.predictor.bundle import BundleError, load_bundle

    say = _silent if quiet else (say or _stderr)
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise ShadowError(f"--seconds must be > 0, got {seconds}")
    if bundle is None or str(bundle) == "":
        raise ShadowError("--bundle: give the model bundle (B.mittd) to shadow")
    bundle_path = Path(bundle)
    if not bundle_path.is_file():
        raise ShadowError(f"--bundle {bundle}: no such bundle file")
    try:
        load_bundle(bundle_path)
    except (BundleError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ShadowError(msg if msg.startswith(str(bundle)) else f"--bundle {bundle}: {msg}"
                          ) from None
    if records is None or str(records) == "":
        raise ShadowError("--records: give the directory the IO records go to")
    rec = _records_dir(Path(records))
    if clients < 1:
        raise ShadowError(f"--clients must be >= 1, got {clients}")
    if read_size < READ_BYTES or read_size % READ_BYTES or read_size > MAX_READ:
        raise ShadowError(f"--read-size must be a multiple of 4 KiB from 4 KiB to 1 MiB "
                          f"(O_DIRECT alignment), got {read_size:,} bytes")
    if size < 16 * MiB or size % MiB:
        raise ShadowError(f"--size must be a whole number of MiB, at least 16 MiB, got "
                          f"{size:,} bytes")
    if not 100 <= window <= RING_ROWS:
        raise ShadowError(f"--window must be in [100, {RING_ROWS}] decisions (the record "
                          f"ring's size), got {window}")
    if period_s is None:
        period_s = DEFAULT_PERIOD_S
    if not (math.isfinite(period_s) and period_s > 0):
        raise ShadowError(f"--period must be > 0 seconds, got {period_s}")
    if write_qd < 1:
        raise ShadowError(f"--write-qd must be >= 1, got {write_qd}")
    try:
        (share,) = parse_busy(busy, 1, [False])
    except LiveError as e:
        raise ShadowError(str(e)) from None
    if directory is None or str(directory) == "":
        raise ShadowError("--dir: give the directory the replica file goes in (a disk, "
                          "not tmpfs, for device latencies)")
    if "," in str(directory):
        raise ShadowError(f"--dir {directory}: one directory (the session reads one replica)")
    try:
        (replica,) = place_files(directory, 1, size, Path("/var/tmp"))
    except PlacementError as e:
        raise ShadowError(str(e)) from None
    fio = shutil.which("fio")
    if fio is None and share > 0:
        raise ShadowError("fio not found on PATH: it makes the contention (--busy); install "
                          "it (Debian/Ubuntu: apt-get install fio) or give --busy 0")
    return _Options(replica=replica, bundle_path=bundle_path, records=rec,
                    seconds=float(seconds), busy=share, period_s=float(period_s),
                    clients=clients, read_size=read_size, size=size, window=window,
                    seed=seed, write_qd=write_qd, fio=fio, say=say)


def _records_dir(path: Path) -> Path:
    """``--records``: created if missing, and writable (tested by writing a file)."""
    path = path.expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ShadowError(f"--records {path}: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ShadowError(f"--records {path}: cannot create it ({e.strerror or e})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".mittd-shadow-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ShadowError(f"--records {path}: not writable ({e.strerror or e})") from None
    return path


# -- the rig ---------------------------------------------------------------------------


class _Reader:
    """The closed-loop worker's "replica set" here: one replica, every read decided.

    Why not :class:`~mittd.daemon.replicas.LocalReplicaSet`: with one replica the
    set asks its last (only) replica beyond every model so that someone serves the
    read, and nothing would be predicted. This asks with the device's default
    deadline (its first trained threshold) and completes the ticket with the
    device latency, as the set does. The worker's block numbers count
    ``read_size`` blocks.
    """

    def __init__(self, emb: Any, path: Path, read_size: int) -> None:
        from mittd.daemon.embedded import OP_READ
        from mittd.daemon.replicas import LocalReplica

        self.replica = LocalReplica(path, ALIAS)
        self._admit, self._complete, self._op = emb.admit, emb.complete, OP_READ
        self.read_size = read_size
        self.reads = self.rejected = 0

    def read(self, offset: int, _length: int, deadline_us: int) -> None:
        off = offset // READ_BYTES * self.read_size
        ticket = self._admit(ALIAS, self._op, off, self.read_size, deadline_us)
        self.reads += 1
        if not ticket:  # never in shadow mode; a read still has to be served
            self.rejected += 1
        t0 = time.perf_counter_ns()
        try:
            _, latency_us = self.replica.read(off, self.read_size)
        except BaseException:
            if ticket:
                self._complete(ALIAS, ticket, (time.perf_counter_ns() - t0) / 1000.0)
            raise
        if ticket:
            self._complete(ALIAS, ticket, latency_us)

    def close(self) -> None:
        self.replica.close()


class _Backend:
    """What :func:`~mittd.daemon.bench.live.modes.worker` reads through (its
    ``Backend`` protocol): a :class:`_Reader` per thread, one mode."""

    path = "inproc"

    def __init__(self, emb: Any, path: Path, read_size: int) -> None:
        self.emb, self.file, self.read_size = emb, path, read_size

    def make_set(self, mode: str, ring: list[int], hedge_after_us: float | None,
                 admission: int | None = 0) -> _Reader:
        return _Reader(self.emb, self.file, self.read_size)

    def deadline(self, mode: str) -> int:
        return 0  # the device default: the bundle's first trained threshold

    @staticmethod
    def outcome(result: Any) -> tuple[int, int]:
        return 0, 1

    @staticmethod
    def set_stats(rset: _Reader) -> dict[str, int]:
        return {"reads": rset.reads, "rejected": rset.rejected}


@dataclass
class _Rig:
    """What a session holds; :func:`_release` lets go of all of it."""

    work: Path  # the replica file, fio's job and log
    file: Path
    emb: Any = None
    writer: Any = None
    sched: Scheduler | None = None
    sh: Shared | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    old_term: Any = None
    segments_before: frozenset[Path] = frozenset()


def _fill(o: _Options, path: Path) -> None:
    """The replica written in full (real blocks, not holes): by fio as the live bench
    does, or, without fio (allowed at ``--busy 0``), by plain writes and an fsync."""
    from mittd.traces.collect import Target, fill_file
    from mittd.traces.errors import TraceError

    if o.fio is not None:
        try:
            fill_file(o.fio, Target(path, "file", o.size, False), o.replica.direct)
        except TraceError as e:
            raise ShadowError(str(e)) from None
        return
    block = bytearray(np.random.default_rng(o.seed).bytes(MiB))
    try:
        with open(path, "wb") as f:
            for i in range(o.size // MiB):
                block[:8] = i.to_bytes(8, "little")  # no two blocks alike
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ShadowError(f"cannot write the replica file {path}: {e.strerror or e}") from None


@contextlib.contextmanager
def _rig(o: _Options) -> Iterator[_Rig]:
    """The replica file, the shadow admission, fio's writer (paused) up; on the way out,
    however it is left (an error, Ctrl-C, SIGTERM), all of it stopped and the replica
    removed (the records stay)."""
    from mittd.daemon.embedded import Embedded, EmbeddedError

    assert o.replica.base is not None
    work = Path(tempfile.mkdtemp(prefix="mittd-shadow-", dir=o.replica.base))
    rig = _Rig(work=work, file=work / o.replica.path.name)
    try:
        if threading.current_thread() is threading.main_thread():
            def on_term(signum: int, frame: Any) -> None:
                raise _Terminated(128 + signum)
            rig.old_term = signal.signal(signal.SIGTERM, on_term)
        o.say(f"writing the replica {rig.file} ({o.size / MiB:,.0f} MiB, "
              f"{o.replica.medium}) ...")
        _fill(o, rig.file)
        rig.segments_before = frozenset(_segments(o.records))
        try:
            rig.emb = Embedded.from_bundles({ALIAS: str(o.bundle_path)}, mode="shadow",
                                            records=o.records, quality_window=o.window)
        except EmbeddedError as e:
            raise ShadowError(f"--bundle {o.bundle_path}: {e}".splitlines()[0]) from None
        if o.busy > 0:
            assert o.fio is not None
            job = work / "contention.fio"
            fio_jobfile(job, rig.file, o.size, o.write_qd, int(o.seconds) + 600,
                        direct=o.replica.direct)
            rig.writer = spawn([o.fio, str(job), "--eta=never", "--output-format=terse"],
                               work / "contention.log", signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):  # paused until the schedule
                rig.writer.send_signal(signal.SIGSTOP)
            time.sleep(0.05)
            if rig.writer.poll() is not None:
                raise ShadowError(f"fio (contention) exited: {tail(work / 'contention.log')}")
        yield rig
    finally:
        _release(rig)


def _segments(records: Path) -> list[Path]:
    from mittd.traces.records import SEGMENT_SUFFIX

    return sorted((records / ALIAS).glob("*" + SEGMENT_SUFFIX))


def _start(o: _Options, rig: _Rig) -> Shared:
    """The contention schedule and the client threads, running from ``sh.t0_ns``."""
    sh = rig.sh = Shared(backend=_Backend(rig.emb, rig.file, o.read_size), n=1,
                         blocks=o.size // o.read_size, seed=o.seed)
    sh.mode = _MODE
    sh.records = [array("q") for _ in range(o.clients)]
    sh.stats = [{} for _ in range(o.clients)]
    sh.t0_ns = time.perf_counter_ns()
    if rig.writer is not None:
        rig.sched = Scheduler([rig.writer], Schedule(1, o.period_s, (o.busy,)), sh.t0_ns)
        rig.sched.pause_all()
        rig.sched.start()
    rig.threads = [threading.Thread(target=worker, args=(k, sh), name=f"mittd-shadow-{k}",
                                    daemon=True) for k in range(o.clients)]
    for t in rig.threads:
        t.start()
    return sh


def _stop_clients(rig: _Rig) -> None:
    sh = rig.sh
    if sh is None:
        return
    sh.mode = STOP
    sh.stop.set()
    for t in rig.threads:
        t.join(30)
    rig.threads = []


def _release(rig: _Rig) -> None:
    """Clients, scheduler, fio, the admission (its records written), the replica file;
    a second Ctrl-C meanwhile is ignored, then the old handlers return."""
    old_int = None
    if threading.current_thread() is threading.main_thread():
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd ^C must not orphan
    try:
        _stop_clients(rig)
        if rig.sched is not None:
            rig.sched.halt.set()
            rig.sched.join(5)
        if rig.writer is not None:
            stop_process(rig.writer, 10, paused=True)
        if rig.emb is not None:
            with contextlib.suppress(Exception):
                rig.emb.close()
        shutil.rmtree(rig.work, ignore_errors=True)
    finally:
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
        if rig.old_term is not None:
            signal.signal(signal.SIGTERM, rig.old_term)


def _done(sh: Shared) -> int:
    return sum(len(r) for r in sh.records) // REC


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(
        v, spec)


def _num(v: Any) -> float | None:
    """A finite float, else None (JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _elapsed(sh: Shared) -> float:
    return (time.perf_counter_ns() - sh.t0_ns) / 1e9


def _progress(o: _Options, rig: _Rig, sh: Shared) -> float:
    """Wait out the session with a line a second (IOs done, live ROC-AUC so far); the
    seconds it ran."""
    while True:
        if sh.stop.is_set():
            raise ShadowError(sh.errors[0] if sh.errors else "the clients stopped")
        t = _elapsed(sh)
        if t >= o.seconds:
            return t
        sh.stop.wait(min(o.seconds - t, 1.0))
        t = _elapsed(sh)
        n = _done(sh)
        q = rig.emb.quality(ALIAS)
        o.say(f"[{min(t, o.seconds):5.1f}/{o.seconds:g} s] {n:,} IOs ({n / t:,.0f}/s), "
              f"live ROC-AUC {_fmt(q.roc_auc)} ({q.slow:,} slow of {q.labelled:,})")


def _contention(o: _Options) -> str:
    if o.busy <= 0:
        return "none"
    return (f"1 MiB writes (QD {o.write_qd}) for {o.busy * o.period_s:.3g} s of every "
            f"{o.period_s:g} s")


def _quantiles(lat_us: np.ndarray) -> dict[str, float | None]:
    lat_us = lat_us[np.isfinite(lat_us)]
    if not len(lat_us):
        return {"p50_us": None, "p99_us": None, "p999_us": None, "mean_us": None}
    p50, p99, p999 = np.percentile(lat_us, [50, 99, 99.9])
    return {"p50_us": float(p50), "p99_us": float(p99), "p999_us": float(p999),
            "mean_us": float(lat_us.mean())}


def _measure(o: _Options, rig: _Rig) -> dict[str, Any]:
    """The session: clients under the schedule for ``seconds``, then stopped; the live
    quality taken, the admission closed (every record written), its counters."""
    from mittd.daemon.bench.live.modes import records_array

    emb = rig.emb
    o.say(f"{o.clients} closed-loop client(s), {o.read_size // 1024} KiB random reads at "
          f"QD1 each, shadow mode ({emb.model_version(ALIAS)}), {o.seconds:g} s; "
          f"contention: {_contention(o)}")
    sh = _start(o, rig)
    seconds = _progress(o, rig, sh)
    _stop_clients(rig)
    if sh.errors:
        raise ShadowError(sh.errors[0])
    q = emb.quality(ALIAS)
    deadline = emb.default_deadline_us(ALIAS)
    thresholds = [float(t) for t in emb.thresholds_us(ALIAS)]
    emb.close()  # every record written out
    st = emb.stats()[ALIAS]
    rec = records_array(sh.records)
    reads = int(sum(s.get(_MODE, {}).get("reads", 0) for s in sh.stats))
    return {
        "bundle": str(o.bundle_path),
        "model": st.model_version,
        "model_sha256": st.model_sha256,
        "mode": st.mode,
        "thresholds_us": thresholds,
        "deadline_us": float(deadline),
        "directory": str(o.replica.base),
        "medium": o.replica.medium,
        "size_bytes": o.size,
        "read_bytes": o.read_size,
        "clients": o.clients,
        "seconds": round(seconds, 3),
        "busy": o.busy,
        "period_s": o.period_s,
        "contention": _contention(o),
        "contention_switches": rig.sched.switches if rig.sched is not None else 0,
        "reads": reads or len(rec),
        "ios_decided": int(st.admitted + st.rejected),
        "ios_per_s": (st.admitted + st.rejected) / seconds if seconds > 0 else None,
        "rejected": int(st.rejected),
        "would_be_rejects": int(st.shadow_rejects),
        "fail_open": int(st.fail_open),
        "beyond_model": int(st.beyond_model),
        "records_written": int(st.records_written),
        "records_dropped": int(st.records_dropped),
        "latency": _quantiles(rec[:, 2] / 1e3),
        "live": {
            "window": q.window,
            "decided": q.decided,
            "labelled": q.labelled,
            "slow": q.slow,
            "roc_auc": _num(q.roc_auc),
            "precision": _num(q.precision),
            "recall": _num(q.recall),
            "would_reject_share": _num(q.would_reject_share),
            "validation_roc_auc": _num(q.validation_roc_auc),
            "drift_margin": q.drift_margin,
            "drift": q.drift,
        },
    }


def _session_segments(o: _Options, before: frozenset[Path]) -> list[Path]:
    new = [p for p in _segments(o.records) if p not in before]
    if not new:
        raise ShadowError(f"--records {o.records}: no record segment was written in "
                          f"{o.records / ALIAS}")
    return new


def _offline(o: _Options, result: dict[str, Any], before: frozenset[Path]) -> None:
    """The records read back: their bytes, the offline ROC-AUC of the bundle on the last
    ``window`` decided IOs (the earlier ones featurised, not scored), and the served
    ROC-AUC of the recorded P(slow) on the same rows; filled into ``result``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mittd.traces.errors import TraceError
    from mittd.traces.records import D_REJECT, DECISIONS, read_records
    from mittd.traces.registry import open_trace
    from mittd.training.evaluate import roc_auc
    from mittd.training.offline_eval import EvaluateError, evaluate_bundle

    new = _session_segments(o, before)
    nbytes = sum(p.stat().st_size for p in new)
    written = result["records_written"]
    result["records"] = {"dir": str(o.records / ALIAS), "segments": len(new),
                         "bytes": nbytes, "bytes_per_io": nbytes / written if written else None}
    try:
        stream = open_trace(o.records / ALIAS)
        if list(stream.paths) != new:  # segments of earlier sessions: this one's only
            stream = dataclasses.replace(stream, paths=tuple(new))
        table = stream.table()
        recs = read_records(new)
    except TraceError as e:
        raise ShadowError(f"--records: cannot read the records back: {e}") from None
    n = table.num_rows
    w = min(o.window, n)
    # int(start * n) == n - w in evaluate_bundle: the half row keeps float rounding out
    start = (n - w + 0.5) / n if n > w else 0.0
    offline: dict[str, Any] = {"ios_read_back": n, "scored": w, "start": start}
    try:
        row = evaluate_bundle(o.bundle_path, table, start)
    except EvaluateError as e:
        offline["error"] = str(e)
    else:
        offline.update(scored=row["ios"], slow=round(row["slow_fraction"] * row["ios"]),
                       roc_auc=_num(row["roc_auc"]), precision=_num(row["precision"]),
                       recall=_num(row["recall"]), would_reject_share=_num(row["rejected"]),
                       decision_threshold=row["decision_threshold"])
    result["offline"] = offline
    # served: the recorded P(slow) of the same rows (issue order, the last w issued)
    issued = recs.filter(pc.invert(pc.equal(recs.column("decision").cast(pa.string()),
                                            DECISIONS[D_REJECT])))
    ts = issued.column("ts_issue_us").to_numpy()
    last = np.argsort(ts, kind="stable")[len(ts) - w:]
    p = issued.column("p_slow").to_numpy(zero_copy_only=False).astype(np.float64)[last]
    lat = issued.column("latency_us").to_numpy(zero_copy_only=False).astype(np.float64)[last]
    head = issued.column("threshold_index").to_numpy(zero_copy_only=False)[last]
    ok = np.isfinite(p) & np.isfinite(lat) & (head == 0)
    y = lat[ok] > result["thresholds_us"][0]
    both = 0 < int(y.sum()) < len(y)
    result["served"] = {"ios": int(ok.sum()), "slow": int(y.sum()),
                        "roc_auc": _num(roc_auc(y, p[ok])) if both else None}
    all_lat = issued.column("latency_us").to_numpy(zero_copy_only=False).astype(np.float64)
    result["device_latency"] = _quantiles(all_lat)
    # a sound recording is in issue order with every issued IO's latency filled in; if
    # not, the rows offline scores are not the ones the live window holds: say so
    result["records"].update(out_of_order=int(np.count_nonzero(np.diff(ts) < 0)),
                             no_latency=int(np.count_nonzero(~np.isfinite(all_lat))))
    live, off = result["live"]["roc_auc"], offline.get("roc_auc")
    diff = abs(live - off) if live is not None and off is not None else None
    result["live_vs_offline"] = {"abs_diff": diff, "target": TARGET,
                                 "met": None if diff is None else diff <= TARGET}


# -- the report --------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} µs"


def render(r: dict[str, Any]) -> str:
    """The session as text: what ran, the records, the latencies, live beside offline."""
    lv, off, sv = r["live"], r.get("offline", {}), r.get("served", {})
    lat, dev = r["latency"], r.get("device_latency", {})
    recs = r.get("records", {})
    bpi = recs.get("bytes_per_io")
    lines = [
        f"mittd bench shadow: {r['model']} ({r['bundle']}), {r['mode']} mode, deadline "
        f"{r['deadline_us']:,.1f} µs",
        f"replica: {r['size_bytes'] / MiB:,.0f} MiB in {r['directory']} ({r['medium']}); "
        f"{r['clients']} closed-loop client(s), {r['read_bytes'] // 1024} KiB random reads "
        f"at QD1, {r['seconds']:g} s; contention: {r['contention']}",
        f"IOs decided:   {r['ios_decided']:,} ({(r['ios_per_s'] or 0):,.0f}/s); would-be "
        f"rejects {r['would_be_rejects']:,}, rejected {r['rejected']:,}"
        + (f", fail-open {r['fail_open']:,}" if r["fail_open"] else ""),
        f"records:       {r['records_written']:,} written, {r['records_dropped']:,} dropped; "
        f"{recs.get('bytes', 0) / MiB:,.2f} MiB in {recs.get('segments', 0)} segment(s), "
        + ("-" if bpi is None else f"{bpi:.1f}") + f" B per IO ({recs.get('dir', '-')})",
        f"read latency:  p50 {_us(lat['p50_us'])}, p99 {_us(lat['p99_us'])}, p99.9 "
        f"{_us(lat['p999_us'])} (client: admit + read + complete)",
        f"device:        p50 {_us(dev.get('p50_us'))}, p99 {_us(dev.get('p99_us'))}, p99.9 "
        f"{_us(dev.get('p999_us'))} (recorded latency_us)",
        "",
        f"quality on the last {off.get('scored', lv['decided']):,} decided IOs (slow: "
        f"latency > {r['thresholds_us'][0]:,.1f} µs; {lv['slow']:,} slow of "
        f"{lv['labelled']:,} labelled):",
        f"  {'':<20}{'live (metrics)':>16}{'offline':>12}{'served':>10}",
        f"  {'ROC-AUC':<20}{_fmt(lv['roc_auc']):>16}{_fmt(off.get('roc_auc')):>12}"
        f"{_fmt(sv.get('roc_auc')):>10}",
        f"  {'precision':<20}{_pct(lv['precision']):>16}{_pct(off.get('precision')):>12}",
        f"  {'recall':<20}{_pct(lv['recall']):>16}{_pct(off.get('recall')):>12}",
        f"  {'would-be rejects':<20}{_pct(lv['would_reject_share']):>16}"
        f"{_pct(off.get('would_reject_share')):>12}",
        f"  validation ROC-AUC (the bundle's) {_fmt(lv['validation_roc_auc'])}; drift: "
        f"{'YES' if lv['drift'] else 'no'} (margin {lv['drift_margin']:g})",
    ]
    if "error" in off:
        lines.append(f"  offline: {off['error']}")
    if recs.get("out_of_order") or recs.get("no_latency"):
        lines.append(f"  warning: {recs.get('out_of_order', 0):,} record(s) out of issue "
                     f"order, {recs.get('no_latency', 0):,} issued without a latency: the "
                     "rows scored offline may not be the live window's")
    cmp = r.get("live_vs_offline", {})
    if cmp.get("abs_diff") is None:
        lines.append("|live - offline| ROC-AUC: - (a class missing among the scored IOs)")
    else:
        lines.append(f"|live - offline| ROC-AUC = {cmp['abs_diff']:.4f}: "
                     + ("within" if cmp["met"] else "NOT within")
                     + f" the target {cmp['target']:g}")
    lines.append("live: the admission's own quality window (the Prometheus numbers); "
                 "offline: mittd evaluate's re-featurised prediction on the records read "
                 "back; served: the P(slow) the records hold")
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------


def run_shadow(directory: str | Path | None, bundle: str | Path | None, seconds: float,
               records: str | Path | None, busy: float | str | None = None,
               period_s: float | None = None, clients: int = 1, read_size: int = READ_BYTES,
               size: int = 1 << 30, window: int = DEFAULT_WINDOW, seed: int = 0,
               write_qd: int = 4, quiet: bool = False,
               say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a shadow session (see the module docstring); plain, JSON-able data.

    ``busy``: the share of every ``period_s`` (default 3 s) the replica is under
    writes (None: 1/3, as ``mittd bench live``; 0: no writer, and no fio needed).
    Progress goes to ``say`` (default stderr), nowhere when ``quiet``. Raises
    :class:`ShadowError` (one line, naming the option) for bad options, a missing
    fio, too little room, an unwritable records directory or a failed read.
    """
    o = _options(directory=directory, bundle=bundle, seconds=seconds, records=records,
                 busy=DEFAULT_BUSY if busy is None else busy, period_s=period_s,
                 clients=clients, read_size=read_size, size=size, window=window, seed=seed,
                 write_qd=write_qd, quiet=quiet, say=say)
    with _rig(o) as rig:
        result = _measure(o, rig)
        before = rig.segments_before
    o.say("reading the records back, evaluating the bundle offline ...")
    _offline(o, result, before)
    return result
