"""Routing: one owner per hostname, the same on every bolt with the same roster."""

import fnmatch

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests.rosterkit import (
    ADDRESSES,
    BOLTS,
    FED,
    FOUNDER,
    FOUNDER_1,
    applicant,
    delivered,
    parts,
)
from vigo.fleet.ownership import NoOwner as FleetNoOwner
from vigo.hostnames import HostnameError
from vigo.spanner.roster.crdt import Roster
from vigo.spanner.roster.records import Override, RemovalRecord
from vigo.spanner.roster.rows import AdmissionRow
from vigo.spanner.routing import NoOwner, explain_owner, owner_of, specificity

PATTERN_POOL = [
    "*", "*.com", "*.example.com", "db*.example.com", "web?.eu.example.com", "[ab].*",
    "*.eu.*", "a.b", "db[0-9]*", "*.org", "web1.eu.example.com", "[!a]*.com",
]
LABELS = ["a", "b", "db1", "dbx", "web1", "web2", "eu", "us", "example", "com", "org"]


def _pool_rows():
    """Per bolt: several signed seqs, each with its own patterns and status."""
    rows = [FOUNDER_1]
    choices = [
        (["*.example.com"], "active"), (["db*.example.com", "*.org"], "active"),
        (["web?.eu.example.com"], "draining"), (["[ab].*", "*.eu.*"], "active"),
        (["*", "a.b"], "active"), (["db[0-9]*", "*.com"], "active"),
    ]
    for i, bolt in enumerate(BOLTS):
        row = applicant(bolt, FOUNDER, patterns=PATTERN_POOL[i::len(BOLTS)])
        rows.append(row)
        for step in range(3):
            patterns, status = choices[(i + step) % len(choices)]
            row = row.successor(bolt, patterns=patterns, status=status)
            rows.append(row)
    return rows


POOL_ROWS = _pool_rows()
POOL_RECORDS = [RemovalRecord.sign(FOUNDER, FED, BOLTS[4].id, 1)] + [
    Override.sign(FOUNDER, FED, "e%d" % i, BOLTS[i % len(BOLTS)].id, (i, 0)) for i in range(4)]
hostnames = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4).map(".".join)


def reference_owner(roster, hostname, envoy_id=None):
    """The routing rule written out the slow, obvious way."""
    if envoy_id is not None:
        override = roster.override_of(envoy_id)
        if override is not None and override.bolt_id is not None:
            row = roster.row(override.bolt_id)
            if row is not None and row.status == "active":
                return row.bolt_id
    candidates = [(-specificity(p), row.bolt_id) for row in roster.active_bolts()
                  for p in row.patterns if fnmatch.fnmatchcase(hostname, p)]
    return min(candidates)[1] if candidates else None


def routed(roster, hostname, envoy_id=None):
    try:
        return owner_of(roster, hostname, envoy_id).bolt_id
    except NoOwner:
        return None


class RoutingTests(unittest.SynchronousTestCase):
    def roster(self, *rows, records=()):
        roster = Roster.found(FOUNDER, FED, "founder", ADDRESSES, ["*.example.com"])
        roster.merge(parts(*rows, *records))
        return roster

    def test_specificity(self):
        self.assertEqual(specificity("*"), 0)
        self.assertEqual(specificity("*.example.com"), len(".example.com"))
        self.assertEqual(specificity("db[0-9]?.x"), len("db.x"))
        self.assertEqual(specificity("a[!]]b"), 2)
        self.assertEqual(specificity("a[b"), 3)  # a lone '[' is literal

    def test_most_specific_wins(self):
        b0, b1 = BOLTS[0], BOLTS[1]
        roster = self.roster(applicant(b0, FOUNDER, patterns=["*.eu.example.com"]),
                             applicant(b1, FOUNDER, patterns=["db*.eu.example.com"]))
        self.assertEqual(owner_of(roster, "db1.eu.example.com").bolt_id, b1.id)
        self.assertEqual(owner_of(roster, "web.eu.example.com").bolt_id, b0.id)
        self.assertEqual(owner_of(roster, "web.us.example.com").bolt_id, FOUNDER.id)

    def test_ties_go_to_the_lowest_bolt_id(self):
        b0, b1 = BOLTS[0], BOLTS[1]
        roster = self.roster(applicant(b0, FOUNDER, patterns=["x*.example.com"]),
                             applicant(b1, FOUNDER, patterns=["*x.example.com"]))
        self.assertEqual(owner_of(roster, "xx.example.com").bolt_id, min(b0.id, b1.id))

    def test_hostnames_are_normalised(self):
        self.assertEqual(owner_of(self.roster(), "WWW.Example.COM.").bolt_id, FOUNDER.id)
        self.assertRaises(HostnameError, owner_of, self.roster(), "bad host")

    def test_draining_and_removed_take_no_new_envoys(self):
        b0, b1 = BOLTS[0], BOLTS[1]
        row0 = applicant(b0, FOUNDER, patterns=["*.eu.example.com"])
        row1 = applicant(b1, FOUNDER, patterns=["*.us.example.com"])
        roster = self.roster(row0, row0.successor(b0, status="draining"), row1,
                             records=[RemovalRecord.sign(FOUNDER, FED, b1.id, 1)])
        self.assertEqual(owner_of(roster, "a.eu.example.com").bolt_id, FOUNDER.id)
        self.assertEqual(owner_of(roster, "a.us.example.com").bolt_id, FOUNDER.id)

    def test_override_wins_while_its_bolt_is_active(self):
        b0, b1 = BOLTS[0], BOLTS[1]
        row0 = applicant(b0, FOUNDER, patterns=["*.eu.example.com"])
        roster = self.roster(row0, applicant(b1, FOUNDER, patterns=["nothing"]),
                             records=[Override.sign(b0, FED, "env1", b1.id, (1, 0))])
        self.assertEqual(owner_of(roster, "a.eu.example.com", "env1").bolt_id, b1.id)
        self.assertEqual(owner_of(roster, "a.eu.example.com", "env2").bolt_id, b0.id)
        self.assertEqual(owner_of(roster, "a.eu.example.com").bolt_id, b0.id)
        roster.add_record(RemovalRecord.sign(FOUNDER, FED, b1.id, 2))
        self.assertEqual(owner_of(roster, "a.eu.example.com", "env1").bolt_id, b0.id)
        roster.add_record(Override.sign(b0, FED, "env1", None, (2, 0)))
        self.assertEqual(owner_of(roster, "a.eu.example.com", "env1").bolt_id, b0.id)

    def test_explain_owner(self):
        b0, b1 = BOLTS[0], BOLTS[1]
        roster = self.roster(applicant(b0, FOUNDER, patterns=["*.eu.example.com"]),
                             applicant(b1, FOUNDER, patterns=["db*.eu.example.com", "x"]),
                             records=[Override.sign(b0, FED, "env1", FOUNDER.id, (1, 0))])
        explained = explain_owner(roster, "DB1.eu.example.com.")
        self.assertEqual((explained["hostname"], explained["bolt_id"], explained["by"],
                          explained["pattern"]),
                         ("db1.eu.example.com", b1.id, "pattern", "db*.eu.example.com"))
        self.assertEqual([(c["bolt_id"], c["pattern"]) for c in explained["candidates"]],
                         [(b1.id, "db*.eu.example.com"), (b0.id, "*.eu.example.com"),
                          (FOUNDER.id, "*.example.com")])
        self.assertEqual(explained["candidates"][1]["name"], "bolt-" + b0.id[:4])
        by_override = explain_owner(roster, "db1.eu.example.com", "env1")
        self.assertEqual((by_override["bolt_id"], by_override["by"], by_override["pattern"]),
                         (FOUNDER.id, "override", None))
        self.assertEqual(explain_owner(roster, "db1.eu.example.com", "env2")["by"], "pattern")
        self.assertRaises(NoOwner, explain_owner, roster, "a.example.org")
        self.assertRaises(HostnameError, explain_owner, roster, "bad host")

    @given(st.lists(st.sampled_from(POOL_ROWS), max_size=8),
           st.lists(st.sampled_from(POOL_RECORDS), max_size=4), hostnames,
           st.sampled_from([None, "e0", "e1", "e2", "e3"]))
    def test_explain_owner_agrees_with_owner_of(self, rows, records, hostname, envoy_id):
        roster = self.roster(*rows, records=records)
        expected = routed(roster, hostname, envoy_id)
        try:
            explained = explain_owner(roster, hostname, envoy_id)
        except NoOwner:
            self.assertIsNone(expected)
            return
        self.assertEqual(explained["bolt_id"], expected)
        if explained["by"] == "pattern":
            self.assertEqual(explained["candidates"][0]["bolt_id"], expected)

    def test_override_to_a_draining_bolt_is_ignored(self):
        b0 = BOLTS[0]
        row0 = applicant(b0, FOUNDER, patterns=["zzz"])
        roster = self.roster(row0, row0.successor(b0, status="draining"),
                             records=[Override.sign(b0, FED, "env1", b0.id, (1, 0))])
        self.assertEqual(owner_of(roster, "a.example.com", "env1").bolt_id, FOUNDER.id)

    def test_no_match_names_the_hostname(self):
        roster = self.roster()
        error = self.assertRaises(NoOwner, owner_of, roster, "Host.Nowhere.Test")
        self.assertIn("host.nowhere.test", str(error))
        self.assertEqual(error.hostname, "host.nowhere.test")
        self.assertIsInstance(error, FleetNoOwner)

    def test_no_active_bolt(self):
        founder = FOUNDER_1.successor(FOUNDER, status="draining")
        roster = delivered([FOUNDER_1, founder])
        self.assertRaises(NoOwner, owner_of, roster, "a.example.com")

    def test_answers_follow_roster_changes(self):
        roster = self.roster()
        self.assertEqual(owner_of(roster, "a.eu.example.com").bolt_id, FOUNDER.id)
        roster.add_row(applicant(BOLTS[2], FOUNDER, patterns=["*.eu.example.com"]))
        self.assertEqual(owner_of(roster, "a.eu.example.com").bolt_id, BOLTS[2].id)

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.sampled_from(POOL_ROWS + POOL_RECORDS), max_size=25).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs))),
        st.lists(hostnames, min_size=1, max_size=10),
        st.sampled_from([None, "e0", "e1", "e2", "e3", "e9"]))
    def test_every_bolt_computes_the_same_owner(self, case, names, envoy_id):
        xs, shuffled = case
        here = delivered([FOUNDER_1] + xs)
        there = delivered(list(reversed(shuffled)) + [FOUNDER_1])
        self.assertEqual(here.digest(), there.digest())
        for name in names:
            expected = reference_owner(here, name, envoy_id)
            self.assertEqual(routed(here, name, envoy_id), expected)
            self.assertEqual(routed(there, name, envoy_id), expected)


class RoutingScaleTests(unittest.SynchronousTestCase):
    def test_many_bolts_many_hostnames(self):
        from vigo.identity import Identity

        roster = Roster.found(FOUNDER, FED, "founder", ADDRESSES, ["*"])
        bolts = [Identity(bytes([40 + i]) * 32) for i in range(64)]
        for i, bolt in enumerate(bolts):
            roster.add_row(AdmissionRow.applicant(
                bolt, FED, "b%d" % i, ADDRESSES, ["*.r%d.example.com" % i, "h%d-*" % i],
                "t%d" % i, FOUNDER.id).countersign(FOUNDER))
        for n in range(5000):
            expected = bolts[n % 64].id
            self.assertEqual(owner_of(roster, "h%d.r%d.example.com" % (n, n % 64)).bolt_id,
                             expected)
        self.assertEqual(owner_of(roster, "h3-x.example.org").bolt_id, bolts[3].id)
        self.assertEqual(owner_of(roster, "nowhere.test").bolt_id, FOUNDER.id)
