"""Tier 2: pulling signed roster snapshots from peers, and when to.

``SnapshotPuller`` fetches ``GET /api/v1/spanner/roster`` from a peer and
merges it. Pulls happen when gossip says a peer's digest differs from ours
(``PullRequests``), at start-up, and every ``snapshot.anti_entropy`` from a
random peer (forever, so an isolated bolt keeps trying). ``If-None-Match``
carries our digest, so an unchanged roster costs a 304.

Every pull is bounded. Its whole exchange (connecting, TLS, the answer's
headers and its last byte) must end within ``PULL_TIMEOUT``, and the body is
read to at most ``MAX_SNAPSHOT_BYTES``: the connection is dropped as soon as
more arrives (or a longer length is announced). So a peer that floods or
drips, or whatever answers at a dead bolt's address, costs at most that much
memory and time, never holds that peer's pulls or the bolt's shutdown. The
bytes are then opened and merged in slices on the reactor thread and the
signatures verified in threads (``vigo.spanner.roster.verify``): a big
snapshot never stalls check-ins.

The HTTPS connection is not what makes a snapshot trustworthy: its signature
is checked against the key *our* roster pins for the bolt we asked, and every
row in it is verified again on merge. So the puller accepts the peer API's
self-signed certificate as it is; the roster holds nothing secret.

When to pull: every datagram carries its sender's roster digest; one that
differs from ours means one of us lacks something. A change reaches every
bolt within a tick, so without care N-1 bolts would all pull at once, and a
peer whose roster stays different (say it has not pulled *ours* yet) would be
asked again on every datagram. Hence ``PullRequests``: a random delay (up to
half an interval) before asking, at most one request per ``spacing``, one
random live peer per request, and never the same (peer, digest) twice within
``repeat``: merging one snapshot twice cannot help.

The spacing is short (half an interval) because changes written at many bolts
at once spread by pulls of merged rosters, about log2(N) rounds of them: at one
pull a second, ten concurrent writes took 6 s to reach 64 bolts; at 0.25 s,
1.4 s (``bench/scale.py``). What bounds the cost instead is the pulls' own
time: when the callback returns a Deferred (a real pull), the next request
waits at least ``1 / busy_share`` times as long as the last pull took, so
pulling big snapshots takes at most about ``busy_share`` of the bolt's time.
"""

import math
import random
import time

from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IPolicyForHTTPS
from zope.interface import implementer

from vigo.metrics import PULL_OUTCOMES, SNAPSHOT_PULL_BUCKETS, DurationsBy
from vigo.spanner.roster.snapshot import MAX_SNAPSHOT_BYTES, SnapshotError, opening_snapshot
from vigo.spanner.roster.steps import run_sliced
from vigo.spanner.roster.verify import Verifier

#: Seconds a pull's whole exchange may take: connecting, TLS, the request, the
#: answer's headers and its last byte. Past it the connection is dropped.
PULL_TIMEOUT = 10.0
#: Bytes of an answer other than a snapshot (an error, a 304) read at most.
MAX_OTHER_BYTES = 64 * 1024
#: A merge that took this long (seconds: opening, verifying, merging and
#: persisting a snapshot) is logged, with its size and report.
SLOW_MERGE = 0.1


class Oversize(Exception):
    """An answer went past its size limit; the connection was dropped there."""


class _BoundedBody(protocol.Protocol):
    """Collects a response body of at most ``limit`` bytes (see ``read_body``)."""

    def __init__(self, limit):
        self.limit = limit
        self.done = defer.Deferred(self._cancel)
        self._parts = []
        self._size = 0

    def dataReceived(self, data):
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self.limit:
            self._fail(Oversize("more than %d bytes" % (self.limit,)))
            return
        self._parts.append(data)

    def connectionLost(self, reason):
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            body, self._parts = b"".join(self._parts), []
            self.done.callback(body)
        else:
            self._parts = []
            self.done.errback(reason)

    def _fail(self, error):
        self._parts = []
        self._stop()
        self.done.errback(error)

    def _cancel(self, _):
        self._parts = []
        self._stop()

    def _stop(self):
        if self.transport is not None:
            self.transport.stopProducing()  # closes the connection: nothing more is read


def read_body(response, limit):
    """The body of ``response`` (an ``IResponse``), at most ``limit`` bytes: a
    Deferred. Past the limit, as its length says or as it arrives, the
    connection is dropped at once and the Deferred fails with ``Oversize``;
    cancelling it drops the connection too. Never holds more than ``limit``."""
    body = _BoundedBody(limit)
    response.deliverBody(body)
    length = response.length
    if length is not UNKNOWN_LENGTH and length is not None and length > limit and (
            not body.done.called):
        body._fail(Oversize("%d bytes announced, over %d" % (length, limit)))
    return body.done


class PullRequests:
    """Rate-limited, jittered ``callback(bolt_id)`` on digest mismatch.

    ``candidates()`` returns {bolt id: digest} of live peers whose digest
    differs from ours, read when the request fires (not when the mismatch was
    seen: by then a pull may already have fixed it).
    """

    log = Logger()

    def __init__(self, clock, rng, callback, candidates, jitter, spacing, repeat,
                 busy_share=0.1):
        self._clock = clock
        self._rng = rng
        self._callback = callback
        self._candidates = candidates
        self.jitter = jitter
        self.spacing = spacing
        self.repeat = repeat
        self.busy_share = busy_share
        self.last_cost = 0.0  # seconds the last pull took
        self._call = None
        self._last = -math.inf
        self._asked = {}
        self.requests = 0

    def mismatch(self, now):
        """A datagram with another digest arrived: schedule a request if none is."""
        if self._callback is None or self._call is not None:
            return
        gap = max(self.spacing, self.last_cost / self.busy_share)
        at = max(now + self._rng.uniform(0, self.jitter), self._last + gap)
        self._call = self._clock.callLater(at - now, self._fire)

    def _fire(self):
        self._call = None
        now = self._clock.seconds()
        self._asked = {k: t for k, t in self._asked.items() if now - t < self.repeat}
        candidates = sorted(
            (bolt_id, digest) for bolt_id, digest in self._candidates().items()
            if (bolt_id, digest) not in self._asked)
        if not candidates:
            return
        bolt_id, digest = self._rng.choice(candidates)
        self._asked[(bolt_id, digest)] = now
        self._last = now
        self.requests += 1
        try:
            pulling = self._callback(bolt_id)
        except Exception:
            self.log.failure("on_digest_mismatch({bolt_id}) failed", bolt_id=bolt_id)
            return
        if hasattr(pulling, "addBoth"):
            pulling.addBoth(self._pulled, now)

    def _pulled(self, result, started):
        # A pull that merged something costs what it took; one that failed or
        # timed out (None) says nothing about snapshot sizes.
        self.last_cost = max(0.0, self._clock.seconds() - started) if result is not None else 0.0
        return result

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


@implementer(IOpenSSLClientConnectionCreator)
class _AnyCertificate:
    def __init__(self, hostname):
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        self._hostname = hostname

    def clientConnectionForTLS(self, tls_protocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        connection.set_connect_state()
        if not _is_address(self._hostname):
            connection.set_tlsext_host_name(self._hostname)
        return connection


def _is_address(host):
    return host.replace(b".", b"").isdigit() or b":" in host


@implementer(IPolicyForHTTPS)
class SnapshotTLSPolicy:
    """TLS for snapshot pulls: encrypted, not authenticated (the content is signed)."""

    def creatorForNetloc(self, hostname, port):
        return _AnyCertificate(hostname)


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """A connection pool whose connections log nothing as they open and close
    (Twisted's logs "Starting factory _HTTP11ClientFactory(...)" and its stop
    for each: a line or two every anti-entropy period)."""

    _factory = _QuietHTTP11ClientFactory


class SnapshotPuller(service.Service):
    """Pulls snapshots for the bolt ``bolt_id`` into ``roster`` (its
    ``ILocalRoster``), every ``anti_entropy`` seconds while it runs and
    whenever ``pull`` is asked (a digest mismatch). ``http`` is a treq-like
    client (tests give a ``StubTreq``); ``rng`` picks the anti-entropy peer.

    Every pull's exchange has a deadline (``timeout``: connecting, the answer
    and its last byte) and a size limit (``limit``) enforced as the bytes
    arrive; the snapshot is then opened and merged in slices on the reactor
    thread, its signatures verified in threads (``verifier``). Outcomes are
    counted in ``pulls``: ``ok``, ``same`` (304), ``rejected`` (a snapshot
    that does not open), ``oversize``, ``timeout`` and ``failed`` (anything
    else: unreachable, an HTTP error), and timed by outcome in ``durations``
    (from asking to merged). Stopping cancels the pulls under way.
    """

    name = "snapshot-puller"
    log = Logger()

    def __init__(self, reactor, bolt_id, roster, anti_entropy, rng=None, http=None,
                 timeout=PULL_TIMEOUT, limit=MAX_SNAPSHOT_BYTES, verifier=None):
        self.reactor = reactor
        self.bolt_id = bolt_id
        self.roster = roster
        self.rng = rng or random.Random()
        self.anti_entropy = anti_entropy
        self.timeout = timeout
        self.limit = limit
        self._pool = QuietConnectionPool(reactor, persistent=True)
        self.http = http or HTTPClient(Agent(
            reactor, contextFactory=SnapshotTLSPolicy(), pool=self._pool))
        self.verifier = verifier or Verifier(reactor)
        self.pulls = dict.fromkeys(PULL_OUTCOMES, 0)
        self.durations = DurationsBy(SNAPSHOT_PULL_BUCKETS, PULL_OUTCOMES)
        self._in_flight = {}
        self._loop = None
        self._stopping = False

    def startService(self):
        service.Service.startService(self)
        self._stopping = False
        if self._loop is None:
            self._loop = task.LoopingCall(self.pull_random)
            self._loop.clock = self.reactor
            self._loop.start(self.anti_entropy, now=True).addErrback(
                lambda f: self.log.failure("anti-entropy loop stopped", f))

    def stopService(self):
        """Stop pulling: the pulls under way are cancelled (their connections
        dropped, their work dropped); a Deferred that fires once the idle
        connections are closed."""
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._stopping = True
        for pulling in list(self._in_flight.values()):
            pulling.cancel()
        self._stopping = False
        self.verifier.stop()
        return self._pool.closeCachedConnections()

    def pull_random(self):
        """Anti-entropy: one pull from a random other bolt of the roster."""
        others = [bolt_id for bolt_id in self.roster.bolt_ids()
                  if bolt_id != self.bolt_id and not self.roster.is_removed(bolt_id)]
        if others:
            self.pull(self.rng.choice(sorted(others)))

    def pull(self, bolt_id):
        """Pull ``bolt_id``'s snapshot and merge it; a Deferred (never fails) of
        the ``MergeReport``, or None when nothing was merged."""
        if bolt_id in self._in_flight:
            return self._in_flight[bolt_id]
        started = time.perf_counter()
        d = defer.ensureDeferred(self._pull(bolt_id, started))
        d.addErrback(self._failed, bolt_id, started)
        if not d.called:
            self._in_flight[bolt_id] = d
            d.addBoth(self._done, bolt_id)
        return d

    def _done(self, result, bolt_id):
        self._in_flight.pop(bolt_id, None)
        return result

    def _outcome(self, outcome, started):
        self.pulls[outcome] += 1
        self.durations.observe(outcome, time.perf_counter() - started)

    def _failed(self, failure, bolt_id, started):
        if self._stopping:
            return None  # cancelled by stopService, however the cancel surfaced
        outcome = ("timeout" if failure.check(defer.TimeoutError)
                   else "oversize" if failure.check(Oversize) else "failed")
        self._outcome(outcome, started)
        self.log.debug("snapshot pull from {bolt} failed ({outcome}): {why}", bolt=bolt_id,
                       outcome=outcome, why=failure.getErrorMessage())
        return None

    async def _pull(self, bolt_id, asked):
        roster = self.roster.current
        row = roster.row(bolt_id) if roster is not None else None
        if row is None:
            return None
        url = "https://%s/api/v1/spanner/roster" % (row.addresses.api,)
        body = await self._exchange(url, roster.digest().hex())
        if body is None:
            self._outcome("same", asked)
            return None
        started = time.monotonic()
        try:
            snapshot = await run_sliced(self.reactor, opening_snapshot(
                body, roster.key_of(bolt_id), roster.federation_id))
        except SnapshotError as e:
            self._outcome("rejected", asked)
            self.log.warn("rejected the snapshot of bolt {bolt}: {why}", bolt=bolt_id, why=e)
            return None
        del body
        opened = time.monotonic()
        parts = await self.verifier.verify_parts(roster, snapshot.parts)
        verified = time.monotonic()
        report = await self.roster.merge(parts)
        self._outcome("ok", asked)
        took = time.monotonic() - started
        if report.changed and took >= SLOW_MERGE:
            self.log.info(
                "merged the snapshot of bolt {bolt} ({items} rows and records) in {seconds:.3f} s "
                "(opened in {opening:.3f} s, verified in {verifying:.3f} s, merged and saved in "
                "{merging:.3f} s): {report}", bolt=bolt_id, report=report,
                items=len(parts.rows) + len(parts.records()), seconds=took,
                opening=opened - started, verifying=verified - opened,
                merging=started + took - verified)
        return report

    async def _exchange(self, url, digest):
        """``_fetch`` within the deadline: cancelled when it passes (the
        connection dropped), and then ``defer.TimeoutError``."""
        fetching = defer.ensureDeferred(self._fetch(url, digest))
        expired = []

        def expire():
            expired.append(True)
            fetching.cancel()

        timer = self.reactor.callLater(self.timeout, expire)
        try:
            return await fetching
        except Exception:
            if expired:
                raise defer.TimeoutError("no snapshot from %s in %g s"
                                         % (url, self.timeout)) from None
            raise
        finally:
            if timer.active():
                timer.cancel()

    async def _fetch(self, url, digest):
        """The exchange: the snapshot's bytes, or None for a 304 (unchanged)."""
        response = await self.http.get(
            url, headers={b"if-none-match": [('"%s"' % digest).encode("ascii")]},
            unbuffered=True)
        if response.code != 200:
            await read_body(response, MAX_OTHER_BYTES)
            if response.code == 304:
                return None
            raise RuntimeError("HTTP %d from %s" % (response.code, url))
        return await read_body(response, self.limit)
