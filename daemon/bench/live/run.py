"""The run of ``mittd bench live``: its options checked, its rig (replica files, the
in-process admission or one daemon per replica, fio writers, client threads) set up and
always torn down, and the measurement loop."""

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
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mittd.daemon.bench.live.modes import (
    MODES,
    READ_BYTES,
    REC,
    STOP,
    VALIDATION,
    WARMUP,
    Arrivals,
    MiB,
    Schedule,
    Shared,
    load_arrivals,
    records_array,
    sum_stats,
    worker,
)
from mittd.daemon.bench.live.procs import (
    Scheduler,
    cpu_seconds,
    daemon_config,
    fio_jobfile,
    free_port,
    scrape,
    spawn,
    stop_process,
    tail,
)
from mittd.daemon.bench.live.rendering import plot, render
from mittd.daemon.bench.live.rows import QS, comparison, mode_rows, reads_line, targets
from mittd.daemon.bench.live.targets import (
    PlacementError,
    Replica,
    check_targets,
    place_files,
    target_size,
)
from mittd.daemon.bench.live.validation import (
    LADDER,
    MARGIN,
    OFF_TEXT,
    RULE,
    Candidate,
    candidates,
    choose,
    summary,
)
from mittd.traces.atomic import write_text

if TYPE_CHECKING:
    from mittd.predictor.bundle import Bundle

PATHS = ("inproc", "grpc")
DEFAULT_BUSY = 1 / 3
DEFAULT_PROBE_AFTER = 32  # the daemon's default (mittd.daemon.config): both paths alike
DEFAULT_VALIDATION_ROUNDS = 2  # in-process; the gRPC path has no validation window


class LiveError(Exception):
    """The live check cannot run; the message is one line for the user."""


class _Terminated(SystemExit):
    """SIGTERM while running: unwinds like Ctrl-C so the clean-up runs."""


# -- defaults ----------------------------------------------------------------------------


#: the fixed operating point of a run without a validation window (``validation_rounds``
#: 0): the demo's (``mittd.daemon.bench.demo.STRICT``), chosen offline on the shipped
#: trace's validation window, never on a live run's test part
DEFAULT_BUNDLE, DEFAULT_CUTOFF = "precise_linear_hist_node95", 0.97


def default_model() -> Path | None:
    """The shipped ``precise_linear_hist_node95`` bundle (used at P(slow) > 0.97), else
    ``out/results/precise_linear_hist_node95.mittd``.

    Why not Heimdall (the default until the in-process path): on this machine's
    disk it misfires on the client's own view. A calibration run (every 4 KiB
    read judged by every shipped bundle, nothing rejected, 1 MiB writes 1 s of
    every 3 s; 172k reads, 30 % over the 188 µs threshold, 23 % in quiet
    periods) found Heimdall at its bundle cutoff 0.5 calling 86 % of quiet-period
    reads slow (precision 0.33; ROC-AUC 0.77), so the 50 % reject cap, not the
    model, decided; at 0.97 it calls nothing slow. ``precise_linear_hist_node95``
    at the demo's 0.97 called 2.2 % of quiet and 56 % of write-burst reads slow,
    precision 0.87 (the LBA-only ``precise_linear_node95`` cannot tell the phases
    apart: fio's writes never pass through the admission). ``--model`` and
    ``--decision-threshold`` choose another.
    """
    try:
        from mittd.predictor.shipped import shipped_bundle  # type: ignore[import-not-found]
    except ImportError:
        shipped_bundle = None
    if shipped_bundle is not None:
        with contextlib.suppress(Exception):
            p = Path(shipped_bundle(DEFAULT_BUNDLE))
            if p.is_file():
                return p
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):  # the repository root
        p = base / "out" / "results" / f"{DEFAULT_BUNDLE}.mittd"
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

    path: str
    replicas: int
    size: int
    clients: int
    period_s: float
    busy: tuple[float, ...]  # per replica
    write_qd: int
    deadline_us: int
    hedge_after_us: float | None
    decision_threshold: float | None
    max_reject_share: float | None
    probe_after: int
    seed: int
    keep_files: bool
    out_dir: str | Path | None
    say: Callable[[str], None]
    rounds: int  # of one slice per mode, after the warm-up period
    total_s: float
    bundle_path: Path
    bundle: Bundle
    thresholds: list[float]  # the model's trained latency thresholds, µs
    reps: list[Replica]  # where each replica lives, what its reads measure
    fio: str | None  # None when nothing is filled or written
    schedule: Schedule
    arrivals: Arrivals | None
    trace_speed: float
    cutoff_source: str  # where the decision threshold came from
    validation_rounds: int = 0  # of one slice per candidate, between warm-up and test
    candidates: tuple[Candidate, ...] = ()  # on trial in the validation window
    cap: float = 0.5  # the run's reject cap (--max-reject-share, else the bundle policy's)

    @property
    def validation_slices(self) -> int:
        return self.validation_rounds * len(self.candidates)

    @property
    def bases(self) -> list[Path]:
        return list(dict.fromkeys(r.base for r in self.reps if r.base is not None))


def parse_busy(busy: float | str | Sequence[float] | None, replicas: int,
               given: Sequence[bool]) -> tuple[float, ...]:
    """``--busy``: one fraction for every replica or one per replica; None: 1/3 for the
    files the run creates and 0 for ``--target`` replicas (never written by default)."""
    if busy is None:
        return tuple(0.0 if g else DEFAULT_BUSY for g in given)
    if isinstance(busy, str):
        try:
            values = [float(v) for v in busy.split(",")]
        except ValueError:
            raise LiveError(f"--busy {busy!r}: expected fractions like 0.5 or 0.5,0 (one per "
                            "replica)") from None
    elif isinstance(busy, int | float):
        values = [float(busy)]
    else:
        values = [float(v) for v in busy]
    if len(values) == 1:
        values *= replicas
    if len(values) != replicas:
        raise LiveError(f"--busy: {len(values)} fractions for {replicas} replicas (give one, "
                        "or one per replica)")
    for v in values:
        if not 0 <= v <= 1:
            raise LiveError(f"--busy must be a fraction of the period in [0, 1], got {v:g}")
    return tuple(values)


def _options(*, duration_s: float, replicas: int | None, size: int | None,
             clients: int | None, model: str | Path | None,
             directory: str | Path | Sequence[str | Path] | None,
             targets: Sequence[str | Path], period_s: float | None,
             busy: float | str | Sequence[float] | None, write_qd: int,
             deadline_us: int | None, hedge_after_us: float | None,
             decision_threshold: float | None, max_reject_share: float | None,
             probe_after: int, path: str, trace: str | Path | None, trace_speed: float,
             allow_block_device: bool, write_targets: bool, seed: int, keep_files: bool,
             out_dir: str | Path | None, quiet: bool,
             say: Callable[[str], None] | None, validation_rounds: int | None = 0,
             validation_cutoffs: Sequence[float] | None = None) -> _Options:
    """Checks :func:`run_live`'s arguments in order: the first bad one is a LiveError."""
    if quiet:
        say = _silent
    elif say is None:
        say = _stderr
    if path not in PATHS:
        raise LiveError(f"--path must be one of {', '.join(PATHS)}, got {path!r}")
    if validation_rounds is None:
        validation_rounds = DEFAULT_VALIDATION_ROUNDS if path == "inproc" else 0
    if validation_rounds < 0:
        raise LiveError(f"--validation-rounds must be >= 0 (0: no validation window), got "
                        f"{validation_rounds}")
    if validation_rounds and path == "grpc":
        raise LiveError("--validation-rounds: the validation window runs on the in-process "
                        "path only; give --validation-rounds 0 with --path grpc")
    if max_reject_share is not None and not 0 < max_reject_share <= 1:
        raise LiveError(f"--max-reject-share must be in (0, 1], got {max_reject_share}")
    cuts: list[float] = []
    if validation_rounds:
        cuts = list(validation_cutoffs) if validation_cutoffs else list(LADDER)
        if decision_threshold is not None and not validation_cutoffs \
                and 0 < decision_threshold < 1 and decision_threshold not in cuts:
            cuts.append(decision_threshold)  # the asked-for cutoff is on trial too
        try:
            candidates(cuts, 1.0)  # checked here; built with the run's cap below
        except ValueError as e:
            raise LiveError(f"--validation-cutoffs: {e}") from None
    targets = list(targets or ())
    if targets and directory:
        raise LiveError("--target and --dir exclude each other: the replicas are either "
                        "the given targets or files made in the directories")
    if replicas is None:
        replicas = len(targets) or 2
    if targets and replicas != len(targets):
        raise LiveError(f"--replicas {replicas} with {len(targets)} --target(s): one replica "
                        "per target")
    if replicas < 2:
        raise LiveError(f"--replicas must be >= 2 (failover needs a second replica), got "
                        f"{replicas}")
    if clients is None:
        clients = 4 if trace else 2
    if clients < 1:
        raise LiveError(f"--clients must be >= 1, got {clients}")
    if size is not None and (size < 16 * MiB or size % MiB):
        raise LiveError(f"--size must be a whole number of MiB, at least 16 MiB, got {size}")
    if period_s is not None and (not period_s > 0 or not math.isfinite(period_s)):
        raise LiveError(f"--period must be > 0 seconds, got {period_s}")
    if write_qd < 1:
        raise LiveError(f"--write-qd must be >= 1, got {write_qd}")
    if hedge_after_us is not None and not hedge_after_us > 0:
        raise LiveError(f"--hedge-after-us must be > 0, got {hedge_after_us}")
    if decision_threshold is not None and not 0 < decision_threshold < 1:
        raise LiveError(f"--decision-threshold must be a probability in (0, 1), got "
                        f"{decision_threshold}")
    if probe_after < 0:
        raise LiveError(f"--probe-after must be >= 0 (0: no probes), got {probe_after}")
    if deadline_us is not None and deadline_us < 1:
        raise LiveError(f"--deadline-us must be >= 1, got {deadline_us}")
    if not trace_speed > 0 or not math.isfinite(trace_speed):
        raise LiveError(f"--trace-speed must be > 0, got {trace_speed}")
    bundle_path, bundle, thresholds, deadline_us = _model(model, deadline_us)
    cap = _cap(bundle, max_reject_share)
    cands = candidates(cuts, cap) if validation_rounds else []
    period_s, rounds, before = _timing(duration_s, period_s, validation_rounds, len(cands))
    cutoff_source = "--decision-threshold"
    if decision_threshold is None and model is None:
        decision_threshold, cutoff_source = DEFAULT_CUTOFF, "the default operating point"
    elif decision_threshold is None:
        cutoff_source = "the bundle's"
    try:
        if targets:
            reps = check_targets(targets, allow_block_device)
            have = target_size(reps)
            if size is not None and size > have:
                raise LiveError(f"--size {size / MiB:,.0f} MiB is more than the smallest "
                                f"--target has ({have / MiB:,.0f} MiB)")
            size = size or have
        else:
            size = size or (1 << 30)
            reps = place_files(directory, replicas, size, default_dir())
    except PlacementError as e:
        raise LiveError(str(e)) from None
    per = parse_busy(busy, replicas, [r.given for r in reps])
    for i, (r, b) in enumerate(zip(reps, per, strict=True)):
        if r.given and b > 0 and not write_targets:
            raise LiveError(f"--busy: replica {i} is --target {r.path}, which is never written "
                            "without --write-targets (fio would overwrite its data); give it "
                            "busy 0")
    arrivals = None
    if trace is not None:
        from mittd.traces.errors import TraceError

        try:
            arrivals = load_arrivals(str(trace), size, trace_speed)
        except (TraceError, ValueError, OSError) as e:
            raise LiveError(f"--trace {trace}: {e}".splitlines()[0]) from None
    fio = None
    if any(not r.given for r in reps) or any(b > 0 for b in per):
        fio = shutil.which("fio")
        if fio is None:
            raise LiveError("fio not found on PATH: install it (Debian/Ubuntu: apt-get install "
                            "fio)")
    return _Options(
        path=path, replicas=replicas, size=size, clients=clients, period_s=period_s, busy=per,
        write_qd=write_qd, deadline_us=deadline_us, hedge_after_us=hedge_after_us,
        decision_threshold=decision_threshold, max_reject_share=max_reject_share,
        probe_after=probe_after, seed=seed, keep_files=keep_files, out_dir=out_dir, say=say,
        rounds=rounds, total_s=before + period_s * rounds * len(MODES),
        bundle_path=bundle_path, bundle=bundle, thresholds=thresholds, reps=reps, fio=fio,
        schedule=Schedule(replicas, period_s, per), arrivals=arrivals,
        trace_speed=trace_speed, cutoff_source=cutoff_source,
        validation_rounds=validation_rounds, candidates=tuple(cands), cap=cap)


def _timing(duration_s: float, period_s: float | None, validation_rounds: int,
            n_candidates: int) -> tuple[float, int, float]:
    """The period (default: 3 s, shorter when the duration cannot hold every slice at
    3 s), the test rounds, and the seconds before them (warm-up + validation): the
    duration must hold one warm-up period, the validation rounds (one slice per
    candidate each) and at least one test round (one slice per mode)."""
    slices = 1 + validation_rounds * n_candidates + len(MODES)
    if period_s is None:
        period_s = 3.0 if duration_s >= slices * 3.0 else duration_s / slices
    if not period_s > 0 or not math.isfinite(period_s):
        raise LiveError(f"--duration {duration_s:g} s leaves no period")
    before = period_s * (1 + validation_rounds * n_candidates)
    rounds = (int((duration_s - before) / (len(MODES) * period_s) + 1e-9)
              if duration_s > 0 else 0)
    if rounds < 1:
        val = (f", {validation_rounds} validation round(s) of {n_candidates} slices (one per "
               "candidate operating point; --validation-rounds 0: none)"
               if validation_rounds else "")
        raise LiveError(f"--duration {duration_s:g} s is too short: it needs one warm-up "
                        f"period{val} and one {period_s:g} s slice per mode, at least "
                        f"{slices * period_s:g} s")
    return period_s, rounds, before


def _cap(bundle: Bundle, max_reject_share: float | None) -> float:
    """The run's reject cap: ``--max-reject-share``, else the bundle policy's (0.5
    without one), as the admission applies it (mittd.daemon.devices)."""
    if max_reject_share is not None:
        return float(max_reject_share)
    from mittd.predictor.policy import DecisionPolicy

    try:
        return float(DecisionPolicy.from_dict(bundle.policy).max_reject_share)
    except Exception:
        return 0.5


def _model(model: str | Path | None,
           deadline_us: int | None) -> tuple[Path, Bundle, list[float], int]:
    """The bundle, its thresholds, and the deadline: ``--deadline-us`` or the first one."""
    from mittd.predictor.bundle import load_bundle

    bundle_path = Path(model) if model else default_model()
    if bundle_path is None:
        raise LiveError(f"--model: no model bundle found (no shipped {DEFAULT_BUNDLE} bundle, "
                        f"no out/results/{DEFAULT_BUNDLE}.mittd): pass --model B.mittd")
    if not bundle_path.is_file():
        raise LiveError(f"--model {bundle_path}: no such bundle")
    bundle = load_bundle(bundle_path)  # BundleError: one line, from the caller
    thresholds = bundle.latency_thresholds_us()
    if deadline_us is None:
        deadline_us = max(1, math.floor(thresholds[0]))
    if deadline_us > max(thresholds):
        raise LiveError(f"--deadline-us {deadline_us} lies beyond the model's thresholds "
                        f"{thresholds} µs: mittd would admit every read")
    return bundle_path, bundle, thresholds, deadline_us


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
    writers: list[subprocess.Popen | None] = field(default_factory=list)
    clients: list[Any] = field(default_factory=list)
    embedded: Any = None  # the test modes' admission (the first of ``admissions``)
    admissions: list[Any] = field(default_factory=list)  # one per candidate with a cutoff
    direct: list[bool] = field(default_factory=list)  # O_DIRECT reads, per replica
    policy: dict[str, Any] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    sched: Scheduler | None = None
    sh: Shared | None = None


@contextlib.contextmanager
def _rig(o: _Options) -> Iterator[_Rig]:
    """Replica files, the admission (in-process) or the daemons, fio writers and client
    threads, up and running; on the way out, however it is left (an error, Ctrl-C,
    SIGTERM), all of it stopped and removed."""
    works: dict[Path, Path] = {}
    rig: _Rig | None = None
    try:
        for base in o.bases:
            works[base] = Path(tempfile.mkdtemp(prefix="mittd-live-", dir=base))
        sockdir = Path(tempfile.mkdtemp(prefix="mittd-live-"))
        rig = _Rig(works=works, work=works[o.bases[0]] if o.bases else sockdir,
                   sockdir=sockdir)
        if threading.current_thread() is threading.main_thread():
            def on_term(signum: int, frame: Any) -> None:
                raise _Terminated(128 + signum)
            rig.old_term = signal.signal(signal.SIGTERM, on_term)
        _start_replicas(rig, o)
        _start_clients(rig, o)
        yield rig
    finally:
        if rig is not None:
            _release(rig, o)
        else:
            for w in works.values():
                shutil.rmtree(w, ignore_errors=True)


def _start_replicas(rig: _Rig, o: _Options) -> None:
    """The replica files written (given targets as they are), the admission or a daemon
    serving each, its fio writer (if it has one) paused."""
    from mittd.traces.collect import Target, fill_file
    from mittd.traces.errors import TraceError

    rig.files = [r.path if r.given else rig.works[r.base] / r.path.name  # type: ignore[index]
                 for r in o.reps]
    for i, (r, f) in enumerate(zip(o.reps, rig.files, strict=True)):
        if r.given:
            o.say(f"replica {i}: {f} as it is ({r.medium}, {o.size / MiB:,.0f} MiB read)")
            continue
        o.say(f"writing replica {i}: {f} ({o.size / MiB:,.0f} MiB, {r.medium}) ...")
        try:
            assert o.fio is not None
            fill_file(o.fio, Target(f, "file", o.size, False), r.direct)
        except TraceError as e:
            raise LiveError(str(e)) from None
    if o.path == "grpc":
        _start_daemons(rig, o)
    else:
        _start_embedded(rig, o)
    for i, b in enumerate(o.busy):
        if b <= 0:
            rig.writers.append(None)
            continue
        assert o.fio is not None
        job = rig.work / f"contention{i}.fio"
        fio_jobfile(job, rig.files[i], o.size, o.write_qd, int(o.total_s) + 600,
                    direct=o.reps[i].direct)
        w = spawn([o.fio, str(job), "--eta=never", "--output-format=terse"],
                  rig.work / f"contention{i}.log", signal.SIGKILL)
        rig.writers.append(w)
        with contextlib.suppress(ProcessLookupError):  # paused until the schedule
            w.send_signal(signal.SIGSTOP)
    if o.path == "grpc":
        _wait_for_daemons(rig)
    for i, w in enumerate(rig.writers):
        if w is not None and w.poll() is not None:
            raise LiveError(f"fio (contention on replica {i}) exited: "
                            f"{tail(rig.work / f'contention{i}.log')}")


def _start_embedded(rig: _Rig, o: _Options) -> None:
    """One in-process admission for every replica (alias ``r<i>``), the model loaded once
    per replica (each has its own tracker and engine); with a validation window, one
    such admission per candidate with a cutoff, all built before the clients start (so
    that none is built mid-run), each keeping its own tracker state."""
    from mittd.daemon.embedded import Embedded
    from mittd.daemon.replicas import LocalReplica

    points = ([(c.cutoff, c.max_reject_share) for c in o.candidates if not c.off]
              if o.validation_rounds else [(o.decision_threshold, o.max_reject_share)])
    o.say(f"in-process admission: {o.bundle.version_id}, deadline {o.deadline_us} µs, "
          f"{o.replicas} replicas" + (f", {len(points)} candidate operating points"
                                      if o.validation_rounds else "") + " ...")
    try:
        for cut, cap in points:
            rig.admissions.append(Embedded.from_bundles(
                {f"r{i}": str(o.bundle_path) for i in range(o.replicas)}, engine="auto",
                slo_us=None, decision_threshold=cut, max_reject_share=cap,
                probe_after=o.probe_after))
    except Exception as e:  # DeviceError and kin: one line
        raise LiveError(f"--model {o.bundle_path}: {e}".splitlines()[0]) from None
    rig.embedded = rig.admissions[0]
    for i, f in enumerate(rig.files):
        probe = LocalReplica(f, f"r{i}")  # direct_io auto: what the set's readers will do
        rig.direct.append(probe.direct_io)
        probe.close()
    with contextlib.suppress(Exception):
        p = rig.embedded.policy("r0")
        rig.policy = _policy_dict(p)


def _policy_dict(p: Any) -> dict[str, Any]:
    """The decision policy the run used, as plain data (validation figures left out)."""
    keys = ("mode", "max_reject_share", "hedge_after_us", "reason")
    if isinstance(p, dict):
        return {k: p.get(k) for k in keys if k in p}
    return {k: getattr(p, k) for k in keys if hasattr(p, k)}


def _start_daemons(rig: _Rig, o: _Options) -> None:
    from dataclasses import replace

    from mittd.predictor.policy import DecisionPolicy

    with contextlib.suppress(Exception):  # what each daemon applies (mittd.daemon.devices)
        pol = DecisionPolicy.from_dict(o.bundle.policy)
        if o.max_reject_share is not None:
            pol = replace(pol, max_reject_share=o.max_reject_share)
        rig.policy = _policy_dict(pol)
    rig.ports = [free_port() for _ in range(o.replicas)]
    rig.socks = [rig.sockdir / f"r{i}.sock" for i in range(o.replicas)]
    rig.workers = 2 * o.clients + 4
    rig.direct = [r.direct for r in o.reps]
    for i in range(o.replicas):
        cfg = rig.work / f"replica{i}.toml"
        daemon_config(cfg, rig.socks[i], rig.files[i], o.bundle_path.resolve(), rig.workers,
                      rig.ports[i], o.decision_threshold, direct_io=o.reps[i].direct,
                      max_reject_share=o.max_reject_share, probe_after=o.probe_after)
        rig.daemons.append(spawn(
            [sys.executable, "-m", "mittd.daemon.cli", "serve", "--config", str(cfg),
             "--log-level", "warning", "--grace", "2"],
            rig.work / f"replica{i}.log", signal.SIGTERM))
    o.say(f"starting {o.replicas} daemons ({o.bundle.version_id}, deadline {o.deadline_us} µs, "
          f"{rig.workers} workers each) ...")


def _wait_for_daemons(rig: _Rig) -> None:
    """Every daemon healthy within 60 s."""
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


def _start_clients(rig: _Rig, o: _Options) -> None:
    """The path's backend, the contention schedule and the client threads, running from
    ``sh.t0_ns`` on, in the warm-up mode."""
    from mittd.daemon.bench.live.paths import GrpcBackend, InprocBackend

    backend: Any
    if o.path == "grpc":
        from mittd.daemon.client import Client

        rig.clients = [Client(f"unix:{s}", timeout_s=30.0) for s in rig.socks]
        backend = GrpcBackend(rig.clients, o.deadline_us)
    else:
        backend = InprocBackend(rig.admissions,
                                [(f, f"r{i}") for i, f in enumerate(rig.files)], o.deadline_us)
    sh = rig.sh = Shared(backend=backend, n=o.replicas, blocks=o.size // READ_BYTES,
                         seed=o.seed, arrivals=o.arrivals)
    if o.validation_rounds:  # candidate c asks admission k (the k-th with a cutoff)
        ks = iter(range(len(o.candidates)))
        sh.candidates = [None if c.off else next(ks) for c in o.candidates]
    sh.records = [array("q") for _ in range(o.clients)]
    sh.stats = [{} for _ in range(o.clients)]
    sh.t0_ns = time.perf_counter_ns()
    if any(w is not None for w in rig.writers):
        rig.sched = Scheduler(rig.writers, o.schedule, sh.t0_ns)
        rig.sched.pause_all()
        rig.sched.start()
    rig.threads = [threading.Thread(target=worker, args=(k, sh), name=f"mittd-live-client{k}",
                                    daemon=True) for k in range(o.clients)]
    for t in rig.threads:
        t.start()


def _release(rig: _Rig, o: _Options) -> None:
    """Stops and removes it all, in order: clients, scheduler, fio, client channels or the
    admission, daemons, files; a second Ctrl-C meanwhile is ignored, then the old handlers
    return. Given targets are never removed."""
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
            if w is not None:
                stop_process(w, 10, paused=True)
        for c in rig.clients:
            with contextlib.suppress(Exception):
                c.close()
        for e in rig.admissions:
            with contextlib.suppress(Exception):
                e.close()
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


def _since(sh: Shared, m0: list[int]) -> np.ndarray:
    """The records since the marks ``m0`` (copies: the threads keep appending)."""
    parts = [np.asarray(r[i:], np.int64) for r, i in zip(sh.records, m0, strict=True)]
    a = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return a[: len(a) // REC * REC].reshape(-1, REC)


#: the admission counters summed per mode from the slices' snapshots
ADM_KEYS = ("admitted", "rejected", "probes", "capped", "overruns", "fail_open",
            "beyond_model", "predict_count", "predict_ns")


def _probe(rig: _Rig) -> dict[str, float]:
    """CPU seconds so far (this process, and the daemons on the gRPC path) and the
    admissions' counters (in-process): a slice's figures are the difference of two.
    Summed over every admission: only the slice's own one is asked during a slice."""
    t = os.times()
    out = {"cpu_s": t.user + t.system,
           "daemon_cpu_s": sum(cpu_seconds(d.pid) for d in rig.daemons)}
    for e in rig.admissions:
        for st in e.stats().values():
            for k in ADM_KEYS[:-2]:
                out[k] = out.get(k, 0) + getattr(st, k, 0)
            out["predict_count"] = out.get("predict_count", 0) + st.predict_ns.count
            out["predict_ns"] = out.get("predict_ns", 0) + st.predict_ns.sum
    return out


def _warm_up(o: _Options, sh: Shared) -> tuple[int, float]:
    """The warm-up period (``none``): its reads and their p95, the hedge delay by default."""
    m0 = _marks(sh)
    _wait_until(sh, o.period_s)
    rows = _since(sh, m0)
    rows = rows[rows[:, 0] == WARMUP]
    if len(rows) == 0:
        raise LiveError("no read completed during the warm-up")
    warm_p95 = float(np.percentile(rows[:, 2] / 1e3, 95))
    sh.hedge_after_us = o.hedge_after_us if o.hedge_after_us is not None else warm_p95
    o.say(f"[{o.period_s:5.1f}/{o.total_s:g} s] warm-up (none): {reads_line(rows)}; "
          f"hedge after {sh.hedge_after_us:,.0f} µs")
    return len(rows), warm_p95


def _slice(o: _Options, rig: _Rig, sh: Shared, m: int, t_end: float
           ) -> tuple[float, float, dict[str, float], np.ndarray]:
    """One slice in mode index ``m`` until ``t_end`` seconds into the run: its start and
    end, its CPU and admission counters (deltas), and its reads (those recorded between
    the switches: a read in flight at a switch, or done while the counters are taken,
    is in the mode's rows but not in a slice's count)."""
    p0 = _probe(rig)
    m0 = _marks(sh)
    start = (time.perf_counter_ns() - sh.t0_ns) / 1e9
    sh.mode = m
    _wait_until(sh, t_end)
    end = (time.perf_counter_ns() - sh.t0_ns) / 1e9
    got = _since(sh, m0)
    p1 = _probe(rig)
    return start, end, {k: v - p0.get(k, 0.0) for k, v in p1.items()}, got[got[:, 0] == m]


def _validate(o: _Options, rig: _Rig, sh: Shared) -> dict[str, Any]:
    """The validation window: ``validation_rounds`` rounds of one period per candidate,
    the order rotated every round, then the choice (:func:`choose`), set for the test
    modes (``sh.admission``). Its reads are counted here, apart from the test rows."""
    cands = o.candidates
    n = len(cands)
    seconds = [0.0] * n
    usage: list[dict[str, float]] = [{} for _ in range(n)]
    slices: list[dict[str, Any]] = []
    m_start = _marks(sh)
    t_slice = o.period_s
    for r in range(o.validation_rounds):
        for j in range(n):
            c = (r + j) % n
            start, end, use, got = _slice(o, rig, sh, VALIDATION + c, t_slice + o.period_s)
            t_slice += o.period_s
            seconds[c] += end - start
            for k, v in use.items():
                usage[c][k] = usage[c].get(k, 0.0) + v
            slices.append({"candidate": cands[c].name, "start_s": round(start, 3),
                           "end_s": round(end, 3), "reads": len(got),
                           "cpu_s": round(use["cpu_s"], 3)})
            o.say(f"[{end:5.1f}/{o.total_s:g} s] validation, {cands[c].name}: "
                  f"{reads_line(got)}")
    rows = _since(sh, m_start)  # every validation read, those straddling a switch too
    table: dict[str, dict[str, Any]] = {}
    for c, cand in enumerate(cands):
        rr = rows[rows[:, 0] == VALIDATION + c]
        table[cand.name] = summary(rr[:, 2] / 1e3, rr[:, 5], seconds[c], usage[c])
    name = choose(table)
    k = [c.name for c in cands].index(name)
    sh.admission = sh.candidates[k]  # None: mittd off for the test part
    chosen, off = cands[k], table[cands[0].name]
    base = off["p99_us"]
    for row in table.values():
        row["p99_vs_off"] = (row["p99_us"] / base - 1.0
                             if row["p99_us"] is not None and base else None)
    if chosen.off:
        verdict = OFF_TEXT
    else:
        verdict = (f"mittd reads at {chosen.name}"
                   + ("" if chosen.max_reject_share == 1.0 else
                      f" (cap {chosen.max_reject_share:.0%})")
                   + f" for the test part: validation p99 {table[name]['p99_us']:,.0f} µs "
                   f"vs {base:,.0f} µs without mittd ({table[name]['p99_vs_off']:+.1%})")
    o.say(f"validation: {verdict}")
    return {
        "rounds": o.validation_rounds,
        "slices_per_round": n,
        "seconds": round(sum(seconds), 3),
        "reads": int(sum(r["reads"] for r in table.values())),
        "margin": MARGIN,
        "rule": RULE,
        "candidates": [{"name": c.name, "cutoff": c.cutoff,
                        "max_reject_share": c.max_reject_share, **table[c.name]}
                       for c in cands],
        "choice": name,
        "off": chosen.off,
        "chosen_cutoff": chosen.cutoff,
        "chosen_max_reject_share": chosen.max_reject_share,
        "verdict": verdict,
        "slices": slices,
    }


def _slices(o: _Options, rig: _Rig, sh: Shared
            ) -> tuple[list[dict[str, Any]], dict[int, float], dict[int, dict[str, float]]]:
    """The test rounds of one period per mode (after the warm-up and the validation
    window), the order rotated every round: the slices, the seconds each mode ran, and
    each mode's CPU and admission counters (slice deltas)."""
    slices: list[dict[str, Any]] = []
    seconds = dict.fromkeys(range(len(MODES)), 0.0)
    usage: dict[int, dict[str, float]] = {m: {} for m in range(len(MODES))}
    t_slice = o.period_s * (1 + o.validation_slices)
    for r in range(o.rounds):
        for j in range(len(MODES)):
            m = (r + j) % len(MODES)
            start, end, use, got = _slice(o, rig, sh, m, t_slice + o.period_s)
            t_slice += o.period_s
            seconds[m] += end - start
            for k, v in use.items():
                usage[m][k] = usage[m].get(k, 0.0) + v
            slices.append({"mode": MODES[m], "start_s": round(start, 3),
                           "end_s": round(end, 3), "reads": len(got),
                           "cpu_s": round(use["cpu_s"], 3)})
            o.say(f"[{end:5.1f}/{o.total_s:g} s] {MODES[m]:<5}: {reads_line(got)}")
    return slices, seconds, usage


def _stop_clients(rig: _Rig, sh: Shared) -> tuple[dict[int, dict[str, int]], np.ndarray]:
    """The client threads stopped: their replica-set counters by mode, and their records."""
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
    return stats, records_array(sh.records)


def _contention(o: _Options) -> str:
    if not o.schedule.any_busy:
        return "none"
    on = [f"replica {i}: {b * o.period_s:.3g} s" for i, b in enumerate(o.busy) if b > 0]
    off = [str(i) for i, b in enumerate(o.busy) if b <= 0]
    return (f"1 MiB writes (QD {o.write_qd}) for {', '.join(on)} of every {o.period_s:g} s, "
            f"staggered by {o.period_s / o.replicas:.3g} s"
            + (f"; never on replica {', '.join(off)}" if off else ""))


def _measure(o: _Options, rig: _Rig) -> dict[str, Any]:
    """Warm-up, then the rounds of slices, then the counters: the result."""
    sh = rig.sh
    assert sh is not None  # _rig started the clients
    contention = _contention(o)
    load = (f"{o.clients} trace-driven thread(s) replaying {o.arrivals.source} "
            f"({o.arrivals.reads_per_s:,.0f} reads/s)" if o.arrivals is not None
            else f"{o.clients} closed-loop client(s)")
    val = (f"{o.validation_rounds} validation round(s) of {len(o.candidates)} slices "
           f"(candidates: {', '.join(c.name for c in o.candidates)}), then "
           if o.validation_rounds else "")
    o.say(f"{load}, {o.path} path, {o.total_s:g} s: warm-up {o.period_s:g} s, then {val}"
          f"{o.rounds} round(s) of {len(MODES)} slices of {o.period_s:g} s; contention: "
          f"{contention}")
    warm_reads, warm_p95 = _warm_up(o, sh)
    validation = _validate(o, rig, sh) if o.validation_rounds else None
    cutoff, cap, source = o.decision_threshold, o.max_reject_share, o.cutoff_source
    if validation is not None:
        cutoff, cap = validation["chosen_cutoff"], validation["chosen_max_reject_share"]
        source = ("mittd off: chosen on the validation window" if validation["off"] else
                  "chosen on the validation window")
        if sh.admission is not None:
            with contextlib.suppress(Exception):
                rig.policy = _policy_dict(rig.admissions[sh.admission].policy("r0"))
    elif cutoff is None:
        cutoff = o.bundle.decision_thresholds()[0]
    slices, seconds, usage = _slices(o, rig, sh)
    stats, rec = _stop_clients(rig, sh)
    daemon_stats = [scrape(p) for p in rig.ports]
    media = []
    for i, r in enumerate(o.reps):
        direct = rig.direct[i] if i < len(rig.direct) else r.direct
        media.append(r.medium if direct == r.direct else
                     f"{r.fs}, {'O_DIRECT' if direct else 'buffered'}")
    result: dict[str, Any] = {
        "path": o.path,
        "model": f"{o.bundle.version_id} ({o.bundle_path})",
        "model_thresholds_us": list(o.thresholds),
        "deadline_us": o.deadline_us,
        "decision_threshold": cutoff,  # None: mittd chose off on the validation window
        "decision_threshold_source": source,
        "max_reject_share": (cap if cap is not None or (validation and validation["off"])
                             else rig.policy.get("max_reject_share")),
        "mittd_off": bool(validation and validation["off"]),
        "validation": validation,
        "probe_after": o.probe_after,
        "policy": rig.policy,
        "replicas": o.replicas,
        "replica_paths": [str(f) for f in rig.files],
        "replica_media": media,
        "direct_io": list(rig.direct),
        "ram_replicas": [i for i, r in enumerate(o.reps) if r.ram],
        "targets_given": any(r.given for r in o.reps),
        "size_bytes": o.size,
        "clients": o.clients,
        "load": "trace" if o.arrivals is not None else "closed-loop",
        "trace": None if o.arrivals is None else {
            "source": o.arrivals.source, "reads": len(o.arrivals.t_ns),
            "span_s": o.arrivals.span_ns / 1e9, "speed": o.trace_speed,
            "reads_per_s": o.arrivals.reads_per_s},
        "read_bytes": READ_BYTES,
        "directory": ", ".join(str(b) for b in o.bases) or "(targets)",
        "cpus": os.cpu_count(),
        "duration_s": o.total_s,
        "period_s": o.period_s,
        "busy": list(o.busy),
        "write_qd": o.write_qd,
        "busy_windows_s": [list(w) for w in o.schedule.windows()],
        "contention": contention,
        "contention_switches": rig.sched.switches if rig.sched else 0,
        "warmup_reads": warm_reads,
        "warmup_p95_us": warm_p95,
        "hedge_after_us": sh.hedge_after_us,
        "hedge_after_source": ("--hedge-after-us" if o.hedge_after_us is not None
                               else "p95 of the warm-up (none)"),
        "modes": mode_rows(rec, stats, seconds, o.schedule, usage),
        "slices": slices,
        "daemons": daemon_stats,
        "cdf_quantiles": QS.round(7).tolist(),
    }
    result["comparison"] = comparison(result["modes"])
    result["targets"] = targets(result)
    result["files"] = []
    return result


def _write_files(o: _Options, result: dict[str, Any]) -> None:
    """``live.json``, ``live.txt`` and ``live.png`` in ``out_dir``, listed in ``files``."""
    if o.out_dir is None:
        return
    import json

    out = Path(o.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["files"] = [str(out / "live.json"), str(out / "live.txt")]
    note = plot(result, out / "live.png")
    if note:
        o.say(note)
    else:
        result["files"].append(str(out / "live.png"))
    write_text(out / "live.json", json.dumps(result, indent=1))
    write_text(out / "live.txt", render(result) + "\n")


# -- the run -------------------------------------------------------------------------------


def run_live(duration_s: float = 60.0, replicas: int | None = None, size: int | None = None,
             clients: int | None = None, model: str | Path | None = None,
             directory: str | Path | Sequence[str | Path] | None = None,
             targets: Sequence[str | Path] = (), period_s: float | None = None,
             busy: float | str | Sequence[float] | None = None, write_qd: int = 4,
             deadline_us: int | None = None, hedge_after_us: float | None = None,
             decision_threshold: float | None = None, max_reject_share: float | None = None,
             probe_after: int = DEFAULT_PROBE_AFTER, path: str = "inproc",
             trace: str | Path | None = None, trace_speed: float = 1.0,
             allow_block_device: bool = False, write_targets: bool = False,
             seed: int = 0, keep_files: bool = False, out_dir: str | Path | None = None,
             quiet: bool = False, say: Callable[[str], None] | None = None,
             validation_rounds: int | None = None,
             validation_cutoffs: Sequence[float] | None = None) -> dict[str, Any]:
    """Run the live check (see the package docstring); returns plain, JSON-able data.

    ``path``: ``"inproc"`` (the decision in this process) or ``"grpc"`` (one daemon
    per replica). ``replicas`` None: one per ``targets`` entry, else 2. ``size``
    None: 1 GiB per created file, the smallest target's size with ``targets``.
    ``busy``: a fraction, a comma list or a sequence, one per replica (None: 1/3,
    0 for targets). ``clients`` None: 2 closed-loop threads, 4 with ``trace``.
    ``period_s`` None: 3 s, or a fifth of ``duration_s`` when that is shorter than
    15 s (a warm-up and one slice per mode). ``out_dir``: also write ``live.json``,
    ``live.txt`` (the table) and ``live.png`` (with matplotlib) there, listed in the
    result's ``files``. Progress goes to ``say`` (default: stderr), nowhere when
    ``quiet``.

    ``validation_rounds``: rounds of the validation window on which mittd's operating
    point is chosen before the test slices (see
    :mod:`~mittd.daemon.bench.live.validation`); None: 2 in-process, 0 on gRPC (which
    has none); 0: the fixed operating point (``decision_threshold``, default 0.97).
    ``validation_cutoffs``: the P(slow) cutoffs on trial (default 0.5, 0.8, 0.9, 0.97,
    0.99, plus ``decision_threshold`` when given), besides ``off`` and the two
    strictest with the cap lifted. The duration must hold the warm-up, the validation
    rounds and at least one test round.

    Raises :class:`LiveError` (one line, naming the option) for bad options, a missing
    fio, too little space, a refused target, or an admission or daemon that fails to
    start.
    """
    o = _options(duration_s=duration_s, replicas=replicas, size=size, clients=clients,
                 model=model, directory=directory, targets=targets, period_s=period_s,
                 busy=busy, write_qd=write_qd, deadline_us=deadline_us,
                 hedge_after_us=hedge_after_us, decision_threshold=decision_threshold,
                 max_reject_share=max_reject_share, probe_after=probe_after, path=path,
                 trace=trace, trace_speed=trace_speed, allow_block_device=allow_block_device,
                 write_targets=write_targets, seed=seed, keep_files=keep_files,
                 out_dir=out_dir, quiet=quiet, say=say, validation_rounds=validation_rounds,
                 validation_cutoffs=validation_cutoffs)
    with _rig(o) as rig:
        result = _measure(o, rig)
        _write_files(o, result)
        return result
