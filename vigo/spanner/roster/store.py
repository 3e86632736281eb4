"""The roster on disk: jobs for ``vigo.store.Store.run``.

A bolt must come back from a restart (or ``kill -9``) knowing everything it
knew: who is admitted, who is removed, which join tokens are spent -- above
all, a minter must not redeem a token twice because it forgot. So the roster
is written through the store (committed before the change is acted on) and
read back at start-up.

Each record is stored as its canonical JSON with its key beside it. Saving is
an idempotent upsert (the roster only grows, so nothing is ever deleted), and
loading verifies every record again exactly as a merge does: the database is
input like any other, and a corrupted or hand-edited record is dropped and
logged rather than trusted.
"""

import json

from twisted.python import log

from vigo.spanner.canonical import canonical
from vigo.spanner.roster.crdt import Roster, RosterParts
from vigo.spanner.roster.records import RECORD_TYPES, RosterError
from vigo.spanner.roster.rows import AdmissionRow

_RECORD_TABLES = {
    "removals": ("roster_removals", "bolt_id"),
    "consumed": ("roster_consumed_tokens", "token_id"),
    "overrides": ("roster_overrides", "envoy_id"),
}
_RECORD_CLASSES = {cls.KIND: cls for cls in RECORD_TYPES}


class RosterStoreError(Exception):
    """The database holds another federation's roster than the one being saved."""


def _text(record):
    return canonical(record.to_data()).decode("ascii")


def save_roster(cursor, roster):
    """Store job: write ``roster`` (a ``Roster``, or better its ``parts()``).

    The job runs on the store thread: pass ``roster.parts()``, which is
    immutable, when the reactor may change the roster meanwhile.
    """
    parts = roster.parts() if isinstance(roster, Roster) else roster
    held = cursor.execute("SELECT id, founder_id FROM federation").fetchone()
    if held is None:
        cursor.execute("INSERT INTO federation (singleton, id, founder_id) VALUES (1, ?, ?)",
                       (parts.federation_id, parts.founder_id))
    elif tuple(held) != (parts.federation_id, parts.founder_id):
        raise RosterStoreError(
            "this server belongs to federation %s (founder %s), not %s (founder %s)"
            % (held[0], held[1], parts.federation_id, parts.founder_id))
    cursor.executemany(
        "INSERT INTO roster_rows (bolt_id, seq, record) VALUES (?, ?, ?) "
        "ON CONFLICT (bolt_id) DO UPDATE SET seq = excluded.seq, record = excluded.record "
        "WHERE excluded.seq >= roster_rows.seq AND excluded.record != roster_rows.record",
        [(row.bolt_id, row.seq, _text(row)) for row in parts.rows])
    for kind, (table, column) in _RECORD_TABLES.items():
        cursor.executemany(
            "INSERT INTO %(t)s (%(c)s, record) VALUES (?, ?) ON CONFLICT (%(c)s) "
            "DO UPDATE SET record = excluded.record WHERE excluded.record != %(t)s.record"
            % {"t": table, "c": column},
            [(record.key, _text(record)) for record in getattr(parts, kind)])
    return len(parts.rows)


def _decode(cls, text, what):
    try:
        return cls.from_data(json.loads(text))
    except (ValueError, TypeError, RosterError) as e:
        log.msg("vigo roster store: dropping an unreadable %s: %s" % (what, e))
        return None


def load_roster(cursor):
    """Store job: the saved roster, verified; None when this server has none."""
    held = cursor.execute("SELECT id, founder_id FROM federation").fetchone()
    if held is None:
        return None
    federation_id, founder_id = held
    rows = [_decode(AdmissionRow, text, "roster row")
            for (text,) in cursor.execute("SELECT record FROM roster_rows")]
    records = {}
    for kind, (table, _) in _RECORD_TABLES.items():
        records[kind] = [_decode(_RECORD_CLASSES[kind], text, kind)
                         for (text,) in cursor.execute("SELECT record FROM %s" % (table,))]
    parts = RosterParts(
        federation_id, founder_id, [r for r in rows if r is not None],
        *[[r for r in records[kind] if r is not None] for kind in _RECORD_TABLES])
    roster = Roster(federation_id, founder_id)
    report = roster.merge(parts)
    if report.rejected:
        log.msg("vigo roster store: records that no longer verify were dropped: %s" % (report,))
    return roster
