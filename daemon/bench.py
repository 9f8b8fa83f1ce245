"""``mittd bench daemon``: what a gRPC admission check costs, against an echo.

An in-process daemon (a synthetic pruned bundle on a small file-backed device,
Unix socket in a temporary directory) answers; the client measures per-call
latency of ``Echo`` (the same message sizes as ``Admit``, no prediction: the
gRPC floor) and of ``Admit`` side by side in one run, then ``AdmitStream``
throughput in batches from several concurrent clients. Completions are sent
for every admitted request, as a real client would.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from mittd.daemon.admission import AdmissionCore, DeviceState
from mittd.daemon.config import parse_config
from mittd.daemon.service import build_server
from mittd.predictor.bundle import load_bundle, save_bundle
from mittd.predictor.synthetic import synthetic_bundle
from mittd.proto import mittd_pb2, mittd_pb2_grpc


def _daemon(tmp: Path, model: str, sparsity: float, method: str, engine: str) -> Any:
    dev = tmp / "disk.img"
    dev.write_bytes(b"\0" * (64 << 20))
    bundle_path = tmp / "m.mittd"
    save_bundle(synthetic_bundle(model, sparsity, method), bundle_path)
    raw = {"server": {"unix_socket": str(tmp / "mittd.sock"), "metrics": "",
                      "workers": 2},
           "devices": {"d0": {"path": str(dev), "model": str(bundle_path),
                              "engine": engine}}}
    config = parse_config(raw, tmp / "bench.toml")
    state = DeviceState.from_bundle(load_bundle(bundle_path), engine)
    core = AdmissionCore({"d0": state}, predict_budget_us=1e6)
    server, _ = build_server(core, config, max_workers=2)  # started
    return server, f"unix:{tmp / 'mittd.sock'}"


def _unary(stub: Any, method: str, n: int, rng: np.random.Generator) -> np.ndarray:
    offsets = rng.integers(0, (64 << 20) // 4096, n) * 4096
    call = getattr(stub, method)
    times = np.empty(n, np.int64)
    for i in range(n):
        req = mittd_pb2.AdmitRequest(device="d0", op=mittd_pb2.OP_READ, offset=int(offsets[i]),
                                     length=4096, deadline_us=500, request_id=i + 1)
        msg = mittd_pb2.EchoRequest(request=req) if method == "Echo" else req
        t0 = time.perf_counter_ns()
        reply = call(msg)
        times[i] = time.perf_counter_ns() - t0
        if method == "Admit" and reply.decision == mittd_pb2.ADMIT:
            stub.Complete(mittd_pb2.CompleteRequest(device="d0", request_id=i + 1,
                                                    latency_us=100.0))
    return times


def _stream(target: str, batches: int, batch: int, base: int) -> int:
    with grpc.insecure_channel(target) as ch:
        stub = mittd_pb2_grpc.MittdStub(ch)

        def gen() -> Any:
            prev: list[int] = []
            for b in range(batches):
                ids = [base + b * batch + i + 1 for i in range(batch)]
                reqs = [mittd_pb2.AdmitRequest(device="d0", op=mittd_pb2.OP_READ,
                                               offset=(r % 16000) * 4096, length=4096,
                                               deadline_us=500, request_id=r) for r in ids]
                comps = [mittd_pb2.CompleteRequest(device="d0", request_id=r,
                                                   latency_us=100.0) for r in prev]
                prev = ids
                yield mittd_pb2.AdmitBatch(requests=reqs, completions=comps)

        return sum(len(r.replies) for r in stub.AdmitStream(gen()))


def run(model: str = "precise_linear", sparsity: float = 0.95, method: str = "node",
        engine: str = "auto", calls: int = 5000, clients: int = 2, batches: int = 200,
        batch: int = 512) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mittd-bench-") as d:
        server, target = _daemon(Path(d), model, sparsity, method, engine)
        try:
            rng = np.random.default_rng(0)
            with grpc.insecure_channel(target) as ch:
                stub = mittd_pb2_grpc.MittdStub(ch)
                _unary(stub, "Echo", 500, rng)
                _unary(stub, "Admit", 500, rng)
                echo = _unary(stub, "Echo", calls, rng)
                admit = _unary(stub, "Admit", calls, rng)
            counts = [0] * clients
            t0 = time.perf_counter()
            threads = [threading.Thread(target=lambda k=k: counts.__setitem__(
                k, _stream(target, batches, batch, (k + 1) * 10_000_000)))
                for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - t0
        finally:
            server.stop(1).wait()
    p = {k: (float(np.percentile(v, 50)) / 1e3, float(np.percentile(v, 99)) / 1e3)
         for k, v in (("echo", echo), ("admit", admit))}
    return {
        "model": f"{model} {sparsity:.0%} {method}", "engine": engine, "calls": calls,
        "echo_p50_us": p["echo"][0], "echo_p99_us": p["echo"][1],
        "admit_p50_us": p["admit"][0], "admit_p99_us": p["admit"][1],
        "admit_over_echo": p["admit"][0] / p["echo"][0],
        "stream_decisions": sum(counts), "stream_clients": clients, "stream_batch": batch,
        "stream_decisions_per_s": sum(counts) / seconds, "cpus": os.cpu_count(),
    }


def render(r: dict[str, Any]) -> str:
    return "\n".join([
        f"model {r['model']}, engine {r['engine']}, {r['calls']:,} calls each, "
        f"{r['cpus']} CPUs, Unix socket",
        "| call | p50 µs | p99 µs |", "|---|---:|---:|",
        f"| Echo (gRPC floor) | {r['echo_p50_us']:.1f} | {r['echo_p99_us']:.1f} |",
        f"| Admit | {r['admit_p50_us']:.1f} | {r['admit_p99_us']:.1f} |",
        "",
        f"Admit / Echo (p50): {r['admit_over_echo']:.2f}x (target <= 1.2x)",
        f"AdmitStream: {r['stream_decisions_per_s']:,.0f} decisions/s with "
        f"{r['stream_clients']} clients, batches of {r['stream_batch']} (target >= 200,000)",
    ])
