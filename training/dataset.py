"""Labelled traces → train/test arrays for the predictors, split by time.

Every IO of a trace is featurised (writes and unlabelled IOs are pending
requests too, so they shape the features of the IOs around them), then only
the IOs with a known latency (and only reads with ``reads_only``) become
examples. Each trace is split by issue time — the first part trains, an
optional validation window follows (where ``mittd train`` chooses the operating
point and the policy, by closed-loop replay), the rest tests, never shuffled
across time — because a model is deployed on the
future of the device it was trained on; a random split would leak the device's
state at test time into training and flatter the model. Everything learned from
data (the SLO threshold, Heimdall's min-max bounds, class weights) comes from
the training part only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mittd.predictor.features import (
    FEATURISERS,
    Featuriser,
    MinMaxFeaturiser,
    make_featuriser,
    trace_columns,
)
from mittd.traces.registry import open_trace
from mittd.traces.schema import OP_READ
from mittd.training.labels import labels, ladder, parse_slo

__all__ = ["MIN_LABELLED", "Dataset", "load_dataset"]

MIN_LABELLED = 200  # fewer labelled IOs than this cannot make a meaningful split


def _empty(dtype: type) -> np.ndarray:
    return np.zeros(0, dtype)


@dataclass
class Dataset:
    """Train/test arrays of one featuriser over one or more labelled traces.

    ``x_*`` float32 (n, dim) features; ``y_*`` int8 labels, 1 = slow, (n,) for one
    threshold or (n, k) for a ladder; ``lat_*`` float64 latencies in µs;
    ``class_weight`` is ``{0: w_fast, 1: w_slow}`` (balanced: n / (2 · n_class))
    for one threshold, and for a ladder a list of per-threshold positive weights
    ``n_fast_j / n_slow_j`` (a slow row weighs that much, a fast row 1: equal total
    weight per class, as "balanced" up to a constant). ``ts_*`` are issue times
    (µs) and ``source_*`` the index of each row's trace in ``info["sources"]``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    lat_train: np.ndarray
    lat_test: np.ndarray
    thresholds_us: list[float]
    featuriser: Featuriser
    class_weight: dict[int, float] | list[float]
    info: dict[str, Any]
    ts_train: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    ts_test: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    source_train: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    source_test: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    x_val: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    y_val: np.ndarray = field(default_factory=lambda: _empty(np.int8))
    lat_val: np.ndarray = field(default_factory=lambda: _empty(np.float64))


@dataclass
class _Part:
    """One trace, in issue order: which rows are examples and where it splits."""

    path: Path
    fmt: str
    table: pa.Table
    n_ios: int
    train: np.ndarray  # row indices (issue order) of training examples
    test: np.ndarray
    ts: np.ndarray
    lat: np.ndarray
    split_ts_us: int | None
    val: np.ndarray  # the validation window's examples (between train and test)
    val_ts_us: int | None  # where the validation window starts (None: no window)


def _make_featuriser(name: str, config: dict[str, Any] | None) -> Featuriser:
    if name not in FEATURISERS:
        raise ValueError(f"unknown featuriser {name!r}; choose one of: {', '.join(FEATURISERS)}")
    cfg = dict(config or {})
    if cfg.get("name", name) != name:
        raise ValueError(
            f"featuriser_config is for {cfg['name']!r}, not the {name!r} featuriser asked for"
        )
    return make_featuriser({**cfg, "name": name})


def _cut(ts: np.ndarray, rows: np.ndarray, fraction: float) -> int | None:
    """The issue time that splits ``rows`` after their first ``fraction``, moved to a
    timestamp boundary (every row before it is issued before every row after)."""
    target = round(fraction * rows.size)
    if target >= rows.size:
        return None
    cut = int(ts[rows[target]])
    if not (ts[rows] < cut).any():  # the first timestamp holds most rows: cut after it
        later = rows[ts[rows] > cut]
        return int(ts[later[0]]) if later.size else None
    return cut


def _read(path: Path, reads_only: bool, test_fraction: float,
          validation_fraction: float = 0.0) -> _Part:
    stream = open_trace(path)
    table = stream.table()
    cols = trace_columns(table)  # issue order, the order encode_trace's rows follow
    known = np.isfinite(cols.lat)
    if reads_only:
        known &= cols.op == OP_READ
    if not known.any():
        what = "read" if reads_only else "IO"
        raise ValueError(
            f"{path}: no {what} has a known latency ({stream.format.name} trace with "
            f"{len(cols.ts):,} IOs); training needs a labelled trace (fio, blkparse, MSR, ...)"
        )
    rows = np.flatnonzero(known)
    # First (1 - test_fraction) of the examples in issue order train (and validate);
    # each cut sits on a timestamp boundary so that every earlier part's IO is issued
    # before every later part's.
    ts = cols.ts
    split_ts = _cut(ts, rows, 1.0 - test_fraction)
    before = ts[rows] < split_ts if split_ts is not None else np.ones(rows.size, bool)
    train, test = rows[before], rows[~before]
    val, val_ts = rows[:0], None
    if validation_fraction > 0.0 and train.size:
        val_ts = _cut(ts, rows, 1.0 - test_fraction - validation_fraction)
        if val_ts is not None:
            early = ts[train] < val_ts
            train, val = train[early], train[~early]
    return _Part(path, stream.format.name, table, len(cols.ts), train, test, cols.ts,
                 cols.lat, split_ts, val, val_ts)


def _fit_bounds(feat: MinMaxFeaturiser, parts: list[_Part]) -> None:
    """Min-max bounds (heimdall, lba_hist) from the training examples of every trace,
    nothing later."""
    raw = [feat.raw_trace(p.table)[p.train] for p in parts]
    train_raw = np.concatenate(raw) if raw else np.zeros((0, feat.fit_dim))
    if train_raw.shape[0] == 0:
        raise ValueError(f"no training example to fit the {feat.name} featuriser's bounds on")
    feat.fit_raw(train_raw)


def _class_weight(y: np.ndarray) -> dict[int, float] | list[float]:
    if y.ndim == 1:
        n, n1 = len(y), int(y.sum())
        return {0: n / (2.0 * (n - n1)), 1: n / (2.0 * n1)}
    n1 = y.sum(axis=0).astype(np.float64)
    return [float(v) for v in (len(y) - n1) / n1]


def _check_classes(y: np.ndarray, thresholds: list[float], test_fraction: float) -> None:
    y2 = y.reshape(len(y), -1)
    for j, t in enumerate(thresholds):
        n1 = int(y2[:, j].sum())
        where = f"the training split (first {1 - test_fraction:.0%} of each trace)"
        if n1 == 0:
            raise ValueError(
                f"no slow IO (latency > {t:,.1f} µs) in {where}: choose a lower SLO "
                "(e.g. 'auto' or 'p99') or a longer trace"
            )
        if n1 == len(y2):
            raise ValueError(
                f"every IO is slow (latency > {t:,.1f} µs) in {where}: choose a higher SLO"
            )


def _ts_range(ts: np.ndarray) -> list[int] | None:
    return [int(ts[0]), int(ts[-1])] if ts.size else None


def load_dataset(
    traces: Sequence[str | Path],
    featuriser_name: str,
    slo: str = "auto",
    ladder_k: int | None = None,
    test_fraction: float = 0.3,
    reads_only: bool = False,
    featuriser_config: dict[str, Any] | None = None,
    validation_fraction: float = 0.0,
) -> Dataset:
    """Read, featurise, label and split labelled traces (any supported format).

    Traces are featurised separately and concatenated in the order given (pass
    them in time order). Per trace, the first ``1 - test_fraction`` of its
    examples in issue order train and the rest test; the cut falls between two
    issue times, so every training IO precedes every test IO of its trace. The
    threshold is ``parse_slo(slo, training latencies)`` or, with ``ladder_k``,
    ``ladder(training latencies, ladder_k)`` (``slo`` must then stay ``"auto"``).
    Min-max bounds (heimdall, lba_hist) are fitted on the training examples only — unless
    ``featuriser_config`` already carries ``min``/``max`` (a bundle's featuriser),
    which are kept so the features match the weights trained on them. With
    ``validation_fraction`` > 0 that share of each trace's examples, just before
    the test part, is held out of training as ``x_val``/``y_val`` (the window where
    ``mittd train`` chooses its operating point); its bounds are in ``info``.
    """
    if isinstance(traces, (str, Path)):
        traces = [traces]
    if not traces:
        raise ValueError("load_dataset needs at least one trace")
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if not (isinstance(validation_fraction, (int, float))
            and 0.0 <= validation_fraction < 1.0 - test_fraction):
        raise ValueError(f"validation_fraction must be in [0, 1 - test_fraction), got "
                         f"{validation_fraction!r}")
    if ladder_k is not None and (not isinstance(slo, str) or slo.strip().lower() != "auto"):
        raise ValueError(f"give either slo ({slo!r}) or ladder_k ({ladder_k}), not both")
    feat = _make_featuriser(featuriser_name, featuriser_config)

    parts = [_read(Path(p), reads_only, test_fraction, validation_fraction) for p in traces]
    n_labelled = sum(p.train.size + p.val.size + p.test.size for p in parts)
    if n_labelled < MIN_LABELLED:
        raise ValueError(
            f"only {n_labelled} labelled {'reads' if reads_only else 'IOs'} in "
            f"{len(parts)} trace(s); training needs at least {MIN_LABELLED}"
        )
    n_train = sum(p.train.size for p in parts)
    if n_train == 0 or n_train == n_labelled:
        raise ValueError(
            f"the time split left {'no' if n_train == 0 else 'every'} labelled IO in "
            "training (all IOs share one issue time?); pass a longer trace"
        )

    lat_train = np.concatenate([p.lat[p.train] for p in parts])
    if ladder_k is None:
        thresholds = [parse_slo(slo, lat_train)]
        y_train = labels(lat_train, thresholds[0])
    else:
        thresholds = ladder(lat_train, ladder_k)
        y_train = labels(lat_train, thresholds)
    _check_classes(y_train, thresholds, test_fraction)

    fit_note = "not needed"
    if isinstance(feat, MinMaxFeaturiser):
        if feat.fitted:
            fit_note = "bounds given in featuriser_config"
        else:
            _fit_bounds(feat, parts)
            fit_note = "training split"

    xs_train, xs_val, xs_test = [], [], []
    for p in parts:
        x = feat.encode_trace(p.table)
        xs_train.append(x[p.train])
        xs_val.append(x[p.val])
        xs_test.append(x[p.test])
        del x
    lat_test = np.concatenate([p.lat[p.test] for p in parts])
    y_test = labels(lat_test, thresholds[0] if ladder_k is None else thresholds)
    lat_val = np.concatenate([p.lat[p.val] for p in parts])
    y_val = labels(lat_val, thresholds[0] if ladder_k is None else thresholds)

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p.ts[getattr(p, key)] for p in parts])

    def src(key: str) -> np.ndarray:
        return np.concatenate(
            [np.full(getattr(p, key).size, i, np.int32) for i, p in enumerate(parts)]
        )

    def slow_fraction(y: np.ndarray) -> list[float]:
        y2 = y.reshape(len(y), -1)
        return [float(v) for v in y2.mean(axis=0)] if len(y2) else [math.nan] * y2.shape[1]

    info: dict[str, Any] = {
        "sources": [str(p.path.resolve()) for p in parts],
        "traces": [
            {
                "path": str(p.path),
                "format": p.fmt,
                "n_ios": p.n_ios,
                "n_labelled": int(p.train.size + p.val.size + p.test.size),
                "n_train": int(p.train.size),
                "n_test": int(p.test.size),
                "split_ts_us": p.split_ts_us,
                "validation_ts_us": p.val_ts_us,
                "n_validation": int(p.val.size),
                "train_ts_us": _ts_range(p.ts[p.train]),
                "test_ts_us": _ts_range(p.ts[p.test]),
            }
            for p in parts
        ],
        "featuriser": feat.name,
        "featuriser_fit": fit_note,
        "slo": slo if ladder_k is None else None,
        "ladder_k": ladder_k,
        "thresholds_us": [float(t) for t in thresholds],
        "test_fraction": float(test_fraction),
        "validation_fraction": float(validation_fraction),
        "reads_only": bool(reads_only),
        "split": "by issue time per trace: first part trains, the rest tests",
        "n_train": len(y_train),
        "n_test": len(y_test),
        "slow_fraction_train": slow_fraction(y_train),
        "slow_fraction_test": slow_fraction(y_test),
    }
    return Dataset(
        x_train=np.concatenate(xs_train),
        y_train=y_train,
        x_test=np.concatenate(xs_test),
        y_test=y_test,
        lat_train=lat_train,
        lat_test=lat_test,
        thresholds_us=[float(t) for t in thresholds],
        featuriser=feat,
        class_weight=_class_weight(y_train),
        info=info,
        ts_train=cat("train"),
        ts_test=cat("test"),
        source_train=src("train"),
        source_test=src("test"),
        x_val=np.concatenate(xs_val),
        y_val=y_val,
        lat_val=lat_val,
    )
