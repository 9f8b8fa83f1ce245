"""The child processes of ``mittd bench live``: daemons and fio writers started, stopped,
switched on and off by the contention schedule, and observed (logs, Prometheus)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mittd.daemon.bench.live.modes import Schedule

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


def spawn(cmd: Sequence[str], log: Path, death_signal: int) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                start_new_session=True, preexec_fn=_pdeathsig(death_signal))


def stop_process(proc: subprocess.Popen, timeout_s: float, paused: bool = False) -> None:
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


def tail(log: Path, n: int = 400) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errs = [ln for ln in lines if "error" in ln.lower()] or lines
    return errs[-1][:n] if errs else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_config(path: Path, sock: Path, dev: Path, bundle: Path, workers: int,
                  metrics_port: int, decision_threshold: float | None, *,
                  direct_io: bool = True, max_reject_share: float | None = None,
                  probe_after: int | None = None) -> None:
    """One replica's daemon config; ``direct_io`` false where the file system refuses
    O_DIRECT (tmpfs: its reads are then RAM reads, as in-process)."""
    cutoff = "" if decision_threshold is None else f"decision_threshold = {decision_threshold}\n"
    cap = "" if max_reject_share is None else f"max_reject_share = {max_reject_share}\n"
    probes = "" if probe_after is None else f"probe_after = {probe_after}\n"
    path.write_text(
        f'[server]\nunix_socket = "{sock}"\nmetrics = "127.0.0.1:{metrics_port}"\n'
        f"workers = {workers}\n{probes}\n"
        f'[devices.r]\npath = "{dev}"\nmodel = "{bundle}"\nengine = "auto"\n'
        f"direct_io = {'true' if direct_io else 'false'}\n{cutoff}{cap}")


def fio_jobfile(path: Path, dev: Path, size: int, qd: int, runtime_s: int,
                direct: bool = True) -> None:
    """A writer of 1 MiB random blocks into ``dev``; ``direct`` off on tmpfs (fio's
    direct=1 fails there)."""
    path.write_text(
        f"[global]\nthread=1\nioengine=libaio\ndirect={int(direct)}\nfallocate=none\n"
        "randrepeat=0\nnorandommap=1\n\n"
        f"[contention]\nfilename={str(dev).replace(':', chr(92) + ':')}\nsize={size}\n"
        f"rw=randwrite\nbs=1m\niodepth={qd}\ntime_based=1\nruntime={runtime_s}s\n")


def scrape(port: int) -> dict[str, float | None]:
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 once it is gone)."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Scheduler(threading.Thread):
    """Pauses and resumes each replica's fio writer on the schedule (SIGSTOP/SIGCONT);
    ``procs[i]`` is None for a replica without a writer (busy 0)."""

    def __init__(self, procs: Sequence[subprocess.Popen | None], schedule: Schedule,
                 t0_ns: int) -> None:
        super().__init__(name="mittd-live-contention", daemon=True)
        self.procs = list(procs)
        self.schedule = schedule
        self.t0_ns = t0_ns
        self.running = [p is not None for p in self.procs]  # fio starts running
        self.halt = threading.Event()
        self.switches = 0

    def _set(self, i: int, on: bool) -> None:
        proc = self.procs[i]
        if proc is None or self.running[i] == on or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT if on else signal.SIGSTOP)
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
