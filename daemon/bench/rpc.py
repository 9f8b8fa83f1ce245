"""``mittd bench rpc``: what an admission check costs over gRPC, side by side.

A real daemon (``mittd serve`` in its own process, Unix socket, by default the
shipped node-pruned precise_linear bundle, on a file-backed device) answers;
client processes (one per concurrent client, so the client side never shares a
GIL) measure in one run:

* ``Echo`` — a no-op with Admit's message sizes: the gRPC floor;
* ``Admit`` unary (with a ``Complete`` after each admitted IO, as a real
  client sends; only the Admit call is timed);
* ``Read`` proxy — admission plus an O_DIRECT read of 4 KiB by the daemon;
* ``AdmitStream`` — batches of ``AdmitColumns`` on one long-lived stream per
  client, each carrying the completions of the previous batch;
* ``AdmitStream`` with one message per IO (the convenience form), for contrast.

Unary kinds are interleaved in rounds (echo, admit, read, echo, …) so that the
machine's noise hits them alike; per-call latencies are pooled per kind.
Reported: p50/p99 latency per call (per batch for streams) and decisions/s
over all clients. Timings are measurements, never pass/fail.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mittd.daemon.client import daemon_healthy
from mittd.traces.collect import direct_io_error

DEVICE_BYTES = 64 << 20
UNARY_KINDS = ("echo", "admit", "read")


# -- the daemon ----------------------------------------------------------------------------


def _write_config(tmp: Path, bundle: Path, workers: int, direct_io: bool) -> Path:
    dev = tmp / "disk.img"
    with open(dev, "wb") as f:  # real blocks (not a sparse hole): reads hit the device
        chunk = np.random.default_rng(0).integers(0, 256, 1 << 20, np.uint8).tobytes()
        for _ in range(DEVICE_BYTES >> 20):
            f.write(chunk)
    cfg = tmp / "bench.toml"
    cfg.write_text(
        f'[server]\nunix_socket = "{tmp / "mittd.sock"}"\nmetrics = ""\n'
        f"workers = {workers}\nmax_stream_batch = 4096\npredict_budget_us = 1000000\n\n"
        f'[devices.d0]\npath = "{dev}"\nmodel = "{bundle}"\nengine = "auto"\n'
        f"direct_io = {'true' if direct_io else 'false'}\n")
    return cfg


def _start_daemon(cfg: Path, sock: Path, timeout_s: float = 60.0) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mittd.daemon.cli", "serve", "--config", str(cfg),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({proc.returncode}): "
                               f"{(proc.stderr.read() if proc.stderr else '').strip()}")
        if sock.exists() and daemon_healthy(f"unix:{sock}"):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the daemon did not come up within {timeout_s:.0f} s")


# -- client processes ------------------------------------------------------------------------

_STUB: Any = None


def _stub(target: str) -> Any:
    global _STUB
    if _STUB is None:
        import grpc

        from mittd.proto import mittd_pb2_grpc
        _STUB = mittd_pb2_grpc.MittdStub(grpc.insecure_channel(target))
    return _STUB


def _unary(job: tuple[str, str, int, int, int]) -> tuple[str, np.ndarray, int]:
    """``calls`` timed calls of one kind; returns (kind, ns per call, EBUSY count)."""
    import grpc

    from mittd.proto import mittd_pb2 as pb

    target, kind, calls, deadline_us, seed = job
    stub = _stub(target)
    rng = np.random.default_rng(seed)
    offsets = (rng.integers(0, DEVICE_BYTES // 4096, calls) * 4096).tolist()
    times = np.empty(calls, np.int64)
    busy = 0
    base = seed * 10_000_000
    for i in range(calls):
        rid = base + i + 1
        req = pb.AdmitRequest(device="d0", op=pb.OP_READ, offset=offsets[i], length=4096,
                              deadline_us=deadline_us, request_id=rid)
        if kind == "echo":
            msg = pb.EchoRequest(request=req)
            t0 = time.perf_counter_ns()
            stub.Echo(msg)
            times[i] = time.perf_counter_ns() - t0
        elif kind == "admit":
            t0 = time.perf_counter_ns()
            reply = stub.Admit(req)
            times[i] = time.perf_counter_ns() - t0
            if reply.decision == pb.ADMIT:
                stub.Complete(pb.CompleteRequest(device="d0", request_id=rid, latency_us=80.0))
            else:
                busy += 1
        else:
            msg = pb.ReadRequest(device="d0", offset=offsets[i], length=4096,
                                 deadline_us=deadline_us, request_id=rid)
            t0 = time.perf_counter_ns()
            try:
                stub.Read(msg)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise RuntimeError(f"Read failed: {e.code().name}: {e.details()}") from None
                busy += 1
            times[i] = time.perf_counter_ns() - t0
    return kind, times, busy


def _stream(job: tuple[str, str, int, int, int, int]
            ) -> tuple[str, np.ndarray, int, float, int]:
    """One AdmitStream: ``batches`` round trips of ``batch`` IOs; (kind, ns per batch,
    decisions, wall seconds, EBUSY count)."""
    from mittd.daemon.client import columns_batch
    from mittd.proto import mittd_pb2 as pb

    target, kind, batches, batch, deadline_us, seed = job
    stub = _stub(target)
    rng = np.random.default_rng(seed)
    base = seed * 100_000_000
    times = np.empty(batches, np.int64)
    import queue
    q: queue.SimpleQueue = queue.SimpleQueue()

    def outgoing() -> Any:
        while (b := q.get()) is not None:
            yield b

    call = stub.AdmitStream(outgoing())
    decisions = busy = 0
    prev_ids = np.zeros(0, np.int64)
    t_start = time.perf_counter()
    for b in range(batches):
        ids = base + b * batch + np.arange(1, batch + 1)
        offsets = rng.integers(0, DEVICE_BYTES // 4096, batch) * 4096
        t0 = time.perf_counter_ns()
        if kind == "stream":
            msg = columns_batch("d0", offsets, 4096, ids, deadline_us,
                                completed=(prev_ids, np.full(len(prev_ids), 80.0)))
        else:
            msg = pb.AdmitBatch(
                requests=[pb.AdmitRequest(device="d0", op=pb.OP_READ, offset=o, length=4096,
                                          deadline_us=deadline_us, request_id=r)
                          for o, r in zip(offsets.tolist(), ids.tolist(), strict=True)],
                completions=[pb.CompleteRequest(device="d0", request_id=r, latency_us=80.0)
                             for r in prev_ids.tolist()])
        q.put(msg)
        reply = next(call)
        if kind == "stream":
            admitted = np.asarray(reply.columns[0].decision, np.int8) == pb.ADMIT
            decisions += len(reply.columns[0].decision)
        else:
            admitted = np.array([r.decision == pb.ADMIT for r in reply.replies])
            decisions += len(reply.replies)
        times[b] = time.perf_counter_ns() - t0
        busy += int((~admitted).sum())
        prev_ids = ids[admitted]
    seconds = time.perf_counter() - t_start
    q.put(None)
    for _ in call:  # drain: the server ends the stream after our half-close
        pass
    return kind, times, decisions, seconds, busy


# -- the run ---------------------------------------------------------------------------------


def _bundle(tmp: Path, bundle: str | None, model: str, sparsity: float, method: str) -> Path:
    if bundle is None:
        from mittd.predictor.shipped import shipped_bundle
        return shipped_bundle("precise_linear_node95")
    if bundle != "synthetic":
        return Path(bundle).absolute()  # the daemon's config resolves paths from its own dir
    from mittd.predictor.bundle import save_bundle
    from mittd.predictor.synthetic import synthetic_bundle

    path = tmp / f"{model}_{method}{round(sparsity * 100)}.mittd"
    save_bundle(synthetic_bundle(model, sparsity, method), path)
    return path


def run(bundle: str | None = None, model: str = "precise_linear", sparsity: float = 0.98,
        method: str = "node", calls: int = 2000, rounds: int = 3, clients: tuple[int, ...] = (1, 4),
        batch: int = 1024, batches: int = 300, workers: int = 4, deadline_us: int = 0,
        directory: str | None = None, say: Any = print) -> dict[str, Any]:
    """Measure everything; returns plain data (see :func:`render`)."""
    from mittd.predictor.bundle import load_bundle

    # the daemon keeps one worker thread for unary calls: N concurrent AdmitStreams
    # need N + 1 workers (a stream beyond workers - 1 is refused, never left hanging)
    workers = max(workers, max(clients, default=1) + 1)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="mittd-bench-", dir=directory)
    tmp = Path(tmp_ctx.name)
    results: dict[str, Any] = {"cpus": os.cpu_count(), "calls_per_client": calls,
                               "rounds": rounds, "workers": workers, "rows": []}
    proc = None
    try:
        path = _bundle(tmp, bundle, model, sparsity, method)
        b = load_bundle(path)
        results["model"] = f"{b.version_id} ({path.name})"
        direct = direct_io_error(tmp) is None
        results["direct_io"] = direct
        cfg = _write_config(tmp, path, workers, direct)
        sock = tmp / "mittd.sock"
        say(f"starting the daemon ({results['model']}, {workers} workers, "
            f"{'O_DIRECT' if direct else 'buffered: O_DIRECT refused here'}) ...")
        proc = _start_daemon(cfg, sock)
        target = f"unix:{sock}"
        ctx = mp.get_context("spawn")
        with ctx.Pool(max(clients)) as pool:
            pool.map(_unary, [(target, k, 200, deadline_us, 900 + 10 * i + j)  # warm-up
                              for i in range(max(clients)) for j, k in enumerate(UNARY_KINDS)])
            seed = 1000
            for c in clients:
                pooled: dict[str, list[np.ndarray]] = {k: [] for k in UNARY_KINDS}
                busy = dict.fromkeys(UNARY_KINDS, 0)
                wall = dict.fromkeys(UNARY_KINDS, 0.0)
                for r in range(rounds):
                    for kind in UNARY_KINDS:
                        say(f"  {c} client(s), round {r + 1}/{rounds}: {kind} ...")
                        jobs = [(target, kind, calls, deadline_us, seed + i) for i in range(c)]
                        seed += c
                        t0 = time.perf_counter()
                        for k, times, nb in pool.map(_unary, jobs):
                            pooled[k].append(times)
                            busy[k] += nb
                        wall[kind] += time.perf_counter() - t0
                for kind in UNARY_KINDS:
                    t = np.concatenate(pooled[kind]) / 1e3
                    results["rows"].append({
                        "kind": kind, "clients": c, "calls": len(t),
                        "p50_us": float(np.percentile(t, 50)),
                        "p99_us": float(np.percentile(t, 99)),
                        "per_s": len(t) / wall[kind], "ebusy": busy[kind]})
                for kind, nb, n in (("stream", batch, batches),
                                    ("stream_msgs", min(batch, 256), max(batches // 4, 10))):
                    say(f"  {c} client(s): AdmitStream {kind} x {n} batches of {nb} ...")
                    jobs = [(target, kind, n, nb, deadline_us, seed + i) for i in range(c)]
                    seed += c
                    t0 = time.perf_counter()
                    out = pool.map(_stream, jobs)
                    wall_s = time.perf_counter() - t0
                    t = np.concatenate([o[1] for o in out]) / 1e3
                    decisions = sum(o[2] for o in out)
                    results["rows"].append({
                        "kind": kind, "clients": c, "calls": len(t), "batch": nb,
                        "p50_us": float(np.percentile(t, 50)),
                        "p99_us": float(np.percentile(t, 99)),
                        "per_s": decisions / max(o[3] for o in out),
                        "wall_per_s": decisions / wall_s, "ebusy": sum(o[4] for o in out)})
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        tmp_ctx.cleanup()
    rows = {(r["kind"], r["clients"]): r for r in results["rows"]}
    results["admit_over_echo"] = {
        c: rows[("admit", c)]["p50_us"] / rows[("echo", c)]["p50_us"] for c in clients}
    results["read_over_echo"] = {
        c: rows[("read", c)]["p50_us"] / rows[("echo", c)]["p50_us"] for c in clients}
    results["stream_best_per_s"] = max(r["per_s"] for r in results["rows"]
                                       if r["kind"] == "stream")
    return results


_LABELS = {"echo": "Echo (gRPC floor)", "admit": "Admit (unary)", "read": "Read (proxy, 4 KiB)",
           "stream": "AdmitStream columns", "stream_msgs": "AdmitStream messages"}


def render(r: dict[str, Any]) -> str:
    lines = [
        f"model {r['model']}; daemon: {r['workers']} workers, Unix socket, "
        f"{'O_DIRECT' if r['direct_io'] else 'buffered'} reads; {r['cpus']} CPUs shared "
        "by daemon and clients",
        "",
        "| call | clients | p50 µs | p99 µs | decisions/s | EBUSY |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        unit = f" (per batch of {row['batch']})" if "batch" in row else ""
        lines.append(f"| {_LABELS[row['kind']]}{unit} | {row['clients']} | {row['p50_us']:.1f} "
                     f"| {row['p99_us']:.1f} | {row['per_s']:,.0f} | {row['ebusy']} |")
    lines.append("")
    for c, v in r["admit_over_echo"].items():
        lines.append(f"Admit / Echo p50 with {c} client(s): {v:.2f}x (target <= 1.2x); "
                     f"Read / Echo: {r['read_over_echo'][c]:.2f}x")
    lines.append(f"AdmitStream best: {r['stream_best_per_s']:,.0f} decisions/s "
                 "(target >= 200,000)")
    return "\n".join(lines)
