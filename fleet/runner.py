"""Run one task per device on Ray and collect one row per device.

Why Ray, and why this shape: a fleet of thousands of devices is a bag of
independent, minutes-long CPU tasks, exactly what Ray schedules across a cluster
(``--address`` / ``RAY_ADDRESS``) or, by default, on a local cluster started
in-process, with no set-up. The driver here only submits, waits and counts: each
task (``mittd.fleet.tasks``) turns its own failures into error rows, Ray retries a
task whose worker died (``max_retries``), and a task that died on every attempt is
an error row too — the run always ends with one row per device.

Ray is imported only inside :func:`run_fleet`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from mittd.fleet.manifest import DeviceJob, FleetError
from mittd.fleet.tasks import THREAD_ENV, error_row, one_line

__all__ = ["FleetInterrupted", "require_ray", "run_fleet"]

CLUSTER_EXTRA = "fleet needs the cluster extra: pip install 'mittd[cluster]' (missing module {})"
LOCAL_OBJECT_STORE = 128 << 20  # rows are small: keep a local cluster's /dev/shm use small


class FleetInterrupted(Exception):
    """Ctrl-C during a fleet run: outstanding tasks were cancelled."""

    def __init__(self, rows: list[dict[str, Any]], total: int) -> None:
        super().__init__(f"interrupted: {len(rows)} of {total} devices finished; the rest "
                         "were cancelled (re-run to resume: finished bundles are kept)")
        self.rows = rows
        self.total = total


def require_ray() -> None:
    """Refuse in one line (FleetError) when Ray is not installed; imports nothing."""
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # sys.modules["ray"] = None, or a broken install
        found = False
    if not found:
        raise FleetError(CLUSTER_EXTRA.format("ray"))


def _import_ray() -> Any:
    require_ray()
    try:
        import ray
    except ImportError as e:
        raise FleetError(CLUSTER_EXTRA.format(e.name or "ray")) from None
    return ray


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
    ray = _import_ray()
    if retries < 0:
        raise FleetError(f"--retries must be >= 0, got {retries}")
    if not jobs:
        return []
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = not ray.is_initialized()
    if started:
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                "ignore_reinit_error": True,
                                "runtime_env": {"env_vars": dict(THREAD_ENV)}}
        if address:
            opts["address"] = address
        else:
            opts.update(num_cpus=workers or os.cpu_count() or 1,
                        object_store_memory=LOCAL_OBJECT_STORE)
        try:
            ray.init(**opts)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise FleetError(f"cannot start or reach {where}: {one_line(e)}") from None
    try:
        return _run(ray, jobs, fn, retries, progress, kind)
    finally:
        if started:
            ray.shutdown()


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
                bar.update(1)
                bar.set_postfix_str(f"{failed} failed" if failed else "")
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
