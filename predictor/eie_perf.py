"""EIE latency, area and power for mittd's models: seed 000 (Weng & Chien) §3, redone.

Two estimates of µs per inference on an N-PE EIE (Han et al., ISCA '16):

- **analytic** — the paper's method: every dense layer does one multiply-add per
  cycle per PE at 800 MHz (1.6 GOPS per PE) on its own share of the non-zero
  weights, so the layer takes as long as its busiest PE (load imbalance);
  activations are assumed dense (worst case); layers are summed. No fixed
  per-layer overhead by default (``layer_overhead_cycles``): the paper states
  none, and EIE overlaps the next layer's broadcast with the tail of the last.
- **simulated** — cycle-exact: the non-zero input activations of real inputs
  (featurised from a trace, propagated with the reference forward pass) are
  broadcast one per cycle, in column order, into every PE's 8-deep activation
  FIFO; a broadcast stalls while any FIFO is full (broadcast happens before the
  PEs pop in a cycle, so a FIFO is bypassed when empty); a PE pops one
  activation and spends ``work[pe, col]`` cycles on it (padding entries
  included), at least 1 cycle even for an empty column (the pop itself); a layer
  ends when every PE is idle with an empty FIFO; layers run one after another,
  in graph order (good_custom's independent branches are not overlapped).
  Elementwise joins: ``add``/``subtract`` take ceil(width / N) cycles (each PE
  combines its own interleaved slice, one element a cycle), ``sum_slices``
  (count − 1) · ceil(width / N); ``relu`` is free (EIE's PE applies ReLU as it
  writes back its destination registers); ``slice``/``concat`` are addressing.
  Biases are loaded into the accumulators and cost nothing.

Storage (for counting work): W = kernelᵀ (out × in); row i lives on PE i mod N
at local row i // N; each PE holds a CSC of its slice whose entries carry a
4-bit count of zeros before them (0..15), so a run of z zeros before an entry
(counted in local rows, from local row 0 for a column's first entry) needs
z // 16 padding entries, each costing a cycle like a real one.

Table 5 is linear in N (1.6 GOPS, 0.638 mm², 9.2 mW per PE, as seed 000 does),
scaled from EIE's 45 nm to other processes by :func:`process_scale`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from mittd.predictor.graph import Graph, forward_all

CLOCK_HZ = 800e6          # EIE clock (Han et al. '16)
PE_GOPS = 1.6             # one multiply-add (2 ops) a cycle per PE
PE_AREA_MM2 = 0.638       # per PE at 45 nm (seed 000 Table 5 / EIE)
PE_POWER_W = 0.0092       # 9.2 mW per PE at 45 nm
EIE_NM = 45.0
FIFO_DEPTH = 8            # EIE's activation queue depth
ZERO_RUN = 16             # a 4-bit relative index counts up to 15 zeros
PE_COUNTS = (1, 2, 4, 8, 16, 32, 64)

# -- seed 000's published figures (Weng & Chien, Tables 3, 4 and 5) ------------------
# µs per inference; None where the paper gives no figure. Key: sparsity in percent.
PAPER_PES = (1, 2, 4, 8, 16, 32, 64)
PAPER_LATENCY_US: dict[str, dict[int, tuple[float | None, ...]]] = {
    # Table 3: precise_linear (no 64-PE column)
    "precise_linear": {
        90: (81.1, 40.5, 20.3, 10.1, 5.07, 2.53, None),
        95: (40.7, 20.3, 10.2, 5.08, 2.54, 2.31, None),
        97: (24.7, 12.4, 6.18, 3.09, 2.81, 2.55, None),
        98: (17.3, 8.63, 4.32, 2.45, 2.23, 2.01, None),
    },
    # Table 4: good_custom (the pruned models have no 32/64-PE figures)
    "good_custom": {
        0: (251, 126, 62.8, 31.4, 15.7, 7.85, 3.93),
        90: (25.5, 12.7, 6.37, 3.19, 1.99, None, None),
        95: (13.3, 6.65, 3.32, 2.08, 1.89, None, None),
    },
}
PAPER_CPU_US: dict[str, dict[int, float]] = {  # i7-8700 column of Tables 3 and 4
    "precise_linear": {90: 14.1, 95: 13.0, 97: 12.4, 98: 13.4},
    "good_custom": {0: 7.49, 90: 7.08, 95: 7.36},
}
# Table 5: peak GOPS, area mm², power W per PE count; and the CPU column
PAPER_TABLE5: dict[int, tuple[float, float, float]] = {
    1: (1.6, 0.638, 0.0092), 2: (3.2, 1.28, 0.018), 4: (6.4, 2.56, 0.037),
    8: (12.8, 5.10, 0.073), 16: (25.6, 10.2, 0.15), 32: (51.2, 20.4, 0.29),
    64: (102.4, 40.8, 0.59),
}
PAPER_CPU_TABLE5 = (82.8, 1406.25, 65.0)  # i7-8700: GOPS, mm², W


# -- storage and work -------------------------------------------------------------

def pe_column_work(kernel_in_out: np.ndarray, n_pe: int) -> np.ndarray:
    """Entries (non-zeros plus 4-bit-index padding) each PE holds per column:
    (n_pe, n_in) int64 — the cycles a PE spends on that column's activation."""
    if n_pe < 1:
        raise ValueError(f"the number of PEs must be >= 1, not {n_pe}")
    w = np.asarray(kernel_in_out).T  # (out, in)
    n_out, n_in = w.shape
    work = np.zeros((n_pe, n_in), np.int64)
    for p in range(min(n_pe, n_out)):
        cols, local = np.nonzero(w[p::n_pe].T)  # sorted by column, then local row
        if not len(cols):
            continue
        prev = np.empty_like(local)
        prev[0] = -1
        prev[1:] = local[:-1]
        first = np.ones(len(cols), bool)
        first[1:] = cols[1:] != cols[:-1]
        prev[first] = -1
        zeros = local - prev - 1
        work[p] = np.bincount(cols, weights=1 + zeros // ZERO_RUN, minlength=n_in)
    return work


def pe_nonzeros(kernel_in_out: np.ndarray, n_pe: int) -> np.ndarray:
    """Non-zero weights on each PE (rows interleaved), no padding: the paper's count."""
    w = np.asarray(kernel_in_out).T != 0
    per_row = w.sum(axis=1)
    out = np.zeros(n_pe, np.int64)
    np.add.at(out, np.arange(len(per_row)) % n_pe, per_row)
    return out


def check_pes(pes: Sequence[int]) -> list[int]:
    """PE counts as positive ints, or a ValueError naming the bad one."""
    out = []
    for n in pes:
        if int(n) != n or n < 1:
            raise ValueError(f"PE counts must be positive integers, not {n!r}")
        out.append(int(n))
    if not out:
        raise ValueError("no PE counts given")
    return out


# -- analytic model (the paper's method) ------------------------------------------------

def analytic_layer_us(kernel_in_out: np.ndarray, n_pe: int, padding: bool = False,
                      layer_overhead_cycles: int = 0) -> float:
    """µs for one dense layer: 2 × the busiest PE's non-zeros at 1.6 GOPS, dense
    activations. ``padding`` also counts the 4-bit-index padding entries."""
    if padding:
        busiest = int(pe_column_work(kernel_in_out, n_pe).sum(axis=1).max())
    else:
        busiest = int(pe_nonzeros(kernel_in_out, n_pe).max())
    return 2 * busiest / (PE_GOPS * 1e3) + layer_overhead_cycles / CLOCK_HZ * 1e6


def analytic_us(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
                pes: Sequence[int], padding: bool = False,
                layer_overhead_cycles: int = 0) -> dict[int, float]:
    """µs per inference at each PE count: the dense layers' times summed."""
    return {n: sum(analytic_layer_us(params[d.name][0], n, padding, layer_overhead_cycles)
                   for d in graph.dense_nodes())
            for n in check_pes(pes)}


# -- cycle simulation --------------------------------------------------------------

@njit(cache=True)
def _layer_cycles(work: np.ndarray, active: np.ndarray, depth: int) -> np.ndarray:
    """Cycles of one layer for each sample (rows of ``active``).

    Event form of the cycle rules in the module docstring, exact to the cycle:
    activation k is broadcast at b_k = max(b_{k-1} + 1, max_p s_{p,k-depth} + 1)
    (a FIFO holding ``depth`` un-popped entries blocks it), PE p starts it at
    s_{p,k} = max(b_k, f_{p,k-1}) and finishes at f_{p,k} = s_{p,k} + max(w, 1)."""
    n_pe, n_in = work.shape
    n_s = active.shape[0]
    out = np.zeros(n_s, np.int64)
    cols = np.empty(n_in, np.int64)
    starts = np.zeros((n_pe, n_in), np.int64)
    free = np.zeros(n_pe, np.int64)
    for s in range(n_s):
        k = 0
        for c in range(n_in):
            if active[s, c]:
                cols[k] = c
                k += 1
        if k == 0:
            continue
        for p in range(n_pe):
            free[p] = 0
        b = -1
        for j in range(k):
            t = b + 1
            if j >= depth:
                for p in range(n_pe):
                    if starts[p, j - depth] + 1 > t:
                        t = starts[p, j - depth] + 1
            b = t
            c = cols[j]
            for p in range(n_pe):
                st = b if b > free[p] else free[p]
                starts[p, j] = st
                w = work[p, c]
                free[p] = st + (w if w > 1 else 1)
        end = 0
        for p in range(n_pe):
            if free[p] > end:
                end = free[p]
        out[s] = end
    return out


def layer_cycles(work: np.ndarray, active: np.ndarray, depth: int = FIFO_DEPTH
                 ) -> np.ndarray:
    """Cycles of one dense layer per sample; ``active`` (samples, n_in) marks the
    non-zero input activations, ``work`` is :func:`pe_column_work`."""
    active = np.atleast_2d(np.asarray(active, bool))
    return _layer_cycles(np.ascontiguousarray(work, np.int64),
                         np.ascontiguousarray(active), int(depth))


def elementwise_cycles(graph: Graph, n_pe: int) -> int:
    """Cycles of the non-dense ops per inference (cost model in the module docstring)."""
    w = graph.shapes()
    total = 0
    for n in graph.nodes:
        if n.op in ("add", "subtract"):
            total += math.ceil(w[n.name] / n_pe)
        elif n.op == "sum_slices":
            total += (n.attrs["count"] - 1) * math.ceil(w[n.name] / n_pe)
    return total


@dataclass(frozen=True)
class SimResult:
    mean_us: float
    p99_us: float
    activation_density: float  # mean fraction of non-zero dense-layer inputs

    def to_dict(self) -> dict[str, float]:
        return {"mean_us": self.mean_us, "p99_us": self.p99_us,
                "activation_density": self.activation_density}


def simulate_us(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
                x: np.ndarray, pes: Sequence[int], depth: int = FIFO_DEPTH
                ) -> dict[int, SimResult]:
    """Mean and p99 µs per inference over the inputs ``x`` at each PE count."""
    pes = check_pes(pes)
    acts = forward_all(graph, params, x)
    dense = graph.dense_nodes()
    masks = {d.name: acts[d.inputs[0]] != 0 for d in dense}
    density = float(np.mean([m.mean() for m in masks.values()])) if dense else 0.0
    out: dict[int, SimResult] = {}
    for n in pes:
        cycles = np.full(len(acts["input"]), elementwise_cycles(graph, n), np.int64)
        for d in dense:
            cycles += layer_cycles(pe_column_work(params[d.name][0], n), masks[d.name],
                                   depth)
        us = cycles / CLOCK_HZ * 1e6
        out[n] = SimResult(float(us.mean()), float(np.percentile(us, 99)), density)
    return out


# -- Table 5 ------------------------------------------------------------------------

def process_scale(nm: float) -> tuple[float, float]:
    """(area factor, power factor) from EIE's 45 nm to ``nm``, at the same 800 MHz.

    Area ∝ (nm/45)²: both layout dimensions shrink with the feature size. Power ∝
    nm/45: dynamic power C·V²·f with C ∝ feature size, f fixed and V roughly flat
    (supply voltage has scaled little since 45 nm, ~1.0 V → 0.7–0.8 V; full
    constant-field scaling, ∝ (nm/45)³ at fixed f, no longer holds). This is the
    assumption that reproduces seed 000's remark that a modern process brings the
    ~0.6 W configuration to about 0.1 W (0.59 W × 7/45 = 0.092 W at 7 nm)."""
    if not nm > 0:
        raise ValueError(f"process node must be > 0 nm, not {nm}")
    s = nm / EIE_NM
    return s * s, s


def table5(pes: Sequence[int], process_nm: float = EIE_NM) -> dict[int, dict[str, float]]:
    """Peak GOPS, mm² and W at each PE count, linear in N (as seed 000 does)."""
    a, p = process_scale(process_nm)
    return {n: {"gops": PE_GOPS * n, "area_mm2": PE_AREA_MM2 * n * a,
                "power_w": PE_POWER_W * n * p} for n in check_pes(pes)}


# -- comparison with the paper -------------------------------------------------------

def paper_row(model: str, sparsity: float) -> tuple[int, dict[int, float]] | None:
    """The paper's row for ``model`` at the nearest published sparsity (percent), as
    {PEs: µs}; None for a model the paper did not measure."""
    rows = PAPER_LATENCY_US.get(model)
    if not rows:
        return None
    pct = min(rows, key=lambda s: abs(s - 100 * sparsity))
    return pct, {n: float(v) for n, v in zip(PAPER_PES, rows[pct], strict=True)
                 if v is not None}


def compare_with_paper(model: str, sparsity: float, ours: Mapping[int, float]
                       ) -> dict[str, Any]:
    """Ours vs the paper's published µs at each PE count both have, with ours/paper."""
    row = paper_row(model, sparsity)
    if row is None:
        return {"paper_sparsity_pct": None, "rows": []}
    pct, paper = row
    rows = [{"pes": n, "ours_us": float(ours[n]), "paper_us": paper[n],
             "ratio": float(ours[n]) / paper[n]} for n in sorted(ours) if n in paper]
    return {"paper_sparsity_pct": pct, "rows": rows}


def kernel_sparsity(params: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> float:
    """Fraction of zero kernel weights over all dense layers."""
    total = sum(k.size for k, _ in params.values())
    nnz = sum(int(np.count_nonzero(k)) for k, _ in params.values())
    return 1.0 - nnz / total if total else 0.0
