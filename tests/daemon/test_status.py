"""The Status RPC, ``Client.status`` and ``mittd status``, against a real server.

One in-process server on a unix socket serves the module. Its bundle claims a
validation ROC-AUC of 0.95. Device "shadow" (cutoff 1e-9: the model calls every
IO slow) runs in shadow mode and is fed at setup with 60 IOs completed so that
the 20 the model scored LOWEST are the slow ones: every figure of its live
quality is then known (precision 1/3, recall 1, would-reject share 1, ROC-AUC
near 0, drift). Device "disk" (enforce) gets no IO: every ratio is undefined.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mittd.daemon import cli
from mittd.daemon.admission import AdmissionCore
from mittd.daemon.client import Client, DeviceStatus, MittdUnavailable
from mittd.daemon.config import Config, parse_config
from mittd.daemon.devices import load_devices
from mittd.daemon.service import MittdServicer, build_server
from mittd.daemon.status import COLUMNS
from mittd.predictor.bundle import save_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.proto import mittd_pb2 as pb
from mittd.proto import mittd_pb2_grpc
from tests.conftest import run_cli

SIZE = 4 << 20
VALIDATION_AUC = 0.95
N_IOS, N_SLOW = 60, 20
SLOW_US, FAST_US = 2000.0, 100.0  # the bundle's latency threshold is 500 µs


def make_config(root: Path, **server: Any) -> Config:
    """Two devices on one 4 MiB file: "disk" (the bundle's cutoff) and "shadow"
    (cutoff 1e-9, no reject cap), the bundle claiming a validation ROC-AUC;
    ``server``: more [server] keys."""
    model = root / "model.mittd"
    if not model.exists():
        b = synthetic_bundle("precise_linear")  # dense: its scores differ per IO
        b.provenance["test_metrics"] = {"roc_auc": VALIDATION_AUC}
        save_bundle(b, model)
    dev = root / "dev.img"
    if not dev.exists():
        dev.write_bytes(os.urandom(SIZE))
    common = {"path": str(dev), "model": str(model), "engine": "dense"}
    raw = {"server": {"unix_socket": str(root / "run" / "mittd.sock"), "metrics": "",
                      "drift_windows": 1, **server},  # drift on one window of 60 IOs
           "devices": {"disk": common,
                       "shadow": {**common, "decision_threshold": 1e-9,
                                  "max_reject_share": 1.0}}}
    return parse_config(raw, root / "mittd.toml")


def make_core(config: Config) -> AdmissionCore:
    core = AdmissionCore(load_devices(config), predict_budget_us=1e6)  # never fail open
    core.set_mode("shadow", "shadow")
    return core


def feed_shadow(admit: Any, complete: Any) -> None:
    """60 IOs on "shadow"; the 20 with the lowest P(slow) complete slow.

    ``admit(rid, offset) -> p_slow``; ``complete(rid, latency_us)``.
    """
    p = {rid: admit(rid, 4096 * (7 * rid % 1000)) for rid in range(1, N_IOS + 1)}
    slow = set(sorted(p, key=p.__getitem__)[:N_SLOW])
    for rid in p:
        complete(rid, SLOW_US if rid in slow else FAST_US)


class Server:
    def __init__(self, root: Path, **server: Any) -> None:
        self.config = make_config(root, **server)
        self.core = make_core(self.config)
        self.servicer = MittdServicer(self.core, self.config)
        self.server, _ = build_server(self.core, self.config, max_workers=4,
                                      servicer=self.servicer)
        self.socket = self.config.server.unix_socket
        self.target = f"unix:{self.socket}"
        self.channel = grpc.insecure_channel(self.target)
        self.stub = mittd_pb2_grpc.MittdStub(self.channel)

        def admit(rid: int, offset: int) -> float:
            r = self.stub.Admit(pb.AdmitRequest(device="shadow", op=pb.OP_READ, offset=offset,
                                                length=4096, request_id=rid))
            assert r.decision == pb.ADMIT  # shadow mode never rejects
            return r.p_slow

        def complete(rid: int, latency_us: float) -> None:
            assert self.stub.Complete(pb.CompleteRequest(device="shadow", request_id=rid,
                                                         latency_us=latency_us)).known

        feed_shadow(admit, complete)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(None)
        self.servicer.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("status"))
    yield s
    s.close()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``mittd ARGS`` in this process (the server is a thread of it)."""
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- the RPC ---------------------------------------------------------------------------


def test_status_reports_the_shadow_device(srv: Server) -> None:
    (d,) = srv.stub.Status(pb.StatusRequest(device="shadow")).devices
    q = srv.core.quality("shadow")
    st = srv.core.stats()["shadow"]
    assert d.device == "shadow" and d.mode == "shadow"
    assert d.model_version == st.model_version and "@" in d.model_version
    assert d.model_sha256 == st.model_sha256 and len(d.model_sha256) == 64
    assert (d.window, d.decided, d.labelled, d.slow) == (q.window, N_IOS, N_IOS, N_SLOW)
    assert d.precision == pytest.approx(N_SLOW / N_IOS)
    assert d.recall == 1.0 and d.would_reject_share == 1.0
    assert d.roc_auc == q.roc_auc and d.roc_auc < 0.5  # the slow IOs were scored lowest
    assert d.validation_roc_auc == VALIDATION_AUC and d.drift_margin == q.drift_margin
    assert d.drift and (d.drift_windows, d.windows_below) == (1, 1)
    assert (d.admitted, d.rejected, d.shadow_rejects) == (N_IOS, 0, N_IOS)
    assert d.reject_share == pytest.approx(st.reject_share) and d.reject_share > 0
    assert (d.fail_open, d.overruns, d.probes, d.capped, d.pending) == (0, 0, 0, 0, 0)
    assert (d.records_written, d.records_dropped) == (st.records_written, st.records_dropped)


def test_status_of_every_device_in_config_order(srv: Server) -> None:
    devices = srv.stub.Status(pb.StatusRequest()).devices
    assert [d.device for d in devices] == ["disk", "shadow"]
    disk = devices[0]
    assert disk.mode == "enforce" and disk.decided == 0 and disk.labelled == 0
    assert not disk.drift and disk.admitted == 0 and disk.shadow_rejects == 0
    # undefined figures travel as NaN, never as a plausible-looking 0
    for name in ("roc_auc", "precision", "recall", "would_reject_share"):
        assert math.isnan(getattr(disk, name)), name
    assert disk.validation_roc_auc == VALIDATION_AUC


def test_status_of_an_unknown_device_is_not_found(srv: Server) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        srv.stub.Status(pb.StatusRequest(device="nvme9"))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nvme9" in ei.value.details()


def test_status_follows_a_mode_switch(srv: Server) -> None:
    srv.core.set_mode("disk", "shadow")
    try:
        (d,) = srv.stub.Status(pb.StatusRequest(device="disk")).devices
        assert d.mode == "shadow"
    finally:
        srv.core.set_mode("disk", "enforce")


# -- the client ------------------------------------------------------------------------


def test_client_status(srv: Server) -> None:
    with Client(srv.target, timeout_s=10) as c:
        every = c.status()
        (one,) = c.status("shadow")
        with pytest.raises(MittdUnavailable) as ei:
            c.status("nvme9")
    assert [d.device for d in every] == ["disk", "shadow"]
    assert isinstance(one, DeviceStatus) and one == every[1]
    assert one.mode == "shadow" and one.drift is True and one.shadow_rejects == N_IOS
    assert isinstance(one.roc_auc, float) and isinstance(one.labelled, int)
    assert math.isnan(every[0].roc_auc)
    assert set(one._asdict()) == set(pb.DeviceStatus.DESCRIPTOR.fields_by_name)
    assert ei.value.code == grpc.StatusCode.NOT_FOUND and not ei.value.daemon_down


# -- mittd status ----------------------------------------------------------------------


def test_cli_prints_a_table(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "status", "--socket", str(srv.socket))
    assert rc == 0, err
    header, disk, shadow = out.splitlines()
    assert header.split()[:3] == ["DEVICE", "MODE", "MODEL"]
    for h, _ in COLUMNS:
        assert h in header
    version = srv.core.stats()["shadow"].model_version
    auc = srv.core.quality("shadow").roc_auc
    assert shadow.split()[:4] == ["shadow", "shadow", version, str(N_IOS)]
    assert f"{auc:.3f} ({VALIDATION_AUC:.3f})" in shadow
    assert " yes (1/1) " in shadow and "100.0%" in shadow  # drift; would-be reject share
    assert disk.split()[:4] == ["disk", "enforce", version, "0"]
    assert " no " in disk and " - " in disk  # undefined figures print as "-"


def test_cli_json_and_device_filter(srv: Server, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "status", "--socket", str(srv.socket), "--json")
    assert rc == 0, err
    doc = json.loads(out)  # strict JSON: NaN is null
    assert "NaN" not in out
    assert doc["target"] == srv.target
    disk, shadow = doc["devices"]
    assert disk["device"] == "disk" and disk["roc_auc"] is None and disk["precision"] is None
    assert shadow["mode"] == "shadow" and shadow["drift"] is True
    assert shadow["shadow_rejects"] == N_IOS and shadow["slow"] == N_SLOW
    assert shadow["validation_roc_auc"] == VALIDATION_AUC
    assert len(shadow["model_sha256"]) == 64

    # --config: the socket its server.unix_socket names (devices need not be readable)
    cfg = tmp_path / "mittd.toml"
    cfg.write_text(f'[server]\nunix_socket = "{srv.socket}"\n\n'
                   '[devices.x]\npath = "/nonexistent"\nmodel = "/nonexistent"\n')
    rc, out, err = run(capsys, "status", "--config", str(cfg), "--json", "--device", "shadow")
    assert rc == 0, err
    assert [d["device"] for d in json.loads(out)["devices"]] == ["shadow"]


def test_cli_unknown_device(srv: Server, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "status", "--socket", str(srv.socket), "--device", "nvme9")
    assert rc == 2 and out == ""
    assert err.strip() == (f"mittd: error: the daemon at {srv.target} has no device 'nvme9'")


def test_cli_without_a_daemon_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    r = run_cli("status", "--socket", str(missing))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "socket does not exist" in r.stderr and str(missing) in r.stderr


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a socket left behind by a dead daemon: nothing accepts on it
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    rc, _, err = run(capsys, "status", "--socket", str(stale), "--timeout", "3")
    assert rc == 2 and err.startswith(f"mittd: error: cannot reach a daemon at unix:{stale}")
    assert err.count("\n") == 1

    cases = {
        ("--socket", str(tmp_path)): "is not a socket",
        ("--config", str(tmp_path / "no.toml")): "no such config file",
        ("--target", "127.0.0.1:1", "--cert", "c.pem"): "--cert and --key go together",
        ("--socket", str(stale), "--ca", "ca.pem"): "apply to --target (TCP) only",
        ("--target", "127.0.0.1:1", "--ca", str(tmp_path / "ca.pem")): "--ca",
    }
    for args, words in cases.items():
        rc, out, err = run(capsys, "status", *args)
        assert rc == 2 and out == "", args
        assert err.startswith("mittd: error: ") and words in err, (args, err)
        assert err.count("\n") == 1, err

    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nunix_socket = "relative.sock"\n')
    rc, _, err = run(capsys, "status", "--config", str(bad))
    assert rc == 2 and "must be an absolute path" in err


def test_cli_help_explains_every_column(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        cli.main(["status", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for h, _ in COLUMNS:
        assert f"  {h}  " in out, h
    for flag in ("--config", "--socket", "--target", "--device", "--json"):
        assert flag in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _certificates(root: Path) -> None:
    """A CA, a server certificate for localhost and a client certificate, in ``root``."""
    for name, subj, ext in (("ca", "/CN=mittd-test-ca", None),
                            ("server", "/CN=localhost",
                             "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                            ("client", "/CN=client", None)):
        subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        f"{name}.key", "-subj", subj, "-out", f"{name}.csr"], cwd=root,
                       check=True, capture_output=True, timeout=60)
        sign = (["-signkey", "ca.key"] if name == "ca"
                else ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
        extra = ["-extfile", "/dev/stdin"] if ext else []
        subprocess.run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-days", "2",
                        *sign, *extra, "-out", f"{name}.pem"], cwd=root, check=True,
                       capture_output=True, input=(ext or "").encode(), timeout=60)


def test_cli_over_tcp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    s = Server(tmp_path, tcp=f"127.0.0.1:{port}")
    try:
        rc, out, err = run(capsys, "status", "--target", f"127.0.0.1:{port}", "--json")
        assert rc == 0, err
        assert [d["device"] for d in json.loads(out)["devices"]] == ["disk", "shadow"]
    finally:
        s.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_cli_over_tls_with_a_client_certificate(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _certificates(tmp_path)
    port = _free_port()
    s = Server(tmp_path, tcp=f"127.0.0.1:{port}",
               tls={"cert": "server.pem", "key": "server.key", "client_ca": "ca.pem"})
    target = f"127.0.0.1:{port}"
    ca, cert, key = (str(tmp_path / f) for f in ("ca.pem", "client.pem", "client.key"))
    try:
        rc, out, err = run(capsys, "status", "--target", target, "--ca", ca, "--cert", cert,
                           "--key", key, "--device", "shadow", "--json")
        assert rc == 0, err
        assert json.loads(out)["devices"][0]["mode"] == "shadow"
        # no client certificate: the daemon refuses the handshake; one line, exit 2
        rc, out, err = run(capsys, "status", "--target", target, "--ca", ca)
        assert rc == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"mittd: error: cannot reach a daemon at {target}")
    finally:
        s.close()
