"""The fleet's half of handing envoys between bolts: export, accept, mark moved.

A hand-over (``vigo.spanner.reassign``) writes at two servers. The source
notes the move durably (``begin_move``), exports the envoy's durable fields,
and, once the destination has accepted them (``accept``: stored as active,
idempotent), marks the envoy moved with a redirect to its new server
(``move``, which ends the note in the same write) and sends a connected envoy
there at once. A note that outlives a crash is what the hand-over repair
(``vigo.spanner.handover``) finishes. The envoy keeps its id and key
throughout: no re-enrollment.

Envoys cross as plain data (public key in base64, applied version in hex), and
an accepted envoy's fields are checked before anything is stored.
"""

import json

from twisted.internet import defer
from zope.interface import implementer

from vigo.fleet import wire
from vigo.fleet.index import ACTIVE, MOVED, REVOKED, EnvoyRecord
from vigo.fleet.ownership import Redirected
from vigo.fleet.replay import first_reservation
from vigo.identity import key_id
from vigo.interfaces.components import IEnvoyMoves
from vigo.interfaces.errors import Refusal
from vigo.store import shielded

# -- store jobs ----------------------------------------------------------------------


def token_of(cursor, envoy_id):
    row = cursor.execute("SELECT token_id FROM envoys WHERE id = ?", (envoy_id,)).fetchone()
    return None if row is None else row[0]


def set_moved(cursor, envoy_id, redirect):
    """Mark an envoy moved, and end its pending move (``begin_move``) in the
    same transaction."""
    cursor.execute("UPDATE envoys SET state = 'moved', redirect = ? "
                   "WHERE id = ? AND state = 'active'",
                   (json.dumps(redirect, sort_keys=True), envoy_id))
    if cursor.rowcount != 1:  # revoked meanwhile, say: the note stays, for the repair
        raise Refusal("not_active", "envoy %s is no longer active on this bolt: it was not "
                      "marked moved (it is active at its destination now)" % (envoy_id,))
    cursor.execute("DELETE FROM envoy_moves WHERE envoy_id = ?", (envoy_id,))


def begin_move(cursor, envoy_id, target, started_at_ms):
    """Note that this bolt is handing ``envoy_id`` to bolt ``target``."""
    cursor.execute("INSERT OR REPLACE INTO envoy_moves (envoy_id, target, started_at_ms) "
                   "VALUES (?, ?, ?)", (envoy_id, target, started_at_ms))


def cancel_move(cursor, envoy_id):
    cursor.execute("DELETE FROM envoy_moves WHERE envoy_id = ?", (envoy_id,))


def load_moves(cursor, envoy_id=None):
    """``{envoy_id: (target, started_at_ms)}`` of the moves not finished (of
    envoy ``envoy_id`` alone, when given)."""
    if envoy_id is None:
        rows = cursor.execute("SELECT envoy_id, target, started_at_ms FROM envoy_moves")
    else:
        rows = cursor.execute("SELECT envoy_id, target, started_at_ms FROM envoy_moves "
                              "WHERE envoy_id = ?", (envoy_id,))
    return {envoy: (target, started) for envoy, target, started in rows}


def accept_envoy(cursor, fields, now):
    """Store an envoy handed over by another bolt as active; True if it changed
    anything. The same envoy (same id and key) again is accepted as it is; one
    that moved away from here comes back; a revoked one, a different key, or a
    hostname held by another active envoy are refused."""
    envoy_id, hostname, public_key = fields["id"], fields["hostname"], fields["public_key"]
    row = cursor.execute("SELECT public_key, state, hostname FROM envoys WHERE id = ?",
                         (envoy_id,)).fetchone()
    if row is not None and bytes(row[0]) != public_key:
        raise Refusal("key_mismatch", "envoy %s is stored here with another key" % (envoy_id,))
    if row is not None and row[1] == REVOKED:
        raise Refusal("revoked", "envoy %s is revoked on this bolt" % (envoy_id,))
    taken = cursor.execute(
        "SELECT id FROM envoys WHERE hostname = ? AND state = 'active' AND id != ?",
        (hostname, envoy_id)).fetchone()
    if taken is not None:
        raise Refusal("hostname_taken", "%s is already enrolled here as envoy %s; revoke it "
                      "first" % (hostname, taken[0]))
    if row is not None and row[1] == ACTIVE and row[2] == hostname:
        return False
    if row is None:
        cursor.execute(
            "INSERT INTO envoys (id, hostname, public_key, state, enrolled_at, token_id, "
            "last_seen, last_seq, seq_reserved, applied_version) "
            "VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?)",
            (envoy_id, hostname, public_key, fields["enrolled_at"], fields["token_id"], now,
             fields["last_seq"], first_reservation(fields["last_seq"], now),
             fields["applied_version"]))
    else:
        cursor.execute(
            "UPDATE envoys SET hostname = ?, state = 'active', redirect = NULL, "
            "last_seq = MAX(last_seq, ?), seq_reserved = MAX(seq_reserved, ?), "
            "applied_version = ? WHERE id = ?",
            (hostname, fields["last_seq"], first_reservation(fields["last_seq"], now),
             fields["applied_version"], envoy_id))
    return True


# -- the moves ------------------------------------------------------------------------


@implementer(IEnvoyMoves)
class EnvoyMoves:
    """Hand-overs of ``fleet``'s envoys. ``store`` is its ``IStore``, ``clock`` an
    ``IReactorTime``, ``envoy_address()`` where envoys reach this server now."""

    def __init__(self, fleet, store, clock, envoy_address):
        self._fleet = fleet
        self._store = store
        self._clock = clock
        self._envoy_address = envoy_address

    def endpoint(self):
        identity = self._fleet.identity
        return {"address": str(self._envoy_address()), "server_id": identity.id,
                "fingerprint": identity.fingerprint}

    def describe(self, key):
        record = self._fleet.index.lookup(key)
        return None if record is None else record.describe(self._clock.seconds())

    def active_envoys(self):
        return sorted((record.id, record.hostname) for record in self._fleet.index
                      if record.state == ACTIVE)

    def export(self, key):
        record = self._fleet.index.lookup(key)
        if record is None:
            return defer.succeed(None)

        def with_token(token_id):
            return {"id": record.id, "hostname": record.hostname,
                    "public_key": wire.b64(record.public_key), "state": record.state,
                    "redirect": record.redirect, "enrolled_at": record.enrolled_at,
                    "last_seq": record.last_seq,
                    "applied_version": record.applied_version.hex(), "token_id": token_id}

        return self._store.run(token_of, record.id).addCallback(with_token)

    def accept(self, fields):
        return defer.maybeDeferred(self._accept, fields)

    def _accept(self, fields):
        try:
            public_key = wire.unb64(fields["public_key"], "public_key", 32)
            applied = bytes.fromhex(fields["applied_version"])
        except (wire.WireError, ValueError) as e:
            raise Refusal("malformed", str(e)) from None
        if len(applied) != 32:
            raise Refusal("malformed", "applied_version must be 32 bytes (64 hex digits)")
        if key_id(public_key) != fields["id"]:
            raise Refusal("malformed", "envoy %s is not the id of its public key"
                          % (fields["id"],))
        fields = dict(fields, public_key=public_key, applied_version=applied)
        now = self._clock.seconds()
        d = self._store.run(accept_envoy, fields, now)
        d.addCallback(self._accepted, fields, now)
        return shielded(d)

    def _accepted(self, changed, fields, now):
        fleet = self._fleet
        record = fleet.index.get(fields["id"])
        if record is None:
            record = EnvoyRecord(
                fields["id"], fields["hostname"], fields["public_key"], None,
                enrolled_at=fields["enrolled_at"], last_seen=now,
                last_seq=fields["last_seq"], applied_version=fields["applied_version"],
                seq_reserved=first_reservation(fields["last_seq"], now))
            fleet.add(record)
        elif changed:
            if record.hostname != fields["hostname"]:
                fleet.index.set_state(record, MOVED)
                record.hostname = fields["hostname"]
                record.bundle = fleet.hostcrates.bundle_for(record.hostname)
            record.redirect = None
            record.last_seq = max(record.last_seq, fields["last_seq"])
            record.seq_reserved = max(record.seq_reserved,
                                      first_reservation(fields["last_seq"], now))
            record.applied_version = fields["applied_version"]
            fleet.index.set_state(record, ACTIVE)
        return record.id

    def move(self, envoy_id, redirect):
        return defer.maybeDeferred(self._move, envoy_id, redirect)

    def _move(self, envoy_id, redirect):
        fleet = self._fleet
        record = fleet.find(envoy_id)
        if record.state != ACTIVE:
            raise Refusal("not_active", "envoy %s is %s on this bolt, not active: it was not "
                          "marked moved" % (record.id, record.state))

        def moved(_):
            fleet.index.set_state(record, MOVED)
            record.redirect = dict(redirect)
            delivered = "next_attach"
            if record.connection is not None:
                record.connection.drop(Redirected(
                    reason="envoy %s moved to bolt %s" % (record.id, redirect["server_id"]),
                    **redirect))
                record.connection = None
                delivered = "now"
            if record.online:
                record.online = False
                fleet.stats.transition("online_to_offline")
            return delivered

        return shielded(self._store.run(set_moved, record.id, redirect).addCallback(moved))

    def begin_move(self, envoy_id, to):
        return self._store.run(begin_move, envoy_id, to, int(self._clock.seconds() * 1000))

    def cancel_move(self, envoy_id):
        return self._store.run(cancel_move, envoy_id)

    def pending_moves(self, envoy_id=None):
        return self._store.run(load_moves, envoy_id)
