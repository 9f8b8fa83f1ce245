"""Ranking quality of a latency predictor's scores: ROC-AUC, in one home.

Why here and not in ``training``: the daemon reports the live ROC-AUC of the model
it serves (``mittd.daemon.quality``) and must never import the training package;
``mittd evaluate`` and training's reports import it from here, so the live and
the offline number are the same function. Pure numpy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["roc_auc"]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic: P(score of a slow IO > score of a
    fast one), ties counting 1/2 (equal to the trapezoidal ROC area). NaN when
    only one class is present."""
    y = np.asarray(y_true).astype(bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    r = _average_ranks(np.asarray(score, np.float64))
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))
