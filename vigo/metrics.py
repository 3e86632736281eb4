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
        frames_refused = CounterMetricFamily(
            "vigo_envoy_frames_refused", "Envoy frames refused by the channel, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(stats.frames_refused.items()):
            frames_refused.add_metric([reason], n)
        yield frames_refused
        yield CounterMetricFamily("vigo_enrollments", "Envoys enrolled", value=stats.enrollments)
        yield CounterMetricFamily("vigo_force_pushes", "Force-pushes asked", value=stats.pushes)
        yield CounterMetricFamily("vigo_attaches", "Envoy attaches", value=stats.attaches)
        yield CounterMetricFamily(
            "vigo_checkin_reservations", "Check-ins answered after a sequence reservation "
            "was written (replay protection's slow path)", value=stats.reservations)
        age = HistogramMetricFamily(
            "vigo_checkin_age_seconds", "Time between an envoy's consecutive check-ins"
        )
        buckets = [
            ("+Inf" if bound == float("inf") else repr(bound), count)
            for bound, count in stats.age_histogram()
        ]
        age.add_metric([], buckets, stats.age_sum)
        yield age


class SpannerCollector:
    """Gossip, roster and peer-port figures of a spanner bolt, at scrape time:
    ``roster`` is its ``ILocalRoster``, ``gossiper`` its ``Gossiper``,
    ``puller`` its ``SnapshotPuller``, ``portal`` its ``PeerPortal``."""

    def __init__(self, roster, gossiper, puller, portal):
        self.roster = roster
        self.gossiper = gossiper
        self.puller = puller
        self.portal = portal

    def describe(self):
        return []

    def collect(self):
        states = GaugeMetricFamily("vigo_spanner_peers", "Other bolts by liveness",
                                   labels=["state"])
        counts = {"alive": 0, "suspect": 0, "down": 0, "unknown": 0}
        for peer in self.gossiper.peer_states().values():
            counts[peer.get("state", "unknown")] = counts.get(peer.get("state", "unknown"), 0) + 1
        for state, n in sorted(counts.items()):
            states.add_metric([state], n)
        yield states
        yield GaugeMetricFamily("vigo_spanner_roster_bolts", "Bolts in the roster",
                                len(list(self.roster.bolt_ids())))
        if self.roster.current is not None:
            rejected = CounterMetricFamily("vigo_spanner_roster_rejections",
                                           "Roster rows and records refused, by reason",
                                           labels=["reason"])
            for reason, n in sorted(self.roster.current.rejections.items()):
                rejected.add_metric([reason], n)
            yield rejected
        pulls = CounterMetricFamily("vigo_spanner_snapshot_pulls", "Snapshot pulls by outcome",
                                    labels=["outcome"])
        for outcome, n in sorted(self.puller.pulls.items()):
            pulls.add_metric([outcome], n)
        yield pulls
        refused = CounterMetricFamily("vigo_spanner_peer_refusals",
                                      "Peer-port logins and calls refused", labels=["reason"])
        for reason, n in sorted(self.portal.refusals.items()):
            refused.add_metric([reason], n)
        yield refused
        if self.roster.current is not None:
            stats = self.gossiper.stats()
            datagrams = CounterMetricFamily("vigo_spanner_gossip_datagrams",
                                            "Gossip datagrams", labels=["direction"])
            for direction in ("sent", "received", "accepted"):
                datagrams.add_metric([direction], stats[direction])
            yield datagrams
            yield CounterMetricFamily("vigo_spanner_gossip_sent_bytes", "Gossip bytes sent",
                                      value=stats["sent_bytes"])
            dropped = CounterMetricFamily("vigo_spanner_gossip_dropped",
                                          "Gossip datagrams dropped, by reason",
                                          labels=["reason"])
            for reason, n in sorted(stats["dropped"].items()):
                dropped.add_metric([reason], n)
            yield dropped


class PortsCollector:
    """Connections of each listening port (``ports``: name to ``PortService``,
    read at scrape time): open ones, and those refused or cut, by reason."""

    def __init__(self, ports):
        self.ports = ports

    def describe(self):
        return []

    def collect(self):
        open_ = GaugeMetricFamily("vigo_connections", "Connections open on a port, TLS "
                                  "handshakes included", labels=["port"])
        refused = CounterMetricFamily("vigo_connections_refused",
                                      "Connections refused (over a cap) or cut (past a "
                                      "deadline), by port and reason",
                                      labels=["port", "reason"])
        for name, port in sorted(self.ports.items()):
            if port.guard is None:
                continue
            stats = port.guard.stats()
            open_.add_metric([name], stats["open"])
            for reason, n in sorted(stats["refused"].items()):
                refused.add_metric([name, reason], n)
        yield open_
        yield refused


def metrics_registry(*collectors):
    """A fresh registry holding ``collectors`` (a ``FleetCollector``, and a
    bolt's ``SpannerCollector``)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry
