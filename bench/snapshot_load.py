"""Check-ins while a real bolt pulls and merges a big roster snapshot.

One real ``twistd -n vigo --mode=spanner`` bolt (A) on loopback, running this
checkout (``PYTHONPATH``), holds ``--envoys`` simulated envoys checking in
every ``--interval`` s (``bench/checkin_probe.py``: the simulator, each
check-in's time recorded). A founded its federation; the harness then wrote
into its database, while it was stopped, a second bolt P (admitted by A's key)
whose API address is a small HTTPS server in this process: P never runs, its
"API" serves A signed snapshots. A pulls P every second (anti-entropy): first
the roster A holds (304), then, after a quiet window, a ``--rows``-row roster
(every row admitted by A: all of it verifies), which A opens, verifies and
merges -- through its real ``SnapshotPuller``, ``LocalRoster`` and store.

Measured: check-in latency p50/p99 in the quiet window before the big
snapshot is served, and while A merges it (from P's last byte sent until A
logs the merge done, with its duration and phases), and the merge's own time
in A. The merge window is also split where A's log splits it: opening and
verifying the snapshot, then merging it, persisting it and taking it in
(the store's thread writing the rows, and the listeners of a roster change).

Usage (from bench/federation.py snapshot): ``load_run(rows, envoys, interval)``.
"""

import http.server
import json
import os
import random
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import harness  # noqa: E402
from convergence import SpannerBolt, _gossip_port  # noqa: E402

MERGED = re.compile(r"merged the snapshot of bolt (\w+) \((\d+) rows and records\) in ([0-9.]+) s "
                    r"\(opened in ([0-9.]+) s, verified in ([0-9.]+) s, merged and saved in "
                    r"([0-9.]+) s\)")


class FakePeer:
    """P's API: serves ``small`` (with its ETag: a 304 when asked with it), or
    ``big`` once ``serve_big()`` was called; notes when the big one was sent."""

    def __init__(self, identity, workdir):
        from vigo.tls import identity_certificate

        self.identity = identity
        cert, key = os.path.join(workdir, "p-cert.pem"), os.path.join(workdir, "p-key.pem")
        from cryptography.hazmat.primitives import serialization
        with open(cert, "wb") as f:
            f.write(identity_certificate(identity).public_bytes(serialization.Encoding.PEM))
        with open(key, "wb") as f:
            f.write(identity.to_pem())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.small = self.big = None  # (body, etag)
        self.sent_big_at = None
        self.requests = 0
        self._big = False
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                peer.requests += 1
                big = peer._big
                body, etag = peer.big if big else peer.small
                if ('"%s"' % etag) in (self.headers.get("If-None-Match") or ""):
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"%s"' % etag)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                if big and peer.sent_big_at is None:
                    peer.sent_big_at = time.time()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def serve_big(self):
        self._big = True

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _signed(roster, identity):
    from vigo.spanner.canonical import canonical
    from vigo.spanner.roster.snapshot import sign_snapshot

    return canonical(sign_snapshot(roster, identity, int(time.time() * 1000))), \
        roster.digest().hex()


def seed(bolt, rows):
    """Give stopped bolt ``bolt`` a peer P at a ``FakePeer``; the peer, serving
    ``bolt``'s roster (small) and it plus ``rows`` bolts (big)."""
    from vigo.identity import Identity
    from vigo.spanner.roster.rows import AdmissionRow
    from vigo.spanner.roster.store import load_roster, save_roster

    with open(os.path.join(bolt.data_dir, "identity.key"), "rb") as f:
        me = Identity.from_pem(f.read())
    database = sqlite3.connect(os.path.join(bolt.data_dir, "vigo.sqlite3"))
    roster = load_roster(database.cursor())
    p = Identity.generate()
    peer = FakePeer(p, bolt.workdir)
    addresses = {"api": "127.0.0.1:%d" % peer.port, "envoy": "127.0.0.1:9",
                 "peer": "127.0.0.1:9"}
    row = AdmissionRow.applicant(p, roster.federation_id, "p", addresses, ["*.p.example.com"],
                                 "bench-token-p", me.id).countersign(me)
    roster.add_row(row)
    roster.consume(me, "bench-token-p")
    save_roster(database.cursor(), roster.parts())
    database.commit()
    database.close()
    peer.small = _signed(roster, p)
    big = roster.copy()
    for i in range(rows):
        bolt_identity = Identity.generate()
        big.add_row(AdmissionRow.applicant(
            bolt_identity, roster.federation_id, "bench-%d" % i, addresses,
            ["*.b%d.example.com" % i], "bench-token-%d" % i, me.id).countersign(me))
    peer.big = _signed(big, p)
    return peer


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def load_run(rows=10000, envoys=2000, interval=2.0, quiet=6.0, limit=120.0):
    """One run; a dict of figures (see the module docstring)."""
    workdir = tempfile.mkdtemp(prefix="vigo-bench-snapload-")
    group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGO_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    a = SpannerBolt("a", group, _gossip_port(), workdir)
    a.env = env
    with open(a.config) as f:
        config = json.load(f)
    config["spanner"]["patterns"] = ["*.bench.example.com"]
    config["spanner"]["snapshot"] = {"anti_entropy": "1s"}
    with open(a.config, "w") as f:
        json.dump(config, f)
    peer = probe = None
    out = os.path.join(workdir, "checkins.json")
    try:
        a.start()
        a.api("POST", "/api/v1/spanner/init", {})
        a.stop()
        print("  seeding bolt a with peer p and signing a %d-row roster (setup)" % (rows,),
              flush=True)
        peer = seed(a, rows)
        a.start()
        token = a.token_for(envoys)
        probe_env = dict(env)
        conf = os.path.join(workdir, "openssl-x25519.cnf")
        with open(conf, "w") as f:
            f.write(harness.X25519_ONLY)
        probe_env["OPENSSL_CONF"] = conf
        probe = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "checkin_probe.py"),
             "--server", "127.0.0.1:%d" % a.envoy_port, "--token", token,
             "--count", str(envoys), "--interval", str(interval), "--out", out],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=probe_env, cwd=workdir)
        if not probe.stdout.readline().startswith(b"ready"):
            raise RuntimeError("the check-in probe did not start")
        time.sleep(interval * 2)  # every envoy past its first, spread-out check-in
        quiet_from = time.time()
        time.sleep(quiet)
        quiet_to = time.time()
        peer.serve_big()
        log = os.path.join(a.workdir, "server.log")
        merged = None
        deadline = time.monotonic() + limit
        while merged is None and time.monotonic() < deadline:
            time.sleep(0.2)
            with open(log, errors="replace") as f:
                merged = MERGED.search(f.read())
        if merged is None:
            raise RuntimeError("bolt a did not merge the big snapshot (see %s)" % (log,))
        time.sleep(1.0)
        probe.terminate()
        probe.wait(timeout=60)
        probe = None
        with open(out) as f:
            samples = json.load(f)
    finally:
        if probe is not None:
            probe.kill()
        a.stop()
        if peer is not None:
            peer.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # kept, with the logs, when a run fails
    merge_s, opening_s, verifying_s, saving_s = (float(merged.group(n)) for n in (3, 4, 5, 6))
    start = peer.sent_big_at
    checked = start + opening_s + verifying_s
    quiet_ms = [s * 1000 for t, s in samples if quiet_from <= t < quiet_to]
    merge_ms = [s * 1000 for t, s in samples if start <= t <= start + merge_s]
    checking_ms = [s * 1000 for t, s in samples if start <= t <= checked]
    saving_ms = [s * 1000 for t, s in samples if checked < t <= start + merge_s]
    return {
        "rows": rows, "envoys": envoys, "interval_s": interval, "items": int(merged.group(2)),
        "merge_s": merge_s, "opening_s": opening_s, "verifying_s": verifying_s,
        "saving_s": saving_s, "quiet_n": len(quiet_ms), "merge_n": len(merge_ms),
        "quiet_p50_ms": percentile(quiet_ms, 0.50), "quiet_p99_ms": percentile(quiet_ms, 0.99),
        "merge_p50_ms": percentile(merge_ms, 0.50), "merge_p99_ms": percentile(merge_ms, 0.99),
        "merge_max_ms": max(merge_ms) if merge_ms else None,
        "quiet_max_ms": max(quiet_ms) if quiet_ms else None,
        "checking_n": len(checking_ms), "checking_p99_ms": percentile(checking_ms, 0.99),
        "saving_n": len(saving_ms), "saving_p99_ms": percentile(saving_ms, 0.99),
    }


if __name__ == "__main__":
    print(json.dumps(load_run(rows=int(sys.argv[1]) if len(sys.argv) > 1 else 10000)))
