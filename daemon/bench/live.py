"""``mittd bench live``: real IO, real tails — mittd vs. no mittd vs. hedging.

What runs
---------
* **Replicas**: ``--replicas`` files (default 2 × 1 GiB) on the local disk, each
  written in full first (real blocks, not fallocated holes, so reads reach the
  device) and each served by **its own daemon** (``mittd serve`` in its own
  process, Unix socket, ``direct_io = true``, the model of ``--model``). One
  daemon per replica is how replicas are deployed (one per storage node); it
  also keeps replicas uncoupled: with one daemon serving every device, the slow
  replica's reads would hold the shared worker pool and the GIL that the fast
  replica's reads need, which would penalise exactly the failover being
  measured. The price on a 2-core machine is one more Python process; the
  client, the daemons and fio all share the same cores in every mode alike.
* **Contention**: one fio process per replica writes 1 MiB random blocks with
  ``direct=1`` (libaio, ``--write-qd`` deep) into that replica's file. A
  scheduler thread switches each writer on and off with SIGCONT/SIGSTOP (fio
  runs its job as a thread, so one signal pauses the whole job): within every
  ``--period`` seconds replica *i* is under writes for ``--busy`` of the period,
  starting at ``i × period / replicas`` — the replicas are slow at different
  times, with quiet gaps in between. ``--busy 0`` turns contention off.
* **One disk or several**: with every file on one disk (the default), the
  writers share the device with every replica, so how independent the replicas
  are is the disk's business: on a virtio disk the write bursts slow reads of
  every file about alike, and there is then no fast replica to fail over to
  (the per-phase table shows it: "primary busy" and "other busy" look the
  same). ``--dir A,B`` puts replica *i* in the (*i* mod n)-th directory: one
  directory per disk makes the replicas independent, as in a deployment.
* **Client**: ``--clients`` threads (default 2: on a 2-core machine more
  threads mostly measure the CPU queue) in this process, closed loop: each
  issues a 4 KiB random read as soon as its previous one returned, through
  :class:`~mittd.daemon.client.ReplicaSet` in proxy mode (the daemon decides and
  does the O_DIRECT read). Every read picks its primary replica at random (a
  key's primary, so load is balanced in every mode); the others follow in
  ring order.
* **Model**: by default the shipped Heimdall bundle (see :func:`default_model`
  for why that one), trained on the shipped fio trace; a model trained on the
  daemon's own view of *this* workload would do better (the daemon times its
  reads in Python, under the same CPU load as everything else, so its latency
  features run higher than fio's were). ``--decision-threshold`` raises the
  P(slow) cut-off of every daemon.
* **Modes** (same client, same replicas, same contention):

  - ``mittd``: deadline = ``--deadline-us`` (default: the model's trained
    latency threshold); EBUSY → the next replica; the last one asked is never
    rejected (ReplicaSet's rule).
  - ``none``: the deadline lies beyond the model, so the daemon admits every
    read without predicting: every read is served by its primary. Same RPC
    path, no admission control.
  - ``hedge``: Dean & Barroso hedged requests: the read goes to the primary; if
    no answer came after ``--hedge-after-us`` (default: the p95 of a warm-up
    period in ``none`` mode), a duplicate goes to the next replica; first
    answer wins, the loser still costs its device IO.

  The run starts with one warm-up period (``none`` mode: daemons, caches,
  hedge threshold), then interleaves the modes in slices of exactly one
  contention period each, rotating the order every round (``mittd none hedge``,
  ``none hedge mittd``, …), so that every mode sees every contention phase
  equally often and a noisy shared machine hits all modes alike.

Reported per mode: reads, reads/s, mean and p50/p90/p95/p99/p99.9/max of the
client-observed latency (from the call into ``ReplicaSet.read`` to its return,
failovers and hedges included), failovers (EBUSY → next replica), hedges,
extra RPCs and extra device IOs (a rejected read costs an RPC but no device
IO; a hedge costs both), the share of reads served off their primary, and
p50/p99 by the contention phase at issue (the read's primary under writes,
another replica under writes, none). Each daemon's own counters (admitted,
EBUSY, prediction overruns, mean prediction time, mean device read latency and
the share of device reads over 200 µs) are scraped from its Prometheus endpoint
at the end. The result is plain data (:func:`run_live`), rendered by
:func:`render` and :func:`plot`, so ``mittd demo`` can run a short version
(e.g. ``run_live(duration_s=20, size=64 << 20)``).

Clean-up: daemons and fio run in their own sessions (a terminal's Ctrl-C
reaches only this process, which then stops them in order: clients, fio,
daemons) and with a parent-death signal (nothing outlives a killed parent);
SIGTERM is handled like Ctrl-C; the files are removed unless ``keep_files``.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MODES", "LiveError", "default_model", "plot", "render", "run_live"]

MODES = ("mittd", "none", "hedge")
WARMUP = len(MODES)  # mode index of the warm-up period
_STOP = -1
READ_BYTES = 4096
MiB = 1 << 20
# quantile points kept for the CDF (JSON and PNG): the body evenly, the tail in log steps
_QS = np.unique(np.concatenate([np.linspace(0.0, 1.0, 401), 1.0 - np.logspace(-5, -2, 61)]))
PERCENTILES = (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99_9", 99.9))


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
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
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


# -- contention schedule -----------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Replica ``i`` is under writes while ``(t - i·period/n) mod period < busy·period``."""

    replicas: int
    period_s: float
    busy: float

    def busy_at(self, t_s: float) -> list[bool]:
        on = self.busy * self.period_s
        return [((t_s - i * self.period_s / self.replicas) % self.period_s) < on
                for i in range(self.replicas)]

    def busy_matrix(self, t_s: np.ndarray) -> np.ndarray:
        """``[reads, replicas]`` bool: was replica j under writes at each time."""
        shift = np.arange(self.replicas) * self.period_s / self.replicas
        return np.mod(t_s[:, None] - shift[None, :], self.period_s) < self.busy * self.period_s

    def windows(self) -> list[tuple[float, float]]:
        """Each replica's busy window within one period, seconds from the period start."""
        on = self.busy * self.period_s
        return [(i * self.period_s / self.replicas, i * self.period_s / self.replicas + on)
                for i in range(self.replicas)]


# -- child processes ---------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _pdeathsig(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that has the child killed with ``sig`` when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork
    except (OSError, AttributeError):
        return None

    def set_it() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return set_it


def _spawn(cmd: Sequence[str], log: Path, death_signal: int) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                start_new_session=True, preexec_fn=_pdeathsig(death_signal))


def _stop_process(proc: subprocess.Popen, timeout_s: float, paused: bool = False) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if paused:
            proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


def _tail(log: Path, n: int = 400) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errs = [ln for ln in lines if "error" in ln.lower()] or lines
    return errs[-1][:n] if errs else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _daemon_config(path: Path, sock: Path, dev: Path, bundle: Path, workers: int,
                   metrics_port: int, decision_threshold: float | None) -> None:
    cutoff = "" if decision_threshold is None else f"decision_threshold = {decision_threshold}\n"
    path.write_text(
        f'[server]\nunix_socket = "{sock}"\nmetrics = "127.0.0.1:{metrics_port}"\n'
        f"workers = {workers}\n\n"
        f'[devices.r]\npath = "{dev}"\nmodel = "{bundle}"\nengine = "auto"\n'
        f"direct_io = true\n{cutoff}")


def _fio_jobfile(path: Path, dev: Path, size: int, qd: int, runtime_s: int) -> None:
    path.write_text(
        "[global]\nthread=1\nioengine=libaio\ndirect=1\nfallocate=none\n"
        "randrepeat=0\nnorandommap=1\n\n"
        f"[contention]\nfilename={str(dev).replace(':', chr(92) + ':')}\nsize={size}\n"
        f"rw=randwrite\nbs=1m\niodepth={qd}\ntime_based=1\nruntime={runtime_s}s\n")


def _scrape(port: int) -> dict[str, float | None]:
    """The daemon's counters that matter here, from its Prometheus endpoint."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "mittd_decisions_total":
                out[s.labels["outcome"]] = s.value
            elif s.name == "mittd_prediction_overruns_total":
                out["overruns"] = s.value
            elif s.name == "mittd_device_io_latency_seconds_bucket" and s.labels["le"] == "0.0002":
                out["device_le_200us"] = s.value
            elif s.name in ("mittd_prediction_seconds_sum", "mittd_prediction_seconds_count",
                            "mittd_device_io_latency_seconds_sum",
                            "mittd_device_io_latency_seconds_count"):
                out[s.name.removeprefix("mittd_")] = s.value
    res = {k: out.get(k, 0.0) for k in ("admit", "ebusy", "fail_open", "beyond_model",
                                        "overruns")}
    n = out.get("prediction_seconds_count", 0.0)
    res["predict_mean_us"] = out.get("prediction_seconds_sum", 0.0) / n * 1e6 if n else None
    n = out.get("device_io_latency_seconds_count", 0.0)
    res["device_reads"] = n
    res["device_over_200us_fraction"] = 1.0 - out.get("device_le_200us", 0.0) / n if n else None
    res["device_mean_us"] = (out.get("device_io_latency_seconds_sum", 0.0) / n * 1e6
                             if n else None)
    return res


# -- the client ---------------------------------------------------------------------------


@dataclass
class _Shared:
    replicas: list[tuple[Any, str]]
    blocks: int
    deadline_us: int
    seed: int
    t0_ns: int = 0
    mode: int = WARMUP
    hedge_after_us: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    records: list[list[tuple[int, int, int, int, int, int]]] = field(default_factory=list)
    stats: list[dict[int, dict[str, int]]] = field(default_factory=list)


def _worker(k: int, sh: _Shared) -> None:
    """One closed-loop client thread: read, record, repeat, until the mode is _STOP."""
    from mittd.daemon.client import MAX_DEADLINE_US, ReplicaSet

    n = len(sh.replicas)
    rng = np.random.default_rng([sh.seed, k])
    out = sh.records[k]
    sets: dict[int, list[ReplicaSet]] = {}
    prim = off = np.zeros(0, np.int64)
    j = 0
    try:
        while not sh.stop.is_set():
            m = sh.mode
            if m == _STOP:
                break
            rsets = sets.get(m)
            if rsets is None:
                hedge = sh.hedge_after_us if m < WARMUP and MODES[m] == "hedge" else None
                rsets = sets[m] = [
                    ReplicaSet([sh.replicas[(p + i) % n] for i in range(n)],
                               hedge_after_us=hedge) for p in range(n)]
            if j >= len(prim):
                prim = rng.integers(0, n, 4096)
                off = rng.integers(0, sh.blocks, 4096) * READ_BYTES
                j = 0
            p, o = int(prim[j]), int(off[j])
            j += 1
            dl = sh.deadline_us if m < WARMUP and MODES[m] == "mittd" else MAX_DEADLINE_US
            t0 = time.perf_counter_ns()
            r = rsets[p].read(o, READ_BYTES, dl)
            t1 = time.perf_counter_ns()
            out.append((m, t0 - sh.t0_ns, t1 - t0, p, (p + r.replica) % n, r.attempts))
    except Exception as e:
        if not sh.stop.is_set():
            sh.errors.append(f"client read failed: {type(e).__name__}: {e}".splitlines()[0])
            sh.stop.set()
    finally:
        sh.stats[k] = {m: _sum_stats(s.stats() for s in rs) for m, rs in sets.items()}
        for rs in sets.values():
            for s in rs:
                s.close()


def _sum_stats(stats: Any) -> dict[str, int]:
    tot: dict[str, int] = {}
    for st in stats:
        for key, v in st.items():
            tot[key] = tot.get(key, 0) + v
    return tot


class _Scheduler(threading.Thread):
    """Pauses and resumes each replica's fio writer on the schedule (SIGSTOP/SIGCONT)."""

    def __init__(self, procs: Sequence[subprocess.Popen], schedule: Schedule,
                 t0_ns: int) -> None:
        super().__init__(name="mittd-live-contention", daemon=True)
        self.procs = list(procs)
        self.schedule = schedule
        self.t0_ns = t0_ns
        self.running = [True] * len(self.procs)  # fio starts running
        self.halt = threading.Event()
        self.switches = 0

    def _set(self, i: int, on: bool) -> None:
        if self.running[i] == on or self.procs[i].poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.procs[i].send_signal(signal.SIGCONT if on else signal.SIGSTOP)
        self.running[i] = on
        self.switches += 1

    def pause_all(self) -> None:
        for i in range(len(self.procs)):
            self._set(i, False)

    def run(self) -> None:
        while not self.halt.is_set():
            t = (time.perf_counter_ns() - self.t0_ns) / 1e9
            for i, on in enumerate(self.schedule.busy_at(t)):
                self._set(i, on)
            self.halt.wait(0.005)


# -- statistics ----------------------------------------------------------------------------


def _summary(lat_us: np.ndarray) -> dict[str, float]:
    if len(lat_us) == 0:
        return {"mean_us": math.nan, **{f"{k}_us": math.nan for k, _ in PERCENTILES},
                "max_us": math.nan}
    out = {"mean_us": float(lat_us.mean())}
    for name, q in PERCENTILES:
        out[f"{name}_us"] = float(np.percentile(lat_us, q))
    out["max_us"] = float(lat_us.max())
    return out


def _p99(x: np.ndarray) -> float | None:
    return float(np.percentile(x, 99)) if len(x) >= 100 else None


def _mode_rows(rec: np.ndarray, stats: dict[int, dict[str, int]], seconds: dict[int, float],
               schedule: Schedule) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for m, name in enumerate(MODES):
        r = rec[rec[:, 0] == m]
        lat = r[:, 2] / 1e3
        st = stats.get(m, {})
        reads = len(r)
        busy = (schedule.busy_matrix(r[:, 1] / 1e9) if schedule.busy > 0 and reads
                else np.zeros((reads, schedule.replicas), bool))
        prim_busy = busy[np.arange(reads), r[:, 3]] if reads else np.zeros(0, bool)
        any_busy = busy.any(axis=1)
        phases = {"primary_busy": prim_busy, "other_busy": any_busy & ~prim_busy,
                  "all_quiet": ~any_busy}
        fo = st.get("ebusy_failovers", 0) + st.get("unavailable_failovers", 0)
        hedges, fallbacks = st.get("hedges", 0), st.get("fallbacks", 0)
        extra_rpcs = fo + hedges + fallbacks
        extra_ios = hedges + fallbacks  # a rejected read does no device IO
        secs = seconds.get(m, 0.0)
        rows[name] = {
            "reads": reads,
            "seconds": secs,
            "reads_per_s": reads / secs if secs else 0.0,
            **_summary(lat),
            "failovers": fo,
            "failover_rate": fo / reads if reads else 0.0,
            "hedges": hedges,
            "fallbacks": fallbacks,
            "extra_rpcs": extra_rpcs,
            "extra_rpc_fraction": extra_rpcs / reads if reads else 0.0,
            "extra_device_ios": extra_ios,
            "extra_io_fraction": extra_ios / reads if reads else 0.0,
            "off_primary_fraction": float((r[:, 4] != r[:, 3]).mean()) if reads else 0.0,
            "phases": {k: {"reads": int(v.sum()),
                           "p50_us": float(np.median(lat[v])) if v.any() else None,
                           "p99_us": _p99(lat[v])} for k, v in phases.items()},
            "cdf_us": (np.quantile(lat, _QS).round(2).tolist() if reads else []),
        }
    return rows


def _reads_line(rows: list[tuple[int, int, int, int, int, int]]) -> str:
    if not rows:
        return "0 reads"
    a = np.asarray(rows, np.int64)
    lat = a[:, 2] / 1e3
    fo = int((a[:, 5] > 1).sum())
    return (f"{len(a):,} reads, p50 {np.percentile(lat, 50):,.0f} µs, "
            f"p99 {np.percentile(lat, 99):,.0f} µs, >1 RPC {fo / len(a):.1%}")


# -- the run -------------------------------------------------------------------------------


def _silent(_msg: str) -> None:
    pass


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_live(duration_s: float = 60.0, replicas: int = 2, size: int = 1 << 30,
             clients: int = 2, model: str | Path | None = None,
             directory: str | Path | Sequence[str | Path] | None = None,
             period_s: float | None = None, busy: float = 1 / 3,
             write_qd: int = 4, deadline_us: int | None = None,
             hedge_after_us: float | None = None, decision_threshold: float | None = None,
             seed: int = 0, keep_files: bool = False, out_dir: str | Path | None = None,
             quiet: bool = False, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the live check (see the module docstring); returns plain, JSON-able data.

    ``period_s`` None: 3 s, or a quarter of ``duration_s`` when that is shorter
    than 12 s (a warm-up and one slice per mode). ``out_dir``: also write
    ``live.json``, ``live.txt`` (the table) and ``live.png`` (with matplotlib)
    there, listed in the result's ``files``. Progress goes to ``say`` (default:
    stderr), nowhere when ``quiet``.

    Raises :class:`LiveError` (one line) for bad options, a missing fio, a file
    system refusing O_DIRECT, too little space, or a daemon that fails to start.
    """
    from mittd.daemon.client import daemon_healthy
    from mittd.predictor.bundle import load_bundle
    from mittd.traces.collect import direct_io_error

    # -- options ---------------------------------------------------------------
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
    fio = shutil.which("fio")
    if fio is None:
        raise LiveError("fio not found on PATH: install it (Debian/Ubuntu: apt-get install fio)")
    schedule = Schedule(replicas, period_s, busy)
    total_s = period_s * (1 + rounds * len(MODES))

    # -- resources, all released in the finally below ----------------------------
    works: dict[Path, Path] = {}
    for base in dict.fromkeys(bases):
        works[base] = Path(tempfile.mkdtemp(prefix="mittd-live-", dir=base))
    work = works[bases[0]]  # configs and logs
    sockdir = Path(tempfile.mkdtemp(prefix="mittd-live-"))  # short path for Unix sockets
    daemons: list[subprocess.Popen] = []
    writers: list[subprocess.Popen] = []
    clients_: list[Any] = []
    threads: list[threading.Thread] = []
    sched: _Scheduler | None = None
    sh: _Shared | None = None
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum: int, frame: Any) -> None:
            raise _Terminated(128 + signum)
        old_term = signal.signal(signal.SIGTERM, on_term)
    result: dict[str, Any] = {}
    try:
        from mittd.traces.collect import Target, fill_file
        from mittd.traces.errors import TraceError

        files = [works[placement[i]] / f"replica{i}.img" for i in range(replicas)]
        for i, f in enumerate(files):
            say(f"writing replica {i}: {f} ({size / MiB:,.0f} MiB, direct IO) ...")
            try:
                fill_file(fio, Target(f, "file", size, False), True)
            except TraceError as e:
                raise LiveError(str(e)) from None
        ports = [_free_port() for _ in range(replicas)]
        socks = [sockdir / f"r{i}.sock" for i in range(replicas)]
        workers = 2 * clients + 4
        for i in range(replicas):
            cfg = work / f"replica{i}.toml"
            _daemon_config(cfg, socks[i], files[i], bundle_path.resolve(), workers, ports[i],
                           decision_threshold)
            daemons.append(_spawn(
                [sys.executable, "-m", "mittd.daemon.cli", "serve", "--config", str(cfg),
                 "--log-level", "warning", "--grace", "2"],
                work / f"replica{i}.log", signal.SIGTERM))
        if busy > 0:
            for i in range(replicas):
                job = work / f"contention{i}.fio"
                _fio_jobfile(job, files[i], size, write_qd, int(total_s) + 600)
                writers.append(_spawn([fio, str(job), "--eta=never", "--output-format=terse"],
                                      work / f"contention{i}.log", signal.SIGKILL))
                with contextlib.suppress(ProcessLookupError):  # paused until the schedule
                    writers[-1].send_signal(signal.SIGSTOP)
        say(f"starting {replicas} daemons ({bundle.version_id}, deadline {deadline_us} µs, "
            f"{workers} workers each) ...")
        deadline = time.monotonic() + 60
        for i, proc in enumerate(daemons):
            while True:
                if proc.poll() is not None:
                    raise LiveError(f"the daemon of replica {i} exited ({proc.returncode}): "
                                    f"{_tail(work / f'replica{i}.log')}")
                if socks[i].exists() and daemon_healthy(f"unix:{socks[i]}"):
                    break
                if time.monotonic() > deadline:
                    raise LiveError(f"the daemon of replica {i} did not come up within 60 s")
                time.sleep(0.1)
        for i, w in enumerate(writers):
            if w.poll() is not None:
                raise LiveError(f"fio (contention on replica {i}) exited: "
                                f"{_tail(work / f'contention{i}.log')}")

        from mittd.daemon.client import Client

        clients_ = [Client(f"unix:{s}", timeout_s=30.0) for s in socks]
        sh = _Shared(replicas=[(c, "r") for c in clients_], blocks=size // READ_BYTES,
                     deadline_us=deadline_us, seed=seed)
        sh.records = [[] for _ in range(clients)]
        sh.stats = [{} for _ in range(clients)]
        sh.t0_ns = time.perf_counter_ns()
        if writers:
            sched = _Scheduler(writers, schedule, sh.t0_ns)
            sched.pause_all()
            sched.start()
        threads = [threading.Thread(target=_worker, args=(k, sh), name=f"mittd-live-client{k}",
                                    daemon=True) for k in range(clients)]
        for t in threads:
            t.start()

        def wait_until(t_s: float) -> None:
            while not sh.stop.is_set():
                left = t_s - (time.perf_counter_ns() - sh.t0_ns) / 1e9
                if left <= 0:
                    return
                sh.stop.wait(min(left, 0.1))
            raise LiveError(sh.errors[0] if sh.errors else "the clients stopped")

        def marks() -> list[int]:
            return [len(r) for r in sh.records]

        def since(m0: list[int]) -> list[tuple[int, int, int, int, int, int]]:
            return [x for r, i in zip(sh.records, m0, strict=True) for x in r[i:]]

        contention = (f"replica i under 1 MiB direct writes (QD {write_qd}) for "
                      f"{busy * period_s:g} s of every {period_s:g} s, staggered by "
                      f"{period_s / replicas:g} s" if busy > 0 else "none")
        say(f"{clients} closed-loop client(s), {total_s:g} s: warm-up {period_s:g} s, then "
            f"{rounds} round(s) of {len(MODES)} slices of {period_s:g} s; contention: "
            f"{contention}")
        slices: list[dict[str, Any]] = []
        m0 = marks()
        wait_until(period_s)
        warm_rows = [x for x in since(m0) if x[0] == WARMUP]
        warm = np.asarray([x[2] for x in warm_rows], np.float64) / 1e3
        if len(warm) == 0:
            raise LiveError("no read completed during the warm-up")
        warm_p95 = float(np.percentile(warm, 95))
        sh.hedge_after_us = hedge_after_us if hedge_after_us is not None else warm_p95
        say(f"[{period_s:5.1f}/{total_s:g} s] warm-up (none): {_reads_line(warm_rows)}; "
            f"hedge after {sh.hedge_after_us:,.0f} µs")
        seconds = dict.fromkeys(range(len(MODES)), 0.0)
        t_slice = period_s
        for r in range(rounds):
            for j in range(len(MODES)):
                m = (r + j) % len(MODES)
                m0 = marks()
                start = (time.perf_counter_ns() - sh.t0_ns) / 1e9
                sh.mode = m
                wait_until(t_slice + period_s)
                end = (time.perf_counter_ns() - sh.t0_ns) / 1e9
                t_slice += period_s
                seconds[m] += end - start
                got = [x for x in since(m0) if x[0] == m]
                slices.append({"mode": MODES[m], "start_s": round(start, 3),
                               "end_s": round(end, 3), "reads": len(got)})
                say(f"[{end:5.1f}/{total_s:g} s] {MODES[m]:<5}: {_reads_line(got)}")
        sh.mode = _STOP
        sh.stop.set()
        for t in threads:
            t.join(30)
        if sh.errors:
            raise LiveError(sh.errors[0])
        stats: dict[int, dict[str, int]] = {}
        for per_thread in sh.stats:
            for m, st in per_thread.items():
                stats[m] = _sum_stats([stats.get(m, {}), st])
        rec = np.asarray([x for r in sh.records for x in r], np.int64).reshape(-1, 6)
        daemon_stats = [_scrape(p) for p in ports]
        result = {
            "model": f"{bundle.version_id} ({bundle_path})",
            "model_thresholds_us": list(thresholds),
            "deadline_us": deadline_us,
            "decision_threshold": (decision_threshold if decision_threshold is not None
                                   else bundle.decision_thresholds()[0]),
            "replicas": replicas,
            "size_bytes": size,
            "clients": clients,
            "read_bytes": READ_BYTES,
            "directory": ", ".join(str(b) for b in dict.fromkeys(bases)),
            "cpus": os.cpu_count(),
            "duration_s": total_s,
            "period_s": period_s,
            "busy": busy,
            "write_qd": write_qd,
            "busy_windows_s": [list(w) for w in schedule.windows()] if busy > 0 else [],
            "contention": contention,
            "contention_switches": sched.switches if sched else 0,
            "warmup_reads": len(warm),
            "warmup_p95_us": warm_p95,
            "hedge_after_us": sh.hedge_after_us,
            "hedge_after_source": ("--hedge-after-us" if hedge_after_us is not None
                                   else "p95 of the warm-up (none)"),
            "modes": _mode_rows(rec, stats, seconds, schedule),
            "slices": slices,
            "daemons": daemon_stats,
            "cdf_quantiles": _QS.round(7).tolist(),
        }
        result["comparison"] = _comparison(result["modes"])
        result["files"] = []
        if out_dir is not None:
            import json

            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "live.json").write_text(json.dumps(result, indent=1))
            (out / "live.txt").write_text(render(result) + "\n")
            result["files"] = [str(out / "live.json"), str(out / "live.txt")]
            note = plot(result, out / "live.png")
            if note:
                say(note)
            else:
                result["files"].append(str(out / "live.png"))
        return result
    finally:
        old_int = None
        if threading.current_thread() is threading.main_thread():
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd ^C must not orphan
        try:
            if sh is not None:
                sh.mode = _STOP
                sh.stop.set()
                for t in threads:
                    t.join(10)
            if sched is not None:
                sched.halt.set()
                sched.join(5)
            for w in writers:
                _stop_process(w, 10, paused=True)
            for c in clients_:
                with contextlib.suppress(Exception):
                    c.close()
            for d in daemons:
                _stop_process(d, 15)
            if keep_files:
                say(f"files kept in {', '.join(str(w) for w in works.values())}")
            else:
                for w in works.values():
                    shutil.rmtree(w, ignore_errors=True)
            shutil.rmtree(sockdir, ignore_errors=True)
        finally:
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)


def _comparison(modes: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """p99 and mean of mittd relative to none and hedge (negative = mittd is faster)."""
    out: dict[str, float | None] = {}
    m = modes["mittd"]
    for other in ("none", "hedge"):
        for key in ("p99_us", "p99_9_us", "mean_us"):
            o = modes[other][key]
            out[f"{key.removesuffix('_us')}_vs_{other}"] = (
                (m[key] - o) / o if o and math.isfinite(o) and math.isfinite(m[key]) else None)
    return out


# -- output --------------------------------------------------------------------------------


def render(r: dict[str, Any]) -> str:
    """The terminal (and docs) view of :func:`run_live`'s result."""
    def us(v: float | None) -> str:
        return "–" if v is None or not math.isfinite(v) else f"{v:,.0f}"

    lines = [
        f"model {r['model']}; deadline {r['deadline_us']} µs (trained thresholds "
        f"{r['model_thresholds_us']} µs), reject when P(slow) > {r['decision_threshold']:g}",
        f"{r['replicas']} replicas × {r['size_bytes'] / MiB:,.0f} MiB in {r['directory']} "
        f"(O_DIRECT, one daemon each); {r['clients']} closed-loop client thread(s), "
        f"{r['read_bytes'] // 1024} KiB random reads; {r['cpus']} CPUs shared by all",
        f"contention: {r['contention']}; modes interleaved in {r['period_s']:g} s slices, "
        f"{r['duration_s']:g} s in all; hedge after {r['hedge_after_us']:,.0f} µs "
        f"({r['hedge_after_source']})",
        "",
        "| mode | reads | reads/s | mean µs | p50 | p90 | p95 | p99 | p99.9 | max | failover % "
        "| hedges % | extra IOs % | off primary % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in MODES:
        m = r["modes"][name]
        reads = m["reads"] or 1
        lines.append(
            f"| {name} | {m['reads']:,} | {m['reads_per_s']:,.0f} | {us(m['mean_us'])} "
            f"| {us(m['p50_us'])} | {us(m['p90_us'])} | {us(m['p95_us'])} | {us(m['p99_us'])} "
            f"| {us(m['p99_9_us'])} | {us(m['max_us'])} | {100 * m['failover_rate']:.1f} "
            f"| {100 * m['hedges'] / reads:.1f} | {100 * m['extra_io_fraction']:.1f} "
            f"| {100 * m['off_primary_fraction']:.1f} |")
    if r["busy"] > 0:
        lines += ["", "By contention phase at issue (p50 / p99 µs, reads): the read's primary "
                  "under writes | another replica under writes | none under writes", "",
                  "| mode | primary busy | other busy | all quiet |", "|---|---|---|---|"]
        for name in MODES:
            ph = r["modes"][name]["phases"]
            lines.append(f"| {name} | " + " | ".join(
                f"{us(ph[k]['p50_us'])} / {us(ph[k]['p99_us'])} ({ph[k]['reads']:,})"
                for k in ("primary_busy", "other_busy", "all_quiet")) + " |")
    c = r["comparison"]

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:+.0f} %"

    lines += [
        "",
        f"mittd vs none:  p99 {pct(c['p99_vs_none'])}, p99.9 {pct(c['p99_9_vs_none'])}, "
        f"mean {pct(c['mean_vs_none'])}",
        f"mittd vs hedge: p99 {pct(c['p99_vs_hedge'])}, p99.9 {pct(c['p99_9_vs_hedge'])}, "
        f"mean {pct(c['mean_vs_hedge'])}",
        "extra IOs: device reads beyond one per read (hedges, fallbacks); a failover is an "
        "EBUSY answered before any IO, so it costs an RPC, not a device IO.",
    ]
    def pct1(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    if r.get("daemons"):
        lines += ["", "daemons (whole run, warm-up included): "
                  + "; ".join(
                      f"replica {i}: {d.get('admit', 0):,.0f} admitted, "
                      f"{d.get('ebusy', 0):,.0f} EBUSY, {d.get('overruns', 0):,.0f} prediction "
                      f"overruns, {d.get('fail_open', 0):,.0f} fail-open, prediction "
                      f"{us(d.get('predict_mean_us'))} µs mean, device read "
                      f"{us(d.get('device_mean_us'))} µs mean, "
                      f"{pct1(d.get('device_over_200us_fraction'))} > 200 µs"
                      for i, d in enumerate(r["daemons"]))]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: str | Path) -> str | None:
    """CDF and tail (1 − CDF) of each mode's client latency; returns a note if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG written (pip install matplotlib)"
    q = np.asarray(r["cdf_quantiles"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in MODES:
        x = np.asarray(r["modes"][name]["cdf_us"])
        if len(x) == 0:
            continue
        label = f"{name} (p99 {r['modes'][name]['p99_us']:,.0f} µs)"
        ax1.plot(x, q, label=label)
        tail = (1.0 - q) >= 1.0 / max(r["modes"][name]["reads"], 1)  # no extrapolation
        ax2.plot(x[tail], 1.0 - q[tail], label=label)
    ax1.axvline(r["deadline_us"], color="grey", ls=":", lw=1, label="deadline (at the device)")
    ax2.axvline(r["deadline_us"], color="grey", ls=":", lw=1)
    ax1.set(xscale="log", xlabel="client-observed read latency (µs)", ylabel="CDF",
            title="mittd bench live: CDF")
    ax2.set(xscale="log", yscale="log", xlabel="client-observed read latency (µs)",
            ylabel="1 − CDF", title="tail")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(f"{r['replicas']} replicas, {r['clients']} clients, {r['contention']}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
