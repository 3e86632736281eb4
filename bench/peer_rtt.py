"""Benchmark: peer action round trip over PB and mutual TLS on loopback.

Two bolts in one process (one reactor): bolt "beta" holds a long-lived,
logged-in ``PeerClient`` (from its ``PeerClients`` pool, as a bolt holds one
per peer) to bolt "alpha"'s peer port and calls the built-in
``ping`` action one call at a time, as a fan-out to one peer would. Each round
trip therefore includes both ends' CPU: argument checks, the plugin, the result
check, PB framing and TLS, both ways. For reference it also times the bare
``perspective_ping`` (no plugin, no argument checks).

Target (../shared/design/targets.md): peer action round trip p99 <= 20 ms.

Usage: python bench/peer_rtt.py [-n 2000] [--no-write] [--json]
"""

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness  # noqa: E402
import report  # noqa: E402
from twisted.internet import defer  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from vigo.identity import Identity  # noqa: E402
from vigo.plugins.vigo_ping import ping  # noqa: E402
from vigo.spanner.bolt import Bolt  # noqa: E402
from vigo.spanner.peer.pool import PeerClients  # noqa: E402
from vigo.spanner.peer.server import PeerPortal, listen_peers  # noqa: E402

WARMUP = 200


class _Row:
    def __init__(self, bolt_id, name):
        self.bolt_id, self.name, self.status = bolt_id, name, "active"


class _Roster:
    """Both bolts active; a fixed digest."""

    def __init__(self, identities):
        self.rows = {i.public_key: _Row(i.id, name) for name, i in identities.items()}

    def bolt_for_key(self, public_key):
        return self.rows.get(public_key)

    def digest(self):
        return b"\x00" * 32


def _percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _time_calls(n, call):
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000.0)
    return _percentile(samples, 0.50), _percentile(samples, 0.99)


async def measure(reactor, n=2000):
    """``{"action": (p50_ms, p99_ms), "bare": (p50_ms, p99_ms)}`` over loopback."""
    identities = {"alpha": Identity.generate(), "beta": Identity.generate()}
    roster = _Roster(identities)
    actions = {ping.name: ping}
    # Alpha answers; its own pool reaches no other bolt (ping calls none).
    alpha_peers = PeerClients(reactor, identities["alpha"], lambda bolt_id: None)
    alpha = Bolt(identities["alpha"], lambda: "alpha", reactor, roster, actions, alpha_peers)
    port = await listen_peers(reactor, identities["alpha"], "127.0.0.1:0",
                              PeerPortal(roster, alpha, actions))
    where = {alpha.id: ("127.0.0.1:%d" % (port.getHost().port,), identities["alpha"].fingerprint)}
    beta_peers = PeerClients(reactor, identities["beta"], where.get)
    beta_peers.startService()
    client = beta_peers.client_for(alpha.id, *where[alpha.id])  # started: it dials now
    try:
        await client.when_connected(fail_after_failures=1)
        await _time_calls(WARMUP, lambda: client.call("ping", {}))
        action = await _time_calls(n, lambda: client.call("ping", {}))
        bare = await _time_calls(n, client.ping)
    finally:
        await beta_peers.stopService()
        await alpha_peers.stopService()
        await port.stopListening()
    return {"action": action, "bare": bare}


def _run(n):
    from twisted.internet import reactor

    outcome = []

    def start():
        d = defer.ensureDeferred(measure(reactor, n))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def peer_round_trip(n=2000):
    """``(p50_ms, p99_ms)`` of ``n`` sequential ``ping`` action round trips.

    Runs the global reactor, so call it once per process.
    """
    return _run(n)["action"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="round trips to time")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--json", action="store_true",
                        help="also print the figures as one JSON line (for bench/federation.py)")
    args = parser.parse_args()
    figures = _run(args.n)
    (p50, p99), (bare50, bare99) = figures["action"], figures["bare"]
    if args.json:
        print(json.dumps({"n": args.n, "p50_ms": p50, "p99_ms": p99,
                          "bare_p50_ms": bare50, "bare_p99_ms": bare99}))
    print("peer action `ping` round trip: p50 %.3f ms, p99 %.3f ms (%d calls)" % (p50, p99, args.n))
    print("bare perspective_ping:         p50 %.3f ms, p99 %.3f ms" % (bare50, bare99))
    if not args.no_write:
        text = """## Peer action round trip (PB over mutual TLS)

`python bench/peer_rtt.py`, %s, %s. Two bolts in one process on
loopback: one long-lived, logged-in connection; %d sequential calls after %d
warm-up calls; both ends' CPU is in every round trip.

| figure | p50 | p99 | target |
|---|---|---|---|
| `ping` action (schema checks, plugin, result check) | %.3f ms | **%.3f ms** | p99 <= 20 ms (%s) |
| bare `perspective_ping` (no plugin) | %.3f ms | %.3f ms | -- (PB ~170 us p50 here) |
""" % (datetime.date.today().isoformat(), harness.machine(), args.n, WARMUP, p50, p99,
            "met" if p99 <= 20 else "**missed**", bare50, bare99)
        report.replace_section(os.path.join(os.path.dirname(__file__), "..", "docs",
                                            "benchmarks.md"), "peer-rtt", text)
        print("figures written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
