"""Weight sharing (k-means codebooks) and fixed-point formats: the one place both
training (``training.compress.kmeans4``) and the EIE engine (``predictor.eie``)
get them from, so the two cannot drift apart.

Codebooks. ``kmeans_codebook`` is Deep Compression's 1-D k-means (Han et al.):
Lloyd iterations from a *linear* initialisation between the smallest and the
largest weight, deterministic. ``kmeans4`` uses 16 centroids over a layer's
non-zero weights. EIE's codebook has 16 entries too, but index 0 is reserved
for 0.0 (the padding entries), so ``eie_codebook`` is ``[0.0] + 15`` centroids:
a layer with at most 15 distinct non-zero values (e.g. a ``kmeans4`` layer that
used only 15 codes, or fewer weights than codes) keeps them exactly; a layer
with 16 distinct non-zero values (a full ``kmeans4`` codebook) or a float layer
is re-clustered to 15, which moves some weights — that is EIE's format, not a
bug, and the EIE engine is therefore compared with the float model within a
tolerance, not bit for bit.

Fixed point. A value x in format Q(f) is the int16 ``round(x * 2**f)``;
float → fixed rounds to nearest (``np.rint``, ties to even) and saturates to
[-32768, 32767]. ``frac_bits`` picks the largest f that fits a range.
"""

from __future__ import annotations

import numpy as np

INT16_MIN, INT16_MAX = -32768, 32767
EIE_CODES = 16  # 4-bit weight index; index 0 is the value 0.0

__all__ = ["EIE_CODES", "assign_codes", "eie_codebook", "frac_bits", "from_fixed",
           "kmeans_codebook", "to_fixed"]


def kmeans_codebook(w_nonzero: np.ndarray, k: int = 16, iters: int = 100
                    ) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means from a linear initialisation; returns (centroids float64 sorted
    (k,), codes int64 per weight).

    In one dimension each cluster is an interval, so assignment is a search
    among the midpoints of the sorted centroids. Pruned layers have no weights
    near zero, so the linear grid starts with empty clusters there; as in
    scikit-learn's k-means (which Deep Compression used), an empty cluster is
    moved to the weight farthest from its centroid rather than wasting a code."""
    w = np.asarray(w_nonzero, np.float64).ravel()
    if w.size == 0:
        return np.zeros(k), np.zeros(0, np.int64)
    lo, hi = float(w.min()), float(w.max())
    c = np.linspace(lo, hi, k) if hi > lo else np.full(k, lo)
    codes = np.zeros(len(w), np.int64)
    for _ in range(iters):
        c.sort()
        codes = np.searchsorted((c[1:] + c[:-1]) / 2, w)
        sums = np.bincount(codes, weights=w, minlength=k)
        counts = np.bincount(codes, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        empty = np.flatnonzero(counts == 0)
        if empty.size and np.unique(w).size > k - empty.size:
            far = np.argsort(-np.abs(w - c[codes]), kind="stable")
            taken: list[float] = []
            for i in far:
                if len(taken) == empty.size:
                    break
                if w[i] not in taken and not np.any(new == w[i]):
                    taken.append(float(w[i]))
            new[empty[:len(taken)]] = taken
        if np.allclose(np.sort(new), c, rtol=0.0, atol=1e-12):
            c = new
            break
        c = new
    c.sort()
    codes = np.searchsorted((c[1:] + c[:-1]) / 2, w)
    return c, codes


def eie_codebook(kernel: np.ndarray, iters: int = 100) -> np.ndarray:
    """EIE's 16-entry codebook of a layer: 0.0 at index 0, then 15 non-zero values
    ascending (the exact distinct values when there are at most 15, else 15
    k-means centroids). Unused entries repeat the last value (never indexed).
    No non-zero entry is exactly 0.0, so a weight keeps its place in the sparse
    layout."""
    w = np.asarray(kernel, np.float32)
    nz = w[w != 0]
    vals = np.unique(nz)
    k = EIE_CODES - 1
    if vals.size > k:
        c, _ = kmeans_codebook(nz.astype(np.float64), k, iters)
        vals = np.unique(c.astype(np.float32))
    tiny = np.float32(np.finfo(np.float32).tiny)
    vals = np.where(vals == 0, tiny, vals).astype(np.float32)
    book = np.zeros(EIE_CODES, np.float32)
    if vals.size:
        book[1:1 + vals.size] = vals
        book[1 + vals.size:] = vals[-1]
    return book


def assign_codes(kernel: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Code of every weight (same shape, uint8): 0 for zeros, else the nearest of
    codebook entries 1..15 (an exact match when the value is in the codebook)."""
    kernel = np.asarray(kernel, np.float64)
    book = np.asarray(codebook, np.float64)
    if book.shape != (EIE_CODES,) or book[0] != 0.0:
        raise ValueError("an EIE codebook has 16 entries and entry 0 is 0.0")
    real = book[1:]
    order = np.argsort(real, kind="stable")
    s = real[order]
    idx = np.clip(np.searchsorted(s, kernel), 1, len(s) - 1)
    left = np.abs(kernel - s[idx - 1]) <= np.abs(kernel - s[idx])
    pos = np.where(left, idx - 1, idx)
    codes = (order[pos] + 1).astype(np.uint8)
    codes[kernel == 0] = 0
    return codes


def frac_bits(max_abs: float, headroom: float = 1.0, lo: int = 0, hi: int = 15) -> int:
    """Largest fractional bit count f in [lo, hi] with max_abs·headroom·2^f ≤ 32767
    (hi when the range is 0; lo when even that overflows, which then saturates)."""
    m = float(max_abs) * float(headroom)
    if not np.isfinite(m) or m <= 0:
        return hi
    f = int(np.floor(np.log2(INT16_MAX / m)))
    while f > lo and round(m * 2.0 ** f) > INT16_MAX:
        f -= 1
    return max(lo, min(hi, f))


def to_fixed(x: np.ndarray, f: int) -> np.ndarray:
    """float → int16 in Q(f): round to nearest (ties to even), saturating."""
    q = np.rint(np.asarray(x, np.float64) * 2.0 ** f)
    return np.clip(q, INT16_MIN, INT16_MAX).astype(np.int16)


def from_fixed(q: np.ndarray, f: int) -> np.ndarray:
    """int16 Q(f) → float32 (exact: every int16 · 2^-f is a float32)."""
    return (np.asarray(q, np.float64) * 2.0 ** -f).astype(np.float32)
