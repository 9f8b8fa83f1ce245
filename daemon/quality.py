"""Live model quality: how right the model is on *this* device, from its own IOs.

Why: a model is validated on the trace it was trained on; after deployment only
the device's measured latencies can say whether it still ranks slow IOs above
fast ones. The admission core keeps its recent decisions in the record ring
(``mittd.daemon.ring``); a completion fills in the IO's latency, so every
completed, predicted IO is a labelled example: slow = latency above the latency
threshold of the head that judged it. From the last ``window`` decisions:

* ``roc_auc``: ranking quality of P(slow) (NaN until both classes were seen);
* ``precision``/``recall`` of "P(slow) above the cutoff" (the model's verdict);
* ``would_reject_share``: the share of predicted decisions the model called slow
  (in shadow mode: what enforcing would reject, before the probe and cap rules);
* ``drift``: the live ROC-AUC *stays* below the bundle's validation ROC-AUC by
  more than ``drift_margin``: in each of the last ``drift_windows`` disjoint
  windows of ``window`` decisions, each with at least :data:`MIN_LABELLED`
  labelled IOs of each class (a few IOs say nothing; one bad window is a burst,
  not a drift — adaptive hedging that trusts one window's percentile stops
  firing exactly when a device degrades).

In enforce mode a rejected IO never completes, so the labelled set is the
admitted IOs (and probes): quality then describes the admitted traffic only.
Shadow mode sees every IO and is the unbiased measurement.

The ROC-AUC is :func:`mittd.training.evaluate.roc_auc` (numpy only), the same
function ``mittd evaluate`` reports, so the two numbers can be compared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mittd.daemon.config import MODES
from mittd.predictor.ranking import roc_auc

__all__ = ["MIN_LABELLED", "MODES", "LiveQuality", "live_quality"]

MIN_LABELLED = 20  # of each class, before drift can be called


@dataclass(frozen=True)
class LiveQuality:
    """One device's live quality over its last ``window`` decisions (see module doc).

    ``labelled``: completed, predicted IOs in the window; ``slow``: those above
    their threshold; ``validation_roc_auc``: the bundle's held-out ROC-AUC
    (provenance ``test_metrics``; NaN when the bundle has none, and then no drift).
    """

    mode: str
    window: int
    decided: int
    labelled: int
    slow: int
    roc_auc: float
    precision: float
    recall: float
    would_reject_share: float
    validation_roc_auc: float
    drift_margin: float
    drift_windows: int
    windows_below: int
    drift: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def _below(auc: float, labelled: int, slow: int, validation_roc_auc: float,
           drift_margin: float) -> bool:
    """The drift test of one window (its one home): ROC-AUC below validation by more
    than the margin, on at least :data:`MIN_LABELLED` labelled IOs of each class."""
    return (math.isfinite(auc) and math.isfinite(validation_roc_auc)
            and min(slow, labelled - slow) >= MIN_LABELLED
            and auc < validation_roc_auc - drift_margin)


def below(margin: np.ndarray, latency_us: np.ndarray, threshold_us: np.ndarray,
          validation_roc_auc: float, drift_margin: float) -> bool:
    """:func:`_below` of a window given by its arrays (the windows before the newest)."""
    done = np.isfinite(latency_us)
    y = latency_us[done] > threshold_us[done]
    n, slow = int(done.sum()), int(y.sum())
    if min(slow, n - slow) < MIN_LABELLED or not math.isfinite(validation_roc_auc):
        return False  # no ROC-AUC to compute
    return _below(roc_auc(y, margin[done]), n, slow, validation_roc_auc, drift_margin)


def live_quality(mode: str, window: int, margin: np.ndarray, cutoff: np.ndarray,
                 latency_us: np.ndarray, threshold_us: np.ndarray,
                 validation_roc_auc: float, drift_margin: float,
                 older_below: tuple[bool, ...] = (), drift_windows: int = 1) -> LiveQuality:
    """Quality of the predicted decisions described by the arrays (one entry per IO).

    ``margin``: the model's score (logit of P(slow)); ``cutoff``: the margin above
    which it said slow; ``latency_us``: measured (NaN: not completed);
    ``threshold_us``: the latency threshold of the head asked; ``older_below``:
    :func:`below` of the windows before this one, newest first.
    """
    decided = len(margin)
    said_slow = margin > cutoff
    done = np.isfinite(latency_us)
    y = latency_us[done] > threshold_us[done]
    s = margin[done]
    pred = said_slow[done]
    n, slow = int(done.sum()), int(y.sum())
    auc = roc_auc(y, s) if 0 < slow < n else math.nan
    tp = int(np.count_nonzero(pred & y))
    run = 0
    for b in (_below(auc, n, slow, validation_roc_auc, drift_margin), *older_below):
        if not b or run == drift_windows:
            break
        run += 1
    return LiveQuality(mode=mode, window=window, decided=decided, labelled=n, slow=slow,
                       roc_auc=float(auc), precision=_ratio(tp, int(pred.sum())),
                       recall=_ratio(tp, slow),
                       would_reject_share=_ratio(int(said_slow.sum()), decided),
                       validation_roc_auc=float(validation_roc_auc),
                       drift_margin=float(drift_margin), drift_windows=int(drift_windows),
                       windows_below=run, drift=run >= drift_windows)
