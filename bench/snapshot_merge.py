"""A signed roster snapshot opened, verified and merged: the old path and the new.

Run by ``bench/federation.py snapshot`` in a subprocess (it runs the global
reactor). Both paths take the same bytes (a signed ``--rows``-row snapshot,
every row new to the roster it is merged into, which knows only the founder)
to the same merged roster (digests compared):

* old: ``open_snapshot`` then ``Roster.merge``, all on the calling thread;
* new: what ``SnapshotPuller`` does once the bytes are in: the snapshot opened
  in slices on the reactor, the merge's checks planned there and made in the
  verifying threads (``vigo.spanner.roster.verify``), then the merge and the
  digest applied on the reactor in slices.

Each run of either path is timed in wall-clock seconds, and while it runs a
1 ms ``LoopingCall`` measures how late the reactor gets to it: the longest
stall is what a check-in arriving then would wait. Also measured: how much
faster two threads verify than one, here and now (the cores the machine
really gives). Prints one JSON object.

Usage: python bench/snapshot_merge.py [--rows 10000] [--repeat 5]
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's vigo

from twisted.internet import defer, task  # noqa: E402


def old_path(body, key, roster):
    from vigo.spanner.roster.crdt import Roster
    from vigo.spanner.roster.snapshot import open_snapshot

    snapshot = open_snapshot(body, key, roster.federation_id)
    fresh = Roster(roster.federation_id, roster.founder_id)
    report = fresh.merge(snapshot.parts)
    return fresh, report


@defer.inlineCallbacks
def new_path(reactor, verifier, body, key, roster):
    from vigo.spanner.roster.crdt import Roster
    from vigo.spanner.roster.snapshot import opening_snapshot
    from vigo.spanner.roster.steps import run_sliced

    fresh = Roster(roster.federation_id, roster.founder_id)
    snapshot = yield run_sliced(reactor, opening_snapshot(body, key, roster.federation_id))
    parts = yield verifier.verify_parts(fresh, snapshot.parts)
    report = yield run_sliced(reactor, fresh.merging(parts))
    yield run_sliced(reactor, fresh.digesting())
    return fresh, report


class Stalls:
    """How late a 1 ms LoopingCall runs: the reactor's longest stall."""

    def __init__(self, reactor):
        self.gaps, self._last = [], time.perf_counter()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor
        self._loop.start(0.001)

    def _tick(self):
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def reset(self):
        self.gaps, self._last = [], time.perf_counter()

    def longest(self, stalled_since=None):
        """The longest gap in ms (for a stall still going on: since ``stalled_since``)."""
        gaps = list(self.gaps)
        if stalled_since is not None:
            gaps.append(time.perf_counter() - stalled_since)
        return max(gaps) * 1000 if gaps else 0.0

    def stop(self):
        self._loop.stop()


def two_thread_speedup(count=4000):
    """How much faster two threads verify than one, here and now (2.0: two
    free cores; less when the machine is shared or busy)."""
    import threading

    import nacl.signing

    from vigo.spanner.roster.verify import check_chunk_here

    key = nacl.signing.SigningKey.generate()
    message = os.urandom(400)
    checks = [(bytes(key.verify_key), message, key.sign(message).signature)] * count
    started = time.perf_counter()
    check_chunk_here(checks)
    one = time.perf_counter() - started
    halves = [threading.Thread(target=check_chunk_here, args=(checks[i::2],)) for i in range(2)]
    started = time.perf_counter()
    for thread in halves:
        thread.start()
    for thread in halves:
        thread.join()
    return one / (time.perf_counter() - started)


@defer.inlineCallbacks
def measure(reactor, rows, repeat):
    import federation

    from vigo.identity import Identity
    from vigo.spanner.canonical import canonical
    from vigo.spanner.roster.snapshot import sign_snapshot
    from vigo.spanner.roster.verify import Verifier

    roster, _ = federation.signed_roster(rows)
    server = Identity.generate()
    body = canonical(sign_snapshot(roster, server, 1_000_000))
    gc.collect()
    gc.freeze()  # as a server does with what it loaded (vigo/server/service.py)
    verifier = Verifier(reactor)
    stalls = Stalls(reactor)
    runs = {"old": [], "new": [], "old_stall_ms": [], "new_stall_ms": [], "verify_us": []}
    try:
        for _ in range(repeat):
            runs["verify_us"].append(federation.verify_us(2000))
            yield task.deferLater(reactor, 0.2, lambda: None)
            stalls.reset()
            started = time.perf_counter()
            merged, _ = old_path(body, server.public_key, roster)
            runs["old"].append(time.perf_counter() - started)
            runs["old_stall_ms"].append(stalls.longest(started))
            if merged.digest() != roster.digest():
                raise AssertionError("the old path did not merge cleanly")
            del merged
            yield task.deferLater(reactor, 0.2, lambda: None)
            stalls.reset()
            started = time.perf_counter()
            merged, report = yield new_path(reactor, verifier, body, server.public_key, roster)
            runs["new"].append(time.perf_counter() - started)
            runs["new_stall_ms"].append(stalls.longest())
            if report.rejected or merged.digest() != roster.digest():
                raise AssertionError("the new path did not merge cleanly: %s" % (report,))
            del merged
            gc.collect()
    finally:
        stalls.stop()
        verifier.stop()
    median = statistics.median
    parallel = two_thread_speedup()
    return {
        "two_thread_speedup": parallel,
        "rows": rows, "repeat": repeat, "cores": os.cpu_count(),
        "old_s": median(runs["old"]), "new_s": median(runs["new"]),
        "old_best_s": min(runs["old"]), "new_best_s": min(runs["new"]),
        "old_stall_ms": median(runs["old_stall_ms"]), "new_stall_ms": median(runs["new_stall_ms"]),
        "new_stall_max_ms": max(runs["new_stall_ms"]), "verify_us": median(runs["verify_us"]),
        "runs": runs,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    def run(reactor):
        return measure(reactor, args.rows, args.repeat).addCallback(
            lambda figures: print(json.dumps(figures), flush=True))

    task.react(run)


if __name__ == "__main__":
    main()
