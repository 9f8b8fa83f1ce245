"""Featurisers: the device state around a new IO → a float32 input vector for the predictor.

One code path for training and serving: ``encode_live`` reads a live
:class:`~mittd.predictor.tracker.PendingTracker`, ``encode_trace`` replays a recorded
trace through the tracker's own kernels (see ``features_kernels.simulate``) and
calls the same row kernel for every IO, so both give bit-identical vectors. The
tracker semantics (featurise before issue, completions at ``c <= t`` first,
timeout, capacity) are in ``mittd.predictor.tracker``; ``timeout_us`` and
``capacity`` are featuriser parameters because they change the features, and
``encode_live`` refuses a tracker built with other values.

``encode_trace(table)`` takes a canonical trace (``mittd.traces.schema``) and
returns one row per IO in issue order: rows follow the table stably sorted by
``ts_issue_us`` (ties keep table order) — :func:`issue_order` gives that
permutation, so labels align as ``latency_us[issue_order(table)]``. A trace with
several devices is featurised per device (one tracker each), rows still in
global issue order. An IO with NaN latency never completes (it leaves by expiry).

Featurisers
-----------
``lba`` (Weng & Chien; the product's), dim (1 + pending) · lba_bytes · 8 = 352 by
    default. LBA = offset // lba_unit, taken modulo 2^(8·lba_bytes). Layout:
    ``index = slot·(lba_bytes·8) + byte·8 + bit``; slot 0 = the current request,
    slots 1..pending = the pending requests, most recently issued first,
    zero-filled when fewer are pending; byte 0 = most significant byte; bit 0 =
    most significant bit of that byte; values 1.0 / 0.0.
``linnos`` (LinnOS, OSDI'20), dim 3 + 4·3 + 4·4 = 31 by default. Decimal digits,
    one input each (0..9), most significant first: the current queue length
    (queue_digits, capped at 999); the queue length seen at issue by each of the
    last n_reads completed reads, most recent first (capped 999); their latencies
    in whole µs, rounded down (latency_digits, capped 9999). Missing history = 0.
``heimdall`` (Heimdall, EuroSys'25), dim 2 + 3·history = 11 by default. Raw
    features ``[size, queue length, (queue length at issue, latency µs,
    throughput = size / max(latency, 1 µs) bytes/µs) of each of the last `history`
    completed IOs of any op, most recent first]`` (missing history = 0), min-max
    scaled to [0, 1] with per-feature bounds fitted on training data
    (``fit``/``fit_raw``); values outside clip. A constant feature (max == min)
    maps to 0 at or below the bound, 1 above.
``lba_hist`` (the LBA bits with queue and latency history), dim 352 + 31 + 11 = 394
    by default: the ``lba`` vector, then the ``linnos`` digits, then the
    ``heimdall`` features, each encoded exactly as its own featuriser does (same
    parameters, same row kernel on a slice of the row). Only the heimdall part is
    min-max scaled; ``min``/``max`` hold its 2 + 3·history bounds, fitted on
    training data like Heimdall's (``fit``/``fit_raw``; ``raw_trace`` gives that
    part unscaled).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mittd.predictor.features_kernels import (
    KIND_HEIMDALL,
    KIND_LBA,
    KIND_LBA_HIST,
    KIND_LINNOS,
    heimdall_row,
    lba_hist_row,
    lba_row,
    linnos_row,
    simulate,
)
from mittd.predictor.tracker import (
    DEFAULT_CAPACITY,
    DEFAULT_HISTORY,
    DEFAULT_TIMEOUT_US,
    PendingTracker,
    check_tracker_params,
    completion_times_us,
)

__all__ = [
    "FEATURISERS",
    "Featuriser",
    "HeimdallFeaturiser",
    "LBAFeaturiser",
    "LBAHistFeaturiser",
    "LinnOSFeaturiser",
    "MinMaxFeaturiser",
    "NotFittedError",
    "issue_order",
    "make_featuriser",
    "trace_columns",
]

_F32 = np.dtype(np.float32)
_OP_NAMES = ("read", "write", "other")


class NotFittedError(RuntimeError):
    """A featuriser that needs fitted parameters was used before fitting."""


def _int_param(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return value


# -- trace columns -------------------------------------------------------------------------


class TraceColumns(NamedTuple):
    """Numpy columns of a canonical trace in issue order (see :func:`trace_columns`)."""

    ts: np.ndarray  # int64
    lat: np.ndarray  # float64, NaN unknown
    op: np.ndarray  # int8 codes
    off: np.ndarray  # int64
    size: np.ndarray  # int64
    device: np.ndarray | None  # int32 device codes, None when one device

    def take(self, idx: np.ndarray) -> TraceColumns:
        return TraceColumns(
            self.ts[idx], self.lat[idx], self.op[idx], self.off[idx], self.size[idx],
            None if self.device is None else self.device[idx],
        )


def _as_table(table: pa.Table | pa.RecordBatch) -> pa.Table:
    return pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table


def _op_codes(col: pa.ChunkedArray) -> np.ndarray:
    parts = []
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):
            names = chunk.dictionary.to_pylist()
            idx = chunk.indices.to_numpy(zero_copy_only=False).astype(np.int8)
            if tuple(names) != _OP_NAMES[: len(names)]:
                remap = np.array([_op_code(v) for v in names] or [2], np.int8)
                idx = remap[idx]
            parts.append(idx)
        else:
            parts.append(np.array([_op_code(v) for v in chunk.to_pylist()], np.int8))
    return np.concatenate(parts) if parts else np.zeros(0, np.int8)


def _op_code(name: object) -> int:
    return _OP_NAMES.index(name) if name in _OP_NAMES else 2


def issue_order(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Row permutation that puts a trace in issue order (stable sort on ts_issue_us)."""
    ts = _as_table(table).column("ts_issue_us").to_numpy().astype(np.int64, copy=False)
    return np.argsort(ts, kind="stable")


def trace_columns(table: pa.Table | pa.RecordBatch) -> TraceColumns:
    """A canonical trace as numpy columns, stably sorted by ts_issue_us."""
    t = _as_table(table)
    ts = t.column("ts_issue_us").to_numpy().astype(np.int64, copy=False)
    cols = TraceColumns(
        ts,
        t.column("latency_us").to_numpy().astype(np.float64, copy=False),
        _op_codes(t.column("op")),
        t.column("offset").to_numpy().astype(np.int64, copy=False),
        t.column("size").to_numpy().astype(np.int64, copy=False),
        None,
    )
    dev = t.column("device")
    if len(dev) and pc.count_distinct(dev).as_py() > 1:
        enc = dev.combine_chunks().dictionary_encode()
        cols = cols._replace(device=enc.indices.to_numpy().astype(np.int32))
    if len(ts) > 1 and not bool(np.all(ts[1:] >= ts[:-1])):
        cols = cols.take(np.argsort(ts, kind="stable"))
    return cols


# -- base --------------------------------------------------------------------------------------


class Featuriser(ABC):
    """Common parts: tracker parameters, config round trip, the offline driver."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    kind: ClassVar[int]
    dim: int

    def __init__(self, timeout_us: int, capacity: int) -> None:
        check_tracker_params(timeout_us, capacity)
        self.timeout_us = timeout_us
        self.capacity = capacity
        self._checked: PendingTracker | None = None

    @property
    def fitted(self) -> bool:
        """Whether every parameter is known (always, but for a MinMaxFeaturiser's bounds)."""
        return True

    # subclass hooks
    @property
    @abstractmethod
    def history_needed(self) -> int:
        """Completion-history depth the encoding reads."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """The featuriser's own parameters (config minus name/version/dim/tracker)."""

    @abstractmethod
    def _kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(int params, lower bounds, upper bounds) for features_kernels.simulate."""

    @abstractmethod
    def encode_live(
        self, tracker: PendingTracker, offset: int, size: int, op: int,
        out: np.ndarray | None = None, *, now_us: int | None = None,
    ) -> np.ndarray:
        """Vector of the next IO from a live tracker, BEFORE the IO is issued to it.

        ``now_us`` expires stale requests first (``tracker.expire(now_us)``); pass it
        or call ``expire`` yourself. With ``out`` (float32, shape (dim,)) nothing is
        allocated.
        """

    # config
    def config(self) -> dict[str, Any]:
        """Every parameter, JSON-serialisable; ``make_featuriser(config)`` rebuilds it."""
        return {
            "name": self.name,
            "version": self.version,
            "dim": self.dim,
            **self._params(),
            "timeout_us": self.timeout_us,
            "capacity": self.capacity,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Featuriser:
        cfg = dict(config)
        name = cfg.pop("name", cls.name)
        if name != cls.name:
            raise ValueError(f"config name {name!r} is not {cls.name!r}")
        version = cfg.pop("version", cls.version)
        if version != cls.version:
            raise ValueError(
                f"{cls.name} featuriser config version {version!r} is not supported "
                f"(this mittd reads version {cls.version})"
            )
        dim = cfg.pop("dim", None)
        try:
            feat = cls(**cfg)
        except TypeError as e:
            raise ValueError(f"bad {cls.name} featuriser config: {e}") from None
        if dim is not None and dim != feat.dim:
            raise ValueError(f"config dim {dim!r} does not match the parameters ({feat.dim})")
        return feat

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config() == self.config()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items() if k not in ("min", "max"))
        return f"{type(self).__name__}({args})"

    # live path
    def make_tracker(self, history: int | None = None) -> PendingTracker:
        """A tracker whose parameters match this featuriser."""
        depth = max(DEFAULT_HISTORY, self.history_needed) if history is None else history
        return PendingTracker(self.timeout_us, self.capacity, depth)

    def _check_tracker(self, tracker: PendingTracker) -> None:
        if tracker.timeout_us != self.timeout_us or tracker.capacity != self.capacity:
            raise ValueError(
                f"tracker (timeout_us={tracker.timeout_us}, capacity={tracker.capacity}) does "
                f"not match the {self.name} featuriser (timeout_us={self.timeout_us}, "
                f"capacity={self.capacity}); build it with make_tracker()"
            )
        if tracker.history < self.history_needed:
            raise ValueError(
                f"tracker history {tracker.history} < {self.history_needed} needed by {self.name}"
            )
        self._checked = tracker

    def _prepare(
        self, tracker: PendingTracker, out: np.ndarray | None, now_us: int | None
    ) -> np.ndarray:
        if tracker is not self._checked:
            self._check_tracker(tracker)
        if now_us is not None:
            tracker.expire(now_us)
        if out is None:
            return np.empty(self.dim, _F32)
        if out.dtype is not _F32 or out.shape != (self.dim,):
            raise ValueError(f"out must be a float32 array of shape ({self.dim},)")
        return out

    # offline path
    def encode_trace(
        self, table: pa.Table | pa.RecordBatch, out: np.ndarray | None = None
    ) -> np.ndarray:
        """float32 (N, dim): one row per IO, in issue order (see module docstring).

        ``out`` (float32, C-contiguous, (N, dim)) is filled instead of a new array,
        e.g. a memory map for traces larger than RAM.
        """
        cols = trace_columns(table)
        args = self._kernel_args()
        if out is not None:
            n = len(cols.ts)
            if out.dtype != _F32 or out.shape != (n, self.dim) or not out.flags.c_contiguous:
                raise ValueError(f"out must be C-contiguous float32 of shape ({n}, {self.dim})")
        return self._replay(cols, _F32, True, args, out)

    def _replay(
        self, cols: TraceColumns, dtype: np.dtype, scale: bool,
        args: tuple[np.ndarray, np.ndarray, np.ndarray], out: np.ndarray | None = None,
    ) -> np.ndarray:
        n = len(cols.ts)
        if out is None:
            out = np.empty((n, self.dim), dtype)
        if n == 0:
            return out
        iparams, lo, hi = args
        groups: list[np.ndarray | None] = [None]
        if cols.device is not None:
            groups = [np.flatnonzero(cols.device == d) for d in np.unique(cols.device)]
        for idx in groups:
            sub = cols if idx is None else cols.take(idx)
            dst = out if idx is None else np.empty((len(idx), self.dim), dtype)
            comp = completion_times_us(sub.ts, sub.lat, self.timeout_us)
            corder = np.argsort(comp, kind="stable")
            simulate(
                self.kind, sub.ts, comp, corder, sub.lat, sub.off, sub.size, sub.op,
                iparams, lo, hi, scale, self.capacity, self.timeout_us, self.history_needed, dst,
            )
            if idx is not None:
                out[idx] = dst
        return out


_NO_BOUNDS = np.zeros(0, np.float64)


# -- lba ---------------------------------------------------------------------------------------


class LBAFeaturiser(Featuriser):
    """Binary LBAs of the request and its most recent pending requests (Weng & Chien)."""

    name = "lba"
    kind = KIND_LBA

    def __init__(
        self,
        pending: int = 10,
        lba_bytes: int = 4,
        lba_unit: int = 4096,
        timeout_us: int = DEFAULT_TIMEOUT_US,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        super().__init__(timeout_us, capacity)
        self.pending = _int_param("pending", pending, 0, 4096)
        self.lba_bytes = _int_param("lba_bytes", lba_bytes, 1, 8)
        self.lba_unit = _int_param("lba_unit", lba_unit, 1, 1 << 40)
        self.dim = (1 + pending) * lba_bytes * 8
        self._iparams = np.array([pending, lba_bytes, lba_unit], np.int64)

    @property
    def history_needed(self) -> int:
        return 0

    def _params(self) -> dict[str, Any]:
        return {"pending": self.pending, "lba_bytes": self.lba_bytes, "lba_unit": self.lba_unit}

    def _kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._iparams, _NO_BOUNDS, _NO_BOUNDS

    def encode_live(
        self, tracker: PendingTracker, offset: int, size: int, op: int,
        out: np.ndarray | None = None, *, now_us: int | None = None,
    ) -> np.ndarray:
        out = self._prepare(tracker, out, now_us)
        lba_row(out, tracker.pend, tracker.meta, offset, self.pending, self.lba_bytes,
                self.lba_unit)
        return out


# -- linnos ------------------------------------------------------------------------------------


class LinnOSFeaturiser(Featuriser):
    """Decimal digits of queue lengths and of the last reads' latencies (LinnOS)."""

    name = "linnos"
    kind = KIND_LINNOS

    def __init__(
        self,
        n_reads: int = 4,
        queue_digits: int = 3,
        latency_digits: int = 4,
        timeout_us: int = DEFAULT_TIMEOUT_US,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        super().__init__(timeout_us, capacity)
        self.n_reads = _int_param("n_reads", n_reads, 0, 64)
        self.queue_digits = _int_param("queue_digits", queue_digits, 1, 18)
        self.latency_digits = _int_param("latency_digits", latency_digits, 1, 18)
        self.dim = queue_digits + n_reads * (queue_digits + latency_digits)
        self._iparams = np.array([n_reads, queue_digits, latency_digits], np.int64)

    @property
    def history_needed(self) -> int:
        return self.n_reads

    def _params(self) -> dict[str, Any]:
        return {
            "n_reads": self.n_reads,
            "queue_digits": self.queue_digits,
            "latency_digits": self.latency_digits,
        }

    def _kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._iparams, _NO_BOUNDS, _NO_BOUNDS

    def encode_live(
        self, tracker: PendingTracker, offset: int, size: int, op: int,
        out: np.ndarray | None = None, *, now_us: int | None = None,
    ) -> np.ndarray:
        out = self._prepare(tracker, out, now_us)
        linnos_row(out, tracker.meta, tracker.hist, self.n_reads, self.queue_digits,
                   self.latency_digits)
        return out


# -- min-max scaled features (heimdall, lba_hist) ---------------------------------------------


class MinMaxFeaturiser(Featuriser):
    """A featuriser with ``fit_dim`` raw features min-max scaled by bounds fitted on
    training data (Heimdall's; the heimdall part of lba_hist)."""

    fit_dim: int

    def _init_bounds(self, min: Any, max: Any) -> None:
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        if (min is None) != (max is None):
            raise ValueError("min and max must be given together (both or neither)")
        if min is not None and max is not None:
            self._set_bounds(min, max)

    def _set_bounds(self, lo: Any, hi: Any) -> None:
        lo_a = np.array(lo, np.float64).reshape(-1)
        hi_a = np.array(hi, np.float64).reshape(-1)
        for nm, a in (("min", lo_a), ("max", hi_a)):
            if a.shape != (self.fit_dim,):
                raise ValueError(f"{nm} must hold {self.fit_dim} values, got {a.shape[0]}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{nm} must be finite")
        if np.any(hi_a < lo_a):
            raise ValueError("max must be >= min for every feature")
        self.lo, self.hi = lo_a, hi_a

    @property
    def fitted(self) -> bool:
        return self.lo is not None

    def _bound_params(self) -> dict[str, Any]:
        return {
            "min": None if self.lo is None else [float(v) for v in self.lo],
            "max": None if self.hi is None else [float(v) for v in self.hi],
        }

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.lo is None or self.hi is None:
            raise NotFittedError(
                f"{self.name} featuriser is not fitted: call fit(table) or fit_raw(X) on "
                "training data, or load a config that has min and max"
            )
        return self.lo, self.hi

    @abstractmethod
    def raw_trace(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """Unscaled scaled-part features, float64 (N, fit_dim), issue order: what
        ``fit`` sees."""

    def fit_raw(self, x: np.ndarray) -> MinMaxFeaturiser:
        """Store per-feature min/max of raw features ``x`` (N, fit_dim); returns self."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.fit_dim or x.shape[0] == 0:
            raise ValueError(
                f"fit_raw needs a non-empty (N, {self.fit_dim}) array, got {x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("fit_raw: raw features must be finite")
        self._set_bounds(x.min(axis=0), x.max(axis=0))
        return self

    def fit(self, table: pa.Table | pa.RecordBatch) -> MinMaxFeaturiser:
        """Fit the min-max bounds on a training trace; returns self."""
        return self.fit_raw(self.raw_trace(table))


# -- heimdall ----------------------------------------------------------------------------------


class HeimdallFeaturiser(MinMaxFeaturiser):
    """Size, queue length and the last IOs' queue/latency/throughput, min-max scaled."""

    name = "heimdall"
    kind = KIND_HEIMDALL

    def __init__(
        self,
        history: int = 3,
        min: list[float] | None = None,
        max: list[float] | None = None,
        timeout_us: int = DEFAULT_TIMEOUT_US,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        super().__init__(timeout_us, capacity)
        self.history = _int_param("history", history, 0, 64)
        self.dim = self.fit_dim = 2 + 3 * history
        self._iparams = np.array([history], np.int64)
        self._init_bounds(min, max)

    @property
    def feature_names(self) -> list[str]:
        names = ["size", "queue_len"]
        for i in range(1, self.history + 1):
            names += [f"queue_len_{i}", f"latency_us_{i}", f"throughput_{i}"]
        return names

    @property
    def history_needed(self) -> int:
        return self.history

    def _params(self) -> dict[str, Any]:
        return {"history": self.history, **self._bound_params()}

    def _kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = self._bounds()
        return self._iparams, lo, hi

    def raw_trace(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """Unscaled features, float64 (N, dim), issue order: what ``fit`` sees."""
        unused = np.zeros(self.dim, np.float64)
        args = (self._iparams, unused, unused)
        return self._replay(trace_columns(table), np.dtype(np.float64), False, args)

    def encode_live(
        self, tracker: PendingTracker, offset: int, size: int, op: int,
        out: np.ndarray | None = None, *, now_us: int | None = None,
    ) -> np.ndarray:
        lo, hi = self._bounds()
        out = self._prepare(tracker, out, now_us)
        heimdall_row(out, tracker.meta, tracker.hist, size, self.history, lo, hi, True)
        return out


# -- lba_hist ----------------------------------------------------------------------------------


class LBAHistFeaturiser(MinMaxFeaturiser):
    """The LBA bits (``lba``) followed by queue/latency history: the ``linnos`` digits
    and the min-max scaled ``heimdall`` features, each as its own featuriser encodes it."""

    name = "lba_hist"
    kind = KIND_LBA_HIST

    def __init__(
        self,
        pending: int = 10,
        lba_bytes: int = 4,
        lba_unit: int = 4096,
        n_reads: int = 4,
        queue_digits: int = 3,
        latency_digits: int = 4,
        history: int = 3,
        min: list[float] | None = None,
        max: list[float] | None = None,
        timeout_us: int = DEFAULT_TIMEOUT_US,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        super().__init__(timeout_us, capacity)
        # the parts validate their own parameters (same names, same ranges)
        self._lba = LBAFeaturiser(pending, lba_bytes, lba_unit, timeout_us, capacity)
        self._linnos = LinnOSFeaturiser(n_reads, queue_digits, latency_digits, timeout_us,
                                        capacity)
        self._heimdall = HeimdallFeaturiser(history, None, None, timeout_us, capacity)
        self.pending, self.lba_bytes, self.lba_unit = pending, lba_bytes, lba_unit
        self.n_reads, self.queue_digits, self.latency_digits = (n_reads, queue_digits,
                                                                latency_digits)
        self.history = history
        self.lba_dim = self._lba.dim
        self.linnos_dim = self._linnos.dim
        self.fit_dim = self._heimdall.dim
        self.dim = self.lba_dim + self.linnos_dim + self.fit_dim
        self._iparams = np.array([pending, lba_bytes, lba_unit, n_reads, queue_digits,
                                  latency_digits, history], np.int64)
        self._init_bounds(min, max)

    @property
    def parts(self) -> dict[str, tuple[int, int]]:
        """(start, stop) of each part of the vector: lba, linnos, heimdall."""
        a, b = self.lba_dim, self.lba_dim + self.linnos_dim
        return {"lba": (0, a), "linnos": (a, b), "heimdall": (b, self.dim)}

    @property
    def history_needed(self) -> int:
        return max(self.n_reads, self.history)

    def _params(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "lba_bytes": self.lba_bytes,
            "lba_unit": self.lba_unit,
            "n_reads": self.n_reads,
            "queue_digits": self.queue_digits,
            "latency_digits": self.latency_digits,
            "history": self.history,
            **self._bound_params(),
        }

    def _kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = self._bounds()
        return self._iparams, lo, hi

    def raw_trace(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """The heimdall part unscaled, float64 (N, fit_dim), issue order: what ``fit``
        sees (the other parts are not scaled)."""
        return self._heimdall.raw_trace(table)

    def encode_live(
        self, tracker: PendingTracker, offset: int, size: int, op: int,
        out: np.ndarray | None = None, *, now_us: int | None = None,
    ) -> np.ndarray:
        lo, hi = self._bounds()
        out = self._prepare(tracker, out, now_us)
        lba_hist_row(out, tracker.pend, tracker.meta, tracker.hist, offset, size,
                     self._iparams, lo, hi)
        return out


# -- registry ----------------------------------------------------------------------------------

FEATURISERS: dict[str, type[Featuriser]] = {
    "lba": LBAFeaturiser,
    "linnos": LinnOSFeaturiser,
    "heimdall": HeimdallFeaturiser,
    "lba_hist": LBAHistFeaturiser,
}


def make_featuriser(config: dict[str, Any]) -> Featuriser:
    """Rebuild a featuriser from its ``config()`` (e.g. from a model bundle)."""
    name = config.get("name")
    if name not in FEATURISERS:
        raise ValueError(f"unknown featuriser {name!r}; known: {', '.join(FEATURISERS)}")
    return FEATURISERS[name].from_config(config)
