"""Parsing of the sizes and durations people type (``4k``, ``1GiB``, ``30s``).

fio's conventions: size suffixes are powers of 1024 (k, m, g, t, with or
without ``iB``/``B``); a bare number is bytes. Durations take us, ms, s, m, h;
a bare number is seconds.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_MULT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(text: str, what: str = "size") -> int:
    """Bytes from ``4k``, ``64MiB``, ``1G``, ``4096``; ValueError names the field."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{what}: {text!r} is not a size (examples: 4096, 4k, 64M, 1GiB)")
    value = float(m.group(1)) * _SIZE_MULT[m.group(2).lower()]
    if value != int(value):
        raise ValueError(f"{what}: {text!r} is not a whole number of bytes")
    return int(value)


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from ``30s``, ``500ms``, ``2m``, ``10``; ValueError names the field."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{what}: {text!r} is not a duration (examples: 30s, 500ms, 2m)")
    return float(m.group(1)) * _DURATION_MULT[(m.group(2) or "s").lower()]
