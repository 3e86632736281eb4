"""A primary asks the members not streaming from it where they stand.

A deposed primary must learn of the newer one before it says yes to
anything: ``Prober`` asks every member that does not stream from this
primary (``Who``), at start and then every ``PROBE_INTERVAL``; one that
answers with a higher epoch calls ``on_newer(epoch, primary_id,
address)`` (the primary is fenced), and the end of the first round calls
``on_round()`` (the primary may acknowledge writes from then on: a member
that did not answer was not reached, and ``peers.sync`` covers the rest).
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from vigo.server.peer.channel import Dials
from vigo.server.peer.protocol import Who

PROBE_INTERVAL = 2.0


class Prober:
    """See the module docstring. ``others()`` is the members to ask; ``epoch()``
    this primary's; ``role`` answers what the members ask back."""

    log = Logger()

    def __init__(self, clock, node_identity, role, others, epoch, on_newer, on_round):
        self.clock = clock
        self.node_identity = node_identity
        self.role = role
        self.others = others
        self.epoch = epoch
        self.on_newer = on_newer
        self.on_round = on_round
        self.rounds = 0
        self._loop = None
        self._probing = False
        self._dial = Dials()

    def start(self):
        self._loop = task.LoopingCall(self.probe)
        self._loop.clock = self.clock
        self._loop.start(PROBE_INTERVAL, now=True).addErrback(
            lambda f: self.log.failure("probing the replica set failed", f))

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._dial.cancel_all()

    def probe(self):
        """One round (none while one is under way)."""
        if self._probing:
            return None
        others = list(self.others())
        self._probing = True
        d = defer.DeferredList([self.ask(member) for member in others], consumeErrors=True)

        def done(_):
            self._probing = False
            self.rounds += 1
            self.on_round(len(others))

        return d.addCallback(done)

    @defer.inlineCallbacks
    def ask(self, member):
        """Ask ``member`` where it stands; ``on_newer`` if it knows a newer primary."""
        connection = yield self._dial(self.clock, member.replication_address,
                                      member.fingerprint, self.node_identity, self.role,
                                      timeout=PROBE_INTERVAL)
        try:
            answer = yield connection.callRemote(Who)
        finally:
            connection.transport.loseConnection()
        if answer["epoch"] > self.epoch():
            self.on_newer(answer["epoch"], answer["primary_id"] or answer["node_id"],
                          answer["primary_address"] or member.replication_address)
