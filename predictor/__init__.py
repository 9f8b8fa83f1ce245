"""Featurisers, model graphs, inference engines, bundle format, EIE emulation.

The public face, for a user who has a trained bundle and wants decisions::

    >>> from mittd import predictor
    >>> bundle = predictor.load_bundle(predictor.shipped_bundle("heimdall"))
    >>> engine = predictor.make_engine("auto", bundle.graph, bundle.params)
    >>> featuriser = predictor.make_featuriser(bundle.featuriser)
    >>> featuriser.dim == engine.input.shape[0]
    True

``make_featuriser(bundle.featuriser).make_tracker()`` gives the pending-request
tracker a live caller feeds; ``mittd.daemon.devices.build_state`` does all of
it with every consistency check, as the daemon does. Everything else lives in
the submodules (``graph``, ``models``, ``kernels``, ``eie``, ``eie_perf``, …).
"""

from mittd.predictor.bundle import Bundle, BundleError, load_bundle, save_bundle
from mittd.predictor.engine import Engine
from mittd.predictor.engines import ENGINE_NAMES, ENGINES, make_engine
from mittd.predictor.features import FEATURISERS, Featuriser, make_featuriser, trace_columns
from mittd.predictor.graph import Graph, GraphError
from mittd.predictor.models import MODELS, build_model
from mittd.predictor.shipped import SHIPPED_BUNDLES, shipped_bundle
from mittd.predictor.slo import parse_slo
from mittd.predictor.tracker import PendingTracker

__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "FEATURISERS",
    "MODELS",
    "SHIPPED_BUNDLES",
    "Bundle",
    "BundleError",
    "Engine",
    "Featuriser",
    "Graph",
    "GraphError",
    "PendingTracker",
    "build_model",
    "load_bundle",
    "make_engine",
    "make_featuriser",
    "parse_slo",
    "save_bundle",
    "shipped_bundle",
    "trace_columns",
]
