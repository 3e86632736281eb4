"""``ImmediateStore``: an ``IStore`` that answers at once, for fast, deterministic tests.

Each job runs as soon as it is asked, in its own transaction, on a real SQLite
database with the server's own schema (``vigo.store.migrations``), so a test
of a component that writes durably runs without the store's thread and
without waiting on the reactor: its Deferreds have fired when the call
returns. ``hold`` keeps one kind of job waiting until the test releases it,
to see what a component does while a write is under way.
"""

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from vigo.interfaces.components import IStore
from vigo.store import connect, migrate


@implementer(IStore)
class ImmediateStore:
    """A store at ``path`` (``":memory:"`` by default) whose jobs run at once."""

    def __init__(self, path=":memory:"):
        self.path = path
        self.connection = connect(path)
        migrate(self.connection)
        self.jobs = []  # every job run, in order (their functions)
        self._held = {}  # job function -> [(args, Deferred)] waiting

    def open(self):
        """Nothing to do: the database is open from the start."""

    def run(self, job, *args):
        held = self._held.get(job)
        if held is not None:
            d = defer.Deferred()
            held.append((args, d))
            return d
        return self._run(job, args)

    def _run(self, job, args):
        self.jobs.append(job)
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")

        def end(result):
            cursor.execute("ROLLBACK" if isinstance(result, Failure) else "COMMIT")
            return result

        return defer.maybeDeferred(job, cursor, *args).addBoth(end)

    def hold(self, job):
        """Keep every ``job`` (a job function) asked from now on waiting; call the
        returned function to run them (in order) and let them answer."""
        self._held[job] = []

        def release():
            for args, d in self._held.pop(job):
                self._run(job, args).chainDeferred(d)

        return release

    def query(self, sql, *params):
        """Rows of a read-only query, straight away (for assertions)."""
        return self.connection.execute(sql, params).fetchall()

    def close(self):
        self.connection.close()
        return defer.succeed(None)
