"""The fleet's durable jobs: what ``Fleet`` asks the store to do.

Each runs on the store thread inside one transaction (``IStore.run``); the
fleet answers only after the commit. ``write_behind`` is the batched one.
"""

import json

from vigo.fleet.index import ACTIVE, REVOKED
from vigo.fleet.refusal import Refusal

FLUSH_BATCH = 500  # rows an UPDATE batch writes behind


def load_envoys(cursor):
    return cursor.execute(
        "SELECT id, hostname, public_key, state, enrolled_at, last_seen, last_seq, "
        "checkins, applied_version, pending_push, redirect FROM envoys"
    ).fetchall()


def write_behind(cursor, rows):
    for start in range(0, len(rows), FLUSH_BATCH):
        cursor.executemany(
            "UPDATE envoys SET last_seen = ?, last_seq = MAX(last_seq, ?), "
            "checkins = ?, applied_version = ?, pending_push = ? WHERE id = ?",
            rows[start : start + FLUSH_BATCH],
        )


def set_pending_push(cursor, envoy_id, pending):
    cursor.execute(
        "UPDATE envoys SET pending_push = ? WHERE id = ?", (int(pending), envoy_id)
    )


def set_pending_pushes(cursor, envoy_ids):
    for start in range(0, len(envoy_ids), FLUSH_BATCH):
        cursor.executemany(
            "UPDATE envoys SET pending_push = 1 WHERE id = ?",
            [(envoy_id,) for envoy_id in envoy_ids[start : start + FLUSH_BATCH]],
        )


def set_state(cursor, envoy_id, state):
    cursor.execute("UPDATE envoys SET state = ? WHERE id = ?", (state, envoy_id))


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
            "last_seen, last_seq, applied_version) VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?)",
            (envoy_id, hostname, public_key, fields["enrolled_at"], fields["token_id"], now,
             fields["last_seq"], fields["applied_version"]))
    else:
        cursor.execute(
            "UPDATE envoys SET hostname = ?, state = 'active', redirect = NULL, "
            "last_seq = MAX(last_seq, ?), applied_version = ? WHERE id = ?",
            (hostname, fields["last_seq"], fields["applied_version"], envoy_id))
    return True
