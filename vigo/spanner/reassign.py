"""Reassign: hand one envoy from the bolt that holds it to another, keeping its id and key.

A hand-over writes at two bolts, so it is a saga with explicit steps, each a
durable fact, taken only along ``SOURCE_STEPS`` and ``DESTINATION_STEPS``:

* at the **source** (``Reassigner.reassign``): ``journaled`` (the move is noted
  in ``envoy_moves``), then ``accepted`` (the destination said yes), then
  ``moved`` (the envoy is marked moved with a redirect, in the same write that
  ends the note, and sent there now if it is connected);
* at the **destination** (``Reassigner.accept``, the ``accept-envoy`` action):
  ``stored`` (the envoy is active here), then ``claimed`` (the roster's
  override gives it to this bolt), then it answers with where envoys reach it.

Every step is idempotent, so running a hand-over again after a crash anywhere
finishes it: the destination accepts the same envoy again (and writes a
missing override), and the source marks it moved if it had not. A note that
outlives a crash is finished by ``vigo.spanner.handover`` with no operator. A
refusal given before the destination stored anything ends the move
(``cancelled``); an unreachable destination, or one whose answer was lost,
leaves it ``pending``. Each step is also a failpoint (``reassign.journaled``,
``accept.stored``, ...) for the crash tests (``vigo.failpoints``).

One bolt runs the hand-overs and accepts of one envoy one at a time
(``EnvoyLocks``): an operator's reassign, a drain and the repair each see
what the last one left. ``reassign_anywhere`` is the asking side: any bolt
finds the one bolt holding the envoy active and has it hand the envoy over.
See docs/operations.md ("Reassigning an envoy").
"""

import enum

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from vigo.failpoints import failpoint
from vigo.fleet.index import ACTIVE, MOVED
from vigo.interfaces.components import IReassigner
from vigo.interfaces.errors import ActionError, PeerUnreachable, Refusal
from vigo.spanner.peer.asking import ask

#: The durable fields of an envoy that ``accept-envoy`` takes.
ACCEPT_FIELDS = ("id", "hostname", "public_key", "enrolled_at", "last_seq",
                 "applied_version", "token_id")
#: ``accept-envoy`` refusals given before it stores anything: the move is off.
#: Any other failure leaves the move pending (the envoy may be stored there).
REFUSED_BEFORE_STORING = frozenset({"malformed", "key_mismatch", "revoked", "hostname_taken",
                                    "moving"})


class Step(enum.Enum):
    """Where a hand-over is, at the source (``reassign.*``) or the destination
    (``accept.*``)."""

    STARTED = "started"
    JOURNALED = "journaled"
    ACCEPTED = "accepted"
    MOVED = "moved"
    DONE_BEFORE = "done_before"  # moved to that bolt by an earlier run
    CANCELLED = "cancelled"
    PENDING = "pending"
    STORED = "stored"
    CLAIMED = "claimed"


SOURCE_STEPS = {
    Step.STARTED: {Step.JOURNALED, Step.DONE_BEFORE, Step.CANCELLED},
    Step.JOURNALED: {Step.ACCEPTED, Step.CANCELLED, Step.PENDING},
    Step.ACCEPTED: {Step.MOVED, Step.PENDING},
}
DESTINATION_STEPS = {
    Step.STARTED: {Step.STORED},
    Step.STORED: {Step.CLAIMED},
}


class Saga:
    """One run of a hand-over's steps at one bolt: ``advance`` only along
    ``steps``; each step reached is failpoint ``<side>.<step>``."""

    def __init__(self, side, steps):
        self.side = side
        self.steps = steps
        self.step = Step.STARTED
        self.history = [Step.STARTED]

    def advance(self, step):
        if step not in self.steps.get(self.step, ()):
            raise RuntimeError("a %s hand-over cannot go from %s to %s"
                               % (self.side, self.step.value, step.value))
        self.step = step
        self.history.append(step)
        failpoint("%s.%s" % (self.side, step.value))


class EnvoyLocks:
    """One lock per envoy of one bolt, held while a hand-over or an accept of
    it runs here; a lock no one holds or waits for is forgotten."""

    def __init__(self):
        self._locks = {}

    @defer.inlineCallbacks
    def run(self, envoy_id, work):
        """``work()`` (a Deferred-returning callable) holding the envoy's lock."""
        lock = self._locks.get(envoy_id)
        if lock is None:
            lock = self._locks[envoy_id] = defer.DeferredLock()
        try:
            result = yield lock.run(work)
        finally:
            if not lock.locked and not lock.waiting:
                self._locks.pop(envoy_id, None)
        return result

    def busy(self, envoy_id):
        lock = self._locks.get(envoy_id)
        return lock is not None and lock.locked


def _refused(code, reason):
    return Refusal(code, reason)


@implementer(IReassigner)
class Reassigner:
    """Both ends of hand-overs at the bolt ``bolt_id`` (named ``name()``).

    ``moves`` is its fleet's ``IEnvoyMoves``; ``roster`` its ``ILocalRoster``
    (the destination claims the envoy with an override); ``peers`` an
    ``IPeerCaller`` reaching the other bolts.
    """

    log = Logger()

    def __init__(self, bolt_id, name, moves, roster, peers):
        self.bolt_id = bolt_id
        self._name = name
        self._moves = moves
        self._roster = roster
        self._peers = peers
        self.locks = EnvoyLocks()

    def busy(self, envoy_id):
        return self.locks.busy(envoy_id)

    # -- at the source ----------------------------------------------------------------

    def reassign(self, envoy, to):
        """Hand envoy ``envoy`` (id or hostname) to bolt ``to``; a Deferred of
        ``{"envoy_id", "hostname", "from", "to", "changed", "delivered"}``."""
        if to == self.bolt_id:
            return defer.fail(_refused("same_bolt", "envoy %s is already on bolt %s"
                                       % (envoy, to)))
        found = self._moves.describe(envoy)
        if found is None:
            return defer.fail(_refused("not_found", "no envoy %r on bolt %s"
                                       % (envoy, self.bolt_id)))
        envoy_id = found["id"]
        return self.locks.run(envoy_id, lambda: self._hand_over(envoy_id, to))

    @defer.inlineCallbacks
    def _hand_over(self, envoy_id, to):
        moves, saga = self._moves, Saga("reassign", SOURCE_STEPS)
        fields = yield moves.export(envoy_id)  # again, now that no other move runs
        if fields is None:
            raise _refused("not_found", "no envoy %r on bolt %s" % (envoy_id, self.bolt_id))
        if fields["state"] == MOVED and (fields["redirect"] or {}).get("server_id") == to:
            yield moves.cancel_move(envoy_id)
            saga.advance(Step.DONE_BEFORE)
            return {"envoy_id": envoy_id, "hostname": fields["hostname"],
                    "from": self.bolt_id, "to": to, "changed": False,
                    "delivered": "next_attach"}
        if fields["state"] != ACTIVE:
            yield moves.cancel_move(envoy_id)  # revoked or gone elsewhere: nothing to finish
            saga.advance(Step.CANCELLED)
            where = fields["redirect"] or {}
            raise _refused("not_active", "envoy %s is %s on bolt %s%s" % (
                envoy_id, fields["state"], self.bolt_id,
                " (to bolt %s)" % (where["server_id"],) if where.get("server_id") else ""))
        yield moves.begin_move(envoy_id, to)
        saga.advance(Step.JOURNALED)
        try:
            accepted = yield self._peers.call(
                to, "accept-envoy", {name: fields[name] for name in ACCEPT_FIELDS})
        except PeerUnreachable as e:
            saga.advance(Step.PENDING)
            raise _refused("unreachable", "bolt %s cannot be reached (%s); envoy %s stays on "
                           "bolt %s, and the move is pending: bolt %s finishes it once bolt "
                           "%s answers" % (to, e, envoy_id, self.bolt_id, self.bolt_id,
                                           to)) from None
        except Refusal as e:
            if e.code in REFUSED_BEFORE_STORING:
                yield moves.cancel_move(envoy_id)
                saga.advance(Step.CANCELLED)
            else:
                saga.advance(Step.PENDING)
            if isinstance(e, ActionError):  # the destination's own refusal: say whose
                raise ActionError("bolt %s refused envoy %s from bolt %s: %s" % (
                    to, envoy_id, self.bolt_id, e.reason), code=e.code,
                    retryable=e.retryable) from None
            raise
        saga.advance(Step.ACCEPTED)
        redirect = {"address": accepted.get("address"), "server_id": accepted.get("server_id"),
                    "fingerprint": accepted.get("fingerprint")}
        if redirect["server_id"] != to or accepted.get("envoy_id") != envoy_id:
            saga.advance(Step.PENDING)
            raise _refused("bad_answer", "bolt %s answered accept-envoy for %s as %s"
                           % (to, envoy_id, redirect["server_id"]))
        delivered = yield moves.move(envoy_id, redirect)
        saga.advance(Step.MOVED)
        self.log.info("envoy {envoy} ({hostname}) moved to bolt {to}",
                      envoy=envoy_id, hostname=fields["hostname"], to=to)
        return {"envoy_id": envoy_id, "hostname": fields["hostname"], "from": self.bolt_id,
                "to": to, "changed": True, "delivered": delivered}

    # -- at the destination --------------------------------------------------------------

    def accept(self, caller_id, fields):
        """Take the envoy bolt ``caller_id`` hands over (``ACCEPT_FIELDS``) and
        claim it; a Deferred of where envoys reach this bolt."""
        return self.locks.run(fields["id"], lambda: self._accept(caller_id, fields))

    @defer.inlineCallbacks
    def _accept(self, caller_id, fields):
        moves, saga = self._moves, Saga("accept", DESTINATION_STEPS)
        pending = yield moves.pending_moves(fields["id"])
        if pending.get(fields["id"], (None,))[0] == caller_id:
            # This bolt is handing the envoy to the caller: a crossing move.
            raise _refused("moving", "bolt %s is moving envoy %s to bolt %s; it cannot take "
                           "it back before that ends" % (self.bolt_id, fields["id"],
                                                         caller_id))
        envoy_id = yield moves.accept({name: fields.get(name) for name in ACCEPT_FIELDS})
        saga.advance(Step.STORED)
        yield self._roster.write_override(envoy_id, self.bolt_id)
        saga.advance(Step.CLAIMED)
        return dict(moves.endpoint(), envoy_id=fields["id"], name=self._name())


@defer.inlineCallbacks
def reassign_anywhere(reads, bolt, clock, roster, key, target):
    """Move envoy ``key`` (id or hostname) to bolt ``target`` (an id), asked at
    any bolt: find the one bolt holding it active (``reads.holders``) and run
    ``reassign`` there, through ``bolt`` (this bolt's ``IBolt``: its ``call``
    reaches this bolt too). ``roster`` is its ``ILocalRoster``."""
    status = roster.status_of(target)
    if status is None:
        raise Refusal("not_found", "no bolt %r in the roster" % (target,))
    if status != "active":
        raise Refusal("bolt_not_active", "bolt %s (%s) is %s: only an active bolt takes "
                      "envoys" % (target, roster.row(target).name, status))
    holders, silent = yield reads.holders(key)
    active = [h for h in holders if h[2].get("state") == ACTIVE]
    sources = [h for h in active if h[0] != target]
    names = dict(reads.bolts())
    if len(sources) > 1:
        raise Refusal("conflict", "envoy %r is active on %d bolts (%s); revoke it on all but "
                      "one first" % (key, len(sources), ", ".join(h[0] for h in sources)))
    if not sources:
        if active:  # on the destination alone: done already
            envoy = active[0][2]
            return {"envoy_id": envoy["id"], "hostname": envoy["hostname"], "from": None,
                    "from_name": None, "to": target, "to_name": names.get(target),
                    "changed": False, "delivered": None}
        if silent:
            raise Refusal("unreachable", "envoy %r is active on none of the bolts that "
                          "answered; it may be on one that did not: %s"
                          % (key, "; ".join(silent)))
        if holders:
            raise Refusal("not_active", "envoy %r is active on no bolt (%s)" % (key, ", ".join(
                "%s on %s" % (h[2].get("state"), h[0]) for h in holders)))
        raise Refusal("not_found", "no envoy %r on any of the %d bolts" % (key, len(names)))
    source, source_name, envoy = sources[0]
    answer = yield ask(bolt, clock, source, "reassign", {"envoy": envoy["id"], "to": target})
    return dict(answer, from_name=source_name, to_name=names.get(target))
