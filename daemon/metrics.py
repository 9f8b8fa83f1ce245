"""Prometheus metrics, read from the admission core at scrape time.

A collector turns ``AdmissionCore.stats()`` into metric families when Prometheus
scrapes, so the request path pays nothing for metrics. Names follow the
client_python conventions (units in the name, ``_total`` for counters) and
labels stay low-cardinality (device alias, outcome).
"""

from __future__ import annotations

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
from mittd.predictor.policy import REJECT_WINDOW

OUTCOMES = {"admitted": "admit", "rejected": "ebusy", "fail_open": "fail_open",
            "beyond_model": "beyond_model"}


class CoreCollector(Collector):
    def __init__(self, stats: Callable[[], Mapping[str, DeviceStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        stats = self._stats()
        decisions = CounterMetricFamily(
            "mittd_decisions", "Admission decisions by device and outcome",
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
        for dev, s in stats.items():
            for key, outcome in OUTCOMES.items():
                decisions.add_metric([dev, outcome], getattr(s, key))
            overruns.add_metric([dev], s.overruns)
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
        yield from (decisions, overruns, probes, capped, share, untracked, violations,
                    completions, pending, expired, model, predict, io)


class ReloadCollector(Collector):
    """Bundle reloads of an embedded admission core (``mittd.daemon.embedded``), by
    device and result: a refused bundle keeps the old model, and shows here."""

    def __init__(self, counts: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Any]:
        reloads = CounterMetricFamily("mittd_reloads", "Bundle reloads by device and result",
                                      labels=["device", "result"])
        for dev, c in self._counts().items():
            reloads.add_metric([dev, "swapped"], c["reloaded"])
            reloads.add_metric([dev, "refused"], c["refused"])
        yield reloads


def _add_histogram(family: HistogramMetricFamily, device: str, snap: HistogramSnapshot,
                   scale: float) -> None:
    """A core histogram snapshot (native units) as cumulative buckets in seconds."""
    buckets, acc = [], 0
    for bound, count in zip(snap.bounds, snap.counts, strict=False):
        acc += count
        buckets.append((f"{bound * scale:.9g}", acc))
    buckets.append(("+Inf", acc + snap.counts[-1]))
    family.add_metric([device], buckets, snap.sum * scale)


def serve_metrics(stats: Callable[[], Mapping[str, DeviceStats]], host: str,
                  port: int) -> CollectorRegistry:
    """Start the /metrics HTTP endpoint on a daemon thread."""
    registry = CollectorRegistry()
    registry.register(CoreCollector(stats))
    start_http_server(port, addr=host, registry=registry)
    return registry
