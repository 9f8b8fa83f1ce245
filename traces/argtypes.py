"""Argument types shared by every ``mittd`` subcommand: one home for "what a valid
probability, count, seed or output path is", so that a bad value is refused by
argparse in one line (``mittd evaluate: error: argument --json: ...``, exit 2)
before any work starts, never as a traceback after it.

Here (the lowest layer) because every package contributes subcommands.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["MAX_COUNT", "MAX_FLOAT", "at_most", "count", "int_in", "non_negative_count",
           "non_negative_float", "non_negative_int", "number", "output_dir", "output_file",
           "png_file", "positive_float", "positive_int", "probability", "seed32", "share",
           "sparsity"]

MAX_COUNT = 2**31 - 1  # counts past int32 overflow numpy and allocate without end
MAX_FLOAT = 1e9  # seconds, µs, nm: beyond this a value is a typo (and overflows timers)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: epochs, calls, rounds)."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds: numpy refuses negative ones)."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {v}")
    return v


def at_most(kind: Callable[[str], int], hi: int = MAX_COUNT) -> Callable[[str], int]:
    """``kind`` (e.g. positive_int) capped at ``hi``: a huge count is a typo."""
    def typ(text: str) -> int:
        v = kind(text)
        if v > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi}, got {v}")
        return v
    typ.__name__ = kind.__name__
    return typ


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type for an integer in [lo, hi] (percentages, bounded depths)."""
    def typ(text: str) -> int:
        v = _int(text)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {v}")
        return v
    typ.__name__ = f"int_in_{lo}_{hi}"
    return typ


def seed32(text: str) -> int:
    """A seed in [0, 2**32): what numpy's legacy seeding, and so Keras', accepts."""
    v = non_negative_int(text)
    if v >= 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {v}")
    return v


count = at_most(positive_int)  # counts >= 1: IOs, rounds, clients, batches
non_negative_count = at_most(non_negative_int)  # 0 allowed: "never", "the default"


def number(lo: float, hi: float, *, lo_open: bool, hi_open: bool, doc: str = ""
           ) -> Callable[[str], float]:
    """An argparse type for a finite number in the interval (NaN and inf refused);
    the message names the interval."""
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def typ(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text!r}"
                                             ) from None
        ok = math.isfinite(v) and (lo < v if lo_open else lo <= v) and (
            v < hi if hi_open else v <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a number in {span}, got {text}")
        return v
    typ.__doc__ = doc or f"A finite number in {span}."
    return typ


positive_float = number(0.0, MAX_FLOAT, lo_open=True, hi_open=False,
                        doc="A finite number > 0 and at most 1e9 (durations, speeds, periods).")
non_negative_float = number(0.0, MAX_FLOAT, lo_open=False, hi_open=False,
                            doc="A finite number >= 0 and at most 1e9 (delays: 0 at once).")
share = number(0.0, 1.0, lo_open=True, hi_open=False,
               doc="A share in (0, 1] (a cap on rejections: 1 means no cap).")
sparsity = number(0.0, 1.0, lo_open=False, hi_open=True,
                  doc="A sparsity in [0, 1) (0: dense; 1 would prune every weight).")


def probability(text: str) -> float:
    """A P(slow) cutoff strictly between 0 and 1 (0 would reject every IO, 1 none)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text}")
    return v


def _parent_ok(p: Path) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{p}: directory {parent} is not writable")


def output_file(text: str) -> str:
    """A file to write: not a directory, in an existing, writable directory."""
    p = Path(text).expanduser()
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{p} is a directory, expected a file to write")
    if p.exists() and not os.access(p, os.W_OK):
        raise argparse.ArgumentTypeError(f"{p} is not writable")
    _parent_ok(p)
    return text


def output_dir(text: str) -> str:
    """A directory to write reports into (created if missing): not an existing file."""
    p = Path(text).expanduser()
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{p} is a file, expected a directory")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{p} is not writable")
        return text
    anc = next((q for q in p.parents if q.exists()), Path("."))
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{p}: cannot create it under {anc}")
    return text


def png_file(text: str) -> str:
    """A PNG to write: an output file whose name ends in .png (matplotlib takes the
    format from the suffix: it refuses others only after the work, and silently
    writes ``DIR.png`` for a suffix-less path)."""
    output_file(text)
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text}: expected a file name ending in .png")
    return text
