"""AdmitStream column blocks end to end: a real server, the client's send_columns,
validation that names the column and index, and a daemon that keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from mittd.daemon.client import Client, MittdUnavailable, columns_batch
from mittd.proto import mittd_pb2 as pb
from tests.daemon.test_service import SIZE, Server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("cols"))
    yield s
    s.close()


@pytest.fixture()
def client(srv: Server) -> Iterator[Client]:
    with Client(f"unix:{srv.config.server.unix_socket}") as c:
        yield c


def test_columns_are_decided_and_admitted_ones_become_pending(srv: Server,
                                                              client: Client) -> None:
    ids = np.arange(10_001, 10_007)
    with client.stream() as s:
        d = s.send_columns("disk", ids * 4096 % SIZE, 4096, ids, 0)
        assert d.admitted.shape == (6,) and d.model_version == srv.version
        pending = set(srv.core.state("disk").tracker.pending_ids())
        assert {int(i) for i in ids[d.admitted]} <= pending
        assert not ({int(i) for i in ids[~d.admitted]} & pending)
        # completing them in the next batch frees the ids for reuse in that same batch
        d2 = s.send_columns("disk", ids * 4096 % SIZE, 4096, ids, 0,
                            completed=(ids[d.admitted], np.full(int(d.admitted.sum()), 90.0)))
        assert d2.admitted.shape == (6,)
    st = srv.core.stats()["disk"]
    assert st.io_latency_us.count >= int(d.admitted.sum())


def test_busy_device_rejects_every_column_entry(srv: Server, client: Client) -> None:
    ids = np.arange(20_001, 20_005)
    with client.stream() as s:
        d = s.send_columns("busy", ids % 64 * 4096, 4096, ids, 0)
    assert not d.admitted.any() and (d.p_slow > 0).all()


def _expect_invalid(client: Client, batch: pb.AdmitBatch, match: str,
                    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
    with client.stream() as s, pytest.raises(MittdUnavailable) as e:
        s.send_batch(batch)
    assert e.value.code == code
    assert match in str(e.value), str(e.value)


def col(**kw: object) -> pb.AdmitBatch:
    base: dict[str, object] = {"device": "disk", "op": [pb.OP_READ] * 2,
                               "offset": [0, 4096], "length": [4096, 4096],
                               "deadline_us": [0], "request_id": [30_001, 30_002]}
    base.update(kw)
    return pb.AdmitBatch(columns=[pb.AdmitColumns(**base)])  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "match"), [
    ({"op": [pb.OP_READ]}, "columns[0].op: 1 entries for 2"),
    ({"op": [pb.OP_READ, 0]}, "columns[0].op[1]: must be OP_READ or OP_WRITE"),
    ({"length": [4096, 0]}, "columns[0].length[1]: must be > 0"),
    ({"offset": [0, SIZE]}, "columns[0].offset[1]: range"),
    ({"offset": [0, (1 << 64) - 1]}, "columns[0].offset[1]: range"),
    ({"length": [1 << 31, 4096]}, "columns[0].length[0]: 2147483648 exceeds"),
    ({"deadline_us": [0, 0, 0]}, "columns[0].deadline_us: 3 entries for 2"),
    ({"deadline_us": [1 << 40, 0]}, "columns[0].deadline_us[0]:"),
    ({"request_id": [30_001, 30_001]}, "columns[0].request_id[1]: 30001 appears twice"),
    ({"request_id": [30_001, 1 << 63]}, "columns[0].request_id[1]:"),
])
def test_bad_columns_abort_the_stream_naming_the_entry(srv: Server, client: Client,
                                                       kw: dict, match: str) -> None:
    before = srv.core.stats()["disk"].pending
    _expect_invalid(client, col(**kw), match)
    assert srv.core.stats()["disk"].pending == before  # the bad batch had no effect
    assert client.echo() > 0  # and the daemon keeps serving


def test_unknown_device_in_columns_is_not_found(client: Client) -> None:
    _expect_invalid(client, col(device="nvme9"), "columns[0].device: unknown device",
                    grpc.StatusCode.NOT_FOUND)


def test_a_pending_id_in_columns_is_refused(srv: Server, client: Client) -> None:
    ids = np.array([40_001])
    with client.stream() as s:
        d = s.send_columns("disk", [0], 4096, ids, 3_600_000_000)  # beyond the model: admitted
    assert d.admitted.all()
    _expect_invalid(client, columns_batch("disk", [0], 4096, ids), "40001 is already pending")


def test_bad_completion_columns_are_refused(client: Client) -> None:
    b = columns_batch("disk", [0], 4096, [50_001], completed=([1, 2], [10.0]))
    _expect_invalid(client, b, "completion_columns[0].latency_us: 1 entries for 2")
    b = columns_batch("disk", [0], 4096, [50_002], completed=([1], [float("nan")]))
    _expect_invalid(client, b, "completion_columns[0].latency_us[0]: must be a finite")


def test_batch_size_limit_counts_every_item(srv: Server, client: Client) -> None:
    n = srv.config.server.max_stream_batch + 1
    ids = np.arange(60_001, 60_001 + n)
    _expect_invalid(client, columns_batch("disk", ids * 0, 4096, ids), "exceed max_stream_batch")


def test_unary_complete_refuses_a_nan_latency(srv: Server) -> None:
    with pytest.raises(grpc.RpcError) as e:
        srv.stub.Complete(pb.CompleteRequest(device="disk", request_id=1,
                                             latency_us=float("nan")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "latency_us" in e.value.details()


def test_columns_and_messages_in_one_batch(srv: Server, client: Client) -> None:
    b = columns_batch("disk", [0, 4096], 4096, [70_001, 70_002], 3_600_000_000)
    b.requests.add(device="disk", op=pb.OP_READ, offset=8192, length=4096,
                   deadline_us=3_600_000_000, request_id=70_003)
    with client.stream() as s:
        reply = s.send_batch(b)
    assert len(reply.replies) == 1 and len(reply.columns) == 1
    assert list(reply.columns[0].decision) == [pb.ADMIT, pb.ADMIT]
    dup = columns_batch("disk", [0], 4096, [70_004])
    dup.requests.add(device="disk", op=pb.OP_READ, offset=0, length=4096, request_id=70_004)
    _expect_invalid(client, dup, "70004 appears twice")


