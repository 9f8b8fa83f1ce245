"""A tiny graph description shared by training (to build Keras models) and the
inference engines (to run them).

A graph is a list of nodes in topological order over 1-D float tensors (one
vector per request; engines add the batch dimension). Operations:

    input                          the feature vector (``input_dim`` wide)
    slice(x, start, width)         x[start:start+width]
    sum_slices(x, start, width, count)
                                   sum of ``count`` consecutive width-wide slices
                                   starting at ``start`` (a shared-weight layer over
                                   several requests, applied once to their sum)
    dense(x, units)                x @ kernel + bias (linear; kernel is in × units)
    add(a, b), subtract(a, b)      elementwise
    relu(x)                        max(x, 0)
    concat(a, b, ...)              joined end to end

The output node gives logits. ``head`` says how they become P(slow):
``softmax`` (two logits, class 1 = slow, P = sigmoid(l1 − l0)) or ``sigmoid``
(one logit per latency threshold, P_k = sigmoid(l_k)).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OPS = ("input", "slice", "sum_slices", "dense", "add", "subtract", "relu", "concat")
# inputs each op takes (None: one or more)
ARITY: dict[str, int | None] = {"input": 0, "slice": 1, "sum_slices": 1, "dense": 1, "add": 2,
                                "subtract": 2, "relu": 1, "concat": None}
ATTRS: dict[str, tuple[str, ...]] = {"slice": ("start", "width"),
                                     "sum_slices": ("start", "width", "count"),
                                     "dense": ("units",)}
HEADS = ("softmax", "sigmoid")

Params = dict[str, tuple[np.ndarray, np.ndarray]]  # dense node name -> (kernel, bias)


class GraphError(ValueError):
    """A graph description that cannot be run; the message names the node."""


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs),
                "attrs": dict(self.attrs)}


@dataclass(frozen=True)
class Graph:
    name: str
    input_dim: int
    nodes: tuple[Node, ...]
    output: str
    head: str = "softmax"

    # -- structure ----------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check ops, references, topological order and shapes."""
        if self.head not in HEADS:
            raise GraphError(f"{self.name}: head must be one of {HEADS}, not {self.head!r}")
        if self.input_dim < 1:
            raise GraphError(f"{self.name}: input_dim must be >= 1, got {self.input_dim}")
        seen: set[str] = set()
        for node in self.nodes:
            if node.op not in OPS:
                raise GraphError(f"{self.name}/{node.name}: unknown op {node.op!r}")
            n_in = ARITY[node.op]
            if (len(node.inputs) != n_in) if n_in is not None else not node.inputs:
                raise GraphError(f"{self.name}/{node.name}: {node.op} takes "
                                 f"{'one or more' if n_in is None else n_in} input(s), got "
                                 f"{len(node.inputs)}")
            missing = [a for a in ATTRS.get(node.op, ()) if a not in node.attrs]
            if missing:
                raise GraphError(f"{self.name}/{node.name}: {node.op} needs attribute(s) "
                                 f"{', '.join(missing)}")
            if node.op == "dense" and node.attrs["units"] < 1:
                raise GraphError(f"{self.name}/{node.name}: dense units must be >= 1, got "
                                 f"{node.attrs['units']}")
            if node.name in seen:
                raise GraphError(f"{self.name}/{node.name}: duplicate node name")
            for i in node.inputs:
                if i not in seen:
                    raise GraphError(f"{self.name}/{node.name}: input {i!r} is not defined "
                                     "before it")
            seen.add(node.name)
        if not self.nodes or self.nodes[0].op != "input":
            raise GraphError(f"{self.name}: the first node must be the input")
        if self.output not in seen:
            raise GraphError(f"{self.name}: output {self.output!r} is not a node")
        self.shapes()  # raises on shape mismatches

    def shapes(self) -> dict[str, int]:
        """Width of every node's output vector."""
        w: dict[str, int] = {}
        for n in self.nodes:
            ins = [w[i] for i in n.inputs]
            if n.op == "input":
                w[n.name] = self.input_dim
            elif n.op == "slice":
                start, width = n.attrs["start"], n.attrs["width"]
                if start < 0 or width <= 0 or start + width > ins[0]:
                    raise GraphError(f"{self.name}/{n.name}: slice out of range")
                w[n.name] = width
            elif n.op == "sum_slices":
                start, width, count = n.attrs["start"], n.attrs["width"], n.attrs["count"]
                if start < 0 or width <= 0 or count <= 0 or start + width * count > ins[0]:
                    raise GraphError(f"{self.name}/{n.name}: sum_slices out of range")
                w[n.name] = width
            elif n.op == "dense":
                w[n.name] = int(n.attrs["units"])
            elif n.op in ("add", "subtract"):
                if len(ins) != 2 or ins[0] != ins[1]:
                    raise GraphError(f"{self.name}/{n.name}: {n.op} needs two inputs of "
                                     f"equal width, got {ins}")
                w[n.name] = ins[0]
            elif n.op == "relu":
                w[n.name] = ins[0]
            elif n.op == "concat":
                w[n.name] = sum(ins)
        return w

    @property
    def output_dim(self) -> int:
        return self.shapes()[self.output]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def dense_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "dense"]

    def kernel_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of every dense layer's kernel."""
        w = self.shapes()
        return {n.name: (w[n.inputs[0]], w[n.name]) for n in self.dense_nodes()}

    # -- Table 1 figures -------------------------------------------------------------
    def count_weights(self) -> int:
        """Kernel and bias parameters of all dense layers."""
        return sum(i * o + o for i, o in self.kernel_shapes().values())

    def count_ops(self) -> int:
        """Arithmetic per inference, dense: 2 per kernel weight (multiply and add), 1 per
        bias, plus the elementwise joins and reductions (seed 000 counts ops ≈ 2 × weights)."""
        w = self.shapes()
        ops = 0
        for n in self.nodes:
            if n.op == "dense":
                i, o = w[n.inputs[0]], w[n.name]
                ops += 2 * i * o + o
            elif n.op in ("add", "subtract", "relu"):
                ops += w[n.name]
            elif n.op == "sum_slices":
                ops += w[n.name] * (n.attrs["count"] - 1)
        return ops

    def max_kernel(self) -> tuple[int, int]:
        shapes = self.kernel_shapes().values()
        return max(shapes, key=lambda s: s[0] * s[1]) if shapes else (0, 0)

    def describe(self) -> dict[str, Any]:
        i, o = self.max_kernel()
        return {
            "model": self.name,
            "layers": len(self.dense_nodes()),
            "max_kernel": f"{i}x{o}",
            "weights": self.count_weights(),
            "ops": self.count_ops(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "head": self.head,
        }

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input_dim": self.input_dim, "output": self.output,
                "head": self.head, "nodes": [n.to_dict() for n in self.nodes]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Graph:
        def text(v: Any, what: str) -> str:
            if not isinstance(v, str):
                raise TypeError(f"{what} must be a string, got {v!r}")
            return v

        def number(v: Any, what: str) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{what} must be an integer, got {v!r}")
            return v

        try:
            if not isinstance(d, Mapping):
                raise TypeError(f"expected an object, got {type(d).__name__}")
            if not isinstance(d["nodes"], list):
                raise TypeError(f"nodes must be a list, got {d['nodes']!r}")
            nodes = []
            for n in d["nodes"]:
                if not isinstance(n, Mapping):
                    raise TypeError(f"a node must be an object, got {n!r}")
                name = text(n["name"], "node name")
                inputs = n.get("inputs", [])
                attrs = n.get("attrs", {})
                if not isinstance(inputs, list) or not isinstance(attrs, Mapping):
                    raise TypeError(f"node {name}: inputs must be a list and attrs an object")
                nodes.append(Node(name, text(n["op"], f"node {name} op"),
                                  tuple(text(i, f"node {name} input") for i in inputs),
                                  {str(k): number(v, f"node {name} attribute {k}")
                                   for k, v in attrs.items()}))
            return cls(text(d["name"], "name"), number(d["input_dim"], "input_dim"),
                       tuple(nodes), text(d["output"], "output"),
                       text(d.get("head", "softmax"), "head"))
        except GraphError:
            raise
        except KeyError as e:
            raise GraphError(f"malformed graph description: missing field {e}") from None
        except (TypeError, ValueError) as e:
            raise GraphError(f"malformed graph description: {e}") from None


class GraphBuilder:
    """Fluent construction of a Graph with generated node names."""

    def __init__(self, name: str, input_dim: int) -> None:
        self.name = name
        self.input_dim = input_dim
        self.nodes: list[Node] = [Node("input", "input")]
        self._counts: dict[str, int] = {}

    def _add(self, op: str, inputs: Sequence[str], name: str | None = None,
             **attrs: int) -> str:
        if name is None:
            k = self._counts.get(op, 0) + 1
            self._counts[op] = k
            name = f"{op}_{k}"
        self.nodes.append(Node(name, op, tuple(inputs), attrs))
        return name

    def slice(self, x: str, start: int, width: int, name: str | None = None) -> str:
        return self._add("slice", [x], name, start=start, width=width)

    def sum_slices(self, x: str, start: int, width: int, count: int,
                   name: str | None = None) -> str:
        return self._add("sum_slices", [x], name, start=start, width=width, count=count)

    def dense(self, x: str, units: int, name: str | None = None) -> str:
        return self._add("dense", [x], name, units=units)

    def add(self, a: str, b: str, name: str | None = None) -> str:
        return self._add("add", [a, b], name)

    def subtract(self, a: str, b: str, name: str | None = None) -> str:
        return self._add("subtract", [a, b], name)

    def relu(self, x: str, name: str | None = None) -> str:
        return self._add("relu", [x], name)

    def concat(self, *xs: str, name: str | None = None) -> str:
        return self._add("concat", list(xs), name)

    def build(self, output: str, head: str = "softmax") -> Graph:
        return Graph(self.name, self.input_dim, tuple(self.nodes), output, head)


# -- parameters ---------------------------------------------------------------------

def init_params(graph: Graph, seed: int = 0) -> Params:
    """Glorot-uniform kernels and small biases (what Keras would start from)."""
    rng = np.random.default_rng(seed)
    params: Params = {}
    for name, (i, o) in graph.kernel_shapes().items():
        limit = np.sqrt(6.0 / (i + o))
        params[name] = (
            rng.uniform(-limit, limit, (i, o)).astype(np.float32),
            rng.uniform(-0.05, 0.05, o).astype(np.float32),
        )
    return params


def check_params(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Every dense layer has a kernel and bias of the right shape, finite values."""
    for name, (i, o) in graph.kernel_shapes().items():
        if name not in params:
            raise GraphError(f"{graph.name}/{name}: no weights")
        k, b = params[name]
        if k.shape != (i, o) or b.shape != (o,):
            raise GraphError(f"{graph.name}/{name}: weights have shape {k.shape}/{b.shape}, "
                             f"graph needs {(i, o)}/{(o,)}")
        if not (np.isfinite(k).all() and np.isfinite(b).all()):
            raise GraphError(f"{graph.name}/{name}: weights are not finite")
    extra = set(params) - set(graph.kernel_shapes())
    if extra:
        raise GraphError(f"{graph.name}: weights for unknown layers {sorted(extra)}")


def sparsity(params: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Fraction of zero kernel weights per dense layer."""
    return {n: float((k == 0).mean()) for n, (k, _) in params.items()}


def iter_nodes(graph: Graph, op: str) -> Iterator[Node]:
    return (n for n in graph.nodes if n.op == op)


# -- reference forward pass -----------------------------------------------------------

def forward(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
            x: np.ndarray) -> np.ndarray:
    """Logits for a batch (n, input_dim), in float64: the reference every engine is
    held to. Slow and simple on purpose."""
    return forward_all(graph, params, x)[graph.output]


def forward_all(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]],
                x: np.ndarray) -> dict[str, np.ndarray]:
    """Every node's output for a batch, float64 (the reference forward pass)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[1] != graph.input_dim:
        raise GraphError(f"{graph.name}: input has {x.shape[1]} features, graph needs "
                         f"{graph.input_dim}")
    v: dict[str, np.ndarray] = {}
    for n in graph.nodes:
        a = [v[i] for i in n.inputs]
        if n.op == "input":
            v[n.name] = x
        elif n.op == "slice":
            s, w = n.attrs["start"], n.attrs["width"]
            v[n.name] = a[0][:, s:s + w]
        elif n.op == "sum_slices":
            s, w, c = n.attrs["start"], n.attrs["width"], n.attrs["count"]
            v[n.name] = a[0][:, s:s + w * c].reshape(len(x), c, w).sum(axis=1)
        elif n.op == "dense":
            k, b = params[n.name]
            v[n.name] = a[0] @ k.astype(np.float64) + b.astype(np.float64)
        elif n.op == "add":
            v[n.name] = a[0] + a[1]
        elif n.op == "subtract":
            v[n.name] = a[0] - a[1]
        elif n.op == "relu":
            v[n.name] = np.maximum(a[0], 0.0)
        elif n.op == "concat":
            v[n.name] = np.concatenate(a, axis=1)
    return v


def input_reach(graph: Graph, params: Mapping[str, tuple[np.ndarray, np.ndarray]]
                ) -> dict[str, np.ndarray]:
    """For every node, which of its units a path of non-zero weights joins to the
    input (booleans, one per unit): the others are the same for every input.

    Why: pruning can cut a network in two without emptying any layer (at 98 % a
    random layer-by-layer prune of precise_linear does); the output then answers the
    same for every IO. A unit reached by no path is constant whatever the weights'
    values, so this is the structural test, done once, not sampled."""
    v: dict[str, np.ndarray] = {}
    for n in graph.nodes:
        a = [v[i] for i in n.inputs]
        if n.op == "input":
            v[n.name] = np.ones(graph.input_dim, bool)
        elif n.op == "slice":
            s, w = n.attrs["start"], n.attrs["width"]
            v[n.name] = a[0][s:s + w]
        elif n.op == "sum_slices":
            s, w, c = n.attrs["start"], n.attrs["width"], n.attrs["count"]
            v[n.name] = a[0][s:s + w * c].reshape(c, w).any(axis=0)
        elif n.op == "dense":
            k = np.asarray(params[n.name][0]) != 0
            v[n.name] = (a[0].astype(np.float64) @ k) > 0
        elif n.op in ("add", "subtract"):
            v[n.name] = a[0] | a[1]
        elif n.op == "relu":
            v[n.name] = a[0]
        elif n.op == "concat":
            v[n.name] = np.concatenate(a)
    return v


def p_slow(graph: Graph, logits: np.ndarray) -> np.ndarray:
    """P(slow) from logits: (n,) for a softmax head, (n, k) for a sigmoid head."""
    logits = np.asarray(logits, dtype=np.float64)
    if graph.head == "softmax":
        return 1.0 / (1.0 + np.exp(-(logits[..., 1] - logits[..., 0])))
    return 1.0 / (1.0 + np.exp(-logits))


def decision_margin(graph: Graph, logits: np.ndarray, k: int = 0) -> np.ndarray:
    """A score that is > logit(threshold) exactly when P(slow) > threshold; engines
    compare it without computing an exponential."""
    if graph.head == "softmax":
        return logits[..., 1] - logits[..., 0]
    return logits[..., k]
