"""systemd's notify protocol in pure Python: READY, RELOADING, STOPPING, WATCHDOG.

Type=notify units learn that the daemon is up (and is reloading or stopping)
from datagrams sent to ``$NOTIFY_SOCKET``; with ``WatchdogSec=`` the daemon must
send WATCHDOG=1 more often than ``$WATCHDOG_USEC``, or systemd restarts it.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send one notification (e.g. ``"READY=1"``); False when not under systemd."""
    path = (env or os.environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(state.encode())
        return True
    except OSError:
        return False


def ready(status: str = "") -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def reloading() -> bool:
    # systemd >= 253 wants MONOTONIC_USEC beside RELOADING=1 (Type=notify-reload)
    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={now_us}")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Half of systemd's watchdog timeout, or None when no watchdog is armed for us."""
    e = env or os.environ
    usec = e.get("WATCHDOG_USEC")
    pid = e.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 1e6 / 2)
    except ValueError:
        return None


class Watchdog:
    """Pings systemd's watchdog from a daemon thread while ``healthy()`` is true, so a
    wedged server (not a busy one) gets restarted."""

    def __init__(self, healthy: Callable[[], bool] = lambda: True) -> None:
        self.interval = watchdog_interval_s()
        self._healthy = healthy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval is None:
            return
        self._thread = threading.Thread(target=self._run, name="mittd-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            if self._healthy():
                notify("WATCHDOG=1")

    def stop(self) -> None:
        self._stop.set()
