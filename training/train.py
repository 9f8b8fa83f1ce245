"""Train a model of ``predictor.models`` on labelled traces and export its bundle.

The network is built from the same graph the engines run (``keras_graph``), so
what is trained is exactly what is served; the export is checked by running the
bundle through a compiled engine and comparing its decisions with Keras'.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from mittd.predictor.bundle import Bundle, save_bundle
from mittd.predictor.engines import make_engine
from mittd.predictor.graph import Graph, Params, decision_margin
from mittd.predictor.models import build_model
from mittd.training.dataset import Dataset
from mittd.training.keras_graph import params_from_keras, to_keras
from mittd.training.objective import loss_for, sample_weights

DEFAULTS = {"epochs": 8, "batch_size": 256, "learning_rate": 1e-3}


def fit(model: keras.Model, graph: Graph, ds: Dataset, *, epochs: int, batch_size: int,
        learning_rate: float, seed: int, verbose: int = 1,
        callbacks: list[keras.callbacks.Callback] | None = None,
        class_weights: bool = True) -> keras.callbacks.History:
    """Train on the training split (shuffled within it only; the test split is
    later in time and never seen)."""
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss_for(graph))
    sw = sample_weights(ds.y_train, ds.class_weight if class_weights else None)
    y = ds.y_train
    if graph.head == "sigmoid" and y.ndim == 1:
        y = y[:, None]  # (n, 1) like the logits, or Keras would broadcast to (n, n)
    return model.fit(ds.x_train, y, sample_weight=sw, epochs=epochs,
                     batch_size=batch_size, shuffle=True, verbose=verbose,
                     callbacks=callbacks or [])


def check_export(model: keras.Model, graph: Graph, params: Params, x: np.ndarray,
                 threshold: float = 0.5) -> float:
    """Fraction of decisions on which the exported weights, run by a compiled
    engine, agree with the Keras model (must be 1.0)."""
    keras_logits = model.predict(x, batch_size=1024, verbose=0)
    engine_logits = make_engine("csr", graph, params).logits(x)
    cut = float(np.log(threshold / (1 - threshold)))
    a = decision_margin(graph, keras_logits) > cut
    b = decision_margin(graph, engine_logits) > cut
    return float((a == b).mean())


@dataclass
class Trained:
    graph: Graph
    params: Params
    model: keras.Model
    seconds: float
    history: dict[str, list[float]]


def train(model_name: str, ds: Dataset, *, epochs: int = DEFAULTS["epochs"],
          batch_size: int = DEFAULTS["batch_size"],
          learning_rate: float = DEFAULTS["learning_rate"], seed: int = 0,
          verbose: int = 1) -> Trained:
    if ds.y_train.ndim == 2:  # a ladder of thresholds: one sigmoid output per rung
        graph = build_model(model_name, input_dim=ds.featuriser.dim,
                            n_out=ds.y_train.shape[1], head="sigmoid")
    else:
        graph = build_model(model_name, input_dim=ds.featuriser.dim)
    keras.utils.set_random_seed(seed)
    model = to_keras(graph)
    t0 = time.perf_counter()
    hist = fit(model, graph, ds, epochs=epochs, batch_size=batch_size,
               learning_rate=learning_rate, seed=seed, verbose=verbose)
    seconds = time.perf_counter() - t0
    return Trained(graph, params_from_keras(model, graph), model, seconds,
                   {k: [float(v) for v in vals] for k, vals in hist.history.items()})


def make_bundle(graph: Graph, params: Params, ds: Dataset, provenance: Mapping[str, Any],
                decision_threshold: float = 0.5) -> Bundle:
    n = graph.output_dim if graph.head == "sigmoid" else 1
    return Bundle(
        graph, params, ds.featuriser.config(),
        thresholds={"latency_us": [float(t) for t in ds.thresholds_us],
                    "p_slow": [float(decision_threshold)] * n},
        provenance=dict(provenance),
    )


def export(path: str | Path, bundle: Bundle) -> str:
    return save_bundle(bundle, path)


def provenance(ds: Dataset, model_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model_name,
        "data": ds.info,
        "tensorflow": tf.__version__,
        "created_unix": int(time.time()),
        **extra,
    }
