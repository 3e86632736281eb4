"""The envoy reassignment actions: ``reassign`` and ``accept-envoy``.

``vigocli spanner bolt reassign ENVOY --to BOLT``, asked at any bolt, finds
the bolt holding the envoy active (the source) and calls ``reassign`` there.
The source calls ``accept-envoy`` at the destination with the envoy's durable
fields; the destination stores it as active and writes the override envoy ->
itself in the roster (both durable before it answers) and answers with where
envoys reach it. The source then marks the envoy moved, durably, with that
redirect, and sends it there now if it is connected (else at its next Attach).
The envoy keeps its id and key: no re-enrollment.

Both steps are idempotent, so running ``reassign`` again after a crash
anywhere finishes the job: the destination accepts the same envoy again (and
writes a missing override), and the source marks it moved if it had not. The
source notes the move durably before it asks the destination (a *pending
move*, ended in the same write that marks the envoy moved), so it does not
need an operator for that: ``vigo.spanner.handover`` runs ``reassign`` again
for every pending move at start-up and every little while, until the
destination answers or refuses. See docs/operations.md ("Reassigning an envoy").

A refusal is an ``ActionError`` whose message keeps the refusal's code
(``vigo.fleet.refusal.refusal_text``), so the bolt asked can answer with it.
"""

from twisted.internet import defer
from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.failpoints import failpoint
from vigo.interfaces import IPeerAction
from vigo.interfaces.schema import Float, Integer, Optional, String

ENVOY_ID = String(128, min_length=1)
BOLT_ID = String(128, min_length=1)
#: The durable fields of an envoy that ``accept-envoy`` takes.
ACCEPT_FIELDS = ("id", "hostname", "public_key", "enrolled_at", "last_seq",
                 "applied_version", "token_id")
#: ``accept-envoy`` refusals given before it stores anything: the move is off.
#: Any other failure leaves the move pending (the envoy may be stored there).
REFUSED_BEFORE_STORING = frozenset({"malformed", "key_mismatch", "revoked", "hostname_taken",
                                    "moving"})

#: (bolt id, envoy id) -> the lock that one bolt's reassigns and accepts of
#: that envoy take: an operator's reassign, a drain and the hand-over repair
#: run one at a time per envoy, each seeing what the last one left.
_locks = {}


async def _locked(bolt_id, envoy_id, work):
    """``await work()`` holding the (bolt, envoy) lock."""
    key = (bolt_id, envoy_id)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = defer.DeferredLock()
    try:
        return await lock.run(lambda: defer.ensureDeferred(work()))
    finally:
        if not lock.locked and not lock.waiting:
            _locks.pop(key, None)


def busy(bolt_id, envoy_id):
    """True while a reassign or an accept of the envoy runs at the bolt."""
    lock = _locks.get((bolt_id, envoy_id))
    return lock is not None and lock.locked


def _refused(code, reason):
    from vigo.fleet.refusal import Refusal, refusal_text
    from vigo.interfaces.errors import ActionError

    return ActionError(refusal_text(Refusal(code, reason)))


def _as_action_error(failure):
    from vigo.fleet.refusal import Refusal, refusal_text
    from vigo.interfaces.errors import ActionError

    if failure.check(Refusal):
        raise ActionError(refusal_text(failure.value))
    return failure


@implementer(IPlugin, IPeerAction)
class AcceptEnvoy:
    """Take, here, an envoy another bolt hands over, and claim it in the roster."""

    name = "accept-envoy"
    description = ("Store an envoy another bolt hands over as active here and write the "
                   "override envoy -> this bolt; answers where envoys reach this bolt.")
    argument_schema = {
        "id": ENVOY_ID,
        "hostname": String(253, min_length=1),
        "public_key": String(64, min_length=1),
        "enrolled_at": Float(0),
        "last_seq": Integer(0, 2**63 - 1),
        "applied_version": String(64, min_length=64, pattern="[0-9a-f]{64}"),
        "token_id": Optional(String(128)),
    }

    def run(self, bolt, caller_id, args):
        d = defer.ensureDeferred(_locked(bolt.id, args["id"],
                                         lambda: self._run(bolt, caller_id, args)))
        return d.addErrback(_as_action_error)

    async def _run(self, bolt, caller_id, args):
        fleet = bolt.fleet()
        pending = await fleet.pending_moves(args["id"])
        if pending.get(args["id"], (None,))[0] == caller_id:
            # This bolt is handing the envoy to the caller: a crossing move.
            raise _refused("moving", "bolt %s is moving envoy %s to bolt %s; it cannot take "
                           "it back before that ends" % (bolt.id, args["id"], caller_id))
        fields = {name: args.get(name) for name in ACCEPT_FIELDS}
        envoy_id = await defer.maybeDeferred(fleet.accept, fields)
        failpoint("accept.stored")
        await defer.maybeDeferred(bolt.write_override, envoy_id, bolt.id)
        failpoint("accept.claimed")
        return dict(fleet.endpoint(), envoy_id=args["id"], name=bolt.name)


@implementer(IPlugin, IPeerAction)
class Reassign:
    """Hand one envoy of this bolt to another bolt, and send it there."""

    name = "reassign"
    description = ("Move an envoy of this bolt (envoy: id or hostname) to bolt `to`: it "
                   "accepts it, then this bolt marks it moved and redirects it.")
    argument_schema = {
        "envoy": String(253, min_length=1),
        "to": BOLT_ID,
    }

    def run(self, bolt, caller_id, args):
        return defer.ensureDeferred(self._run(bolt, args)).addErrback(_as_action_error)

    async def _run(self, bolt, args):
        fleet, to = bolt.fleet(), args["to"]
        if to == bolt.id:
            raise _refused("same_bolt", "envoy %s is already on bolt %s" % (args["envoy"], to))
        found = fleet.describe(args["envoy"])
        if found is None:
            raise _refused("not_found", "no envoy %r on bolt %s" % (args["envoy"], bolt.id))
        return await _locked(bolt.id, found["id"], lambda: self._move(bolt, found["id"], to))

    async def _move(self, bolt, envoy_id, to):
        from vigo.fleet.index import ACTIVE, MOVED
        from vigo.fleet.refusal import refusal_from_text
        from vigo.interfaces.errors import ActionError, PeerUnreachable

        fleet = bolt.fleet()
        fields = await fleet.export(envoy_id)  # again, now that no other move runs
        if fields is None:
            raise _refused("not_found", "no envoy %r on bolt %s" % (envoy_id, bolt.id))
        if fields["state"] == MOVED and (fields["redirect"] or {}).get("server_id") == to:
            await fleet.cancel_move(envoy_id)
            return {"envoy_id": envoy_id, "hostname": fields["hostname"], "from": bolt.id,
                    "to": to, "changed": False, "delivered": "next_attach"}
        if fields["state"] != ACTIVE:
            await fleet.cancel_move(envoy_id)  # revoked or gone elsewhere: nothing to finish
            where = fields["redirect"] or {}
            raise _refused("not_active", "envoy %s is %s on bolt %s%s" % (
                envoy_id, fields["state"], bolt.id,
                " (to bolt %s)" % (where["server_id"],) if where.get("server_id") else ""))
        await fleet.begin_move(envoy_id, to)
        failpoint("reassign.journaled")
        try:
            accepted = await bolt.call(to, "accept-envoy",
                                       {name: fields[name] for name in ACCEPT_FIELDS})
        except PeerUnreachable as e:
            raise _refused("unreachable", "bolt %s cannot be reached (%s); envoy %s stays on "
                           "bolt %s, and the move is pending: bolt %s finishes it once bolt "
                           "%s answers" % (to, e, envoy_id, bolt.id, bolt.id, to)) from None
        except ActionError as e:
            if refusal_from_text(str(e), "action_failed").code in REFUSED_BEFORE_STORING:
                await fleet.cancel_move(envoy_id)
            raise
        failpoint("reassign.accepted")
        redirect = {"address": accepted["address"], "server_id": accepted["server_id"],
                    "fingerprint": accepted["fingerprint"]}
        if redirect["server_id"] != to or accepted.get("envoy_id") != envoy_id:
            raise _refused("bad_answer", "bolt %s answered accept-envoy for %s as %s"
                           % (to, envoy_id, redirect["server_id"]))
        delivered = await fleet.move(envoy_id, redirect)
        bolt.log.info("envoy {envoy} ({hostname}) moved to bolt {to}",
                      envoy=envoy_id, hostname=fields["hostname"], to=to)
        return {"envoy_id": envoy_id, "hostname": fields["hostname"], "from": bolt.id,
                "to": to, "changed": True, "delivered": delivered}


accept_envoy = AcceptEnvoy()
reassign = Reassign()
