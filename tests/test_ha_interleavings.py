"""A standby ends up holding its primary's tables, however replication is interleaved.

A property over random runs of a primary (the real ``Store`` with a
``ChangeLog``, on a temp SQLite file) and a standby (the real ``Store`` of a
standby, applying entries with the follower's own store job,
``vigo.server.peer.standby.apply_batch``), both driven without their threads
(``tests.test_changelog.SyncStore``: the test decides which jobs share a
transaction). Among the steps:

* the primary commits batches of jobs (inserts, updates, deletes,
  ``executemany``, a promotion; some jobs fail on a constraint or raise, and
  are rolled back alone), and restarts;
* entries are shipped from the primary's log after the stream's position
  (``read_entries``, as ``PrimaryReplication.read`` does), delivered to the
  standby's store as apply jobs, whole or in part, and committed, several
  jobs to a transaction;
* the standby crashes: what its store had not committed is lost, and so is
  what was on the wire;
* the standby reconnects: the primary decides, as ``PrimaryReplication.hello``
  does, to stream from the standby's LSN or to send a base copy (the log was
  pruned past it, or the standby refused an entry), made, received and
  installed by the real ``base_copy`` functions.

After every commit at the standby, its tables are the primary's at the same
LSN; after a final catch-up, they are the primary's.
"""

import os
import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests.test_changelog import SyncStore, dump
from vigo.server.peer import members as records
from vigo.server.peer.base_copy import (
    DB_FILE,
    BaseCopyReceiver,
    install_base_copy,
    make_base_copy,
)
from vigo.server.peer.standby import apply_batch
from vigo.store import changelog
from vigo.store.changelog import ChangeLog, ChangeLogError, last_lsn, oldest_lsn, read_entries

#: Pruning every few entries, so that a standby left behind needs a base copy.
PRUNE_EVERY = 3


class Oops(Exception):
    pass


def primary_job(cursor, op):
    """One primary store job, described by ``op``."""
    kind = op[0]
    if kind == "token":
        _, token_id, secret, uses, expires = op
        cursor.execute("INSERT INTO enrollment_tokens (id, secret_hash, uses, created_at, "
                       "expires_at) VALUES (?, ?, ?, ?, ?)", (token_id, secret, uses, 1.0,
                                                              expires))
    elif kind == "use":
        cursor.execute("UPDATE enrollment_tokens SET used = used + 1 WHERE id = ? "
                       "AND used < uses", (op[1],))
    elif kind == "envoy":
        _, envoy_id, hostname, key, at = op
        cursor.execute("INSERT INTO envoys (id, hostname, public_key, enrolled_at, last_seen) "
                       "VALUES (?, ?, ?, ?, ?)", (envoy_id, hostname, key, at, at))
    elif kind == "checkins":
        cursor.executemany("UPDATE envoys SET last_seq = MAX(last_seq, ?), applied_version = ?, "
                           "checkins = checkins + 1 WHERE id = ?",
                           [(seq, version, envoy_id) for envoy_id, seq, version in op[1]])
    elif kind == "state":
        # To 'active' may break the one-active-hostname index: the job fails.
        cursor.execute("UPDATE envoys SET state = ? WHERE id = ?", (op[2], op[1]))
    elif kind == "forget":
        cursor.execute("DELETE FROM %s WHERE id = ?" % (op[1],), (op[2],))
    elif kind == "fail":
        cursor.execute("INSERT OR REPLACE INTO api_tokens (id, secret_hash, name, created_at) "
                       "VALUES (?, ?, 'doomed', 0)", (op[1], op[1].encode()))
        raise Oops()
    elif kind == "api":
        cursor.execute("INSERT OR REPLACE INTO api_tokens (id, secret_hash, name, created_at) "
                       "VALUES (?, ?, ?, ?)", (op[1], op[1].encode() + b"\x00", "n", 2.5))
    elif kind == "promote":
        _, epoch = records.replication_position(cursor)
        records.record_promotion(cursor, epoch + 1, "node%d" % (epoch + 1,), 3.0)
    elif kind == "read":
        cursor.execute("SELECT COUNT(*) FROM envoys").fetchone()
    else:
        raise AssertionError(op)
    return kind


token_ids = st.sampled_from(["t1", "t2", "t3", "t4", "t5", "t6"])
envoy_ids = st.sampled_from(["e1", "e2", "e3"])
jobs = st.one_of(
    st.tuples(st.just("token"), token_ids, st.binary(max_size=8), st.integers(1, 3),
              st.one_of(st.none(), st.floats())),
    st.tuples(st.just("use"), token_ids),
    st.tuples(st.just("envoy"), envoy_ids, st.sampled_from(["a.example", "b.example"]),
              st.binary(max_size=33), st.floats(allow_nan=False)),
    st.tuples(st.just("checkins"), st.lists(
        st.tuples(envoy_ids, st.integers(-2 ** 63, 2 ** 63 - 1),
                  st.one_of(st.none(), st.binary(max_size=4))), max_size=3)),
    st.tuples(st.just("state"), envoy_ids, st.sampled_from(["active", "revoked"])),
    st.tuples(st.just("forget"), st.just("enrollment_tokens"), token_ids),
    st.tuples(st.just("forget"), st.just("envoys"), envoy_ids),
    st.tuples(st.just("fail"), token_ids),
    st.tuples(st.just("api"), st.sampled_from(["a1", "a2"])),
    st.tuples(st.just("promote")),
    st.tuples(st.just("read")),
)
#: Each kind of step, with how its arguments are drawn; ``KINDS`` repeats
#: some for weight: mostly traffic, now and then a failure.
STEPS = {
    "write": st.tuples(st.just("write"), st.lists(jobs, min_size=1, max_size=3)),
    # Several batches in a row: a backlog, shipped in batches of many entries.
    "burst": st.tuples(st.just("burst"), st.lists(st.lists(jobs, min_size=1, max_size=2),
                                                  min_size=2, max_size=6)),
    "ship": st.tuples(st.just("ship"), st.integers(1, 6)),
    # Hand the first batch on the wire to the standby's store: whole, or only
    # its first entries (the rest stays on the wire).
    "deliver": st.tuples(st.just("deliver"), st.one_of(st.none(), st.integers(1, 3))),
    "commit": st.tuples(st.just("commit")),
    "pump": st.tuples(st.just("pump"), st.integers(1, 3)),
    "crash": st.tuples(st.just("crash")),
    "reconnect": st.tuples(st.just("reconnect")),
    "restart_primary": st.tuples(st.just("restart_primary")),
}
KINDS = ["write"] * 5 + ["burst"] * 2 + ["ship"] * 3 + ["deliver"] * 4 + ["commit"] * 3 + [
    "pump", "crash", "reconnect", "reconnect", "restart_primary"]
steps = st.sampled_from(KINDS).flatmap(STEPS.__getitem__)


def _rolled_back(failure):
    """A job that failed (rolled back alone): None."""
    failure.trap(Oops, sqlite3.IntegrityError)
    return None


class Replica:
    """The run: the primary, the standby, and what is between them."""

    def __init__(self, case, directory, retain):
        self.case = case
        self.retain = retain
        self.primary_dir = os.path.join(directory, "primary")
        self.standby_dir = os.path.join(directory, "standby")
        os.makedirs(self.primary_dir)
        os.makedirs(self.standby_dir)
        self.primary = self.open_primary()
        self.standby = self.open_standby()
        self.snapshots = {0: dump(self.primary.connection)}
        self.connected = False
        self.sent = 0  # the stream's position at the primary
        self.wire = []  # batches sent, not yet handed to the standby's store
        self.queued = []  # apply jobs in the standby's store, not committed
        self.needs_copy = False
        self.copies = 0
        self.refusals = 0

    def open_primary(self):
        return SyncStore(os.path.join(self.primary_dir, DB_FILE),
                         ChangeLog(self.retain)).open()

    def open_standby(self):
        return SyncStore(os.path.join(self.standby_dir, DB_FILE),
                         ChangeLog(self.retain, recording=False)).open()

    def standby_lsn(self):
        return last_lsn(self.standby.connection.cursor())

    def check_standby(self):
        """The standby's tables are the primary's at the standby's LSN, and the
        entries both hold are the same."""
        lsn = self.standby_lsn()
        self.case.assertEqual(dump(self.standby.connection), self.snapshots[lsn], lsn)
        theirs = dict(self.primary.connection.execute("SELECT lsn, entry FROM replication_log"))
        for entry_lsn, entry in self.standby.connection.execute(
                "SELECT lsn, entry FROM replication_log"):
            if entry_lsn in theirs:
                self.case.assertEqual(bytes(entry), bytes(theirs[entry_lsn]))

    # -- the primary -------------------------------------------------------------------------

    def write(self, ops):
        before = self.primary.lsn
        heard = []
        self.primary.on_entry = lambda lsn, data: heard.append(lsn)
        ds = [self.primary.run(primary_job, op) for op in ops]
        self.primary.flush()
        outcomes = []
        for d in ds:
            d.addErrback(_rolled_back)
            outcomes.append(self.case.successResultOf(d))
        committed = [o for o in outcomes if o not in (None, "read")]
        if committed:
            self.case.assertEqual(self.primary.lsn, before + 1)
            self.case.assertEqual(heard, [before + 1])
        else:
            self.case.assertEqual(self.primary.lsn, before)
            self.case.assertEqual(heard, [])
        self.snapshots[self.primary.lsn] = dump(self.primary.connection)

    def restart_primary(self):
        lsn = self.primary.lsn
        self.primary.close()
        self.primary = self.open_primary()
        self.case.assertEqual(self.primary.lsn, lsn)
        self.lose_connection()

    # -- the link ----------------------------------------------------------------------------

    def lose_connection(self):
        self.connected = False
        self.wire = []

    def ship(self, limit):
        if not self.connected or self.sent >= self.primary.lsn:
            return
        [d] = self.primary.batch((read_entries, self.sent, limit, 1 << 20))
        batch = self.case.successResultOf(d)
        if not batch:
            return
        self.wire.append(batch)
        self.sent = batch[-1][0]

    def deliver(self, count):
        if not self.wire:
            return
        batch = self.wire[0]
        if count is None or count >= len(batch):
            self.wire.pop(0)
        else:
            batch, self.wire[0] = batch[:count], batch[count:]
        self.queued.append(self.standby.run(apply_batch, batch, self.retain))

    def commit(self):
        before_lsn, before = self.standby_lsn(), dump(self.standby.connection)
        queued, self.queued = self.queued, []
        self.standby.flush()
        refused = False
        positions = []
        for d in queued:
            outcome = []
            d.addBoth(outcome.append)
            [result] = outcome
            if isinstance(result, tuple):
                positions.append(result)
            else:
                # A gap (the primary's log was pruned past the stream):
                # refused, nothing of that job applied; the follower asks for
                # a base copy and the primary drops the stream.
                result.trap(ChangeLogError)
                refused = True
        if positions:
            # Each job answers the position it left; the last, the one committed.
            self.case.assertEqual(positions, sorted(positions))
            self.case.assertEqual(positions[-1], records.replication_position(
                self.standby.connection.cursor()))
        if refused:
            self.refusals += 1
            self.needs_copy = True
            self.lose_connection()
        if self.standby_lsn() == before_lsn:
            self.case.assertEqual(dump(self.standby.connection), before)
        self.check_standby()

    def pump(self, limit):
        """Ship, deliver and commit all there is, ``limit`` entries a batch."""
        while self.connected and self.sent < self.primary.lsn:
            self.ship(limit)
        while self.wire:
            self.deliver(None)
        self.commit()

    def crash(self):
        """The standby dies: its store's queue and the wire are lost."""
        lsn, before = self.standby_lsn(), dump(self.standby.connection)
        self.standby.close()
        self.queued = []
        self.lose_connection()
        self.standby = self.open_standby()
        self.case.assertEqual(self.standby.lsn, lsn)
        self.case.assertEqual(self.standby_lsn(), lsn)
        self.case.assertEqual(dump(self.standby.connection), before)

    def reconnect(self):
        """The standby says Hello with its LSN; the primary streams or copies."""
        self.lose_connection()
        lsn, head = self.standby_lsn(), self.primary.lsn
        self.case.assertLessEqual(lsn, head)
        [d] = self.primary.batch((oldest_lsn,))
        oldest = self.case.successResultOf(d)
        if self.needs_copy or (lsn < head and (oldest is None or lsn + 1 < oldest)):
            self.base_copy()
        self.connected = True
        self.sent = self.standby_lsn()

    def base_copy(self):
        path, size, digest, lsn, epoch = make_base_copy(self.primary_dir, self.primary_dir)
        try:
            receiver = BaseCopyReceiver(self.standby_dir, size, lsn, epoch)
            with open(path, "rb") as f:
                receiver.chunk(f.read())
            receiver.end(digest)
        finally:
            os.unlink(path)
        # The standby restarts to install it: its store's queue is lost.
        self.standby.close()
        self.queued = []
        self.case.assertEqual(install_base_copy(self.standby_dir), (lsn, epoch))
        self.standby = self.open_standby()
        self.case.assertEqual(self.standby.lsn, lsn)
        self.needs_copy = False
        self.copies += 1
        self.check_standby()

    def catch_up(self):
        self.reconnect()
        for _ in range(self.primary.lsn + 2):
            if self.standby_lsn() == self.primary.lsn and not self.queued:
                break
            self.pump(1000)
            if not self.connected:
                self.reconnect()
        self.case.assertEqual(self.standby_lsn(), self.primary.lsn)

    def close(self):
        self.primary.close()
        self.standby.close()


class InterleavingTests(unittest.TestCase):

    def setUp(self):
        self.patch(changelog, "PRUNE_EVERY", PRUNE_EVERY)

    @settings(max_examples=50, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(steps, min_size=25, max_size=80), st.sampled_from([1, 4, 1000]))
    def test_the_standby_holds_the_primary_tables(self, run, retain):
        replica = Replica(self, self.mktemp(), retain)
        try:
            replica.reconnect()
            for step in run:
                kind = step[0]
                if kind == "write":
                    replica.write(step[1])
                elif kind == "burst":
                    for ops in step[1]:
                        replica.write(ops)
                elif kind == "ship":
                    replica.ship(step[1])
                elif kind == "deliver":
                    replica.deliver(step[1])
                elif kind == "commit":
                    replica.commit()
                elif kind == "pump":
                    replica.pump(step[1])
                elif kind == "crash":
                    replica.crash()
                elif kind == "reconnect":
                    replica.reconnect()
                elif kind == "restart_primary":
                    replica.restart_primary()
            replica.catch_up()
            self.assertEqual(dump(replica.standby.connection), dump(replica.primary.connection))
            self.assertEqual(dump(replica.standby.connection),
                             replica.snapshots[replica.primary.lsn])
            self.assertEqual(records.replication_position(replica.standby.connection.cursor()),
                             records.replication_position(replica.primary.connection.cursor()))
        finally:
            replica.close()
