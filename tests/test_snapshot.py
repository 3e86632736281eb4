"""Signed roster snapshots: only the pinned bolt's, only intact, never a crash."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests.documents import json_paths, replaced
from tests.rosterkit import B0, B1, FED, FOUNDER, ITEMS, OUTSIDER, delivered
from vigo.spanner.canonical import canonical
from vigo.spanner.roster import parts as roster_module
from vigo.spanner.roster import snapshot as snapshot_module
from vigo.spanner.roster.crdt import Roster
from vigo.spanner.roster.snapshot import (
    SnapshotError,
    encode_snapshot,
    open_snapshot,
    sign_snapshot,
)

ROSTER = delivered(ITEMS)
SIGNED = sign_snapshot(ROSTER, B0, 123_456)
WIRE = encode_snapshot(SIGNED)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


PATHS = list(json_paths(SIGNED))


class SnapshotTests(unittest.SynchronousTestCase):
    def test_round_trip(self):
        for data in (SIGNED, WIRE, WIRE.decode("ascii"), json.loads(WIRE)):
            opened = open_snapshot(data, B0.public_key, FED)
            self.assertEqual((opened.bolt_id, opened.at_ms), (B0.id, 123_456))
            fresh = Roster(opened.parts.federation_id, opened.parts.founder_id)
            report = fresh.merge(opened.parts)
            self.assertFalse(report.rejected)
            self.assertEqual(fresh.digest(), ROSTER.digest())
            self.assertEqual(opened.digest, ROSTER.digest())

    def assertRefused(self, data, reason, key=None):
        error = self.assertRaises(SnapshotError, open_snapshot, data,
                                  key or B0.public_key, FED)
        self.assertEqual(error.reason, reason, str(error))

    def test_wrong_key(self):
        self.assertRefused(SIGNED, "wrong_bolt", key=B1.public_key)
        self.assertRefused(SIGNED, "wrong_bolt", key=b"short")

    def test_signed_by_another_key(self):
        forged = sign_snapshot(ROSTER, OUTSIDER, 1)
        forged["bolt_id"] = B0.id
        self.assertRefused(forged, "bad_signature")

    def test_tampered(self):
        self.assertRefused(replaced(SIGNED, ("at_ms",), 999), "bad_signature")
        other_digest = sign_snapshot(delivered(ITEMS[:3]), B0, 1)["digest"]
        self.assertRefused(replaced(SIGNED, ("digest",), other_digest), "bad_signature")
        # Contents changed under a valid signature: the digest no longer matches.
        self.assertRefused(replaced(SIGNED, ("roster", "rows", 0, "name"), "evil"), "digest")
        self.assertRefused(replaced(SIGNED, ("roster", "overrides"), []), "digest")
        rows = SIGNED["roster"]["rows"]
        self.assertRefused(replaced(SIGNED, ("roster", "rows"), rows + rows[:1]), "digest")

    def test_a_signed_forgery_still_does_not_merge(self):
        # A member that signs a snapshot holding a forged row: the snapshot
        # opens (its server really sent it), the row is refused by the merge.
        roster = delivered(ITEMS)
        data = roster.to_data()
        data["rows"][0]["name"] = "evil"
        forged_parts = roster_module.RosterParts.from_data(data)
        message = snapshot_module._message(
            roster_module.parts_digest(forged_parts), B0.id, 5, FED, FOUNDER.id)
        snapshot = {"roster": data, "digest": snapshot_module.b64(
            roster_module.parts_digest(forged_parts)), "bolt_id": B0.id, "at_ms": 5,
            "signature": snapshot_module.b64(B0.sign(message))}
        opened = open_snapshot(snapshot, B0.public_key)
        report = Roster(FED, FOUNDER.id).merge(opened.parts)
        self.assertEqual(report.rejected["bad_signature"], 1)

    def test_foreign(self):
        self.assertRefused(replaced(SIGNED, ("roster", "federation_id"), "elsewhere"), "foreign")

    def test_oversize(self):
        self.patch(snapshot_module, "MAX_SNAPSHOT_BYTES", 100)
        self.assertRefused(WIRE, "oversize")

    def test_too_many_rows(self):
        self.patch(roster_module, "_LIMITS", dict(roster_module._LIMITS, rows=2))
        self.assertRefused(SIGNED, "malformed")

    def test_garbage(self):
        for data in (b"", b"{", b"\xff\xfe", b"[]", b"null", "{}", 7, None, [SIGNED],
                     b"[" * 100_000, canonical({"roster": 1})):
            self.assertRaises(SnapshotError, open_snapshot, data, B0.public_key)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(PATHS), json_values)
    def test_mutated_fields_only_ever_raise_snapshot_error(self, path, value):
        mutated = replaced(SIGNED, path, value)
        try:
            opened = open_snapshot(mutated, B0.public_key, FED)
        except SnapshotError:
            return
        Roster(FED, FOUNDER.id).merge(opened.parts)  # and merging it does not crash

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
    def test_random_input_only_ever_raises_snapshot_error(self, data):
        try:
            open_snapshot(data, B0.public_key)
        except SnapshotError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, len(WIRE) - 1), st.binary(min_size=1, max_size=3))
    def test_corrupted_bytes_only_ever_raise_snapshot_error(self, at, junk):
        data = WIRE[:at] + junk + WIRE[at + len(junk):]
        try:
            opened = open_snapshot(data, B0.public_key)
        except SnapshotError:
            return
        self.assertEqual(opened.digest, ROSTER.digest())
