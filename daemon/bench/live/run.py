"""The run of ``mittd bench live``: its options checked, its rig (replica files, daemons,
fio writers, client threads) set up and always torn down, and the measurement loop."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mittd.daemon.bench.live.modes import (
    MODES,
    READ_BYTES,
    STOP,
    WARMUP,
    MiB,
    Schedule,
    Shared,
    sum_stats,
    worker,
)
from mittd.daemon.bench.live.procs import (
    Scheduler,
    daemon_config,
    fio_jobfile,
    free_port,
    scrape,
    spawn,
    stop_process,
    tail,
)
from mittd.daemon.bench.live.rendering import plot, render
from mittd.daemon.bench.live.rows import QS, comparison, mode_rows, reads_line

if TYPE_CHECKING:
    from mittd.predictor.bundle import Bundle


class LiveError(Exception):
    """The live check cannot run; the message is one line for the user."""


class _Terminated(SystemExit):
    """SIGTERM while running: unwinds like Ctrl-C so the clean-up runs."""


# -- defaults ----------------------------------------------------------------------------


def default_model() -> Path | None:
    """The shipped Heimdall bundle if there is one, else ``out/results/heimdall.mittd``.

    Heimdall's features (request size, queue length, the last latencies and
    throughputs) see a device slowing down through the daemon's own reads, which
    is all a live daemon sees: fio's writes never pass through it, so a model of
    the LBAs of pending requests alone (precise_linear) has little to go on here.
    """
    try:
        from mittd.predictor.shipped import shipped_bundle  # type: ignore[import-not-found]
    except ImportError:
        shipped_bundle = None
    if shipped_bundle is not None:
        with contextlib.suppress(Exception):
            p = Path(shipped_bundle("heimdall"))
            if p.is_file():
                return p
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):  # the repository root
        p = base / "out" / "results" / "heimdall.mittd"
        if p.is_file():
            return p
    return None


def default_dir() -> Path:
    """``./out`` when it exists and is writable (disk-backed in this project), else /var/tmp."""
    out = Path.cwd() / "out"
    if out.is_dir() and os.access(out, os.W_OK):
        return out
    return Path("/var/tmp")


def _silent(_msg: str) -> None:
    pass


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """:func:`run_live`'s arguments, checked, and what follows from them."""

    replicas: int
    size: int
    clients: int
    period_s: float
    busy: float
    write_qd: int
    deadline_us: int
    hedge_after_us: float | None
    decision_threshold: float | None
    seed: int
    keep_files: bool
    out_dir: str | Path | None
    say: Callable[[str], None]
    rounds: int  # of one slice per mode, after the warm-up period
    total_s: float
    bundle_path: Path
    bundle: Bundle
    thresholds: list[float]  # the model's trained latency thresholds, µs
    bases: list[Path]  # the --dir directories, absolute
    placement: list[Path]  # the directory of replica i
    fio: str
    schedule: Schedule


def _options(*, duration_s: float, replicas: int, size: int, clients: int,
             model: str | Path | None, directory: str | Path | Sequence[str | Path] | None,
             period_s: float | None, busy: float, write_qd: int, deadline_us: int | None,
             hedge_after_us: float | None, decision_threshold: float | None, seed: int,
             keep_files: bool, out_dir: str | Path | None, quiet: bool,
             say: Callable[[str], None] | None) -> _Options:
    """Checks :func:`run_live`'s arguments in order: the first bad one is a LiveError."""
    if quiet:
        say = _silent
    elif say is None:
        say = _stderr
    if period_s is None:
        period_s = 3.0 if duration_s >= 4 * 3.0 else duration_s / 4
    if replicas < 2:
        raise LiveError(f"--replicas must be >= 2 (failover needs a second replica), got "
                        f"{replicas}")
    if clients < 1:
        raise LiveError(f"--clients must be >= 1, got {clients}")
    if size < 16 * MiB or size % MiB:
        raise LiveError(f"--size must be a whole number of MiB, at least 16 MiB, got {size}")
    if not period_s > 0 or not math.isfinite(period_s):
        raise LiveError(f"--period must be > 0 seconds, got {period_s}")
    if not 0 <= busy <= 1:
        raise LiveError(f"--busy must be a fraction of the period in [0, 1], got {busy}")
    if write_qd < 1:
        raise LiveError(f"--write-qd must be >= 1, got {write_qd}")
    rounds = int((duration_s - period_s) // (len(MODES) * period_s)) if duration_s > 0 else 0
    if rounds < 1:
        raise LiveError(f"--duration {duration_s:g} s is too short: it needs one warm-up period "
                        f"and one {period_s:g} s slice per mode, at least "
                        f"{(len(MODES) + 1) * period_s:g} s")
    if hedge_after_us is not None and not hedge_after_us > 0:
        raise LiveError(f"--hedge-after-us must be > 0, got {hedge_after_us}")
    if decision_threshold is not None and not 0 < decision_threshold < 1:
        raise LiveError(f"--decision-threshold must be a probability in (0, 1), got "
                        f"{decision_threshold}")
    if deadline_us is not None and deadline_us < 1:
        raise LiveError(f"--deadline-us must be >= 1, got {deadline_us}")
    bundle_path, bundle, thresholds, deadline_us = _model(model, deadline_us)
    bases, placement = _placement(directory, replicas, size)
    fio = shutil.which("fio")
    if fio is None:
        raise LiveError("fio not found on PATH: install it (Debian/Ubuntu: apt-get install fio)")
    return _Options(
        replicas=replicas, size=size, clients=clients, period_s=period_s, busy=busy,
        write_qd=write_qd, deadline_us=deadline_us, hedge_after_us=hedge_after_us,
        decision_threshold=decision_threshold, seed=seed, keep_files=keep_files,
        out_dir=out_dir, say=say, rounds=rounds, total_s=period_s * (1 + rounds * len(MODES)),
        bundle_path=bundle_path, bundle=bundle, thresholds=thresholds, bases=bases,
        placement=placement, fio=fio, schedule=Schedule(replicas, period_s, busy))


def _model(model: str | Path | None,
           deadline_us: int | None) -> tuple[Path, Bundle, list[float], int]:
    """The bundle, its thresholds, and the deadline: ``--deadline-us`` or the first one."""
    from mittd.predictor.bundle import load_bundle

    bundle_path = Path(model) if model else default_model()
    if bundle_path is None:
        raise LiveError("no model bundle found (no shipped heimdall bundle, no "
                        "out/results/heimdall.mittd): pass --model B.mittd")
    if not bundle_path.is_file():
        raise LiveError(f"{bundle_path}: no such bundle")
    bundle = load_bundle(bundle_path)  # BundleError: one line, from the caller
    thresholds = bundle.latency_thresholds_us()
    if deadline_us is None:
        deadline_us = max(1, math.floor(thresholds[0]))
    if deadline_us > max(thresholds):
        raise LiveError(f"--deadline-us {deadline_us} lies beyond the model's thresholds "
                        f"{thresholds} µs: mittd would admit every read")
    return bundle_path, bundle, thresholds, deadline_us


def _placement(directory: str | Path | Sequence[str | Path] | None, replicas: int,
               size: int) -> tuple[list[Path], list[Path]]:
    """The ``--dir`` directories and the one of each replica, checked for its files."""
    from mittd.traces.collect import direct_io_error

    if directory is None or directory == "":
        bases = [default_dir()]
    elif isinstance(directory, str | Path):
        bases = [Path(d) for d in str(directory).split(",") if d]
    else:
        bases = [Path(d) for d in directory]
    if not bases:
        raise LiveError("--dir: no directory given")
    bases = [b.absolute() for b in bases]  # the daemons' configs need absolute paths
    placement = [bases[i % len(bases)] for i in range(replicas)]
    for base in dict.fromkeys(bases):
        if not base.is_dir():
            raise LiveError(f"{base}: not a directory")
        if not os.access(base, os.W_OK):
            raise LiveError(f"{base}: not writable")
        if direct_io_error(base) is not None:
            raise LiveError(f"{base}: the file system refuses O_DIRECT (tmpfs?); pass --dir on "
                            "a disk-backed file system")
        need = placement.count(base) * size + 64 * MiB
        free = shutil.disk_usage(base).free
        if free < need:
            raise LiveError(f"{base}: {need / MiB:,.0f} MiB needed for the replica files, "
                            f"{free / MiB:,.0f} MiB free; use a smaller --size or another --dir")
    return bases, placement


# -- resources, all released by _release -------------------------------------------------


@dataclass
class _Rig:
    """What a run holds, filled in as it starts up; :func:`_release` lets go of all of it."""

    works: dict[Path, Path]  # a temporary directory in each --dir: the replica files
    work: Path  # configs and logs
    sockdir: Path  # short path for Unix sockets
    old_term: Any = None
    files: list[Path] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    socks: list[Path] = field(default_factory=list)
    workers: int = 0
    daemons: list[subprocess.Popen] = field(default_factory=list)
    writers: list[subprocess.Popen] = field(default_factory=list)
    clients: list[Any] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    sched: Scheduler | None = None
    sh: Shared | None = None


@contextlib.contextmanager
def _rig(o: _Options) -> Iterator[_Rig]:
    """Replica files, daemons, fio writers and client threads, up and running; on the way
    out, however it is left (an error, Ctrl-C, SIGTERM), all of it stopped and removed."""
    works: dict[Path, Path] = {}
    for base in dict.fromkeys(o.bases):
        works[base] = Path(tempfile.mkdtemp(prefix="mittd-live-", dir=base))
    rig = _Rig(works=works, work=works[o.bases[0]],
               sockdir=Path(tempfile.mkdtemp(prefix="mittd-live-")))
    if threading.current_thread() is threading.main_thread():
        def on_term(signum: int, frame: Any) -> None:
            raise _Terminated(128 + signum)
        rig.old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        _start_replicas(rig, o)
        _start_clients(rig, o)
        yield rig
    finally:
        _release(rig, o)


def _start_replicas(rig: _Rig, o: _Options) -> None:
    """The replica files written, a daemon serving each, its fio writer paused."""
    from mittd.traces.collect import Target, fill_file
    from mittd.traces.errors import TraceError

    rig.files = [rig.works[o.placement[i]] / f"replica{i}.img" for i in range(o.replicas)]
    for i, f in enumerate(rig.files):
        o.say(f"writing replica {i}: {f} ({o.size / MiB:,.0f} MiB, direct IO) ...")
        try:
            fill_file(o.fio, Target(f, "file", o.size, False), True)
        except TraceError as e:
            raise LiveError(str(e)) from None
    rig.ports = [free_port() for _ in range(o.replicas)]
    rig.socks = [rig.sockdir / f"r{i}.sock" for i in range(o.replicas)]
    rig.workers = 2 * o.clients + 4
    for i in range(o.replicas):
        cfg = rig.work / f"replica{i}.toml"
        daemon_config(cfg, rig.socks[i], rig.files[i], o.bundle_path.resolve(), rig.workers,
                      rig.ports[i], o.decision_threshold)
        rig.daemons.append(spawn(
            [sys.executable, "-m", "mittd.daemon.cli", "serve", "--config", str(cfg),
             "--log-level", "warning", "--grace", "2"],
            rig.work / f"replica{i}.log", signal.SIGTERM))
    if o.busy > 0:
        for i in range(o.replicas):
            job = rig.work / f"contention{i}.fio"
            fio_jobfile(job, rig.files[i], o.size, o.write_qd, int(o.total_s) + 600)
            rig.writers.append(spawn([o.fio, str(job), "--eta=never", "--output-format=terse"],
                                     rig.work / f"contention{i}.log", signal.SIGKILL))
            with contextlib.suppress(ProcessLookupError):  # paused until the schedule
                rig.writers[-1].send_signal(signal.SIGSTOP)
    o.say(f"starting {o.replicas} daemons ({o.bundle.version_id}, deadline {o.deadline_us} µs, "
          f"{rig.workers} workers each) ...")
    _wait_for_daemons(rig)


def _wait_for_daemons(rig: _Rig) -> None:
    """Every daemon healthy within 60 s, and every fio writer still there."""
    from mittd.daemon.client import daemon_healthy

    deadline = time.monotonic() + 60
    for i, proc in enumerate(rig.daemons):
        while True:
            if proc.poll() is not None:
                raise LiveError(f"the daemon of replica {i} exited ({proc.returncode}): "
                                f"{tail(rig.work / f'replica{i}.log')}")
            if rig.socks[i].exists() and daemon_healthy(f"unix:{rig.socks[i]}"):
                break
            if time.monotonic() > deadline:
                raise LiveError(f"the daemon of replica {i} did not come up within 60 s")
            time.sleep(0.1)
    for i, w in enumerate(rig.writers):
        if w.poll() is not None:
            raise LiveError(f"fio (contention on replica {i}) exited: "
                            f"{tail(rig.work / f'contention{i}.log')}")


def _start_clients(rig: _Rig, o: _Options) -> None:
    """A channel to each daemon, the contention schedule and the client threads, running
    from ``sh.t0_ns`` on, in the warm-up mode."""
    from mittd.daemon.client import Client

    rig.clients = [Client(f"unix:{s}", timeout_s=30.0) for s in rig.socks]
    sh = rig.sh = Shared(replicas=[(c, "r") for c in rig.clients],
                         blocks=o.size // READ_BYTES, deadline_us=o.deadline_us, seed=o.seed)
    sh.records = [[] for _ in range(o.clients)]
    sh.stats = [{} for _ in range(o.clients)]
    sh.t0_ns = time.perf_counter_ns()
    if rig.writers:
        rig.sched = Scheduler(rig.writers, o.schedule, sh.t0_ns)
        rig.sched.pause_all()
        rig.sched.start()
    rig.threads = [threading.Thread(target=worker, args=(k, sh), name=f"mittd-live-client{k}",
                                    daemon=True) for k in range(o.clients)]
    for t in rig.threads:
        t.start()


def _release(rig: _Rig, o: _Options) -> None:
    """Stops and removes it all, in order: clients, scheduler, fio, client channels,
    daemons, files; a second Ctrl-C meanwhile is ignored, then the old handlers return."""
    old_int = None
    if threading.current_thread() is threading.main_thread():
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd ^C must not orphan
    try:
        if rig.sh is not None:
            rig.sh.mode = STOP
            rig.sh.stop.set()
            for t in rig.threads:
                t.join(10)
        if rig.sched is not None:
            rig.sched.halt.set()
            rig.sched.join(5)
        for w in rig.writers:
            stop_process(w, 10, paused=True)
        for c in rig.clients:
            with contextlib.suppress(Exception):
                c.close()
        for d in rig.daemons:
            stop_process(d, 15)
        if o.keep_files:
            o.say(f"files kept in {', '.join(str(w) for w in rig.works.values())}")
        else:
            for w in rig.works.values():
                shutil.rmtree(w, ignore_errors=True)
        shutil.rmtree(rig.sockdir, ignore_errors=True)
    finally:
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
        if rig.old_term is not None:
            signal.signal(signal.SIGTERM, rig.old_term)


# -- the measurement -----------------------------------------------------------------------


def _wait_until(sh: Shared, t_s: float) -> None:
    """Returns ``t_s`` seconds into the run; LiveError if the clients stopped before."""
    while not sh.stop.is_set():
        left = t_s - (time.perf_counter_ns() - sh.t0_ns) / 1e9
        if left <= 0:
            return
        sh.stop.wait(min(left, 0.1))
    raise LiveError(sh.errors[0] if sh.errors else "the clients stopped")


def _marks(sh: Shared) -> list[int]:
    return [len(r) for r in sh.records]


def _since(sh: Shared, m0: list[int]) -> list[tuple[int, int, int, int, int, int]]:
    return [x for r, i in zip(sh.records, m0, strict=True) for x in r[i:]]


def _warm_up(o: _Options, sh: Shared) -> tuple[int, float]:
    """The warm-up period (``none``): its reads and their p95, the hedge delay by default."""
    m0 = _marks(sh)
    _wait_until(sh, o.period_s)
    warm_rows = [x for x in _since(sh, m0) if x[0] == WARMUP]
    warm = np.asarray([x[2] for x in warm_rows], np.float64) / 1e3
    if len(warm) == 0:
        raise LiveError("no read completed during the warm-up")
    warm_p95 = float(np.percentile(warm, 95))
    sh.hedge_after_us = o.hedge_after_us if o.hedge_after_us is not None else warm_p95
    o.say(f"[{o.period_s:5.1f}/{o.total_s:g} s] warm-up (none): {reads_line(warm_rows)}; "
          f"hedge after {sh.hedge_after_us:,.0f} µs")
    return len(warm), warm_p95


def _slices(o: _Options, sh: Shared) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """The rounds of one period per mode, the order rotated every round: the slices, and
    the seconds each mode ran."""
    slices: list[dict[str, Any]] = []
    seconds = dict.fromkeys(range(len(MODES)), 0.0)
    t_slice = o.period_s
    for r in range(o.rounds):
        for j in range(len(MODES)):
            m = (r + j) % len(MODES)
            m0 = _marks(sh)
            start = (time.perf_counter_ns() - sh.t0_ns) / 1e9
            sh.mode = m
            _wait_until(sh, t_slice + o.period_s)
            end = (time.perf_counter_ns() - sh.t0_ns) / 1e9
            t_slice += o.period_s
            seconds[m] += end - start
            got = [x for x in _since(sh, m0) if x[0] == m]
            slices.append({"mode": MODES[m], "start_s": round(start, 3),
                           "end_s": round(end, 3), "reads": len(got)})
            o.say(f"[{end:5.1f}/{o.total_s:g} s] {MODES[m]:<5}: {reads_line(got)}")
    return slices, seconds


def _stop_clients(rig: _Rig, sh: Shared) -> tuple[dict[int, dict[str, int]], np.ndarray]:
    """The client threads stopped: their ReplicaSet counters by mode, and their records."""
    sh.mode = STOP
    sh.stop.set()
    for t in rig.threads:
        t.join(30)
    if sh.errors:
        raise LiveError(sh.errors[0])
    stats: dict[int, dict[str, int]] = {}
    for per_thread in sh.stats:
        for m, st in per_thread.items():
            stats[m] = sum_stats([stats.get(m, {}), st])
    rec = np.asarray([x for r in sh.records for x in r], np.int64).reshape(-1, 6)
    return stats, rec


def _contention(o: _Options) -> str:
    return (f"replica i under 1 MiB direct writes (QD {o.write_qd}) for "
            f"{o.busy * o.period_s:g} s of every {o.period_s:g} s, staggered by "
            f"{o.period_s / o.replicas:g} s" if o.busy > 0 else "none")


def _measure(o: _Options, rig: _Rig) -> dict[str, Any]:
    """Warm-up, then the rounds of slices, then the daemons' counters: the result."""
    sh = rig.sh
    assert sh is not None  # _rig started the clients
    contention = _contention(o)
    o.say(f"{o.clients} closed-loop client(s), {o.total_s:g} s: warm-up {o.period_s:g} s, "
          f"then {o.rounds} round(s) of {len(MODES)} slices of {o.period_s:g} s; contention: "
          f"{contention}")
    warm_reads, warm_p95 = _warm_up(o, sh)
    slices, seconds = _slices(o, sh)
    stats, rec = _stop_clients(rig, sh)
    daemon_stats = [scrape(p) for p in rig.ports]
    result = {
        "model": f"{o.bundle.version_id} ({o.bundle_path})",
        "model_thresholds_us": list(o.thresholds),
        "deadline_us": o.deadline_us,
        "decision_threshold": (o.decision_threshold if o.decision_threshold is not None
                               else o.bundle.decision_thresholds()[0]),
        "replicas": o.replicas,
        "size_bytes": o.size,
        "clients": o.clients,
        "read_bytes": READ_BYTES,
        "directory": ", ".join(str(b) for b in dict.fromkeys(o.bases)),
        "cpus": os.cpu_count(),
        "duration_s": o.total_s,
        "period_s": o.period_s,
        "busy": o.busy,
        "write_qd": o.write_qd,
        "busy_windows_s": [list(w) for w in o.schedule.windows()] if o.busy > 0 else [],
        "contention": contention,
        "contention_switches": rig.sched.switches if rig.sched else 0,
        "warmup_reads": warm_reads,
        "warmup_p95_us": warm_p95,
        "hedge_after_us": sh.hedge_after_us,
        "hedge_after_source": ("--hedge-after-us" if o.hedge_after_us is not None
                               else "p95 of the warm-up (none)"),
        "modes": mode_rows(rec, stats, seconds, o.schedule),
        "slices": slices,
        "daemons": daemon_stats,
        "cdf_quantiles": QS.round(7).tolist(),
    }
    result["comparison"] = comparison(result["modes"])
    result["files"] = []
    return result


def _write_files(o: _Options, result: dict[str, Any]) -> None:
    """``live.json``, ``live.txt`` and ``live.png`` in ``out_dir``, listed in ``files``."""
    if o.out_dir is None:
        return
    import json

    out = Path(o.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "live.json").write_text(json.dumps(result, indent=1))
    (out / "live.txt").write_text(render(result) + "\n")
    result["files"] = [str(out / "live.json"), str(out / "live.txt")]
    note = plot(result, out / "live.png")
    if note:
        o.say(note)
    else:
        result["files"].append(str(out / "live.png"))


# -- the run -------------------------------------------------------------------------------


def run_live(duration_s: float = 60.0, replicas: int = 2, size: int = 1 << 30,
             clients: int = 2, model: str | Path | None = None,
             directory: str | Path | Sequence[str | Path] | None = None,
             period_s: float | None = None, busy: float = 1 / 3,
             write_qd: int = 4, deadline_us: int | None = None,
             hedge_after_us: float | None = None, decision_threshold: float | None = None,
             seed: int = 0, keep_files: bool = False, out_dir: str | Path | None = None,
             quiet: bool = False, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the live check (see the package docstring); returns plain, JSON-able data.

    ``period_s`` None: 3 s, or a quarter of ``duration_s`` when that is shorter
    than 12 s (a warm-up and one slice per mode). ``out_dir``: also write
    ``live.json``, ``live.txt`` (the table) and ``live.png`` (with matplotlib)
    there, listed in the result's ``files``. Progress goes to ``say`` (default:
    stderr), nowhere when ``quiet``.

    Raises :class:`LiveError` (one line) for bad options, a missing fio, a file
    system refusing O_DIRECT, too little space, or a daemon that fails to start.
    """
    o = _options(duration_s=duration_s, replicas=replicas, size=size, clients=clients,
                 model=model, directory=directory, period_s=period_s, busy=busy,
                 write_qd=write_qd, deadline_us=deadline_us, hedge_after_us=hedge_after_us,
                 decision_threshold=decision_threshold, seed=seed, keep_files=keep_files,
                 out_dir=out_dir, quiet=quiet, say=say)
    with _rig(o) as rig:
        result = _measure(o, rig)
        _write_files(o, result)
        return result
