"""What replay protection that survives a crash costs (vigo/fleet/replay.py).

Figures, on a real SQLite file under a temporary directory:

* the check-in path within the reservation (every check-in but the rare slow
  path): ``Fleet.checkin`` in process, and the reservation check alone;
* the write-behind flush of N dirty envoys, with every reservation extended
  (the worst case) and with none;
* a start (``Fleet.load``) of N envoys, which takes a new reservation for each;
* the slow path: a check-in above its reservation waits for one commit; alone,
  and 1,000 at once (one group commit).

    python bench/replay.py [--envoys 100000] [--no-write]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nacl.signing import SigningKey  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from bench import harness, report  # noqa: E402
from vigo.fleet import replay, wire  # noqa: E402
from vigo.fleet.fleet import Fleet  # noqa: E402
from vigo.fleet.hostcrates import Hostcrates  # noqa: E402
from vigo.fleet.index import EnvoyRecord  # noqa: E402
from vigo.identity import Identity, key_id  # noqa: E402
from vigo.store import Store  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "replay.json")
DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks.md")


def checkin_path(n=20000, rounds=5):
    """µs per in-process no-change check-in within its reservation (median of
    ``rounds``), and ns for the reservation check alone."""
    clock = Clock()
    clock.advance(time.time())
    hostcrates = Hostcrates()
    signing = SigningKey.generate()
    raw = bytes(signing.verify_key)
    envoy_id = key_id(raw)
    prefix = wire.checkin_signing_prefix(envoy_id)

    def run(reserved):
        fleet = Fleet(None, Identity.generate(), hostcrates, clock, 15.0, 3)
        record = EnvoyRecord(envoy_id, "web1.example.com", raw,
                             hostcrates.bundle_for("web1"), seq_reserved=reserved)
        fleet.index.add(record)
        bodies = [wire.encode_checkin(seq, int(clock.seconds() * 1000), record.bundle.version,
                                      lambda s: signing.sign(prefix + s).signature)[4:]
                  for seq in range(1, n + 1)]
        start = time.perf_counter()
        for body in bodies:
            fleet.checkin(record, body)
        return (time.perf_counter() - start) / n * 1e6

    runs = [run(n + 1) for _ in range(rounds)]
    record = EnvoyRecord("x", "x", raw, None, seq_reserved=2 ** 62)
    m = 1_000_000
    start = time.perf_counter()
    for seq in range(m):
        if seq > record.seq_reserved:
            pass
    compare_ns = (time.perf_counter() - start) / m * 1e9
    start = time.perf_counter()
    for _seq in range(m):
        pass
    loop_ns = (time.perf_counter() - start) / m * 1e9
    return {"checkin_us_median": statistics.median(runs),
            "checkin_us_runs": [round(v, 2) for v in runs],
            "reservation_check_ns": max(0.0, compare_ns - loop_ns)}


def _envoys(cursor, count, now):
    cursor.executemany(
        "INSERT INTO envoys (id, hostname, public_key, enrolled_at, last_seq, seq_reserved) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        ((f"e{i:06d}", f"h{i}.example.com", b"k" * 32, now, 1, replay.RESERVE)
         for i in range(count)))


@defer.inlineCallbacks
def store_figures(reactor, count):
    directory = tempfile.mkdtemp(prefix="vigo-bench-replay-")
    store = Store.in_directory(directory, reactor)
    store.open()
    clock = Clock()
    clock.advance(time.time())
    try:
        yield store.run(_envoys, count, clock.seconds())
        fleet = Fleet(store, Identity.generate(), Hostcrates(), clock, 15.0, 3)
        start = time.perf_counter()
        yield fleet.load()
        load_s = time.perf_counter() - start

        def dirty(last_seq):
            for record in fleet.index:
                record.last_seq = last_seq(record)
                fleet._mark_dirty(record)

        dirty(lambda r: r.last_seq + 1)  # far below each reservation: none extended
        start = time.perf_counter()
        yield fleet.flush()
        flush_none_s = time.perf_counter() - start
        dirty(lambda r: r.seq_reserved)  # at each reservation: all extended
        start = time.perf_counter()
        yield fleet.flush()
        flush_all_s = time.perf_counter() - start

        records = list(fleet.index)[:1000]
        latencies = []
        for record in records[:50]:
            start = time.perf_counter()
            yield fleet._reserve(record, record.seq_reserved + 1, b"")
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        yield defer.gatherResults([fleet._reserve(r, r.seq_reserved + 1, b"")
                                   for r in records])
        burst_s = time.perf_counter() - start
        return {"envoys": count, "load_ms": load_s * 1e3,
                "flush_no_extension_ms": flush_none_s * 1e3,
                "flush_all_extended_ms": flush_all_s * 1e3,
                "slow_path_ms_median": statistics.median(latencies) * 1e3,
                "slow_path_1000_at_once_ms": burst_s * 1e3}
    finally:
        yield store.close()


def write(figures, path):
    s, p = figures["store"], figures["path"]
    text = """## Replay protection across a crash

`python bench/replay.py`, %(date)s, %(machine)s; a real SQLite file
(`synchronous=FULL`). How it works: vigo/fleet/replay.py and docs/security.md.
Raw figures: `bench/results/replay.json`.

| figure | value |
|---|---|
| in-process no-change check-in within its reservation (`Fleet.checkin`) | %(path).1f us (median of %(runs)s) |
| what the reservation check adds to it | %(cmp).0f ns (one integer comparison) |
| write-behind flush of %(n)s dirty envoys, no reservation extended | %(fn).0f ms |
| the same, every reservation extended (the worst case) | %(fa).0f ms |
| start: load %(n)s envoys and take a new reservation for each | %(load).0f ms |
| slow path (a check-in above its reservation): one commit before the answer | %(slow).1f ms |
| slow path, 1,000 check-ins at once (one group commit) | %(burst).0f ms |

A check-in within its reservation pays the comparison only: the flush extends
reservations about every five minutes per envoy, in the UPDATE it writes anyway.
""" % {"date": figures["date"], "machine": figures["machine"], "path": p["checkin_us_median"],
       "runs": ", ".join("%.1f" % v for v in p["checkin_us_runs"]),
       "cmp": p["reservation_check_ns"], "n": "{:,}".format(s["envoys"]),
       "fn": s["flush_no_extension_ms"], "fa": s["flush_all_extended_ms"],
       "load": s["load_ms"], "slow": s["slow_path_ms_median"],
       "burst": s["slow_path_1000_at_once_ms"]}
    report.replace_section(path, "replay", text)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoys", type=int, default=100_000)
    parser.add_argument("--no-write", action="store_true",
                        help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    figures = {"date": time.strftime("%Y-%m-%d"), "machine": harness.machine(),
               "path": checkin_path()}

    def done(store):
        figures["store"] = store
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            json.dump(figures, f, indent=2)
        print(json.dumps(figures, indent=2))
        if not args.no_write:
            write(figures, DOC)

    task.react(lambda reactor: store_figures(reactor, args.envoys).addCallback(done))


if __name__ == "__main__":
    main()
