"""The change log (vigo/store/changelog.py) and the store that records it.

Entries are encoded and decoded faithfully and anything else is refused
before it is applied; a ``Store`` with a ``ChangeLog`` numbers one entry per
committed batch, holding only the statements of the jobs that committed;
``apply_entry`` replays them on a second database in order, a repeat is a
no-op and a gap is refused, so a standby that applied every entry holds the
same tables as its primary.

Most tests drive the real ``Store`` without its thread (``SyncStore``: the
thread's loop is run by the test, one ``flush()`` being one batch), so group
commit is deterministic; a few use the real thread and reactor.
"""

import datetime
import json
import queue
import sqlite3
import types

from twisted.internet import defer, reactor
from twisted.trial import unittest

from vigo.api.auth import delete_api_token, insert_api_token
from vigo.fleet.enrollment import store_envoy
from vigo.fleet.enrollment_tokens import insert_token, redeem_token
from vigo.fleet.fleet import set_state, write_behind
from vigo.identity import key_id
from vigo.server.peer import members as records
from vigo.server.peer.standby import apply_batch
from vigo.store import changelog
from vigo.store.changelog import (
    ChangeLog,
    ChangeLogError,
    RecordingCursor,
    apply_entry,
    decode_entry,
    encode_entry,
    is_write,
    last_lsn,
    oldest_lsn,
    read_entries,
)
from vigo.store.database import Store, connect
from vigo.store.migrations import migrate
from vigo.tokens import hash_secret

#: The tables a standby must hold as its primary does (data and replica set).
TABLES = ("envoys", "enrollment_tokens", "api_tokens", "replica_members", "replica_invites",
          "replication_epochs", "replication_state")


def dump(connection, tables=TABLES):
    """Every row of ``tables`` (in a stable order), for comparing two databases."""
    return {table: sorted(connection.execute("SELECT * FROM %s" % (table,)).fetchall(), key=repr)
            for table in tables}


class _AtOnce:
    """A reactor for a ``SyncStore``: ``callFromThread`` calls there and then."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class SyncStore(Store):
    """The real ``Store``, its thread's loop run by the test.

    ``run`` queues a job as ever; ``flush()`` takes everything queued as one
    batch, as the store thread does, and runs it here (``Store._run_batch``:
    one transaction, its entry, the answers), so a test decides exactly which
    jobs share a transaction. ``open`` is ``Store.open`` without the thread.
    """

    def __init__(self, path, changelog=None):
        Store.__init__(self, path, _AtOnce(), changelog)

    def open(self):
        self._connection = connect(self.path)
        migrate(self._connection)
        if self.changelog is not None:
            self.changelog.opened(self._connection.cursor())
            self.lsn = self.changelog.lsn
        self.cursor = self._connection.cursor()
        return self

    @property
    def connection(self):
        return self._connection

    def flush(self, cursor=None):
        """Run what is queued as one batch; how many jobs it held."""
        jobs = []
        while True:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if jobs:
            self._run_batch(self.cursor if cursor is None else cursor, jobs)
        return len(jobs)

    def batch(self, *calls):
        """Run ``calls`` (each ``(job, *args)``) as one batch; their Deferreds (fired)."""
        ds = [self.run(call[0], *call[1:]) for call in calls]
        self.flush()
        return ds

    def close(self):
        self._closed = True
        self._connection.close()
        return defer.succeed(None)


def open_sync_store(case, path, retain=1000, recording=True):
    store = SyncStore(path, ChangeLog(retain, recording=recording)).open()
    case.addCleanup(lambda: store.close() if not store._closed else None)
    return store


def log_rows(connection):
    return connection.execute("SELECT lsn, entry FROM replication_log ORDER BY lsn").fetchall()


# -- jobs -----------------------------------------------------------------------------------


def put_token(cursor, token_id, uses=1):
    cursor.execute("INSERT INTO enrollment_tokens (id, secret_hash, uses, created_at) "
                   "VALUES (?, ?, ?, ?)", (token_id, b"\x00h\xff" + token_id.encode(), uses, 1.5))
    return token_id


def tokens(cursor):
    return [row[0] for row in cursor.execute("SELECT id FROM enrollment_tokens ORDER BY id")]


def put_then_fail(cursor, token_id):
    put_token(cursor, token_id)
    raise ValueError("the job changed its mind")


class Oops(Exception):
    pass


# -- encoding -------------------------------------------------------------------------------


class EncodingTests(unittest.SynchronousTestCase):

    def test_values_round_trip(self):
        statements = [
            ("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
             [b"\x00\xffbytes", b"", None, 0, -1, 2 ** 62, 1.5, -2.25e-300, "s\u00e9\u2603\U0001f600"],
             False),
            ("UPDATE t SET a = ?", [bytearray(b"ba")], False),
            ("DELETE FROM t WHERE a = ?", [memoryview(b"mv")], False),
            ("REPLACE INTO t VALUES (?)", [], False),
        ]
        decoded = decode_entry(encode_entry(statements))
        self.assertEqual(decoded, [
            (statements[0][0], statements[0][1], False),
            ("UPDATE t SET a = ?", [b"ba"], False),
            ("DELETE FROM t WHERE a = ?", [b"mv"], False),
            ("REPLACE INTO t VALUES (?)", [], False),
        ])
        self.assertIsInstance(decoded[1][1][0], bytes)
        self.assertIsInstance(decoded[0][1][6], float)
        self.assertIsInstance(decoded[0][1][5], int)

    def test_executemany_rows_round_trip(self):
        rows = [[b"k1", 1, None, "a"], [b"", -7, 0.5, ""], []]
        statements = [("INSERT INTO t VALUES (?, ?, ?, ?)", rows, True),
                      ("UPDATE t SET a = ?", [], True)]
        self.assertEqual(decode_entry(encode_entry(statements)), statements)

    def test_an_entry_is_compact_json(self):
        data = encode_entry([("INSERT INTO t VALUES (?, ?)", [b"\x01", 2], False)])
        self.assertIsInstance(data, bytes)
        self.assertEqual(json.loads(data), [["INSERT INTO t VALUES (?, ?)", [{"b": "AQ=="}, 2],
                                             False]])
        self.assertNotIn(b" ", data.replace(b"INSERT INTO t VALUES (?, ?)", b""))

    def test_encoding_refuses_what_it_cannot_carry(self):
        for value in (object(), [1], {"b": "AA=="}, (1,), datetime.date(2024, 1, 1)):
            self.assertRaises(TypeError, encode_entry, [("INSERT INTO t VALUES (?)", [value],
                                                          False)])

    def test_a_bool_round_trips(self):
        # sqlite3 stores True as 1: a job may pass a bool, and the encoder
        # takes it (bool is an int) as JSON true; the decoder must take it back.
        data = encode_entry([("UPDATE t SET a = ?", [True], False)])
        self.assertEqual(decode_entry(data), [("UPDATE t SET a = ?", [1], False)])


    def test_is_write(self):
        for sql in ("INSERT INTO t VALUES (1)", "insert into t values (1)", "  \n\tUPDATE t SET a=1",
                    "DELETE FROM t", "REPLACE INTO t VALUES (1)", "INSERT OR REPLACE INTO t VALUES (1)",
                    "Update t set a = 1"):
            self.assertTrue(is_write(sql), sql)
        for sql in ("SELECT 1", "DROP TABLE t", "CREATE TABLE t (a)", "PRAGMA user_version = 9",
                    "ATTACH 'x' AS y", "BEGIN", "COMMIT", "SAVEPOINT job", "VACUUM", "",
                    "WITH x AS (SELECT 1) SELECT * FROM x", "ALTER TABLE t ADD b"):
            self.assertFalse(is_write(sql), sql)


def _bad_entries():
    good = ["INSERT INTO enrollment_tokens (id, secret_hash, uses, created_at) "
            "VALUES (?, ?, 1, 0)", ["t1", {"b": "aA=="}], False]

    def after_good(*statements):
        return json.dumps([good, *statements]).encode()

    return {
        # not JSON
        "empty": b"",
        "garbage": b"not json at all",
        "not utf-8": b"\xff\xfe[",
        "truncated": json.dumps([good]).encode()[:-3],
        "deep": b"[" * 100000 + b"]" * 100000,
        # wrong shapes
        "object": b'{"sql": "INSERT"}',
        "number": b"42",
        "string": b'"INSERT INTO t VALUES (1)"',
        "null": b"null",
        "statement not a list": after_good("INSERT INTO t VALUES (1)"),
        "two items": after_good(["INSERT INTO t VALUES (1)", []]),
        "four items": after_good(["INSERT INTO t VALUES (1)", [], False, 1]),
        "sql not a string": after_good([1, [], False]),
        "params not a list": after_good(["INSERT INTO t VALUES (?)", {"a": 1}, False]),
        "params a string": after_good(["INSERT INTO t VALUES (?)", "1", False]),
        "many not a bool": after_good(["INSERT INTO t VALUES (?)", [1], 0]),
        "many null": after_good(["INSERT INTO t VALUES (?)", [1], None]),
        "many rows not lists": after_good(["INSERT INTO t VALUES (?)", [1, 2], True]),
        "nested value": after_good(["INSERT INTO t VALUES (?)", [[1]], False]),
        "nested value in a row": after_good(["INSERT INTO t VALUES (?)", [[[1]]], True]),
        "dict not bytes": after_good(["INSERT INTO t VALUES (?)", [{"x": "AA=="}], False]),
        "dict extra key": after_good(["INSERT INTO t VALUES (?)", [{"b": "AA==", "c": 1}],
                                      False]),
        "bytes not a string": after_good(["INSERT INTO t VALUES (?)", [{"b": 5}], False]),
        # not a data change
        "drop": after_good(["DROP TABLE envoys", [], False]),
        "select": after_good(["SELECT * FROM envoys", [], False]),
        "pragma": after_good(["PRAGMA user_version = 1", [], False]),
        "create": after_good(["CREATE TABLE x (a)", [], False]),
        "attach": after_good(["ATTACH DATABASE 'x' AS y", [], False]),
        "commit": after_good(["COMMIT", [], False]),
        "empty sql": after_good(["", [], False]),
        # bad base64
        "base64 alphabet": after_good(["INSERT INTO t VALUES (?)", [{"b": "!!!!"}], False]),
        "base64 padding": after_good(["INSERT INTO t VALUES (?)", [{"b": "abc"}], False]),
        "base64 urlsafe": after_good(["INSERT INTO t VALUES (?)", [{"b": "-_-_"}], False]),
        "base64 in a row": after_good(["INSERT INTO t VALUES (?)", [[{"b": "a b="}]], True]),
    }


class RefusalTests(unittest.SynchronousTestCase):
    """Anything that is not an entry is refused before anything is applied."""

    def setUp(self):
        self.connection = connect(self.mktemp())
        migrate(self.connection)
        self.addCleanup(self.connection.close)

    def test_decode_refuses(self):
        for name, data in _bad_entries().items():
            with self.subTest(name):
                self.assertRaises(ChangeLogError, decode_entry, data)

    def test_apply_refuses_and_applies_nothing(self):
        before = dump(self.connection, TABLES + ("replication_log",))
        cursor = self.connection.cursor()
        for name, data in _bad_entries().items():
            with self.subTest(name):
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    self.assertRaises(ChangeLogError, apply_entry, cursor, 1, data)
                    # Refused before the first (good) statement ran.
                    self.assertEqual(dump(self.connection, TABLES + ("replication_log",)),
                                     before)
                finally:
                    cursor.execute("ROLLBACK")

    def test_a_second_statement_hidden_after_a_write_is_not_run(self):
        """``is_write`` sees the first word only; SQLite runs one statement."""
        store = open_sync_store(self, self.mktemp(), recording=False)
        data = json.dumps([["DELETE FROM enrollment_tokens; DROP TABLE envoys", [], False]])
        [d] = store.batch((apply_entry, 1, data.encode()))
        self.failureResultOf(d, sqlite3.Error)
        self.assertEqual(store.connection.execute("SELECT COUNT(*) FROM envoys").fetchone(),
                         (0,))
        self.assertEqual(last_lsn(store.connection.cursor()), 0)


# -- the recording cursor ---------------------------------------------------------------------


class RecordingCursorTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.connection = sqlite3.connect(":memory:", isolation_level=None)
        self.connection.execute("CREATE TABLE t (a, b)")
        self.cursor = RecordingCursor(self.connection.cursor())

    def test_records_writes_only(self):
        c = self.cursor
        c.execute("INSERT INTO t VALUES (?, ?)", (1, b"x"))
        c.execute("SELECT * FROM t WHERE a = ?", (1,))
        self.assertEqual(c.fetchall(), [(1, b"x")])
        c.execute("  update t SET b = ? WHERE a = ?", [b"y", 1])
        c.execute("SELECT COUNT(*) FROM t")
        self.assertEqual(c.fetchone(), (1,))
        c.executemany("INSERT INTO t VALUES (?, ?)", ((i, None) for i in range(2, 4)))
        c.execute("REPLACE INTO t VALUES (9, 9)")
        c.execute("DELETE FROM t WHERE a = ?", (2,))
        c.execute("PRAGMA user_version")
        self.assertEqual(c.statements, [
            ("INSERT INTO t VALUES (?, ?)", [1, b"x"], False),
            ("  update t SET b = ? WHERE a = ?", [b"y", 1], False),
            ("INSERT INTO t VALUES (?, ?)", [[2, None], [3, None]], True),
            ("REPLACE INTO t VALUES (9, 9)", [], False),
            ("DELETE FROM t WHERE a = ?", [2], False),
        ])
        # ... and the writes were made, rows from a generator included.
        self.assertEqual(sorted(self.connection.execute("SELECT a FROM t")),
                         [(1,), (3,), (9,)])

    def test_passes_the_cursor_through(self):
        c = self.cursor
        c.execute("INSERT INTO t VALUES (1, 2)")
        self.assertEqual(c.rowcount, 1)
        self.assertEqual(c.lastrowid, 1)
        self.assertIs(c.connection, self.connection)
        c.executemany("INSERT INTO t VALUES (?, ?)", [(2, 2), (3, 3)])
        self.assertEqual(c.rowcount, 2)
        c.execute("SELECT a FROM t ORDER BY a")
        self.assertEqual(list(c), [(1,), (2,), (3,)])
        c.execute("SELECT a FROM t ORDER BY a")
        self.assertEqual(c.fetchmany(2), [(1,), (2,)])
        self.assertEqual(c.fetchmany(), [(3,)])
        self.assertEqual(c.statements[0], ("INSERT INTO t VALUES (1, 2)", [], False))

    def test_named_parameters_are_written_and_recorded(self):
        # sqlite3 takes a mapping for named parameters; the recording cursor
        # must neither change what is written nor record something else.
        self.cursor.execute("INSERT INTO t (a, b) VALUES (:a, :b)", {"a": 42, "b": b"v"})
        self.assertEqual(self.connection.execute("SELECT a, b FROM t").fetchall(),
                         [(42, b"v")])



# -- the store records its transactions -----------------------------------------------------


class StoreChangeLogTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.path = self.mktemp()
        self.store = open_sync_store(self, self.path)
        self.heard = []
        self.store.on_entry = lambda lsn, data: self.heard.append((lsn, data))

    def entries(self):
        return [(lsn, decode_entry(bytes(data))) for lsn, data in log_rows(self.store.connection)]

    def test_one_entry_per_committed_batch(self):
        ds = self.store.batch((put_token, "a"), (put_token, "b"), (tokens,), (put_token, "c"))
        self.assertEqual([self.successResultOf(d) for d in ds], ["a", "b", ["a", "b"], "c"])
        [(lsn, statements)] = self.entries()
        self.assertEqual(lsn, 1)
        self.assertEqual([params[0] for _, params, _ in statements], ["a", "b", "c"])
        self.assertEqual(self.store.lsn, 1)
        self.assertEqual(self.store.changelog.lsn, 1)
        self.assertEqual(self.store.commits, 1)
        ds = self.store.batch((put_token, "d"))
        self.successResultOf(ds[0])
        self.store.batch((put_token, "e"), (put_token, "f"))
        self.assertEqual([lsn for lsn, _ in self.entries()], [1, 2, 3])
        self.assertEqual([[p[0] for _, p, _ in s] for _, s in self.entries()],
                         [["a", "b", "c"], ["d"], ["e", "f"]])
        self.assertEqual(last_lsn(self.store.connection.cursor()), 3)

    def test_a_job_that_raises_leaves_nothing_of_its_own(self):
        ds = self.store.batch((put_token, "a"), (put_then_fail, "x"), (put_token, "b"))
        self.assertEqual(self.successResultOf(ds[0]), "a")
        self.failureResultOf(ds[1], ValueError)
        self.assertEqual(self.successResultOf(ds[2]), "b")
        [(lsn, statements)] = self.entries()
        self.assertEqual([p[0] for _, p, _ in statements], ["a", "b"])
        self.assertEqual(tokens(self.store.connection.cursor()), ["a", "b"])
        self.assertEqual(self.heard[0][0], 1)

    def test_a_batch_without_committed_writes_adds_no_entry(self):
        self.store.batch((put_token, "a"))
        ds = self.store.batch((tokens,), (put_then_fail, "x"), (last_lsn,))
        self.assertEqual(self.successResultOf(ds[0]), ["a"])
        self.failureResultOf(ds[1], ValueError)
        self.assertEqual(self.successResultOf(ds[2]), 1)
        self.assertEqual([lsn for lsn, _ in self.entries()], [1])
        self.assertEqual(self.store.lsn, 1)
        self.assertEqual(self.heard, [(1, log_rows(self.store.connection)[0][1])])
        # The next write takes the next LSN: no gap.
        self.store.batch((put_token, "b"))
        self.assertEqual([lsn for lsn, _ in self.entries()], [1, 2])

    def test_a_write_failed_and_caught_by_its_job_is_not_recorded(self):
        # A job may try a write and go on when SQLite refuses it; the entry
        # must hold what was written, or a standby's replay of it fails.
        def insert_unless_there(cursor, token_id):
            try:
                put_token(cursor, token_id)
            except sqlite3.IntegrityError:
                return False
            return True

        self.store.batch((put_token, "a"))
        [d] = self.store.batch((insert_unless_there, "a"))
        self.assertFalse(self.successResultOf(d))
        standby = open_sync_store(self, self.mktemp(), recording=False)
        for lsn, data in log_rows(self.store.connection):
            [d] = standby.batch((apply_entry, lsn, bytes(data)))
            self.successResultOf(d)


    def test_on_entry_hears_before_the_jobs_are_answered(self):
        order = []
        self.store.on_entry = lambda lsn, data: order.append(("entry", lsn, data))
        d = self.store.run(put_token, "a")
        d.addCallback(lambda _: order.append(("answer",)))
        self.store.flush()
        [(lsn, data)] = log_rows(self.store.connection)
        self.assertEqual(order, [("entry", 1, bytes(data)), ("answer",)])
        self.assertIsInstance(order[0][2], bytes)

    def test_a_failing_listener_does_not_stop_the_answers(self):
        def listener(lsn, data):
            raise Oops()

        self.store.on_entry = listener
        [d] = self.store.batch((put_token, "a"))
        self.assertEqual(self.successResultOf(d), "a")
        self.assertEqual(len(self.flushLoggedErrors(Oops)), 1)

    def test_pruning_keeps_retain_entries(self):
        self.patch(changelog, "PRUNE_EVERY", 5)
        self.store.changelog.retain = 3
        for i in range(9):
            self.store.batch((put_token, "t%d" % (i,)))
        self.assertEqual([lsn for lsn, _ in self.entries()], [3, 4, 5, 6, 7, 8, 9])
        self.store.batch((put_token, "t9"))
        self.assertEqual([lsn for lsn, _ in self.entries()], [8, 9, 10])
        self.assertEqual(oldest_lsn(self.store.connection.cursor()), 8)
        self.assertEqual(last_lsn(self.store.connection.cursor()), 10)

    def test_a_failed_transaction_gives_back_its_lsn(self):
        self.store.batch((put_token, "a"))

        class FailingCommit:
            def __init__(self, cursor):
                self._cursor = cursor

            def execute(self, sql, *args):
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("disk I/O error")
                return self._cursor.execute(sql, *args)

        d = self.store.run(put_token, "b")
        self.store.flush(FailingCommit(self.store.cursor))
        self.failureResultOf(d, sqlite3.OperationalError)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual(self.store.changelog.lsn, 1)
        self.assertEqual(self.store.lsn, 1)
        self.assertEqual(len(self.heard), 1)
        self.store.batch((put_token, "c"))
        self.assertEqual([(lsn, [p[0] for _, p, _ in s]) for lsn, s in self.entries()],
                         [(1, ["a"]), (2, ["c"])])

    def test_a_value_the_log_cannot_carry_fails_its_job_alone(self):
        # sqlite3 (3.11) writes a datetime through its default adapter; the
        # change log cannot carry one. That job should fail, not the store.
        def write_date(cursor):
            cursor.execute("UPDATE enrollment_tokens SET expires_at = ?",
                           (datetime.datetime(2030, 1, 1),))

        ds = self.store.batch((put_token, "a"), (write_date,))
        self.successResultOf(ds[0])
        self.failureResultOf(ds[1], TypeError)


    def test_reopening_resumes_the_lsn(self):
        self.store.batch((put_token, "a"))
        self.store.batch((put_token, "b"))
        self.store.close()
        again = open_sync_store(self, self.path)
        self.assertEqual(again.lsn, 2)
        again.batch((put_token, "c"))
        self.assertEqual([lsn for lsn, _ in log_rows(again.connection)], [1, 2, 3])

    def test_read_entries(self):
        for name in "abcde":
            self.store.batch((put_token, name * 50))
        cursor = self.store.connection.cursor()
        every = read_entries(cursor, 0, 100, 1 << 20)
        self.assertEqual([lsn for lsn, _ in every], [1, 2, 3, 4, 5])
        self.assertEqual([lsn for lsn, _ in read_entries(cursor, 2, 2, 1 << 20)], [3, 4])
        self.assertEqual(read_entries(cursor, 5, 10, 1 << 20), [])
        # Past max_bytes no more than the first.
        self.assertEqual([lsn for lsn, _ in read_entries(cursor, 0, 100, 1)], [1])
        size = len(every[0][1])
        self.assertEqual([lsn for lsn, _ in read_entries(cursor, 0, 100, 2 * size)], [1, 2])
        self.assertTrue(all(isinstance(data, bytes) for _, data in every))


class ThreadedStoreTests(unittest.TestCase):
    """The same through the store's own thread and the reactor."""

    def setUp(self):
        self.store = Store(self.mktemp(), reactor, ChangeLog(1000))
        self.heard = []
        self.store.on_entry = lambda lsn, data: self.heard.append((lsn, data))

    def tearDown(self):
        return self.store.close()

    @defer.inlineCallbacks
    def test_one_entry_for_jobs_queued_together(self):
        # Queued before the thread starts, they are one batch.
        ds = [self.store.run(put_token, name) for name in ("a", "b", "c")]
        ds.append(self.store.run(put_then_fail, "x"))
        self.store.open()
        results = yield defer.DeferredList(ds, consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [True, True, True, False])
        self.assertEqual(self.store.lsn, 1)
        [(lsn, data)] = self.heard
        self.assertEqual([p[0] for _, p, _ in decode_entry(data)], ["a", "b", "c"])
        yield self.store.run(put_token, "d")
        rows = yield self.store.run(lambda cursor: log_rows(cursor.connection))
        self.assertEqual([lsn for lsn, _ in rows], [1, 2])
        self.assertEqual([lsn for lsn, _ in self.heard], [1, 2])

    @defer.inlineCallbacks
    def test_on_entry_is_heard_before_the_answer(self):
        self.store.open()
        seen = []
        d = self.store.run(put_token, "a")
        d.addCallback(lambda _: seen.append(list(self.heard)))
        yield d
        [[(lsn, data)]] = seen
        self.assertEqual(lsn, 1)
        self.assertIsInstance(data, bytes)
        self.assertEqual(decode_entry(data)[0][1][0], "a")
        reads = yield self.store.run(tokens)
        self.assertEqual(reads, ["a"])
        self.assertEqual(len(self.heard), 1)  # a read adds no entry


# -- a second database replays them ---------------------------------------------------------


def _workload(now=1000.0):
    """Batches of product store jobs touching every replicated table."""
    key = bytes(range(32))
    other = bytes(range(1, 33))
    token = types.SimpleNamespace(token_id="tok1", secret_hash=hash_secret("s1"))
    return [
        [(insert_token, token, 3, now, now + 3600), (put_token, "plain")],
        [(redeem_token, "tok1", hash_secret("s1"), now + 1),
         (store_envoy, now + 1, "envoy1", "web1.example.com", b"\x01" * 32, "tok1")],
        [(store_envoy, now + 2, "envoy2", "web2.example.com", b"\x02" * 32, None)],
        [(insert_api_token, "api1", b"\xaa" * 32, "ops", now),
         (insert_api_token, "api2", b"\xbb" * 32, "ci", now)],
        [(write_behind, [(now + 5, 7, 8, 3, b"\x00v1", 1, "envoy1"),
                         (now + 6, 2, 3, 1, None, 0, "envoy2")])],
        [(records.add_member, key, "127.0.0.1:1", "https://a", "127.0.0.1:2", now)],
        [(records.create_invite, "inv1", "secret", now, now + 60),
         (records.redeem_invite, "inv1", "secret", "node2", now + 1),
         (records.add_member, other, "127.0.0.1:3", "https://b", "127.0.0.1:4", now + 1)],
        [(set_state, "envoy2", "revoked"), (delete_api_token, "api2")],
        [(records.record_promotion, 1, "node2", now + 9)],
        [(records.remove_member, key_id(key), now + 10)],
    ]


class ApplyTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.primary = open_sync_store(self, self.mktemp())
        self.standby = open_sync_store(self, self.mktemp(), recording=False)

    def write(self, batches=None):
        for batch in batches or _workload():
            for d in self.primary.batch(*batch):
                self.successResultOf(d)
        return [(lsn, bytes(data)) for lsn, data in log_rows(self.primary.connection)]

    def apply(self, lsn, data, retain=None):
        [d] = self.standby.batch((apply_entry, lsn, data, retain))
        return d

    def test_applying_every_entry_gives_the_same_tables(self):
        entries = self.write()
        self.assertEqual(len(entries), len(_workload()))
        for lsn, data in entries:
            self.assertTrue(self.successResultOf(self.apply(lsn, data)))
        self.assertEqual(dump(self.standby.connection), dump(self.primary.connection))
        self.assertEqual(log_rows(self.standby.connection), log_rows(self.primary.connection))
        self.assertEqual(records.replication_position(self.standby.connection.cursor()),
                         (len(entries), 1))
        # Some rows, to be sure the workload wrote what it meant to.
        envoys = self.standby.connection.execute(
            "SELECT id, state, last_seq, applied_version FROM envoys ORDER BY id").fetchall()
        self.assertEqual(envoys[0][0], "envoy1")
        self.assertEqual(envoys[0][3], b"\x00v1")
        self.assertEqual(envoys[1][1], "revoked")

    def test_in_order_only(self):
        entries = self.write()
        (l1, e1), (l2, e2), (l3, e3) = entries[:3]
        before = dump(self.standby.connection)
        # A gap is refused and changes nothing.
        self.failureResultOf(self.apply(l2, e2), ChangeLogError)
        self.assertEqual(dump(self.standby.connection), before)
        self.assertEqual(log_rows(self.standby.connection), [])
        self.assertTrue(self.successResultOf(self.apply(l1, e1)))
        after_one = dump(self.standby.connection)
        # A repeat is a no-op.
        self.assertFalse(self.successResultOf(self.apply(l1, e1)))
        self.assertEqual(dump(self.standby.connection), after_one)
        self.failureResultOf(self.apply(l3, e3), ChangeLogError)
        self.assertEqual(dump(self.standby.connection), after_one)
        self.assertTrue(self.successResultOf(self.apply(l2, e2)))
        self.assertTrue(self.successResultOf(self.apply(l3, e3)))
        # Repeats of older ones are no-ops too, even if their bytes differ.
        self.assertFalse(self.successResultOf(self.apply(l1, b"not even json")))
        self.assertEqual(last_lsn(self.standby.connection.cursor()), 3)

    def test_apply_batch_is_one_transaction(self):
        entries = self.write()
        # A batch with a gap in it: the entries before the gap are not kept.
        [d] = self.standby.batch((apply_batch, [entries[0], entries[1], entries[3]], None))
        self.failureResultOf(d, ChangeLogError)
        self.assertEqual(last_lsn(self.standby.connection.cursor()), 0)
        self.assertEqual(dump(self.standby.connection)["enrollment_tokens"], [])
        [d] = self.standby.batch((apply_batch, entries[:4], None))
        self.assertEqual(self.successResultOf(d), (4, 0))
        # Overlapping batches: the repeats are skipped.
        [d] = self.standby.batch((apply_batch, entries[2:], None))
        self.assertEqual(self.successResultOf(d), (len(entries), 1))
        self.assertEqual(dump(self.standby.connection), dump(self.primary.connection))

    def test_the_standby_prunes_its_log(self):
        self.patch(changelog, "PRUNE_EVERY", 4)
        entries = self.write([[(put_token, "t%d" % (i,))] for i in range(9)])
        for lsn, data in entries:
            self.successResultOf(self.apply(lsn, data, 2))
        self.assertEqual([lsn for lsn, _ in log_rows(self.standby.connection)],
                         [7, 8, 9])
        self.assertEqual(dump(self.standby.connection), dump(self.primary.connection))
