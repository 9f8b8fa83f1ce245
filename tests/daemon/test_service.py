"""The gRPC service end to end: an in-process server on a unix socket, a real client.

One server serves the module (starting gRPC per test would dominate the run);
tests that poke at the core restore it. The device is a 4 MiB file of random
bytes; "disk" uses the bundle's own decision threshold and "busy" a threshold
of 1e-9, so every prediction on it is EBUSY.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mittd.daemon.admission import AdmissionCore
from mittd.daemon.config import Config, parse_config
from mittd.daemon.devices import load_devices
from mittd.daemon.proxy import DeviceReader
from mittd.daemon.service import MittdServicer, build_server
from mittd.predictor.bundle import save_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.proto import (
    EBUSY_ERRNO,
    ERRNO_METADATA_KEY,
    P_SLOW_METADATA_KEY,
    SERVICE_NAME,
    mittd_pb2_grpc,
)
from mittd.proto import mittd_pb2 as pb

SIZE = 4 << 20
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def make_config(root: Path, **server: Any) -> Config:
    model = root / "model.mittd"
    if not model.exists():
        save_bundle(synthetic_bundle("precise_linear", 0.95, "node"), model)
    dev = root / "dev.img"
    if not dev.exists():
        dev.write_bytes(os.urandom(SIZE))
    common = {"path": str(dev), "model": str(model), "engine": "dense"}
    raw = {"server": {"unix_socket": str(root / "run" / "mittd.sock"),
                      "max_stream_batch": 8, "max_read_bytes": 1 << 20, **server},
           "devices": {"disk": common, "busy": {**common, "decision_threshold": 1e-9,
                                                      "max_reject_share": 1.0}}}
    return parse_config(raw, root / "mittd.toml")


def make_core(config: Config) -> AdmissionCore:
    states = load_devices(config)
    # a generous budget: a slow first prediction must not fail open (admit) in a test
    return AdmissionCore(states, predict_budget_us=1e6)


class Server:
    """A daemon's gRPC server in this process, on the test config (also the stream
    limit tests' server, with fewer workers)."""

    def __init__(self, root: Path, workers: int = 4, **server: Any) -> None:
        self.config = make_config(root, **server)
        self.core = make_core(self.config)
        self.servicer = MittdServicer(self.core, self.config)
        self.server, self.health = build_server(self.core, self.config, max_workers=workers,
                                                servicer=self.servicer)
        self.target = f"unix:{self.config.server.unix_socket}"
        self.channel = grpc.insecure_channel(self.target)
        self.stub = mittd_pb2_grpc.MittdStub(self.channel)
        self.version = self.core.state("disk").model_version

    def close(self) -> None:
        self.channel.close()
        self.server.stop(None)
        self.servicer.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("svc"))
    yield s
    s.close()


def admit_req(rid: int, device: str = "disk", **kw: Any) -> pb.AdmitRequest:
    args = {"op": pb.OP_READ, "offset": 8192, "length": 4096, **kw}
    return pb.AdmitRequest(device=device, request_id=rid, **args)


def error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        call()
    return ei.value


def test_admit_and_complete(srv: Server) -> None:
    r = srv.stub.Admit(admit_req(1))
    assert r.decision == pb.ADMIT and r.request_id == 1 and not r.fail_open
    assert r.model_version == srv.version and "@" in r.model_version
    assert 0.0 < r.p_slow < 1.0
    assert srv.stub.Complete(pb.CompleteRequest(device="disk", request_id=1,
                                                latency_us=120.0)).known
    again = srv.stub.Complete(pb.CompleteRequest(device="disk", request_id=1, latency_us=1.0))
    assert not again.known  # idempotent: the second one is unknown
    # a deadline beyond every trained threshold: admitted without a prediction, p_slow 0
    far = srv.stub.Admit(admit_req(2, deadline_us=10_000_000))
    assert far.decision == pb.ADMIT and far.p_slow == 0.0 and far.threshold_index == 0
    srv.stub.Complete(pb.CompleteRequest(device="disk", request_id=2))


def test_admit_ebusy(srv: Server) -> None:
    r = srv.stub.Admit(admit_req(3, device="busy", op=pb.OP_WRITE))
    assert r.decision == pb.EBUSY and r.p_slow > 0.0 and r.request_id == 3
    assert srv.core.stats()["busy"].pending == 0  # rejected IOs are not pending


def test_admit_stream(srv: Server) -> None:
    before = srv.core.stats()["disk"].completions
    batches = [
        pb.AdmitBatch(requests=[admit_req(100 + k) for k in range(5)]),
        pb.AdmitBatch(requests=[admit_req(200), admit_req(201, device="busy")],
                      completions=[pb.CompleteRequest(device="disk", request_id=100 + k,
                                                      latency_us=90.0) for k in range(5)]),
        # completions first: 200 is free again before the re-admission in the same batch
        pb.AdmitBatch(requests=[admit_req(200)],
                      completions=[pb.CompleteRequest(device="disk", request_id=200)]),
        pb.AdmitBatch(),
    ]
    replies = list(srv.stub.AdmitStream(iter(batches)))
    assert [[x.request_id for x in r.replies] for r in replies] == \
        [[100, 101, 102, 103, 104], [200, 201], [200], []]
    assert [x.decision for x in replies[1].replies] == [pb.ADMIT, pb.EBUSY]
    assert srv.core.stats()["disk"].completions == before + 6
    assert 200 in srv.core.state("disk").tracker
    srv.stub.Complete(pb.CompleteRequest(device="disk", request_id=200))


def test_admit_stream_bad_item_aborts_with_its_index(srv: Server) -> None:
    batches = [pb.AdmitBatch(requests=[admit_req(300)]),
               pb.AdmitBatch(requests=[admit_req(301), admit_req(302, length=0)])]
    it = srv.stub.AdmitStream(iter(batches))
    assert [x.request_id for x in next(it).replies] == [300]
    e = error(lambda: next(it))
    assert e.code() == INVALID
    assert "batch[1].requests[1].length" in e.details()
    assert 301 not in srv.core.state("disk").tracker  # the bad batch had no effect
    big = pb.AdmitBatch(requests=[admit_req(400 + k) for k in range(9)])
    e = error(lambda: list(srv.stub.AdmitStream(iter([big]))))
    assert e.code() == INVALID and "max_stream_batch" in e.details()
    unknown = pb.AdmitBatch(completions=[pb.CompleteRequest(device="nope")])
    e = error(lambda: list(srv.stub.AdmitStream(iter([unknown]))))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "completions[0]" in e.details()
    srv.stub.Complete(pb.CompleteRequest(device="disk", request_id=300))


def test_echo(srv: Server) -> None:
    r = srv.stub.Echo(pb.EchoRequest(request=admit_req(77, device="")))
    assert r.reply.decision == pb.ADMIT and r.reply.request_id == 77


def test_describe_tells_the_device_policy(srv: Server) -> None:
    r = srv.stub.Describe(pb.DescribeRequest(device="disk"))
    st = srv.core.state("disk")
    assert (r.device, r.model_version, r.policy_mode) == ("disk", srv.version, "reject")
    assert list(r.latency_thresholds_us) == list(st.thresholds_us)
    assert list(r.p_slow_cutoffs) == list(st.p_thresholds)
    assert r.max_reject_share == pytest.approx(0.5) and r.hedge_after_us == 0.0
    assert "no policy in the bundle" in r.policy_reason
    e = error(lambda: srv.stub.Describe(pb.DescribeRequest(device="nosuch")))
    assert e.code() == grpc.StatusCode.NOT_FOUND


def test_read_unaligned(srv: Server) -> None:
    data = Path(srv.config.devices["disk"].path).read_bytes()
    for off, n in ((4095, 3), (12345, 70000), (SIZE - 1000, 1000), (0, 1 << 20)):
        r = srv.stub.Read(pb.ReadRequest(device="disk", offset=off, length=n, request_id=off))
        assert r.data == data[off:off + n]
        assert r.latency_us > 0 and r.model_version == srv.version
        assert off not in srv.core.state("disk").tracker  # completed by the daemon


def test_read_ebusy(srv: Server) -> None:
    call = srv.stub.Read.with_call
    e = error(lambda: call(pb.ReadRequest(device="busy", offset=0, length=512, request_id=9)))
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    md = dict(e.trailing_metadata())
    assert md[ERRNO_METADATA_KEY] == str(EBUSY_ERRNO)
    assert 0.0 < float(md[P_SLOW_METADATA_KEY]) <= 1.0


NOT_FOUND = grpc.StatusCode.NOT_FOUND
BAD = [  # (rpc, request, expected status, field the message must name)
    ("Admit", admit_req(1, device="nope"), NOT_FOUND, "device"),
    ("Admit", admit_req(1, device=""), INVALID, "device"),
    ("Admit", admit_req(1, length=0), INVALID, "length"),
    ("Admit", admit_req(1, offset=SIZE - 100), INVALID, "offset"),
    ("Admit", admit_req(1, offset=(1 << 64) - 1), INVALID, "offset"),
    ("Admit", admit_req(1, op=pb.OP_UNSPECIFIED), INVALID, "op"),
    ("Admit", admit_req(1, deadline_us=3_600_000_001), INVALID, "deadline_us"),
    ("Complete", pb.CompleteRequest(device="nope"), NOT_FOUND, "device"),
    ("Read", pb.ReadRequest(device="nope", length=1), NOT_FOUND, "device"),
    ("Read", pb.ReadRequest(device="disk", length=0), INVALID, "length"),
    ("Read", pb.ReadRequest(device="disk", length=(1 << 20) + 1), INVALID, "length"),
    ("Read", pb.ReadRequest(device="disk", offset=SIZE, length=1), INVALID, "offset"),
]


@pytest.mark.parametrize(("rpc", "request_", "code", "field"), BAD)
def test_bad_input(srv: Server, rpc: str, request_: Any, code: grpc.StatusCode,
                   field: str) -> None:
    e = error(lambda: getattr(srv.stub, rpc)(request_))
    assert e.code() == code
    assert field in e.details() and "\n" not in e.details()
    assert srv.stub.Echo(pb.EchoRequest()).reply.decision == pb.ADMIT  # still serving


def test_duplicate_pending_id(srv: Server) -> None:
    srv.stub.Admit(admit_req(500))
    e = error(lambda: srv.stub.Admit(admit_req(500)))
    assert e.code() == INVALID and "request_id" in e.details()
    srv.stub.Complete(pb.CompleteRequest(device="disk", request_id=500))


def test_internal_error_keeps_serving(srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any) -> None:
        raise RuntimeError("model exploded\nsecond line")

    monkeypatch.setattr(srv.core, "admit", boom)
    e = error(lambda: srv.stub.Admit(admit_req(600)))
    assert e.code() == grpc.StatusCode.INTERNAL
    assert "model exploded" in e.details() and "\n" not in e.details()
    monkeypatch.undo()
    assert srv.stub.Admit(admit_req(600)).decision == pb.ADMIT
    srv.stub.Complete(pb.CompleteRequest(device="disk", request_id=600))


def test_health_reflection_socket_mode(srv: Server) -> None:
    h = health_pb2_grpc.HealthStub(srv.channel)
    for name in ("", SERVICE_NAME):
        resp = h.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(srv.channel)
    out = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")])))
    names = {s.name for s in out.list_services_response.service}
    assert SERVICE_NAME in names and "grpc.health.v1.Health" in names
    st = os.stat(srv.config.server.unix_socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660


def test_reader(tmp_path: Path) -> None:
    p = tmp_path / "f"
    blob = os.urandom(10_000)  # unaligned size: the last aligned block is short
    p.write_bytes(blob)
    with DeviceReader(p, 4096, direct_io=False) as r:
        assert r.read(9_000, 1_000)[0] == blob[9_000:]
        assert r.read(1, 5000)[0] == blob[1:5001]
        for off, n in ((0, 0), (9_999, 2), (-1, 1)):
            with pytest.raises(ValueError):
                r.read(off, n)
    with pytest.raises(ValueError, match="closed"):
        r.read(0, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tcp_tls_client_auth(tmp_path: Path) -> None:
    for name, subj, ext in (("ca", "/CN=mittd-test-ca", None),
                            ("server", "/CN=localhost", "subjectAltName=DNS:localhost"),
                            ("client", "/CN=client", None)):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-subj", subj, "-out", f"{name}.csr", cwd=tmp_path)
        sign = (["-signkey", "ca.key"] if name == "ca"
                else ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
        extra = ["-extfile", "/dev/stdin"] if ext else []
        subprocess.run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-days", "2",
                        *sign, *extra, "-out", f"{name}.pem"], cwd=tmp_path, check=True,
                       capture_output=True, input=(ext or "").encode(), timeout=60)
    port = _free_port()
    s = Server(tmp_path, tcp=f"127.0.0.1:{port}",
               tls={"cert": "server.pem", "key": "server.key", "client_ca": "ca.pem"})
    try:
        ca = (tmp_path / "ca.pem").read_bytes()
        opts = (("grpc.ssl_target_name_override", "localhost"),)
        good = grpc.ssl_channel_credentials(ca, (tmp_path / "client.key").read_bytes(),
                                            (tmp_path / "client.pem").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", good, options=opts) as ch:
            r = mittd_pb2_grpc.MittdStub(ch).Echo(pb.EchoRequest(request=admit_req(5)),
                                                  timeout=10)
            assert r.reply.request_id == 5
        anon = grpc.ssl_channel_credentials(ca)  # no client certificate: refused
        with grpc.secure_channel(f"127.0.0.1:{port}", anon, options=opts) as ch:
            e = error(lambda: mittd_pb2_grpc.MittdStub(ch).Echo(pb.EchoRequest(), timeout=5))
            assert e.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        s.close()


def test_second_server_refused_stale_socket_replaced(srv: Server, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="another process is listening"):
        build_server(srv.core, srv.config, max_workers=1)
    assert srv.stub.Echo(pb.EchoRequest()).reply.decision == pb.ADMIT  # socket not stolen
    cfg = make_config(tmp_path)
    stale = cfg.server.unix_socket
    stale.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as s:  # bound, never listening: a crash leftover
        s.bind(str(stale))
    server, _ = build_server(make_core(cfg), cfg, max_workers=1)
    try:
        with grpc.insecure_channel(f"unix:{stale}") as ch:
            assert mittd_pb2_grpc.MittdStub(ch).Echo(pb.EchoRequest(), timeout=10).reply
    finally:
        server.stop(None)
