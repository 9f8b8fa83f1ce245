"""The contract every inference engine keeps (the compiled ones, numpy's, EIE's).

Its own module so that engines defined elsewhere (``mittd.predictor.eie``) and the
registry of engines (``mittd.predictor.engines``) both import it, never each other
in a loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from mittd.predictor.graph import Graph, check_params, decision_margin

__all__ = ["Engine", "WeightMap"]

WeightMap = Mapping[str, tuple[np.ndarray, np.ndarray]]


class Engine(ABC):
    """One way of running a network; batch-1 (daemon) and batched paths."""

    name = ""

    def __init__(self, graph: Graph, params: WeightMap) -> None:
        check_params(graph, params)
        self.graph = graph

    @property
    @abstractmethod
    def input(self) -> np.ndarray:
        """Batch-1 input buffer (float32, input_dim): write features here, then run1."""

    @abstractmethod
    def run1(self) -> np.ndarray:
        """Run on ``input``; returns the logits (a view, valid until the next call)."""

    @abstractmethod
    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of a batch (n, input_dim) → (n, output_dim), float32."""

    def logits1(self, x: np.ndarray) -> np.ndarray:
        self.input[:] = x
        return self.run1().copy()

    def margin1(self) -> float:
        """Run on ``input``; a score that exceeds logit(t) exactly when P(slow) > t."""
        out = self.run1()
        return float(out[1] - out[0]) if self.graph.head == "softmax" else float(out[0])

    def margins(self, x: np.ndarray, k: int = 0) -> np.ndarray:
        return decision_margin(self.graph, self.logits(x), k)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name}
