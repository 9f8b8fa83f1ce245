"""The gRPC API (proto/mittd.proto) and its committed stubs.

1. the committed stubs are exactly what ``python -m mittd.proto.generate`` makes;
2. every message round-trips through the wire format with representative values;
3. the service has the five methods with the right types and streaming flags;
4. the stubs import from the installed ``mittd.proto`` package, and work over a
   real channel (including the EBUSY-as-UNAVAILABLE convention of Read).
"""

from __future__ import annotations

import filecmp
import importlib.metadata
import re
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from mittd.proto import (
    EBUSY_ERRNO,
    ERRNO_METADATA_KEY,
    P_SLOW_METADATA_KEY,
    SERVICE_NAME,
    generate,
    mittd_pb2,
    mittd_pb2_grpc,
)
from tests.conftest import REPO

PROTO_DIR = REPO / "proto"
PROTO_FILE = PROTO_DIR / "mittd.proto"
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1


def _need_grpc_tools() -> None:
    pytest.importorskip(
        "grpc_tools.protoc",
        reason="grpcio-tools is not installed (pip install -e '.[dev]'); "
        "cannot regenerate the stubs to compare them",
    )


# --- 1. committed stubs == generator output ---------------------------------------------


def test_fix_imports_rewrites_only_bare_pb2_imports() -> None:
    text = "import grpc\nimport warnings\n\nimport mittd_pb2 as mittd__pb2\n"
    assert generate.fix_imports(text) == (
        "import grpc\nimport warnings\n\nfrom mittd.proto import mittd_pb2 as mittd__pb2\n"
    )
    assert generate.fix_imports("from google.protobuf import descriptor as _d\n") == (
        "from google.protobuf import descriptor as _d\n"
    )


def _in_subprocess(code: str) -> None:
    """protoc runs in a child process: in-process it can crash (segfault) once
    TensorFlow's own protobuf runtime is loaded by other tests."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_committed_stubs_match_the_proto_byte_for_byte(tmp_path: Path) -> None:
    _need_grpc_tools()
    committed_grpc = (PROTO_DIR / "mittd_pb2_grpc.py").read_text(encoding="utf-8")
    stamp = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'$", committed_grpc, re.MULTILINE)
    assert stamp, "mittd_pb2_grpc.py lacks its GRPC_GENERATED_VERSION stamp"
    installed = importlib.metadata.version("grpcio-tools")
    if installed != stamp.group(1):
        pytest.skip(
            f"stubs were generated with grpcio-tools {stamp.group(1)}, {installed} is installed: "
            "the version stamps differ, so only the descriptor check applies"
        )

    _in_subprocess(f"from mittd.proto import generate\n"
                   f"generate.generate({str(tmp_path)!r}, {str(PROTO_FILE)!r})")
    fresh = [tmp_path / name for name in generate.GENERATED]
    assert all(p.is_file() for p in fresh)
    for path in fresh:
        committed = PROTO_DIR / path.name
        assert committed.is_file(), f"{path.name} is not committed"
        assert filecmp.cmp(path, committed, shallow=False), (
            f"proto/{path.name} is stale or hand-edited: run python -m mittd.proto.generate"
        )
    assert "from mittd.proto import mittd_pb2 as mittd__pb2" in committed_grpc
    assert not re.search(r"^import mittd_pb2", committed_grpc, re.MULTILINE)


def test_committed_descriptor_matches_protoc(tmp_path: Path) -> None:
    """Version-independent: the descriptor protoc builds from the .proto is the committed one."""
    _need_grpc_tools()
    from google.protobuf import descriptor_pb2

    out = tmp_path / "mittd.desc"
    r = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={PROTO_DIR}",
         f"--descriptor_set_out={out}", "mittd.proto"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (fresh,) = fds.file
    # --descriptor_set_out fills in json_name; the Python gencode embeds the descriptor
    # without it (the runtime derives it), so drop it before comparing.
    for msg in fresh.message_type:
        for fld in msg.field:
            fld.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto.FromString(mittd_pb2.DESCRIPTOR.serialized_pb)
    assert fresh == committed
    assert fresh.SerializeToString(deterministic=True) == committed.SerializeToString(
        deterministic=True
    )


def test_generate_check_cli_reports_up_to_date() -> None:
    _need_grpc_tools()
    installed = importlib.metadata.version("grpcio-tools")
    if f"GRPC_GENERATED_VERSION = '{installed}'" not in (
        PROTO_DIR / "mittd_pb2_grpc.py"
    ).read_text(encoding="utf-8"):
        pytest.skip(f"stubs were generated with another grpcio-tools than {installed}")
    out = subprocess.run(
        [sys.executable, "-m", "mittd.proto.generate", "--check", "--proto", str(PROTO_FILE)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout


def test_generate_check_cli_detects_a_stale_stub(tmp_path: Path) -> None:
    _need_grpc_tools()
    proto = tmp_path / "mittd.proto"
    proto.write_bytes(PROTO_FILE.read_bytes())
    _in_subprocess(
        "from pathlib import Path\nfrom mittd.proto import generate\n"
        f"proto = Path({str(proto)!r})\n"
        "generate.generate(proto.parent, proto)\n"
        "assert generate.stale(proto) == []\n"
        "stub = proto.parent / 'mittd_pb2_grpc.py'\n"
        "stub.write_text(stub.read_text(encoding='utf-8') + '# hand edit\\n', encoding='utf-8')\n"
        "assert generate.stale(proto) == ['mittd_pb2_grpc.py']\n"
        "assert generate.main(['--check', '--proto', str(proto)]) == 1\n"
    )


# --- 2. messages round-trip ------------------------------------------------------------


def _admit_request(**kw: object) -> mittd_pb2.AdmitRequest:
    fields: dict[str, object] = dict(
        device="nvme0", op=mittd_pb2.OP_READ, offset=U64_MAX - 4095, length=U32_MAX,
        deadline_us=250, request_id=U64_MAX,
    )
    fields.update(kw)
    return mittd_pb2.AdmitRequest(**fields)


def _admit_reply(**kw: object) -> mittd_pb2.AdmitReply:
    fields: dict[str, object] = dict(
        decision=mittd_pb2.EBUSY, p_slow=0.875, model_version="precise_linear@3f2a9c1e",
        threshold_index=3, fail_open=False, request_id=U64_MAX,
    )
    fields.update(kw)
    return mittd_pb2.AdmitReply(**fields)


def _complete(**kw: object) -> mittd_pb2.CompleteRequest:
    fields: dict[str, object] = dict(device="raid5-a", request_id=42, latency_us=1234.5678)
    fields.update(kw)
    return mittd_pb2.CompleteRequest(**fields)


MESSAGES = [
    _admit_request(),
    _admit_request(device="ssd ü/µ", op=mittd_pb2.OP_WRITE, offset=0, length=4096,
                   deadline_us=0, request_id=0),
    _admit_reply(),
    _admit_reply(decision=mittd_pb2.ADMIT, p_slow=0.0, fail_open=True, threshold_index=0),
    _complete(),
    _complete(latency_us=0.1),
    mittd_pb2.CompleteReply(known=True),
    mittd_pb2.CompleteReply(known=False),
    mittd_pb2.AdmitBatch(
        requests=[_admit_request(request_id=i, offset=i * 4096) for i in range(5)],
        completions=[_complete(request_id=i, latency_us=80.0 + i) for i in range(3)],
    ),
    mittd_pb2.AdmitBatchReply(replies=[_admit_reply(request_id=i) for i in range(5)]),
    mittd_pb2.ReadRequest(device="nvme0", offset=1 << 40, length=131072, deadline_us=1_000_000,
                          request_id=7),
    mittd_pb2.ReadReply(data=bytes(range(256)) * 16, latency_us=87.25,
                        model_version="good_custom@0badc0de"),
    mittd_pb2.EchoRequest(request=_admit_request()),
    mittd_pb2.EchoReply(reply=_admit_reply()),
    mittd_pb2.StatusRequest(),
    mittd_pb2.StatusRequest(device="nvme0"),
    mittd_pb2.StatusReply(devices=[
        mittd_pb2.DeviceStatus(device="nvme0", mode="shadow", model_version="m@0badc0de",
                               model_sha256="ab" * 32, window=8192, decided=8000,
                               labelled=7990, slow=420, roc_auc=0.91, precision=0.5,
                               recall=0.75, would_reject_share=0.06,
                               validation_roc_auc=0.95, drift_margin=0.05, drift=False,
                               reject_share=0.0, admitted=U64_MAX, rejected=0,
                               shadow_rejects=480, fail_open=1, overruns=2, probes=3,
                               capped=4, pending=5, records_written=6, records_dropped=7),
        mittd_pb2.DeviceStatus(device="sdb", mode="enforce"),
    ]),
]


def test_status_carries_nan_for_undefined_quality() -> None:
    nan = float("nan")
    msg = mittd_pb2.DeviceStatus(roc_auc=nan, precision=nan, recall=nan)
    back = mittd_pb2.DeviceStatus.FromString(msg.SerializeToString())
    assert all(v != v for v in (back.roc_auc, back.precision, back.recall))  # NaN, not 0


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_round_trip(msg) -> None:
    wire = msg.SerializeToString()
    back = type(msg).FromString(wire)
    assert back == msg
    assert back.SerializeToString(deterministic=True) == msg.SerializeToString(deterministic=True)


def test_round_trip_keeps_extreme_and_exact_values() -> None:
    req = mittd_pb2.AdmitRequest.FromString(_admit_request().SerializeToString())
    assert (req.offset, req.length, req.request_id) == (U64_MAX - 4095, U32_MAX, U64_MAX)
    assert req.op == mittd_pb2.OP_READ
    rep = mittd_pb2.AdmitReply.FromString(_admit_reply(p_slow=0.1).SerializeToString())
    assert rep.p_slow == pytest.approx(0.1, rel=1e-7)  # float32 on the wire
    assert rep.decision == mittd_pb2.EBUSY
    c = mittd_pb2.CompleteRequest.FromString(_complete(latency_us=0.1).SerializeToString())
    assert c.latency_us == 0.1  # double: exact
    batch = mittd_pb2.AdmitBatch.FromString(MESSAGES[8].SerializeToString())
    assert [r.request_id for r in batch.requests] == [0, 1, 2, 3, 4]
    assert [c.request_id for c in batch.completions] == [0, 1, 2]


def test_value_ranges_are_enforced_by_the_types() -> None:
    with pytest.raises(ValueError):
        mittd_pb2.AdmitRequest(length=U32_MAX + 1)
    with pytest.raises(ValueError):
        mittd_pb2.AdmitRequest(offset=-1)
    with pytest.raises(ValueError):
        mittd_pb2.AdmitRequest(request_id=U64_MAX + 1)


def test_defaults_and_enums() -> None:
    assert mittd_pb2.AdmitRequest().SerializeToString() == b""
    assert mittd_pb2.AdmitRequest().op == mittd_pb2.OP_UNSPECIFIED == 0
    assert mittd_pb2.AdmitReply().decision == mittd_pb2.DECISION_UNSPECIFIED == 0
    assert dict(mittd_pb2.Op.items()) == {"OP_UNSPECIFIED": 0, "OP_READ": 1, "OP_WRITE": 2}
    assert dict(mittd_pb2.Decision.items()) == {
        "DECISION_UNSPECIFIED": 0, "ADMIT": 1, "EBUSY": 2,
    }
    # proto3 enums are open: a value from a newer client survives a round trip
    fut = mittd_pb2.AdmitRequest.FromString(_admit_request(op=7).SerializeToString())
    assert fut.op == 7


def test_echo_has_the_message_sizes_of_admit() -> None:
    req, rep = _admit_request(), _admit_reply()
    # the wrapped message plus one tag byte and a one-byte length prefix
    assert mittd_pb2.EchoRequest(request=req).ByteSize() == req.ByteSize() + 2
    assert mittd_pb2.EchoReply(reply=rep).ByteSize() == rep.ByteSize() + 2


def test_every_field_is_documented_with_units() -> None:
    text = PROTO_FILE.read_text(encoding="utf-8")
    lines = text.splitlines()
    field = re.compile(r"^\s+(repeated\s+)?[\w.]+\s+\w+\s*=\s*\d+;")
    for i, line in enumerate(lines):
        if field.match(line):
            assert lines[i - 1].strip().startswith("//"), f"undocumented field: {line.strip()}"
    assert re.search(r'^syntax = "proto3";$', text, re.MULTILINE)
    assert re.search(r"^package mittd\.v1;$", text, re.MULTILINE)
    for key in (ERRNO_METADATA_KEY, P_SLOW_METADATA_KEY):
        assert key in text
    assert "microseconds" in text


# --- 3. the service ------------------------------------------------------------------------

EXPECTED_METHODS = {
    # name: (input, output, client_streaming, server_streaming)
    "Admit": ("AdmitRequest", "AdmitReply", False, False),
    "Complete": ("CompleteRequest", "CompleteReply", False, False),
    "AdmitStream": ("AdmitBatch", "AdmitBatchReply", True, True),
    "Read": ("ReadRequest", "ReadReply", False, False),
    "Echo": ("EchoRequest", "EchoReply", False, False),
    "Describe": ("DescribeRequest", "DescribeReply", False, False),
    "Status": ("StatusRequest", "StatusReply", False, False),
}


def test_service_descriptor() -> None:
    fd = mittd_pb2.DESCRIPTOR
    assert fd.package == "mittd.v1"
    assert list(fd.services_by_name) == ["Mittd"]
    svc = fd.services_by_name["Mittd"]
    assert svc.full_name == SERVICE_NAME
    got = {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
        for m in svc.methods
    }
    assert got == EXPECTED_METHODS
    for name, (inp, out, _, _) in EXPECTED_METHODS.items():
        assert svc.methods_by_name[name].input_type.full_name == f"mittd.v1.{inp}"
        assert svc.methods_by_name[name].output_type.full_name == f"mittd.v1.{out}"


def test_grpc_stub_exposes_the_service() -> None:
    for name in EXPECTED_METHODS:
        assert callable(getattr(mittd_pb2_grpc.MittdServicer, name))
    assert callable(mittd_pb2_grpc.add_MittdServicer_to_server)
    assert callable(mittd_pb2_grpc.MittdStub)


# --- 4. importing from the installed package, and a live channel ----------------------------


def test_stubs_import_from_the_installed_package(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import mittd.proto.mittd_pb2_grpc as g\n"
        "import mittd.proto.mittd_pb2 as p\n"
        "import mittd.proto as pkg\n"
        "assert g.mittd__pb2 is p, 'the grpc stub must import the package module'\n"
        "assert 'mittd_pb2' not in sys.modules, 'a top-level mittd_pb2 was imported'\n"
        "assert pkg.mittd_pb2 is p and pkg.mittd_pb2_grpc is g\n"
        "print(g.__name__, p.DESCRIPTOR.services_by_name['Mittd'].full_name)\n"
    )
    # run outside the repository so that only the installed package can be found
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mittd.proto.mittd_pb2_grpc", "mittd.v1.Mittd"]


def test_importing_the_package_does_not_load_the_stubs() -> None:
    code = (
        "import sys, mittd.proto\n"
        "print(sorted(k for k in sys.modules if k.startswith('mittd.proto.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"


class _Servicer(mittd_pb2_grpc.MittdServicer):
    def Echo(self, request, context):
        return mittd_pb2.EchoReply(
            reply=mittd_pb2.AdmitReply(decision=mittd_pb2.ADMIT,
                                       request_id=request.request.request_id)
        )

    def Read(self, request, context):
        context.set_trailing_metadata(
            ((ERRNO_METADATA_KEY, str(EBUSY_ERRNO)), (P_SLOW_METADATA_KEY, "0.97"))
        )
        context.abort(grpc.StatusCode.UNAVAILABLE, "EBUSY: predicted to miss the deadline")

    def AdmitStream(self, request_iterator, context):
        for batch in request_iterator:
            yield mittd_pb2.AdmitBatchReply(
                replies=[mittd_pb2.AdmitReply(decision=mittd_pb2.ADMIT, request_id=r.request_id)
                         for r in batch.requests]
            )


@pytest.fixture
def channel():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    mittd_pb2_grpc.add_MittdServicer_to_server(_Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        server.stop(grace=None)


def test_stubs_work_over_a_channel(channel) -> None:
    stub = mittd_pb2_grpc.MittdStub(channel)
    rep = stub.Echo(mittd_pb2.EchoRequest(request=_admit_request(request_id=99)), timeout=10)
    assert rep.reply.decision == mittd_pb2.ADMIT and rep.reply.request_id == 99

    batches = [mittd_pb2.AdmitBatch(requests=[_admit_request(request_id=10 * b + i)
                                              for i in range(3)]) for b in range(2)]
    got = [[r.request_id for r in br.replies] for br in stub.AdmitStream(iter(batches), timeout=10)]
    assert got == [[0, 1, 2], [10, 11, 12]]

    # unimplemented methods answer UNIMPLEMENTED (the servicer base class)
    with pytest.raises(grpc.RpcError) as err:
        stub.Admit(_admit_request(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_read_reject_travels_as_unavailable_with_ebusy_metadata(channel) -> None:
    stub = mittd_pb2_grpc.MittdStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Read(mittd_pb2.ReadRequest(device="nvme0", length=4096, request_id=1), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    trailing = dict(err.value.trailing_metadata())
    assert int(trailing[ERRNO_METADATA_KEY]) == EBUSY_ERRNO == 16
    assert float(trailing[P_SLOW_METADATA_KEY]) == pytest.approx(0.97)
