"""Deterministic synthetic traces for the reader benchmarks.

Public traces are large downloads with licences of their own, so the benchmarks
generate look-alike files instead: the same line layouts, value ranges and
field widths as real MSR Cambridge CSVs and fio 3.x per-IO latency logs, so
parsing costs what it costs on the real thing. Output is a pure function of
``--lines`` and ``--seed``. Lines are rendered column-wise with Arrow compute
kernels (no Python loop per line), so millions of lines take seconds.

Usage::

    python benchmarks/gen_traces.py --lines 2000000 --out DIR

writes ``DIR/wdev_0.csv`` (MSR) and ``DIR/bench_lat.1.log`` (fio).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MSR_NAME = "wdev_0.csv"
FIO_NAME = "bench_lat.1.log"

#: First timestamp of the real ``wdev_0.csv`` (2007-02-22, 100 ns FILETIME ticks).
MSR_START_FILETIME = 128_166_372_003_061_629
#: Lines rendered per chunk: bounds the generator's memory whatever ``--lines`` is.
CHUNK_LINES = 1 << 20

_KIB = 1024
_SECTOR = 512


def _sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """IO sizes in bytes, 512 B .. 64 KiB, dominated by 4 KiB like MSR and fio bssplit."""
    common = np.array([4, 8, 16, 32, 64], dtype=np.int64) * _KIB
    picked = rng.choice(common, size=n, p=[0.62, 0.14, 0.08, 0.06, 0.10])
    odd = rng.random(n) < 0.08  # some sector-granular sizes (512 B .. 64 KiB)
    picked[odd] = rng.integers(1, 129, size=int(odd.sum())) * _SECTOR
    return picked


def _offsets(rng: np.random.Generator, n: int, capacity: int) -> np.ndarray:
    """4 KiB-aligned byte offsets: mostly random, with sequential runs like real workloads."""
    blocks = capacity // (4 * _KIB)
    offs = rng.integers(0, blocks, size=n, dtype=np.int64)
    seq = rng.random(n) < 0.3  # ~30% continue the previous IO's neighbourhood
    offs[1:][seq[1:]] = np.minimum(offs[:-1][seq[1:]] + 1, blocks - 1)
    return offs * (4 * _KIB)


def _latency_us(rng: np.random.Generator, n: int, median_us: float) -> np.ndarray:
    """Lognormal body plus a Pareto tail (~1% of IOs, up to ~100x slower)."""
    lat = rng.lognormal(np.log(median_us), 0.6, size=n)
    tail = rng.random(n) < 0.01
    lat[tail] *= 5.0 + rng.pareto(1.5, size=int(tail.sum())) * 5.0
    return np.minimum(lat, median_us * 2000.0)


def _render(columns: Sequence[pa.Array], sep: str) -> bytes:
    """Join columns into ``sep``-separated, newline-terminated lines, as one bytes object."""
    texts = [c if pa.types.is_string(c.type) else pc.cast(c, pa.string()) for c in columns]
    lines = pc.binary_join_element_wise(*texts, sep)
    lines = pc.binary_join_element_wise(lines, pa.scalar("\n"), "")
    # The string array's data buffer is exactly the lines back to back.
    offsets, data = lines.buffers()[1:3]
    first, last = np.frombuffer(offsets, dtype=np.int32)[[lines.offset, lines.offset + len(lines)]]
    return data.to_pybytes()[first:last]


def _chunks(lines: int) -> Iterator[int]:
    done = 0
    while done < lines:
        n = min(CHUNK_LINES, lines - done)
        yield n
        done += n


def msr_chunks(lines: int, seed: int) -> Iterator[bytes]:
    """MSR Cambridge CSV: ``Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime``."""
    rng = np.random.default_rng([seed, 1])
    now = MSR_START_FILETIME
    for n in _chunks(lines):
        # Bursty arrivals (~1.2k IOPS mean), in 100 ns ticks; strictly increasing.
        gaps = np.maximum(1, rng.exponential(4000.0, size=n) * rng.choice([0.1, 1, 5], n))
        ts = now + np.cumsum(gaps.astype(np.int64))
        now = int(ts[-1])
        disk = rng.choice(np.arange(4), size=n, p=[0.85, 0.05, 0.05, 0.05])
        op = np.where(rng.random(n) < 0.3, "Read", "Write")
        response = np.maximum(1, np.rint(_latency_us(rng, n, 450.0) * 10)).astype(np.int64)
        cols = [
            pa.array(ts),
            pa.array(np.full(n, "wdev")),
            pa.array(disk),
            pa.array(op),
            pa.array(_offsets(rng, n, 40 << 30)),
            pa.array(_sizes(rng, n)),
            pa.array(response),
        ]
        yield _render(cols, ",")


def fio_chunks(lines: int, seed: int) -> Iterator[bytes]:
    """fio 3.x ``*_lat.N.log`` with log_offset=1: ``time_ms, value_ns, ddir, bs, offset, prio``.

    Lines are in completion order, as fio logs them, so ``time_ms`` never decreases
    while issue times (``time_ms`` - latency) are slightly out of order.
    """
    rng = np.random.default_rng([seed, 2])
    last_issue = 0
    pending = np.empty(0, dtype=np.int64)  # completions (ns) not yet safe to emit
    pending_lat = np.empty(0, dtype=np.int64)
    sizes = list(_chunks(lines))
    for i, n in enumerate(sizes):
        gaps = rng.exponential(20_000.0, size=n).astype(np.int64) + 1  # ~50k IOPS, in ns
        issue = last_issue + np.cumsum(gaps)
        last_issue = int(issue[-1])
        lat = np.rint(_latency_us(rng, n, 90.0) * 1000).astype(np.int64)
        done = np.concatenate([pending, issue + lat])
        lat_all = np.concatenate([pending_lat, lat])
        order = np.argsort(done, kind="stable")
        done, lat_all = done[order], lat_all[order]
        # A later chunk's IOs complete after ``last_issue``: anything before is final.
        k = len(done) if i == len(sizes) - 1 else int(np.searchsorted(done, last_issue, "right"))
        pending, pending_lat = done[k:], lat_all[k:]
        cols = [
            pa.array(done[:k] // 1_000_000),
            pa.array(lat_all[:k]),
            pa.array(np.where(rng.random(k) < 0.7, 0, 1)),
            pa.array(_sizes(rng, k)),
            pa.array(_offsets(rng, k, 10 << 30)),
            pa.array(np.zeros(k, np.int64)),
        ]
        yield _render(cols, ", ")


GENERATORS: dict[str, tuple[str, Callable[[int, int], Iterator[bytes]]]] = {
    "msr": (MSR_NAME, msr_chunks),
    "fio": (FIO_NAME, fio_chunks),
}


def generate(
    out: Path, lines: int, seed: int = 0, formats: Sequence[str] = ("msr", "fio")
) -> dict[str, Path]:
    """Write one file per format under ``out``; returns format name → path."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for fmt in formats:
        name, gen = GENERATORS[fmt]
        path = out / name
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as f:
            for data in gen(lines, seed):
                f.write(data)
        tmp.replace(path)
        paths[fmt] = path
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Write deterministic synthetic traces for benchmarking: an MSR Cambridge CSV "
            f"({MSR_NAME}) and a fio 3.x per-IO latency log ({FIO_NAME})."
        )
    )
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines per file")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (same seed, same bytes)")
    parser.add_argument(
        "--format", choices=sorted(GENERATORS), action="append", dest="formats",
        help="generate only this format (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    if args.lines < 1:
        parser.error("--lines must be >= 1")
    formats = args.formats or list(GENERATORS)
    for fmt, path in generate(args.out, args.lines, args.seed, formats).items():
        print(f"{fmt}: {path} ({path.stat().st_size / 1e6:.1f} MB, {args.lines} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
