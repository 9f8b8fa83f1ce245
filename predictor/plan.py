"""Compile a graph and its weights into the flat arrays the kernels run.

Also holds node pruning's compaction (Scalpel §3.4): a node that no later
layer reads (its whole row of every consuming kernel is zero) is removed from
the layer that produces it and from everything joined to it by add, subtract
and ReLU, so the remaining layers are smaller and still dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mittd.predictor import kernels as K
from mittd.predictor.formats import (
    KIND_BLOCK,
    KIND_DCOL,
    KIND_NAMES,
    KIND_SELL,
    SELL_LANES,
    dcol_width,
    encode,
)
from mittd.predictor.graph import Graph, Node, Params

PAD = 16  # activation regions are padded to this many floats (>= any SIMD group)


def _ceil(n: int, m: int = PAD) -> int:
    return -(-n // m) * m


@dataclass
class Plan:
    """A compiled network: the kernels' two arrays and where to find things."""

    graph: Graph
    ints: np.ndarray
    arena: np.ndarray
    act_base: int
    act_size: int
    input_off: int
    output_off: int
    output_dim: int
    kinds: dict[str, str] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)

    @property
    def input(self) -> np.ndarray:
        """The input region, a view: featurisers write straight into it."""
        o = self.act_base + self.input_off
        return self.arena[o:o + self.graph.input_dim]

    @property
    def output(self) -> np.ndarray:
        o = self.act_base + self.output_off
        return self.arena[o:o + self.output_dim]


def _sell_perm(padded_rows: int) -> slice:
    """Where a SELL encoding's ``perm`` lies in its indices (formats._encode_sell)."""
    n_chunks = padded_rows // SELL_LANES
    return slice(n_chunks + 1, n_chunks + 1 + padded_rows)


def _consumers(graph: Graph) -> dict[str, list[Node]]:
    users: dict[str, list[Node]] = {n.name: [] for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            users[i].append(n)
    return users


def compile_plan(
    graph: Graph,
    params: Mapping[str, tuple[np.ndarray, np.ndarray]],
    kinds: Mapping[str, int],
    group: int = 8,
) -> Plan:
    """Lay out weights and activations and emit one record per operation.

    ``kinds`` maps every dense node to a storage kind (predictor.formats).
    A ReLU that is the only reader of a dense layer is fused into it; slices are
    views of their input; concatenations are copies.
    """
    widths = graph.shapes()
    users = _consumers(graph)
    fused: set[str] = set()  # relu nodes folded into their dense producer
    alias: dict[str, str] = {}
    for n in graph.nodes:
        if n.op == "relu":
            src = graph.node(n.inputs[0])
            if src.op == "dense" and len(users[src.name]) == 1:
                fused.add(n.name)

    # -- weights --------------------------------------------------------------------
    f_chunks: list[np.ndarray] = []
    i_chunks: list[np.ndarray] = []
    f_len = i_len = 0
    layer_at: dict[str, tuple[int, int, int, int]] = {}
    stored: dict[str, int] = {}
    sell_in_order: dict[str, bool] = {}  # SELL rows already sorted: vector stores
    for n in graph.dense_nodes():
        kernel, bias = params[n.name]
        kind = kinds[n.name]
        enc = encode(kind, np.asarray(kernel, np.float32).T, group)
        w_off = f_len
        f_chunks.append(enc.values)
        f_len += enc.values.size
        b_off = f_len
        bias = np.asarray(bias, np.float32)
        if kind == KIND_SELL:  # the kernel adds 8 biases at once: zeros past the last row
            rows = bias.size
            bias = np.concatenate([bias, np.zeros(-rows % SELL_LANES, np.float32)])
            perm = enc.indices[_sell_perm(bias.size)]
            sell_in_order[n.name] = bool((perm[:rows] == np.arange(rows)).all())
        elif kind == KIND_DCOL:  # whole passes of sums: zeros past the last output
            bias = np.concatenate([bias, np.zeros(dcol_width(bias.size) - bias.size,
                                                  np.float32)])
        f_chunks.append(bias)
        f_len += bias.size
        layer_at[n.name] = (kind, w_off, b_off, i_len)
        i_chunks.append(enc.indices)
        i_len += enc.indices.size
        stored[n.name] = enc.stored

    # -- activations ----------------------------------------------------------------
    act_off: dict[str, int] = {}
    act_len = 0
    for n in graph.nodes:
        if n.name in fused:
            act_off[n.name] = act_off[n.inputs[0]]
            continue
        if n.op == "slice":
            alias[n.name] = n.inputs[0]
            act_off[n.name] = act_off[n.inputs[0]] + n.attrs["start"]
            continue
        act_off[n.name] = act_len
        w = widths[n.name]
        # a dcol layer stores whole passes of 32 sums (zeros past its last output)
        act_len += _ceil(dcol_width(w) if kinds.get(n.name) == KIND_DCOL else w)

    # a block-sparse layer may read up to a group past its input; only padded,
    # non-aliased regions guarantee zeros there
    safe_kinds = dict(kinds)
    for n in graph.dense_nodes():
        src = n.inputs[0]
        if safe_kinds[n.name] == KIND_BLOCK and (
            src in alias and widths[src] % group != 0
        ):
            raise ValueError(f"{graph.name}/{n.name}: block format needs an input width "
                             f"that is a multiple of {group} when reading a slice")

    # -- records --------------------------------------------------------------------
    recs: list[list[int]] = []
    for n in graph.nodes:
        if n.op in ("input", "slice") or n.name in fused:
            continue
        out, ow = act_off[n.name], widths[n.name]
        ins = [act_off[i] for i in n.inputs]
        iws = [widths[i] for i in n.inputs]
        if n.op == "dense":
            kind, w_off, b_off, i_off = layer_at[n.name]
            relu = int(any(u.name in fused for u in users[n.name]))
            recs.append([K.OP_DENSE, out, ow, ins[0], iws[0], 0, kind, w_off,
                         0, b_off, relu,
                         int(sell_in_order[n.name]) if kind == KIND_SELL else group])
            recs[-1][8] = i_off  # made absolute below
        elif n.op in ("add", "subtract"):
            op = K.OP_ADD if n.op == "add" else K.OP_SUB
            recs.append([op, out, ow, ins[0], ow, ins[1], 0, 0, 0, 0, 0, 0])
        elif n.op == "relu":
            recs.append([K.OP_RELU, out, ow, ins[0], ow, 0, 0, 0, 0, 0, 0, 0])
        elif n.op == "sum_slices":
            start, width, count = n.attrs["start"], n.attrs["width"], n.attrs["count"]
            recs.append([K.OP_SUM_SLICES, out, width, ins[0] + start, width * count, 0,
                         count, 0, 0, 0, 0, 0])
        elif n.op == "concat":
            pos = 0
            for src_off, w in zip(ins, iws, strict=True):
                recs.append([K.OP_COPY, out + pos, w, src_off, w, 0, 0, 0, 0, 0, 0, 0])
                pos += w
    n_rec = len(recs)
    idx_base = K.HEADER + n_rec * K.RECORD
    for r in recs:
        if r[0] == K.OP_DENSE:
            r[8] += idx_base
    act_base = _ceil(f_len)
    ints = np.concatenate(
        [np.array([n_rec, act_base, act_off["input"], act_off[graph.output]], np.int64),
         np.array(recs, np.int64).reshape(-1), *[c.astype(np.int64) for c in i_chunks]]
    )
    if ints.max(initial=0) >= 2**31:
        raise ValueError(f"{graph.name}: network too large for 32-bit plan offsets")
    arena = np.zeros(act_base + act_len + PAD, np.float32)
    if f_chunks:
        arena[:f_len] = np.concatenate(f_chunks)
    return Plan(
        graph=graph, ints=ints.astype(np.int32), arena=arena, act_base=act_base,
        act_size=act_len + PAD, input_off=act_off["input"],
        output_off=act_off[graph.output], output_dim=widths[graph.output],
        kinds={n: KIND_NAMES[k] for n, k in kinds.items()}, stored=stored,
    )


# -- node pruning ---------------------------------------------------------------------

def _index_spaces(graph: Graph) -> dict[str, str]:
    """Union of nodes whose output vectors share one index space (add/sub/relu)."""
    parent = {n.name: n.name for n in graph.nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in graph.nodes:
        if n.op in ("add", "subtract", "relu"):
            for i in n.inputs:
                parent[find(i)] = find(n.name)
    return {n.name: find(n.name) for n in graph.nodes}


def compact_nodes(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[Graph, Params, dict[str, int]]:
    """Remove nodes no path to the output reads; returns the smaller graph, its
    weights, and how many nodes each dense layer lost. Outputs are what they were
    (bit for bit, up to the sign of a zero).

    Why repeated to a fixed point: removing a layer's unread units removes the
    weights they were read by, which can leave units of the layer before unread in
    turn: precise_linear pruned layer by layer at random to 98 % keeps 3,919 of a
    single pass's 11,060 non-zeros so. A space no live weight reads at all keeps one
    unit (no layer may shrink to width 0) whose writers' weights are zeroed, since its
    value is never used, so the cut reaches the input: that network, a constant,
    keeps 1."""
    widths = {n.name: n.attrs["units"] for n in graph.nodes if n.op == "dense"}
    g, p = graph, dict(params)
    while True:
        g, p, changed = _compact_once(g, p)
        if not changed:
            break
    return g, p, {n.name: widths[n.name] - n.attrs["units"]
                  for n in g.nodes if n.op == "dense"}


def _compact_once(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[Graph, Params, bool]:
    """One pass of :func:`compact_nodes`: drop the units no layer reads with a
    non-zero weight; says whether anything changed."""
    space = _index_spaces(graph)
    widths = graph.shapes()
    members: dict[str, list[str]] = {}
    for name, root in space.items():
        members.setdefault(root, []).append(name)
    # a space can shrink only if every member is a dense output or elementwise join
    live: dict[str, np.ndarray] = {}
    unread: set[str] = set()  # spaces whose one kept unit no weight reads
    for root, names in members.items():
        nodes = [graph.node(x) for x in names]
        compactable = all(n.op in ("dense", "add", "subtract", "relu") for n in nodes) and (
            space[graph.output] != root
        )
        keep = np.ones(widths[root], bool) if not compactable else np.zeros(widths[root], bool)
        if compactable:
            for n in graph.nodes:
                if any(i in names for i in n.inputs) and n.op not in ("add", "subtract",
                                                                      "relu"):
                    if n.op == "dense":
                        k = np.asarray(params[n.name][0])
                        keep |= (k != 0).any(axis=1)
                    else:  # read by slice / concat / sum_slices: keep everything
                        keep[:] = True
        if not keep.any():
            keep[0] = True  # no layer may shrink to width 0
            unread.add(root)
        live[root] = keep
    new_params: Params = {}
    changed = False
    nodes = []
    for n in graph.nodes:
        if n.op == "dense":
            k, b = (np.asarray(a, np.float32) for a in params[n.name])
            rows = live[space[n.inputs[0]]]
            cols = live[space[n.name]]
            k, b = np.ascontiguousarray(k[rows][:, cols]), np.ascontiguousarray(b[cols])
            changed |= not (rows.all() and cols.all())
            if space[n.name] in unread and (k.any() or b.any()):
                k[:] = 0.0  # its value is never used: let its inputs go
                b[:] = 0.0
                changed = True
            new_params[n.name] = (k, b)
            nodes.append(Node(n.name, n.op, n.inputs, {"units": int(cols.sum())}))
        else:
            nodes.append(n)
    new_graph = Graph(graph.name, graph.input_dim, tuple(nodes), graph.output, graph.head)
    return new_graph, new_params, changed


def relabel_units(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]]
                  ) -> Params:
    """Renumber the hidden units of every index space only dense layers write and
    read (through ReLUs, adds, subtracts) by their count of non-zero weights, most
    first: an exact relabelling (the writers' output columns and the readers' input
    rows move together), so a SELL layer's rows are already in order and its kernel
    stores 8 outputs at once instead of one by one through ``perm``. Spaces read by
    slices, concatenations or sums of slices, the input and the output keep their
    order."""
    space = _index_spaces(graph)
    widths = graph.shapes()
    members: dict[str, list[str]] = {}
    for name, root in space.items():
        members.setdefault(root, []).append(name)
    order: dict[str, np.ndarray] = {}
    for root, names in members.items():
        nodes = [graph.node(x) for x in names]
        free = all(n.op in ("dense", "add", "subtract", "relu") for n in nodes) and (
            space[graph.output] != root) and all(
            n.op in ("dense", "add", "subtract", "relu")
            for n in graph.nodes if any(i in names for i in n.inputs))
        if not free:
            order[root] = np.arange(widths[root])
            continue
        nnz = np.zeros(widths[root], np.int64)
        for n in nodes:
            if n.op == "dense":
                nnz += (np.asarray(params[n.name][0]) != 0).sum(axis=0)
        order[root] = np.argsort(-nnz, kind="stable")
    out: Params = {}
    for n in graph.dense_nodes():
        k, b = (np.asarray(a, np.float32) for a in params[n.name])
        rows, cols = order[space[n.inputs[0]]], order[space[n.name]]
        out[n.name] = (np.ascontiguousarray(k[rows][:, cols]), np.ascontiguousarray(b[cols]))
    return out
