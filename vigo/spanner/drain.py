"""Draining a bolt: it stops taking envoys and hands every one it holds on.

The drain runs *at the draining bolt* (the ``drain`` peer action starts it).
The bolt first publishes the next seq of its own row with status ``draining``
(only it signs its row), persisted and gossiped, so routing
(``vigo.spanner.routing.owner_of``) skips it from then on. Then it moves each
of its active envoys, at most ``concurrency`` at a time, to the drain's
destination (``to``), or, without one, to the envoy's owner by the roster
(its override or the patterns, now without this bolt), with the same
hand-over an operator's reassign uses (``vigo.spanner.reassign``).

A drain is in one of four states, moved only along ``TRANSITIONS``: ``idle``
(never started here), ``running``, ``done`` (every envoy moved) or
``failed`` (some could not be moved, or the bolt stopped meanwhile); a done
or failed drain may be started again. Progress is kept in memory
(``status()``); the destination is kept durably in the ``spanner_drain``
table, so a restarted bolt whose row is draining and that still holds active
envoys resumes the drain (``resume()``). Running the drain again is always
safe: each move is idempotent, and envoys already moved are no longer active
here. ``ask_drain`` is the asking side, at any bolt. See docs/spanner.md
("Draining and removing a bolt").
"""

import enum

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from vigo.failpoints import failpoint
from vigo.interfaces.components import IDrainer
from vigo.interfaces.errors import Refusal
from vigo.spanner.peer.asking import ask
from vigo.spanner.roster.rows import ACTIVE, DRAINING, REMOVED
from vigo.spanner.routing import NoOwner, owner_of, owners_without

#: At most this many envoys are being handed over at once.
CONCURRENCY = 16
#: The last errors kept in the progress.
MAX_ERRORS = 10
#: Seconds one envoy's hand-over may take (two peer calls, three writes).
MOVE_TIMEOUT = 30.0


class DrainState(enum.Enum):
    """Where this bolt's drain is."""

    IDLE = "idle"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


TRANSITIONS = {
    DrainState.IDLE: {DrainState.RUNNING},
    DrainState.RUNNING: {DrainState.DONE, DrainState.FAILED},
    DrainState.DONE: {DrainState.RUNNING},
    DrainState.FAILED: {DrainState.RUNNING},
}


def save_drain(cursor, target, started_at_ms):
    cursor.execute("INSERT OR REPLACE INTO spanner_drain (singleton, target, started_at_ms) "
                   "VALUES (1, ?, ?)", (target, started_at_ms))


def load_drain(cursor):
    """``(target,)`` of the drain in progress, or None when there is none."""
    row = cursor.execute("SELECT target FROM spanner_drain WHERE singleton = 1").fetchone()
    return None if row is None else (row[0],)


@implementer(IDrainer)
class Drainer(service.Service):
    """The drain of the bolt ``bolt_id``; as a service, stopping it moves no
    more envoys and waits for the moves under way.

    ``roster`` is its ``ILocalRoster``; ``store`` its ``IStore`` (the drain's
    destination survives a restart); ``rows`` its ``IRowPublisher`` (to turn
    draining); ``moves`` its fleet's ``IEnvoyMoves`` (which envoys are
    active); ``reassigner`` its ``IReassigner``; ``clock`` an ``IReactorTime``.
    """

    name = "drain"
    log = Logger()

    def __init__(self, bolt_id, roster, store, rows, moves, reassigner, clock,
                 concurrency=CONCURRENCY):
        self.bolt_id = bolt_id
        self.concurrency = concurrency
        self.state = DrainState.IDLE
        self.progress = None
        self._roster = roster
        self._store = store
        self._rows = rows
        self._moves = moves
        self._reassigner = reassigner
        self._clock = clock
        self._running = None
        self._stopping = False
        # Starts and the resume one at a time: each awaits writes before the
        # drain runs, and two must not both find it idle.
        self._starting = defer.DeferredLock()

    def _enter(self, state):
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError("a drain cannot go from %s to %s"
                               % (self.state.value, state.value))
        self.state = state
        if self.progress is not None:
            self.progress["state"] = state.value

    def _active_ids(self):
        return [envoy_id for envoy_id, _ in self._moves.active_envoys()]

    def status(self):
        row_status = self._roster.status_of(self.bolt_id)
        remaining = len(self._active_ids())
        if self.progress is None:
            drained = row_status in (DRAINING, REMOVED) and remaining == 0
            progress = {"state": (DrainState.DONE if drained else DrainState.IDLE).value,
                        "to": None, "total": 0, "moved": 0, "failed": 0, "errors": []}
        else:
            progress = dict(self.progress, errors=list(self.progress["errors"]))
        return dict(progress, bolt_id=self.bolt_id, status=row_status, remaining=remaining)

    def start(self, to=None):
        """Turn draining (if not yet) and start moving envoys in the background;
        a Deferred of the status at once. ``to`` is a bolt id or None (each
        envoy's owner)."""
        return self._starting.run(self._start, to)

    @defer.inlineCallbacks
    def _start(self, to=None):
        roster = self._roster.require_member()
        self._check_running()
        if self._running is not None:
            if to != self.progress["to"]:
                raise Refusal("conflict", "bolt %s is already draining to %s; wait for it to "
                              "finish" % (self.bolt_id, self.progress["to"] or
                                          "each envoy's owner"))
            return self.status()
        status = roster.status_of(self.bolt_id)
        if status == REMOVED:
            raise Refusal("removed", "bolt %s is removed" % (self.bolt_id,))
        if to is not None:
            if to == self.bolt_id:
                raise Refusal("same_bolt", "bolt %s cannot drain to itself" % (to,))
            if roster.status_of(to) != ACTIVE:
                raise Refusal("bolt_not_active", "bolt %s is %s: only an active bolt takes "
                              "envoys" % (to, roster.status_of(to) or "unknown"))
        elif status == ACTIVE:
            self._check_owners(roster)
        yield self._store.run(save_drain, to, int(self._clock.seconds() * 1000))
        self._check_running()
        if status == ACTIVE:
            yield self._rows.publish(status=DRAINING)
        failpoint("drain.draining")
        self._check_running()  # draining, moving nothing: a restart resumes it
        self._begin(to)
        return self.status()

    def _check_running(self):
        if self._stopping:
            raise Refusal("stopping", "bolt %s is stopping; drain it once it runs again"
                          % (self.bolt_id,), retryable=True)

    def _check_owners(self, roster):
        """Refuse a drain to each envoy's owner that would leave envoys with
        none: routing as it will be once this bolt is draining must give every
        active envoy here another bolt. Nothing is changed before."""
        owner = owners_without(roster, self.bolt_id)
        orphans = []
        for envoy_id, hostname in self._moves.active_envoys():
            try:
                owner(hostname, envoy_id)
            except NoOwner:
                orphans.append(hostname)
        if orphans:
            raise Refusal("no_owner", "%d envoy(s) of bolt %s would have no owner once it "
                          "drains (%s%s): no other active bolt's patterns cover them; drain "
                          "it to one bolt with --to BOLT" % (
                              len(orphans), self.bolt_id, ", ".join(sorted(orphans)[:3]),
                              ", ..." if len(orphans) > 3 else ""))

    def resume(self):
        """After a restart: go on with a drain this bolt had not finished."""
        return self._starting.run(self._resume)

    @defer.inlineCallbacks
    def _resume(self):
        roster = self._roster.current
        if roster is None or roster.status_of(self.bolt_id) != DRAINING or \
                not self._active_ids():
            return
        held = yield self._store.run(load_drain)
        if self._stopping:
            return
        to = None if held is None else held[0]
        if to is not None and roster.status_of(to) != ACTIVE:
            to = None  # the destination went away meanwhile: each envoy's owner
        self.log.info("bolt {id} resumes its drain", id=self.bolt_id)
        self._begin(to)

    def startService(self):
        service.Service.startService(self)
        self._stopping = False

    def stopService(self):
        service.Service.stopService(self)
        return self.stop()

    def finished(self):
        """A Deferred that fires once no drain runs here (at once if none does)."""
        if self._running is None:
            return defer.succeed(None)
        done = defer.Deferred()
        self._running.addBoth(lambda result: done.callback(None) or result)
        return done

    def stop(self):
        """Move no more envoys; a Deferred that fires when a start under way and
        the moves under way have ended."""
        self._stopping = True
        d = self._starting.run(lambda: None)
        return d.addCallback(lambda _: self.finished())

    def _begin(self, to):
        self.progress = {"state": None, "to": to, "total": 0, "moved": 0, "failed": 0,
                         "errors": []}
        self._enter(DrainState.RUNNING)
        # A drain with nothing to move ends before _run returns: the
        # callbacks, not _run, say it is no longer running.
        self._running = running = self._run(to)
        running.addErrback(self._crashed)
        running.addBoth(self._ended)

    def _ended(self, _):
        self._running = None

    def _crashed(self, failure):
        self.log.failure("the drain of bolt {id} failed", failure, id=self.bolt_id)
        self._note(failure.getErrorMessage())
        if self.state is DrainState.RUNNING:
            self._enter(DrainState.FAILED)

    def _note(self, error):
        self.progress["errors"] = (self.progress["errors"] + [error])[-MAX_ERRORS:]

    @defer.inlineCallbacks
    def _run(self, to):
        envoys = self._moves.active_envoys()
        self.progress["total"] = len(envoys)
        semaphore = defer.DeferredSemaphore(self.concurrency)
        yield defer.gatherResults([semaphore.run(self._move, envoy_id, hostname, to)
                                   for envoy_id, hostname in envoys])
        progress = self.progress
        ok = progress["failed"] == 0 and not self._stopping
        self._enter(DrainState.DONE if ok else DrainState.FAILED)
        self.log.info("bolt {id} drained: {moved} of {total} envoys moved, {failed} failed",
                      id=self.bolt_id, moved=progress["moved"], total=progress["total"],
                      failed=progress["failed"])

    @defer.inlineCallbacks
    def _move(self, envoy_id, hostname, to):
        if self._stopping:
            return
        try:
            found = self._moves.describe(envoy_id)
            if found is None or found["state"] != "active":
                self.progress["moved"] += 1  # gone meanwhile (revoked, moved by hand)
                return
            dest = to or owner_of(self._roster.current, hostname, envoy_id).bolt_id
            if dest == self.bolt_id:
                raise Refusal("no_owner", "no other bolt owns %s" % (hostname,))
            yield self._reassigner.reassign(envoy_id, dest).addTimeout(MOVE_TIMEOUT,
                                                                       self._clock)
        except Exception as e:
            self.progress["failed"] += 1
            why = "%s: %s" % (e.code, e.reason) if isinstance(e, Refusal) else str(e)
            self._note("%s (%s): %s" % (envoy_id, hostname, why))
            return
        self.progress["moved"] += 1
        failpoint("drain.moved")


@defer.inlineCallbacks
def ask_drain(bolt, clock, roster, bolt_id, to=None):
    """Start draining bolt ``bolt_id`` (to bolt ``to``, or each envoy's owner),
    asked at any bolt: checked here, run there (the ``drain`` action, through
    ``bolt``'s ``call``). ``roster`` is the asking bolt's ``ILocalRoster``."""
    current = roster.require_member()
    if current.is_removed(bolt_id):
        raise Refusal("removed", "bolt %s was removed; it has nothing to drain" % (bolt_id,))
    args = {}
    if to is not None:
        if to == bolt_id:
            raise Refusal("same_bolt", "bolt %s cannot drain to itself" % (bolt_id,))
        status = current.status_of(to)
        if status != "active":
            raise Refusal("bolt_not_active", "bolt %s is %s: only an active bolt takes "
                          "envoys" % (to, status))
        args["to"] = to
    answer = yield ask(bolt, clock, bolt_id, "drain", args)
    return dict(answer, name=current.row(bolt_id).name)
