"""Sending one standby the change log: a window of batches, memory bounded.

The primary keeps the newest entries in a ``Ring`` (bounded by bytes) so a
standby that keeps up is fed from memory; one further behind is fed from
the database, a batch at a time. A ``Stream`` has at most ``WINDOW`` batches
of at most ``BATCH_BYTES`` unanswered, so what one standby costs the
primary is bounded whatever its speed; each answer is the LSN durable at the
standby, which is what ``peers.sync`` waits for.
"""

import collections
import itertools

from twisted.logger import Logger

from vigo.server.peer.protocol import Entries, pack_entries

RING_BYTES = 16 * 1024 * 1024
BATCH_BYTES = 1024 * 1024
BATCH_ENTRIES = 1000
WINDOW = 4


class Ring:
    """The newest committed entries: ``(lsn, entry, committed_at)``."""

    def __init__(self, max_bytes=RING_BYTES):
        self.max_bytes = max_bytes
        self._entries = collections.deque()
        self._bytes = 0

    def add(self, lsn, data, at):
        if self._entries and lsn != self._entries[-1][0] + 1:
            self.clear()  # a gap (cannot happen on one primary): start afresh
        self._entries.append((lsn, data, at))
        self._bytes += len(data)
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            self._bytes -= len(self._entries.popleft()[1])

    def clear(self):
        self._entries.clear()
        self._bytes = 0

    def after(self, lsn, max_entries=BATCH_ENTRIES, max_bytes=BATCH_BYTES):
        """The entries after ``lsn`` held here; None when the next one is not
        (evicted, or committed before the ring heard of entries: the caller
        reads the database)."""
        if not self._entries:
            return None
        first, last = self._entries[0][0], self._entries[-1][0]
        if not first <= lsn + 1 <= last:
            return None
        out, size = [], 0
        for entry_lsn, data, _ in itertools.islice(self._entries, lsn + 1 - first, None):
            if out and (len(out) >= max_entries or size + len(data) > max_bytes):
                break
            out.append((entry_lsn, data))
            size += len(data)
        return out

    def committed_at(self, lsn):
        """When entry ``lsn`` was committed (the oldest held if it is older)."""
        if not self._entries:
            return None
        first = self._entries[0][0]
        index = min(max(lsn - first, 0), len(self._entries) - 1)
        return self._entries[index][2]


class Stream:
    """The entries after ``acked`` to one standby's ``connection``.

    ``source`` is the primary (``head()``, ``ring``, ``read(after)`` a
    Deferred batch from the database, ``epoch``, ``acked(stream)``,
    ``stream_failed(stream, reason)``).
    """

    log = Logger()

    def __init__(self, connection, node_id, acked, source):
        self.connection = connection
        self.node_id = node_id
        self.acked = acked
        self.sent = acked
        self.source = source
        self.in_flight = 0
        self.reading = False
        self.stopped = False

    def wake(self):
        """Send what the window allows."""
        source = self.source
        while (not self.stopped and not self.reading and self.in_flight < WINDOW
               and self.sent < source.head()):
            batch = source.ring.after(self.sent)
            if batch is None:
                self.reading = True
                source.read(self.sent).addCallbacks(self._read, self._failed)
                return
            self._send(batch)

    def _read(self, batch):
        self.reading = False
        if self.stopped:
            return
        if not batch:
            self._failed(RuntimeError("entries after %d are not in the log any more" % (
                self.sent,)))
            return
        self._send(batch)
        self.wake()

    def _send(self, batch):
        self.sent = batch[-1][0]
        self.in_flight += 1
        d = self.connection.callRemote(Entries, epoch=self.source.epoch,
                                       head=self.source.head(), entries=pack_entries(batch))
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, answer):
        self.in_flight -= 1
        if self.stopped:
            return
        self.acked = max(self.acked, answer["lsn"])
        self.source.acked(self)
        self.wake()

    def _failed(self, reason):
        if self.stopped:
            return
        self.stop()
        self.source.stream_failed(self, reason)

    def stop(self):
        self.stopped = True

    def lag(self, now):
        """Seconds the oldest entry this standby lacks has waited (0 when none)."""
        if self.acked >= self.source.head():
            return 0.0
        at = self.source.ring.committed_at(self.acked + 1)
        return 0.0 if at is None else max(now - at, 0.0)
