"""A write is answered only once it is durable enough: ``peers.sync`` (docs/ha.md).

With high availability on, the API's site gets ``durability`` (the
primary's ``PrimaryReplication``): ``head()`` is the last LSN committed and
``synced()`` a Deferred that fires when everything committed so far is held
by ``peers.sync`` standbys, or fails with a retryable ``Refusal``
(``replication_timeout``, ``not_primary``). ``AcknowledgedRequest`` holds
back the answer of every request that wrote (a method but GET and HEAD, and
the log moved on while it was answered) and says yes (a status below 400)
until then, and answers 503 with that refusal instead when it fails:
nothing is acknowledged that a failover could lose. The other answers, the
replica set's own routes (``/api/v1/server/``), and every answer without HA
go out at once.
"""

import json

from twisted.logger import Logger
from twisted.web.server import Request

from vigo.api.site import BoundedRequest

_READS = (b"GET", b"HEAD")
#: The replica set's own routes are not held back: an invitation must be
#: answered before any standby exists to hold it (and a lost one is just
#: made again), and promotion or joining change this node itself.
_REPLICA_SET = b"/api/v1/server/"
log = Logger(namespace="vigo.api")


class AcknowledgedRequest(BoundedRequest):
    """See the module docstring."""

    _held = None
    _released = False
    _head = None

    def process(self):
        durability = getattr(self.channel.site, "durability", None)
        if durability is not None and self.method not in _READS:
            self._head = durability.head()
        return super().process()

    def _gated(self):
        return (not self._released and self._head is not None and self.code < 400
                and not self.path.startswith(_REPLICA_SET)
                and self.channel.site.durability.head() != self._head)

    def write(self, data):
        if self._gated():
            if self._held is None:
                self._held = []
            self._held.append(data)
            return
        Request.write(self, data)

    def finish(self):
        if not self._gated():
            return Request.finish(self)
        d = self.channel.site.durability.synced()
        d.addCallbacks(self._release, self._refuse)
        return None

    def _release(self, _):
        self._released = True
        if self._disconnected:
            return
        for data in self._held or ():
            Request.write(self, data)
        Request.finish(self)

    def _refuse(self, failure):
        self._released = True
        if self._disconnected:
            return
        refusal = failure.value
        as_dict = getattr(refusal, "as_dict", None)
        if as_dict is None:
            log.failure("waiting for replication failed", failure)
            body = {"error": "internal", "detail": "the server failed; try again"}
        else:
            fields = as_dict()
            body = {"error": fields.get("code", "replication_timeout"),
                    "detail": fields.get("reason", str(refusal)), "retryable": True}
        data = json.dumps(body).encode("utf-8")
        self.setResponseCode(503)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"content-length", b"%d" % (len(data),))
        Request.write(self, data)
        Request.finish(self)
