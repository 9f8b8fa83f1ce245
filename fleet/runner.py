"""Run one task per device on Ray and collect one row per device.

Why Ray, and why this shape: a fleet of thousands of devices is a bag of
independent, minutes-long CPU tasks, exactly what Ray schedules across a cluster
(``--address`` / ``RAY_ADDRESS``) or, by default, on a local cluster started
in-process, with no set-up. The driver here only submits, waits and counts: each
task (``mittd.fleet.tasks``) turns its own failures into error rows, Ray retries a
task whose worker died (``max_retries``), and a task that died on every attempt is
an error row too — the run always ends with one row per device.

Ray is imported only inside :func:`run_fleet` (through :mod:`mittd.fleet.cluster`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from mittd.fleet.cluster import import_ray, ray_session
from mittd.fleet.manifest import DeviceJob, FleetError
from mittd.fleet.tasks import THREAD_ENV, error_row, one_line

__all__ = ["FleetInterrupted", "run_fleet"]


class FleetInterrupted(Exception):
    """Ctrl-C during a fleet run: outstanding tasks were cancelled."""

    def __init__(self, rows: list[dict[str, Any]], total: int) -> None:
        super().__init__(f"interrupted: {len(rows)} of {total} devices finished; the rest "
                         "were cancelled (re-run to resume: finished bundles are kept)")
        self.rows = rows
        self.total = total


def _call(fn: Callable[[DeviceJob], dict[str, Any]], job: DeviceJob) -> dict[str, Any]:
    """The remote body: a row, whatever ``fn`` does short of killing the worker."""
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)
    return fn(job)


def run_fleet(jobs: Sequence[DeviceJob], fn: Callable[[DeviceJob], dict[str, Any]], *,
              workers: int | None = None, address: str | None = None, retries: int = 2,
              progress: bool = True, kind: str = "train") -> list[dict[str, Any]]:
    """``fn(job)`` for every job, one Ray task each (1 CPU), rows in job order.

    Connects to ``address`` (or ``RAY_ADDRESS``) when given, else starts a local
    cluster of ``workers`` CPUs (default: all) and shuts it down at the end; an
    already initialised Ray (a test's, a notebook's) is used as it is and left
    running. A task whose worker dies is retried ``retries`` times, then is an error
    row ``worker died (N attempts)``. Ctrl-C cancels what is still running and
    raises :class:`FleetInterrupted` with the rows that finished."""
    if retries < 0:
        raise FleetError(f"--retries must be >= 0, got {retries}")
    if not jobs:
        import_ray()  # a missing extra is still the one-line error
        return []
    with ray_session(workers, address) as ray:
        return _run(ray, jobs, fn, retries, progress, kind)


def _run(ray: Any, jobs: Sequence[DeviceJob], fn: Callable[[DeviceJob], dict[str, Any]],
         retries: int, progress: bool, kind: str) -> list[dict[str, Any]]:
    from tqdm import tqdm

    remote = ray.remote(num_cpus=1, max_retries=retries)(_call)
    fn_ref = ray.put(fn)
    t0 = {}
    refs: dict[Any, int] = {}
    for i, job in enumerate(jobs):
        ref = remote.options(name=f"mittd-fleet-{kind}:{job.device}").remote(fn_ref, job)
        refs[ref] = i
        t0[i] = time.perf_counter()
    rows: dict[int, dict[str, Any]] = {}
    pending = list(refs)
    bar = tqdm(total=len(jobs), unit="device", desc=f"fleet {kind}", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    failed = 0
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = refs[ref]
                rows[i] = _row(ray, ref, jobs[i], kind, retries, time.perf_counter() - t0[i])
                failed += rows[i].get("status") == "error"
                bar.set_postfix_str(f"{failed} failed" if failed else "", refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        for ref in pending:
            with contextlib.suppress(Exception):  # already finished, or the cluster is going
                ray.cancel(ref, force=True)  # away
        bar.close()
        raise FleetInterrupted([rows[i] for i in sorted(rows)], len(jobs)) from None
    bar.close()
    return [rows[i] for i in range(len(jobs))]


def _row(ray: Any, ref: Any, job: DeviceJob, kind: str, retries: int, seconds: float
         ) -> dict[str, Any]:
    """The task's row, or an error row for a task that never returned one."""
    from ray import exceptions as rx

    try:
        row = ray.get(ref)
    except rx.RayTaskError as e:  # ``fn`` raised (the fleet's own tasks never do)
        cause = getattr(e, "cause", None)
        return error_row(job, kind, one_line(cause) if cause is not None else one_line(e),
                         seconds)
    except rx.TaskCancelledError:
        return error_row(job, kind, "cancelled", seconds)
    except rx.RayError as e:  # the worker (or its node) died on every attempt
        what = "worker died" if isinstance(e, rx.WorkerCrashedError | rx.NodeDiedError
                                           ) else one_line(e)
        return error_row(job, kind, f"{what} ({retries + 1} attempts)", seconds)
    if not isinstance(row, dict):
        return error_row(job, kind, f"task returned {type(row).__name__}, not a row", seconds)
    return row
