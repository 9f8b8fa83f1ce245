"""``mittd serve`` as a process under abuse: garbage on the socket, clients that
vanish mid-stream, sustained load with missing completions (memory and pending
stay bounded), HUP reloads under load, kill -9 behind a ReplicaSet, TERM under
load. Every loop is bounded in count and in time."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from mittd.daemon.client import Client, MittdBusy, ReplicaSet, columns_batch
from mittd.predictor.bundle import load_bundle, save_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.proto import mittd_pb2, mittd_pb2_grpc

DEV_SIZE = 1 << 20
CAPACITY = 4096  # the featuriser's pending capacity (config max_pending_per_device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mittd:
    proc: subprocess.Popen[bytes]
    sock: Path
    cfg: Path
    port: int
    ns: socket.socket
    log: Path

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        got = ""
        end = time.monotonic() + timeout
        while text not in got:
            self.ns.settimeout(max(0.01, end - time.monotonic()))
            got += self.ns.recv(4096).decode()
        return got

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        assert m is not None
        return int(m.group(1))

    def metric(self, name: str) -> float:
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                      timeout=10).read().decode()
        m = re.search(rf"^{name}\{{device=\"d0\"\}} (\S+)$", body, re.M)
        assert m is not None, body[:2000]
        return float(m.group(1))


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Mittd]]:
    """Start ``mittd serve`` processes (own config, socket, notify socket, log each),
    waiting for READY=1; every one still alive is killed at teardown."""
    started: list[Mittd] = []
    dev = tmp_path / "disk.img"
    dev.write_bytes(os.urandom(DEV_SIZE))

    def start(name: str, model: Path, grace: float = 2.0) -> Mittd:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        sock = d / "run" / "mittd.sock"
        port = _free_port()
        cfg = d / "mittd.toml"
        cfg.write_text(
            f'[server]\nunix_socket = "{sock}"\nmetrics = "127.0.0.1:{port}"\n\n'
            f'[devices.d0]\npath = "{dev}"\nmodel = "{model}"\nengine = "csr"\n'
            "direct_io = false\n"
        )
        notify_path = d / "notify.sock"
        if notify_path.exists():
            notify_path.unlink()
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(str(notify_path))
        log = d / "stderr.log"
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        with log.open("ab") as err:
            proc = subprocess.Popen([sys.executable, "-m", "mittd.daemon.cli", "serve",
                                     "--config", str(cfg), "--grace", str(grace)],
                                    env=env, stderr=err)
        m = Mittd(proc, sock, cfg, port, ns, log)
        started.append(m)
        assert "READY=1" in m.wait_for("READY=1"), log.read_text()
        return m

    try:
        yield start
    finally:
        for m in started:
            if m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait()
            m.ns.close()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    p = tmp_path / "m.mittd"
    save_bundle(synthetic_bundle("precise_linear", 0.95, "node", seed=1), p)
    return p


def _req(rid: int, deadline_us: int = 500) -> mittd_pb2.AdmitRequest:
    return mittd_pb2.AdmitRequest(device="d0", op=mittd_pb2.OP_READ,
                                  offset=(rid % 255) * 4096, length=4096,
                                  deadline_us=deadline_us, request_id=rid)


def _admit_ok(sock: Path, rid: int) -> mittd_pb2.AdmitReply:
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        return mittd_pb2_grpc.MittdStub(ch).Admit(_req(rid), timeout=10)


def test_garbage_bytes_on_the_socket(spawn, model: Path) -> None:  # type: ignore[no-untyped-def]
    m = spawn("a", model)
    rng = random.Random(7)
    payloads = [bytes(rng.randrange(256) for _ in range(n)) for n in (1, 64, 4096, 65536)]
    payloads.append(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    payloads.append(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(rng.randrange(256)
                                                            for _ in range(512)))
    for p in payloads:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(m.sock))
            try:
                s.sendall(p)
                s.recv(4096)  # whatever the server answers (GOAWAY, or a close)
            except OSError:
                pass  # a reset is a fine answer to garbage
    assert m.proc.poll() is None
    assert _admit_ok(m.sock, 1).request_id == 1
    assert m.proc.poll() is None


def test_client_drops_mid_stream(spawn, model: Path) -> None:  # type: ignore[no-untyped-def]
    m = spawn("a", model)
    for round_ in range(3):
        ch = grpc.insecure_channel(f"unix:{m.sock}")
        stub = mittd_pb2_grpc.MittdStub(ch)
        gate = threading.Event()

        def batches(base: int = round_ * 10_000, gate: threading.Event = gate
                    ) -> Iterator[mittd_pb2.AdmitBatch]:
            yield mittd_pb2.AdmitBatch(requests=[_req(base + i) for i in range(64)])
            gate.wait(10)  # never half-closes: the channel is dropped under it

        call = stub.AdmitStream(batches(), timeout=30)
        assert len(next(call).replies) == 64
        ch.close()  # drop the channel with the stream still open
        gate.set()
    assert m.proc.poll() is None
    assert _admit_ok(m.sock, 99_999).request_id == 99_999
    assert m.proc.poll() is None


# 1,000,000 admissions (977 batches of 1,024, as AdmitColumns: the high-rate
# path), ~244x the pending tracker's capacity, completions sent for half of them;
# a few seconds at 200k+/s. The stream also stops sending after LOAD_S seconds (a
# slower or busy machine), and then must still have carried at least MIN_LOAD.
N_LOAD = 1_000_448
LOAD_S = 42.0
MIN_LOAD = 200_000
BATCH = 1024


def test_load_with_missing_completions(spawn, model: Path) -> None:  # type: ignore[no-untyped-def]
    m = spawn("a", model)
    n_batches = N_LOAD // BATCH
    rss: dict[str, int] = {}
    pending: list[float] = []

    t0 = time.monotonic()
    offsets = (np.arange(BATCH) * 7919 % 256) * 4096  # the device is 1 MiB

    def batches() -> Iterator[mittd_pb2.AdmitBatch]:
        for b in range(n_batches):
            if time.monotonic() - t0 > LOAD_S:
                return
            ids = 1 + b * BATCH + np.arange(BATCH)
            # complete the even ids of the previous batch: half never complete
            done = (ids[::2] - BATCH, np.full(BATCH // 2, 100.0)) if b else None
            yield columns_batch("d0", offsets, 4096, ids, 500, completed=done)

    got = 0
    with grpc.insecure_channel(f"unix:{m.sock}") as ch:
        stub = mittd_pb2_grpc.MittdStub(ch)
        for i, reply in enumerate(stub.AdmitStream(batches(), timeout=LOAD_S + 15)):
            assert len(reply.columns[0].decision) == BATCH
            got += BATCH
            if i + 1 == n_batches // 10:
                rss["first"] = m.rss_kib()
            if (i + 1) % 20 == 0:
                pending.append(m.metric("mittd_pending_requests"))
    elapsed = time.monotonic() - t0
    rss["end"] = m.rss_kib()
    pending.append(m.metric("mittd_pending_requests"))
    assert got >= MIN_LOAD
    growth_mib = (rss["end"] - rss["first"]) / 1024
    print(f"\n{got} admissions in {elapsed:.1f} s = {got / elapsed:.0f}/s; RSS "
          f"{rss['first'] / 1024:.1f} -> {rss['end'] / 1024:.1f} MiB "
          f"(+{growth_mib:.1f}); pending max {max(pending):.0f}")
    assert growth_mib < 50
    assert max(pending) <= CAPACITY
    assert m.proc.poll() is None


def test_hup_under_load(spawn, model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    m = spawn("a", model)
    old = load_bundle(model).version_id
    stop = threading.Event()
    failures: list[BaseException] = []
    versions: list[str] = []
    calls = [0, 0]  # ok, busy

    def load() -> None:
        with Client(f"unix:{m.sock}", timeout_s=5.0) as c:
            end = time.monotonic() + 40
            while not stop.is_set() and time.monotonic() < end and calls[0] < 1_000_000:
                try:
                    a = c.admit("d0", 4096, 4096, 500)
                    versions.append(a.model_version)
                    calls[0] += 1
                    c.complete("d0", a.request_id, 100.0)
                except MittdBusy:
                    calls[1] += 1
                except Exception as e:  # every other failure counts
                    failures.append(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        staged = tmp_path / "staged.mittd"
        save_bundle(synthetic_bundle("precise_linear", 0.95, "node", seed=2), staged)
        new = load_bundle(staged).version_id
        assert new != old
        os.replace(staged, model)  # atomic: a reload never reads half a bundle
        for _ in range(2):
            m.proc.send_signal(signal.SIGHUP)
            m.wait_for("READY=1")
            time.sleep(0.2)
        seen_new = len(versions)
        staged.write_bytes(b"garbage" * 100)
        os.replace(staged, model)
        m.proc.send_signal(signal.SIGHUP)
        m.wait_for("READY=1")
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert failures == [], failures[:3]
    assert calls[0] > 50
    assert old in versions[:seen_new] and new in versions
    assert set(versions[seen_new:]) == {new}  # the garbage bundle was refused
    assert _admit_ok(m.sock, 1).model_version == new
    assert m.proc.poll() is None
    assert "refused" in m.log.read_text()


def test_kill_9_and_restart_behind_a_replica_set(spawn, model: Path) -> None:  # type: ignore[no-untyped-def]
    a = spawn("a", model)
    b = spawn("b", model)
    ca = Client(f"unix:{a.sock}", timeout_s=2.0)
    cb = Client(f"unix:{b.sock}", timeout_s=2.0)
    rs = ReplicaSet([(ca, "d0"), (cb, "d0")])
    blob = Path(a.cfg.parent.parent / "disk.img").read_bytes()
    # a deadline beyond every threshold: replica 0 admits without predicting
    far = 3_600 * 1_000_000
    try:
        r = rs.read(0, 4096, far)
        assert r.replica == 0 and r.data == blob[:4096]

        a.proc.kill()
        assert a.proc.wait(10) == -signal.SIGKILL
        for i in range(20):
            r = rs.read(i * 4096, 4096, far)
            assert r.replica == 1 and r.data == blob[i * 4096:(i + 1) * 4096]
        assert rs.stats()["unavailable_failovers"] == 20

        a2 = spawn("a", model)  # same config and socket (the stale socket is replaced)
        assert a2.sock == a.sock
        end = time.monotonic() + 20
        while time.monotonic() < end:  # the channel reconnects after its backoff
            r = rs.read(0, 4096, far)
            if r.replica == 0:
                break
            time.sleep(0.2)
        assert r.replica == 0
        for i in range(10):
            assert rs.read(i * 4096, 4096, far).replica == 0
    finally:
        rs.close()
        ca.close()
        cb.close()


def test_term_under_load_drains_the_stream(spawn, model: Path) -> None:  # type: ignore[no-untyped-def]
    m = spawn("a", model, grace=20.0)
    n_batches = 60
    started = threading.Event()
    received = [0]
    result: dict[str, object] = {}

    def batches() -> Iterator[mittd_pb2.AdmitBatch]:
        for b in range(n_batches):
            base = 1 + b * BATCH
            yield mittd_pb2.AdmitBatch(requests=[_req(base + i) for i in range(BATCH)])

    def run() -> None:
        replies = 0
        try:
            with grpc.insecure_channel(f"unix:{m.sock}") as ch:
                stub = mittd_pb2_grpc.MittdStub(ch)
                for reply in stub.AdmitStream(batches(), timeout=60):
                    assert len(reply.replies) == BATCH
                    replies += 1
                    received[0] = replies
                    started.set()
            result["status"] = grpc.StatusCode.OK
        except grpc.RpcError as e:
            result["status"] = e.code()
        finally:
            result["replies"] = replies
            started.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(30)
    m.proc.send_signal(signal.SIGTERM)
    at_term = received[0]
    t.join(60)
    assert not t.is_alive()
    assert m.proc.wait(timeout=60) == 0
    status, replies = result["status"], result["replies"]
    assert at_term < n_batches  # the stream was in flight when TERM arrived
    assert replies == n_batches and status == grpc.StatusCode.OK, (status, replies)
    assert "STOPPING=1" in m.wait_for("STOPPING=1")
