"""Roster snapshots: any bytes as served by a bolt.

``open_snapshot`` may raise only ``SnapshotError``; a snapshot it opens merges
into a roster without an exception. Inputs whose first byte is odd are read
as JSON and re-signed by the serving bolt first -- a member that lies -- so
that hostile rows and records reach ``Roster.merge`` past the signature.
"""

import json
import sys

import harness

with harness.instrumented():
    from vigo.fleet import wire
    from vigo.spanner.roster import parts as roster_parts
    from vigo.spanner.roster import snapshot as snapshot_module
    from vigo.spanner.roster.crdt import Roster
    from vigo.spanner.roster.snapshot import SnapshotError, encode_snapshot, open_snapshot

from tests.rosterkit import B0, FED, FOUNDER, ITEMS, delivered  # noqa: E402

SIGNED = snapshot_module.sign_snapshot(delivered(ITEMS), B0, 123_456)


def resigned(data):
    """``data`` (a snapshot-shaped dict) with B0's signature over its roster,
    when its roster reads as ``RosterParts``; else ``data`` as it is."""
    try:
        parts = roster_parts.RosterParts.from_data(data.get("roster"))
    except (roster_parts.RosterError, RecursionError):
        return data
    digest = roster_parts.parts_digest(parts)
    message = snapshot_module._message(digest, B0.id, 5, parts.federation_id, parts.founder_id)
    return dict(data, digest=wire.b64(digest), bolt_id=B0.id, at_ms=5,
                signature=wire.b64(B0.sign(message)))


def test_one_input(data):
    if data[:1] and data[0] & 1:
        try:
            document = json.loads(data[1:])
        except (ValueError, RecursionError):
            return
        if not isinstance(document, dict):
            return
        data = resigned(document)
    try:
        opened = open_snapshot(data, B0.public_key)
    except SnapshotError:
        return
    Roster(FED, FOUNDER.id).merge(opened.parts)


SEEDS = [b"\x00" + encode_snapshot(SIGNED), b"\x01" + encode_snapshot(SIGNED),
         encode_snapshot(SIGNED)[:200]]

if __name__ == "__main__":
    harness.run(test_one_input, SEEDS, max_len=4 * len(SEEDS[0]))
    sys.exit(0)
