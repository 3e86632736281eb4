"""What a bolt runs once it is a member of a federation.

Tier-1 gossip, tier-2 snapshot pulls and the hand-over repair need a roster:
a bolt that has not founded or joined a federation yet has no one to talk to.
``MemberServices`` is their parent in the bolt's service tree. It starts with
the bolt, and starts them once the bolt holds a roster: at once for a bolt
that restarts as a member, or when it founds or joins one. A bolt that
restarts as a member then also does what a restart calls for (``restarted``:
publish its row again if it now listens elsewhere, resume a drain it had not
finished). Stopping it stops whatever it started.
"""

from twisted.application import service
from twisted.internet import defer


class MemberServices(service.MultiService):
    """The member-only services of one bolt (its children).

    ``roster`` is the bolt's ``ILocalRoster``; ``restarted`` are callables
    (each may return a Deferred) run, in order, once the children have
    started, when the bolt was a member already as it started; the server
    waits for them (``restarted``), and one that fails fails the start.
    """

    name = "member"

    def __init__(self, roster, restarted=()):
        service.MultiService.__init__(self)
        self._roster = roster
        self._duties = list(restarted)
        self._members = False
        self._listening = False
        #: Fires once a restarted member has done its duties (at once otherwise).
        self.restarted = defer.succeed(None)

    def startService(self):
        service.Service.startService(self)
        restarting = self._roster.current is not None
        if not self._listening:
            self._listening = True
            self._roster.on_member(self._became_member)  # now, when it is a member already
        elif restarting:
            self._became_member(self._roster.current)
        if restarting:
            # A duty that fails fails the start (the server says why and stops).
            self.restarted = defer.ensureDeferred(self._restart())

    def _became_member(self, roster):
        if not self.running or self._members:
            return
        self._members = True
        for child in self:
            child.startService()

    async def _restart(self):
        for duty in self._duties:
            await defer.maybeDeferred(duty)

    def stopService(self):
        service.Service.stopService(self)
        if not self._members:
            return defer.succeed(None)
        self._members = False
        stopping = [defer.maybeDeferred(child.stopService) for child in reversed(list(self))]
        return defer.gatherResults(stopping).addCallback(lambda _: None)
