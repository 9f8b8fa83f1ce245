"""Issue 15: a real ``mittd serve`` survives the faults an operator or a client can
throw at it, and answers correctly afterwards.

One daemon serves the module (``server.workers = 2``: one AdmitStream at most;
``keep_warm_ms = 20``): HUP with every kind of bad bundle bytes keeps the old model
(same sha256 in Status), counts a refused reload, and a later good bundle swaps
in; N+1 AdmitStreams; idle then burst; a shrunk device with Read past its end;
garbage frames on every RPC. Every call has a deadline: a regression fails, never
hangs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from mittd.predictor.bundle import load_bundle, save_bundle
from mittd.predictor.shipped import shipped_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.proto import ERRNO_METADATA_KEY, mittd_pb2_grpc
from mittd.proto import mittd_pb2 as pb

SIZE = 1 << 20
T = 10.0  # every call's deadline


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.model = root / "m.mittd"
        save_bundle(synthetic_bundle("precise_linear", 0.95, "node", seed=1), self.model)
        self.good = self.model.read_bytes()
        self.dev = root / "disk.img"
        self.dev.write_bytes(os.urandom(SIZE))
        self.sock = root / "run" / "mittd.sock"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cfg = root / "mittd.toml"
        cfg.write_text(
            f'[server]\nunix_socket = "{self.sock}"\nmetrics = "127.0.0.1:{self.port}"\n'
            "workers = 2\nkeep_warm_ms = 20\n\n"
            f'[devices.d0]\npath = "{self.dev}"\nmodel = "{self.model}"\nengine = "csr"\n'
            "direct_io = false\nalignment = 512\n")
        self.ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ns.bind(str(root / "notify.sock"))
        self.ns.settimeout(30)
        env = dict(os.environ, NOTIFY_SOCKET=str(root / "notify.sock"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mittd.daemon.cli", "serve", "--config", str(cfg),
             "--grace", "2"], env=env, stderr=open(root / "stderr.log", "w"))  # noqa: SIM115
        self.wait_for("READY=1")
        self.channel = grpc.insecure_channel(f"unix:{self.sock}")
        self.stub = mittd_pb2_grpc.MittdStub(self.channel)

    def wait_for(self, text: str) -> None:
        got = ""
        while text not in got:
            got += self.ns.recv(4096).decode()

    def hup(self) -> None:
        """HUP, then wait for the reload's READY=1 (sent whether it swapped or not)."""
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for("READY=1")

    def status(self) -> pb.DeviceStatus:
        return self.stub.Status(pb.StatusRequest(device="d0"), timeout=T).devices[0]

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        return urllib.request.urlopen(url, timeout=T).read().decode()

    def metric(self, line_start: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def refused(self) -> float:
        return self.metric('mittd_reloads_total{device="d0",result="refused"}')

    def put(self, content: bytes | str | None) -> None:
        """The bundle path becomes ``content``: bytes, None (missing) or "dir"."""
        if self.model.is_dir():
            shutil.rmtree(self.model)
        elif self.model.exists():
            self.model.unlink()
        if content == "dir":
            self.model.mkdir()
            (self.model / "manifest.json").write_text("{}")
        elif isinstance(content, bytes):
            self.model.write_bytes(content)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.ns.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("faults"))
    yield d
    d.close()
    assert d.proc.returncode == 0, (d.root / "stderr.log").read_text()[-2000:]
    log = (d.root / "stderr.log").read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(autouse=True)
def still_up(daemon: Daemon) -> Iterator[None]:
    yield
    assert daemon.proc.poll() is None, (daemon.root / "stderr.log").read_text()[-2000:]
    assert daemon.stub.Echo(pb.EchoRequest(request=pb.AdmitRequest(request_id=5)),
                            timeout=T).reply.request_id == 5


def admit(rid: int, **kw: object) -> pb.AdmitRequest:
    args: dict = {"device": "d0", "op": pb.OP_READ, "offset": 4096, "length": 4096,
                  "deadline_us": 600, "request_id": rid, **kw}
    return pb.AdmitRequest(**args)


# -- HUP with bad bundles ----------------------------------------------------------------

def _zip_with(good: bytes, manifest: Callable[[dict], object]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    m = json.loads(members["manifest.json"])
    new = manifest(m)
    members["manifest.json"] = json.dumps(m if new is None else new).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _other_featuriser(good: bytes, root: Path) -> bytes:
    """A bundle whose featuriser is another model's (LinnOS: 31 inputs, not 352)."""
    mine = root / "mine.mittd"
    mine.write_bytes(good)
    b = load_bundle(mine)
    other = load_bundle(shipped_bundle("linnos"))
    try:
        save_bundle(dataclasses.replace(b, featuriser=other.featuriser), root / "other.mittd")
    except Exception:  # save_bundle refuses it: edit the manifest instead
        return _zip_with(good, lambda m: m.update(featuriser=other.featuriser))
    return (root / "other.mittd").read_bytes()


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            m = m[p]
        m[last] = value

    return edit


BAD: dict[str, Callable[[bytes, Path], bytes | str | None]] = {
    "empty file": lambda g, r: b"",
    "random bytes": lambda g, r: os.urandom(4096),
    "truncated zip": lambda g, r: g[:len(g) // 2],
    "zip, only a local header": lambda g, r: g[:64],
    "manifest [1,2,3]": lambda g, r: _zip_with(g, lambda m: [1, 2, 3]),
    'manifest "x"': lambda g, r: _zip_with(g, lambda m: "x"),
    "manifest {}": lambda g, r: _zip_with(g, lambda m: {}),
    "graph as a list": lambda g, r: _zip_with(g, _set("graph", [1, 2])),
    "thresholds NaN": lambda g, r: _zip_with(g, _set("thresholds.latency_us", [float("nan")])),
    "thresholds strings": lambda g, r: _zip_with(g, _set("thresholds.p_slow", ["high"])),
    "layers missing": lambda g, r: _zip_with(g, lambda m: m.pop("layers")),
    "a directory": lambda g, r: "dir",
    "a missing file": lambda g, r: None,
    "another featuriser": _other_featuriser,
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_bundle_on_hup_keeps_the_old_model(daemon: Daemon, case: str) -> None:
    before = daemon.status()
    refused = daemon.refused()
    daemon.put(BAD[case](daemon.good, daemon.root))
    daemon.hup()
    after = daemon.status()
    assert after.model_sha256 == before.model_sha256 and after.model_version
    assert daemon.refused() == refused + 1
    reply = daemon.stub.Admit(admit(100 + list(BAD).index(case)), timeout=T)
    assert reply.model_version == before.model_version
    daemon.stub.Complete(pb.CompleteRequest(device="d0", request_id=reply.request_id,
                                            latency_us=50.0), timeout=T)
    daemon.put(daemon.good)


def test_a_good_bundle_swaps_in_after_the_bad_ones(daemon: Daemon) -> None:
    old = daemon.status().model_sha256
    swapped = daemon.metric('mittd_reloads_total{device="d0",result="swapped"}')
    save_bundle(synthetic_bundle("precise_linear", 0.95, "node", seed=2), daemon.model)
    daemon.hup()
    new = daemon.status()
    assert new.model_sha256 != old
    assert daemon.metric('mittd_reloads_total{device="d0",result="swapped"}') == swapped + 1
    assert daemon.stub.Admit(admit(200), timeout=T).model_version == new.model_version
    daemon.good = daemon.model.read_bytes()


# -- streams, idle, shrink, garbage ---------------------------------------------------------

class Stream:
    def __init__(self, daemon: Daemon) -> None:
        self.q: queue.SimpleQueue[pb.AdmitBatch | None] = queue.SimpleQueue()
        self.call = daemon.stub.AdmitStream(iter(self.q.get, None), timeout=30)

    def send(self, *rids: int) -> list[int]:
        self.q.put(pb.AdmitBatch(requests=[admit(r) for r in rids],
                                 completions=[pb.CompleteRequest(device="d0", request_id=r,
                                                                 latency_us=10.0)
                                              for r in rids]))
        return [r.request_id for r in next(self.call).replies]

    def end(self) -> None:
        self.q.put(None)


def test_n_plus_one_streams(daemon: Daemon) -> None:
    first = Stream(daemon)
    assert first.send(300) == [300]
    second = Stream(daemon)
    with pytest.raises(grpc.RpcError) as ei:
        next(second.call)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.workers = 2" in ei.value.details()
    second.end()
    assert daemon.stub.Admit(admit(301), timeout=T).request_id == 301  # unary still served
    first.end()
    assert list(first.call) == []
    end = time.monotonic() + 5
    while True:  # the slot is freed when the server has finished the first stream
        again = Stream(daemon)
        try:
            assert again.send(302) == [302]
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < end
            time.sleep(0.05)
    again.end()
    assert list(again.call) == []


def test_idle_then_burst(daemon: Daemon) -> None:
    s0 = daemon.status()
    end = time.monotonic() + 5
    while daemon.status().warm_ticks <= s0.warm_ticks and time.monotonic() < end:
        time.sleep(0.05)  # idle: the keep-warm thread ticks (keep_warm_ms = 20)
    s1 = daemon.status()
    assert s1.warm_ticks > s0.warm_ticks
    assert (s1.admitted, s1.rejected) == (s0.admitted, s0.rejected)  # a tick decides nothing
    n = 32
    col = pb.AdmitColumns(device="d0", op=[pb.OP_READ] * n,
                          offset=[4096 * i for i in range(n)], length=[4096] * n,
                          deadline_us=[600], request_id=list(range(400, 400 + n)))
    reply = next(daemon.stub.AdmitStream(iter([pb.AdmitBatch(columns=[col])]), timeout=T))
    (c,) = reply.columns
    assert len(c.decision) == n and set(c.decision) <= {pb.ADMIT, pb.EBUSY}
    below = daemon.stub.Admit(admit(500, deadline_us=1), timeout=T)  # below the model
    assert below.decision == pb.EBUSY and below.threshold_index == 0 and below.p_slow == 0.0
    s2 = daemon.status()
    assert s2.admitted + s2.rejected == s1.admitted + s1.rejected + n + 1
    assert s2.below_model == s1.below_model + 1 and s2.cold_overruns <= s2.overruns
    admitted = [400 + i for i, d in enumerate(c.decision) if d == pb.ADMIT]
    done = pb.CompleteColumns(device="d0", request_id=admitted, latency_us=[50.0] * len(admitted))
    list(daemon.stub.AdmitStream(iter([pb.AdmitBatch(completion_columns=[done])]), timeout=T))
    text = daemon.metrics()
    for name in ("mittd_below_model_total", "mittd_cold_overruns_total",
                 "mittd_warm_ticks_total"):
        assert f'{name}{{device="d0"}}' in text


def test_a_shrunk_device_then_read_past_its_end(daemon: Daemon) -> None:
    read = lambda rid, off: daemon.stub.Read(  # noqa: E731
        pb.ReadRequest(device="d0", offset=off, length=4096, deadline_us=10**9,
                       request_id=rid), timeout=T)
    assert len(read(600, SIZE - 4096).data) == 4096
    with open(daemon.dev, "r+b") as f:
        f.truncate(SIZE // 4)
    daemon.hup()
    with pytest.raises(grpc.RpcError) as ei:
        read(601, SIZE - 4096)
    assert ei.value.code() == grpc.StatusCode.INTERNAL  # the size is cached: the OS says
    assert dict(ei.value.trailing_metadata() or ())[ERRNO_METADATA_KEY] == "5"  # EIO
    assert "\n" not in ei.value.details()
    assert len(read(601, 0).data) == 4096  # the id was released
    with open(daemon.dev, "r+b") as f:
        f.truncate(SIZE)


UNARY = {"Admit": "AdmitRequest", "Complete": "CompleteRequest", "Read": "ReadRequest",
         "Echo": "EchoRequest", "Describe": "DescribeRequest", "Status": "StatusRequest"}


def test_garbage_frames_on_every_rpc(daemon: Daemon) -> None:
    garbage = b"\xff" * 7
    for method, message in UNARY.items():
        call = daemon.channel.unary_unary(f"/mittd.v1.Mittd/{method}",
                                          request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as ei:
            call(garbage, timeout=T)
        assert (ei.value.code(), ei.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {message}")
    stream = daemon.channel.stream_stream("/mittd.v1.Mittd/AdmitStream",
                                          request_serializer=None, response_deserializer=None)
    good = pb.AdmitBatch(requests=[admit(700)],
                         completions=[]).SerializeToString()
    replies = stream(iter([good, garbage]), timeout=T)
    assert pb.AdmitBatchReply.FromString(next(replies)).replies[0].request_id == 700
    with pytest.raises(grpc.RpcError) as ei:
        next(replies)
    assert (ei.value.code(), ei.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "batch[1]: request is not a valid AdmitBatch")
    text = daemon.metrics()
    for method in (*UNARY, "AdmitStream"):
        assert f'mittd_bad_requests_total{{method="{method}"}} 1.0' in text, method
    assert daemon.stub.Admit(admit(701), timeout=T).request_id == 701
