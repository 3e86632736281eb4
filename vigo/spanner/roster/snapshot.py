"""Signed roster snapshots: what ``GET /api/v1/spanner/roster`` serves and pullers open.

The serving bolt signs the roster's digest (with its id, the time and the
federation and founder ids), and the puller checks that signature against
the key it has pinned for the bolt it asked -- never against a key the
snapshot brings along. Then the digest is recomputed from the contents, so
the signature covers every byte. That proves only who served it: each row
and record inside is still verified on its own by ``Roster.merge``, because a
member can be wrong (or lie) about others' rows.

The input is untrusted bytes from the network. Every size, type and count is
checked before any signature work, and anything wrong raises
``SnapshotError`` with a reason -- never another exception.
"""

import json

import attr

from vigo.spanner.canonical import SpannerError, b64, canonical, unb64
from vigo.spanner.roster.parts import RosterParts, parts_digest
from vigo.spanner.roster.records import RosterError, check_bolt_id, derive_id, verify

SNAPSHOT_CONTEXT = b"vigo-roster-snapshot-v1\x00"
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
_FIELDS = frozenset(("roster", "digest", "bolt_id", "at_ms", "signature"))


class SnapshotError(SpannerError):
    """A snapshot that cannot be used; ``reason`` is ``malformed``, ``oversize``,
    ``wrong_bolt``, ``foreign``, ``bad_signature`` or ``digest``."""


@attr.s(frozen=True)
class Snapshot:
    """An opened snapshot: its parts (to ``Roster.merge``), who served it, when."""

    parts = attr.ib()
    digest = attr.ib()
    bolt_id = attr.ib()
    at_ms = attr.ib()


def _message(digest, bolt_id, at_ms, federation_id, founder_id):
    return SNAPSHOT_CONTEXT + canonical({
        "digest": b64(digest), "bolt_id": bolt_id, "at_ms": at_ms,
        "federation_id": federation_id, "founder_id": founder_id})


def sign_snapshot(roster, identity, now_ms):
    """The JSON-ready snapshot of ``roster``, signed by ``identity`` at ``now_ms``."""
    digest = roster.digest()
    message = _message(digest, identity.id, now_ms, roster.federation_id, roster.founder_id)
    return {
        "roster": roster.to_data(),
        "digest": b64(digest),
        "bolt_id": identity.id,
        "at_ms": now_ms,
        "signature": b64(identity.sign(message)),
    }


def encode_snapshot(snapshot):
    """A signed snapshot dict as the bytes to serve."""
    return canonical(snapshot)


def open_snapshot(data, expected_bolt_key, federation_id=None):
    """Check a snapshot served by the bolt whose pinned key is ``expected_bolt_key``.

    ``data`` is the decoded JSON object or the raw bytes/text. With
    ``federation_id``, a snapshot of another federation is refused up front.
    Returns a ``Snapshot``; merge its ``parts`` to verify and take the rows.
    """
    try:
        return _open(data, expected_bolt_key, federation_id)
    except SnapshotError:
        raise
    except SpannerError as e:
        raise SnapshotError(e.reason, "the snapshot is not acceptable: %s" % (e,)) from None
    except RecursionError:
        raise SnapshotError("malformed", "the snapshot is nested too deeply") from None


def _open(data, expected_bolt_key, federation_id):
    if isinstance(data, (bytes, bytearray, str)):
        if len(data) > MAX_SNAPSHOT_BYTES:
            raise SnapshotError("oversize", "the snapshot is over %d bytes" % (MAX_SNAPSHOT_BYTES,))
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise SnapshotError("malformed", "the snapshot is not JSON") from None
    if type(data) is not dict or data.keys() != _FIELDS:
        raise SnapshotError("malformed", "a snapshot is an object with exactly the fields "
                            + ", ".join(sorted(_FIELDS)))
    if type(expected_bolt_key) is not bytes or len(expected_bolt_key) != 32:
        raise SnapshotError("wrong_bolt", "the pinned key must be 32 bytes")
    bolt_id = check_bolt_id(data["bolt_id"])
    if derive_id(expected_bolt_key) != bolt_id:
        raise SnapshotError("wrong_bolt", "the snapshot is from bolt %s, not the bolt asked (%s)"
                            % (bolt_id, derive_id(expected_bolt_key)))
    at_ms = data["at_ms"]
    if type(at_ms) is not int or not 0 <= at_ms < 2**53:
        raise SnapshotError("malformed", "at_ms must be a non-negative integer")
    digest = unb64(data["digest"], "digest", 32)
    signature = unb64(data["signature"], "signature", 64)
    roster = data["roster"]
    if federation_id is not None and type(roster) is dict and (
            roster.get("federation_id") != federation_id):
        raise SnapshotError("foreign", "the snapshot is of federation %r, not %s"
                            % (str(roster.get("federation_id"))[:64], federation_id))
    try:
        parts = RosterParts.from_data(roster)
    except RosterError as e:
        raise SnapshotError(e.reason, "the snapshot's roster is malformed: %s" % (e,)) from None
    message = _message(digest, bolt_id, at_ms, parts.federation_id, parts.founder_id)
    if not verify(expected_bolt_key, message, signature):
        raise SnapshotError("bad_signature", "the snapshot is not signed by bolt %s" % (bolt_id,))
    if parts_digest(parts) != digest:
        raise SnapshotError("digest", "the snapshot's contents do not match its signed digest")
    return Snapshot(parts, digest, bolt_id, at_ms)
