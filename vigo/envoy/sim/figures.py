"""What the simulator counts, and the summary it gives of a run.

``SimFigures`` holds a run's counters, latency histograms and reconnect storms;
``Simulator`` extends it and bumps the counters as things happen. The counters
are public: a benchmark may read them while the simulator runs. ``summary()``
makes them a JSON-ready dict and ``format_summary`` a few lines for people.
"""

from OpenSSL import SSL
from twisted.internet import defer, error

from vigo.envoy.answers import BundleRejected, EnvoyProtocolError
from vigo.envoy.sim.dialer import StandbyRedirect
from vigo.envoy.sim.latency import LatencyHistogram


class SimFigures:
    """The figures of ``count`` envoys checking in every ``interval`` s on ``reactor``."""

    def __init__(self, reactor, count, interval):
        self.reactor, self.count, self.interval = reactor, count, interval
        self.enrolled = self.enroll_failed = self.attached = self.reconnecting = 0
        self.checkins = self.no_change = self.bundles = self.late = 0
        self.force_pushes = self.redirects = self.reconnects = self.open_connections = 0
        self.failovers = 0  # moves to the next replica of a set after a failed attempt
        self.refusals, self.errors, self.reconnect_storms = {}, {}, []
        self.latency = LatencyHistogram()  # check-ins once every envoy enrolled
        self.enrolling_latency = LatencyHistogram()  # check-ins while others enroll
        self.enroll_latency = LatencyHistogram()  # register + attach, per envoy
        self._recorder = self.enrolling_latency
        self._started_at = self._enrolled_at = self._stopped_at = self._attached_at_stop = None
        self._storm_started, self._storm_size = None, 0

    def summary(self):
        """The figures so far, as a JSON-ready dict."""
        now = self._stopped_at if self._stopped_at is not None else self.reactor.seconds()
        start = self._started_at if self._started_at is not None else now
        elapsed, enrolling = now - start, (self._enrolled_at or now) - start
        steady = now - self._enrolled_at if self._enrolled_at is not None else 0.0
        if self.latency.count and steady > 0:  # figures from after enrollment
            rate, figures = self.latency.count / steady, self.latency.summary()
        else:
            rate = self.checkins / elapsed if elapsed > 0 else 0.0
            figures = self.enrolling_latency.summary()
        attached = self.attached if self._attached_at_stop is None else self._attached_at_stop
        return {
            "count": self.count, "enrolled": self.enrolled, "enroll_failed": self.enroll_failed,
            "attached": attached, "interval_s": self.interval, "elapsed_s": round(elapsed, 3),
            "enroll_s": round(enrolling, 3),
            "enroll_per_s": round(self.enrolled / enrolling, 1) if enrolling > 0 else None,
            "steady_s": round(steady, 3), "checkins": self.checkins,
            "checkins_per_s": round(rate, 1),
            "expected_per_s": round(self.enrolled / self.interval, 1),
            "no_change": self.no_change, "bundles": self.bundles,
            "p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"], "latency_ms": figures,
            "enrolling_latency_ms": self.enrolling_latency.summary(),
            "enroll_latency_ms": self.enroll_latency.summary(),
            "refusals": dict(self.refusals), "errors": dict(self.errors), "late": self.late,
            "force_pushes": self.force_pushes, "redirects": self.redirects,
            "reconnects": self.reconnects, "reconnecting": self.reconnecting,
            "failovers": self.failovers,
            "reconnect_storms": self.reconnect_storms + ([{
                "envoys": self._storm_size, "seconds": None,  # still going
                "reattached": self._storm_size - self.reconnecting,
                "for_s": round(now - self._storm_started, 3)}] if self._storm_started else []),
        }

    # -- the phases of a run ----------------------------------------------------

    def _mark_started(self):
        self._started_at = self.reactor.seconds()

    def _mark_enrolled(self):
        """Every envoy enrolled or failed (or the run stops): check-ins are steady now."""
        self._enrolled_at = self.reactor.seconds()
        self._recorder = self.latency

    def _mark_stopped(self):
        self._stopped_at = self.reactor.seconds()
        self._attached_at_stop = self.attached

    # -- events -----------------------------------------------------------------

    def _count_checkin(self, result):
        """One answered check-in: ``(kind, latency)`` as ``EnvoyClientProtocol.checkin`` gives."""
        self.checkins += 1
        self._recorder.record(result[1])
        if result[0] == "no_change":
            self.no_change += 1
        else:
            self.bundles += 1

    def _reconnect_begins(self):
        """An attached envoy lost its server; the first one starts a reconnect storm."""
        self.reconnecting += 1
        if self._storm_started is None:
            self._storm_started, self._storm_size = self.reactor.seconds(), 0
        self._storm_size += 1

    def _reconnected(self):
        """A reconnecting envoy is back (or gave up); the last one ends the storm."""
        self.reconnecting -= 1
        if self.reconnecting == 0 and self._storm_started is not None:
            seconds = round(self.reactor.seconds() - self._storm_started, 3)
            self.reconnect_storms.append({"envoys": self._storm_size, "seconds": seconds,
                                          "reattached": self._storm_size})
            self._storm_started = None


def tally(counts, key):
    """Count one ``key`` in the dict ``counts``."""
    counts[key] = counts.get(key, 0) + 1


_ERROR_NAMES = (
    ((defer.TimeoutError, defer.CancelledError, error.TimeoutError), "timeout"),
    (error.ConnectionRefusedError, "connection_refused"),
    (SSL.Error, "tls"),
    (BundleRejected, "bad_bundle"),
    (EnvoyProtocolError, "protocol"),
    ((error.ConnectionLost, error.ConnectionDone), "connection_lost"),
    (StandbyRedirect, "standby_redirect"),
)


def error_name(e):
    """The key an exception is counted under in ``errors``."""
    for kinds, name in _ERROR_NAMES:
        if isinstance(e, kinds):
            return name
    if type(e) is error.ConnectError and e.osError is not None:
        return f"connect_error_{e.osError}"
    return type(e).__name__


def format_summary(summary):
    """The simulator's summary as a few human-readable lines."""
    s = summary
    storms = ", ".join(
        f"{x['envoys']} envoys in {x['seconds']} s" if x["seconds"] is not None
        else f"{x['reattached']}/{x['envoys']} back after {x['for_s']} s, unfinished"
        for x in s["reconnect_storms"])

    def counts(d):
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

    return (
        f"enrolled     {s['enrolled']}/{s['count']} ({s['enroll_failed']} failed) in "
        f"{s['enroll_s']} s ({s['enroll_per_s']}/s)\n"
        f"check-ins    {s['checkins']} ({s['checkins_per_s']}/s over {s['steady_s']} s; "
        f"expected {s['expected_per_s']}/s; {s['bundles']} bundles)\n"
        f"latency      p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
        f"max {s['latency_ms']['max_ms']} ms\n"
        f"refusals     {counts(s['refusals'])}\n"
        f"errors       {counts(s['errors'])}\n"
        f"reconnects   {s['reconnects']} (storms: {storms or 'none'}); "
        f"redirects {s['redirects']}; failovers {s['failovers']}; "
        f"force pushes {s['force_pushes']}; late {s['late']}\n"
    )
