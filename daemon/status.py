"""``mittd status``: what each device of a running daemon is doing, and how right its
model is there now.

Why a command and not only metrics: an operator deciding whether to move a
device from shadow to enforce (or back) wants one look at the live ROC-AUC next
to the validation one, the share the model would reject, and whether recording
keeps up, without a Prometheus at hand. It asks the daemon's ``Status`` RPC
(``mittd.v1.Mittd/Status``), over the daemon's unix socket by default, and
prints one row per device, or JSON.

Exit status: 0 when the daemon answered; 2 with a one-line error when it could
not be asked (no socket, nothing listening, permission denied, an unknown
``--device``, a config that cannot be read).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import textwrap
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mittd.daemon.config import ConfigError, default_unix_socket
from mittd.traces.argtypes import positive_float

if TYPE_CHECKING:  # the gRPC client is imported when the command runs (fast --help)
    from mittd.daemon.client import DeviceStatus

__all__ = ["USER_ERRORS", "StatusError", "add_commands", "cmd_status", "format_table",
           "socket_of_config", "status_json"]

DEFAULT_TIMEOUT_S = 5.0


class StatusError(Exception):
    """The daemon could not be asked; the message is one line for the operator."""


# Exceptions whose message is a complete, user-facing explanation (the caller
# prints "mittd: error: MESSAGE" and exits 2).
USER_ERRORS: tuple[type[BaseException], ...] = (StatusError, ConfigError)

#: The table's columns: header and what it means (also the --help text).
COLUMNS = (
    ("DEVICE", "the device alias"),
    ("MODE", "enforce (EBUSY when the model predicts slow) or shadow (predict and "
             "record, admit everything)"),
    ("MODEL", "the model bundle serving it: name@checksum-prefix"),
    ("LABELLED", "completed, predicted IOs in the live quality window: what the live "
                 "figures are computed on"),
    ("AUC (VAL)", "live ROC-AUC of P(slow) on those IOs, and in brackets the bundle's "
                  "validation ROC-AUC it is compared with"),
    ("PREC", "precision: of the IOs the model called slow, the share that were slow"),
    ("RECALL", "of the slow IOs, the share the model called slow"),
    ("WOULD-REJ", "share of recent decisions the model called slow: what enforce mode "
                  "rejects before the probe and reject-cap rules"),
    ("DRIFT", "yes when the live ROC-AUC stayed below the validation one by more than "
              "the drift margin in each of the last drift_windows windows (on enough IOs "
              "of each class); in brackets, how many of them in a row were below"),
    ("REJ-SHARE", "share of recent decisions rejected (EBUSY) after the probe and cap "
                  "rules; in shadow mode, the share enforce mode would have rejected"),
    ("REJECTED", "IOs rejected with EBUSY since the daemon started"),
    ("SHADOW-REJ", "IOs enforce mode would have rejected but shadow mode admitted"),
    ("FAIL-OPEN", "IOs admitted unjudged because the predictor failed"),
    ("REC-WRITTEN", "decision records written to the record files"),
    ("REC-DROPPED", "decision records dropped (recorder behind or a write failed)"),
)


def socket_of_config(path: str | Path) -> Path:
    """The daemon's unix socket as ``path`` (a ``mittd serve`` config) sets it.

    Only ``server.unix_socket`` is read: the devices' files need not be readable
    here (an operator may run this without access to the block devices).
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    server = raw.get("server", {})
    sock = server.get("unix_socket") if isinstance(server, dict) else None
    if sock is None or sock == "":
        return Path(default_unix_socket())
    if not isinstance(sock, str) or not os.path.isabs(sock):
        raise ConfigError(f"{p}: server.unix_socket: {sock!r} must be an absolute path")
    return Path(sock)


def _check_socket(sock: Path) -> None:
    """Say plainly why a unix socket cannot be a running daemon (gRPC only says
    "failed to connect")."""
    try:
        st = sock.stat()
    except FileNotFoundError:
        raise StatusError(f"no daemon at unix:{sock}: the socket does not exist "
                          "(is 'mittd serve' running? else give --config, --socket or "
                          "--target)") from None
    except PermissionError:
        raise StatusError(f"cannot reach unix:{sock}: permission denied on its "
                          "directory") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise StatusError(f"unix:{sock} is not a socket")
    if not os.access(sock, os.R_OK | os.W_OK):
        raise StatusError(f"cannot connect to unix:{sock}: permission denied (socket "
                          f"mode {stat.S_IMODE(st.st_mode):o}; run as its owner or group)")


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise StatusError(f"{what} {path}: {e.strerror}") from None


def target_of(args: argparse.Namespace) -> str:
    """The gRPC target the arguments name (``--target`` / ``--socket`` / ``--config`` /
    the default socket), the socket checked first."""
    if args.target:
        return str(args.target)
    sock = (Path(args.socket) if args.socket
            else socket_of_config(args.config) if args.config
            else Path(default_unix_socket()))
    _check_socket(sock)
    return f"unix:{sock}"


def fetch(args: argparse.Namespace) -> tuple[str, list[DeviceStatus]]:
    """Ask the daemon; every failure is a one-line :class:`StatusError`."""
    import grpc

    from mittd.daemon.client import Client, MittdUnavailable

    if not args.target and (args.ca or args.cert or args.key):
        raise StatusError("--ca, --cert and --key apply to --target (TCP) only")
    if bool(args.cert) != bool(args.key):
        raise StatusError("--cert and --key go together (a client certificate and its key)")
    target = target_of(args)
    creds = None
    if args.ca or args.cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(args.ca, "--ca"), private_key=_read(args.key, "--key"),
            certificate_chain=_read(args.cert, "--cert"))
    try:
        with Client(target, timeout_s=args.timeout, credentials=creds) as c:
            return target, c.status(args.device or "")
    except MittdUnavailable as e:
        code = e.code
        detail = " ".join(str(e.strerror).removeprefix(f"mittd {target}: ").split())
        if code == grpc.StatusCode.NOT_FOUND:
            raise StatusError(f"the daemon at {target} has no device {args.device!r}") from None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            raise StatusError(f"the daemon at {target} does not answer Status (an older "
                              "mittd? restart it on this version)") from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise StatusError(f"no answer from {target} within {args.timeout:g} s "
                              "(--timeout)") from None
        if code == grpc.StatusCode.UNAVAILABLE:
            raise StatusError(f"cannot reach a daemon at {target}: {detail}") from None
        raise StatusError(f"{target}: {detail}") from None


def _num(x: float, digits: int = 3) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100.0 * x:.1f}%"


def _row(d: DeviceStatus) -> list[str]:
    auc = _num(d.roc_auc)
    if not math.isnan(d.validation_roc_auc):
        auc += f" ({_num(d.validation_roc_auc)})"
    return [d.device, d.mode, d.model_version, str(d.labelled), auc, _num(d.precision, 2),
            _num(d.recall, 2), _pct(d.would_reject_share),
            f"{'yes' if d.drift else 'no'} ({d.windows_below}/{d.drift_windows})",
            _pct(d.reject_share), str(d.rejected), str(d.shadow_rejects), str(d.fail_open),
            str(d.records_written), str(d.records_dropped)]


def format_table(devices: Sequence[DeviceStatus]) -> str:
    """One row per device, columns as :data:`COLUMNS` ("-": undefined, see --help)."""
    rows = [[h for h, _ in COLUMNS], *(_row(d) for d in devices)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))
                     .rstrip() for r in rows)


def _plain(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def status_json(target: str, devices: Sequence[DeviceStatus]) -> str:
    """Strict JSON (undefined figures are null, not NaN), every field of the RPC."""
    doc = {"target": target,
           "devices": [{k: _plain(v) for k, v in d._asdict().items()} for d in devices]}
    return json.dumps(doc, indent=2, allow_nan=False)


def cmd_status(args: argparse.Namespace) -> int:
    target, devices = fetch(args)
    if args.json:
        print(status_json(target, devices))
    else:
        print(format_table(devices))
    return 0


def _epilog() -> str:
    width = max(len(h) for h, _ in COLUMNS)
    pad = " " * (width + 4)
    lines = ["columns:"]
    lines += [textwrap.fill(text, 79, initial_indent=f"  {h.ljust(width)}  ",
                            subsequent_indent=pad) for h, text in COLUMNS]
    notes = (
        "Live figures are over the device's most recent decisions (the quality window) "
        "whose IOs completed; '-' means undefined so far (no slow or no fast IO yet, "
        "nothing called slow, no validation score). In enforce mode rejected IOs never "
        "complete, so the live figures describe the admitted traffic; shadow mode admits "
        "everything and measures the model without bias. Counters count since the daemon "
        "started. --json prints every field of the Status RPC (see proto/mittd.proto), "
        "undefined figures as null.",
        "exit status: 0 the daemon answered; 2 it could not be asked (one-line error).",
    )
    return "\n".join(lines) + "".join(f"\n\n{textwrap.fill(n, 79)}" for n in notes)


def add_commands(commands: Any) -> None:
    """Register ``status`` on the ``mittd`` subparsers object."""
    p = commands.add_parser(
        "status", help="show each device's mode, model, live accuracy and counters",
        description=textwrap.fill(
            "Ask a running mittd daemon (its Status RPC) what each device is doing: "
            "enforce or shadow mode, the model serving it, how right the model is on the "
            "device's own recent IOs (live ROC-AUC against the validation one, precision, "
            "recall, drift), and its decision and recording counters; one row per device. "
            "Connects to the daemon's unix socket: the one --config sets, --socket, or by "
            f"default {default_unix_socket()}; or to --target HOST:PORT.", 79),
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE",
                       help="the daemon's TOML config: connect to its server.unix_socket")
    where.add_argument("--socket", metavar="PATH", help="the daemon's unix socket")
    where.add_argument("--target", metavar="HOST:PORT",
                       help="the daemon's TCP listener (server.tcp); TLS with --ca")
    p.add_argument("--ca", metavar="FILE",
                   help="with --target: CA certificate (PEM) to verify the daemon, i.e. TLS")
    p.add_argument("--cert", metavar="FILE",
                   help="with --target: client certificate (PEM), when the daemon asks for "
                        "one (server.tls.client_ca); needs --key")
    p.add_argument("--key", metavar="FILE", help="with --cert: its private key (PEM)")
    p.add_argument("--device", metavar="ALIAS", default="",
                   help="only this device (default: every device)")
    p.add_argument("--json", action="store_true",
                   help="print JSON (every field of the Status RPC) instead of the table")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT_S:g})")
    p.set_defaults(func=cmd_status)
