"""SQLite under ``data_dir``: one connection, one thread, group commit.

Every query runs on the store's own thread, never on the reactor. Work is
queued as functions of a cursor; the thread takes whatever is queued, runs each
job inside its own savepoint of one transaction, commits (``synchronous=FULL``,
so a commit is on disk), and only then answers each job on the reactor thread.
A yes from the store therefore means durable, and a burst of enrollments pays
for one fsync, not one each. A job that raises is rolled back alone.
"""

import os
import queue
import sqlite3
import threading

from twisted.internet import defer
from twisted.python import failure, log

DB_FILE = "vigo.sqlite3"

# Each migration takes the schema from version N-1 to N; never edit a shipped one.
MIGRATIONS = (
    (
        1,
        (
            """CREATE TABLE envoys (
                id TEXT PRIMARY KEY,
                hostname TEXT NOT NULL,
                public_key BLOB NOT NULL,
                state TEXT NOT NULL DEFAULT 'active',
                enrolled_at REAL NOT NULL,
                token_id TEXT,
                last_seen REAL,
                last_seq INTEGER NOT NULL DEFAULT 0,
                checkins INTEGER NOT NULL DEFAULT 0,
                applied_version BLOB,
                pending_push INTEGER NOT NULL DEFAULT 0,
                redirect TEXT
            )""",
            "CREATE UNIQUE INDEX envoys_active_hostname ON envoys(hostname) "
            "WHERE state = 'active'",
            """CREATE TABLE enrollment_tokens (
                id TEXT PRIMARY KEY,
                secret_hash BLOB NOT NULL,
                uses INTEGER NOT NULL,
                used INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                expires_at REAL
            )""",
            """CREATE TABLE api_tokens (
                id TEXT PRIMARY KEY,
                secret_hash BLOB NOT NULL UNIQUE,
                name TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
        ),
    ),
    (
        # Spanner: this bolt's copy of the roster (vigo/spanner/roster/store.py).
        # Each record is kept as its canonical JSON and verified again on load.
        2,
        (
            """CREATE TABLE federation (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                id TEXT NOT NULL,
                founder_id TEXT NOT NULL
            )""",
            """CREATE TABLE roster_rows (
                bolt_id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                record TEXT NOT NULL
            )""",
            """CREATE TABLE roster_removals (
                bolt_id TEXT PRIMARY KEY,
                record TEXT NOT NULL
            )""",
            """CREATE TABLE roster_consumed_tokens (
                token_id TEXT PRIMARY KEY,
                record TEXT NOT NULL
            )""",
            """CREATE TABLE roster_overrides (
                envoy_id TEXT PRIMARY KEY,
                record TEXT NOT NULL
            )""",
        ),
    ),
    (
        # Spanner: join tokens this bolt minted (vigo/spanner/invites.py); a
        # redemption is serialised here, at the minter, before anything else.
        3,
        (
            """CREATE TABLE spanner_invites (
                id TEXT PRIMARY KEY,
                secret_hash BLOB NOT NULL,
                expires_at_ms INTEGER NOT NULL,
                created_at_ms INTEGER NOT NULL,
                consumed_by TEXT,
                consumed_at_ms INTEGER
            )""",
        ),
    ),
    (
        # Spanner: this bolt's drain in progress (vigo/spanner/drain.py), so a
        # restart resumes it with the same destination (``target``: None means
        # each envoy's pattern owner).
        4,
        (
            """CREATE TABLE spanner_drain (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                target TEXT,
                started_at_ms INTEGER NOT NULL
            )""",
        ),
    ),
    (
        # Spanner: envoys this bolt is handing to another (``target``), written
        # before the hand-over starts and deleted when the envoy is marked
        # moved, so a restart finishes a reassign a crash interrupted
        # (vigo/spanner/handover.py).
        5,
        (
            """CREATE TABLE envoy_moves (
                envoy_id TEXT PRIMARY KEY,
                target TEXT NOT NULL,
                started_at_ms INTEGER NOT NULL
            )""",
        ),
    ),
    (
        # Enrollment tokens an operator withdrew (``vigocli token withdraw``):
        # refused from then on, kept for the record.
        6,
        ("ALTER TABLE enrollment_tokens ADD COLUMN withdrawn_at REAL",),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def shielded(d):
    """A Deferred with ``d``'s result that a caller's cancel (a timeout, say)
    does not reach ``d`` through: the job still commits, and the callbacks
    already on ``d`` (which bring memory in line with the database) still run.
    A cancelled caller just stops waiting."""
    outer = defer.Deferred()

    def relay(result):
        if not outer.called:
            outer.callback(result)
        elif isinstance(result, failure.Failure):
            log.err(result, "a store job failed after its caller stopped waiting")
        return None

    d.addBoth(relay)
    return outer


class StoreError(Exception):
    """The database cannot be opened or is newer than this server."""


def migrate(connection):
    """Bring the schema up to ``SCHEMA_VERSION``; refuse a newer database."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            "database schema version %d is newer than this server's %d; "
            "upgrade vigosrv" % (version, SCHEMA_VERSION)
        )
    for target, statements in MIGRATIONS:
        if target <= version:
            continue
        # One transaction per migration (the connection runs in autocommit):
        # a crash leaves the schema at the old version or the new, never
        # between (SQLite rolls schema changes back with the transaction).
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                connection.execute(statement)
            connection.execute("PRAGMA user_version = %d" % (target,))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    return SCHEMA_VERSION


def connect(path):
    if not os.path.exists(path):
        # Token hashes and envoy keys: readable by the server's user only.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


_STOP = object()


class Store:
    """The server's database, worked on by one thread.

    ``run(job, *args)`` queues ``job(cursor, *args)`` and returns a Deferred
    that fires with its result once the transaction holding it is committed.
    """

    def __init__(self, path, reactor):
        self.path = path
        self._reactor = reactor
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._connection = None
        self.commits = 0

    @classmethod
    def in_directory(cls, data_dir, reactor):
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        return cls(os.path.join(data_dir, DB_FILE), reactor)

    def open(self):
        """Open (and migrate) the database and start the store thread."""
        try:
            self._connection = connect(self.path)
            migrate(self._connection)
        except sqlite3.Error as e:
            raise StoreError("cannot open %s: %s" % (self.path, e)) from None
        self._thread = threading.Thread(
            target=self._work, name="vigo-store", daemon=True
        )
        self._thread.start()

    def run(self, job, *args):
        d = defer.Deferred()
        self._queue.put((job, args, d))
        return d

    def close(self):
        """Finish queued work, then stop the thread; fires when closed."""
        if self._thread is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._queue.put((_STOP, (), d))
        self._thread = None
        return d

    def _work(self):
        connection = self._connection
        cursor = connection.cursor()
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = [item for item in batch if item[0] is _STOP]
            jobs = [item for item in batch if item[0] is not _STOP]
            if jobs:
                self._run_batch(cursor, jobs)
            if stop:
                connection.close()
                for _, _, d in stop:
                    self._reactor.callFromThread(d.callback, None)
                return

    def _run_batch(self, cursor, jobs):
        results = []
        try:
            cursor.execute("BEGIN IMMEDIATE")
            for job, args, d in jobs:
                cursor.execute("SAVEPOINT job")
                try:
                    outcome = (True, job(cursor, *args))
                except BaseException:
                    outcome = (False, failure.Failure())
                    cursor.execute("ROLLBACK TO job")
                cursor.execute("RELEASE job")
                results.append((d, outcome))
            cursor.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error:
            # The transaction itself failed (disk full, I/O error): nothing
            # in it is durable, so every job in it fails.
            reason = failure.Failure()
            log.err(reason, "vigo store: transaction failed")
            try:
                cursor.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            results = [(d, (False, reason)) for _, _, d in jobs]
        for d, (ok, value) in results:
            self._reactor.callFromThread(d.callback if ok else d.errback, value)
