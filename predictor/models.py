"""The research's models as graphs (seed 000, Table 1) and the peers' baselines.

- ``precise_linear``: 8 fully-connected layers with ReLU on the 352-wide LBA
  features; max kernel 352×352; 583,906 weights (paper: 583,520, +0.07 %).
- ``good_custom``: the "storage-aware" model — 12 dense layers with linear
  activations joined by Add, Subtract and ReLU, max kernel 128×128; 148,930
  weights (paper: 149,776, −0.56 %). Its structure mimics an SSD: the current
  request and the pending ones are mapped onto resources (dies, channels) by
  shared "placement" layers; the load the pending requests put on those
  resources is added and the free capacity subtracted, twice (die level, then
  channel level), before a small queueing head. The pending requests share one
  placement layer, applied once to the sum of their address bits (a linear layer
  commutes with the sum), which keeps every kernel within 128×128 as the
  paper's Table 1 says.
- ``precise_linear_hist``: precise_linear's topology on the ``lba_hist``
  features (the 352 LBA bits, then the 31 LinnOS digits and the 11 Heimdall
  features: queue lengths, recent latencies and throughputs, the request's size),
  394 wide; 598,690 weights (the first kernel is 394×352 instead of 352×352).
- ``linnos``: LinnOS (OSDI '20), 31 → 256 (ReLU) → 2.
- ``heimdall``: Heimdall (EuroSys '25), 11 → 128 (ReLU) → 16 (ReLU) → 1.

All take the head of their paper: two logits (softmax, class 1 = slow) except
Heimdall's single sigmoid output; ``n_out`` > 1 with ``head='sigmoid'`` gives a
multi-threshold head (one P(latency > t_k) per threshold).
"""

from __future__ import annotations

from collections.abc import Callable

from mittd.predictor.graph import Graph, GraphBuilder, GraphError

PAPER_TABLE1 = {  # seed 000, Table 1: layers, max kernel, weights, operations
    "precise_linear": (8, "352x352", 583_520, 1_167_040),
    "good_custom": (12, "128x128", 149_776, 365_472),
    "RAID5_aware": (12, "352x352", 1_115_490, 2_727_652),
}


def _head(n_out: int | None, head: str) -> tuple[int, str]:
    if head not in ("softmax", "sigmoid"):
        raise GraphError(f"head must be softmax or sigmoid, not {head!r}")
    if head == "softmax":
        return 2, head
    return (n_out or 1), head


PRECISE_LINEAR_UNITS = (352, 352, 352, 352, 176, 128, 16)  # hidden layers, then the logits


def _fully_connected(name: str, input_dim: int, n_out: int | None, head: str) -> Graph:
    out, head = _head(n_out, head)
    g = GraphBuilder(name, input_dim)
    x = "input"
    for i, units in enumerate(PRECISE_LINEAR_UNITS, start=1):
        x = g.relu(g.dense(x, units, name=f"fc{i}"), name=f"relu{i}")
    return g.build(g.dense(x, out, name="logits"), head)


def precise_linear(input_dim: int = 352, n_out: int | None = None,
                   head: str = "softmax") -> Graph:
    return _fully_connected("precise_linear", input_dim, n_out, head)


def precise_linear_hist(input_dim: int = 394, n_out: int | None = None,
                        head: str = "softmax") -> Graph:
    """precise_linear on the LBA bits plus queue/latency history (``lba_hist``)."""
    return _fully_connected("precise_linear_hist", input_dim, n_out, head)


def good_custom(input_dim: int = 352, slot_bits: int = 32, n_out: int | None = None,
                head: str = "softmax") -> Graph:
    if input_dim % slot_bits or input_dim // slot_bits < 2:
        raise GraphError(f"good_custom needs the current request and >= 1 pending request "
                         f"of {slot_bits} bits each; input_dim {input_dim} does not divide")
    pending = input_dim // slot_bits - 1
    out, head = _head(n_out, head)
    g = GraphBuilder("good_custom", input_dim)
    cur = g.slice("input", 0, slot_bits, name="current_bits")
    pend = g.sum_slices("input", slot_bits, slot_bits, pending, name="pending_bits")
    cur_place = g.dense(cur, 128, name="place_current")       # which resources it needs
    pend_place = g.dense(pend, 128, name="place_pending")     # where the queue sits
    overlap = g.relu(g.add(cur_place, pend_place, name="overlap"), name="overlap_relu")
    die_load = g.dense(overlap, 128, name="die_load")
    die_free = g.dense(g.relu(cur_place, name="current_relu"), 128, name="die_free")
    die_busy = g.relu(g.subtract(die_load, die_free, name="die_contention"), name="die_busy")
    chan_load = g.dense(die_busy, 128, name="channel_load")
    chan_free = g.dense(g.relu(pend_place, name="pending_relu"), 128, name="channel_free")
    wait = g.relu(g.subtract(chan_load, chan_free, name="channel_contention"),
                  name="channel_wait")
    q_wait = g.dense(wait, 128, name="queue_wait")
    q_busy = g.dense(die_busy, 128, name="queue_busy")
    h = g.relu(g.add(q_wait, q_busy, name="queue"), name="queue_relu")
    h = g.relu(g.dense(h, 128, name="fc1"), name="fc1_relu")
    h = g.relu(g.dense(h, 128, name="fc2"), name="fc2_relu")
    h = g.relu(g.dense(h, 64, name="fc3"), name="fc3_relu")
    return g.build(g.dense(h, out, name="logits"), head)


def linnos(input_dim: int = 31, n_out: int | None = None, head: str = "softmax") -> Graph:
    out, head = _head(n_out, head)
    g = GraphBuilder("linnos", input_dim)
    h = g.relu(g.dense("input", 256, name="fc1"), name="relu1")
    return g.build(g.dense(h, out, name="logits"), head)


def heimdall(input_dim: int = 11, n_out: int | None = None, head: str = "sigmoid") -> Graph:
    out, head = _head(n_out, head)
    g = GraphBuilder("heimdall", input_dim)
    h = g.relu(g.dense("input", 128, name="fc1"), name="relu1")
    h = g.relu(g.dense(h, 16, name="fc2"), name="relu2")
    return g.build(g.dense(h, out, name="logits"), head)


MODELS: dict[str, Callable[..., Graph]] = {
    "precise_linear": precise_linear,
    "precise_linear_hist": precise_linear_hist,
    "good_custom": good_custom,
    "linnos": linnos,
    "heimdall": heimdall,
}
# The featuriser each model is meant for (predictor.features).
MODEL_FEATURISER = {"precise_linear": "lba", "precise_linear_hist": "lba_hist",
                    "good_custom": "lba", "linnos": "linnos", "heimdall": "heimdall"}


def build_model(name: str, **kw: object) -> Graph:
    if name not in MODELS:
        raise GraphError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kw)
