"""The change log: every committed transaction, numbered, for standbys to replay.

With high availability on (``peers.listen``, docs/ha.md), the store records
what each transaction wrote: every INSERT, UPDATE, DELETE or REPLACE a job
ran, with its parameters, in order. A job that fails is rolled back and its
statements are dropped with it. The statements of one committed transaction
are one **entry**, stored in ``replication_log`` under the next **log
sequence number** (LSN) inside that same transaction, so an entry exists if
and only if its writes do. A standby applies the entries in LSN order, each
in one transaction that also records the entry and its LSN: replaying one is
deterministic (the server's SQL takes times and ids as parameters, never from
SQLite's clock or random functions), a restart resumes at the next LSN, and a
repeat is a no-op.

Entries are JSON: ``[[sql, params, many], ...]``, where ``params`` is a list
of values or ``{"named": {name: value}}`` (a list of such when ``many``), and
bytes are ``{"b": base64}``.
"""

import base64
import json
from collections.abc import Mapping

#: SQL a change log records and a standby applies: data changes only.
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
#: Entries pruned every this many LSNs (down to ``retain``).
PRUNE_EVERY = 1000


class ChangeLogError(Exception):
    """An entry that is not one: it is refused before anything is applied."""


def is_write(sql):
    return sql.lstrip()[:7].upper().startswith(_WRITES)


def _encode_value(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b": base64.b64encode(bytes(value)).decode("ascii")}
    if value is None or isinstance(value, (int, float, str)):
        return value  # bool is an int: JSON true/false, read back as such
    raise TypeError("a store job wrote a %s, which the change log cannot carry"
                    % (type(value).__name__,))


def _decode_value(value):
    if isinstance(value, dict):
        if set(value) != {"b"} or not isinstance(value["b"], str):
            raise ChangeLogError("a parameter is not a value")
        try:
            return base64.b64decode(value["b"], validate=True)
        except ValueError:
            raise ChangeLogError("a bytes parameter is not base64") from None
    if value is None or isinstance(value, (int, float, str)):
        return value
    raise ChangeLogError("a parameter is not a value")


def _encode_params(params):
    """One statement's parameters as JSON-ready data: a list (positional), or
    ``{"named": {name: value}}`` (a mapping of named parameters)."""
    if isinstance(params, Mapping):
        return {"named": {str(k): _encode_value(v) for k, v in params.items()}}
    return [_encode_value(v) for v in params]


def _decode_params(params):
    if isinstance(params, dict):
        named = params.get("named")
        if set(params) != {"named"} or not isinstance(named, dict):
            raise ChangeLogError("named parameters are not {\"named\": {...}}")
        return {k: _decode_value(v) for k, v in named.items()}
    if not isinstance(params, list):
        raise ChangeLogError("parameters are not a list")
    return [_decode_value(v) for v in params]


def encode_statement(sql, params, many):
    """One statement as an entry holds it; ``TypeError`` for a value it cannot carry."""
    if many:
        return [sql, [_encode_params(row) for row in params], True]
    return [sql, _encode_params(params), False]


def join_entry(encoded):
    """An entry's bytes from statements ``encode_statement`` made."""
    return json.dumps(encoded, separators=(",", ":")).encode("utf-8")


def encode_entry(statements):
    """``statements`` (``[(sql, params, many)]``) as an entry's bytes."""
    return join_entry([encode_statement(sql, params, many) for sql, params, many in statements])


def decode_entry(data):
    """An entry's statements, checked; ``ChangeLogError`` for anything else."""
    try:
        statements = json.loads(data)
    except (ValueError, RecursionError):
        raise ChangeLogError("the entry is not JSON") from None
    if not isinstance(statements, list):
        raise ChangeLogError("the entry is not a list of statements")
    out = []
    for item in statements:
        if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str)
                or not isinstance(item[2], bool)):
            raise ChangeLogError("a statement is not [sql, params, many]")
        sql, params, many = item
        if not is_write(sql):
            raise ChangeLogError("a statement is not a data change: %.40r" % (sql,))
        if many:
            if not isinstance(params, list):
                raise ChangeLogError("executemany parameters are not rows")
            params = [_decode_params(row) for row in params]
        else:
            params = _decode_params(params)
        out.append((sql, params, many))
    return out


class RecordingCursor:
    """A job's cursor that notes every data change the job makes.

    A write is noted once it ran (one SQLite refused is not), its parameters
    checked first: a value the change log cannot carry fails the job (and so
    rolls it back) before anything is written. ``encoded`` are the writes as
    the entry will hold them (``statements``: read back from those).
    """

    def __init__(self, cursor):
        self._cursor = cursor
        self.encoded = []

    @property
    def statements(self):
        """``[(sql, params, many)]`` of the writes made, as a standby applies them."""
        return decode_entry(join_entry(self.encoded))

    def execute(self, sql, params=()):
        if not is_write(sql):
            return self._cursor.execute(sql, params)
        if not isinstance(params, Mapping):
            params = list(params)
        encoded = encode_statement(sql, params, False)
        result = self._cursor.execute(sql, params)
        self.encoded.append(encoded)
        return result

    def executemany(self, sql, rows):
        rows = [row if isinstance(row, Mapping) else list(row) for row in rows]
        if not is_write(sql):
            return self._cursor.executemany(sql, rows)
        encoded = encode_statement(sql, rows, True)
        result = self._cursor.executemany(sql, rows)
        self.encoded.append(encoded)
        return result

    def fetchone(self):
        return self._cursor.fetchone()

    def fetchall(self):
        return self._cursor.fetchall()

    def fetchmany(self, size=None):
        return self._cursor.fetchmany(size) if size is not None else self._cursor.fetchmany()

    def __iter__(self):
        return iter(self._cursor)

    @property
    def rowcount(self):
        return self._cursor.rowcount

    @property
    def lastrowid(self):
        return self._cursor.lastrowid

    @property
    def connection(self):
        return self._cursor.connection


class ChangeLog:
    """The store thread's side of the change log: numbers and stores entries.

    ``retain`` is how many entries are kept; ``recording`` is False on a
    standby, whose entries come from its primary (``apply_entry``).
    """

    def __init__(self, retain, recording=True):
        self.retain = retain
        self.recording = recording
        self.lsn = 0

    def opened(self, cursor):
        """Read where the log stands (the store just opened)."""
        self.lsn = last_lsn(cursor)

    def append(self, cursor, encoded):
        """Store ``encoded`` (statements ``encode_statement`` made, as a
        ``RecordingCursor`` has them) as the next entry, in the transaction
        under way; ``(lsn, entry bytes)``."""
        lsn = self.lsn + 1
        data = join_entry(encoded)
        cursor.execute("INSERT INTO replication_log (lsn, entry) VALUES (?, ?)", (lsn, data))
        cursor.execute("UPDATE replication_state SET lsn = ?", (lsn,))
        if lsn % PRUNE_EVERY == 0:
            prune(cursor, lsn - self.retain)
        self.lsn = lsn
        return lsn, data

    def rolled_back(self, lsn_before):
        """The transaction holding entries after ``lsn_before`` failed."""
        self.lsn = lsn_before


# -- store jobs (both sides) -------------------------------------------------------------


def last_lsn(cursor):
    return cursor.execute("SELECT lsn FROM replication_state").fetchone()[0]


def epoch_of(cursor):
    return cursor.execute("SELECT epoch FROM replication_state").fetchone()[0]


def prune(cursor, below):
    cursor.execute("DELETE FROM replication_log WHERE lsn <= ?", (below,))


def oldest_lsn(cursor):
    """The first LSN still in the log (None when it is empty)."""
    return cursor.execute("SELECT MIN(lsn) FROM replication_log").fetchone()[0]


def read_entries(cursor, after, limit, max_bytes):
    """``[(lsn, entry bytes)]`` after LSN ``after``: at most ``limit`` entries,
    and past ``max_bytes`` no more than the first."""
    out, size = [], 0
    for lsn, entry in cursor.execute(
            "SELECT lsn, entry FROM replication_log WHERE lsn > ? ORDER BY lsn LIMIT ?",
            (after, limit)):
        if out and size + len(entry) > max_bytes:
            break
        out.append((lsn, bytes(entry)))
        size += len(entry)
    return out


def apply_entry(cursor, lsn, data, retain=None):
    """Standby store job: apply the entry ``lsn`` (bytes) unless it is applied
    already (True if it was applied now), keeping the last ``retain`` entries.
    ``ChangeLogError`` (nothing applied) when it is not the next one or not an
    entry."""
    applied = last_lsn(cursor)
    if lsn <= applied:
        return False
    if lsn != applied + 1:
        raise ChangeLogError("entry %d does not follow %d" % (lsn, applied))
    for sql, params, many in decode_entry(data):
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    cursor.execute("INSERT OR REPLACE INTO replication_log (lsn, entry) VALUES (?, ?)",
                   (lsn, data))
    cursor.execute("UPDATE replication_state SET lsn = ?", (lsn,))
    if retain is not None and lsn % PRUNE_EVERY == 0:
        prune(cursor, lsn - retain)
    return True
