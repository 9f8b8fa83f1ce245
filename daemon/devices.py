"""Can this device be served with this bundle under this config? One answer.

Every rule that decides it lives here, and every path that builds a device's
state goes through it: ``mittd serve`` at start and on HUP, ``mittd check``
(which therefore runs exactly what serving runs, as gunicorn's
``--check-config`` does), the offline replayer and embedders of the admission
core. The rules, in order:

1. the bundle loads (checksum, format version, a valid graph) — ``load_bundle``;
2. its featuriser config builds (known name, parameters in range) and, for
   featurisers with fitted bounds (Heimdall's min-max), is fitted;
3. the featuriser gives as many inputs as the model takes;
4. the tracker it needs (pending capacity, timeout) fits the config's
   ``max_pending_per_device`` / ``pending_timeout_ms``: the featuriser fixes
   them because they change the features the model was trained on, so the
   config can only refuse a bundle, never shrink its tracker;
5. the latency thresholds are valid (finite, > 0, ascending), one per output
   head (a deadline picks its head by them; the first is the default deadline
   unless ``slo_us`` says otherwise);
6. the decision policy (``mittd.predictor.policy``) is valid; the decision
   thresholds (the config's, else the bundle's — "never" when the policy is
   ``hedge``) are probabilities in [0, 1], one per head; the reject cap (the
   config's ``max_reject_share``, else the policy's) is in (0, 1]; the default
   deadline is not below every trained threshold while ``below_model`` is
   ``"reject"`` (every IO without a deadline would be EBUSY); a bundle whose
   policy hedges (and no ``decision_threshold`` overrides it) never answers
   EBUSY, so its deadlines below the model are judged (never rejected) too;
7. the engine builds, and its input matches the featuriser.

Any failure is one :class:`DeviceError` naming the device (or bundle) and the
problem, whatever raised underneath: a reload never dies of a bundle's content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mittd.daemon import fastpath as fp
from mittd.daemon.admission import DeviceState
from mittd.daemon.config import BELOW_MODEL, Config, ConfigError, DeviceConfig, ServerConfig
from mittd.predictor.bundle import Bundle, BundleError, load_bundle
from mittd.predictor.engine import Engine
from mittd.predictor.engines import make_engine
from mittd.predictor.features import Featuriser, make_featuriser
from mittd.predictor.policy import DecisionPolicy
from mittd.predictor.thresholds import check_thresholds

__all__ = ["DeviceError", "Limits", "Servable", "build_state", "load_device", "load_devices",
           "read_bundle", "servable"]


class DeviceError(ConfigError):
    """A device cannot be served with its bundle; one line naming where and why."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class Limits:
    """What the config allows a bundle's tracker; None: no limit (offline replay)."""

    max_pending: int | None = None
    pending_timeout_us: int | None = None

    @classmethod
    def of(cls, server: ServerConfig) -> Limits:
        return cls(server.max_pending_per_device, server.pending_timeout_ms * 1000)


@dataclass(frozen=True)
class Servable:
    """A bundle that passed rules 2-6, with the values a device state is built from."""

    featuriser: Featuriser
    thresholds_us: tuple[float, ...]
    p_thresholds: tuple[float, ...]
    default_deadline_us: float
    policy: DecisionPolicy
    below_model: str = DeviceConfig.below_model


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def servable(bundle: Bundle, *, slo_us: float | None = None,
             decision_threshold: float | list[float] | None = None,
             max_reject_share: float | None = None,
             limits: Limits = Limits(), where: str = "",
             below_model: str = DeviceConfig.below_model) -> Servable:
    """Rules 2-6 for ``bundle`` (see the module docstring); :class:`DeviceError` if not.

    ``slo_us`` overrides the default deadline (else the first trained threshold);
    ``decision_threshold`` the bundle's P(slow) cutoffs (one value for every head,
    or one per head; given, it rejects even where the bundle's policy says
    ``hedge``); ``max_reject_share`` the policy's reject cap.
    """
    def fail(problem: str) -> DeviceError:
        return DeviceError(where, problem)

    try:
        feat = make_featuriser(bundle.featuriser)
    except Exception as e:  # any content of a manifest: refused, never raised through
        raise fail(f"bad featuriser config: {_one_line(e)}") from None
    if not feat.fitted:
        raise fail(f"the {feat.name} featuriser has no fitted bounds (min/max)")
    graph = bundle.graph
    if feat.dim != graph.input_dim:
        raise fail(f"model/featuriser mismatch: the {feat.name} featuriser gives {feat.dim} "
                   f"inputs, the model takes {graph.input_dim}")
    if limits.max_pending is not None and feat.capacity > limits.max_pending:
        raise fail(f"featuriser tracks {feat.capacity} pending requests, more than "
                   f"max_pending_per_device = {limits.max_pending}")
    if limits.pending_timeout_us is not None and feat.timeout_us > limits.pending_timeout_us:
        raise fail(f"featuriser keeps pending requests {feat.timeout_us} µs, longer than "
                   f"pending_timeout_ms = {limits.pending_timeout_us // 1000}")
    heads = graph.output_dim if graph.head == "sigmoid" else 1
    try:
        raw = bundle.latency_thresholds_us()
    except Exception as e:
        raise fail(f"bad latency thresholds: {_one_line(e)}") from None
    if not raw:  # a deadline picks a head by these: without one nothing can be asked
        raise fail("the bundle carries no latency threshold (thresholds.latency_us)")
    try:
        thresholds = check_thresholds(raw)
    except ValueError as e:
        raise fail(f"bad latency thresholds: {e}") from None
    if len(thresholds) != heads:
        raise fail(f"{len(thresholds)} latency thresholds for {heads} output head(s)")
    try:
        policy = DecisionPolicy.from_dict(bundle.policy)
    except ValueError as e:
        raise fail(f"bad decision policy: {e}") from None
    if max_reject_share is not None:
        if not 0.0 < max_reject_share <= 1.0:
            raise fail(f"max_reject_share must be in (0, 1], got {max_reject_share!r}")
        policy = replace(policy, max_reject_share=float(max_reject_share))
    if decision_threshold is None and not policy.rejects:
        probs = [1.0] * heads  # hedging recommended: never EBUSY
        source = "policy"
    elif decision_threshold is None:
        try:
            probs = [float(p) for p in bundle.decision_thresholds()]
        except Exception as e:
            raise fail(f"bad decision thresholds: {_one_line(e)}") from None
        source = "bundle decision threshold(s)"
    elif isinstance(decision_threshold, int | float):
        probs = [float(decision_threshold)] * heads
        source = "decision_threshold"
    else:
        probs = [float(p) for p in decision_threshold]
        source = "decision_threshold"
    if len(probs) != heads:
        raise fail(f"{len(probs)} decision thresholds for {heads} output head(s)")
    bad = [p for p in probs if not 0.0 <= p <= 1.0]  # NaN is bad too
    if bad:
        raise fail(f"{source} {bad} not probabilities in [0, 1]")
    deadline = thresholds[0] if slo_us is None else float(slo_us)
    if not (deadline > 0.0 and math.isfinite(deadline)):
        raise fail(f"default deadline must be > 0 µs, got {slo_us!r}")
    if below_model not in BELOW_MODEL:
        raise fail(f"below_model must be one of {', '.join(BELOW_MODEL)}, got {below_model!r}")
    if source == "policy":  # a hedging bundle never answers EBUSY, below the model neither
        below_model = BELOW_MODEL[1]
    if deadline < fp.below_bound_us(thresholds[0], below_model == BELOW_MODEL[0]):
        raise fail(f"slo_us {deadline:g} is below the lowest trained threshold "
                   f"({thresholds[0]:g} µs): with below_model = \"reject\" every IO without "
                   "a deadline would be EBUSY; raise slo_us or set below_model = \"judge\"")
    return Servable(feat, thresholds, tuple(probs), deadline, policy, below_model)


def build_state(bundle: Bundle, engine: str | Engine = "auto", *,
                slo_us: float | None = None,
                decision_threshold: float | list[float] | None = None,
                max_reject_share: float | None = None,
                limits: Limits = Limits(), where: str = "", mode: str = "enforce",
                drift_margin: float = DeviceConfig.drift_margin,
                quality_window: int = ServerConfig.quality_window,
                drift_windows: int = ServerConfig.drift_windows,
                below_model: str = DeviceConfig.below_model,
                **engine_opts: Any) -> DeviceState:
    """Every rule, then the device's state: ``engine`` is a name (built here; ``auto``
    times the formats on this machine: load time) or an engine to share."""
    s = servable(bundle, slo_us=slo_us, decision_threshold=decision_threshold,
                 max_reject_share=max_reject_share, limits=limits, where=where,
                 below_model=below_model)
    if isinstance(engine, Engine):
        eng = engine
    else:
        try:
            eng = make_engine(engine, bundle.graph, bundle.params, **engine_opts)
        except Exception as e:  # any engine failure is this device's problem
            raise DeviceError(where, f"engine {engine} failed on {bundle.version_id}: "
                                     f"{_one_line(e)}") from None
    if eng.input.shape != (s.featuriser.dim,):
        raise DeviceError(where, f"the featuriser gives {s.featuriser.dim} inputs, the engine "
                                 f"takes {eng.input.shape}")
    return DeviceState(bundle, eng, s.featuriser, s.thresholds_us, s.p_thresholds,
                       s.default_deadline_us, s.policy, mode=mode, drift_margin=drift_margin,
                       quality_window=quality_window, drift_windows=drift_windows,
                       below_model=s.below_model)


def read_bundle(path: str | Path, where: str = "") -> Bundle:
    """Rule 1: ``load_bundle``, with any failure (whatever the file holds) a DeviceError."""
    try:
        return load_bundle(path)
    except BundleError as e:
        raise DeviceError(where, str(e)) from None
    except Exception as e:
        raise DeviceError(where, f"{path}: unreadable bundle ({type(e).__name__}: "
                                 f"{_one_line(e)})") from None


def load_device(dev: DeviceConfig, server: ServerConfig) -> DeviceState:
    """One configured device's state, by every rule (serve, HUP, check)."""
    where = f"devices.{dev.alias}"
    bundle = read_bundle(dev.model, where)
    return build_state(bundle, dev.engine, slo_us=dev.slo_us,
                       decision_threshold=dev.decision_threshold,
                       max_reject_share=dev.max_reject_share, limits=Limits.of(server),
                       where=f"{where}: {dev.model}", mode=dev.mode,
                       drift_margin=dev.drift_margin, quality_window=server.quality_window,
                       drift_windows=server.drift_windows, below_model=dev.below_model)


def load_devices(config: Config) -> dict[str, DeviceState]:
    """Every configured device's state, in config order; the first failure raises."""
    return {alias: load_device(dev, config.server) for alias, dev in config.devices.items()}
