"""Issue 15: request frames that are not protobuf at all (garbage bytes on the wire).

Every RPC of ``mittd.v1.Mittd`` answers such a frame with INVALID_ARGUMENT and a
one-line message naming the message type it expected, counts it per method
(``mittd_bad_requests_total{method}``), logs at most one line per method per
minute, and keeps serving: a garbage frame in the middle of an AdmitStream ends
that stream only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mittd.daemon.metrics import BadRequestCollector
from mittd.proto import mittd_pb2 as pb
from tests.daemon.test_service import Server, admit_req

GARBAGE = b"\xff\xff\xff\xff\xff"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
UNARY = {"Admit": "AdmitRequest", "Complete": "CompleteRequest", "Read": "ReadRequest",
         "Echo": "EchoRequest", "Describe": "DescribeRequest", "Status": "StatusRequest"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("frames"))
    yield s
    s.close()


def raw_unary(srv: Server, method: str) -> grpc.UnaryUnaryMultiCallable:
    return srv.channel.unary_unary(f"/mittd.v1.Mittd/{method}", request_serializer=None,
                                   response_deserializer=None)


@pytest.mark.parametrize("method", sorted(UNARY))
def test_garbage_unary_frame_is_invalid_argument(srv: Server, method: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    before = srv.servicer.bad_requests().get(method, 0)
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as ei:
                raw_unary(srv, method)(GARBAGE, timeout=10)
            assert ei.value.code() == INVALID
            assert ei.value.details() == f"request is not a valid {UNARY[method]}"
    assert srv.servicer.bad_requests()[method] == before + 3
    lines = [r for r in caplog.records if method in r.getMessage()]
    assert len(lines) <= 1 and all("\n" not in r.getMessage() and not r.exc_info
                                   for r in caplog.records)
    # the server still serves a good call
    rid = 7000 + sorted(UNARY).index(method)
    assert srv.stub.Admit(admit_req(rid), timeout=10).request_id == rid


def test_garbage_frame_mid_stream_ends_only_that_stream(srv: Server) -> None:
    call = srv.channel.stream_stream("/mittd.v1.Mittd/AdmitStream", request_serializer=None,
                                     response_deserializer=pb.AdmitBatchReply.FromString)
    good = pb.AdmitBatch(requests=[admit_req(8001)]).SerializeToString()
    replies = call(iter([good, GARBAGE, good]), timeout=10)
    assert [r.request_id for r in next(replies).replies] == [8001]
    with pytest.raises(grpc.RpcError) as ei:
        next(replies)
    assert ei.value.code() == INVALID
    assert ei.value.details() == "batch[1]: request is not a valid AdmitBatch"
    assert srv.servicer.bad_requests()["AdmitStream"] >= 1
    again = srv.stub.AdmitStream(iter([pb.AdmitBatch(requests=[admit_req(8002)])]), timeout=10)
    assert [r.request_id for b in again for r in b.replies] == [8002]


def test_bad_requests_are_exported(srv: Server) -> None:
    with pytest.raises(grpc.RpcError):
        raw_unary(srv, "Echo")(GARBAGE, timeout=10)
    reg = CollectorRegistry()
    reg.register(BadRequestCollector(srv.servicer.bad_requests))
    text = generate_latest(reg).decode()
    n = srv.servicer.bad_requests()["Echo"]
    assert f'mittd_bad_requests_total{{method="Echo"}} {float(n)}' in text


def test_a_valid_but_empty_frame_is_still_decoded(srv: Server) -> None:
    """Zero bytes are a valid (empty) message: answered by the RPC's own checks."""
    with pytest.raises(grpc.RpcError) as ei:
        raw_unary(srv, "Admit")(b"", timeout=10)
    assert ei.value.code() == INVALID and ei.value.details() == "device: must not be empty"

