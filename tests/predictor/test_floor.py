"""``predictor.floor``: the work of a decision is counted exactly, and the floor
follows it (more work, a higher floor; the dense ways for compacted networks)."""

from __future__ import annotations

import numpy as np

from mittd.predictor.floor import MachineRates, floor_us, machine_rates, network_work
from mittd.predictor.graph import GraphBuilder


def _net() -> tuple:  # type: ignore[type-arg]
    b = GraphBuilder("t", 4)
    g = b.build(b.dense(b.relu(b.dense("input", 3, name="h")), 1, name="out"), head="sigmoid")
    h = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 0], [3, 0, -1]], np.float32)  # (in, out)
    out = np.array([[1], [1], [0]], np.float32)
    return g, {"h": (h, np.zeros(3, np.float32)), "out": (out, np.zeros(1, np.float32))}


def test_multiply_adds_skip_zero_activations_exactly() -> None:
    g, p = _net()
    # input 0 feeds 1 weight, input 3 feeds 2; hidden: h0 = 1 + 3 = 4 > 0, h1 = 0, h2 = -1 -> 0
    work = network_work(g, p, np.array([[1, 0, 0, 1]], np.float32))
    assert work.nonzeros == 4 + 2
    assert work.macs == 3 + 1  # layer h: inputs 0 and 3; layer out: only h0 is non-zero
    assert work.bytes == work.macs * 6
    assert work.input_nonzero_share == 0.5 and work.dense_weights == 12 + 3
    # the columns of the non-zero inputs, zeros included: 2 of h's (3 each), 1 of out's
    assert work.active_dense_weights == 2 * 3 + 1
    # the mean over the sample
    two = network_work(g, p, np.array([[1, 0, 0, 1], [0, 0, 0, 0]], np.float32))
    assert two.macs == 2.0 and two.active_dense_weights == 3.5


def test_floor_is_the_cheaper_way() -> None:
    g, p = _net()
    work = network_work(g, p, np.array([[1, 1, 1, 1]], np.float32))
    gather_bound = MachineRates(ns_per_mac=1.0, ns_per_byte=0.0, call_ns=0.0,
                                ns_per_dense_mac=100.0)
    assert floor_us(work, gather_bound) == work.macs / 1e3
    dense_cheap = MachineRates(ns_per_mac=1.0, ns_per_byte=0.0, call_ns=0.0,
                               ns_per_dense_mac=0.01)
    # every input non-zero: h's 4 columns, and h0, h1 (h2 = -1 is ReLU'd) of out's 3
    assert work.active_dense_weights == 4 * 3 + 2 < work.dense_weights
    assert floor_us(work, dense_cheap) == work.active_dense_weights * 0.01 / 1e3
    stream_bound = MachineRates(ns_per_mac=1.0, ns_per_byte=10.0, call_ns=0.0,
                                ns_per_dense_mac=100.0)  # loads and arithmetic overlap
    assert floor_us(work, stream_bound) == work.bytes * 10.0 / 1e3


def test_machine_rates_are_measured() -> None:
    r = machine_rates()
    assert r.ns_per_dense_mac > 0 and r.ns_per_mac > 0 and r.ns_per_byte > 0
    assert r.call_ns > 0
