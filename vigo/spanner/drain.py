"""Draining a bolt: it stops taking envoys and hands every one it holds on.

The drain runs *at the draining bolt* (the ``drain`` peer action,
``vigo.plugins.vigo_drain``, starts it). The bolt first publishes the next seq
of its own row with status ``draining`` (only it signs its row), persisted and
gossiped, so routing (``vigo.spanner.routing.owner_of``) skips it from then on.
Then it moves each of its active envoys, at most ``concurrency`` at a time, to
the drain's destination (``to``), or, without one, to the envoy's owner by the
roster (its override or the patterns, now without this bolt), with the same
local ``reassign`` action an operator's reassign uses: the destination accepts
the envoy, this bolt marks it moved and redirects it.

Progress is kept in memory (``status()``); the destination is kept durably in
the ``spanner_drain`` table, so a restarted bolt whose row is draining and that
still holds active envoys resumes the drain (``resume()``). Running the drain
again is always safe: each move is idempotent, and envoys already moved are no
longer active here. See docs/spanner.md ("Draining and removing a bolt").
"""

from twisted.internet import defer
from twisted.logger import Logger

from vigo.failpoints import failpoint
from vigo.fleet.index import ACTIVE as ENVOY_ACTIVE
from vigo.spanner.roster.rows import ACTIVE, DRAINING, REMOVED

#: At most this many envoys are being handed over at once.
CONCURRENCY = 16
#: The last errors kept in the progress.
MAX_ERRORS = 10
#: Seconds one envoy's hand-over may take (two peer calls, three writes).
MOVE_TIMEOUT = 30.0
IDLE, RUNNING, DONE, FAILED = "idle", "running", "done", "failed"


class DrainRefused(Exception):
    """A drain that cannot start: ``code`` and ``reason`` as for a ``Refusal``."""

    def __init__(self, code, reason):
        Exception.__init__(self, reason)
        self.code = code
        self.reason = reason


def save_drain(cursor, target, started_at_ms):
    cursor.execute("INSERT OR REPLACE INTO spanner_drain (singleton, target, started_at_ms) "
                   "VALUES (1, ?, ?)", (target, started_at_ms))


def load_drain(cursor):
    """``(target,)`` of the drain in progress, or None when there is none."""
    row = cursor.execute("SELECT target FROM spanner_drain WHERE singleton = 1").fetchone()
    return None if row is None else (row[0],)


class Drainer:
    """The drain of one bolt. ``service`` is its ``SpannerService``: the roster,
    ``publish_status``, the store, the facade (to run ``reassign`` locally)."""

    log = Logger()

    def __init__(self, service, concurrency=CONCURRENCY):
        self.service = service
        self.concurrency = concurrency
        self.progress = None
        self._running = None
        self._stopping = False
        # Starts and the resume one at a time: each awaits writes before the
        # drain runs, and two must not both find it idle.
        self._starting = defer.DeferredLock()

    @property
    def _id(self):
        return self.service.identity.id

    def _active_ids(self):
        return sorted(r.id for r in self.service.server.fleet.index if r.state == ENVOY_ACTIVE)

    def status(self):
        """The progress: ``state`` (idle, running, done, failed), ``status`` (this
        bolt's row), ``to``, ``total``, ``moved``, ``failed``, ``remaining``
        (active envoys here now) and the last ``errors``."""
        roster = self.service.roster
        row_status = None if roster is None else roster.status_of(self._id)
        remaining = len(self._active_ids())
        if self.progress is None:
            drained = row_status in (DRAINING, REMOVED) and remaining == 0
            progress = {"state": DONE if drained else IDLE, "to": None, "total": 0,
                        "moved": 0, "failed": 0, "errors": []}
        else:
            progress = dict(self.progress, errors=list(self.progress["errors"]))
        return dict(progress, bolt_id=self._id, status=row_status, remaining=remaining)

    def start(self, to=None):
        """Turn draining (if not yet) and start moving envoys in the background;
        a Deferred of the status at once. ``to`` is a bolt id or None (each
        envoy's owner)."""
        return self._starting.run(lambda: defer.ensureDeferred(self._start(to)))

    async def _start(self, to=None):
        roster = self.service.require_member()
        if self._running is not None:
            if to != self.progress["to"]:
                raise DrainRefused("conflict", "bolt %s is already draining to %s; wait for "
                                   "it to finish" % (self._id, self.progress["to"] or
                                                     "each envoy's owner"))
            return self.status()
        status = roster.status_of(self._id)
        if status == REMOVED:
            raise DrainRefused("removed", "bolt %s is removed" % (self._id,))
        if to is not None:
            if to == self._id:
                raise DrainRefused("same_bolt", "bolt %s cannot drain to itself" % (to,))
            if roster.status_of(to) != ACTIVE:
                raise DrainRefused("bolt_not_active", "bolt %s is %s: only an active bolt "
                                   "takes envoys" % (to, roster.status_of(to) or "unknown"))
        elif status == ACTIVE:
            self._check_owners(roster)
        await self.service.store.run(save_drain, to, int(self.service.reactor.seconds() * 1000))
        if status == ACTIVE:
            await self.service.publish_status(DRAINING)
        failpoint("drain.draining")
        self._begin(to)
        return self.status()

    def _check_owners(self, roster):
        """Refuse a drain to each envoy's owner that would leave envoys with
        none: the roster as it will be once this bolt is draining must give
        every active envoy here another bolt. Nothing is changed before."""
        from vigo.spanner.routing import NoOwner, owner_of

        identity = self.service.identity
        after = roster.copy()
        after.add_row(roster.row(self._id).successor(identity, status=DRAINING))
        orphans = []
        for envoy_id in self._active_ids():
            record = self.service.server.fleet.index.get(envoy_id)
            try:
                owner_of(after, record.hostname, envoy_id)
            except NoOwner:
                orphans.append(record.hostname)
        if orphans:
            raise DrainRefused("no_owner", "%d envoy(s) of bolt %s would have no owner once it "
                               "drains (%s%s): no other active bolt's patterns cover them; "
                               "drain it to one bolt with --to BOLT" % (
                                   len(orphans), self._id, ", ".join(sorted(orphans)[:3]),
                                   ", ..." if len(orphans) > 3 else ""))

    def resume(self):
        """After a restart: go on with a drain this bolt had not finished."""
        return self._starting.run(lambda: defer.ensureDeferred(self._resume()))

    async def _resume(self):
        roster = self.service.roster
        if roster is None or roster.status_of(self._id) != DRAINING or not self._active_ids():
            return
        held = await self.service.store.run(load_drain)
        to = None if held is None else held[0]
        if to is not None and roster.status_of(to) != ACTIVE:
            to = None  # the destination went away meanwhile: each envoy's owner
        self.log.info("bolt {id} resumes its drain", id=self._id)
        self._begin(to)

    def stop(self):
        """Move no more envoys; a Deferred that fires when the moves under way end."""
        self._stopping = True
        return defer.succeed(None) if self._running is None else self._running

    def _begin(self, to):
        self.progress = {"state": RUNNING, "to": to, "total": 0, "moved": 0, "failed": 0,
                         "errors": []}
        # A drain with nothing to move ends before ensureDeferred returns: the
        # callbacks, not _run, say it is no longer running.
        self._running = running = defer.ensureDeferred(self._run(to))
        running.addErrback(self._crashed)
        running.addBoth(self._ended)

    def _ended(self, _):
        self._running = None

    def _crashed(self, failure):
        self.log.failure("the drain of bolt {id} failed", failure, id=self._id)
        self._note(failure.getErrorMessage())
        self.progress["state"] = FAILED

    def _note(self, error):
        self.progress["errors"] = (self.progress["errors"] + [error])[-MAX_ERRORS:]

    async def _run(self, to):
        envoy_ids = self._active_ids()
        self.progress["total"] = len(envoy_ids)
        semaphore = defer.DeferredSemaphore(self.concurrency)
        await defer.gatherResults([semaphore.run(self._move, envoy_id, to)
                                   for envoy_id in envoy_ids])
        progress = self.progress
        progress["state"] = DONE if progress["failed"] == 0 and not self._stopping else FAILED
        self.log.info("bolt {id} drained: {moved} of {total} envoys moved, {failed} failed",
                      id=self._id, moved=progress["moved"], total=progress["total"],
                      failed=progress["failed"])

    def _move(self, envoy_id, to):
        return defer.ensureDeferred(self._move_one(envoy_id, to))

    async def _move_one(self, envoy_id, to):
        from vigo.spanner.routing import owner_of

        if self._stopping:
            return
        record = self.service.server.fleet.index.get(envoy_id)
        try:
            if record is None or record.state != ENVOY_ACTIVE:
                self.progress["moved"] += 1  # gone meanwhile (revoked, moved by hand)
                return
            dest = to or owner_of(self.service.roster, record.hostname, envoy_id).bolt_id
            if dest == self._id:
                raise DrainRefused("no_owner", "no other bolt owns %s" % (record.hostname,))
            d = self.service.facade.call(self._id, "reassign", {"envoy": envoy_id, "to": dest})
            await d.addTimeout(MOVE_TIMEOUT, self.service.reactor)
        except Exception as e:
            self.progress["failed"] += 1
            self._note("%s (%s): %s" % (envoy_id, getattr(record, "hostname", "?"), e))
            return
        self.progress["moved"] += 1
        failpoint("drain.moved")
