"""Prometheus metrics, read from the admission core at scrape time.

A collector turns ``AdmissionCore.stats()`` into metric families when Prometheus
scrapes, so the request path pays nothing for metrics. Names follow the
client_python conventions (units in the name, ``_total`` for counters) and
labels stay low-cardinality (device alias, outcome).

Live model quality (``AdmissionCore.quality``, a few ms of numpy per device) is
computed at scrape time too, when the collector is given a ``quality`` callable.
A quality figure that is undefined (NaN: no labelled IO of a class yet, nothing
predicted slow, no validation score in the bundle) is left out of the scrape
rather than exported as NaN: a NaN sample poisons every ``avg()``/``sum()`` over
devices, whereas a missing one simply has no value, and
``mittd_live_labelled_ios`` (always exported) tells "no data yet" from "daemon
down".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from mittd.daemon.admission import DeviceStats
from mittd.daemon.histogram import HistogramSnapshot
from mittd.daemon.quality import LiveQuality
from mittd.predictor.policy import REJECT_WINDOW

__all__ = ["OUTCOMES", "QUALITY_GAUGES", "BadRequestCollector", "CoreCollector",
           "ReloadCollector", "serve_metrics"]

log = logging.getLogger(__name__)

#: ``mittd_decisions_total{outcome}``: the outcomes partition the decisions (they sum
#: to every IO decided). ``admit``: judged and let through (probes, reject-cap and
#: shadow admissions included); ``fail_open``: admitted unjudged because the
#: predictor failed or answered "slow" too late (``fail_open_on_overrun``);
#: ``beyond_model``: admitted with no prediction needed. The core
#: counts the last two as admitted too, so ``admit`` is what is left of it.
#: ``ebusy`` includes the IOs rejected unasked for a deadline below the model
#: (``mittd_below_model_total`` counts those).
OUTCOMES = ("admit", "ebusy", "fail_open", "beyond_model")


def outcome_counts(s: DeviceStats) -> tuple[int, int, int, int]:
    """The decisions of :data:`OUTCOMES`, in that order."""
    return (s.admitted - s.fail_open - s.beyond_model, s.rejected, s.fail_open,
            s.beyond_model)

#: Live-quality gauges: metric name, LiveQuality field, help text.
QUALITY_GAUGES = (
    ("mittd_live_roc_auc", "roc_auc",
     "ROC-AUC of P(slow) on the device's recent completed, predicted IOs (live quality "
     "window); absent until slow and fast IOs were both seen"),
    ("mittd_live_precision", "precision",
     "Share of the recent labelled IOs predicted slow that were slow; absent when none "
     "was predicted slow"),
    ("mittd_live_recall", "recall",
     "Share of the recent slow labelled IOs that were predicted slow; absent when none "
     "was slow"),
    ("mittd_would_reject_share", "would_reject_share",
     "Share of the recent predicted decisions the model called slow (what enforce mode "
     "rejects before the probe and cap rules)"),
    ("mittd_live_labelled_ios", "labelled",
     "Completed, predicted IOs in the live quality window (the sample behind the live "
     "figures)"),
    ("mittd_validation_roc_auc", "validation_roc_auc",
     "The model bundle's held-out ROC-AUC, the reference of mittd_live_roc_auc"),
)


class CoreCollector(Collector):
    """The admission core's counters, gauges and histograms, per device, at scrape time.

    ``stats``: ``AdmissionCore.stats``; ``quality``: ``AdmissionCore.quality``
    (``alias -> LiveQuality``), or None for no live-quality gauges (they cost a
    few ms of numpy per device per scrape).
    """

    def __init__(self, stats: Callable[[], Mapping[str, DeviceStats]], *,
                 quality: Callable[[str], LiveQuality] | None = None) -> None:
        self._stats = stats
        self._quality = quality

    def _live(self, device: str) -> LiveQuality | None:
        """The device's live quality, or None (logged) if computing it failed: one
        device's fault must not fail the whole scrape."""
        try:
            return self._quality(device) if self._quality is not None else None
        except Exception:
            log.exception("live quality of device %r failed; its quality gauges are "
                          "left out of this scrape", device)
            return None

    def collect(self) -> Iterator[Any]:
        stats = self._stats()
        decisions = CounterMetricFamily(
            "mittd_decisions", "Admission decisions by device and outcome (admit: judged "
            "and let through; ebusy; fail_open: admitted unjudged, the predictor failed or "
            "was late; beyond_model: admitted, no prediction needed); they sum to every decision",
            labels=["device", "outcome"])
        overruns = CounterMetricFamily(
            "mittd_prediction_overruns", "Predictions slower than the budget",
            labels=["device"])
        probes = CounterMetricFamily(
            "mittd_probes", "Predicted rejections admitted as probes (probe_after rule)",
            labels=["device"])
        capped = CounterMetricFamily(
            "mittd_reject_cap_admissions", "Predicted rejections admitted because the device "
            "already rejects its max_reject_share of decisions", labels=["device"])
        share = GaugeMetricFamily(
            "mittd_reject_share", "Share of the device's recent predicted decisions rejected "
            f"(weighted over ~{REJECT_WINDOW} decisions)", labels=["device"])
        below = CounterMetricFamily(
            "mittd_below_model", "IOs answered EBUSY without a prediction because their "
            "deadline was below every trained threshold (below_model = \"reject\"; part of "
            "outcome=\"ebusy\")", labels=["device"])
        cold = CounterMetricFamily(
            "mittd_cold_overruns", "Prediction overruns on the first IO after an idle gap "
            "(over 100 ms since the device's previous decision; part of "
            "mittd_prediction_overruns)", labels=["device"])
        warm = CounterMetricFamily(
            "mittd_warm_ticks", "Untimed dummy predictions: keep-warm ticks of an idle device "
            "(server.keep_warm_ms) and the warm-up pass before a decision after an idle "
            "gap; no decision", labels=["device"])
        untracked = CounterMetricFamily(
            "mittd_tracker_errors", "Admitted requests the pending tracker could not track "
            "(e.g. a request id beyond int64)", labels=["device"])
        violations = CounterMetricFamily(
            "mittd_slo_violations", "Admitted requests that completed after their deadline",
            labels=["device"])
        completions = CounterMetricFamily(
            "mittd_completions", "Completions received, known and unknown ids",
            labels=["device", "known"])
        pending = GaugeMetricFamily("mittd_pending_requests", "Pending requests tracked",
                                    labels=["device"])
        expired = CounterMetricFamily(
            "mittd_pending_expired", "Pending requests dropped by timeout or capacity",
            labels=["device", "why"])
        model = InfoMetricFamily("mittd_model", "Model serving each device",
                                 labels=["device"])
        predict = HistogramMetricFamily(
            "mittd_prediction_seconds", "Featurise + model time per decision",
            labels=["device"])
        io = HistogramMetricFamily(
            "mittd_device_io_latency_seconds",
            "Latency of admitted IOs as reported by completions (proxy reads included)",
            labels=["device"])
        shadow = GaugeMetricFamily(
            "mittd_shadow_mode", "1 when the device is in shadow mode (predict and record, "
            "never reject), 0 when it enforces", labels=["device"])
        shadow_rejects = CounterMetricFamily(
            "mittd_shadow_rejects", "IOs enforce mode would have rejected but shadow mode "
            "admitted (also counted as admitted)", labels=["device"])
        written = CounterMetricFamily(
            "mittd_records_written", "Decision records written to the device's record files",
            labels=["device"])
        dropped = CounterMetricFamily(
            "mittd_records_dropped", "Decision records dropped (recorder behind, ring full, "
            "or a write failed); recording never delays an IO", labels=["device"])
        drift = GaugeMetricFamily(
            "mittd_model_drift", "1 when the live ROC-AUC stays below the validation ROC-AUC "
            "by more than the drift margin: in each of the last drift_windows windows, on "
            "enough labelled IOs of each class",
            labels=["device"])
        live = [GaugeMetricFamily(name, text, labels=["device"])
                for name, _, text in QUALITY_GAUGES]
        for dev, s in stats.items():
            for outcome, n in zip(OUTCOMES, outcome_counts(s), strict=True):
                decisions.add_metric([dev, outcome], n)
            overruns.add_metric([dev], s.overruns)
            below.add_metric([dev], s.below_model)
            cold.add_metric([dev], s.cold_overruns)
            warm.add_metric([dev], s.warm_ticks)
            violations.add_metric([dev], s.slo_violations)
            probes.add_metric([dev], s.probes)
            untracked.add_metric([dev], s.tracker_errors)
            capped.add_metric([dev], s.capped)
            share.add_metric([dev], s.reject_share)
            completions.add_metric([dev, "true"], s.completions)
            completions.add_metric([dev, "false"], s.unknown_completions)
            pending.add_metric([dev], s.pending)
            expired.add_metric([dev, "timeout"], s.tracker.expired)
            expired.add_metric([dev, "capacity"], s.tracker.dropped)
            model.add_metric([dev], {"version": s.model_version, "sha256": s.model_sha256})
            _add_histogram(predict, dev, s.predict_ns, 1e-9)
            _add_histogram(io, dev, s.io_latency_us, 1e-6)
            shadow.add_metric([dev], 1.0 if s.mode == "shadow" else 0.0)
            shadow_rejects.add_metric([dev], s.shadow_rejects)
            written.add_metric([dev], s.records_written)
            dropped.add_metric([dev], s.records_dropped)
            q = self._live(dev)
            if q is None:
                continue
            drift.add_metric([dev], 1.0 if q.drift else 0.0)
            for family, (_, key, _) in zip(live, QUALITY_GAUGES, strict=True):
                value = float(getattr(q, key))
                if not math.isnan(value):  # undefined: left out (module docstring)
                    family.add_metric([dev], value)
        yield from (decisions, overruns, below, cold, warm, probes, capped, share, untracked,
                    violations, completions, pending, expired, model, predict, io, shadow,
                    shadow_rejects, written, dropped)
        if self._quality is not None:
            yield from (drift, *live)


class ReloadCollector(Collector):
    """Bundle reloads of the daemon (HUP) or an embedded admission core, by device and
    result: a refused bundle keeps the old model, and shows here."""

    def __init__(self, counts: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Any]:
        reloads = CounterMetricFamily("mittd_reloads", "Bundle reloads by device and result",
                                      labels=["device", "result"])
        for dev, c in self._counts().items():
            reloads.add_metric([dev, "swapped"], c["reloaded"])
            reloads.add_metric([dev, "refused"], c["refused"])
        yield reloads


class BadRequestCollector(Collector):
    """Request frames the daemon could not decode as their RPC's message (answered
    INVALID_ARGUMENT), by method: a client speaking the wrong protocol or version."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Any]:
        bad = CounterMetricFamily("mittd_bad_requests", "Request frames that were not a valid "
                                  "protobuf message of their RPC, by method",
                                  labels=["method"])
        for method, n in sorted(self._counts().items()):
            bad.add_metric([method], n)
        yield bad


def _add_histogram(family: HistogramMetricFamily, device: str, snap: HistogramSnapshot,
                   scale: float) -> None:
    """A core histogram snapshot (native units) as cumulative buckets in seconds."""
    buckets, acc = [], 0
    for bound, count in zip(snap.bounds, snap.counts, strict=False):
        acc += count
        buckets.append((f"{bound * scale:.9g}", acc))
    buckets.append(("+Inf", acc + snap.counts[-1]))
    family.add_metric([device], buckets, snap.sum * scale)


def serve_metrics(stats: Callable[[], Mapping[str, DeviceStats]], host: str, port: int, *,
                  quality: Callable[[str], LiveQuality] | None = None,
                  reloads: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
                  bad_requests: Callable[[], Mapping[str, int]] | None = None
                  ) -> CollectorRegistry:
    """Start the /metrics HTTP endpoint on a daemon thread (``quality``: see
    :class:`CoreCollector`; ``reloads``: :class:`ReloadCollector`'s counts;
    ``bad_requests``: :class:`BadRequestCollector`'s)."""
    registry = CollectorRegistry()
    registry.register(CoreCollector(stats, quality=quality))
    if reloads is not None:
        registry.register(ReloadCollector(reloads))
    if bad_requests is not None:
        registry.register(BadRequestCollector(bad_requests))
    start_http_server(port, addr=host, registry=registry)
    return registry
