"""The roster CRDT: merge laws, convergence, and that forgeries never merge."""

import json
import os

import attr
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.rosterkit import (
    ADDRESSES,
    B0,
    B0_1,
    B0_2,
    B1,
    B1_1,
    B1_2,
    B1_2X,
    B2,
    B2_1,
    B3,
    B3_1,
    B3_2,
    B3_3,
    B4,
    FED,
    FOUNDER,
    FOUNDER_1,
    FOUNDER_2,
    ITEMS,
    OUTSIDER,
    applicant,
    delivered,
    parts,
    resigned,
)
from vigo.identity import key_id
from vigo.spanner.canonical import canonical
from vigo.spanner.roster.crdt import Roster, new_federation_id
from vigo.spanner.roster.hlc import HLC, ClockDriftError, Timestamp
from vigo.spanner.roster.records import (
    ConsumedToken,
    Override,
    RemovalRecord,
    RosterError,
    derive_id,
)
from vigo.spanner.roster.rows import ADMISSION_CONTEXT, AdmissionRow

deliveries = st.lists(st.sampled_from(ITEMS), max_size=30)
FAST = settings(max_examples=60, deadline=None)


class MergeLawTests(unittest.SynchronousTestCase):
    @FAST
    @given(deliveries, deliveries)
    def test_commutative(self, xs, ys):
        a, b = delivered(xs), delivered(ys)
        ab, ba = a.copy(), b.copy()
        ab.merge(b)
        ba.merge(a)
        self.assertEqual(ab.digest(), ba.digest())
        self.assertEqual(ab.to_data(), ba.to_data())

    @FAST
    @given(deliveries, deliveries, deliveries)
    def test_associative(self, xs, ys, zs):
        a, b, c = delivered(xs), delivered(ys), delivered(zs)
        left = a.copy()
        left.merge(b)
        left.merge(c)
        bc = b.copy()
        bc.merge(c)
        right = a.copy()
        right.merge(bc)
        self.assertEqual(left.digest(), right.digest())

    @FAST
    @given(deliveries)
    def test_idempotent(self, xs):
        a = delivered(xs)
        before = a.digest()
        report = a.merge(a.copy())
        self.assertEqual(a.digest(), before)
        self.assertFalse(report.changed)
        again = a.merge(parts(*xs))
        self.assertFalse(again.changed)
        self.assertEqual(a.digest(), before)

    @FAST
    @given(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=30).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs + xs[: len(xs) // 2]))))
    def test_any_order_and_duplication_converges(self, case):
        xs, shuffled = case
        once = delivered(xs, one_by_one=False)
        self.assertEqual(delivered(shuffled).digest(), once.digest())
        self.assertEqual(delivered(list(reversed(shuffled))).digest(), once.digest())

    def test_everything_converges_to_the_expected_winners(self):
        roster = delivered(ITEMS)
        self.assertEqual(roster.pending_count(), 0)
        self.assertEqual(roster.row(FOUNDER.id), FOUNDER_2)
        winner = max(B1_2, B1_2X, key=lambda r: r.signature)
        self.assertEqual(roster.row(B1.id), winner)
        self.assertEqual(roster.removal_of(B3.id).removed_by, B0.id)  # the earliest
        self.assertEqual(roster.override_of("e1").bolt_id, None)
        self.assertEqual(roster.override_of("e2").bolt_id, B3.id)
        self.assertEqual(roster.digest(), delivered(list(reversed(ITEMS))).digest())


class ChainTests(unittest.SynchronousTestCase):
    def test_founder_then_chain(self):
        roster = Roster.found(FOUNDER, FED, "founder", ADDRESSES, ["*.example.com"])
        for row in (B0_1, B1_1, B2_1):
            report = roster.add_row(row)
            self.assertEqual(report.accepted["rows"], 1, report)
        self.assertEqual(roster.bolt_ids(), sorted([FOUNDER.id, B0.id, B1.id, B2.id]))

    def test_arrival_order_within_a_snapshot_does_not_matter(self):
        roster = Roster(FED, FOUNDER.id)
        report = roster.merge(parts(B2_1, B1_1, B0_1, FOUNDER_1))
        self.assertEqual(report.accepted["rows"], 4)
        self.assertEqual(report.held_back, 0)

    def test_rows_wait_for_their_admitter(self):
        roster = Roster(FED, FOUNDER.id)
        report = roster.merge(parts(B1_1))
        self.assertEqual((report.rejected["no_chain"], report.held_back), (1, 1))
        self.assertIsNone(roster.row(B1.id))
        roster.merge(parts(FOUNDER_1))
        report = roster.merge(parts(B0_1))
        self.assertEqual(report.accepted["rows"], 2)  # B0, then the waiting B1
        self.assertEqual(roster.row(B1.id), B1_1)

    def test_admission_by_a_non_member_never_merges(self):
        stranger = applicant(B4, OUTSIDER)
        roster = delivered([FOUNDER_1, stranger])
        self.assertIsNone(roster.row(B4.id))
        self_admitted = AdmissionRow.found(OUTSIDER, FED, "rogue", ADDRESSES, ["*"])
        report = roster.merge(parts(self_admitted))
        self.assertEqual(report.rejected["no_chain"], 1)
        self.assertIsNone(roster.row(OUTSIDER.id))
        self.assertIsNone(roster.row(B4.id))
        self.assertEqual(roster.rejections["no_chain"], 2)

    def test_a_cycle_never_reaches_the_founder(self):
        x_by_y = applicant(B4, OUTSIDER)
        y_by_x = applicant(OUTSIDER, B4)
        roster = delivered([FOUNDER_1])
        report = roster.merge(parts(x_by_y, y_by_x))
        self.assertEqual((report.rejected["no_chain"], report.held_back), (2, 2))
        self.assertEqual(roster.bolt_ids(), [FOUNDER.id])

    def test_founder_row_admitted_by_another_is_refused(self):
        forged = resigned(FOUNDER_1, FOUNDER, admitted_by=B0.id)
        report = delivered([]).merge(parts(forged))
        self.assertEqual(report.rejected["no_chain"], 1)

    def test_bad_admission_signature(self):
        wrong = attr.evolve(B0_1, admission=B3.sign(B0_1.admission_message()))
        report = delivered([FOUNDER_1, B3_1]).merge(parts(wrong))
        self.assertEqual(report.rejected["bad_admission"], 1)

    def test_removed_admitters_admissions_stay_valid(self):
        removal = RemovalRecord.sign(FOUNDER, FED, B0.id, 5)
        roster = delivered([FOUNDER_1, B0_1, removal])
        self.assertTrue(roster.is_removed(B0.id))
        self.assertEqual(roster.add_row(B1_1).accepted["rows"], 1)

    def test_countersign_checks(self):
        row = AdmissionRow.applicant(B4, FED, "b4", ADDRESSES, ["*"], "tok", FOUNDER.id)
        self.assertEqual(self.assertRaises(RosterError, row.countersign, B0).reason, "no_chain")
        tampered = attr.evolve(row, name="evil")
        self.assertEqual(self.assertRaises(RosterError, tampered.countersign, FOUNDER).reason,
                         "bad_signature")


class ForgeryTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.roster = delivered([FOUNDER_1, B0_1, B1_1])
        self.digest = self.roster.digest()

    def assertRefused(self, item, reason):
        report = self.roster.merge(parts(item))
        self.assertEqual(report.rejected[reason], 1, str(report))
        self.assertFalse(report.changed)
        self.assertEqual(self.roster.digest(), self.digest)
        self.assertEqual(self.roster.pending_count(), 0)

    def test_forged_self_signature(self):
        self.assertRefused(attr.evolve(B2_1, signature=B3_1.signature), "bad_signature")
        self.assertRefused(attr.evolve(B2_1, signature=b"\0" * 64), "bad_signature")
        self.assertRefused(attr.evolve(B0_2, signature=B0.sign(b"something else")),
                           "bad_signature")

    def test_tampered_fields(self):
        for change in ({"name": "evil"}, {"patterns": ("*",)}, {"status": "removed"},
                       {"seq": 9}, {"token_id": "other"}, {"addresses": B3_2.addresses}):
            self.assertRefused(attr.evolve(B0_2, **change), "bad_signature")

    def test_other_federation(self):
        other = AdmissionRow.found(FOUNDER, "otherfed", "founder", ADDRESSES, ["*"])
        self.assertRefused(resigned(other, FOUNDER, seq=7), "foreign")
        report = self.roster.merge(parts(B2_1, federation_id="otherfed"))
        self.assertEqual(report.rejected["foreign"], 1)
        report = self.roster.merge(Roster("otherfed", FOUNDER.id))
        self.assertFalse(report.changed)

    def test_key_must_derive_the_id(self):
        # B1's key, signed by B1, claiming to be B0: the pin refuses it.
        self.assertRefused(resigned(B1_1, B1, bolt_id=B0.id, seq=5), "pin")

    def test_stale_rows(self):
        roster = delivered([FOUNDER_1, B0_1, B0_2])
        self.assertEqual(roster.merge(parts(B0_1)).rejected["stale"], 1)
        self.assertEqual(roster.row(B0.id), B0_2)

    def test_forged_records(self):
        removal = RemovalRecord.sign(B0, FED, B1.id, 9)
        consumed = ConsumedToken.sign(B0, FED, "tok-1")
        override = Override.sign(B0, FED, "e9", B1.id, (1, 0))
        for record in (removal, consumed, override):
            self.assertRefused(attr.evolve(record, signature=b""), "bad_signature")
            self.assertRefused(attr.evolve(record, signature=b"\1" * 64), "bad_signature")
        # Signed by B1 but claiming B0 wrote it.
        self.assertRefused(attr.evolve(removal, signature=B1.sign(removal.message(FED))),
                           "bad_signature")
        self.assertRefused(attr.evolve(override, bolt_id=B0.id), "bad_signature")
        self.assertRefused(attr.evolve(consumed, token_id="tok-2"), "bad_signature")
        # Signed for another federation.
        self.assertRefused(RemovalRecord.sign(B0, "otherfed", B1.id, 9), "bad_signature")

    def test_records_from_unknown_signers_are_held_back(self):
        for record in (RemovalRecord.sign(B2, FED, B1.id, 9),
                       ConsumedToken.sign(B2, FED, "tok-3"),
                       Override.sign(B2, FED, "e7", B2.id, (3, 0))):
            report = self.roster.merge(parts(record))
            self.assertEqual((report.rejected["unknown_signer"], report.held_back), (1, 1))
            self.assertEqual(self.roster.digest(), self.digest)
        report = self.roster.merge(parts(B2_1))
        self.assertEqual(report.accepted, {"rows": 1, "removals": 1, "consumed": 1,
                                           "overrides": 1})
        self.assertTrue(self.roster.is_consumed("tok-3"))
        self.assertTrue(self.roster.is_removed(B1.id))

    def test_outsider_records_never_merge(self):
        report = self.roster.merge(parts(RemovalRecord.sign(OUTSIDER, FED, FOUNDER.id, 1)))
        self.assertEqual(report.held_back, 1)
        self.assertFalse(self.roster.is_removed(FOUNDER.id))


class ResolutionTests(unittest.SynchronousTestCase):
    def test_equivocation_is_deterministic_and_counted(self):
        winner = max(B1_2, B1_2X, key=lambda r: r.signature)
        for order in ([B1_2, B1_2X], [B1_2X, B1_2]):
            roster = delivered([FOUNDER_1, B0_1, B1_1])
            roster.merge(parts(order[0]))
            report = roster.merge(parts(order[1]))
            self.assertEqual(report.equivocations, 1)
            self.assertEqual(roster.row(B1.id), winner)

    def test_override_ties_go_to_the_greater_writer(self):
        first = Override.sign(B0, FED, "e5", B0.id, (20, 3))
        second = Override.sign(B1, FED, "e5", B1.id, (20, 3))
        expected = max(first, second, key=lambda o: o.writer)
        base = [FOUNDER_1, B0_1, B1_1]
        for order in ([first, second], [second, first]):
            self.assertEqual(delivered(base + order).override_of("e5"), expected)

    def test_later_clock_wins(self):
        early = Override.sign(B1, FED, "e6", B1.id, (30, 0))
        late = Override.sign(B0, FED, "e6", B0.id, (30, 1))
        self.assertEqual(delivered([FOUNDER_1, B0_1, B1_1, late, early]).override_of("e6"), late)

    def test_write_override_orders_after_the_held_one(self):
        clock = Clock()
        roster = delivered([FOUNDER_1, B0_1, B1_1, Override.sign(B1, FED, "e8", B1.id, (9000, 4))])
        record = roster.write_override(B0, HLC(clock), "e8", B0.id)
        self.assertGreater(record.hlc, Timestamp(9000, 4))
        self.assertEqual(roster.override_of("e8").bolt_id, B0.id)


class QueryTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.roster = delivered(ITEMS)

    def test_status_and_keys(self):
        r = self.roster
        self.assertEqual(r.status_of(B0.id), "draining")
        self.assertEqual(r.status_of(B3.id), "removed")
        self.assertEqual(r.status_of(B2.id), "removed")  # by a removal record
        self.assertTrue(r.is_removed(B2.id))
        self.assertEqual(r.row(B2.id).status, "removed")
        self.assertEqual([row.bolt_id for row in r.active_bolts()],
                         sorted([FOUNDER.id, B1.id]))
        self.assertEqual(r.key_of(B2.id), B2.public_key)
        self.assertIsNone(r.key_of(B4.id))
        self.assertEqual(r.bolt_for_key(B0.public_key).bolt_id, B0.id)  # draining still talks
        self.assertIsNone(r.bolt_for_key(B2.public_key))
        self.assertIsNone(r.bolt_for_key(B4.public_key))
        self.assertIsNone(r.bolt_for_key(b"short"))
        self.assertTrue(r.is_consumed(B3_1.token_id))
        self.assertFalse(r.is_consumed("never"))

    def test_data_round_trip_verifies(self):
        data = json.loads(json.dumps(self.roster.to_data()))
        again = Roster.from_data(data)
        self.assertEqual(again.digest(), self.roster.digest())
        self.assertEqual(again.encode(), self.roster.encode())
        data["rows"][1]["name"] = "tampered"
        self.assertEqual(self.assertRaises(RosterError, Roster.from_data, data).reason,
                         "bad_signature")

    def test_digest_changes_with_content(self):
        smaller = delivered(ITEMS[:-1])
        self.assertNotEqual(smaller.digest(), self.roster.digest())
        self.assertEqual(len(self.roster.digest()), 32)


class RecordTests(unittest.SynchronousTestCase):
    def test_derive_id_is_key_id(self):
        for _ in range(50):
            key = os.urandom(32)
            self.assertEqual(derive_id(key), key_id(key))

    def test_admission_message_is_canonical(self):
        for row in (FOUNDER_1, B0_1, B3_3):
            expected = ADMISSION_CONTEXT + canonical({
                "federation_id": row.federation_id, "bolt_id": row.bolt_id,
                "public_key": json.loads(canonical(row.to_data()))["public_key"],
                "token_id": row.token_id, "admitted_by": row.admitted_by})
            self.assertEqual(row.admission_message(), expected)

    def test_successor_rules(self):
        self.assertEqual(B3_2.seq, 2)
        self.assertEqual(B3_2.admission, B3_1.admission)
        self.assertRaises(RosterError, B3_1.successor, B0, status="draining")
        self.assertRaises(TypeError, B3_1.successor, B3, bolt_id=B0.id)
        self.assertEqual(self.assertRaises(RosterError, B3_3.successor, B3).reason, "removed")

    def test_constructors_validate(self):
        self.assertRaises(RosterError, AdmissionRow.found, FOUNDER, FED, "x", ADDRESSES, ["UPPER"])
        self.assertRaises(RosterError, AdmissionRow.found, FOUNDER, FED, "x",
                          dict(ADDRESSES, api="nope"), ["*"])
        self.assertRaises(RosterError, AdmissionRow.found, FOUNDER, "Bad Fed", "x", ADDRESSES, [])
        self.assertEqual(FOUNDER_2.patterns, ("*.example.com", "*.org"))

    def test_new_federation_id(self):
        first, second = new_federation_id(), new_federation_id()
        self.assertNotEqual(first, second)
        Roster.found(FOUNDER, first, "f", ADDRESSES, [])


class HLCTests(unittest.SynchronousTestCase):
    def test_monotonic_when_the_wall_clock_stalls_or_steps_back(self):
        clock = Clock()
        clock.advance(100)
        hlc = HLC(clock)
        a = hlc.now()
        b = hlc.now()
        clock.rightNow = 50  # the wall clock steps back
        c = hlc.now()
        self.assertEqual((a, b), (Timestamp(100_000, 0), Timestamp(100_000, 1)))
        self.assertGreater(c, b)
        clock.rightNow = 200
        self.assertEqual(hlc.now(), Timestamp(200_000, 0))

    def test_observe_moves_past_remote(self):
        clock = Clock()
        clock.advance(10)
        hlc = HLC(clock)
        remote = Timestamp(12_000, 7)
        hlc.observe(remote)
        self.assertGreater(hlc.now(), remote)

    def test_far_future_refused(self):
        hlc = HLC(Clock(), max_drift_ms=1000)
        self.assertRaises(ClockDriftError, hlc.observe, Timestamp(5000, 0))
        self.assertEqual(hlc.now(), Timestamp(0, 1))

    def test_timestamp_data(self):
        self.assertEqual(Timestamp.from_data([3, 4]), Timestamp(3, 4))
        for bad in ([1], [1.0, 2], [-1, 0], "x", [1, True]):
            self.assertRaises(ValueError, Timestamp.from_data, bad)


class ReportTests(unittest.SynchronousTestCase):
    def test_counts_accumulate(self):
        roster = delivered([FOUNDER_1, B0_1, B1_1, B2_1, B3_1, B3_2, B0_2, FOUNDER_2])
        report = roster.merge(parts(attr.evolve(B2_1, name="x"), B0_1))
        self.assertEqual(report.rejected["bad_signature"], 1)
        self.assertEqual(report.rejected["stale"], 1)
        self.assertIn("bad_signature 1", str(report))
        self.assertEqual(roster.rejections["bad_signature"], 1)
        self.assertEqual(B2.id, B2_1.bolt_id)


class CostTests(unittest.SynchronousTestCase):
    def test_rows_already_held_are_not_verified_again(self):
        from vigo.spanner.roster import crdt as roster_module

        roster = delivered(ITEMS)
        decoded = Roster.from_data(roster.to_data()).parts()
        calls = []
        real = roster_module.verify
        self.patch(roster_module, "verify", lambda *a: calls.append(a) or real(*a))
        report = roster.merge(decoded)
        self.assertEqual((calls, report.changed), ([], False))
        report = roster.merge(parts(B0_2, attr.evolve(B0_2, name="x")))
        self.assertEqual(len(calls), 1)  # only the tampered copy
        self.assertEqual(report.rejected["bad_signature"], 1)


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                    max_size=3), max_leaves=8)
ROSTER_DATA = delivered(ITEMS).to_data()


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, path + (index,))


class DecodeFuzzTests(unittest.SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(list(_paths(ROSTER_DATA))), json_values)
    def test_mutated_roster_data_only_raises_roster_error(self, path, value):
        data = json.loads(json.dumps(ROSTER_DATA))
        if path:
            target = data
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = value
        else:
            data = value
        try:
            roster = Roster.from_data(data)
        except RosterError:
            return
        # What did decode is a part of the original: nothing altered got in.
        decoded = roster.to_data()
        for part in ("rows", "removals", "consumed", "overrides"):
            for item in decoded[part]:
                self.assertIn(item, ROSTER_DATA[part])
