"""mittd inside a storage server's own process: admission without an RPC.

Why: a Python gRPC call costs 0.7-0.9 ms on our machines, 7-9x a 4 KiB SSD read,
so a decision made across a socket costs more than the tail it cuts. The peers
decide where the IO is issued (LinnOS in the kernel, Heimdall in its client);
so does this (DESIGN principle 6). The daemon stays for remote clients, proxy
reads, reload and metrics.

It is the daemon's own machinery, not a copy: the devices are built by
``mittd.daemon.devices.load_device`` (the servability check of ``mittd serve``,
``mittd check`` and HUP), decided by the same :class:`AdmissionCore` (its fused
compiled path, ``mittd.daemon.fastpath``), counted by the same counters and
exported by the same Prometheus collector. The bundle's decision policy applies
as in the daemon: a bundle whose validation chose hedging never rejects, and
:meth:`Embedded.policy` tells the caller to hedge (``mittd.daemon.replicas``
acts on it).

Use::

    from mittd.daemon.embedded import Embedded, OP_READ

    adm = Embedded.from_config("/etc/mittd/mittd.toml")   # or .from_bundles({...})
    ticket = adm.admit("nvme0", OP_READ, offset, length, deadline_us=500)
    if not ticket:            # EBUSY: predicted to miss 500 µs: try another replica
        ...
    else:
        ...                   # issue the read, time it
        adm.complete("nvme0", ticket, latency_us)

Thread-safe (one lock per device, as in the daemon). Hot reload:
:meth:`Embedded.reload` (or :meth:`Embedded.watch`, a thread that polls the
bundle files) swaps in a changed bundle that passes every check; a bad one
keeps the old model and is counted (``mittd_reloads_total{result="refused"}``).

Watch first, then enforce: ``mode="shadow"`` (or :meth:`Embedded.set_mode`)
predicts and records every IO but never rejects; :meth:`Embedded.quality` is the
model's live ROC-AUC, precision, recall and drift on this device's own IOs, and
``records=DIR`` writes every decided IO to Parquet segments that ``mittd train``
reads (docs/ROLLOUT.md).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mittd.daemon.admission import AdmissionCore, Decision, DeviceStats, UnknownDevice
from mittd.daemon.config import (
    ALIAS_RE,
    BELOW_MODEL,
    DRIFT_WINDOWS_MAX,
    KEEP_WARM_MS_MAX,
    MODES,
    QUALITY_WINDOW_MIN,
    RING_ROWS,
    Config,
    ConfigError,
    DeviceConfig,
    RecordsConfig,
    ServerConfig,
)
from mittd.daemon.config import load_config as _load_config
from mittd.daemon.devices import DeviceError, load_device
from mittd.daemon.quality import LiveQuality
from mittd.daemon.recorder import Recorder
from mittd.daemon.warmth import KeepWarm
from mittd.predictor.engine import Engine
from mittd.predictor.policy import DecisionPolicy
from mittd.traces.schema import OP_OTHER, OP_READ, OP_WRITE

__all__ = ["OP_OTHER", "OP_READ", "OP_WRITE", "Embedded", "EmbeddedError", "UnknownDevice"]

log = logging.getLogger("mittd.embedded")


class EmbeddedError(ConfigError):
    """The devices cannot be opened; one line naming the device or setting and why."""


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a bundle file is replaced or rewritten (None: unreadable)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Source:
    """Where a device's state comes from, and how its reloads went."""

    config: DeviceConfig
    seen: tuple[int, int, int] | None
    reloads: int = 0
    refused: int = 0
    last_error: str = ""


class Embedded:
    """In-process admission for a set of devices (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        from mittd.daemon.serve import build_core  # the daemon's own core builder

        self._config = config
        try:
            self.core: AdmissionCore = build_core(config)
        except (DeviceError, ValueError) as e:
            raise EmbeddedError(str(e)) from None
        self._sources = {a: _Source(d, _signature(d.model)) for a, d in config.devices.items()}
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._closed = False
        self.recorder: Recorder | None = None
        if config.records is not None:
            try:
                self.recorder = Recorder(self.core, config.records).start()
            except ValueError as e:
                raise EmbeddedError(str(e)) from None
        # server.keep_warm_ms, as mittd serve does: one thread for every device
        ms = config.server.keep_warm_ms
        self._warmer = KeepWarm(self.core, ms).start() if ms > 0 else None
        # the hot path, bound once: a method lookup per call is measurable at ~4 µs
        self.admit = self.core.admit_next  # type: ignore[method-assign]
        self.complete = self.core.complete_next  # type: ignore[method-assign]

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, path: str | Path) -> Embedded:
        """The devices of a ``mittd serve`` TOML config, with its ``[server]`` limits
        (pending capacity and timeout, prediction budget, probe rule)."""
        try:
            config = _load_config(path)
        except ConfigError as e:
            raise EmbeddedError(str(e)) from None
        return cls(config)

    @classmethod
    def from_bundles(
        cls,
        bundles: Mapping[str, str | Path],
        *,
        paths: Mapping[str, str | Path] | None = None,
        engine: str = "auto",
        slo_us: float | None = None,
        decision_threshold: float | None = None,
        max_reject_share: float | None = None,
        probe_after: int = 32,
        predict_budget_us: float = 50.0,
        max_pending_per_device: int = 4096,
        pending_timeout_ms: int = 10_000,
        mode: str = "enforce",
        drift_margin: float = DeviceConfig.drift_margin,
        quality_window: int = ServerConfig.quality_window,
        drift_windows: int = ServerConfig.drift_windows,
        records: RecordsConfig | str | Path | None = None,
        below_model: str = DeviceConfig.below_model,
        keep_warm_ms: int = ServerConfig.keep_warm_ms,
    ) -> Embedded:
        """Devices from bundle files, ``{alias: bundle}``, with the daemon's defaults;
        the keywords are the config's settings of the same names (one value for
        every device); ``paths`` optionally names each device's file (kept for the
        caller, see :meth:`device_path`); ``records``: a directory (or a
        :class:`RecordsConfig`) to write every decided IO to."""
        if not bundles:
            raise EmbeddedError("bundles: at least one {alias: bundle path} is required")
        for alias in bundles:
            if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
                raise EmbeddedError(f"bundles: alias {alias!r} must be 1-64 characters from "
                                    "[A-Za-z0-9_-]")
        if not (isinstance(predict_budget_us, int | float) and predict_budget_us > 0
                and math.isfinite(predict_budget_us)):
            raise EmbeddedError(f"predict_budget_us must be > 0, got {predict_budget_us!r}")
        if not isinstance(probe_after, int) or isinstance(probe_after, bool) or probe_after < 0:
            raise EmbeddedError(f"probe_after must be an int >= 0, got {probe_after!r}")
        for name, v in (("max_pending_per_device", max_pending_per_device),
                        ("pending_timeout_ms", pending_timeout_ms)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise EmbeddedError(f"{name} must be an int >= 1, got {v!r}")
        if mode not in MODES:
            raise EmbeddedError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if below_model not in BELOW_MODEL:
            raise EmbeddedError(f"below_model must be one of {', '.join(BELOW_MODEL)}, got "
                                f"{below_model!r}")
        if (not isinstance(keep_warm_ms, int) or isinstance(keep_warm_ms, bool)
                or not 0 <= keep_warm_ms <= KEEP_WARM_MS_MAX):
            raise EmbeddedError(f"keep_warm_ms must be an int in [0 (off), {KEEP_WARM_MS_MAX}],"
                                f" got {keep_warm_ms!r}")
        if not (isinstance(drift_margin, int | float) and 0.0 <= drift_margin <= 1.0):
            raise EmbeddedError(f"drift_margin must be in [0, 1], got {drift_margin!r}")
        if (not isinstance(quality_window, int) or isinstance(quality_window, bool)
                or not QUALITY_WINDOW_MIN <= quality_window <= RING_ROWS):
            raise EmbeddedError(f"quality_window must be an int in [{QUALITY_WINDOW_MIN}, "
                                f"{RING_ROWS}], got {quality_window!r}")
        if (not isinstance(drift_windows, int) or isinstance(drift_windows, bool)
                or not 1 <= drift_windows <= DRIFT_WINDOWS_MAX
                or quality_window * drift_windows > RING_ROWS):
            raise EmbeddedError(f"drift_windows must be an int in [1, {DRIFT_WINDOWS_MAX}] with "
                                f"quality_window x drift_windows <= {RING_ROWS}, got "
                                f"{drift_windows!r}")
        if records is not None and not isinstance(records, RecordsConfig):
            try:
                records = RecordsConfig(records)
            except (TypeError, ValueError) as e:
                raise EmbeddedError(f"records: {e}") from None
        paths = dict(paths or {})
        unknown = set(paths) - set(bundles)
        if unknown:
            raise EmbeddedError(f"paths: {sorted(unknown)} name no device of bundles")
        devices = {}
        for alias, bundle in bundles.items():
            model = Path(bundle).absolute()
            if not model.is_file():
                raise EmbeddedError(f"{alias}: {bundle}: no such bundle file")
            devices[alias] = DeviceConfig(
                alias=alias, path=Path(paths.get(alias, "")), model=model, engine=engine,
                slo_us=slo_us, decision_threshold=decision_threshold,
                max_reject_share=max_reject_share, mode=mode,
                drift_margin=float(drift_margin), below_model=below_model)
        server = ServerConfig(unix_socket=Path("/nonexistent/mittd.sock"), metrics=None,
                              max_pending_per_device=max_pending_per_device,
                              pending_timeout_ms=pending_timeout_ms,
                              predict_budget_us=float(predict_budget_us),
                              probe_after=probe_after, quality_window=quality_window,
                              drift_windows=drift_windows, keep_warm_ms=keep_warm_ms)
        return cls(Config(Path("<bundles>"), server, devices, records))

    # -- the hot path (bound to the core's fast path in __init__) ------------------------
    def admit(self, device: str, op: int, offset: int, length: int,
              deadline_us: float = 0) -> int:  # pragma: no cover - replaced per instance
        """Decide one IO arriving now: a ticket (> 0, the IO is now pending: issue it,
        then :meth:`complete` it) or 0 for EBUSY (predicted to miss ``deadline_us``).
        ``op``: :data:`OP_READ`, :data:`OP_WRITE` or :data:`OP_OTHER`; ``deadline_us``
        0: the device's default; one beyond every trained threshold (e.g.
        ``mittd.proto.MAX_DEADLINE_US``) is admitted without a prediction, still
        tracked; one below every trained threshold is EBUSY without a prediction
        (``below_model = "reject"``, the default) or judged by the lowest
        threshold's head (``"judge"``). Raises :class:`UnknownDevice`, ``ValueError``
        for a NaN deadline."""
        return self.core.admit_next(device, op, offset, length, deadline_us)

    def complete(self, device: str, ticket: int,
                 latency_us: float) -> bool:  # pragma: no cover - replaced per instance
        """The admitted IO ``ticket`` finished after ``latency_us`` µs (NaN: unmeasured);
        False for a ticket the device does not know (0, completed, expired)."""
        return self.core.complete_next(device, ticket, latency_us)

    def decide(self, device: str, op: int, offset: int, length: int,
               deadline_us: float = 0) -> tuple[int, Decision]:
        """:meth:`admit` with the :class:`Decision` that explains it (P(slow), head,
        reason); a little slower."""
        return self.core.decide_next(device, op, offset, length, deadline_us)

    # -- what the caller needs to act ------------------------------------------------------
    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.core.devices)

    def policy(self, device: str) -> DecisionPolicy:
        """The device bundle's decision policy (reject / hedge / both, hedging delay)."""
        return self.core.state(device).policy

    def default_deadline_us(self, device: str) -> float:
        return self.core.state(device).default_deadline_us

    def thresholds_us(self, device: str) -> tuple[float, ...]:
        """The trained latency thresholds; a deadline beyond the last is not judged."""
        return self.core.state(device).thresholds_us

    def model_version(self, device: str) -> str:
        return self.core.state(device).model_version

    def engine(self, device: str) -> Engine:
        return self.core.state(device).engine

    def device_path(self, device: str) -> Path | None:
        """The file or block device the config names for ``device`` (None if none)."""
        src = self._sources.get(device)
        if src is None:
            raise UnknownDevice(device)
        p = src.config.path
        return None if str(p) in ("", ".") else p

    def stats(self) -> dict[str, DeviceStats]:
        return self.core.stats()

    def warm(self, device: str | None = None, idle_ms: float = 0.0) -> list[str]:
        """Keep idle devices warm: for ``device`` (default: every device) that has
        decided nothing for ``idle_ms``, run one untimed dummy prediction
        (``AdmissionCore.warm``: no decision, tracker, record or counter but
        ``warm_ticks`` changes). The keep-warm thread (``keep_warm_ms`` > 0, as
        ``mittd serve``; off by default) calls it; a host may call it from its own
        timer instead. Returns the devices warmed."""
        aliases = self.devices if device is None else (device,)
        idle_us = int(idle_ms * 1000)
        return [a for a in aliases if self.core.warm(a, idle_us)]

    # -- shadow mode and live quality ----------------------------------------------------
    def mode(self, device: str) -> str:
        """``"enforce"`` or ``"shadow"`` (predict and record, never reject)."""
        return self.core.mode(device)

    def set_mode(self, device: str, mode: str) -> None:
        """Watch first, then enforce: switch a device at run time (kept over reloads)."""
        src = self._sources.get(device)
        if src is None:
            raise UnknownDevice(device)
        self.core.set_mode(device, mode)  # validates the mode
        with self._reload_lock:
            src.config = replace(src.config, mode=mode)

    def quality(self, device: str) -> LiveQuality:
        """Live ROC-AUC, precision, recall, would-be reject share and drift of the
        device's model over its recent IOs (``mittd.daemon.quality``; a few ms)."""
        return self.core.quality(device)

    def reload_counts(self) -> dict[str, dict[str, int | str]]:
        """Per device: reloads done, reloads refused, and the last refusal."""
        with self._reload_lock:
            return {a: {"reloaded": s.reloads, "refused": s.refused, "last_error": s.last_error}
                    for a, s in self._sources.items()}

    # -- metrics ------------------------------------------------------------------------
    def register_metrics(self, registry: Any = None) -> Any:
        """Export the daemon's metrics (``mittd_*``) and the reload counts into the host's
        Prometheus registry (default: prometheus_client's global ``REGISTRY``)."""
        from mittd.daemon.metrics import CoreCollector, ReloadCollector

        if registry is None:
            from prometheus_client import REGISTRY as registry
        registry.register(CoreCollector(self.core.stats, quality=self.core.quality))
        registry.register(ReloadCollector(self.reload_counts))
        return registry

    # -- hot reload -------------------------------------------------------------------------
    def reload(self, force: bool = False) -> dict[str, str]:
        """Swap in every device whose bundle file changed (``force``: every device) and
        passes every check; returns ``{alias: what happened}`` for those looked at.
        A refused bundle keeps the old model, is logged and counted, and is tried
        again only when its file changes again."""
        done: dict[str, str] = {}
        with self._reload_lock:
            for alias, src in self._sources.items():
                sig = _signature(src.config.model)
                if not force and sig == src.seen:
                    continue
                src.seen = sig
                try:
                    state = load_device(src.config, self._config.server)
                except DeviceError as e:
                    src.refused += 1
                    src.last_error = str(e)
                    done[alias] = f"refused: {e}"
                    log.error("reload of %s refused, keeping %s: %s", alias,
                              self.core.state(alias).model_version, e)
                    continue
                old = self.core.swap(alias, state)
                src.reloads += 1
                done[alias] = f"reloaded {old.model_version} -> {state.model_version}"
                log.info("reloaded %s: %s -> %s", alias, old.model_version, state.model_version)
        return done

    def watch(self, interval_s: float = 1.0) -> None:
        """Poll the bundle files every ``interval_s`` seconds on a daemon thread and
        :meth:`reload` the changed ones (a stat per device per poll)."""
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        if self._watcher is not None:
            raise RuntimeError("already watching the bundle files")

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.reload()
                except Exception:  # the host's process must never die of our reload
                    log.exception("bundle watch failed; still watching")

        self._watcher = threading.Thread(target=loop, name="mittd-bundle-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop the watcher and the recorder (writing every recorded IO out); idempotent.
        Decisions after close still work (the state is the caller's memory), but
        nothing reloads or is recorded."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        if self._warmer is not None:
            self._warmer.stop()
            self._warmer = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        self._closed = True

    def __enter__(self) -> Embedded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        devs = ", ".join(f"{a}={self.model_version(a)}" for a in self.devices)
        return f"Embedded({devs})"
