"""mittd.daemon.client against a fake in-process daemon on a unix socket.

The fake rejects any IO whose deadline is below ``min_deadline_us`` (EBUSY as
the real daemon sends it: a reply for Admit, UNAVAILABLE + ``mittd-errno: 16``
for Read) and records every deadline, so failover and hedging are observable.
"""

from __future__ import annotations

import errno
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from mittd.daemon.client import (
    MAX_DEADLINE_US,
    AdmitIO,
    Client,
    MittdBusy,
    MittdUnavailable,
    ReplicaSet,
)
from mittd.proto import EBUSY_ERRNO, ERRNO_METADATA_KEY, P_SLOW_METADATA_KEY
from mittd.proto import mittd_pb2 as pb
from mittd.proto import mittd_pb2_grpc as pb_grpc


def payload(name: str, offset: int, length: int) -> bytes:
    return (f"{name}:{offset}:".encode() * length)[:length]


class FakeMittd(pb_grpc.MittdServicer):
    """Rejects deadlines below ``min_deadline_us``; reads sleep ``delay_s`` first."""

    def __init__(self, name: str, min_deadline_us: int = 0, delay_s: float = 0.0,
                 mode: str = "reject", hedge_after_us: float = 0.0) -> None:
        self.name = name
        self.mode, self.hedge_after_us = mode, hedge_after_us
        self.describes = 0
        self.min_deadline_us = min_deadline_us
        self.delay_s = delay_s
        self.read_deadlines: list[int] = []
        self.pending: set[tuple[str, int]] = set()
        self.lock = threading.Lock()

    def _decide(self, req: pb.AdmitRequest) -> pb.AdmitReply:
        busy = req.deadline_us < self.min_deadline_us
        if not busy:
            self.pending.add((req.device, req.request_id))
        return pb.AdmitReply(
            decision=pb.EBUSY if busy else pb.ADMIT, p_slow=0.9 if busy else 0.1,
            model_version=f"fake-{self.name}", request_id=req.request_id,
        )

    def Admit(self, request: pb.AdmitRequest, context: grpc.ServicerContext) -> pb.AdmitReply:
        if request.length == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "zero length")
        with self.lock:
            return self._decide(request)

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext
                 ) -> pb.DescribeReply:
        self.describes += 1
        return pb.DescribeReply(device=request.device, model_version=f"fake-{self.name}",
                                policy_mode=self.mode, hedge_after_us=self.hedge_after_us,
                                max_reject_share=0.05, policy_reason="because")

    def Complete(self, request: pb.CompleteRequest, context: grpc.ServicerContext
                 ) -> pb.CompleteReply:
        with self.lock:
            key = (request.device, request.request_id)
            known = key in self.pending
            self.pending.discard(key)
        return pb.CompleteReply(known=known)

    def AdmitStream(self, request_iterator: Iterator[pb.AdmitBatch],
                    context: grpc.ServicerContext) -> Iterator[pb.AdmitBatchReply]:
        for batch in request_iterator:
            with self.lock:
                for c in batch.completions:
                    self.pending.discard((c.device, c.request_id))
                replies = [self._decide(r) for r in batch.requests]
            yield pb.AdmitBatchReply(replies=replies)

    def Read(self, request: pb.ReadRequest, context: grpc.ServicerContext) -> pb.ReadReply:
        with self.lock:
            self.read_deadlines.append(request.deadline_us)
        if request.deadline_us < self.min_deadline_us:
            context.set_trailing_metadata(
                ((ERRNO_METADATA_KEY, str(EBUSY_ERRNO)), (P_SLOW_METADATA_KEY, "0.973"))
            )
            context.abort(grpc.StatusCode.UNAVAILABLE, "EBUSY")
        time.sleep(self.delay_s)
        return pb.ReadReply(data=payload(self.name, request.offset, request.length),
                            latency_us=self.delay_s * 1e6, model_version=f"fake-{self.name}")

    def Echo(self, request: pb.EchoRequest, context: grpc.ServicerContext) -> pb.EchoReply:
        return pb.EchoReply(reply=pb.AdmitReply(decision=pb.ADMIT,
                                                request_id=request.request.request_id))


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, unless too long for a unix socket path (108 bytes)."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="mittd") as d:
        yield Path(d)


@pytest.fixture
def serve(sock_dir: Path) -> Iterator:
    servers: list[grpc.Server] = []

    def start(fake: FakeMittd) -> tuple[str, grpc.Server]:
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_MittdServicer_to_server(fake, server)
        target = f"unix:{sock_dir}/{fake.name}.sock"
        server.add_insecure_port(target)
        server.start()
        servers.append(server)
        return target, server

    yield start
    for s in servers:
        s.stop(None)


def test_admit_ok_and_ebusy(serve) -> None:
    target, _ = serve(FakeMittd("a", min_deadline_us=1000))
    with Client(target) as c:
        adm = c.admit("sda", 0, 4096, deadline_us=5000)
        assert adm.admitted and adm.model_version == "fake-a" and not adm.fail_open
        assert adm.p_slow == pytest.approx(0.1)
        assert c.complete("sda", adm.request_id, 123.0) is True
        assert c.complete("sda", adm.request_id, 123.0) is False
        with pytest.raises(OSError) as exc:
            c.admit("sda", 0, 4096, deadline_us=10, op="write")
        assert exc.value.errno == errno.EBUSY and isinstance(exc.value, MittdBusy)
        assert "p_slow=0.900" in str(exc.value)
        with pytest.raises(MittdUnavailable) as bad:
            c.admit("sda", 0, 0, deadline_us=5000)
        assert bad.value.errno == errno.EINVAL
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert not bad.value.daemon_down
        with pytest.raises(ValueError):
            c.admit("sda", 0, 1, 1, op="trim")
        assert c.echo() > 0


def test_request_ids_unique_and_explicit(serve) -> None:
    target, _ = serve(FakeMittd("a"))
    with Client(target) as c1, Client(target) as c2:
        ids = {c.next_request_id() for c in (c1, c2) for _ in range(100)}
        assert len(ids) == 200
        assert c1.admit("sda", 0, 1, 1, request_id=42).request_id == 42


def test_read_data_and_ebusy(serve) -> None:
    target, _ = serve(FakeMittd("a", min_deadline_us=1000))
    with Client(target) as c:
        assert c.read("sda", 8, 16, deadline_us=2000) == payload("a", 8, 16)
        with pytest.raises(OSError) as exc:
            c.read("sda", 8, 16, deadline_us=999)
        assert exc.value.errno == errno.EBUSY
        assert not isinstance(exc.value, MittdUnavailable)
        assert exc.value.p_slow == pytest.approx(0.973)


def test_stopped_server_is_unavailable(serve) -> None:
    target, server = serve(FakeMittd("a"))
    with Client(target) as c:
        c.read("sda", 0, 4, 10)
        server.stop(None)
        for call in (lambda: c.read("sda", 0, 4, 10), lambda: c.admit("sda", 0, 4, 10)):
            with pytest.raises(MittdUnavailable) as exc:
                call()
            assert exc.value.code == grpc.StatusCode.UNAVAILABLE
            assert exc.value.errno == errno.ECONNREFUSED and exc.value.daemon_down
            assert exc.value.errno != errno.EBUSY


def test_admit_batch_order_and_stream(serve) -> None:
    target, _ = serve(FakeMittd("a", min_deadline_us=1000))
    with Client(target) as c:
        ios = [AdmitIO("sda", i * 4096, 4096, deadline_us=d, request_id=100 + i)
               for i, d in enumerate([5000, 10, 2000, 999])]
        res = c.admit_batch(ios)
        assert [r.request_id for r in res] == [100, 101, 102, 103]
        assert [r.admitted for r in res] == [True, False, True, False]
        with c.stream() as s:
            first = s.send([AdmitIO("sdb", 0, 1, 5000)])
            assert first[0].admitted
            rid = first[0].request_id
            second = s.send([AdmitIO("sdb", 0, 1, 5), AdmitIO("sdb", 1, 1, 5000)],
                            completions=[("sdb", rid, 50.0)])
            assert [r.admitted for r in second] == [False, True]
            assert s.send([]) == []
        assert c.complete("sdb", rid, 1.0) is False  # completed through the stream
        with pytest.raises(ValueError):
            s.send([])


def test_replicaset_failover_last_never_rejected(serve) -> None:
    fakes = [FakeMittd(n, min_deadline_us=10**9) for n in ("r0", "r1", "r2")]
    clients = [Client(serve(f)[0]) for f in fakes]
    rs = ReplicaSet([(c, "sda") for c in clients])
    data, replica, attempts = rs.read(0, 8, deadline_us=500)
    assert (data, replica, attempts) == (payload("r2", 0, 8), 2, 3)
    assert fakes[0].read_deadlines == [500] and fakes[1].read_deadlines == [500]
    assert fakes[2].read_deadlines == [MAX_DEADLINE_US]
    fakes[0].min_deadline_us = 0  # r0 now admits: no failover
    assert rs.read(0, 8, 500) == (payload("r0", 0, 8), 0, 1)
    assert rs.stats() == {"reads": 2, "ebusy_failovers": 2, "unavailable_failovers": 0,
                          "hedges": 0, "fallbacks": 0}
    for c in clients:
        c.close()


def test_replicaset_skips_down_replica(serve, sock_dir: Path) -> None:
    dead = Client(f"unix:{sock_dir}/nobody.sock")
    busy = FakeMittd("busy", min_deadline_us=10**9)
    last = FakeMittd("last")
    c_busy, c_last = Client(serve(busy)[0]), Client(serve(last)[0])
    rs = ReplicaSet([(dead, "sda"), (c_busy, "sda"), (c_last, "sda")])
    assert rs.read(4, 4, 100) == (payload("last", 4, 4), 2, 3)
    st = rs.stats()
    assert st["unavailable_failovers"] == 1 and st["ebusy_failovers"] == 1
    # last replica down: the first replica that rejected serves it, unrejectable
    rs2 = ReplicaSet([(c_busy, "sda"), (dead, "sda")])
    assert rs2.read(0, 4, 100) == (payload("busy", 0, 4), 0, 3)
    assert busy.read_deadlines[-1] == MAX_DEADLINE_US
    assert rs2.stats()["fallbacks"] == 1
    # every replica down: the daemon error surfaces
    with pytest.raises(MittdUnavailable):
        ReplicaSet([(dead, "sda")]).read(0, 4, 100)
    for c in (dead, c_busy, c_last):
        c.close()


def test_hedging_duplicates_slow_primary(serve) -> None:
    slow = FakeMittd("slow", min_deadline_us=10**9, delay_s=0.5)
    fast = FakeMittd("fast", min_deadline_us=10**9)
    c_slow, c_fast = Client(serve(slow)[0]), Client(serve(fast)[0])
    with ReplicaSet([(c_slow, "sda"), (c_fast, "sda")], hedge_after_us=20_000) as rs:
        start = time.monotonic()
        assert rs.read(0, 8, 100) == (payload("fast", 0, 8), 1, 2)
        assert time.monotonic() - start < 0.4
        assert slow.read_deadlines == [MAX_DEADLINE_US] == fast.read_deadlines
        assert rs.stats()["hedges"] == 1
        slow.delay_s = 0.0  # a prompt primary is never duplicated
        assert rs.read(0, 8, 100) == (payload("slow", 0, 8), 0, 1)
        assert rs.stats()["hedges"] == 1 and rs.stats()["reads"] == 2
    c_slow.close()
    c_fast.close()


def test_mittd_plus_hedging_fails_over_at_ebusy_and_hedges_the_admitted(serve) -> None:
    slow = FakeMittd("slow", min_deadline_us=1000, delay_s=0.5)
    fast = FakeMittd("fast", min_deadline_us=10**9)
    c_slow, c_fast = Client(serve(slow)[0]), Client(serve(fast)[0])
    with ReplicaSet([(c_slow, "sda"), (c_fast, "sda")], hedge_after_us=20_000,
                    policy="both") as rs:
        # admitted by the primary (deadline >= 1000) but slow: hedged to the last replica
        start = time.monotonic()
        assert rs.read(0, 8, 2000) == (payload("fast", 0, 8), 1, 2)
        assert time.monotonic() - start < 0.4
        assert slow.read_deadlines == [2000] and fast.read_deadlines == [MAX_DEADLINE_US]
        # rejected by the primary (deadline < 1000): fails over at once, no hedge
        assert rs.read(0, 8, 500) == (payload("fast", 0, 8), 1, 2)
        assert rs.stats()["hedges"] == 1 and rs.stats()["ebusy_failovers"] == 1
    with pytest.raises(ValueError, match="needs hedge_after_us"):
        ReplicaSet([(c_slow, "sda")], policy="both")
    with pytest.raises(ValueError, match="policy must be"):
        ReplicaSet([(c_slow, "sda")], policy="sometimes")
    c_slow.close()
    c_fast.close()


def test_replicaset_takes_the_device_policy_once(serve) -> None:
    slow = FakeMittd("slow", min_deadline_us=1000, delay_s=0.5, mode="both",
                     hedge_after_us=20_000)
    fast = FakeMittd("fast", min_deadline_us=10**9)
    c_slow, c_fast = Client(serve(slow)[0]), Client(serve(fast)[0])
    p = c_slow.describe("sda")
    assert (p.mode, p.hedge_after_us, p.reason) == ("both", 20_000, "because")
    with ReplicaSet([(c_slow, "sda"), (c_fast, "sda")], policy="device") as rs:
        assert rs.read(0, 8, 2000) == (payload("fast", 0, 8), 1, 2)  # hedged, as "both"
        assert rs.read(0, 8, 500) == (payload("fast", 0, 8), 1, 2)  # EBUSY: failover
        assert rs.policy == "both" and rs.hedge_after_us == 20_000
        assert slow.describes == 2  # our describe() above, and the set's one
    c_slow.close()
    c_fast.close()
