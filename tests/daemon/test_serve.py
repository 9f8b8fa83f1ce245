"""``mittd serve`` as a process: ready notification, admissions, HUP reloads
(a bad bundle keeps the old model), metrics, TERM drains and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import grpc
import pytest

from mittd.predictor.bundle import load_bundle, save_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.proto import mittd_pb2, mittd_pb2_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    model = tmp_path / "m.mittd"
    save_bundle(synthetic_bundle("precise_linear", 0.95, "node", seed=1), model)
    dev = tmp_path / "disk.img"
    dev.write_bytes(os.urandom(1 << 20))
    sock = tmp_path / "run" / "mittd.sock"
    port = _free_port()
    cfg = tmp_path / "mittd.toml"
    cfg.write_text(
        f'[server]\nunix_socket = "{sock}"\nmetrics = "127.0.0.1:{port}"\n\n'
        f'[devices.d0]\npath = "{dev}"\nmodel = "{model}"\nengine = "csr"\n'
    )
    notify_path = tmp_path / "notify.sock"
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(str(notify_path))
    ns.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    proc = subprocess.Popen([sys.executable, "-m", "mittd.daemon.cli", "serve", "--config",
                             str(cfg), "--grace", "2"], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        msg = ns.recv(4096).decode()
        assert "READY=1" in msg
        yield proc, sock, model, port, ns
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ns.close()


def _admit(sock: Path, rid: int) -> mittd_pb2.AdmitReply:
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        stub = mittd_pb2_grpc.MittdStub(ch)
        return stub.Admit(mittd_pb2.AdmitRequest(device="d0", op=mittd_pb2.OP_READ,
                                                 offset=4096, length=4096,
                                                 deadline_us=500, request_id=rid),
                          timeout=10)


def _recv_until(ns: socket.socket, text: str) -> str:
    got = ""
    while text not in got:
        got += ns.recv(4096).decode()
    return got


def test_serve_reload_and_stop(daemon) -> None:  # type: ignore[no-untyped-def]
    proc, sock, model, port, ns = daemon
    old = load_bundle(model).version_id
    assert _admit(sock, 1).model_version == old
    assert oct(sock.stat().st_mode & 0o777) == oct(0o660)

    # a garbage bundle, then HUP: refused, the old model keeps serving
    good = model.read_bytes()
    model.write_bytes(b"garbage")
    proc.send_signal(signal.SIGHUP)
    _recv_until(ns, "READY=1")
    assert _admit(sock, 2).model_version == old

    # a zip whose manifest is valid JSON of the wrong shape (issue 15): refused too
    model.write_bytes(good)
    with zipfile.ZipFile(model) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    with zipfile.ZipFile(model, "w") as z:
        for name, data in members.items():
            z.writestr(name, b"[1,2,3]" if name == "manifest.json" else data)
    proc.send_signal(signal.SIGHUP)
    _recv_until(ns, "READY=1")
    assert _admit(sock, 4).model_version == old

    # a new good bundle, then HUP: swapped in
    save_bundle(synthetic_bundle("precise_linear", 0.95, "node", seed=2), model)
    new = load_bundle(model).version_id
    assert new != old
    proc.send_signal(signal.SIGHUP)
    _recv_until(ns, "READY=1")
    assert _admit(sock, 3).model_version == new
    del good

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    text = body.decode()
    assert 'mittd_decisions_total{device="d0",outcome="admit"}' in text
    assert "mittd_pending_requests" in text
    assert 'mittd_reloads_total{device="d0",result="refused"} 2.0' in text  # not only logged
    assert 'mittd_reloads_total{device="d0",result="swapped"} 1.0' in text

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "STOPPING=1" in _recv_until(ns, "STOPPING=1")


def test_serve_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\n[devices.d0]\npath = '/nonexistent'\nmodel = '/nope.mittd'\n")
    r = subprocess.run([sys.executable, "-m", "mittd.daemon.cli", "serve", "--config",
                        str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "devices.d0.path" in r.stderr
    time.sleep(0)


def _serve(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mittd.daemon.cli", "serve", "--config",
                           str(cfg)], capture_output=True, text=True, timeout=60)


def test_a_second_daemon_on_the_same_socket_refuses_in_one_line(  # type: ignore[no-untyped-def]
        daemon, tmp_path: Path) -> None:
    _, sock, model, _, _ = daemon
    cfg = tmp_path / "second.toml"
    dev = tmp_path / "disk.img"
    cfg.write_text(f'[server]\nunix_socket = "{sock}"\nmetrics = ""\n'
                   f'[devices.d0]\npath = "{dev}"\nmodel = "{model}"\nengine = "csr"\n')
    r = _serve(cfg)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("mittd: error: cannot listen on unix:") and "another process" in err
    assert _admit(sock, 9).model_version  # the first daemon still serves


def test_a_taken_metrics_port_refuses_in_one_line_and_leaves_no_socket(  # type: ignore[no-untyped-def]
        daemon, tmp_path: Path) -> None:
    _, _, model, port, _ = daemon
    other = tmp_path / "other" / "mittd.sock"
    cfg = tmp_path / "taken.toml"
    cfg.write_text(f'[server]\nunix_socket = "{other}"\nmetrics = "127.0.0.1:{port}"\n'
                   f'[devices.d0]\npath = "{tmp_path / "disk.img"}"\nmodel = "{model}"\n'
                   'engine = "csr"\n')
    r = _serve(cfg)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith(f"mittd: error: cannot serve metrics on 127.0.0.1:{port}: ")
    assert not other.exists()
