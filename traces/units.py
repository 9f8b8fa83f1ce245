"""Parsing of the sizes and durations people type (``4k``, ``1GiB``, ``30s``, ``500us``).

One grammar each, for every command and file of mittd:

- sizes follow fio: suffixes are powers of 1024 (k, m, g, t, p, with or without
  ``iB``/``B``), case-insensitive; a bare number is bytes;
- durations are a number (``2``, ``0.5``, ``.5``, ``1.5e3``) and an optional unit
  ns, us (µs, μs), ms, s, m (minutes), h, case-insensitive. What a *bare* number
  means is the caller's field: run times (``--runtime 30``) are seconds as in
  fio, latencies and SLOs (``--slo 750``) are microseconds as every latency in
  mittd is.
"""

from __future__ import annotations

import re

__all__ = ["DURATION_UNITS_US", "NUMBER", "parse_duration", "parse_duration_us", "parse_size"]

#: A non-negative decimal number, optionally with an exponent (a regex).
NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
#: Microseconds per duration unit.
DURATION_UNITS_US: dict[str, float] = {
    "ns": 1e-3, "us": 1.0, "µs": 1.0, "μs": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DURATION = re.compile(rf"^\s*({NUMBER})\s*(ns|us|µs|μs|ms|s|m|h)?\s*$", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """Bytes from ``4k``, ``64MiB``, ``1G``, ``4096``; ValueError names the field."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{what}: {text!r} is not a size (examples: 4096, 4k, 64M, 1GiB)")
    value = float(m.group(1)) * _SIZE_MULT[m.group(2).lower()]
    if value != int(value):
        raise ValueError(f"{what}: {text!r} is not a whole number of bytes")
    return int(value)


def parse_duration_us(text: str, what: str = "duration", bare: str = "us") -> float:
    """Microseconds from ``500us``, ``0.5ms``, ``30s``, ``2m``; a bare number is in the
    unit ``bare``. ValueError names the field."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{what}: {text!r} is not a duration (examples: 250us, 500ms, 30s, "
                         "2m)")
    return float(m.group(1)) * DURATION_UNITS_US[(m.group(2) or bare).lower()]


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from ``30s``, ``500ms``, ``2m``, ``10`` (a bare number is seconds, as in
    fio); ValueError names the field."""
    return parse_duration_us(text, what, bare="s") / 1e6
