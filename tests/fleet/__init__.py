"""Shared by the fleet tests: a tiny trace whose slow IOs a model can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mittd.traces.schema import build_metadata, make_batch, write_trace


def lba_trace(path: Path, n: int = 2000, seed: int = 0) -> Path:
    """Slow IOs predictable from their LBAs (as tests/training)."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(20, 80, n))
    offset = rng.integers(0, 1 << 18, n) * 4096
    lat = np.where(offset < (1 << 28), 2500.0, 90.0) * rng.uniform(0.8, 1.2, n)
    ops = (rng.random(n) < 0.2).astype(np.int8)
    batch = make_batch(ts, lat, ops, offset, np.full(n, 4096), "synthetic")
    write_trace(path, pa.Table.from_batches([batch]), build_metadata("test", None))
    return path
