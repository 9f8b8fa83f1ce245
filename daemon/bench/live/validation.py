"""The validation window of ``mittd bench live``: mittd's operating point chosen live, on
slices of its own, before the test slices that report it.

Why: the project's rule is to choose every threshold, cutoff and policy on a
validation window, never on the test part. A cutoff fixed offline (the demo's
0.97) may not suit this machine's disk or load: on one disk, where failover
cannot help, any admission only adds its CPU cost, and the honest operating
point is "off". So the run reads a few candidates — ``off`` (no admission: reads
like ``none``) and rejection at a small ladder of P(slow) cutoffs, each with its
own :class:`~mittd.daemon.embedded.Embedded` (own trackers), the strictest also
with the reject cap lifted — one contention period per slice, rotated every
round like the test slices, and picks one by :func:`choose`. The test slices then
use the choice unchanged; the validation reads are counted apart and never enter
the test rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the P(slow) cutoffs tried by default (the demo's 0.97 among them)
LADDER = (0.5, 0.8, 0.9, 0.97, 0.99)
#: a candidate must beat ``off``'s validation p99 by this share to be chosen
MARGIN = 0.03
#: candidates in all, ``off`` included: few, so that each gets enough reads
MAX_CANDIDATES = 8
#: how many of the strictest cutoffs also run with the reject cap lifted (1.0)
LIFTED = 2
#: reads a candidate needs for a p99 to judge it by
MIN_READS = 100
OFF = "off"
RULE = (f"the candidate with the lowest p99 on the validation window wins if that p99 is "
        f"more than {MARGIN:.0%} below off's (reading without mittd); ties go to the fewer "
        f"failovers, then to the one listed first; a candidate with under {MIN_READS} reads "
        f"cannot win; otherwise mittd stays off for the test part")
OFF_TEXT = ("on the validation window no cutoff beat reading without mittd: mittd stays off "
            "on this setup")


@dataclass(frozen=True)
class Candidate:
    """One operating point on trial: ``cutoff`` None is ``off`` (no admission at all)."""

    name: str
    cutoff: float | None = None
    max_reject_share: float | None = None

    @property
    def off(self) -> bool:
        return self.cutoff is None


def candidates(cutoffs: Sequence[float], cap: float) -> list[Candidate]:
    """``off``, then each cutoff (ascending) at the run's reject ``cap``, then — room
    permitting (:data:`MAX_CANDIDATES`) and only when ``cap`` < 1 — the :data:`LIFTED`
    strictest cutoffs with the cap lifted to 1.0. ValueError for a cutoff outside (0, 1)
    or too many cutoffs."""
    cuts = sorted({float(c) for c in cutoffs})
    if not cuts:
        raise ValueError("at least one cutoff is needed")
    for c in cuts:
        if not 0 < c < 1:
            raise ValueError(f"cutoff {c:g} is not a probability in (0, 1)")
    if 1 + len(cuts) > MAX_CANDIDATES:
        raise ValueError(f"{len(cuts)} cutoffs: at most {MAX_CANDIDATES - 1} (with off, "
                         f"{MAX_CANDIDATES} candidates)")
    out = [Candidate(OFF)]
    out += [Candidate(f"P(slow) > {c:g}", c, cap) for c in cuts]
    if cap < 1.0:
        room = min(LIFTED, MAX_CANDIDATES - len(out))
        strict = cuts[len(cuts) - room:] if room > 0 else []
        out += [Candidate(f"P(slow) > {c:g}, no cap", c, 1.0) for c in strict]
    return out


def summary(lat_us: np.ndarray, attempts: np.ndarray, seconds: float,
            adm: Mapping[str, float] | None = None) -> dict[str, Any]:
    """A candidate's validation row from its reads' latencies (µs) and attempts (replicas
    asked; > 1 is a failover here: candidates never hedge) and its admission counters."""
    n = len(lat_us)
    adm = adm or {}

    def q(p: float) -> float | None:
        return float(np.percentile(lat_us, p)) if n else None

    decisions = int(adm.get("predict_count", 0))
    rejected = int(adm.get("rejected", 0))
    return {"reads": n, "seconds": seconds, "p50_us": q(50),
            "p99_us": q(99) if n >= MIN_READS else None, "p99_9_us": q(99.9),
            "failover_rate": float((attempts > 1).mean()) if n else 0.0,
            "decisions": decisions, "rejected": rejected,
            "reject_rate": rejected / decisions if decisions else None}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def choose(rows: Mapping[str, Mapping[str, Any]], margin: float = MARGIN) -> str:
    """The name of the chosen candidate by :data:`RULE`; ``off`` unless one beats it.

    ``rows`` maps each candidate's name to its validation figures, in listing order:
    ``p99_us`` (None or NaN: too few reads to judge) and ``failover_rate``. With no
    p99 for ``off`` there is nothing to beat and the answer is ``off``.
    """
    base = rows.get(OFF, {}).get("p99_us")
    if not _finite(base):
        return OFF
    judged = [(float(r["p99_us"]), float(r.get("failover_rate") or 0.0), i, name)
              for i, (name, r) in enumerate(rows.items())
              if name != OFF and _finite(r.get("p99_us"))]
    if not judged:
        return OFF
    p99, _, _, name = min(judged)
    return name if p99 < (1.0 - margin) * float(base) else OFF
