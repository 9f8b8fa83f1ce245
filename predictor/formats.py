"""Weight storage formats of one dense layer, as the compiled kernels read them.

Kernels are stored transposed from Keras' (in, out) to output-major (out, in),
since the kernels compute one output at a time.

- ``dense``: the full (out, in) matrix, row-major.
- ``csr``: compressed sparse rows — row pointers, column indices, values.
- ``block``: Scalpel's SIMD-aware format (seed 003 §3.3, Fig. 8c): the non-zeros of a
  row are kept in aligned groups of G contiguous weights (G = SIMD width: 8
  float32 on AVX2), with one column index per group; a group is kept when any of
  its weights is non-zero, and its zeros are stored, so a group is one SIMD load.
- ``csc``: compressed sparse columns, for EIE-style computation that skips zero
  input activations (a whole column of work per zero input).
- ``sell``: sliced ELLPACK (SELL-8): the rows, sorted by their count of non-zeros
  (an exact relabelling: each row keeps its original index, ``perm``), in chunks
  of 8 consecutive rows padded to the chunk's longest row (a few % padding once
  sorted), stored slice-major — slice k of a chunk is the k-th non-zero of its 8
  rows, 8 values then 8 column ids — so one slice is one SIMD load of values, one
  gather of the inputs and one multiply-add into 8 row sums. Padding repeats the
  row's last column with a zero weight (a finite input times 0 adds nothing).
  Column ids are 16-bit (two to an int32 slot; exact for layers of up to
  :data:`SELL_MAX_INPUTS` inputs, wider ones cannot be stored so): a quarter less
  to read per weight than 32-bit ids.

- ``dcol``: dense columns for skipping zero inputs: the (in, out) matrix input-major,
  each input's column padded with zeros to a multiple of :data:`DCOL_LANES` outputs,
  so one non-zero input adds its whole column to the outputs in a few vector
  multiply-adds (4 AVX2 registers of sums), and a zero input costs nothing. What
  node pruning leaves (small dense layers reading ReLU'd, half-zero activations,
  and the LBA bits, 93.5 % zero) runs faster so than row by row.

Every encoder returns (float values, int32 indices) ready to be appended to the
plan's arenas, plus the count of stored weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KIND_DENSE, KIND_CSR, KIND_BLOCK, KIND_CSC, KIND_SELL, KIND_DCOL = 0, 1, 2, 3, 4, 5
KIND_NAMES = {KIND_DENSE: "dense", KIND_CSR: "csr", KIND_BLOCK: "block", KIND_CSC: "csc",
              KIND_SELL: "sell", KIND_DCOL: "dcol"}
SELL_LANES = 8  # rows per SELL chunk: one AVX2 register of float32
SELL_MAX_INPUTS = 1 << 16  # SELL column ids are uint16
DCOL_LANES = 32  # outputs per dcol pass: four AVX2 registers of float32 sums


def dcol_width(n_out: int) -> int:
    """A dcol layer's padded output width: its columns' length, its bias's and the
    room its kernel stores into (whole passes of :data:`DCOL_LANES`)."""
    return -(-n_out // DCOL_LANES) * DCOL_LANES
KIND_BY_NAME = {v: k for k, v in KIND_NAMES.items()}


@dataclass(frozen=True)
class Encoded:
    kind: int
    values: np.ndarray  # float32
    indices: np.ndarray  # int32
    stored: int  # weights stored (incl. zeros inside blocks)


def encode(kind: int, w_out_in: np.ndarray, group: int = 8) -> Encoded:
    """Encode an (out, in) float32 matrix in the given storage kind."""
    w = np.ascontiguousarray(w_out_in, dtype=np.float32)
    n_out, n_in = w.shape
    if kind == KIND_DENSE:
        return Encoded(kind, w.ravel(), np.zeros(0, np.int32), w.size)
    if kind == KIND_CSR:
        nz = w != 0
        indptr = np.zeros(n_out + 1, np.int64)
        indptr[1:] = np.cumsum(nz.sum(axis=1))
        cols = np.nonzero(nz)[1]
        return Encoded(kind, w[nz], np.concatenate([indptr, cols]).astype(np.int32),
                       int(nz.sum()))
    if kind == KIND_CSC:
        wt = np.ascontiguousarray(w.T)
        nz = wt != 0
        colptr = np.zeros(n_in + 1, np.int64)
        colptr[1:] = np.cumsum(nz.sum(axis=1))
        rows = np.nonzero(nz)[1]
        return Encoded(kind, wt[nz], np.concatenate([colptr, rows]).astype(np.int32),
                       int(nz.sum()))
    if kind == KIND_BLOCK:
        n_groups = -(-n_in // group)
        padded = np.zeros((n_out, n_groups * group), np.float32)
        padded[:, :n_in] = w
        blocks = padded.reshape(n_out, n_groups, group)
        keep = (blocks != 0).any(axis=2)
        rowptr = np.zeros(n_out + 1, np.int64)
        rowptr[1:] = np.cumsum(keep.sum(axis=1))
        starts = np.nonzero(keep)[1] * group
        values = blocks[keep].ravel()
        return Encoded(kind, values, np.concatenate([rowptr, starts]).astype(np.int32),
                       int(values.size))
    if kind == KIND_SELL:
        return _encode_sell(w)
    if kind == KIND_DCOL:
        cols = np.zeros((n_in, dcol_width(n_out)), np.float32)
        cols[:, :n_out] = w.T
        return Encoded(kind, cols.ravel(), np.zeros(0, np.int32), w.size)
    raise ValueError(f"unknown storage kind {kind}")


def _encode_sell(w: np.ndarray) -> Encoded:
    """Indices: chunk pointers (in slices, n_chunks + 1), then ``perm`` (the original
    row of each lane, -1 for lanes past the last row), then the column ids as uint16,
    two per int32 (a slice's 8 ids are 4 int32s)."""
    n_out, n_in = w.shape
    if n_in > SELL_MAX_INPUTS:
        raise ValueError(f"sell: a layer of {n_in:,} inputs does not fit 16-bit column ids "
                         f"(at most {SELL_MAX_INPUTS:,})")
    c = SELL_LANES
    n_chunks = -(-n_out // c)
    nnz = (w != 0).sum(axis=1)
    order = np.argsort(-nnz, kind="stable")
    perm = np.full(n_chunks * c, -1, np.int64)
    perm[:n_out] = order
    lengths = np.zeros(n_chunks, np.int64)
    for k in range(n_chunks):
        rows = order[k * c:(k + 1) * c]
        lengths[k] = nnz[rows].max(initial=0)
    ptr = np.zeros(n_chunks + 1, np.int64)
    ptr[1:] = np.cumsum(lengths)
    values = np.zeros((int(ptr[-1]), c), np.float32)
    cols = np.zeros((int(ptr[-1]), c), np.int64)
    for k in range(n_chunks):
        lo, hi = ptr[k], ptr[k + 1]
        for lane, r in enumerate(order[k * c:(k + 1) * c]):
            nz = np.flatnonzero(w[r])
            values[lo:lo + nz.size, lane] = w[r, nz]
            cols[lo:lo + nz.size, lane] = nz
            cols[lo + nz.size:hi, lane] = nz[-1] if nz.size else 0
    packed = np.ascontiguousarray(cols.ravel().astype(np.uint16)).view(np.int32)
    return Encoded(KIND_SELL, values.ravel(),
                   np.concatenate([ptr.astype(np.int32), perm.astype(np.int32), packed]),
                   int(values.size))


def decode(enc: Encoded, n_out: int, n_in: int, group: int = 8) -> np.ndarray:
    """Back to the (out, in) matrix; used by tests to prove encodings are lossless."""
    w = np.zeros((n_out, n_in), np.float32)
    if enc.kind == KIND_DENSE:
        return enc.values.reshape(n_out, n_in).copy()
    if enc.kind == KIND_CSR:
        ptr, cols = enc.indices[: n_out + 1], enc.indices[n_out + 1:]
        for j in range(n_out):
            w[j, cols[ptr[j]:ptr[j + 1]]] = enc.values[ptr[j]:ptr[j + 1]]
        return w
    if enc.kind == KIND_CSC:
        ptr, rows = enc.indices[: n_in + 1], enc.indices[n_in + 1:]
        for i in range(n_in):
            w[rows[ptr[i]:ptr[i + 1]], i] = enc.values[ptr[i]:ptr[i + 1]]
        return w
    if enc.kind == KIND_DCOL:
        return enc.values.reshape(n_in, dcol_width(n_out))[:, :n_out].T.copy()
    if enc.kind == KIND_SELL:
        c = SELL_LANES
        n_chunks = -(-n_out // c)
        ptr = enc.indices[:n_chunks + 1]
        perm = enc.indices[n_chunks + 1:n_chunks + 1 + n_chunks * c]
        cols = np.ascontiguousarray(enc.indices[n_chunks + 1 + n_chunks * c:]).view(
            np.uint16).reshape(-1, c)
        vals = enc.values.reshape(-1, c)
        for k in range(n_chunks):
            for lane in range(c):
                r = perm[k * c + lane]
                if r >= 0:
                    for q in range(ptr[k], ptr[k + 1]):
                        w[r, cols[q, lane]] += vals[q, lane]
        return w
    ptr, starts = enc.indices[: n_out + 1], enc.indices[n_out + 1:]
    wide = np.zeros((n_out, n_in + group), np.float32)
    for j in range(n_out):
        for g in range(ptr[j], ptr[j + 1]):
            wide[j, starts[g]:starts[g] + group] = enc.values[g * group:(g + 1) * group]
    return wide[:, :n_in]
