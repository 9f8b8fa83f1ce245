"""``mittd bench records``: what recording every IO costs the in-process path, and on disk.

Why: records are only worth having if a storage server can leave them on. The
issue's targets: ≤ 1 µs per IO amortised on the in-process path, and 1M recorded
IOs in ≤ 20 MB. Three ``Embedded`` admissions of the same bundle decide the same
IOs (fused ``admit`` + ``complete``), interleaved round by round so that a noisy
machine slows all alike:

* ``off``: nothing recorded (the ring disabled: the baseline);
* ``ring``: rows kept in memory only (what live quality needs, no writer);
* ``records``: the ring plus the recorder thread writing Parquet segments.

Per round: wall time and process CPU time (every thread: the recorder's Parquet
work counts) per IO. Reported: medians over rounds and the median of the paired
per-round differences from ``off``; and the bytes the segments take per IO, with
the IOs' latencies drawn from a lognormal (full float entropy: a pessimistic
case) or taken from ``--latencies`` (a trace's measured latencies). Timings
are never asserted anywhere: they are per machine.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mittd.traces.schema import OP_READ

__all__ = ["RecordsBenchError", "render", "run_records"]

DEVICE = "d"
VARIANTS = ("off", "ring", "records")


class RecordsBenchError(Exception):
    """One line for the user."""


def _latencies(n: int, seed: int, trace: str | None) -> np.ndarray:
    if trace is None:
        return np.random.default_rng(seed + 1).lognormal(4.7, 0.5, n)
    from mittd.traces.errors import TraceError
    from mittd.traces.registry import open_trace

    try:
        lat = open_trace(trace).table().column("latency_us").to_numpy(zero_copy_only=False)
    except TraceError as e:
        raise RecordsBenchError(str(e)) from None
    lat = lat[np.isfinite(lat)]
    if not len(lat):
        raise RecordsBenchError(f"{trace}: no IO with a measured latency")
    return np.resize(lat, n)


def _round(emb: Any, offsets: list[int], lats: list[float]) -> tuple[float, float]:
    """Decide and complete every IO once; (wall ns, CPU ns) per IO."""
    admit, complete = emb.admit, emb.complete
    w0, c0 = time.perf_counter_ns(), time.process_time_ns()
    for off, lat in zip(offsets, lats, strict=True):
        t = admit(DEVICE, OP_READ, off, 4096, 0)
        if t:
            complete(DEVICE, t, lat)
    n = len(offsets)
    return (time.perf_counter_ns() - w0) / n, (time.process_time_ns() - c0) / n


def run_records(bundle: str | Path, *, ios: int = 200_000, rounds: int = 5, seed: int = 0,
                directory: str | Path | None = None, latencies: str | None = None,
                say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Measure the three variants (see the module doc); returns plain data."""
    from mittd.daemon.embedded import Embedded, EmbeddedError

    if not isinstance(ios, int) or ios < 1000:
        raise RecordsBenchError(f"--ios must be an int >= 1000, got {ios!r}")
    if not isinstance(rounds, int) or rounds < 1:
        raise RecordsBenchError(f"--rounds must be an int >= 1, got {rounds!r}")
    if directory is not None and not Path(directory).is_dir():
        raise RecordsBenchError(f"--dir {directory}: no such directory")
    rec_dir = Path(tempfile.mkdtemp(prefix="mittd-records-", dir=directory))
    try:
        try:
            adm = {v: Embedded.from_bundles({DEVICE: bundle},
                                            records=rec_dir if v == "records" else None)
                   for v in VARIANTS}
        except EmbeddedError as e:
            raise RecordsBenchError(str(e)) from None
        adm["off"].core.state(DEVICE).ring.enabled = False
        rng = np.random.default_rng(seed)
        offsets = (rng.integers(0, 1 << 18, ios) * 4096).tolist()
        lats = _latencies(ios, seed, latencies).tolist()
        for v in VARIANTS:  # warm: compile, caches, first segment opened
            _round(adm[v], offsets[:5000], lats[:5000])
        per: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for r in range(rounds):
            order = VARIANTS[r % 3:] + VARIANTS[:r % 3]
            for v in order:
                per[v].append(_round(adm[v], offsets, lats))
            say(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{v} {per[v][-1][0] / 1000:.2f} µs" for v in VARIANTS))
        rec = adm["records"]
        rec.close()
        st = rec.stats()[DEVICE]
        segs = sorted((rec_dir / DEVICE).glob("*.parquet"))
        nbytes = sum(p.stat().st_size for p in segs)
        for v in ("off", "ring"):
            adm[v].close()
    finally:
        shutil.rmtree(rec_dir, ignore_errors=True)
    rows = {}
    for v in VARIANTS:
        wall = np.array([w for w, _ in per[v]])
        cpu = np.array([c for _, c in per[v]])
        base_w = np.array([w for w, _ in per["off"]])
        base_c = np.array([c for _, c in per["off"]])
        rows[v] = {"wall_us": float(np.median(wall)) / 1000,
                   "cpu_us": float(np.median(cpu)) / 1000,
                   "wall_extra_us": float(np.median(wall - base_w)) / 1000,
                   "cpu_extra_us": float(np.median(cpu - base_c)) / 1000}
    written = st.records_written
    per_io = nbytes / written if written else float("nan")
    return {"bundle": str(bundle), "ios_per_round": ios, "rounds": rounds,
            "latencies": latencies or "lognormal(4.7, 0.5) µs (pessimistic: full entropy)",
            "variants": rows, "records_written": written,
            "records_dropped": st.records_dropped, "segments": len(segs),
            "bytes": nbytes, "bytes_per_io": per_io, "mb_per_million": per_io,
            "targets": {"cost_le_1us": rows["records"]["cpu_extra_us"] <= 1.0,
                        "size_le_20mb_per_million": per_io <= 20.0}}


def render(r: dict[str, Any]) -> str:
    v = r["variants"]
    lines = [f"mittd bench records: {Path(r['bundle']).name}, {r['rounds']} rounds of "
             f"{r['ios_per_round']:,} fused admit + complete, interleaved",
             "",
             "| variant | wall µs/IO | CPU µs/IO | wall extra vs off | CPU extra vs off |",
             "|---|---:|---:|---:|---:|"]
    for name, label in (("off", "off (nothing recorded)"), ("ring", "ring (memory only)"),
                        ("records", "records (ring + Parquet writer)")):
        x = v[name]
        lines.append(f"| {label} | {x['wall_us']:.2f} | {x['cpu_us']:.2f} | "
                     f"{x['wall_extra_us']:+.2f} | {x['cpu_extra_us']:+.2f} |")
    t = r["targets"]
    lines += ["",
              f"records: {r['records_written']:,} written, {r['records_dropped']:,} dropped, "
              f"{r['segments']} segment(s), {r['bytes'] / 1e6:.2f} MB = "
              f"{r['bytes_per_io']:.2f} B per IO = {r['mb_per_million']:.2f} MB per 1M IOs "
              f"(latencies: {r['latencies']})",
              f"targets: recording ≤ 1 µs per IO (CPU, all threads): "
              f"{'met' if t['cost_le_1us'] else 'NOT met'} "
              f"({v['records']['cpu_extra_us']:+.2f} µs); 1M IOs ≤ 20 MB: "
              f"{'met' if t['size_le_20mb_per_million'] else 'NOT met'}"]
    return "\n".join(lines)
