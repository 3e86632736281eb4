"""A fixed pool of bolts and signed roster records for the roster tests.

Signing is the slow part of these tests, so everything is signed once, at
import, from fixed seeds; Hypothesis then chooses among the pool.
"""

import attr

from vigo.identity import Identity
from vigo.spanner.roster.crdt import Roster, RosterParts
from vigo.spanner.roster.records import ConsumedToken, Override, RemovalRecord
from vigo.spanner.roster.rows import AdmissionRow

FED = "testfed"
ADDRESSES = {"envoy": "10.0.0.1:1530", "api": "10.0.0.1:8443", "peer": "10.0.0.1:1533"}


def identity(n):
    return Identity(bytes([n]) * 32)


FOUNDER = identity(1)
BOLTS = [identity(n) for n in range(2, 8)]
OUTSIDER = identity(99)
B0, B1, B2, B3, B4, B5 = BOLTS


def applicant(bolt, minter, patterns=("*.example.com",), token=None):
    return AdmissionRow.applicant(bolt, FED, "bolt-%s" % bolt.id[:4], ADDRESSES, patterns,
                                  token or "t-%s" % bolt.id[:6], minter.id).countersign(minter)


FOUNDER_1 = AdmissionRow.found(FOUNDER, FED, "founder", ADDRESSES, ["*.example.com"])
FOUNDER_2 = FOUNDER_1.successor(FOUNDER, patterns=["*.example.com", "*.org"])
B0_1 = applicant(B0, FOUNDER)
B0_2 = B0_1.successor(B0, status="draining")
B1_1 = applicant(B1, B0)  # founder -> B0 -> B1
B1_2 = B1_1.successor(B1, name="b1-renamed")
B1_2X = B1_1.successor(B1, name="b1-other")  # equivocates with B1_2
B2_1 = applicant(B2, B1)  # founder -> B0 -> B1 -> B2
B2_2 = B2_1.successor(B2, patterns=["db*.example.com"])
B3_1 = applicant(B3, FOUNDER)
B3_2 = B3_1.successor(B3, addresses=dict(ADDRESSES, api="10.0.0.3:8443"))
B3_3 = B3_2.successor(B3, status="removed")
ROWS = [FOUNDER_1, FOUNDER_2, B0_1, B0_2, B1_1, B1_2, B1_2X, B2_1, B2_2, B3_1, B3_2, B3_3]

REMOVALS = [
    RemovalRecord.sign(FOUNDER, FED, B3.id, 100),
    RemovalRecord.sign(B0, FED, B3.id, 50),
    RemovalRecord.sign(B2, FED, B2.id, 70),
]
CONSUMED = [
    ConsumedToken.sign(FOUNDER, FED, B0_1.token_id),
    ConsumedToken.sign(B0, FED, B1_1.token_id),
    ConsumedToken.sign(B1, FED, B2_1.token_id),
    ConsumedToken.sign(FOUNDER, FED, B3_1.token_id),
    ConsumedToken.sign(B0, FED, B3_1.token_id),  # the same token claimed twice
]
OVERRIDES = [
    Override.sign(FOUNDER, FED, "e1", B0.id, (10, 0)),
    Override.sign(B0, FED, "e1", B1.id, (10, 0)),  # same clock: the writer decides
    Override.sign(B1, FED, "e1", None, (11, 0)),
    Override.sign(B3, FED, "e2", B3.id, (5, 1)),
    Override.sign(FOUNDER, FED, "e2", FOUNDER.id, (5, 0)),
    Override.sign(B2, FED, "e3", B2.id, (7, 0)),
]
RECORDS = REMOVALS + CONSUMED + OVERRIDES
ITEMS = ROWS + RECORDS


def parts(*items, federation_id=FED, founder_id=FOUNDER.id):
    """``RosterParts`` holding ``items`` (rows and records mixed)."""
    kinds = {"rows": [], "removals": [], "consumed": [], "overrides": []}
    for item in items:
        kinds["rows" if isinstance(item, AdmissionRow) else item.KIND].append(item)
    return RosterParts(federation_id, founder_id, **kinds)


def delivered(items, one_by_one=True):
    """A fresh roster after merging ``items``, one merge each or all at once."""
    roster = Roster(FED, FOUNDER.id)
    if one_by_one:
        for item in items:
            roster.merge(parts(item))
    else:
        roster.merge(parts(*items))
    return roster


def resigned(row, signer, **changes):
    """``row`` with ``changes``, self-signed again by ``signer`` (a forgery helper)."""
    row = attr.evolve(row, **changes)
    return attr.evolve(row, signature=signer.sign(row.message()))
