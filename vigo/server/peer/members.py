"""The replica set's records, in the replicated database: members, invitations, epochs.

Store jobs (each a function of a cursor). Members are the nodes that may
use the replication port, pinned by their node keys; a removed member
stays, marked, so a removal is never undone by a late message. Invitations
are one-shot and expiring, stored as the hash of their secret. Each
promotion records its epoch and the LSN its first entry has, so a primary
can tell whether a member of an older epoch holds entries it lacks.
"""

import attr

from vigo.identity import key_fingerprint, key_id
from vigo.tokens import hash_secret


class InviteError(Exception):
    """An invitation that cannot be redeemed; the message says why."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Member:
    node_id: str
    node_key: bytes
    envoy_address: str
    api_url: str
    replication_address: str
    added_at: float
    removed_at: object = None

    @property
    def fingerprint(self):
        return key_fingerprint(self.node_key)

    def describe(self):
        return {"node_id": self.node_id, "envoy_address": self.envoy_address,
                "api_url": self.api_url, "replication_address": self.replication_address,
                "added_at": self.added_at}


_COLUMNS = "node_id, node_key, envoy_address, api_url, replication_address, added_at, removed_at"


def load_members(cursor):
    """Every member not removed, by node id."""
    rows = cursor.execute("SELECT %s FROM replica_members WHERE removed_at IS NULL "
                          "ORDER BY added_at, node_id" % (_COLUMNS,)).fetchall()
    return {row[0]: Member(row[0], bytes(row[1]), *row[2:]) for row in rows}


def add_member(cursor, node_key, envoy_address, api_url, replication_address, now):
    """Make ``node_key``'s node a member (again); its ``Member``."""
    member = Member(key_id(node_key), node_key, envoy_address, api_url, replication_address,
                    now)
    cursor.execute("INSERT OR REPLACE INTO replica_members (%s) VALUES (?, ?, ?, ?, ?, ?, ?)"
                   % (_COLUMNS,), attr.astuple(member))
    return member


def update_addresses(cursor, node_id, envoy_address, api_url, replication_address):
    """A member's addresses as it now listens (a primary at start)."""
    cursor.execute("UPDATE replica_members SET envoy_address = ?, api_url = ?, "
                   "replication_address = ? WHERE node_id = ?",
                   (envoy_address, api_url, replication_address, node_id))


def remove_member(cursor, node_id, now):
    """Mark ``node_id`` removed; False when it is not a member."""
    cursor.execute("UPDATE replica_members SET removed_at = ? "
                   "WHERE node_id = ? AND removed_at IS NULL", (now, node_id))
    return cursor.rowcount == 1


def create_invite(cursor, invite_id, secret, now, expires_at):
    cursor.execute("INSERT INTO replica_invites (id, secret_hash, created_at, expires_at) "
                   "VALUES (?, ?, ?, ?)", (invite_id, hash_secret(secret), now, expires_at))


def redeem_invite(cursor, invite_id, secret, node_id, now):
    """Use invitation ``invite_id`` up for ``node_id``; ``InviteError`` if it cannot be."""
    row = cursor.execute("SELECT secret_hash, expires_at, used_by FROM replica_invites "
                         "WHERE id = ?", (invite_id,)).fetchone()
    if row is None or bytes(row[0]) != hash_secret(secret):
        raise InviteError("no such standby invitation at this primary")
    if row[2] is not None:
        raise InviteError("this standby invitation was used already (by %s); make a new "
                          "one with: vigocli server standby invite" % (row[2],))
    if row[1] <= now:
        raise InviteError("this standby invitation has expired; make a new one with: "
                          "vigocli server standby invite")
    cursor.execute("UPDATE replica_invites SET used_by = ?, used_at = ? WHERE id = ?",
                   (node_id, now, invite_id))


def replication_position(cursor):
    """``(lsn, epoch)`` of this database."""
    return tuple(cursor.execute("SELECT lsn, epoch FROM replication_state").fetchone())


def record_promotion(cursor, epoch, node_id, now):
    """Raise the epoch to ``epoch`` in the transaction under way, whose entry
    is the epoch's first."""
    lsn, _ = replication_position(cursor)
    cursor.execute("UPDATE replication_state SET epoch = ?", (epoch,))
    cursor.execute("INSERT OR REPLACE INTO replication_epochs (epoch, start_lsn, node_id, "
                   "promoted_at) VALUES (?, ?, ?, ?)", (epoch, lsn + 1, node_id, now))


def epoch_starts(cursor):
    """``{epoch: first LSN}`` of every promotion on record."""
    return dict(cursor.execute("SELECT epoch, start_lsn FROM replication_epochs"))


def diverged(starts, epoch, lsn, primary_epoch):
    """True when a member at ``epoch`` holding entries up to ``lsn`` holds an
    entry the primary (at ``primary_epoch``, with promotions ``starts``) lacks:
    one written after a later epoch began."""
    if epoch >= primary_epoch:
        return False
    later = [start for e, start in starts.items() if epoch < e <= primary_epoch]
    return bool(later) and lsn >= min(later)
