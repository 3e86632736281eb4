"""Tier 2: pulling signed roster snapshots from peers, and when to.

``SnapshotPuller`` fetches ``GET /api/v1/spanner/roster`` from a peer and
merges it. Pulls happen when gossip says a peer's digest differs from ours
(``PullRequests``), at start-up, and every ``snapshot.anti_entropy`` from a
random peer (forever, so an isolated bolt keeps trying). ``If-None-Match``
carries our digest, so an unchanged roster costs a 304.

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

from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from vigo.spanner.roster.snapshot import MAX_SNAPSHOT_BYTES, SnapshotError, open_snapshot

#: Seconds a snapshot pull may take.
PULL_TIMEOUT = 10.0


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


class SnapshotPuller(service.Service):
    """Pulls snapshots for the bolt ``bolt_id`` into ``roster`` (its
    ``ILocalRoster``), every ``anti_entropy`` seconds while it runs and
    whenever ``pull`` is asked (a digest mismatch). ``http`` is a treq-like
    client (tests give a ``StubTreq``); ``rng`` picks the anti-entropy peer."""

    name = "snapshot-puller"
    log = Logger()

    def __init__(self, reactor, bolt_id, roster, anti_entropy, rng=None, http=None):
        self.reactor = reactor
        self.bolt_id = bolt_id
        self.roster = roster
        self.rng = rng or random.Random()
        self.anti_entropy = anti_entropy
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self.http = http or HTTPClient(Agent(
            reactor, contextFactory=SnapshotTLSPolicy(), pool=self._pool))
        self.pulls = {"ok": 0, "same": 0, "failed": 0, "rejected": 0}
        self._in_flight = {}
        self._loop = None

    def startService(self):
        service.Service.startService(self)
        if self._loop is None:
            self._loop = task.LoopingCall(self.pull_random)
            self._loop.clock = self.reactor
            self._loop.start(self.anti_entropy, now=True).addErrback(
                lambda f: self.log.failure("anti-entropy loop stopped", f))

    def stopService(self):
        """Stop pulling; a Deferred that fires once pulls and connections are closed."""
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        in_flight = list(self._in_flight.values())
        d = defer.DeferredList(in_flight) if in_flight else defer.succeed(None)
        return d.addCallback(lambda _: self._pool.closeCachedConnections())

    def pull_random(self):
        """Anti-entropy: one pull from a random other bolt of the roster."""
        others = [bolt_id for bolt_id in self.roster.bolt_ids()
                  if bolt_id != self.bolt_id and not self.roster.is_removed(bolt_id)]
        if others:
            self.pull(self.rng.choice(sorted(others)))

    def pull(self, bolt_id):
        """Pull ``bolt_id``'s snapshot and merge it; a Deferred (never fails)."""
        if bolt_id in self._in_flight:
            return self._in_flight[bolt_id]
        d = defer.ensureDeferred(self._pull(bolt_id))
        d.addErrback(self._failed, bolt_id)
        d.addBoth(self._done, bolt_id)
        self._in_flight[bolt_id] = d
        return d

    def _done(self, result, bolt_id):
        self._in_flight.pop(bolt_id, None)
        return result

    def _failed(self, failure, bolt_id):
        self.pulls["failed"] += 1
        self.log.debug("snapshot pull from {bolt} failed: {why}", bolt=bolt_id,
                       why=failure.getErrorMessage())
        return None

    async def _pull(self, bolt_id):
        roster = self.roster.current
        row = roster.row(bolt_id) if roster is not None else None
        if row is None:
            return None
        url = "https://%s/api/v1/spanner/roster" % (row.addresses.api,)
        digest = roster.digest().hex()
        response = await self.http.get(
            url, headers={b"if-none-match": [('"%s"' % digest).encode("ascii")]},
            timeout=PULL_TIMEOUT)
        if response.code == 304:
            await response.text()
            self.pulls["same"] += 1
            return None
        body = await response.content()
        if response.code != 200:
            raise RuntimeError("HTTP %d from %s" % (response.code, url))
        if len(body) > MAX_SNAPSHOT_BYTES:
            raise SnapshotError("oversize", "the snapshot is too large")
        try:
            snapshot = open_snapshot(body, roster.key_of(bolt_id),
                                     roster.federation_id)
        except SnapshotError as e:
            self.pulls["rejected"] += 1
            self.log.warn("rejected the snapshot of bolt {bolt}: {why}", bolt=bolt_id, why=e)
            return None
        report = await self.roster.merge(snapshot.parts)
        self.pulls["ok"] += 1
        return report
