"""Prometheus metrics for ``/metrics``: the collectors, read at scrape time,
and the durations the hot paths keep for them.

Every metric is listed in docs/metrics.md (name, type, labels, meaning), which
also says why the histograms have the buckets they have. Names follow
Prometheus's conventions (``promtool check metrics`` passes; a test runs it):
base units in the name, ``_total`` on counters only, and one word for one
thing ("envoys", never "nodes").

Each server has its own registry (``metrics_registry``), so two servers in
one test process never mix; it holds the collectors of the server's parts,
``vigo_build_info``, and the client library's process, GC and platform
collectors (``process_*``, ``python_gc_*``, ``python_info``).

Durations are kept as plain numbers where they happen (``Durations``: a
bisect and two additions, no lock, everything runs on the reactor thread)
and turned into histograms only when scraped, like the fleet's counters
(``vigo.fleet.stats``).
"""

from bisect import bisect_left

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.utils import floatToGoString

from vigo import __version__

# -- histogram buckets (seconds), from the figures of docs/benchmarks.md ----------------

#: ``vigo_checkin_duration_seconds``: ``Fleet.checkin`` answers "no change" in
#: 56-82 us at the median and ~90-110 us at p99 in process here (one PyNaCl
#: verify, ~55-75 us, is its floor) and a bundle in ~86 us (one signature more),
#: so the first buckets split that range; the rare slow path waits for a
#: reservation's commit (4 ms alone, 24 ms for 1,000 at once); past 100 ms the
#: reactor itself stalled.
CHECKIN_BUCKETS = (0.00005, 0.000075, 0.0001, 0.00015, 0.00025, 0.0005, 0.001, 0.0025,
                   0.005, 0.01, 0.025, 0.05, 0.1)
#: ``vigo_enrollment_duration_seconds``: a refusal before any write takes a
#: signature check (~0.1 ms); an enrollment is one group commit (0.6 ms in
#: process on a fast disk, 1-4 ms with a real fsync; end to end p50 3.3 ms,
#: p99 7-15 ms with the dial in bench/ha.py), ``peers.sync: 1`` adds a
#: standby's round trip; a routed one (two peer calls and the owner's commit)
#: took 3.4 ms on loopback; the waits it can hit are seconds
#: (``peers.sync_timeout``, peer call timeouts).
ENROLLMENT_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                      0.5, 1.0, 2.5, 5.0, 10.0)
#: ``vigo_spanner_peer_call_duration_seconds``: a ``ping`` on loopback is
#: p50 0.30 ms, p99 0.47 ms (bench/peer_rtt.py), a LAN adds a fraction of a
#: millisecond; actions that write take a commit or more (redeem-token 1.2 ms,
#: route-enrollment 3.2 ms on loopback); the target is p99 <= 20 ms; a call
#: gives up after 10 s.
PEER_CALL_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                     0.5, 1.0, 2.5, 5.0, 10.0)
#: ``vigo_spanner_snapshot_pull_duration_seconds``: an unchanged roster (a 304)
#: costs one HTTPS round trip, ~1 ms on loopback over a kept-alive connection
#: (9 ms with a new one); a federation's roster of a few dozen bolts is pulled
#: and merged in tens of milliseconds; a 10,000-row snapshot takes ~1-1.5 s;
#: the exchange gives up after 10 s.
SNAPSHOT_PULL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                         1.0, 2.5, 5.0, 10.0)

#: ``vigo_enrollment_duration_seconds{outcome}``: what became of a Register.
ENROLLMENT_OUTCOMES = ("enrolled", "routed", "redirected", "refused", "failed")
#: ``vigo_spanner_snapshot_pull_duration_seconds{outcome}``.
PULL_OUTCOMES = ("ok", "same", "rejected", "oversize", "timeout", "failed")


class Durations:
    """A histogram of durations (seconds) with upper ``bounds``, as plain
    numbers: ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, seconds):
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self):
        return sum(self.counts)

    def cumulative(self):
        """``[(le, observations <= le), ...]`` ending with ``"+Inf"``, as
        ``HistogramMetricFamily`` takes them."""
        out = []
        total = 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts, strict=True):
            total += n
            out.append((floatToGoString(bound), total))
        return out


class DurationsBy:
    """``Durations`` by the value of one label (an outcome, an action name).

    The ``known`` values are there from the start (a series that exists before
    its first observation); others are added as they come, at most ``limit``
    in all, and any beyond that is counted as ``"other"``: a label never grows
    without bound, whatever names callers use.
    """

    def __init__(self, bounds, known=(), limit=64):
        self.bounds = tuple(bounds)
        self.limit = limit
        self.by = {value: Durations(self.bounds) for value in known}

    def observe(self, value, seconds):
        durations = self.by.get(value)
        if durations is None:
            if len(self.by) >= self.limit:
                value = "other"
            durations = self.by.setdefault(value, Durations(self.bounds))
        durations.observe(seconds)

    def __getitem__(self, value):
        return self.by[value]

    def counts(self):
        """``{value: observations}``, for tests and tools."""
        return {value: durations.count for value, durations in self.by.items()}


def histogram(name, documentation, durations, label=None):
    """The ``HistogramMetricFamily`` of a ``Durations`` (or, with ``label``, of
    a ``DurationsBy``: one histogram per value)."""
    if label is None:
        family = HistogramMetricFamily(name, documentation)
        family.add_metric([], durations.cumulative(), durations.sum)
        return family
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value, each in sorted(durations.by.items()):
        family.add_metric([value], each.cumulative(), each.sum)
    return family


def _counter(name, documentation, label, counts):
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


#: ``vigo_envoys{state}``: an envoy record's states (``vigo.fleet.index``).
ENVOY_STATES = ("active", "moved", "revoked")


class FleetCollector:
    """The envoys a server holds, its check-ins and enrollments: ``fleet`` is
    its ``Fleet``, ``enrollment`` its ``Enrollment`` (None: no enrollment
    histogram)."""

    def __init__(self, fleet, enrollment=None):
        self.fleet = fleet
        self.enrollment = enrollment

    def describe(self):
        return []

    def collect(self):
        fleet = self.fleet
        stats = fleet.stats
        states = dict.fromkeys(ENVOY_STATES, 0)
        online = attached = 0
        for record in fleet.index:
            state = record.state
            states[state] = states.get(state, 0) + 1
            if state == "active":
                online += record.online
                attached += record.connection is not None
        envoys = GaugeMetricFamily("vigo_envoys", "Envoys this server holds, by state",
                                   labels=["state"])
        for state, n in sorted(states.items()):
            envoys.add_metric([state], n)
        yield envoys
        yield GaugeMetricFamily("vigo_envoys_online", "Active envoys heard within "
                                "offline_after check-in intervals", online)
        yield GaugeMetricFamily("vigo_envoys_attached", "Active envoys with a connection "
                                "attached now", attached)
        yield _counter("vigo_checkins_total", "Check-ins by outcome", "status", stats.checkins)
        yield histogram("vigo_checkin_duration_seconds", "Time the server took to answer a "
                        "check-in, from its frame to its answer", fleet.checkin_durations)
        age = HistogramMetricFamily(
            "vigo_checkin_age_seconds", "Time between an envoy's consecutive check-ins")
        age.add_metric([], [(floatToGoString(bound), count)
                            for bound, count in stats.age_histogram()], stats.age_sum)
        yield age
        yield CounterMetricFamily(
            "vigo_checkin_reservations_total", "Check-ins answered after a sequence "
            "reservation was written (replay protection's slow path)", value=stats.reservations)
        yield _counter("vigo_envoy_state_transitions_total", "Envoy state changes",
                       "transition", stats.transitions)
        yield _counter("vigo_envoy_frames_refused_total", "Envoy frames refused by the "
                       "channel, by reason", "reason", stats.frames_refused)
        yield CounterMetricFamily("vigo_enrollments_total", "Envoys taken into this server's "
                                  "fleet: enrolled here, or handed over by another bolt",
                                  value=stats.enrollments)
        if self.enrollment is not None:
            yield histogram("vigo_enrollment_duration_seconds", "Time the server took to "
                            "answer an envoy's Register, by outcome",
                            self.enrollment.durations, "outcome")
        yield CounterMetricFamily("vigo_force_pushes_total", "Force-pushes asked",
                                  value=stats.pushes)
        yield CounterMetricFamily("vigo_attaches_total", "Envoy attaches (connects and "
                                  "reconnects)", value=stats.attaches)


class SpannerCollector:
    """Gossip, roster and peer-port figures of a spanner bolt, at scrape time:
    ``roster`` is its ``ILocalRoster``, ``gossiper`` its ``Gossiper``,
    ``puller`` its ``SnapshotPuller``, ``portal`` its ``PeerPortal``,
    ``peer_calls`` the ``DurationsBy`` its peer clients time their calls in."""

    def __init__(self, roster, gossiper, puller, portal, peer_calls=None):
        self.roster = roster
        self.gossiper = gossiper
        self.puller = puller
        self.portal = portal
        self.peer_calls = peer_calls

    def describe(self):
        return []

    def collect(self):
        states = GaugeMetricFamily("vigo_spanner_peers", "Other bolts by liveness",
                                   labels=["state"])
        counts = {"alive": 0, "suspect": 0, "down": 0, "unknown": 0}
        for peer in self.gossiper.peer_states().values():
            state = peer.get("state", "unknown")
            counts[state] = counts.get(state, 0) + 1
        for state, n in sorted(counts.items()):
            states.add_metric([state], n)
        yield states
        yield GaugeMetricFamily("vigo_spanner_roster_bolts", "Bolts in the roster",
                                len(list(self.roster.bolt_ids())))
        if self.roster.current is not None:
            yield _counter("vigo_spanner_roster_rejections_total", "Roster rows and records "
                           "refused, by reason", "reason", self.roster.current.rejections)
        yield histogram("vigo_spanner_snapshot_pull_duration_seconds", "Time a snapshot pull "
                        "took, from asking to merged, by outcome", self.puller.durations,
                        "outcome")
        if self.peer_calls is not None:
            yield histogram("vigo_spanner_peer_call_duration_seconds", "Round trip of a peer "
                            "action called at another bolt, by action", self.peer_calls,
                            "action")
        yield _counter("vigo_spanner_peer_refusals_total", "Peer-port logins and calls "
                       "refused", "reason", self.portal.refusals)
        if self.roster.current is not None:
            stats = self.gossiper.stats()
            yield _counter("vigo_spanner_gossip_datagrams_total", "Gossip datagrams sent and "
                           "received", "direction",
                           {"sent": stats["sent"], "received": stats["received"]})
            yield CounterMetricFamily("vigo_spanner_gossip_sent_bytes_total",
                                      "Gossip bytes sent", value=stats["sent_bytes"])
            yield _counter("vigo_spanner_gossip_dropped_total", "Gossip datagrams received "
                           "and dropped, by reason", "reason", stats["dropped"])


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


class ReplicationCollector:
    """High availability: this node's role, epoch, applied LSN and lag
    (``host``: its ``vigo.server.host.ServerHost``)."""

    ROLES = ("primary", "standby", "fenced")

    def __init__(self, host):
        self.host = host

    def describe(self):
        return []

    def collect(self):
        host = self.host
        replication, follower = host.replication, host.follower
        now_role = host.node.role
        if replication is not None and replication.fenced:
            now_role = "fenced"
        role = GaugeMetricFamily("vigo_replication_role", "This node's role (1 for the one "
                                 "it has)", labels=["role"])
        for name in self.ROLES:
            role.add_metric([name], 1.0 if now_role == name else 0.0)
        yield role
        yield GaugeMetricFamily("vigo_replication_epoch", "The epoch this node is at",
                                value=host.node.epoch)
        lsn = GaugeMetricFamily("vigo_replication_applied_lsn", "The last change-log entry "
                                "this node holds")
        lag = GaugeMetricFamily("vigo_replication_lag_seconds", "How long the oldest entry a "
                                "standby lacks has waited", labels=["node"])
        if replication is not None:
            lsn.add_metric([], replication.head())
            now = host.reactor.seconds()
            for node_id, stream in replication.streams.items():
                lag.add_metric([node_id], stream.lag(now))
        elif follower is not None:
            lsn.add_metric([], follower.lsn)
            lag.add_metric([follower.node_id], follower.lag())
        yield lsn
        yield lag


class BuildCollector:
    """``vigo_build_info{version, mode}``: always 1, the labels say which
    server this is."""

    def __init__(self, mode):
        self.mode = mode

    def describe(self):
        return []

    def collect(self):
        yield InfoMetricFamily("vigo_build", "The vigosrv version and mode (standalone or "
                               "spanner) of this server",
                               value={"version": __version__, "mode": self.mode})


def metrics_registry(*collectors, mode=None):
    """A fresh registry holding ``collectors`` (a ``FleetCollector``, a bolt's
    ``SpannerCollector``, ...), the process, GC and platform collectors, and,
    given the server's ``mode`` (``spanner.mode``), ``vigo_build_info``."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    if mode is not None:
        registry.register(BuildCollector(mode))
    for collector in collectors:
        registry.register(collector)
    return registry
