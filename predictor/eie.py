"""EIE (Han et al., ISCA'16) as a functional model: 4-bit shared weights in
interleaved compressed sparse columns, 16-bit fixed-point arithmetic.

Storage. A layer's matrix W (out × in, the Keras kernel transposed) has its
rows interleaved over N processing elements (row i → PE i mod N). Each PE keeps
its rows in CSC form: per input column j the entries (v, z), v = 4-bit index
into the layer's 16-entry codebook (index 0 = 0.0, see ``predictor.quantize``),
z = 4-bit count of the PE's zero rows skipped since the previous entry of the
column. A gap of more than 15 zero rows gets padding entries (v=0, z=15): a gap
of g zeros costs g // 16 of them. ``EIELayer.work`` counts entries (padding
included) per PE per column — the cycles a PE spends on that column.

Dataflow. Only non-zero input activations are broadcast (leading non-zero
detection), in column order; every PE multiplies its entries of that column by
the activation and accumulates into its own rows. Because each row is updated
in ascending column order, the PE engine and the dense ``reference_fixed`` see
the same sequence of saturating additions, so they agree bit for bit.

Fixed-point arithmetic (both paths, exactly):

- every activation node n is an int16 in Q(f_n) (value · 2^f_n). f of the
  input, dense, add, subtract and sum_slices nodes comes from calibration: the
  largest f with headroom · max|value| · 2^f ≤ 32767 (f in 0..15) over the
  float network with the quantised weights run on sample inputs (default: 260
  random 0/1 vectors, headroom 4 — conservative; ``calibrate(samples)`` uses
  headroom 2). slice and relu keep their input's f; concat takes the smallest
  f of its inputs.
- weights: layer codebook in Q(f_w), f_w the largest (≤ 24) that fits the
  largest |entry|; the input and float codebook → int16 round to nearest
  (ties to even) and saturate.
- dense: the accumulator starts at the bias in Q(f_out) (rounded, saturated);
  each product a·w is exact (|int16·int16| < 2^31), rescaled by
  s = f_in + f_w − f_out with ROUND-HALF-UP ((p + 2^(s−1)) >> s, arithmetic
  shift; a negative s is a left shift), saturated to int16, and added to the
  16-bit accumulator WITH SATURATION after every addition.
- add/subtract: both operands rescaled to the output's f (round-half-up,
  saturating), then added in 64-bit and saturated to int16 once.
- relu: max(x, 0). slice, concat (equal f) and sum_slices (equal f) are exact:
  sum_slices adds in 64-bit, then rescales and saturates once.
- logits are dequantised as int16 · 2^−f_out (exact in float32).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from mittd.predictor.engine import Engine, WeightMap
from mittd.predictor.graph import Graph, GraphError, forward_all
from mittd.predictor.quantize import (
    INT16_MAX,
    INT16_MIN,
    assign_codes,
    eie_codebook,
    frac_bits,
    from_fixed,
    to_fixed,
)

Z_MAX = 15  # largest 4-bit relative row index
DEFAULT_HEADROOM = 4.0
SAMPLE_HEADROOM = 2.0
W_FRAC_MAX = 24


@dataclass
class EIELayer:
    """One layer in EIE's storage. ``ptr[p]`` (n_in + 1,) indexes ``v[p]``/``z[p]``
    (uint8) of PE p; ``codebook`` float32 (16,), entry 0 = 0.0."""

    n_out: int
    n_in: int
    n_pe: int
    codebook: np.ndarray
    ptr: list[np.ndarray]
    v: list[np.ndarray]
    z: list[np.ndarray]

    @property
    def work(self) -> np.ndarray:
        """Entries (padding included) per PE per column, int64 (n_pe, n_in)."""
        return np.array([np.diff(p) for p in self.ptr], np.int64).reshape(self.n_pe, self.n_in)

    @property
    def padding(self) -> int:
        return int(sum(int(np.count_nonzero(v == 0)) for v in self.v))

    @property
    def nnz(self) -> int:
        return int(sum(int(np.count_nonzero(v)) for v in self.v))

    @property
    def entries(self) -> int:
        return int(sum(len(v) for v in self.v))

    def decode_codes(self) -> np.ndarray:
        """The code matrix (out, in) uint8 the entries stand for (a walk of the CSC
        lists, independent of the encoder)."""
        codes = np.zeros((self.n_out, self.n_in), np.uint8)
        for p in range(self.n_pe):
            ptr, v, z = self.ptr[p], self.v[p], self.z[p]
            if len(v) == 0:
                continue
            col = np.repeat(np.arange(self.n_in), np.diff(ptr))
            steps = np.cumsum(z.astype(np.int64) + 1)
            base = np.concatenate(([0], steps))[ptr[:-1]]  # steps before each column
            local = steps - base[col] - 1
            real = v != 0
            rows = local[real] * self.n_pe + p
            if rows.size and rows.max() >= self.n_out:
                raise ValueError(f"PE {p}: an entry points past the last row")
            codes[rows, col[real]] = v[real]
        return codes

    def decode(self) -> np.ndarray:
        """Dense (out, in) float32 matrix of codebook values: the quantised weights."""
        return self.codebook[self.decode_codes()]

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ptr (n_pe, n_in + 1) int64 into the concatenated v, z) for the kernel."""
        offs = np.concatenate(([0], np.cumsum([len(v) for v in self.v])))
        ptr = np.stack([p + o for p, o in zip(self.ptr, offs[:-1], strict=True)])
        v = np.concatenate(self.v) if self.v else np.zeros(0, np.uint8)
        z = np.concatenate(self.z) if self.z else np.zeros(0, np.uint8)
        return ptr.astype(np.int64), v.astype(np.uint8), z.astype(np.uint8)


def _encode_pe(codes_local: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSC (ptr, v, z) of one PE's rows (n_local, n_in) of codes, with padding."""
    n_in = codes_local.shape[1]
    cols, rows = np.nonzero(codes_local.T)  # column-major: by column, then row
    new_col = np.ones(len(cols), bool)
    new_col[1:] = cols[1:] != cols[:-1]
    prev = np.where(new_col, -1, np.concatenate(([-1], rows[:-1])))
    gap = rows - prev - 1
    npad = gap // (Z_MAX + 1)
    per = npad + 1
    total = int(per.sum())
    v = np.zeros(total, np.uint8)
    z = np.full(total, Z_MAX, np.uint8)
    last = np.cumsum(per) - 1  # each real entry follows its padding
    v[last] = codes_local[rows, cols]
    z[last] = gap - (Z_MAX + 1) * npad
    counts = np.bincount(cols, weights=per, minlength=n_in).astype(np.int64)
    ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return ptr, v, z


def encode_layer(kernel_in_out: np.ndarray, n_pe: int,
                 codebook: np.ndarray | None = None) -> EIELayer:
    """EIE storage of a Keras kernel (in, out) over ``n_pe`` PEs. ``codebook``: a
    16-entry EIE codebook (entry 0 = 0.0); default ``eie_codebook`` of the kernel."""
    if n_pe < 1:
        raise ValueError(f"n_pe must be >= 1, not {n_pe}")
    kernel = np.asarray(kernel_in_out, np.float32)
    book = eie_codebook(kernel) if codebook is None else np.asarray(codebook, np.float32)
    codes = assign_codes(kernel.T, book)  # (out, in)
    n_out, n_in = codes.shape
    ptrs, vs, zs = [], [], []
    for p in range(n_pe):
        ptr, v, z = _encode_pe(codes[p::n_pe])
        ptrs.append(ptr)
        vs.append(v)
        zs.append(z)
    return EIELayer(n_out, n_in, n_pe, book, ptrs, vs, zs)


# -- integer arithmetic -------------------------------------------------------------

def _rescale(p: np.ndarray, s: int) -> np.ndarray:
    """Q(f + s) → Q(f), round-half-up, saturated to int16 (int64 in and out)."""
    p = np.asarray(p, np.int64)
    if s > 0:
        p = (p + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)
    elif s < 0:
        p = p << np.int64(min(-s, 31))
    return np.clip(p, INT16_MIN, INT16_MAX)


@numba.njit(cache=True, nogil=True)
def _rescale1(p: int, s: int) -> int:  # pragma: no cover - compiled
    if s > 0:
        p = (p + (np.int64(1) << (s - 1))) >> s
    elif s < 0:
        p = p << min(-s, 31)
    return min(max(p, -32768), 32767)


@numba.njit(cache=True, nogil=True)
def _pe_layer(a: np.ndarray, ptr: np.ndarray, v: np.ndarray, z: np.ndarray,
              wq: np.ndarray, shift: int, acc: np.ndarray) -> None:  # pragma: no cover
    """Broadcast non-zero activations in column order; each PE walks its entries."""
    n_pe = ptr.shape[0]
    n_in = ptr.shape[1] - 1
    for j in range(n_in):
        x = np.int64(a[j])
        if x == 0:
            continue
        for p in range(n_pe):
            r = -1
            for e in range(ptr[p, j], ptr[p, j + 1]):
                r += np.int64(z[e]) + 1
                code = v[e]
                if code == 0:  # padding: weight 0.0 adds nothing
                    continue
                t = _rescale1(x * wq[code], shift)
                row = r * n_pe + p
                acc[row] = min(max(acc[row] + t, -32768), 32767)


class EIEEngine(Engine):
    """EIE's functional model behind the Engine interface (``run1`` returns the
    dequantised logits); ``run_fixed`` is the integer result."""

    name = "eie"

    def __init__(self, graph: Graph, params: WeightMap, pes: int = 64,
                 codebooks: Mapping[str, Any] | None = None,
                 calibration: np.ndarray | Mapping[str, int] | None = None) -> None:
        super().__init__(graph, params)
        self.pes = int(pes)
        books = dict(codebooks or {})
        self.layers: dict[str, EIELayer] = {}
        self.qparams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._codes: dict[str, np.ndarray] = {}  # dense (out, in) codes, for the reference
        for d in graph.dense_nodes():
            kernel, bias = (np.asarray(a, np.float32) for a in params[d.name])
            book = books.get(d.name)
            if isinstance(book, tuple):  # kmeans4's (centroids, codes): its values
                book = None                # are the kernel's; ≤ 15 kept, 16 re-clustered
            layer = encode_layer(kernel, self.pes, book)
            self.layers[d.name] = layer
            self._codes[d.name] = assign_codes(kernel.T, layer.codebook)
            self.qparams[d.name] = (np.ascontiguousarray(layer.decode().T), bias)
        self._flat = {n: lay.flat() for n, lay in self.layers.items()}
        self.wfrac = {n: frac_bits(np.abs(lay.codebook).max(), 1.0, 0, W_FRAC_MAX)
                      for n, lay in self.layers.items()}
        self.wq = {n: to_fixed(lay.codebook, self.wfrac[n]).astype(np.int64)
                   for n, lay in self.layers.items()}
        self._input = np.zeros(graph.input_dim, np.float32)
        self._out = np.zeros(graph.output_dim, np.float32)
        if isinstance(calibration, Mapping):
            self._set_formats(dict(calibration))
        elif calibration is None:
            self.calibrate(_default_samples(graph.input_dim), DEFAULT_HEADROOM)
        else:
            self.calibrate(calibration)

    # -- formats ------------------------------------------------------------------------
    def calibrate(self, samples: np.ndarray, headroom: float = SAMPLE_HEADROOM
                  ) -> dict[str, int]:
        """Fractional bits of every node from the float network with the quantised
        weights run on ``samples`` (n, input_dim)."""
        acts = forward_all(self.graph, self.qparams, np.asarray(samples, np.float64))
        fmt = {n.name: frac_bits(np.abs(acts[n.name]).max(initial=0.0), headroom)
               for n in self.graph.nodes}
        self._set_formats(fmt)
        return dict(self.formats)

    def _set_formats(self, fmt: dict[str, int]) -> None:
        """Own formats for computing nodes; slice/relu inherit, concat takes the min."""
        out: dict[str, int] = {}
        for n in self.graph.nodes:
            if n.op in ("slice", "relu"):
                out[n.name] = out[n.inputs[0]]
            elif n.op == "concat":
                out[n.name] = min(out[i] for i in n.inputs)
            else:
                if n.name not in fmt:
                    raise GraphError(f"{self.graph.name}/{n.name}: no fixed-point format")
                out[n.name] = int(fmt[n.name])
        self.formats = out
        for n in self.graph.dense_nodes():
            f_in, f_out = out[n.inputs[0]], out[n.name]
            if f_in + self.wfrac[n.name] - f_out > 62:
                raise GraphError(f"{self.graph.name}/{n.name}: rescale shift too large")
        self.bq = {n.name: to_fixed(self.qparams[n.name][1], out[n.name]).astype(np.int64)
                   for n in self.graph.dense_nodes()}

    # -- integer forward passes ------------------------------------------------------------
    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return to_fixed(x, self.formats["input"])

    def _as_fixed(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != (self.graph.input_dim,):
            raise GraphError(f"{self.graph.name}: input must be ({self.graph.input_dim},)")
        return x if x.dtype == np.int16 else self.quantize_input(x)

    def _run(self, x: np.ndarray, dense_pe: bool) -> np.ndarray:
        f = self.formats
        val: dict[str, np.ndarray] = {}
        for n in self.graph.nodes:
            a = [val[i] for i in n.inputs]
            if n.op == "input":
                val[n.name] = self._as_fixed(x).astype(np.int16)
            elif n.op == "slice":
                s, w = n.attrs["start"], n.attrs["width"]
                val[n.name] = a[0][s:s + w].copy()
            elif n.op == "sum_slices":
                s, w, c = n.attrs["start"], n.attrs["width"], n.attrs["count"]
                tot = a[0][s:s + w * c].astype(np.int64).reshape(c, w).sum(axis=0)
                val[n.name] = _rescale(tot, f[n.inputs[0]] - f[n.name]).astype(np.int16)
            elif n.op == "dense":
                shift = f[n.inputs[0]] + self.wfrac[n.name] - f[n.name]
                acc = self.bq[n.name].copy()
                if dense_pe:
                    ptr, v, z = self._flat[n.name]
                    _pe_layer(a[0], ptr, v, z, self.wq[n.name], shift, acc)
                else:
                    acc = _dense_reference(a[0], self._wint(n.name), shift, acc)
                val[n.name] = acc.astype(np.int16)
            elif n.op in ("add", "subtract"):
                x0 = _rescale(a[0], f[n.inputs[0]] - f[n.name])
                x1 = _rescale(a[1], f[n.inputs[1]] - f[n.name])
                r = x0 + x1 if n.op == "add" else x0 - x1
                val[n.name] = np.clip(r, INT16_MIN, INT16_MAX).astype(np.int16)
            elif n.op == "relu":
                val[n.name] = np.maximum(a[0], 0).astype(np.int16)
            elif n.op == "concat":
                val[n.name] = np.concatenate(
                    [_rescale(p, f[i] - f[n.name]) for p, i in zip(a, n.inputs, strict=True)]
                ).astype(np.int16)
        return val[self.graph.output]

    def _wint(self, name: str) -> np.ndarray:
        """Dense (out, in) int64 matrix of fixed-point codebook values (no CSC)."""
        return self.wq[name][self._codes[name]]

    def run_fixed(self, x_int16: np.ndarray) -> np.ndarray:
        """int16 logits (Q(f_output)) of one int16 input in Q(f_input), through the
        interleaved CSC PEs (a float input is quantised first)."""
        return self._run(x_int16, dense_pe=True)

    def reference_fixed(self, x: np.ndarray) -> np.ndarray:
        """The same integer arithmetic with dense matrices and plain numpy."""
        return self._run(x, dense_pe=False)

    # -- Engine interface ---------------------------------------------------------------
    @property
    def input(self) -> np.ndarray:
        return self._input

    def run1(self) -> np.ndarray:
        self._out[:] = from_fixed(self.run_fixed(self._input), self.formats[self.graph.output])
        return self._out

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.graph.input_dim:
            raise GraphError(f"{self.graph.name}: batch must be (n, {self.graph.input_dim})")
        f_out = self.formats[self.graph.output]
        out = np.empty((len(x), self.graph.output_dim), np.float32)
        for i, row in enumerate(x):
            out[i] = from_fixed(self.run_fixed(row), f_out)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "pes": self.pes,
            "input_frac_bits": self.formats["input"],
            "layers": {
                name: {"shape": f"{lay.n_in}x{lay.n_out}", "nnz": lay.nnz,
                       "padding": lay.padding, "entries": lay.entries,
                       "max_pe_entries": int(lay.work.sum(axis=1).max(initial=0)),
                       "weight_frac_bits": self.wfrac[name],
                       "out_frac_bits": self.formats[name]}
                for name, lay in self.layers.items()
            },
        }


def _dense_reference(a: np.ndarray, wint: np.ndarray, shift: int,
                     acc: np.ndarray) -> np.ndarray:
    """Column by column over the non-zero activations, saturating after each add."""
    acc = acc.copy()
    for j in np.flatnonzero(a):
        t = _rescale(np.int64(a[j]) * wint[:, j], shift)
        acc = np.clip(acc + t, INT16_MIN, INT16_MAX)
    return acc


def _default_samples(input_dim: int, seed: int = 0) -> np.ndarray:
    """Random 0/1 inputs at densities 0.1–0.9 plus all-zeros and all-ones: the LBA
    bits' kind (other featurisers should pass real samples to ``calibrate``)."""
    rng = np.random.default_rng(seed)
    dens = np.repeat([0.1, 0.3, 0.5, 0.7, 0.9], 52)[:, None]
    x = (rng.random((len(dens), input_dim)) < dens).astype(np.float64)
    return np.vstack([x, np.zeros((1, input_dim)), np.ones((1, input_dim))])


def make_eie(graph: Graph, params: WeightMap, pes: int = 64,
             codebooks: Mapping[str, Any] | None = None,
             calibration: np.ndarray | Mapping[str, int] | None = None,
             **_: Any) -> EIEEngine:
    """``make_engine("eie", ...)``: other engines' options are ignored."""
    return EIEEngine(graph, params, pes, codebooks, calibration)

