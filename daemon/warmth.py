"""Keep-warm: the thread that runs an idle device's model so the next IO is judged warm.

At one IO a second the first prediction after a quiet spell runs on cold caches
and can overrun ``predict_budget_us``; with ``fail_open_on_overrun`` a would-be
EBUSY is then admitted unjudged (counted in ``cold_overruns``). This thread
checks every ``keep_warm_ms / 2`` and calls :meth:`AdmissionCore.warm` for each
device idle at least ``keep_warm_ms``: one untimed dummy prediction that decides
nothing. ``mittd serve`` and :class:`mittd.daemon.Embedded` both run it (one
home); a busy device never gets a tick.
"""

from __future__ import annotations

import logging
import threading

from mittd.daemon.admission import AdmissionCore

log = logging.getLogger("mittd.warmth")


class KeepWarm:
    """A daemon thread warming ``core``'s idle devices until :meth:`stop`."""

    def __init__(self, core: AdmissionCore, keep_warm_ms: int) -> None:
        if keep_warm_ms <= 0:
            raise ValueError(f"keep_warm_ms must be > 0, got {keep_warm_ms!r}")
        self.core = core
        self.idle_us = int(keep_warm_ms) * 1000
        self.period_s = keep_warm_ms / 2000.0
        self._stop = threading.Event()
        self._failed: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="mittd-keep-warm",
                                        daemon=True)

    def start(self) -> KeepWarm:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            for alias in self.core.devices:
                try:
                    self.core.warm(alias, self.idle_us)
                except Exception as e:  # never the host's death; logged once per device
                    if alias not in self._failed:
                        self._failed.add(alias)
                        log.warning("keep-warm of %s failed (%s: %s); decisions are "
                                    "unaffected", alias, type(e).__name__, e)

    def stop(self) -> None:
        """End the thread (idempotent); returns once it is gone."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
