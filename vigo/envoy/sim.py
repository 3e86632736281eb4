"""The load simulator: many envoys in one process, each on its own connection.

``Simulator`` enrolls ``count`` envoys with one token (at most ``concurrency``
at a time), holds their connections, checks each in every ``interval`` with
jitter, obeys ForcePush and Redirect, and reconnects with jittered backoff
when the server goes away. It keeps counters and fixed-size latency
histograms, not per-event records, so 50,000 envoys cost little beyond their
connections. Connections to a loopback server are spread over the source
addresses 127.0.0.1..127.0.0.N, each with its own ephemeral ports.
"""

import ipaddress
import math
import random as _random
from array import array

import nacl.signing
from nacl.bindings import crypto_sign
from OpenSSL import SSL
from twisted.internet import defer, error, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vigo.config import parse_address

from .protocol import (
    NO_VERSION,
    BundleRejected,
    EnvoyProtocolError,
    IEnvoyListener,
    Redirected,
    Refused,
    jittered,
    next_seq,
    reconnect_delay,
)
from .protocol import connect as tls_connect

DEFAULT_HOSTNAME_TEMPLATE = "web{n}.dc1.example.com"
MAX_HOPS = 5  # redirects followed in a row before giving up
STOP_GRACE = 5.0  # seconds stop() waits for connections to close

# SimEnvoy.state
NEW, ENROLLING, ATTACHED, RECONNECTING, MOVING, FAILED, STOPPED = range(7)


class LatencyHistogram:
    """Latencies in 1 %-wide log buckets from 1 us up: fixed memory, exact counts.

    Percentiles are good to about half a per cent, which is all a benchmark needs.
    """

    __slots__ = ("count", "counts", "max", "total")
    SCALE = 1.0 / math.log(1.01)
    BUCKETS = int(math.log(1e11) * SCALE) + 2  # up to ~28 hours

    def __init__(self):
        self.counts = array("Q", bytes(8 * self.BUCKETS))
        self.count = 0
        self.total = self.max = 0.0

    def record(self, seconds):
        """Count one latency (seconds)."""
        micros = seconds * 1e6
        index = int(math.log(micros) * self.SCALE) if micros > 1.0 else 0
        self.counts[min(index, self.BUCKETS - 1)] += 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def percentile(self, p):
        """The ``p``-th percentile (0..100) in seconds, or None when empty."""
        if not self.count:
            return None
        rank, seen = max(1, math.ceil(p / 100.0 * self.count)), 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(math.exp((index + 0.5) / self.SCALE) / 1e6, self.max)
        return self.max

    def summary(self):
        """``{"count", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"}`` (None when empty)."""
        figures = {"count": self.count}
        for name, seconds in (("p50", self.percentile(50)), ("p90", self.percentile(90)),
                              ("p99", self.percentile(99)),
                              ("max", self.max if self.count else None),
                              ("mean", self.total / self.count if self.count else None)):
            figures[name + "_ms"] = None if seconds is None else round(seconds * 1000.0, 3)
        return figures


class Target:
    """A server to dial: address, pinned fingerprint, id and (once known) key."""

    __slots__ = ("address", "bind", "fingerprint", "key", "server_id")

    def __init__(self, address, fingerprint, server_id, key, bind):
        self.address, self.fingerprint, self.server_id = address, fingerprint, server_id
        self.key, self.bind = key, bind


@implementer(IEnvoyListener)
class SimEnvoy:
    """One simulated envoy: its key, id, server, sequence and applied version."""

    __slots__ = ("attempt", "envoy_id", "force", "index", "protocol", "public_key",
                 "secret", "seq", "sim", "state", "target", "timer", "version")

    def __init__(self, sim, index):
        self.sim, self.index = sim, index
        self.public_key = self.secret = self.envoy_id = None
        self.target = self.protocol = self.timer = None
        self.state, self.seq, self.version = NEW, 0, NO_VERSION
        self.attempt, self.force = 0, False

    def sign(self, message):
        """The envoy key's 64-byte signature of ``message``."""
        return crypto_sign(message, self.secret)[:64]

    def envoy_connected(self, protocol):
        self.sim.open_connections += 1

    def envoy_disconnected(self, protocol, reason):
        self.sim._lost(self, protocol)

    def envoy_force_push(self, protocol):
        self.sim._force_push(self, protocol)

    def envoy_redirected(self, protocol, redirect):
        if protocol is self.protocol:
            self.sim._move(self, redirect)

    def envoy_refused(self, protocol, refusal):
        _count(self.sim.refusals, refusal.code)

    def envoy_bundle(self, protocol, bundle):
        self.version = self.sim._versions.setdefault(bundle.version, bundle.version)


class Simulator:
    """``count`` envoys against one server (see the module docstring).

    ``token`` is an ``EnrollmentToken`` or its text; ``server_address``
    ("host:port", None for the token's) is dialled with the token's
    fingerprint pinned. ``connect(address, fingerprint, listener, bind_address)``
    returns a Deferred of a connected ``EnvoyClientProtocol`` (TLS by default;
    tests pass in-memory ones). ``progress`` is tqdm-like (``update``, ``close``).
    """

    log = Logger()

    def __init__(self, reactor, server_address, token, count, interval, *,
                 hostname_template=DEFAULT_HOSTNAME_TEMPLATE, concurrency=200,
                 source_addresses=4, jitter=0.1, request_timeout=30.0, max_backoff=10.0,
                 enroll_attempts=5, progress=None, random=None, connect=None):
        if isinstance(token, str):
            from vigo.tokens import EnrollmentToken

            token = EnrollmentToken.decode(token)
        self.reactor, self.token, self.count, self.interval = reactor, token, count, interval
        self.hostname_template = hostname_template
        self.concurrency = max(1, concurrency)
        self.jitter = jitter
        self.request_timeout = request_timeout
        self.max_backoff = max_backoff
        self.enroll_attempts = enroll_attempts
        self.progress = progress
        self.random = random or _random.Random()
        self._connect = connect or (lambda address, fingerprint, listener, bind: tls_connect(
            reactor, address, fingerprint, listener, bind))
        self._sources = [f"127.0.0.{i + 1}" for i in range(min(source_addresses, 254))]
        self._next_source = 0
        self._targets, self._versions, self._unattached = {}, {}, set()
        self.home = self._target(server_address or token.address, token.fingerprint,
                                 token.server_id)
        self.envoys = [SimEnvoy(self, n + 1) for n in range(count)]
        # Counters (public: a benchmark may read them while the simulator runs).
        self.enrolled = self.enroll_failed = self.attached = self.reconnecting = 0
        self.checkins = self.no_change = self.bundles = self.late = 0
        self.force_pushes = self.redirects = self.reconnects = self.open_connections = 0
        self.refusals, self.errors, self.reconnect_storms = {}, {}, []
        self.latency = LatencyHistogram()  # check-ins once every envoy enrolled
        self.enrolling_latency = LatencyHistogram()  # check-ins while others enroll
        self.enroll_latency = LatencyHistogram()  # register + attach, per envoy
        self._recorder = self.enrolling_latency
        self._next = self._active = self._finished = 0
        self._pumping = self._stopping = False
        self._started_at = self._enrolled_at = self._stopped_at = self._attached_at_stop = None
        self._storm_started, self._storm_size = None, 0
        self._enrolled_d, self._stop_waiters, self._grace = defer.Deferred(), [], None

    # -- control --------------------------------------------------------------

    def start(self):
        """Begin enrolling; a Deferred that fires when every envoy attached or failed."""
        self._started_at = self.reactor.seconds()
        self._pump()
        self._maybe_enrolled()
        return self._enrolled_d

    def stop(self):
        """Close every connection; a Deferred of ``summary()`` once they are closed
        (or after ``STOP_GRACE`` seconds)."""
        d = defer.Deferred()
        self._stop_waiters.append(d)
        if self._stopping:
            if not self._grace.active():
                self._stopped()
            return d
        self._stopping = True
        self._stopped_at = self.reactor.seconds()
        self._attached_at_stop = self.attached
        for envoy in self.envoys:
            if envoy.timer is not None and envoy.timer.active():
                envoy.timer.cancel()
            envoy.timer = None
            if envoy.protocol is not None:
                envoy.protocol.close()
        for protocol in list(self._unattached):
            protocol.close()
        self._maybe_enrolled()
        self._grace = self.reactor.callLater(STOP_GRACE, self._stopped)
        self._maybe_stopped()
        return d

    @defer.inlineCallbacks
    def run(self, duration):
        """Enroll, check in for ``duration`` seconds, stop; a Deferred of the summary."""
        yield self.start()
        if not self._stopping:
            yield task.deferLater(self.reactor, duration, lambda: None)
        return (yield self.stop())

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
            "reconnect_storms": self.reconnect_storms + ([{
                "envoys": self._storm_size, "seconds": None,  # still going
                "reattached": self._storm_size - self.reconnecting,
                "for_s": round(now - self._storm_started, 3)}] if self._storm_started else []),
        }

    # -- enrollment -----------------------------------------------------------

    def _pump(self):
        if self._pumping:
            return  # an enrollment finished at once; the loop below goes on
        self._pumping = True
        try:
            while (not self._stopping and self._active < self.concurrency
                   and self._next < self.count):
                envoy = self.envoys[self._next]
                self._next += 1
                self._active += 1
                self._enroll(envoy).addBoth(self._enroll_done, envoy)
        finally:
            self._pumping = False

    def _enroll_done(self, ok, envoy):
        self._active -= 1
        self._finished += 1
        if ok is True:
            self.enrolled += 1
        elif ok is not None:  # None: stopped before it was done
            if isinstance(ok, Failure):
                self.log.failure("enrolling envoy {n} failed", ok, n=envoy.index)
            self.enroll_failed += 1
            envoy.state = FAILED
        if self.progress is not None and not self._stopping:
            self.progress.update(1)
        self._pump()
        self._maybe_enrolled()

    def _maybe_enrolled(self):
        if not self._enrolled_d.called and (self._stopping or self._finished >= self.count):
            self._enrolled_at = self.reactor.seconds()
            self._recorder = self.latency
            if self.progress is not None:
                self.progress.close()
            self._enrolled_d.callback(None)

    @defer.inlineCallbacks
    def _enroll(self, envoy):
        began = self.reactor.seconds()
        envoy.state = ENROLLING
        key = nacl.signing.SigningKey.generate()
        envoy.public_key = bytes(key.verify_key)
        envoy.secret = bytes(key) + envoy.public_key  # libsodium's secret key layout
        hostname = self.hostname_template.format(n=envoy.index)
        target, hops, attempt = self.home, 0, 0
        while True:
            protocol = None
            try:
                if envoy.envoy_id is None:
                    protocol = yield self._open(envoy, target)
                    registered = yield self._timed(protocol.register(
                        hostname, envoy.public_key, str(self.token), self.token.token_id,
                        envoy.sign))
                    envoy.envoy_id = registered.envoy_id
                    if registered.fingerprint == target.fingerprint:
                        target.key = target.key or registered.public_key
                    else:  # enrolled, but another server holds the envoy: attach there
                        protocol.close()
                        protocol = None
                        target = self._target(registered.address, registered.fingerprint,
                                              registered.server_id, registered.public_key)
                    envoy.target = target
                protocol, attached = yield self._attach_once(envoy, protocol)
                break
            except Redirected as r:  # from Register (Attach follows its own)
                self.redirects += 1
                hops += 1
                if hops > MAX_HOPS:
                    _count(self.errors, "redirect_loop")
                    return False
                target = self._target(r.address, r.fingerprint, r.server_id)
            except Exception as e:  # noqa: BLE001 -- any failure of the attempt is counted
                if protocol is not None:
                    protocol.close()
                if self._stopping:
                    return None
                attempt += 1
                if not self._retryable(e) or attempt >= self.enroll_attempts:
                    return False
                yield self._sleep(envoy, self._backoff(attempt))
            if self._stopping:
                return None
        if self._stopping:
            protocol.close()
            return None
        self.enroll_latency.record(self.reactor.seconds() - began)
        self._attached(envoy, protocol, attached)
        return True

    @defer.inlineCallbacks
    def _attach_once(self, envoy, protocol=None):
        """Attach (following redirects); a Deferred of (protocol, Attached)."""
        for _ in range(MAX_HOPS + 1):
            target = envoy.target
            if protocol is None:
                protocol = yield self._open(envoy, target)
            try:
                attached = yield self._timed(
                    protocol.attach(envoy.envoy_id, target.server_id, envoy.sign, target.key))
            except Redirected as r:
                self.redirects += 1
                envoy.target = self._target(r.address, r.fingerprint, r.server_id)
                protocol = None
                continue
            except BaseException:
                protocol.close()
                raise
            target.key = target.key or protocol.server_key
            return protocol, attached
        raise Redirected(envoy.target.address, envoy.target.server_id,
                         envoy.target.fingerprint, f"more than {MAX_HOPS} redirects in a row")

    def _attached(self, envoy, protocol, attached):
        self._unattached.discard(protocol)
        envoy.protocol, envoy.state, envoy.attempt = protocol, ATTACHED, 0
        envoy.seq = max(envoy.seq, attached.last_seq)
        self.attached += 1
        envoy.timer = self.reactor.callLater(
            self.random.uniform(0.0, self.interval), self._tick, envoy)

    # -- check-ins (the hot path) ---------------------------------------------

    def _tick(self, envoy):
        protocol = envoy.protocol
        if protocol is None:
            envoy.timer = None
            return
        reactor = self.reactor
        envoy.timer = reactor.callLater(
            jittered(self.interval, self.random, self.jitter), self._tick, envoy)
        since = protocol.waiting_since
        if since is not None:  # the last check-in is still unanswered
            self.late += 1
            if reactor.seconds() - since > self.request_timeout:
                _count(self.errors, "timeout")
                protocol.abort()
            return
        envoy.seq = seq = next_seq(envoy.seq, reactor.seconds())
        protocol.checkin(seq, envoy.version).addCallbacks(
            self._checked_in, self._checkin_failed, callbackArgs=(envoy,), errbackArgs=(envoy,))

    def _checked_in(self, result, envoy):
        self.checkins += 1
        self._recorder.record(result[1])
        if result[0] == "no_change":
            self.no_change += 1
        else:
            self.bundles += 1
        if envoy.force:
            envoy.force = False
            self._check_in_now(envoy)

    def _checkin_failed(self, failure, envoy):
        e = failure.value
        if isinstance(e, Redirected):
            self._move(envoy, e)
        elif isinstance(e, Refused):
            _count(self.refusals, e.code)
        else:
            _count(self.errors, _error_name(e))

    def _check_in_now(self, envoy):
        if envoy.timer is not None and envoy.timer.active():
            envoy.timer.cancel()
        self._tick(envoy)

    def _force_push(self, envoy, protocol):
        if protocol is envoy.protocol:
            self.force_pushes += 1
            if protocol.busy:
                envoy.force = True  # right after the answer in flight
            else:
                self._check_in_now(envoy)

    # -- losing and regaining the server --------------------------------------

    def _lost(self, envoy, protocol):
        self.open_connections -= 1
        self._unattached.discard(protocol)
        if protocol is envoy.protocol:
            envoy.protocol = None
            if envoy.timer is not None and envoy.timer.active():
                envoy.timer.cancel()
            envoy.timer = None
            self.attached -= 1
            if self._stopping:
                envoy.state = STOPPED
            else:
                envoy.state = RECONNECTING
                self.reconnecting += 1
                if self._storm_started is None:
                    self._storm_started, self._storm_size = self.reactor.seconds(), 0
                self._storm_size += 1
                self._schedule_reconnect(envoy)
        self._maybe_stopped()

    def _move(self, envoy, redirect):
        """Follow a Redirect of an attached envoy: same id and key, another server."""
        if envoy.protocol is None or self._stopping:
            return
        self.redirects += 1
        protocol, envoy.protocol = envoy.protocol, None
        protocol.close()
        if envoy.timer is not None and envoy.timer.active():
            envoy.timer.cancel()
        self.attached -= 1
        envoy.state = MOVING
        envoy.target = self._target(redirect.address, redirect.fingerprint, redirect.server_id)
        envoy.timer = self.reactor.callLater(0, self._reconnect, envoy)

    def _schedule_reconnect(self, envoy):
        delay = self._backoff(envoy.attempt)
        envoy.attempt += 1
        envoy.timer = self.reactor.callLater(delay, self._reconnect, envoy)

    def _reconnect(self, envoy):
        envoy.timer = None
        if not self._stopping:
            self._attach_once(envoy).addCallbacks(
                self._reattached, self._reattach_failed,
                callbackArgs=(envoy,), errbackArgs=(envoy,))

    def _reattached(self, result, envoy):
        protocol, attached = result
        if self._stopping:
            protocol.close()
            return
        was = envoy.state
        self._attached(envoy, protocol, attached)
        if was == RECONNECTING:
            self.reconnects += 1
            self._reconnected()

    def _reattach_failed(self, failure, envoy):
        if self._stopping:
            return
        if self._retryable(failure.value):
            self._schedule_reconnect(envoy)
            return
        if envoy.state == RECONNECTING:
            self._reconnected()
        envoy.state = FAILED

    def _reconnected(self):
        self.reconnecting -= 1
        if self.reconnecting == 0 and self._storm_started is not None:
            seconds = round(self.reactor.seconds() - self._storm_started, 3)
            self.reconnect_storms.append({"envoys": self._storm_size, "seconds": seconds,
                                          "reattached": self._storm_size})
            self._storm_started = None

    # -- plumbing ---------------------------------------------------------------

    def _target(self, address, fingerprint, server_id, key=None):
        target = self._targets.get((address, fingerprint))
        if target is None:
            target = Target(address, fingerprint, server_id, key, self._bindable(address))
            self._targets[(address, fingerprint)] = target
        target.key = target.key or key
        return target

    def _bindable(self, address):
        try:
            host = ipaddress.ip_address(parse_address(address).host)
        except ValueError:
            return False
        return bool(self._sources) and host.version == 4 and host.is_loopback

    def _open(self, envoy, target):
        bind = None
        if target.bind:
            bind = self._sources[self._next_source % len(self._sources)]
            self._next_source += 1
        d = self._connect(target.address, target.fingerprint, envoy, bind)
        return d.addCallback(self._opened)

    def _opened(self, protocol):
        self._unattached.add(protocol)  # so that stop() can close it
        return protocol

    def _sleep(self, envoy, delay):
        # On the envoy's own timer, which stop() cancels: a stopped enrollment
        # never resumes, and is neither enrolled nor failed.
        d = defer.Deferred()
        envoy.timer = self.reactor.callLater(delay, d.callback, None)
        return d

    def _backoff(self, attempt):
        return reconnect_delay(attempt, self.random, cap=self.max_backoff)

    def _timed(self, d):
        return d.addTimeout(self.request_timeout, self.reactor)

    def _retryable(self, e):
        """Count a failed enroll/attach attempt; True when trying again may help."""
        if isinstance(e, Refused):
            _count(self.refusals, e.code)
            return e.retryable
        _count(self.errors, _error_name(e))
        return not isinstance(e, (Redirected, BundleRejected))

    def _maybe_stopped(self):
        if self._stopping and self.open_connections <= 0:
            self._stopped()

    def _stopped(self):
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        waiters, self._stop_waiters = self._stop_waiters, []
        for d in waiters:
            d.callback(self.summary())


def _count(counts, key):
    counts[key] = counts.get(key, 0) + 1


_ERROR_NAMES = (
    ((defer.TimeoutError, defer.CancelledError, error.TimeoutError), "timeout"),
    (error.ConnectionRefusedError, "connection_refused"),
    (SSL.Error, "tls"),
    (BundleRejected, "bad_bundle"),
    (EnvoyProtocolError, "protocol"),
    ((error.ConnectionLost, error.ConnectionDone), "connection_lost"),
)


def _error_name(e):
    for kinds, name in _ERROR_NAMES:
        if isinstance(e, kinds):
            return name
    if type(e) is error.ConnectError and e.osError is not None:
        return f"connect_error_{e.osError}"
    return type(e).__name__
