"""Reach a Ray cluster for a fleet run: the one place that starts or connects to Ray.

Why one home: ``fleet train|replay``, ``fleet tune --per class`` and ``fleet bench``
all need the same answer to "which cluster, and how": ``--address`` or
``RAY_ADDRESS`` connects to an existing cluster; otherwise a local cluster of
``--workers`` CPUs is started in-process (no set-up on one machine) and shut down
at the end; an already initialised Ray (a test's, a notebook's) is used as it is.

A local start is tried up to :data:`LOCAL_START_ATTEMPTS` times: Ray gives a new
raylet 30 s (hard-coded) to register with its GCS, and on a loaded 2-vCPU machine
one start in a full test run missed that ("The current node timed out during
startup", a bare ``Exception``); the next start succeeds. A connection to
``--address`` is tried once (``check_reachable`` first).

A local cluster is started quietly: Ray's start-up chatter ("Started a local Ray
instance", the token-auth notice) is not the operator's business on every run, so
the driver logs at WARNING, and the notice that token authentication is on (Ray's
default for a new local cluster) is dropped; any other authentication warning, and
an operator's own ``RAY_AUTH_MODE``, are left alone.

Ray is imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from mittd.fleet.manifest import FleetError
from mittd.fleet.tasks import THREAD_ENV, one_line

__all__ = ["CLUSTER_EXTRA", "LOCAL_OBJECT_STORE", "check_reachable", "import_ray",
           "ray_session", "require_ray"]

CLUSTER_EXTRA = "fleet needs the cluster extra: pip install 'mittd[cluster]' (missing module {})"
LOCAL_OBJECT_STORE = 128 << 20  # rows are small: keep a local cluster's /dev/shm use small
AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
LOCAL_START_ATTEMPTS = 3
log = logging.getLogger("mittd.fleet")


class _DropAuthNotice(logging.Filter):
    """Drops only Ray's "token authentication is enabled" notice (its default for a
    new local cluster, so news to nobody); every other auth warning is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")

REACH_TIMEOUT_S = 5.0  # Ray itself retries an unreachable GCS for minutes, quietly


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Refuse an address nothing listens on, in one line and seconds.

    Why before ``ray.init``: Ray retries a wrong ``--address`` for minutes with a log
    line every few seconds, which reads as a hang. ``auto`` / ``local`` (Ray's own
    discovery) are left to Ray; ``host:port`` and ``ray://host:port`` are tried with
    one TCP connection."""
    if address in ("auto", "local"):
        return
    where = address.removeprefix("ray://").rstrip("/")
    host, sep, port = where.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FleetError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT "
                         "or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise FleetError(f"cannot reach the Ray cluster at {address}: "
                         f"{e.strerror or type(e).__name__}") from None


def require_ray() -> None:
    """Refuse in one line (FleetError) when Ray is not installed; imports nothing."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # sys.modules["ray"] = None, or a broken install
        found = False
    if not found:
        raise FleetError(CLUSTER_EXTRA.format("ray"))


def import_ray() -> Any:
    """``ray``, or one FleetError line naming the missing module."""
    require_ray()
    try:
        import ray
    except ImportError as e:
        raise FleetError(CLUSTER_EXTRA.format(e.name or "ray")) from None
    return ray


def _init(ray: Any, opts: dict[str, Any], address: str | None) -> None:
    """``ray.init(**opts)``; a failed local start is cleaned up and tried again, up to
    :data:`LOCAL_START_ATTEMPTS` times; the last failure is one FleetError line."""
    attempts = 1 if address else LOCAL_START_ATTEMPTS
    where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
    for attempt in range(1, attempts + 1):
        try:
            ray.init(**opts)
            return
        except (TypeError, ValueError) as e:  # our arguments: the same every time
            raise FleetError(f"cannot start or reach {where}: {one_line(e)}") from None
        except Exception as e:  # Ray raises a bare Exception for a start-up timeout
            with contextlib.suppress(Exception):
                ray.shutdown()
            if attempt == attempts:
                tries = f" ({attempts} attempts)" if attempts > 1 else ""
                raise FleetError(f"cannot start or reach {where}{tries}: {one_line(e)}"
                                 ) from None
            log.warning("starting a local Ray cluster failed (%s); trying again (%d of %d)",
                        one_line(e), attempt + 1, attempts)


@contextlib.contextmanager
def ray_session(workers: int | None = None, address: str | None = None, *,
                object_store: int = LOCAL_OBJECT_STORE, fresh: bool = False
                ) -> Iterator[Any]:
    """``ray``, initialised for the ``with`` block.

    ``address`` (else ``RAY_ADDRESS``) connects to that cluster; otherwise a local
    cluster of ``workers`` CPUs (default: all) with ``object_store`` bytes of object
    store is started. Either way it is shut down at the end, unless Ray was already
    initialised, which is used and left running — or, with ``fresh``, refused (a
    benchmark that must size its own cluster)."""
    ray = import_ray()
    if ray.is_initialized():
        if fresh:
            raise FleetError("a Ray is already initialised in this process; this command "
                             "starts its own local clusters")
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                            "logging_level": logging.WARNING,
                            "runtime_env": {"env_vars": dict(THREAD_ENV)}}
    if address:
        check_reachable(address)
        opts["address"] = address
    else:
        opts.update(num_cpus=workers or os.cpu_count() or 1, object_store_memory=object_store)
    notice = logging.getLogger(AUTH_LOGGER)
    quiet = _DropAuthNotice()
    notice.addFilter(quiet)
    try:
        _init(ray, opts, address)
    finally:
        notice.removeFilter(quiet)
    try:
        yield ray
    finally:
        ray.shutdown()
