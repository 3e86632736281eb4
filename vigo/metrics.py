"""Prometheus metrics for ``/metrics``, read from the fleet at scrape time.

Names follow Vigo's (``vigo_nodes_total``, ``vigo_checkins_total{status}``,
``vigo_checkin_age_seconds``, ``vigo_envoy_state_transitions_total``). Each
server has its own registry, so two servers in one test process never mix.
"""

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)


class FleetCollector:
    """A Prometheus collector over a ``Fleet``'s index and stats."""

    def __init__(self, fleet):
        self.fleet = fleet

    def describe(self):
        return []

    def collect(self):
        fleet = self.fleet
        stats = fleet.stats
        counts = fleet.counts()
        yield GaugeMetricFamily("vigo_nodes_total", "Envoys enrolled (active)", counts["active"])
        yield GaugeMetricFamily(
            "vigo_nodes_active_total", "Envoys heard within offline_after intervals",
            counts["online"],
        )
        yield GaugeMetricFamily(
            "vigo_envoy_connections", "Envoy connections held open", counts["connected"]
        )
        checkins = CounterMetricFamily(
            "vigo_checkins", "Check-ins by outcome", labels=["status"]
        )
        for status, n in sorted(stats.checkins.items()):
            checkins.add_metric([status], n)
        yield checkins
        transitions = CounterMetricFamily(
            "vigo_envoy_state_transitions", "Envoy state changes", labels=["transition"]
        )
        for name, n in sorted(stats.transitions.items()):
            transitions.add_metric([name], n)
        yield transitions
        yield CounterMetricFamily("vigo_enrollments", "Envoys enrolled", value=stats.enrollments)
        yield CounterMetricFamily("vigo_force_pushes", "Force-pushes asked", value=stats.pushes)
        yield CounterMetricFamily("vigo_attaches", "Envoy attaches", value=stats.attaches)
        age = HistogramMetricFamily(
            "vigo_checkin_age_seconds", "Time between an envoy's consecutive check-ins"
        )
        buckets = [
            ("+Inf" if bound == float("inf") else repr(bound), count)
            for bound, count in stats.age_histogram()
        ]
        age.add_metric([], buckets, stats.age_sum)
        yield age


def fleet_registry(fleet):
    """A fresh registry holding the fleet's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet))
    return registry
