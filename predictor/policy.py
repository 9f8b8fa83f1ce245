"""What a device does with its predictions: the decision policy a bundle carries.

Chosen per device by ``mittd train`` from a closed-loop replay of a validation
window (between the training and the test parts of the trace), never on the
test part, and stored in the bundle so that the daemon, the replayer and the
client act on it unless told otherwise:

- ``reject``: EBUSY when P(slow) exceeds the cutoff (the bundle's
  ``thresholds.p_slow``); the client fails over to the next replica;
- ``hedge``: never reject; the client hedges reads after ``hedge_after_us`` (Dean
  & Barroso). Chosen when the validation replay found the tail not predictable
  enough to beat hedging: the bundle then says so in plain words instead of
  shipping a harmful cutoff;
- ``both``: reject predicted-slow reads and hedge the admitted ones after
  ``hedge_after_us``.

Whatever the mode, rejections are capped: a device never rejects more than
``max_reject_share`` of its predicted decisions (an exponentially weighted
share over about :data:`REJECT_WINDOW` decisions, starting at 0: over N
decisions the realised share stays within ``cap + (window · ln(1/(1 - cap)) +
1) / N``, the start allowing one short run of rejections). A model fed by queue and
latency history can otherwise drive itself into rejecting everything: each
rejected read drains the queue into a state training never saw, where the model
says "slow" again (seen in replays: 97 % rejected, only probes getting through).
The cap makes that impossible by construction and bounds the extra IOs that
failovers cost; a bundle without a policy gets :data:`DEFAULT_MAX_REJECT_SHARE`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DEFAULT_MAX_REJECT_SHARE", "MODES", "REJECT_WINDOW", "DecisionPolicy"]

MODES = ("reject", "hedge", "both")
#: The cap of a bundle that carries no policy (trained before policies existed).
DEFAULT_MAX_REJECT_SHARE = 0.5  # far above any reject budget: it stops lock-in (probes: 97 %)
#: Decisions the reject share is averaged over (the weight of one is 1/window).
REJECT_WINDOW = 1000


def _fraction(d: Mapping[str, Any], key: str, default: float | None, lo_open: bool = False
              ) -> float | None:
    v = d.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        raise ValueError(f"policy.{key} must be a number, got {v!r}")
    if not (0.0 < v <= 1.0 if lo_open else 0.0 <= v <= 1.0):
        raise ValueError(f"policy.{key} must be in {'(0' if lo_open else '[0'}, 1], got {v!r}")
    return float(v)


@dataclass(frozen=True)
class DecisionPolicy:
    """A device's decision policy (see the module docstring).

    ``reason`` says in plain words why this mode was chosen (shown by ``mittd
    check``, ``mittd model describe`` and the replayer); ``validation`` keeps
    the figures of the validation replay it was chosen on.
    """

    mode: str = "reject"
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE
    hedge_after_us: float | None = None
    hedge_percentile: float | None = None
    reason: str = ""
    validation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"policy.mode must be one of {', '.join(MODES)}, got "
                             f"{self.mode!r}")
        if self.mode in ("hedge", "both") and not (
                self.hedge_after_us is not None and math.isfinite(self.hedge_after_us)
                and self.hedge_after_us > 0):
            raise ValueError(f"policy.hedge_after_us must be > 0 µs for mode {self.mode!r}, "
                             f"got {self.hedge_after_us!r}")

    @property
    def rejects(self) -> bool:
        return self.mode in ("reject", "both")

    @property
    def hedges(self) -> bool:
        return self.mode in ("hedge", "both")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DecisionPolicy:
        """From a bundle manifest's ``policy`` table (None or empty: the default);
        ValueError names the bad field."""
        if not d:
            return cls(reason="no policy in the bundle: its own cutoff, rejections capped "
                              f"at {DEFAULT_MAX_REJECT_SHARE:.0%} of decisions")
        if not isinstance(d, Mapping):
            raise ValueError(f"policy must be a table, got {type(d).__name__}")
        known = {"mode", "max_reject_share", "hedge_after_us", "hedge_percentile", "reason",
                 "validation"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"policy: unknown field(s) {', '.join(unknown)}")
        hedge = d.get("hedge_after_us")
        if hedge is not None and (isinstance(hedge, bool) or not isinstance(hedge, int | float)):
            raise ValueError(f"policy.hedge_after_us must be a number, got {hedge!r}")
        pct = d.get("hedge_percentile")
        if pct is not None and (isinstance(pct, bool) or not isinstance(pct, int | float)
                                or not 0.0 < pct < 100.0):
            raise ValueError(f"policy.hedge_percentile must be in (0, 100), got {pct!r}")
        validation = d.get("validation") or {}
        if not isinstance(validation, Mapping):
            raise ValueError("policy.validation must be a table")
        share = _fraction(d, "max_reject_share", DEFAULT_MAX_REJECT_SHARE, lo_open=True)
        if share is None:  # a null in the manifest: not the default, a mistake
            raise ValueError("policy.max_reject_share must be a number, got None")
        return cls(mode=str(d.get("mode", "reject")), max_reject_share=share,
                   hedge_after_us=None if hedge is None else float(hedge),
                   hedge_percentile=None if pct is None else float(pct),
                   reason=str(d.get("reason", "")), validation=dict(validation))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line: the mode, its parameters and why."""
        parts = [self.mode]
        if self.hedges and self.hedge_after_us is not None:
            parts.append(f"hedge after {self.hedge_after_us:,.0f} µs")
        if self.rejects:
            parts.append(f"rejections capped at {self.max_reject_share:.1%}")
        text = ", ".join(parts)
        return f"{text}: {self.reason}" if self.reason else text
