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


# -- verifying off the reactor thread: the same merge, its checks made beforehand ----------

B1_REMOVED_BY_B0 = RemovalRecord.sign(B0, FED, B1.id, 9)
FORGED = [
    attr.evolve(B2_1, name="forged"),  # its own signature fails
    attr.evolve(B0_1, admission=B3.sign(B0_1.admission_message())),  # admitted by the wrong key
    resigned(B1_1, B1, bolt_id=B0.id, seq=5),  # the pin fails
    AdmissionRow.found(OUTSIDER, FED, "rogue", ADDRESSES, ["*"]),  # no chain
    applicant(B4, OUTSIDER),  # its admitter never arrives: held back
    attr.evolve(B1_REMOVED_BY_B0, signature=b"\1" * 64),  # a forged signature
    attr.evolve(Override.sign(B1, FED, "e4", B1.id, (8, 0)), bolt_id=B0.id),  # altered
    RemovalRecord.sign(OUTSIDER, FED, FOUNDER.id, 1),  # unknown signer: held back
    B1_REMOVED_BY_B0,  # the genuine one, beside its forgery
]
MIXED = ITEMS + FORGED
mixed = st.lists(st.sampled_from(MIXED), max_size=30)


def planned_checks(roster, incoming):
    """What ``vigo.spanner.roster.verify`` does, on this thread: the checks the
    merge will make, made now."""
    from vigo.spanner.roster.verify import check_chunk_here

    checks = list(dict.fromkeys(c for c in roster.checks_for(incoming) if c is not None))
    return dict(zip(checks, check_chunk_here(checks), strict=True))


def report_fields(report):
    return (dict(report.accepted), dict(report.rejected), report.held_back, report.duplicates,
            report.equivocations)


class VerifiedMergeTests(unittest.SynchronousTestCase):
    """``Roster.merge(VerifiedParts)`` is ``Roster.merge(RosterParts)``, and verifies nothing."""

    def counted_verify(self):
        from vigo.spanner.roster import crdt as roster_module

        calls = []
        real = roster_module.verify
        self.patch(roster_module, "verify", lambda *a: calls.append(a) or real(*a))
        return calls

    def both(self, base, incoming, between=()):
        """Merge ``incoming`` into copies of ``base``: at once, and verified
        beforehand (with ``between`` merged into the second copy in between)."""
        from vigo.spanner.roster.parts import VerifiedParts

        synchronous = base.copy()
        for item in between:
            synchronous.merge(parts(item))
        expected = synchronous.merge(incoming)
        ahead = base.copy()
        checks = planned_checks(ahead, incoming)
        for item in between:
            ahead.merge(parts(item))
        calls = self.counted_verify()
        report = ahead.merge(VerifiedParts.of(incoming, checks))
        self.assertEqual(report_fields(report), report_fields(expected))
        self.assertEqual(ahead.digest(), synchronous.digest())
        self.assertEqual(ahead.to_data(), synchronous.to_data())
        self.assertEqual(ahead.pending_count(), synchronous.pending_count())
        self.assertEqual(ahead.rejections, synchronous.rejections)
        return calls

    @FAST
    @given(mixed, mixed)
    def test_same_merge_and_no_second_verification(self, xs, ys):
        calls = self.both(delivered(xs), parts(*ys))
        self.assertEqual(calls, [])

    @FAST
    @given(mixed, st.permutations(MIXED))
    def test_whole_shuffled_snapshots(self, xs, shuffled):
        calls = self.both(delivered(xs), parts(*shuffled))
        self.assertEqual(calls, [])

    @FAST
    @given(mixed, mixed, st.lists(st.sampled_from(MIXED), min_size=1, max_size=5))
    def test_a_roster_changed_in_between_is_still_merged_the_same(self, xs, ys, between):
        # What the plan did not foresee is verified then, and only that.
        self.both(delivered(xs), parts(*ys), between)

    def test_the_plan_skips_what_is_held(self):
        roster = delivered(ITEMS)
        held = roster.parts()
        self.assertEqual([c for c in roster.checks_for(held) if c is not None], [])
        # A loser of an equivocation is checked again, as the merge does.
        loser = min(B1_2, B1_2X, key=lambda r: r.signature)
        self.assertEqual([c for c in roster.checks_for(parts(loser)) if c is not None],
                         [(B1.public_key, loser.message(), loser.signature),
                          (B0.public_key, loser.admission_message(), loser.admission)])
        fresh = Roster(FED, FOUNDER.id)
        checks = [c for c in fresh.checks_for(parts(FOUNDER_1, B0_1, B1_1)) if c is not None]
        # three own signatures, three admissions (B1's admitter comes in the same parts)
        self.assertEqual(len(checks), 6)
        self.assertIn((B0.public_key, B1_1.admission_message(), B1_1.admission), checks)
        self.assertEqual(list(fresh.checks_for(parts(B0_1, federation_id="otherfed"))), [])

    def test_forged_results_are_not_believed_blindly(self):
        # A wrong entry can only concern its own exact (key, message, signature):
        # a lookup never stands in for another item's check.
        from vigo.spanner.roster.parts import VerifiedParts

        forged = attr.evolve(B2_1, name="forged")
        roster = delivered([FOUNDER_1, B0_1, B1_1])
        honest = VerifiedParts.of(parts(forged), planned_checks(roster, parts(forged)))
        self.assertEqual(roster.copy().merge(honest).rejected["bad_signature"], 1)
        self.assertIn((forged.public_key, forged.message(), forged.signature), honest.checks)

    def test_adopt_takes_a_merged_copy(self):
        roster = delivered([FOUNDER_1, B0_1])
        copy = roster.copy()
        copy.merge(parts(B1_1, B1_2, *ITEMS[-5:]))
        version = roster.version
        roster.adopt(copy)
        self.assertEqual(roster.to_data(), delivered([FOUNDER_1, B0_1, B1_1, B1_2, *ITEMS[-5:]])
                         .to_data())
        self.assertGreater(roster.version, version)


class StepTests(unittest.SynchronousTestCase):
    """Work in steps: the same result run at once or a step at a time."""

    @FAST
    @given(st.lists(st.tuples(st.integers(0, 5), st.integers()), max_size=5000))
    def test_sorting_in_chunks_is_sorted(self, items):
        from vigo.spanner.roster import steps

        self.patch(steps, "SORT_CHUNK", 7)
        key = lambda item: item[0]  # noqa: E731 (ties: the input order must stay)
        ordered = steps.run_steps(steps.sorting(items, key=key))
        self.assertEqual(list(ordered), sorted(items, key=key))

    def test_merging_and_digesting_step_by_step(self):
        from vigo.spanner.roster import steps

        class Turns:  # a reactor that runs its calls when told, one turn at a time
            def __init__(self):
                self.calls = []

            def callLater(self, delay, f, *args):
                self.calls.append(lambda: f(*args))

            def run(self, d):
                turns = 0
                while not d.called:
                    self.calls.pop(0)()
                    turns += 1
                return turns

        self.patch(steps, "SLICE", 0.0)  # one step a turn
        turns = Turns()
        roster = Roster(FED, FOUNDER.id)
        merging = steps.run_sliced(turns, roster.merging(parts(*reversed(ITEMS))))
        self.assertNoResult(merging)
        self.assertGreater(turns.run(merging), len(ITEMS))
        report = self.successResultOf(merging)
        self.assertEqual(report_fields(report),
                         report_fields(Roster(FED, FOUNDER.id).merge(parts(*reversed(ITEMS)))))
        digesting = steps.run_sliced(turns, roster.digesting())
        self.assertGreater(turns.run(digesting), len(ITEMS) // 2)
        self.assertEqual(self.successResultOf(digesting), delivered(ITEMS).digest())
        self.assertEqual(roster.digest(), delivered(ITEMS).digest())

    def test_cancelling_stops_the_steps(self):
        from vigo.spanner.roster import steps

        self.patch(steps, "SLICE", 0.0)
        clock, ran = Clock(), []

        def work():
            for n in range(100):
                ran.append(n)
                yield

        d = steps.run_sliced(clock, work())
        d.cancel()
        self.failureResultOf(d)
        clock.advance(0)
        self.assertEqual(ran, [0])
        self.assertEqual(clock.getDelayedCalls(), [])


class GainedTests(unittest.SynchronousTestCase):
    """``Roster.gained``: what a merge took in, so a bolt writes only that."""

    @FAST
    @given(mixed, mixed)
    def test_everything_held_was_held_before_or_is_gained(self, xs, ys):
        from vigo.spanner.roster.steps import run_steps

        base = delivered(xs)
        held_back = base.held_back()
        merged = base.copy()
        incoming = parts(*ys)
        merged.merge(incoming)
        gained = run_steps(merged.gained(base, incoming, held_back))
        before = {id(item) for item in base.parts().rows + base.parts().records()}
        new = {id(item) for item in gained.rows + gained.records()}
        held = merged.parts().rows + merged.parts().records()
        self.assertEqual({id(item) for item in held} - before, new)
