"""SQLite under ``data_dir``: one connection, one thread, group commit.

Every query runs on the store's own thread, never on the reactor. Work is
queued as functions of a cursor; the thread takes whatever is queued, runs each
job inside its own savepoint of one transaction, commits (``synchronous=FULL``,
so a commit is on disk), and only then answers each job on the reactor thread.
A yes from the store therefore means durable, and a burst of enrollments pays
for one fsync, not one each. A job that raises is rolled back alone.

With a ``ChangeLog`` (high availability on: ``vigo.store.changelog``), each
committed transaction that wrote anything is also numbered and recorded, in
that same transaction, for standbys to replay: ``lsn`` is the last committed
one, and ``on_entry`` hears of each entry (on the reactor) before the jobs
in it are answered.
"""

import os
import queue
import sqlite3
import threading

from twisted.internet import defer
from twisted.python import failure, log
from zope.interface import implementer

from vigo.interfaces.components import IStore
from vigo.store.changelog import RecordingCursor
from vigo.store.migrations import NewerSchema, migrate

DB_FILE = "vigo.sqlite3"


def shielded(d):
    """A Deferred with ``d``'s result that a caller's cancel (a timeout, say)
    does not reach ``d`` through: the job still commits, and the callbacks
    already on ``d`` (which bring memory in line with the database) still run.
    A cancelled caller just stops waiting."""
    outer = defer.Deferred()

    def relay(result):
        if not outer.called:
            outer.callback(result)
        elif isinstance(result, failure.Failure) and not result.check(StoreClosed):
            log.err(result, "a store job failed after its caller stopped waiting")
        return None

    d.addBoth(relay)
    return outer


class StoreError(Exception):
    """The database cannot be opened or is newer than this server."""


class StoreClosed(StoreError):
    """A job asked after the store closed (the server is stopping): nothing
    was written. Expected at shutdown, so callers answer "try again" rather
    than log it as a failure."""


def connect(path, synchronous="FULL"):
    """A connection to the database at ``path`` (``":memory:"``: in memory), in
    WAL mode, each commit on disk before it returns (``synchronous`` FULL; a
    standby's is NORMAL: a commit is in the operating system's hands when it
    returns, on disk at the next checkpoint, see docs/ha.md)."""
    if path != ":memory:" and not os.path.exists(path):
        # Token hashes and envoy keys: readable by the server's user only.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError("synchronous is FULL or NORMAL, not %r" % (synchronous,))
    connection.execute("PRAGMA synchronous = %s" % (synchronous,))
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


_STOP = object()


@implementer(IStore)
class Store:
    """The server's database, worked on by one thread.

    ``run(job, *args)`` queues ``job(cursor, *args)`` and returns a Deferred
    that fires with its result once the transaction holding it is committed.
    ``changelog`` (a ``ChangeLog``, or None) records what each transaction
    wrote; ``on_entry(lsn, entry)`` is then called on the reactor thread for
    each committed entry, before the jobs in it are answered.
    """

    def __init__(self, path, reactor, changelog=None, synchronous="FULL"):
        self.path = path
        self.synchronous = synchronous
        self._reactor = reactor
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._connection = None
        self._closed = False
        self.commits = 0
        self.changelog = changelog
        self.lsn = 0
        self.on_entry = None

    @classmethod
    def in_directory(cls, data_dir, reactor, changelog=None, synchronous="FULL"):
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        return cls(os.path.join(data_dir, DB_FILE), reactor, changelog, synchronous)

    def open(self):
        """Open (and migrate) the database and start the store thread."""
        try:
            self._connection = connect(self.path, self.synchronous)
            migrate(self._connection)
            if self.changelog is not None:
                self.changelog.opened(self._connection.cursor())
                self.lsn = self.changelog.lsn
        except NewerSchema as e:
            raise StoreError(str(e)) from None
        except sqlite3.Error as e:
            raise StoreError("cannot open %s: %s" % (self.path, e)) from None
        self._thread = threading.Thread(
            target=self._work, name="vigo-store", daemon=True
        )
        self._thread.start()

    def run(self, job, *args):
        if self._closed:
            return defer.fail(StoreClosed("the store is closed (the server is stopping); "
                                         "nothing was written"))
        d = defer.Deferred()
        self._queue.put((job, args, d))
        return d

    def close(self):
        """Finish queued work, then stop the thread; fires when closed. Jobs
        asked after this fail at once."""
        self._closed = True
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
        changelog = self.changelog
        recording = changelog is not None and changelog.recording
        lsn_before = changelog.lsn if changelog is not None else 0
        written = []
        entry = None
        try:
            cursor.execute("BEGIN IMMEDIATE")
            for job, args, d in jobs:
                cursor.execute("SAVEPOINT job")
                job_cursor = RecordingCursor(cursor) if recording else cursor
                try:
                    outcome = (True, job(job_cursor, *args))
                    if recording:
                        written.extend(job_cursor.encoded)
                except BaseException:
                    outcome = (False, failure.Failure())
                    cursor.execute("ROLLBACK TO job")
                cursor.execute("RELEASE job")
                results.append((d, outcome))
            if written:
                entry = changelog.append(cursor, written)
            cursor.execute("COMMIT")
            self.commits += 1
        except Exception:
            # The transaction itself failed (disk full, I/O error; or, a bug,
            # its change-log entry could not be written): nothing in it is
            # durable, so every job in it fails, and the thread goes on.
            reason = failure.Failure()
            log.err(reason, "vigo store: transaction failed")
            try:
                cursor.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if changelog is not None:
                changelog.rolled_back(lsn_before)
            entry = None
            results = [(d, (False, reason)) for _, _, d in jobs]
        self._reactor.callFromThread(self._answer, results, entry)

    def _answer(self, results, entry):
        """On the reactor: hear of the entry committed (if any), then answer."""
        if entry is not None:
            self.lsn = entry[0]
            if self.on_entry is not None:
                try:
                    self.on_entry(*entry)
                except Exception:
                    log.err(None, "vigo store: a change log listener failed")
        for d, (ok, value) in results:
            if ok:
                d.callback(value)
            else:
                d.errback(value)
