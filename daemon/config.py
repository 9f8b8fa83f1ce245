"""The daemon's TOML configuration, validated into frozen dataclasses.

Validation follows scikit-learn's habit: every error names the bad field by its
dotted path and says what is allowed, on one line, prefixed with the file
(``/etc/mittd/mittd.toml: devices.nvme0.engine: 'fast' is not one of dense,
…``), so an operator can fix it without reading code. Unknown keys are refused
too: a misspelt ``slo_us`` silently falling back to a default is the kind of
surprise a storage daemon must not have.

What is checked here is what can be checked without loading a model (types,
ranges, that files exist and are readable, that a TCP listener off loopback has
TLS); ``mittd check`` (``daemon.check``) goes on to load every bundle and build
its engine. Clients name device aliases, never paths (DESIGN principle 5).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mittd.predictor.engines import ENGINE_NAMES

ALIAS_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")
FALLBACK_RUNTIME_DIR = "/run/mittd"
SOCKET_NAME = "mittd.sock"
MiB = 1 << 20


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the operator."""


def default_unix_socket() -> str:
    """``$RUNTIME_DIRECTORY/mittd.sock`` (systemd's RuntimeDirectory=), else /run/mittd."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "")
    # systemd joins several RuntimeDirectory= entries with ':'; ours is the first
    first = runtime.split(":")[0]
    return str(Path(first or FALLBACK_RUNTIME_DIR) / SOCKET_NAME)


@dataclass(frozen=True)
class Address:
    """A ``host:port`` listen address; ``[v6]:port`` for IPv6 literals."""

    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TLSConfig:
    """Server certificate and key; ``client_ca`` turns on client-certificate auth."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    """The ``[server]`` table. ``keep_warm_ms``: once a device has decided nothing
    for this long, the daemon runs one untimed dummy prediction on it
    (``AdmissionCore.warm``), again every ``keep_warm_ms`` while it idles, meant
    to keep the first IO after a quiet spell from overrunning the prediction
    budget on cold caches. Off (0) by default: ``mittd bench cold`` measured no
    gain on our 2-vCPU VM (cold p50 64 µs either way, overruns 2-4 of 80 with it
    or without; docs/FAULTS.md), the cold cost lying outside the model. Apart
    from it, every decision after an idle gap runs one untimed warm-up pass
    before its timed one (``AdmissionCore``'s ``warm_up_gap_us``)."""

    unix_socket: Path
    socket_mode: int = 0o660
    tcp: Address | None = None
    tls: TLSConfig | None = None
    metrics: Address | None = Address("127.0.0.1", 9464)
    max_pending_per_device: int = 4096
    pending_timeout_ms: int = 10_000
    max_read_bytes: int = MiB
    max_stream_batch: int = 1024
    predict_budget_us: float = 50.0
    workers: int = 4
    probe_after: int = 32
    quality_window: int = 10_000
    drift_windows: int = 3
    keep_warm_ms: int = 0  # off: measured no gain here (mittd bench cold)


@dataclass(frozen=True)
class DeviceConfig:
    """One device alias: what clients name, the file behind it and its model.

    ``slo_us``, ``decision_threshold`` and ``max_reject_share`` are None when the
    config leaves them to the bundle (its first latency threshold, its P(slow)
    cutoff and its policy's reject cap).

    ``below_model``: what a deadline below the lowest latency threshold the model
    was trained for gets (:data:`BELOW_MODEL`). ``"reject"``: EBUSY at once
    without asking the model, reason ``deadline-below-model`` — admit means
    "predicted to meet the deadline", and no head can promise a deadline tighter
    than the one it was trained on; ``"judge"``: the lowest threshold's head
    judges it (it rejects only IOs predicted to miss even that threshold).
    """

    alias: str
    path: Path
    model: Path
    engine: str = "auto"
    slo_us: float | None = None
    decision_threshold: float | None = None
    max_reject_share: float | None = None
    writable: bool = False
    direct_io: bool = True
    alignment: int = 4096
    mode: str = "enforce"
    drift_margin: float = 0.05
    below_model: str = "reject"


MODES = ("enforce", "shadow")
#: ``devices.<alias>.below_model``: the choices, the default first (DeviceConfig).
BELOW_MODEL = ("reject", "judge")
RING_ROWS = 1 << 17  # decisions a device keeps in memory (mittd.daemon.ring sizes by it)
KEEP_WARM_MS_MAX = 3_600_000  # server.keep_warm_ms in [0 (off), this]
QUALITY_WINDOW_MIN = 100  # server.quality_window in [this, RING_ROWS]
DRIFT_WINDOWS_MAX = 64  # server.drift_windows in [1, this], windows x window <= RING_ROWS
_RECORD_LIMITS = {"segment_mb": (0.01, 65536.0), "segment_s": (1.0, 86400.0),
                  "keep_mb": (0.01, 1e9), "keep_hours": (0.001, 1e6)}


@dataclass(frozen=True)
class RecordsConfig:
    """Where and how much to record IOs (``[records]``; the in-process API takes the
    same object, ``mittd.daemon.recorder`` writes by it). The bounds are checked
    here, naming the field, so the config and the in-process API refuse the same
    values."""

    dir: Path
    segment_mb: float = 64.0  # close a segment at this size...
    segment_s: float = 60.0  # ...or this age: the most a kill -9 can lose
    keep_mb: float = 1024.0  # per device: the oldest segments go beyond this...
    keep_hours: float = 168.0  # ...or this age

    def __post_init__(self) -> None:
        if not isinstance(self.dir, str | os.PathLike) or not str(self.dir).strip():
            raise ValueError(f"dir: expected a directory path, got {self.dir!r}")
        object.__setattr__(self, "dir", Path(self.dir).expanduser())
        for name, (lo, hi) in _RECORD_LIMITS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a number, got {v!r}")
            if not lo <= v <= hi:
                raise ValueError(f"{name}: {v} is out of range; must be in [{lo:g}, {hi:g}]")
            object.__setattr__(self, name, float(v))
        if self.keep_mb < self.segment_mb:
            raise ValueError(f"keep_mb: {self.keep_mb:g} is below segment_mb "
                             f"({self.segment_mb:g}); a device must keep one segment")

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "segment_mb": self.segment_mb,
                "segment_s": self.segment_s, "keep_mb": self.keep_mb,
                "keep_hours": self.keep_hours}


@dataclass(frozen=True)
class Config:
    source: Path
    server: ServerConfig
    devices: Mapping[str, DeviceConfig] = field(default_factory=dict)
    records: RecordsConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able view for the startup log (paths as strings, mode in octal)."""
        s = self.server
        server: dict[str, Any] = {
            "unix_socket": str(s.unix_socket),
            "socket_mode": f"0o{s.socket_mode:03o}",
            "tcp": str(s.tcp) if s.tcp else None,
            "tls": None if s.tls is None else {
                "cert": str(s.tls.cert), "key": str(s.tls.key),
                "client_ca": str(s.tls.client_ca) if s.tls.client_ca else None},
            "metrics": str(s.metrics) if s.metrics else None,
            "max_pending_per_device": s.max_pending_per_device,
            "pending_timeout_ms": s.pending_timeout_ms,
            "max_read_bytes": s.max_read_bytes,
            "max_stream_batch": s.max_stream_batch,
            "predict_budget_us": s.predict_budget_us,
            "workers": s.workers,
            "probe_after": s.probe_after,
            "quality_window": s.quality_window,
            "drift_windows": s.drift_windows,
            "keep_warm_ms": s.keep_warm_ms,
        }
        devices = {
            a: {"path": str(d.path), "model": str(d.model), "engine": d.engine,
                "slo_us": d.slo_us, "decision_threshold": d.decision_threshold,
                "max_reject_share": d.max_reject_share,
                "writable": d.writable, "direct_io": d.direct_io, "alignment": d.alignment,
                "mode": d.mode, "drift_margin": d.drift_margin, "below_model": d.below_model}
            for a, d in self.devices.items()
        }
        return {"source": str(self.source), "server": server, "devices": devices,
                "records": self.records.to_dict() if self.records else None}


# -- field readers: each raises _FieldError(dotted name, what is wrong) -------------


class _FieldError(Exception):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")


class _Table:
    """A TOML table being read: remembers its dotted name and refuses unknown keys."""

    def __init__(self, name: str, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise _FieldError(name, f"expected a table, got {_kind(raw)}")
        self.name = name
        self.raw: dict[str, Any] = raw

    def key(self, k: str) -> str:
        return f"{self.name}.{k}" if self.name else k

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for k in self.raw:
            if k not in allowed:
                raise _FieldError(self.key(k), "unknown field; allowed: " + ", ".join(allowed))

    def get(self, k: str) -> Any:
        return self.raw.get(k)

    def int_(self, k: str, default: int, lo: int, hi: int) -> int:
        v = self.raw.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise _FieldError(self.key(k), f"expected an integer, got {v!r}")
        if not lo <= v <= hi:
            raise _FieldError(self.key(k), f"{v} is out of range; must be in [{lo}, {hi}]")
        return v

    def float_(self, k: str, default: float | None, lo: float, hi: float,
               open_lo: bool = False, open_hi: bool = False) -> float | None:
        v = self.raw.get(k, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _FieldError(self.key(k), f"expected a number, got {v!r}")
        below = v <= lo if open_lo else v < lo
        above = v >= hi if open_hi else v > hi
        if below or above:
            rng = f"{'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
            raise _FieldError(self.key(k), f"{v} is out of range; must be in {rng}")
        return float(v)

    def bool_(self, k: str, default: bool) -> bool:
        v = self.raw.get(k, default)
        if not isinstance(v, bool):
            raise _FieldError(self.key(k), f"expected true or false, got {v!r}")
        return v

    def str_(self, k: str, default: str | None = None, required: bool = False) -> str | None:
        if k not in self.raw:
            if required:
                raise _FieldError(self.key(k), "required field is missing")
            return default
        v = self.raw[k]
        if not isinstance(v, str):
            raise _FieldError(self.key(k), f"expected a string, got {v!r}")
        return v

    def choice(self, k: str, default: str, allowed: tuple[str, ...]) -> str:
        v = self.str_(k, default)
        if v not in allowed:
            raise _FieldError(self.key(k), f"{v!r} is not one of {', '.join(allowed)}")
        return v

    def readable_file(self, k: str, base: Path, required: bool = True,
                      block_ok: bool = False, writable: bool = False) -> Path | None:
        v = self.str_(k, required=required)
        if v is None:
            return None
        if not v:
            raise _FieldError(self.key(k), "empty path")
        p = Path(v).expanduser()
        if not p.is_absolute():  # relative to the config file, not the cwd
            p = base / p
        what = "a regular file or block device" if block_ok else "a regular file"
        try:
            st = p.stat()
        except FileNotFoundError:
            raise _FieldError(self.key(k), f"{p} does not exist; must be {what}") from None
        except OSError as e:
            raise _FieldError(self.key(k), f"{p}: {e.strerror}") from None
        if not (stat.S_ISREG(st.st_mode) or (block_ok and stat.S_ISBLK(st.st_mode))):
            raise _FieldError(self.key(k), f"{p} is not {what}")
        if not os.access(p, os.R_OK):
            raise _FieldError(self.key(k), f"{p} is not readable by this user")
        if writable and not os.access(p, os.W_OK):
            raise _FieldError(self.key(k), f"{p} is not writable by this user "
                                           "(writable = true)")
        return p

    def address(self, k: str, default: str | None) -> Address | None:
        v = self.str_(k, default)
        if v is None or v == "":
            return None
        return _parse_address(self.key(k), v)


def _kind(v: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _parse_address(name: str, v: str) -> Address:
    """``host:port``, ``[v6]:port``; host an IP literal or a DNS name, port 1..65535."""
    bad = f"{v!r} is not a host:port address (e.g. \"127.0.0.1:7070\" or \"[::1]:7070\")"
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", v)
    if not m:
        raise _FieldError(name, bad)
    if m.group(1) is not None:
        host, port_s = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _FieldError(name, f"{host!r} is not an IPv6 address") from None
    else:
        host, port_s = m.group(3), m.group(4)
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOST_RE.fullmatch(host) or len(host) > 253:
                raise _FieldError(name, f"{host!r} is not an IPv4 address or host "
                                        "name") from None
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise _FieldError(name, f"port {port} is out of range; must be in [1, 65535]")
    return Address(host, port)


def _given(v: float | None) -> float:
    """Narrow a reader's result whose default was not None."""
    assert v is not None
    return v


def _socket_mode(t: _Table) -> int:
    v = t.get("socket_mode")
    if v is None:
        return 0o660
    if isinstance(v, str) and re.fullmatch(r"(0o?)?[0-7]{1,4}", v):
        v = int(v.removeprefix("0o"), 8)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0o777:
        raise _FieldError(t.key("socket_mode"), f"{v!r} is not a file mode; must be in "
                                                "[0o000, 0o777], e.g. 0o660")
    if v & 0o600 != 0o600:  # the daemon itself must keep read/write access
        raise _FieldError(t.key("socket_mode"), f"0o{v:03o} denies the owner read/write; "
                                                "must include 0o600")
    return v


SERVER_KEYS = ("unix_socket", "socket_mode", "tcp", "tls", "metrics",
               "max_pending_per_device", "pending_timeout_ms", "max_read_bytes",
               "max_stream_batch", "predict_budget_us", "workers",
               "probe_after", "quality_window", "drift_windows", "keep_warm_ms")
TLS_KEYS = ("cert", "key", "client_ca")
DEVICE_KEYS = ("path", "model", "engine", "slo_us", "decision_threshold", "max_reject_share",
               "writable", "direct_io", "alignment", "mode", "drift_margin", "below_model")
RECORDS_KEYS = ("dir", *_RECORD_LIMITS)


def _server(raw: Any, base: Path) -> ServerConfig:
    t = _Table("server", raw)
    t.check_keys(SERVER_KEYS)
    sock = t.str_("unix_socket") or default_unix_socket()
    if not Path(sock).is_absolute():
        raise _FieldError(t.key("unix_socket"), f"{sock!r} must be an absolute path")
    if len(os.fsencode(sock)) > 107:  # sun_path is 108 bytes with the NUL
        raise _FieldError(t.key("unix_socket"), f"{sock!r} is longer than the 107 bytes "
                                                "a unix socket path may have")
    tcp = t.address("tcp", None)
    tls = None
    if t.get("tls") is not None:
        tt = _Table(t.key("tls"), t.get("tls"))
        tt.check_keys(TLS_KEYS)
        cert = tt.readable_file("cert", base)
        key = tt.readable_file("key", base)
        assert cert is not None and key is not None
        tls = TLSConfig(cert, key, tt.readable_file("client_ca", base, required=False))
        if tcp is None:
            raise _FieldError(t.key("tls"), "is set but server.tcp is not; TLS only applies "
                                            "to the TCP listener")
    if tcp is not None and tls is None and not tcp.is_loopback:
        raise _FieldError(t.key("tcp"), f"{tcp} is not a loopback address, so [server.tls] "
                                        "(cert, key) is required; refusing plaintext "
                                        "gRPC on the network")
    window = t.int_("quality_window", ServerConfig.quality_window, QUALITY_WINDOW_MIN,
                    RING_ROWS)
    windows = t.int_("drift_windows", ServerConfig.drift_windows, 1, DRIFT_WINDOWS_MAX)
    if window * windows > RING_ROWS:
        raise _FieldError(t.key("drift_windows"), f"{windows} windows of {window} decisions "
                                                  f"exceed the {RING_ROWS} a device keeps; "
                                                  "lower quality_window or drift_windows")
    return ServerConfig(
        unix_socket=Path(sock),
        socket_mode=_socket_mode(t),
        tcp=tcp,
        tls=tls,
        metrics=t.address("metrics", "127.0.0.1:9464"),
        max_pending_per_device=t.int_("max_pending_per_device", 4096, 1, 1_000_000),
        pending_timeout_ms=t.int_("pending_timeout_ms", 10_000, 1, 3_600_000),
        max_read_bytes=t.int_("max_read_bytes", MiB, 512, 64 * MiB),
        max_stream_batch=t.int_("max_stream_batch", 1024, 1, 65_536),
        predict_budget_us=_given(t.float_("predict_budget_us", 50.0, 0.0, 1e6,
                                          open_lo=True)),
        workers=t.int_("workers", min(4, os.cpu_count() or 1), 1, 1024),
        probe_after=t.int_("probe_after", 32, 0, 1_000_000),
        quality_window=window,
        drift_windows=windows,
        keep_warm_ms=t.int_("keep_warm_ms", ServerConfig.keep_warm_ms, 0, KEEP_WARM_MS_MAX),
    )


def _device(alias: str, raw: Any, base: Path) -> DeviceConfig:
    name = f"devices.{alias}"
    if not ALIAS_RE.fullmatch(alias):
        raise _FieldError(name, "alias must be 1-64 characters from [A-Za-z0-9_-]")
    t = _Table(name, raw)
    t.check_keys(DEVICE_KEYS)
    writable = t.bool_("writable", False)
    path = t.readable_file("path", base, block_ok=True, writable=writable)
    model = t.readable_file("model", base)
    assert path is not None and model is not None
    alignment = t.int_("alignment", 4096, 512, MiB)
    if alignment & (alignment - 1):
        raise _FieldError(t.key("alignment"), f"{alignment} is not a power of two; must be "
                                              "a power of two in [512, 1048576]")
    return DeviceConfig(
        alias=alias,
        path=path,
        model=model,
        engine=t.choice("engine", "auto", ENGINE_NAMES),
        slo_us=t.float_("slo_us", None, 0.0, 1e9, open_lo=True),
        decision_threshold=t.float_("decision_threshold", None, 0.0, 1.0,
                                    open_lo=True, open_hi=True),
        max_reject_share=t.float_("max_reject_share", None, 0.0, 1.0, open_lo=True),
        writable=writable,
        direct_io=t.bool_("direct_io", True),
        alignment=alignment,
        mode=t.choice("mode", "enforce", MODES),
        drift_margin=_given(t.float_("drift_margin", DeviceConfig.drift_margin, 0.0, 1.0)),
        below_model=t.choice("below_model", DeviceConfig.below_model, BELOW_MODEL),
    )


def _records(raw: Any, base: Path) -> RecordsConfig:
    t = _Table("records", raw)
    t.check_keys(RECORDS_KEYS)
    d = t.str_("dir", required=True)
    assert d is not None
    if not d:
        raise _FieldError(t.key("dir"), "empty path")
    p = Path(d).expanduser()
    if not p.is_absolute():  # relative to the config file, as every path here
        p = base / p
    if p.exists() and not p.is_dir():
        raise _FieldError(t.key("dir"), f"{p} is not a directory")
    parent = p if p.exists() else next((q for q in p.parents if q.exists()), p)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _FieldError(t.key("dir"), f"{parent} is not writable by this user")
    values = {k: t.raw[k] for k in _RECORD_LIMITS if k in t.raw}
    try:
        return RecordsConfig(p, **values)
    except ValueError as e:  # "field: problem"
        raise _FieldError(t.key(str(e).split(":", 1)[0]), str(e).split(":", 1)[1].strip()) \
            from None


def parse_config(raw: Mapping[str, Any], source: Path) -> Config:
    """Validate an already-parsed TOML document; paths are relative to ``source``."""
    where = str(source)
    base = source.absolute().parent  # the daemon runs from /, not from here
    try:
        top = _Table("", dict(raw))
        top.check_keys(("server", "devices", "records"))
        server = _server(raw.get("server", {}), base)
        devs = raw.get("devices")
        if devs is None:
            raise _FieldError("devices", "at least one [devices.<alias>] table is required")
        dt = _Table("devices", devs)
        if not dt.raw:
            raise _FieldError("devices", "at least one [devices.<alias>] table is required")
        devices = {a: _device(a, d, base) for a, d in dt.raw.items()}
        records = None if raw.get("records") is None else _records(raw["records"], base)
    except _FieldError as e:
        raise ConfigError(f"{where}: {e}") from None
    return Config(source, server, devices, records)


def load_config(path: str | Path) -> Config:
    """Read and validate ``path``; every problem is a one-line ``ConfigError``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:  # its message ends "(at line L, column C)"
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    return parse_config(raw, p)
