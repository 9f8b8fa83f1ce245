"""Issue 15: open AdmitStreams must never starve the server into a hang.

Each open AdmitStream holds one thread of the server's pool. With
``server.workers = 2`` the daemon keeps at most one stream open (one thread stays
for unary calls), refuses a second at once with RESOURCE_EXHAUSTED, frees the
slot however a stream ends, and refuses any RPC beyond a bounded backlog
(``RPCS_PER_WORKER`` × workers, running or waiting) instead of queueing it.
Every call here carries a deadline, so a regression fails instead of hanging.
"""

from __future__ import annotations

import errno
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mittd.daemon.client import Client, MittdUnavailable
from mittd.daemon.service import RPCS_PER_WORKER, MittdServicer, max_rpcs
from mittd.proto import mittd_pb2 as pb
from tests.daemon.test_service import Server, admit_req

WORKERS = 2
QUICK_S = 3.0  # a refusal must come well inside this; the calls' deadlines are longer
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("limit"), workers=WORKERS)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_stream_left(srv: Server) -> Iterator[None]:
    """Each test starts and (after its streams ended) finishes with every slot free."""
    assert srv.servicer.streams_open == 0
    yield
    wait_free(srv)


class Stream:
    """One raw AdmitStream fed from a queue, with a deadline so it can never hang."""

    def __init__(self, srv: Server, timeout_s: float = 30.0) -> None:
        self._q: queue.SimpleQueue[pb.AdmitBatch | None] = queue.SimpleQueue()
        self.call = srv.stub.AdmitStream(iter(self._q.get, None), timeout=timeout_s)

    def send(self, *rids: int, device: str = "disk") -> pb.AdmitBatchReply:
        self._q.put(pb.AdmitBatch(requests=[admit_req(r, device) for r in rids]))
        return next(self.call)

    def end(self) -> None:
        """Half-close; the server ends the stream normally."""
        self._q.put(None)

    def cancel(self) -> None:
        self.call.cancel()
        self._q.put(None)


def served(stream: Stream, rid: int) -> None:
    reply = stream.send(rid)
    assert [r.request_id for r in reply.replies] == [rid]


def refused_quickly(call: Callable[[], object]) -> grpc.RpcError:
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        call()
    assert time.monotonic() - t0 < QUICK_S
    assert ei.value.code() == EXHAUSTED, ei.value.details()
    return ei.value


def wait_free(srv: Server, timeout_s: float = 5.0) -> None:
    """The slot of a cancelled stream is freed by the server asynchronously."""
    end = time.monotonic() + timeout_s
    while srv.servicer.streams_open and time.monotonic() < end:
        time.sleep(0.01)
    assert srv.servicer.streams_open == 0


def test_stream_cap_leaves_a_thread_for_unary_calls(srv: Server) -> None:
    assert srv.servicer.max_streams == WORKERS - 1
    first = Stream(srv)
    try:
        served(first, 1)
        second = Stream(srv, timeout_s=10.0)
        err = refused_quickly(lambda: next(second.call))
        assert err.details() == ("1 AdmitStream already open (server.workers = 2 keeps one "
                                 "thread for unary calls); close one or raise server.workers")
        # the open stream holds one thread; a unary call still gets the other
        reply = srv.stub.Admit(admit_req(2), timeout=QUICK_S)
        assert reply.request_id == 2
        served(first, 3)  # the refusal did not disturb the open stream
        assert srv.servicer.streams_open == 1
    finally:
        first.end()
    with pytest.raises(StopIteration):
        next(first.call)
    assert srv.servicer.streams_open == 0  # freed before the stream's end reached us
    again = Stream(srv)
    try:
        served(again, 4)
    finally:
        again.end()


def test_a_cancelled_stream_frees_its_slot(srv: Server) -> None:
    first = Stream(srv)
    served(first, 10)
    first.cancel()
    wait_free(srv)
    again = Stream(srv)
    try:
        served(again, 11)
    finally:
        again.cancel()


def test_a_failed_stream_frees_its_slot(srv: Server) -> None:
    bad = Stream(srv)
    with pytest.raises(grpc.RpcError) as ei:
        bad.send(20, device="nope")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert srv.servicer.streams_open == 0
    again = Stream(srv)
    try:
        served(again, 21)
    finally:
        again.end()


def test_client_sees_a_refused_stream_as_enobufs(srv: Server) -> None:
    with Client(srv.target, timeout_s=QUICK_S) as client, client.stream() as first:
        first.send([admit_req(30)])
        with client.stream() as second:
            t0 = time.monotonic()
            with pytest.raises(MittdUnavailable) as ei:
                second.send([admit_req(31)])
            assert time.monotonic() - t0 < QUICK_S
    e = ei.value
    assert e.code == EXHAUSTED and e.errno == errno.ENOBUFS and e.daemon_down
    assert "server.workers" in str(e)


def wait_rpcs(srv: Server, n: int, timeout_s: float = 5.0) -> None:
    """Until gRPC holds ``n`` RPCs: the count its ``maximum_concurrent_rpcs`` is held
    to (grpc's private ``_state.active_rpc_count``; a pause if that ever goes)."""
    state = getattr(srv.server, "_state", None)
    if not hasattr(state, "active_rpc_count"):
        time.sleep(0.5)
        return
    end = time.monotonic() + timeout_s
    while state.active_rpc_count < n and time.monotonic() < end:
        time.sleep(0.01)
    assert state.active_rpc_count >= n


def test_an_rpc_beyond_the_backlog_is_refused_not_queued(srv: Server) -> None:
    """An AdmitStream and a reflection stream hold both threads and two more
    reflection streams wait for one: the server holds RPCS_PER_WORKER × workers
    RPCs, so a unary call is refused at once by gRPC rather than wait forever."""
    assert RPCS_PER_WORKER * WORKERS == 4
    stream = Stream(srv)
    refl_qs: list[queue.SimpleQueue[reflection_pb2.ServerReflectionRequest | None]] = []
    refls = []
    reflect = reflection_pb2_grpc.ServerReflectionStub(srv.channel).ServerReflectionInfo
    try:
        served(stream, 40)
        for k in range(3):
            q: queue.SimpleQueue[reflection_pb2.ServerReflectionRequest | None] = (
                queue.SimpleQueue())
            refl_qs.append(q)
            refls.append(reflect(iter(q.get, None), timeout=30.0))
            q.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            if k == 0:  # its handler now waits for the next request on the second thread
                next(refls[0])
        wait_rpcs(srv, 4)
        refused_quickly(lambda: srv.stub.Admit(admit_req(41), timeout=10.0))
    finally:
        for call, q in zip(refls, refl_qs, strict=True):
            call.cancel()
            q.put(None)
        stream.end()
    wait_free(srv)
    end = time.monotonic() + 5.0  # the reflection threads free themselves asynchronously
    while True:
        try:
            assert srv.stub.Admit(admit_req(42), timeout=QUICK_S).request_id == 42
            break
        except grpc.RpcError as e:
            if e.code() != EXHAUSTED or time.monotonic() > end:
                raise
            time.sleep(0.01)


def test_no_refusal_at_one_closed_loop_client_per_worker(srv: Server) -> None:
    """gRPC counts an RPC until its pool task returns, after the client has its
    answer: a cap of exactly ``workers`` refused a few of these calls (about 5 in
    3000); 2 × workers leaves room for each client's call running and its last
    one finishing, and refused none in any run."""
    refused: list[int] = []

    def loop() -> None:
        n = 0
        for _ in range(1500):
            try:
                srv.stub.Echo(pb.EchoRequest(), timeout=QUICK_S)
            except grpc.RpcError as e:
                if e.code() != EXHAUSTED:
                    raise
                n += 1
        refused.append(n)

    clients = [threading.Thread(target=loop) for _ in range(WORKERS)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60.0)
    assert refused == [0] * WORKERS


def test_one_worker_refuses_unary_calls_while_its_stream_is_open(tmp_path: Path) -> None:
    """The single thread is the stream's: a unary call is refused, not queued behind it."""
    one = Server(tmp_path, workers=1)
    try:
        first = Stream(one)
        try:
            served(first, 1)
            refused_quickly(lambda: next(Stream(one, timeout_s=10.0).call))  # by gRPC
            refused_quickly(lambda: one.stub.Admit(admit_req(2), timeout=10.0))
        finally:
            first.end()
        with pytest.raises(StopIteration):
            next(first.call)
        wait_free(one)
        end = time.monotonic() + 5.0  # the stream's thread frees itself asynchronously
        while True:
            try:
                assert one.stub.Admit(admit_req(3), timeout=QUICK_S).request_id == 3
                break
            except grpc.RpcError as e:
                if e.code() != EXHAUSTED or time.monotonic() > end:
                    raise
                time.sleep(0.01)
    finally:
        one.close()


@pytest.mark.parametrize(("workers", "streams", "rpcs"),
                         [(1, 1, 1), (2, 1, 4), (4, 3, 8), (16, 15, 32)])
def test_limits_follow_the_pool(srv: Server, workers: int, streams: int, rpcs: int) -> None:
    s = MittdServicer(srv.core, srv.config)
    s.size_for_pool(workers)
    assert (s.workers, s.max_streams, max_rpcs(workers)) == (workers, streams, rpcs)
    with pytest.raises(ValueError, match="workers"):
        s.size_for_pool(0)
