"""Small real traces shipped with mittd, for the tests, the demo and benchmarks.

They are package data of ``mittd.traces`` (``traces/samples/``); how each was
collected is in ``traces/samples/README.md``. Every tool that needs "the sample
trace" asks here, so there is one answer to where it lives.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLES_DIR", "SHIPPED_TRACES", "shipped_trace"]

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

# name -> one line on what it is
SHIPPED_TRACES: dict[str, str] = {
    "fio_mixed_30s": "4 KiB random reads under 64 KiB random and bursty 1 MiB sequential "
                     "writes (the models' training trace)",
    "fio_readheavy_30s": "read-heavy 4/16/128 KiB mix with bursty 256 KiB writes (held out)",
}


def shipped_trace(name: str = "fio_mixed_30s") -> Path:
    """Path of the shipped trace ``name`` (one of ``SHIPPED_TRACES``; a trailing
    ``.parquet`` is accepted)."""
    key = name.removesuffix(".parquet")
    if key not in SHIPPED_TRACES:
        raise ValueError(f"no shipped trace {name!r}; shipped: {', '.join(SHIPPED_TRACES)}")
    return SAMPLES_DIR / f"{key}.parquet"
