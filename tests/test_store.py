"""The store: migrations, group commit, durability and job isolation."""

import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from vigo.store import SCHEMA_VERSION, Store, StoreError, connect, migrate
from vigo.store.migrations import NewerSchema


def insert_token(cursor, token_id):
    cursor.execute(
        "INSERT INTO enrollment_tokens (id, secret_hash, uses, created_at) "
        "VALUES (?, ?, 1, 0)",
        (token_id, b"h"),
    )
    return token_id


def count_tokens(cursor):
    return cursor.execute("SELECT COUNT(*) FROM enrollment_tokens").fetchone()[0]


class MigrationTests(unittest.SynchronousTestCase):
    def test_fresh_database_gets_current_schema(self):
        connection = connect(self.mktemp())
        self.assertEqual(migrate(connection), SCHEMA_VERSION)
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        self.assertEqual(version, SCHEMA_VERSION)
        self.assertEqual(
            connection.execute("PRAGMA journal_mode").fetchone()[0], "wal"
        )

    def test_migrate_is_idempotent(self):
        path = self.mktemp()
        migrate(connect(path))
        self.assertEqual(migrate(connect(path)), SCHEMA_VERSION)

    def test_newer_database_refused(self):
        path = self.mktemp()
        connection = connect(path)
        connection.execute("PRAGMA user_version = %d" % (SCHEMA_VERSION + 1,))
        error = self.assertRaises(NewerSchema, migrate, connect(path))
        self.assertIn("newer", str(error))
        # The store says so as a StoreError, which stops the server with one line.
        store = Store(path, reactor)
        error = self.assertRaises(StoreError, store.open)
        self.assertIn("newer", str(error))


class StoreTests(unittest.TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.store = Store(self.path, reactor)
        self.store.open()
        self.addCleanup(self.store.close)

    @defer.inlineCallbacks
    def test_committed_before_answer(self):
        yield self.store.run(insert_token, "t1")
        # A second, independent connection sees it: it is committed.
        other = sqlite3.connect(self.path)
        self.assertEqual(other.execute("SELECT id FROM enrollment_tokens").fetchall(), [("t1",)])

    @defer.inlineCallbacks
    def test_failing_job_rolls_back_alone(self):
        results = yield defer.DeferredList(
            [
                self.store.run(insert_token, "a"),
                self.store.run(insert_token, "a"),  # duplicate key
                self.store.run(insert_token, "b"),
            ],
            consumeErrors=True,
        )
        self.assertEqual([ok for ok, _ in results], [True, False, True])
        results[1][1].trap(sqlite3.IntegrityError)
        self.assertEqual((yield self.store.run(count_tokens)), 2)

    @defer.inlineCallbacks
    def test_concurrent_jobs_share_commits(self):
        yield defer.gatherResults(
            [self.store.run(insert_token, "t%d" % i) for i in range(200)]
        )
        self.assertEqual((yield self.store.run(count_tokens)), 200)
        self.assertLess(self.store.commits, 200)

    @defer.inlineCallbacks
    def test_reopen_keeps_data(self):
        yield self.store.run(insert_token, "kept")
        yield self.store.close()
        self.store = Store(self.path, reactor)
        self.store.open()
        self.assertEqual((yield self.store.run(count_tokens)), 1)
