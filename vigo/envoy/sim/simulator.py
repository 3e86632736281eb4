"""The load simulator: many envoys in one process, each on its own connection.

``Simulator`` enrolls ``count`` envoys with one token (at most ``concurrency``
at a time), holds their connections, checks each in every ``interval`` with
jitter, obeys ForcePush and Redirect, and reconnects with jittered backoff
when the server goes away, failing over to the other replicas of its set
(the ones Attached names) as the real envoy does (``vigo.envoy.sim.dialer``
says in which order). It keeps counters and fixed-size latency
histograms (``vigo.envoy.sim.figures``), not per-event records, so 50,000
envoys cost little beyond their connections. ``SimDialer`` spreads
connections to a loopback server over the source addresses
127.0.0.1..127.0.0.N, each with its own ephemeral ports.
"""

import gc
import random as _random

import nacl.signing
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from vigo.envoy.answers import BundleRejected, Redirected, Refused
from vigo.envoy.cadence import jittered, next_seq, reconnect_delay
from vigo.envoy.dial import connect as tls_connect
from vigo.envoy.sim.dialer import MAX_HOPS, SimDialer, first_replica, next_replica
from vigo.envoy.sim.envoy import (
    ATTACHED,
    ENROLLING,
    FAILED,
    MOVING,
    RECONNECTING,
    STOPPED,
    SimEnvoy,
)
from vigo.envoy.sim.figures import SimFigures, error_name, tally
from vigo.tokens import EnrollmentToken

DEFAULT_HOSTNAME_TEMPLATE = "web{n}.dc1.example.com"
STOP_GRACE = 5.0  # seconds stop() waits for connections to close


class Simulator(SimFigures):
    """``count`` envoys against one server (see the module docstring).

    ``token`` is an ``EnrollmentToken`` or its text; ``server_address``
    ("host:port", None for the token's) is dialled with the token's
    fingerprint pinned. ``connect(address, fingerprint, listener, bind_address)``
    returns a Deferred of a connected ``EnvoyClientProtocol`` (TLS by default;
    tests pass in-memory ones). ``progress`` is tqdm-like (``update``, ``close``).
    The counters and ``summary()`` are ``SimFigures``'.
    """

    log = Logger()

    def __init__(self, reactor, server_address, token, count, interval, *,
                 hostname_template=DEFAULT_HOSTNAME_TEMPLATE, concurrency=200,
                 source_addresses=4, jitter=0.1, request_timeout=30.0, max_backoff=10.0,
                 enroll_attempts=5, progress=None, random=None, connect=None):
        if isinstance(token, str):
            token = EnrollmentToken.decode(token)
        SimFigures.__init__(self, reactor, count, interval)
        self.token = token
        self.hostname_template = hostname_template
        self.concurrency = max(1, concurrency)
        self.jitter = jitter
        self.request_timeout = request_timeout
        self.max_backoff = max_backoff
        self.enroll_attempts = enroll_attempts
        self.progress = progress
        self.random = random or _random.Random()
        self._dialer = SimDialer(
            connect or (lambda address, fingerprint, listener, bind: tls_connect(
                reactor, address, fingerprint, listener, bind)),
            source_addresses, self._timed, self)
        self._versions = {}  # one bytes object per bundle version, shared by the envoys
        self.home = self._dialer.target(server_address or token.address, token.fingerprint,
                                        token.server_id)
        self.envoys = [SimEnvoy(self, n + 1) for n in range(count)]
        self._next = self._active = self._finished = 0
        self._pumping = self._stopping = False
        self._enrolled_d, self._stop_waiters, self._grace = defer.Deferred(), [], None

    # -- control --------------------------------------------------------------

    def start(self):
        """Begin enrolling; a Deferred that fires when every envoy attached or failed."""
        self._mark_started()
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
        self._mark_stopped()
        for envoy in self.envoys:
            if envoy.timer is not None and envoy.timer.active():
                envoy.timer.cancel()
            envoy.timer = None
            if envoy.protocol is not None:
                envoy.protocol.close()
        for protocol in list(self._dialer.unattached):
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
            # The simulated fleet is built and lives until the end: freeze it, so
            # the cyclic collector never rescans thousands of held connections
            # (a full pass took 200-370 ms here, and the latency figures showed it).
            gc.collect()
            gc.freeze()
            self._mark_enrolled()
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
        envoy.target, hops, attempt = self.home, 0, 0
        while True:
            protocol = None
            try:
                if envoy.envoy_id is None:
                    target = envoy.target
                    protocol = yield self._dialer.open(envoy, target)
                    registered = yield self._timed(protocol.register(
                        hostname, envoy.public_key, str(self.token), self.token.token_id,
                        envoy.sign))
                    envoy.envoy_id = registered.envoy_id
                    if registered.fingerprint == target.fingerprint:
                        target.key = target.key or registered.public_key
                    else:  # enrolled, but another server holds the envoy: attach there
                        protocol.close()
                        protocol = None
                        envoy.target = self._dialer.target(
                            registered.address, registered.fingerprint, registered.server_id,
                            registered.public_key)
                protocol, attached = yield self._dialer.attach(envoy, protocol)
                break
            except Redirected as r:  # from Register (Attach follows its own)
                self.redirects += 1
                hops += 1
                if hops > MAX_HOPS:
                    tally(self.errors, "redirect_loop")
                    return False
                envoy.target = self._dialer.target(r.address, r.fingerprint, r.server_id)
            except Exception as e:  # noqa: BLE001 -- any failure of the attempt is counted
                if protocol is not None:
                    protocol.close()
                if self._stopping:
                    return None
                if not self._retryable(e):
                    return False
                if not self._fail_over(envoy, e):  # the pass is over: back off first
                    attempt += 1
                    if attempt >= self.enroll_attempts:
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

    def _attached(self, envoy, protocol, attached):
        self._dialer.unattached.discard(protocol)
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
                tally(self.errors, "timeout")
                protocol.abort()
            return
        envoy.seq = seq = next_seq(envoy.seq, reactor.seconds())
        protocol.checkin(seq, envoy.version).addCallbacks(
            self._checked_in, self._checkin_failed, callbackArgs=(envoy,), errbackArgs=(envoy,))

    def _checked_in(self, result, envoy):
        self._count_checkin(result)
        if envoy.force:
            envoy.force = False
            self._check_in_now(envoy)

    def _checkin_failed(self, failure, envoy):
        e = failure.value
        if isinstance(e, Redirected):
            self._move(envoy, e)
        elif isinstance(e, Refused):
            tally(self.refusals, e.code)
        else:
            tally(self.errors, error_name(e))

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
        self._dialer.unattached.discard(protocol)
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
                self._reconnect_begins()
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
        envoy.target = self._dialer.target(
            redirect.address, redirect.fingerprint, redirect.server_id)
        envoy.timer = self.reactor.callLater(0, self._reconnect, envoy)

    def _schedule_reconnect(self, envoy):
        delay = self._backoff(envoy.attempt)
        envoy.attempt += 1
        envoy.timer = self.reactor.callLater(delay, self._reconnect, envoy)

    def _reconnect(self, envoy):
        envoy.timer = None
        if not self._stopping:
            self._dialer.attach(envoy).addCallbacks(
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
        e = failure.value
        if self._retryable(e):
            if self._fail_over(envoy, e):
                envoy.timer = self.reactor.callLater(0, self._reconnect, envoy)
            else:
                self._schedule_reconnect(envoy)
            return
        if envoy.state == RECONNECTING:
            self._reconnected()
        envoy.state = FAILED

    def _fail_over(self, envoy, e):
        """``envoy`` failed to reach ``envoy.target`` (``e``): True when it is to
        dial the next replica at once; False when the pass is over (then it
        starts the next at its primary, after the backoff) or the server
        answered (a retryable refusal: the same server again)."""
        if isinstance(e, Refused):
            return False
        replica = next_replica(envoy.target)
        if replica is None:
            envoy.target = first_replica(envoy.target)
            return False
        self.failovers += 1
        envoy.target = replica
        return True

    # -- plumbing ---------------------------------------------------------------

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
            tally(self.refusals, e.code)
            return e.retryable
        tally(self.errors, error_name(e))
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
