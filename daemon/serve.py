"""``mittd serve``: the daemon's process lifecycle, gunicorn-style.

- start: validate the config, load every device's bundle and build its engine
  (a bad config or bundle stops the start with one line), bind the gRPC
  server (Unix socket, optional TLS TCP), the Prometheus endpoint, then tell
  systemd READY=1 and start the watchdog pings;
- HUP: reload the config and the bundles; devices whose bundle loads and
  whose engine builds are swapped atomically (requests in flight finish on the
  old model, the pending-request tracker carries over when the featuriser is
  the same); a device whose new bundle is bad keeps its old model, with a log
  line — a failed reload never takes the daemon down. Adding or removing
  devices or changing listen addresses needs a restart (logged);
- idle: with ``server.keep_warm_ms`` > 0 (default 0, off), a device that has
  decided nothing that long gets one untimed dummy prediction (no decision,
  tracker, record or counter but ``warm_ticks``), meant to keep the first IO
  after a quiet spell off cold caches (``mittd bench cold`` measures whether it
  does). Whatever the setting, a decision over ``fastpath.COLD_GAP_US`` after the
  device's previous one runs an untimed warm-up pass before its timed one;
- TERM/INT: STOPPING=1, health NOT_SERVING, stop accepting, let in-flight
  calls finish (``grace_s``), write the last IO records, exit 0.

With a ``[records]`` table, a recorder thread writes every decided IO to
Parquet segments (``mittd.daemon.recorder``); a device's ``mode = "shadow"``
predicts and records without rejecting.

Whether a device can be served with its bundle is decided by
``mittd.daemon.devices`` alone, at start, on HUP and in ``mittd check``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from mittd.daemon import notify
from mittd.daemon.admission import AdmissionCore
from mittd.daemon.config import Config, ConfigError, load_config
from mittd.daemon.devices import DeviceError, load_device, load_devices
from mittd.daemon.warmth import KeepWarm
from mittd.predictor.engines import limit_blas_threads
from mittd.traces.argtypes import non_negative_float

log = logging.getLogger("mittd")


class ServeError(Exception):
    """The daemon cannot start as configured (a listener it cannot open); one line."""


USER_ERRORS: tuple[type[BaseException], ...] = (ServeError,)


def build_core(config: Config) -> AdmissionCore:
    return AdmissionCore(load_devices(config), predict_budget_us=config.server.predict_budget_us,
                         probe_after=config.server.probe_after)


class Daemon:
    """One serving process: config, admission core, gRPC server, metrics."""

    def __init__(self, config_path: str | Path, grace_s: float = 10.0) -> None:
        self.config_path = Path(config_path)
        self.grace_s = grace_s
        self.config = load_config(self.config_path)
        self.core = build_core(self.config)
        self._reload = threading.Event()
        self._stop = threading.Event()
        self.server: Any = None
        self.health: Any = None
        self.recorder: Any = None
        self.servicer: Any = None
        # per device: bundle reloads swapped and refused (mittd_reloads_total)
        self.reloads = {a: {"reloaded": 0, "refused": 0, "last_error": ""}
                        for a in self.config.devices}
        self.watchdog = notify.Watchdog(lambda: not self._stop.is_set())
        self._warmer: KeepWarm | None = None

    def reload_counts(self) -> dict[str, dict[str, int | str]]:
        """Per device: reloads swapped, reloads refused, and the last refusal."""
        return {a: dict(c) for a, c in self.reloads.items()}

    def start(self) -> None:
        """Open the listeners (metrics first: a taken port then leaves no socket file
        behind), then the recorder; a listener that cannot open is a ServeError."""
        from mittd.daemon.service import MittdServicer, build_server

        self.servicer = MittdServicer(self.core, self.config)
        m = self.config.server.metrics
        if m is not None:
            from mittd.daemon.metrics import serve_metrics

            try:
                serve_metrics(self.core.stats, m.host, m.port, quality=self.core.quality,
                              reloads=self.reload_counts,
                              bad_requests=self.servicer.bad_requests)
            except OSError as e:
                raise ServeError(f"cannot serve metrics on {m}: {e.strerror or e}; set "
                                 "server.metrics to a free address, or \"\" to turn them "
                                 "off") from None
        try:
            # build_server returns the server started (the socket's mode is set after bind)
            self.server, self.health = build_server(self.core, self.config,
                                                    max_workers=self.config.server.workers,
                                                    servicer=self.servicer)
        except OSError as e:
            raise ServeError(str(e).splitlines()[0]) from None
        if self.config.records is not None:
            from mittd.daemon.recorder import Recorder

            self.recorder = Recorder(self.core, self.config.records).start()
            log.info("recording IOs to %s", self.config.records.dir)
        devices = ", ".join(f"{a}={self.core.state(a).model_version}"
                            for a in self.core.devices)
        log.info("serving %s on unix:%s%s", devices, self.config.server.unix_socket,
                 f" and {self.config.server.tcp}" if self.config.server.tcp else "")
        notify.ready(f"serving {len(self.core.devices)} device(s)")
        self.watchdog.start()
        self.start_keep_warm()

    def start_keep_warm(self) -> None:
        """With ``server.keep_warm_ms`` > 0, the keep-warm thread
        (:class:`mittd.daemon.warmth.KeepWarm`), stopped with the daemon."""
        ms = self.config.server.keep_warm_ms
        if ms > 0 and self._warmer is None:
            self._warmer = KeepWarm(self.core, ms).start()

    def reload(self) -> int:
        """Swap in every device whose new bundle is good; returns how many."""
        notify.reloading()
        swapped = 0
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            for c in self.reloads.values():  # no device could be reloaded
                c["refused"] += 1
                c["last_error"] = str(e)
            notify.ready("reload failed: config")
            return 0
        if new.records != self.config.records:
            log.warning("reload: a changed [records] table needs a restart; recording "
                        "goes on as started")
        if set(new.devices) != set(self.config.devices):
            log.warning("reload: devices added or removed need a restart; only existing "
                        "devices are reloaded")
        for alias, dev in new.devices.items():
            if alias not in self.config.devices:
                continue
            try:
                state = load_device(dev, new.server)
            except DeviceError as e:
                log.error("reload of %s refused, keeping %s: %s", alias,
                          self.core.state(alias).model_version, e)
                self.reloads[alias]["refused"] += 1
                self.reloads[alias]["last_error"] = str(e)
                continue
            old = self.core.swap(alias, state)
            self.reloads[alias]["reloaded"] += 1
            swapped += 1
            log.info("reloaded %s: %s -> %s", alias, old.model_version, state.model_version)
        notify.ready(f"reloaded {swapped} device(s)")
        return swapped

    def stop(self) -> None:
        notify.stopping()
        self._stop.set()
        if self._warmer is not None:
            self._warmer.stop()
        self.watchdog.stop()
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        if self.server is not None:
            self.server.stop(self.grace_s).wait()
        if self.servicer is not None:  # after the server: no read is in flight
            self.servicer.close()
        if self.recorder is not None:  # after the last IO: every row reaches a segment
            self.recorder.close()
        log.info("stopped")

    def run(self) -> int:
        """Serve until TERM/INT; HUP reloads. Must run in the main thread."""
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        self.start()
        while not self._stop.wait(0.2):
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
        self.stop()
        return 0


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(levelname)s %(name)s: %(message)s")
    limit_blas_threads(1)
    return Daemon(args.config, grace_s=args.grace).run()


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "serve", help="run the admission daemon (gRPC)",
        description="Serve gRPC admission checks (Admit, Complete, AdmitStream, proxy Read) "
        "for the devices of the config, with Prometheus metrics. HUP reloads config and "
        "models (a bad bundle keeps the old one), TERM drains in-flight calls and exits 0. "
        "Under systemd (Type=notify) it reports READY/RELOADING/STOPPING and pings the "
        "watchdog.")
    p.add_argument("--config", required=True, help="TOML config (see systemd/mittd.toml)")
    p.add_argument("--grace", type=non_negative_float, default=10.0,
                   help="seconds in-flight calls get to finish on TERM (default 10)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)
