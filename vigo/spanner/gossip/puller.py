"""Tier 2: pull signed roster snapshots from peers and merge them.

Pulls happen when gossip says a peer's digest differs from ours, at start-up,
and every ``snapshot.anti_entropy`` from a random peer (forever, so an isolated
bolt keeps trying). ``If-None-Match`` carries our digest, so an unchanged
roster costs a 304.

The HTTPS connection is not what makes a snapshot trustworthy: its signature
is checked against the key *our* roster pins for the bolt we asked, and every
row in it is verified again on merge. So the puller accepts the peer API's
self-signed certificate as it is; the roster holds nothing secret.
"""


from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import defer, task
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from vigo.spanner.roster.snapshot import MAX_SNAPSHOT_BYTES, SnapshotError, open_snapshot

PULL_TIMEOUT = 10.0


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


class SnapshotPuller:
    """Pulls snapshots for the bolt whose ``SpannerService`` is ``service``."""

    log = Logger()

    def __init__(self, reactor, service, anti_entropy, http=None):
        self.reactor = reactor
        self.service = service
        self.anti_entropy = anti_entropy
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self.http = http or HTTPClient(Agent(
            reactor, contextFactory=SnapshotTLSPolicy(), pool=self._pool))
        self.pulls = {"ok": 0, "same": 0, "failed": 0, "rejected": 0}
        self._in_flight = {}
        self._loop = None

    def start(self):
        if self._loop is None:
            self._loop = task.LoopingCall(self.pull_random)
            self._loop.clock = self.reactor
            self._loop.start(self.anti_entropy, now=True).addErrback(
                lambda f: self.log.failure("anti-entropy loop stopped", f))

    def stop(self):
        """Stop pulling; a Deferred that fires once pulls and connections are closed."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        in_flight = list(self._in_flight.values())
        d = defer.DeferredList(in_flight) if in_flight else defer.succeed(None)
        return d.addCallback(lambda _: self._pool.closeCachedConnections())

    def pull_random(self):
        """Anti-entropy: one pull from a random other bolt of the roster."""
        others = [bolt_id for bolt_id in self.service.bolt_ids()
                  if bolt_id != self.service.identity.id and not self.service.is_removed(bolt_id)]
        if others:
            self.pull(self.service.random.choice(sorted(others)))

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
        roster = self.service.roster
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
        report = await self.service.merge(snapshot.parts)
        self.pulls["ok"] += 1
        return report
