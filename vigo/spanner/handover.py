"""Finishing envoy hand-overs that a crash interrupted.

A reassign (``vigo.spanner.reassign``) writes at two bolts: the
destination stores the envoy and claims it in the roster (the override), then
the source marks it moved. ``kill -9`` of either bolt between those writes
leaves the envoy active at both, or at the source with the destination never
asked. Two rules, run by ``HandoverRepair`` at every bolt, finish the job with
no operator:

1. **Pending moves.** The source notes each hand-over durably before it asks
   the destination (``IEnvoyMoves.begin_move``) and ends the note in the same
   write that marks the envoy moved. A note still there was interrupted: the
   hand-over runs again (every step is idempotent). A note whose
   destination is no longer an active bolt (draining, removed, gone) is
   dropped with a warning; the envoy stays here.
2. **Envoys the roster gives to another bolt.** An envoy active here whose
   override names another active bolt, *and which that bolt holds active*,
   is a copy a crash or two racing reassigns left behind: it is handed to
   that bolt (whose accept is a no-op) and redirected there, once it has
   been so for ``SETTLED`` seconds and no reassign or accept of it runs here
   (an accept under way looks the same for a moment). If that bolt does not
   hold it, nothing is done automatically (the roster may be the stale one);
   the operator is warned once.

Both run at start-up, once the first roster pull has had its chance, then
every ``interval`` seconds and whenever gossip sees a bolt come back (``soon``);
a round that finds nothing to do costs one small read of the store and a dict
lookup per override that names another bolt.
"""

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from vigo.fleet.index import ACTIVE as ENVOY_ACTIVE
from vigo.spanner.roster.rows import ACTIVE

#: Seconds between two repair rounds.
INTERVAL = 30.0
#: Seconds after start-up before the first round: time for the start-up pull
#: to bring this bolt's roster up to date (a stale one names stale owners).
FIRST_ROUND = 5.0
#: Hand-overs a round runs at once.
CONCURRENCY = 8
#: Seconds one hand-over may take.
MOVE_TIMEOUT = 30.0
#: Seconds an envoy must stay active here while the roster gives it to another
#: bolt (rule 2) before it is handed over: longer than any hand-over takes.
SETTLED = 2 * MOVE_TIMEOUT


class HandoverRepair(service.Service):
    """The repair rounds of the bolt ``bolt_id``, a service that runs them
    while it runs.

    ``roster`` is its ``ILocalRoster``; ``moves`` its fleet's ``IEnvoyMoves``
    (pending moves, envoy states); ``reassigner`` its ``IReassigner`` (runs
    a hand-over again; says which envoys one is under way for); ``peers`` an
    ``IPeerCaller`` reaching other bolts (does the named bolt hold the
    envoy?); ``clock`` an ``IReactorTime``.
    """

    name = "handover-repair"
    log = Logger()

    def __init__(self, bolt_id, roster, moves, reassigner, peers, clock, interval=INTERVAL,
                 first_round=FIRST_ROUND):
        self.bolt_id = bolt_id
        self.roster = roster
        self.moves = moves
        self.reassigner = reassigner
        self.peers = peers
        self.clock = clock
        self.interval = interval
        self.first_round = first_round
        self.rounds = 0
        self.finished = 0
        self.dropped = 0
        self._warned = set()
        self._claimed = {}  # (envoy id, bolt id) -> when rule 2 first saw it
        #: Moves pending at this bolt after the last round: ``{envoy id: to}``
        #: (None before the first round).
        self.pending = None
        self.pending_at = None  # when ``pending`` was read
        self._stopping = False
        self._loop = None
        self._first = None
        self._running = None

    def startService(self):
        """Run the first round after ``first_round`` seconds, then every ``interval``."""
        service.Service.startService(self)
        self._stopping = False
        if self._first is None and self._loop is None:
            self._first = self.clock.callLater(self.first_round, self._begin)

    def _begin(self):
        self._first = None
        self._loop = task.LoopingCall(self.round)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: self.log.failure("hand-over repair stopped", f))

    def stopService(self):
        """No more rounds; a Deferred that fires when the one under way ends."""
        service.Service.stopService(self)
        self._stopping = True
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._first = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return self.idle()

    def soon(self):
        """Run a round now (a bolt came back, say), unless none is due yet
        (before the first round) or one is under way."""
        if self._loop is not None:
            self.round()

    def idle(self):
        """A Deferred that fires once no round is under way."""
        d = defer.Deferred()
        if self._running is None:
            d.callback(None)
            return d

        def fire(result):
            d.callback(None)
            return result

        self._running.addBoth(fire)
        return d

    def round(self):
        """One repair round (skipped while the last one runs): a Deferred of
        ``{"finished": n, "dropped": n, "failed": n}``."""
        if self._running is not None or self.roster.current is None:
            return defer.succeed(None)
        self.rounds += 1
        self._running = defer.ensureDeferred(self._round())

        def failed(failure):  # logged, so that the next round still comes
            self.log.failure("a hand-over repair round failed", failure)

        def done(result):
            self._running = None
            return result

        return self._running.addErrback(failed).addBoth(done)

    async def _round(self):
        roster, moves = self.roster.current, self.moves
        pending = await moves.pending_moves()
        work, dropped = {}, 0
        for envoy_id, (to, _started) in sorted(pending.items()):
            if roster.status_of(to) == ACTIVE:
                work[envoy_id] = to
                continue
            await moves.cancel_move(envoy_id)
            dropped += 1
            self.log.warn("the move of envoy {envoy} to bolt {to} is dropped: that bolt is "
                          "{status}; the envoy stays on this bolt", envoy=envoy_id, to=to,
                          status=roster.status_of(to) or "not in the roster")
        now, seen = self.clock.seconds(), {}
        for envoy_id, to in self._claimed_elsewhere(roster):
            if envoy_id in work or self.reassigner.busy(envoy_id):
                continue
            # Only a state that lasts: an accept under way here shows it for a
            # moment (stored, its override not yet written), and so does a
            # move from the named bolt that has not ended.
            since = self._claimed.get((envoy_id, to), now)
            seen[(envoy_id, to)] = since
            if now - since >= SETTLED and await self._held_there(envoy_id, to):
                work[envoy_id] = to
        self._claimed = seen
        results = await self._run_all(work)
        self.pending = {envoy_id: to for envoy_id, (to, _) in
                        (await moves.pending_moves()).items()}
        self.pending_at = self.clock.seconds()
        finished = sum(1 for ok in results if ok)
        self.finished += finished
        self.dropped += dropped
        if work or dropped:
            self.log.info("hand-over repair: {finished} of {count} interrupted moves finished, "
                          "{dropped} dropped", finished=finished, count=len(work),
                          dropped=dropped)
        return {"finished": finished, "dropped": dropped, "failed": len(work) - finished}

    def _claimed_elsewhere(self, roster):
        """``(envoy_id, bolt_id)`` of envoys active here whose override names
        another active bolt."""
        me = self.bolt_id
        claimed = []
        for envoy_id, to in roster.overridden():
            if to == me or roster.status_of(to) != ACTIVE:
                continue
            description = self.moves.describe(envoy_id)
            if description is not None and description["state"] == ENVOY_ACTIVE:
                claimed.append((envoy_id, to))
        return sorted(claimed)

    async def _held_there(self, envoy_id, to):
        try:
            answer = await self.peers.call(to, "query", {"kind": "show", "envoy": envoy_id})
        except Exception:
            return False  # not reachable now: the next round asks again
        envoy = answer.get("envoy") if isinstance(answer, dict) else None
        if isinstance(envoy, dict) and envoy.get("state") == ENVOY_ACTIVE:
            return True
        if envoy_id not in self._warned:
            self._warned.add(envoy_id)
            self.log.warn("envoy {envoy} is active on this bolt but the roster gives it to bolt "
                          "{to}, which does not hold it active: left as it is; 'vigocli spanner "
                          "bolt reassign {envoy} --to BOLT' settles it", envoy=envoy_id, to=to)
        return False

    def _run_all(self, work):
        semaphore = defer.DeferredSemaphore(CONCURRENCY)
        return defer.gatherResults([semaphore.run(self._finish, envoy_id, to)
                                    for envoy_id, to in sorted(work.items())])

    def _finish(self, envoy_id, to):
        if self._stopping:
            return defer.succeed(False)
        d = self.reassigner.reassign(envoy_id, to)
        d.addTimeout(MOVE_TIMEOUT, self.clock)

        def failed(failure):
            self.log.info("the move of envoy {envoy} to bolt {to} is still pending: {why}",
                          envoy=envoy_id, to=to, why=failure.getErrorMessage())
            return False

        return d.addCallbacks(lambda _: True, failed)
