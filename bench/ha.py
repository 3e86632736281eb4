"""Benchmark: high availability (one replica set) with real processes (``make bench``).

Every server is a real ``twistd -n vigo`` process on 127.0.0.1 with fixed ports
(``peers.listen`` set, so a restart keeps its addresses); standbys join with
``vigocli server standby invite``/``join`` and are promoted with ``vigocli server
promote``, as an operator does (docs/ha.md). Every process started is stopped by
its PID. Targets: ../shared/design/targets.md, "High availability".

1. **Replication lag under load**: a primary and one standby (``sync: 0``);
   ``--envoys`` simulated envoys (``vigo-envoy sim``) checking in every 15 s
   while new envoys enroll at ``--rate`` a second for ``--window`` seconds. The
   primary is restarted once the fleet is enrolled (so that its
   ``ack_seconds``, commit to standby acknowledgement, holds the window's
   samples only); its ``/api/v1/server/status`` is sampled every second:
   ``ack_seconds`` p50/p99 at the end, the largest ``standbys[].lag_seconds``
   sampled. Target: p99 <= 100 ms.
2. **Enrollment p99, sync: 1 / sync: 0**: the same paced enrollments against a
   pair with ``sync: 1`` and a pair with ``sync: 0``, one after the other in this
   run. Target: ratio <= 2.
3. **Failover**: with the phase 1 fleet attached to the primary, ``kill -9``
   the primary, run ``vigocli server promote`` at the standby at once, and time
   from the promote command's start until the new primary's ``/api/v1/status``
   says every envoy is connected (polled every 0.1 s); the sim's own reconnect
   storm figure (from the kill) too; nobody may enroll again. Target: <= 15 s
   for 5,000 envoys.
4. **Catch-up**: the ``sync: 0`` pair's standby is stopped (SIGTERM), ``--entries``
   enrollment tokens are created at the primary through the REST API (one
   keep-alive HTTPS connection, one request after another: each a transaction,
   so a change-log entry); the standby is started and its LSN (its database's
   ``replication_state``, read every 20 ms) is timed until it equals the
   primary's. Target: >= 5,000 entries/s.
5. **Acknowledged enrollments lost at ``kill -9``**: on each pair (``sync: 1``,
   ``sync: 0``) a burst of enrollments at ``--burst-rate``, the primary killed
   ``--kill-after`` seconds into it, the standby promoted; every enrollment whose
   Registered answer arrived is looked for in the new primary's SQLite file.
   Target: 0 with ``sync: 1``.

Enrollments are paced by this file's own enroller (``--enroller``, a process of
its own): ``vigo-envoy sim`` enrolls as fast as its concurrency allows and
cannot hold a rate. It is open loop (the n-th enrollment starts at n / rate
seconds whatever the earlier ones did) and drives the real envoy code
(``vigo.envoy.main.register``: TLS pinned to the token's key, Register,
redirects followed) with an in-memory state; its latency is from dialling to
the Registered answer.

Raw figures go to bench/results/ha.json and a section of docs/benchmarks.md.

Usage: python bench/ha.py [--quick] [--no-write] [--envoys N] [--rate R] [--window S]
"""

import argparse
import datetime
import http.client
import json
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "ha.json")
DOC = os.path.join(HERE, "..", "docs", "benchmarks.md")
VIGOCLI = os.path.join(harness.BIN, "vigocli")


# -- the enroller (a process of its own) -------------------------------------------------


class MemoryState:
    """What ``vigo.envoy.main.register`` needs of an ``EnvoyState``, in memory:
    a fresh Ed25519 key, and the Registered answer it records."""

    __slots__ = ("_key", "public_key", "envoy_id", "hostname")

    def __init__(self):
        import nacl.signing

        self._key = nacl.signing.SigningKey.generate()
        self.public_key = bytes(self._key.verify_key)
        self.envoy_id = self.hostname = None

    def sign(self, message):
        return self._key.sign(message).signature

    def record_registration(self, hostname, registered, connected_address):
        self.hostname, self.envoy_id = hostname, registered.envoy_id


def run_enroller(args):
    """Enroll ``args.count`` envoys at ``args.rate`` a second (open loop), then
    print a JSON summary: latencies, errors, and every acknowledged envoy.

    Stops early (and still prints) on SIGTERM."""
    from twisted.internet import reactor, task

    from vigo.envoy.answers import Refused
    from vigo.envoy.main import register
    from vigo.envoy.sim.figures import error_name
    from vigo.tokens import EnrollmentToken

    token = EnrollmentToken.decode(args.token)
    acked, latencies, errors = [], [], {}
    state = {"launched": 0, "outstanding": 0, "behind": 0, "started": None, "stopping": False,
             "last_ack": None}

    def one(n):
        envoy = MemoryState()
        hostname = "%s-%d.bench.example.com" % (args.prefix, n)
        began = time.monotonic()
        state["outstanding"] += 1

        def done(protocol):
            now = time.monotonic()
            if protocol is not None:
                protocol.close()
            latencies.append(now - began)
            acked.append([hostname, envoy.envoy_id, round(now, 4)])  # this machine's monotonic
            state["last_ack"] = now

        def failed(failure):
            e = failure.value
            key = "refused_%s" % (e.code,) if isinstance(e, Refused) else error_name(e)
            errors[key] = errors.get(key, 0) + 1

        def finished(_):
            state["outstanding"] -= 1
            maybe_done()

        d = register(reactor, envoy, hostname, token, address=args.server)
        d.addCallbacks(done, failed).addBoth(finished)

    def pump():
        if state["stopping"]:
            return
        due = min(args.count, int((time.monotonic() - state["started"]) * args.rate) + 1)
        while state["launched"] < due:
            if state["outstanding"] >= args.max_outstanding:
                state["behind"] += due - state["launched"]  # skipped: the server is too slow
                state["launched"] = due
                break
            state["launched"] += 1
            one(state["launched"])
        if state["launched"] >= args.count:
            pumping.stop()
            state["stopping"] = True
            maybe_done()

    def maybe_done():
        if state["stopping"] and state["outstanding"] == 0 and reactor.running:
            reactor.stop()

    printed = []

    def summary():
        if printed:
            return
        printed.append(True)
        ordered = sorted(latencies)

        def at(q):
            return round(1000 * ordered[min(int(q * len(ordered)), len(ordered) - 1)], 3) \
                if ordered else None

        elapsed = time.monotonic() - state["started"]
        sys.stdout.write(json.dumps({
            "rate": args.rate, "launched": state["launched"], "acked": len(acked),
            "skipped": state["behind"], "errors": errors, "elapsed_s": round(elapsed, 3),
            "acked_per_s": round(len(acked) / elapsed, 1) if elapsed else None,
            "p50_ms": at(0.50), "p99_ms": at(0.99),
            "max_ms": round(1000 * ordered[-1], 3) if ordered else None,
            "mean_ms": round(1000 * sum(ordered) / len(ordered), 3) if ordered else None,
            "envoys": acked if args.list else None}) + "\n")
        sys.stdout.flush()

    def stop(*_):
        state["stopping"] = True
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    state["started"] = time.monotonic()
    pumping = task.LoopingCall(pump)
    reactor.callWhenRunning(pumping.start, 0.005)
    reactor.addSystemEventTrigger("before", "shutdown", summary)
    reactor.run(installSignalHandlers=False)
    summary()


def x25519_env(workdir):
    """The environment of a client process that offers classic X25519 only
    (as harness.start_sims does for the simulator)."""
    path = os.path.join(workdir, "openssl-x25519.cnf")
    with open(path, "w") as f:
        f.write(harness.X25519_ONLY)
    env = dict(os.environ)
    env["OPENSSL_CONF"] = path
    return env


class Enroller:
    """``python bench/ha.py --enroller`` against ``node``'s envoy port."""

    def __init__(self, node, token, rate, count, prefix, listed=False):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--enroller",
             "--server", "127.0.0.1:%d" % (node.envoy_port,), "--token", token,
             "--rate", str(rate), "--count", str(count), "--prefix", prefix,
             "--max-outstanding", str(max(200, 2 * int(rate)))]
            + (["--list"] if listed else []),
            stdout=subprocess.PIPE, stderr=open(os.path.join(node.workdir, "enroller-%s.log"
                                                             % (prefix,)), "ab"),
            env=x25519_env(node.workdir), cwd=node.workdir)

    @property
    def pid(self):
        return self.process.pid

    def result(self, timeout=600):
        out, _ = self.process.communicate(timeout=timeout)
        return json.loads(out.decode()) if out.strip() else {}

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.result(60)


# -- servers ---------------------------------------------------------------------------------


STARTED = []  # every Node, so that the end stops what is still running


class Node(harness.Server):
    """A ``twistd -n vigo`` with ``peers.listen`` on fixed loopback ports."""

    def __init__(self, name, sync, interval="15s"):
        # Ports below the ephemeral range: this bench's own thousands of
        # outgoing connections would otherwise take one while a node restarts.
        self.replication_port, envoy, api = harness.free_ports(3)
        harness.Server.__init__(
            self, workdir=tempfile.mkdtemp(prefix="vigo-ha-%s-" % name), interval=interval,
            ports=(envoy, api),
            sections={"peers": {"listen": "127.0.0.1:%d" % self.replication_port,
                                "sync": sync}})
        self.name = name
        self.sync = sync
        STARTED.append(self)

    def wait_ready(self, timeout=120):
        harness.Server.wait_ready(self, timeout)
        return self

    def reload_credentials(self):
        """A standby's admin token and API certificate are the primary's once
        its base copy is in."""
        with open(os.path.join(self.data_dir, "admin-token")) as f:
            self.token = f.read().strip()
        self._ssl = ssl.create_default_context(
            cafile=os.path.join(self.data_dir, "api-cert.pem"))

    def api(self, method, path, body=None):
        try:
            return harness.Server.api(self, method, path, body)
        except (ssl.SSLError, OSError) as e:
            if getattr(e, "code", None) not in (None, 401):
                raise
            self.reload_credentials()
            return harness.Server.api(self, method, path, body)

    def replica_status(self):
        return self.api("GET", "/api/v1/server/status")

    def cli(self, *args, timeout=120):
        done = subprocess.run([VIGOCLI, "--data-dir", self.data_dir, *args],
                              capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError("vigocli %s at %s: %s %s" % (" ".join(args), self.name,
                                                            done.stdout.decode(),
                                                            done.stderr.decode()))
        return done.stdout.decode()

    def kill(self):
        """SIGKILL, and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)
        if self.log is not None:
            self.log.close()

    def db_rows(self, sql, args=()):
        connection = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data_dir,
                                                                       "vigo.sqlite3"),
                                     uri=True, timeout=10)
        try:
            return connection.execute(sql, args).fetchall()
        finally:
            connection.close()

    def db_lsn(self):
        return self.db_rows("SELECT lsn FROM replication_state")[0][0]


def make_pair(label, sync):
    """A primary and a standby that joined it and streams from it."""
    primary, standby = Node(label + "-p", sync), Node(label + "-s", sync)
    primary.spawn()
    standby.spawn()
    primary.wait_ready()
    standby.wait_ready()
    invite = primary.cli("server", "standby", "invite").strip().splitlines()[-1]
    standby.cli("server", "standby", "join", invite)
    if harness.wait_until(lambda: streaming(primary), 120, 0.1) is None:
        raise RuntimeError("the standby of %s did not start streaming" % (label,))
    standby.reload_credentials()
    return primary, standby


def streaming(primary):
    try:
        return any(s["connected"] for s in primary.replica_status()["standbys"])
    except (OSError, ValueError, KeyError):
        return False


def connected(node):
    try:
        return node.status()["envoys"]["connected"]
    except (OSError, ValueError, KeyError):
        return -1


def stop_all(processes):
    for process in processes:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        if process is None:
            continue
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- phases 1 and 3: lag under load, then failover --------------------------------------


def lag_and_failover(args):
    print("pair A (sync: 0): primary + standby, %d envoys checking in every 15 s"
          % (args.envoys,), flush=True)
    primary, standby = make_pair("a", 0)
    sims, enroller = [], None
    try:
        token = primary.token_for(args.envoys)
        began = time.monotonic()
        sims = harness.start_sims(primary, token, [args.envoys], "15s", "3600s", "fleet")
        if harness.wait_until(lambda: connected(primary) >= args.envoys, 600, 0.5) is None:
            raise RuntimeError("only %d of %d envoys attached" % (connected(primary),
                                                                 args.envoys))
        enrolled_s = time.monotonic() - began
        print("  %d envoys enrolled and attached in %.1f s" % (args.envoys, enrolled_s),
              flush=True)
        # Restart the primary: its ack_seconds then holds this window's samples only
        # (not the fleet's enrollment). The envoys reconnect (the standby sends
        # them back to it).
        primary.stop()
        restarted = time.monotonic()
        primary.start()
        if harness.wait_until(lambda: connected(primary) >= args.envoys and streaming(primary),
                              180, 0.25) is None:
            raise RuntimeError("after the restart only %d envoys re-attached"
                               % (connected(primary),))
        print("  primary restarted; all re-attached and the standby streaming in %.1f s"
              % (time.monotonic() - restarted,), flush=True)
        time.sleep(1.0 if args.quick else 3.0)  # the storm's write-behind settles

        count = int(args.rate * args.window)
        enroll_token = primary.token_for(count + 10)
        print("phase 1: lag with %d envoys checking in and %g enrollments/s for %d s"
              % (args.envoys, args.rate, args.window), flush=True)
        lsn0 = primary.replica_status()["lsn"]
        enroller = Enroller(primary, enroll_token, args.rate, count, "lag")
        samples, started = [], time.monotonic()
        pids = {"primary": primary.pid, "standby": standby.pid, "sim": sims[0].pid}
        cpu0 = {name: harness.cpu_seconds(pid) for name, pid in pids.items()}
        while enroller.process.poll() is None and time.monotonic() - started < args.window + 30:
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
            status = primary.replica_status()
            samples.append({"t": round(time.monotonic() - started, 2), "lsn": status["lsn"],
                            "ack": status["ack_seconds"],
                            "lag": [s["lag_seconds"] for s in status["standbys"]]})
        cpu = {name: (harness.cpu_seconds(pid) - cpu0[name]) / (time.monotonic() - started)
               for name, pid in pids.items()}
        enrolled = enroller.result()
        enroller = None
        final = primary.replica_status()
        lags = [lag for s in samples for lag in s["lag"] if lag is not None]
        ack = final["ack_seconds"] or {}
        lsn1 = final["lsn"]
        lag = {
            "envoys": args.envoys, "rate": args.rate, "window_s": args.window,
            "fleet_enroll_s": enrolled_s, "enroller": enrolled,
            "ack_p50_ms": 1000 * ack["p50"] if ack else None,
            "ack_p99_ms": 1000 * ack["p99"] if ack else None,
            "ack_samples": ack.get("samples"), "entries": lsn1 - lsn0,
            "entries_per_s": (lsn1 - lsn0) / enrolled["elapsed_s"]
            if enrolled.get("elapsed_s") else None,
            "lag_seconds_max_ms": 1000 * max(lags) if lags else None,
            "lag_seconds_sampled": len(lags), "cpu_share": cpu,
            "ack_p99_ms_by_second": [1000 * s["ack"]["p99"] if s["ack"] else None
                                     for s in samples],
        }
        print("  ack (commit to standby ack): p50 %.1f ms, p99 %.1f ms over %s acks; largest "
              "sampled lag_seconds %.0f ms; %d entries (%.0f/s); enrolled %d/%d (%.0f/s, p99 "
              "%.1f ms, errors %s); CPU: %s"
              % (lag["ack_p50_ms"], lag["ack_p99_ms"], lag["ack_samples"],
                 lag["lag_seconds_max_ms"], lag["entries"], lag["entries_per_s"],
                 enrolled["acked"], count, enrolled["acked_per_s"], enrolled["p99_ms"],
                 enrolled["errors"] or "none",
                 ", ".join("%s %.0f%%" % (k, 100 * v) for k, v in cpu.items())), flush=True)

        # -- phase 3: failover ------------------------------------------------------
        print("phase 3: failover with %d envoys attached: kill -9 the primary, promote "
              "the standby" % (args.envoys,), flush=True)
        harness.wait_until(lambda: primary.replica_status()["standbys"][0]["lsn"]
                           == primary.replica_status()["lsn"], 10, 0.1)
        before = primary.status()["envoys"]
        held_before = standby.db_rows("SELECT COUNT(*) FROM envoys")[0][0]
        primary.kill()
        killed = time.monotonic()
        promote_began = time.monotonic()
        promoted = standby.cli("server", "promote")
        promote_s = time.monotonic() - promote_began
        points = []

        def all_back():
            n = connected(standby)
            points.append((round(time.monotonic() - promote_began, 2), n))
            return n >= args.envoys

        took = harness.wait_until(all_back, 120, 0.1)
        after = standby.status()["envoys"]
        time.sleep(1.0)
        for sim in sims:
            sim.send_signal(signal.SIGTERM)
        sim_summary = harness.sim_results(sims)[0]
        sims = []
        storms = sim_summary.get("reconnect_storms", [])
        failover = {
            "envoys": args.envoys, "kill_to_promote_start_s": promote_began - killed,
            "promote_command_s": promote_s, "promote_output": promoted.strip().splitlines(),
            "promote_to_all_attached_s": took, "attached_after": after["connected"],
            "envoys_total_before": before["total"], "envoys_total_after": after["total"],
            "standby_held_before_kill": held_before,
            "sim_enrolled": sim_summary.get("enrolled"), "sim_count": sim_summary.get("count"),
            "sim_enroll_failed": sim_summary.get("enroll_failed"),
            "sim_refusals": sim_summary.get("refusals"), "sim_errors": sim_summary.get("errors"),
            "sim_failovers": sim_summary.get("failovers"),
            "sim_redirects": sim_summary.get("redirects"),
            "sim_reconnect_storms": storms,
            "sim_checkin_p99_ms": sim_summary.get("p99_ms"),
            "connected_by_time": points[::5],
        }
        failover["reenrolled"] = (failover["envoys_total_after"] - failover["envoys_total_before"]
                                  + (sim_summary.get("enrolled", 0) - args.envoys))
        print("  promote command %.2f s; all %d envoys attached at the new primary %s s after "
              "the promote began; the sim's storm: %s; envoys %d before, %d after; sim enrolled "
              "%s of %s; refusals %s"
              % (promote_s, after["connected"], "%.2f" % took if took is not None else "(never)",
                 ", ".join("%s envoys in %s s" % (s["envoys"], s["seconds"]) for s in storms)
                 or "none", before["total"], after["total"], sim_summary.get("enrolled"),
                 args.envoys, sim_summary.get("refusals") or "none"), flush=True)
        return lag, failover
    finally:
        if enroller is not None:
            enroller.stop()
        stop_all(sims)
        primary.kill()
        standby.stop()


# -- phases 2, 4 and 5 on pairs B (sync: 1) and C (sync: 0) ------------------------------


def enroll_load(node, rate, seconds, prefix):
    count = int(rate * seconds)
    token = node.token_for(count + 10)
    return Enroller(node, token, rate, count, prefix).result()


class KeepAlive:
    """One HTTPS connection to ``node``'s API, kept open."""

    def __init__(self, node):
        self.node = node
        self.connection = http.client.HTTPSConnection("127.0.0.1", node.api_port,
                                                      context=node._ssl, timeout=30)
        self.headers = {"Authorization": "Bearer " + node.token,
                        "Content-Type": "application/json"}

    def post(self, path, body):
        self.connection.request("POST", path, json.dumps(body).encode(), self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError("POST %s: %d %s" % (path, response.status, data[:200]))
        return json.loads(data)

    def close(self):
        self.connection.close()


def catch_up(primary, standby, entries):
    """Stop ``standby``, write ``entries`` tokens at ``primary``, start the standby
    again and time it until its LSN is the primary's."""
    standby.stop()
    lsn_stopped = standby.db_lsn()
    client = KeepAlive(primary)
    began = time.monotonic()
    try:
        for _ in range(entries):
            client.post("/api/v1/tokens", {"uses": 1})
    finally:
        client.close()
    write_s = time.monotonic() - began
    head = primary.db_lsn()
    behind = head - lsn_stopped
    log_path = os.path.join(primary.workdir, "server.log")
    mark = os.path.getsize(log_path)
    spawned = time.monotonic()
    standby.spawn()
    first_move = [None]

    def caught():
        if standby.process.poll() is not None:
            raise RuntimeError("the standby exited; see %s" % (standby.log.name,))
        lsn = standby.db_lsn()
        if first_move[0] is None and lsn > lsn_stopped:
            first_move[0] = time.monotonic()
        return lsn >= head

    if harness.wait_until(caught, 300, 0.02) is None:
        raise RuntimeError("the standby did not catch up (at %d of %d)"
                           % (standby.db_lsn(), head))
    done = time.monotonic()
    standby.wait_ready()
    with open(log_path, "rb") as f:
        f.seek(mark)
        copied = b"takes a base copy" in f.read()
    return {
        "entries": behind, "requests": entries, "write_s": write_s,
        "writes_per_s": entries / write_s, "lsn_stopped": lsn_stopped, "head": head,
        "spawn_to_first_batch_s": first_move[0] - spawned,
        "first_batch_to_caught_up_s": done - first_move[0],
        "spawn_to_caught_up_s": done - spawned,
        # From the spawn: process start, store open, Hello, then the stream.
        "entries_per_s": behind / (done - spawned),
        "base_copy": copied,
    }


def lost_at_kill(primary, standby, rate, after, prefix):
    """Burst enrollments, kill -9 the primary ``after`` s into it, promote; the
    acknowledged enrollments the new primary lacks."""
    count = int(rate * (after + 5))
    token = primary.token_for(count + 10)
    enroller = Enroller(primary, token, rate, count, prefix, listed=True)
    time.sleep(after)
    primary.kill()
    killed = time.monotonic()
    time.sleep(1.0)  # what was in flight fails
    result = enroller.stop()
    promoted = standby.cli("server", "promote")
    held = {hostname for (hostname,) in standby.db_rows(
        "SELECT hostname FROM envoys WHERE hostname LIKE ?", (prefix + "-%",))}
    on_old = {hostname for (hostname,) in primary.db_rows(
        "SELECT hostname FROM envoys WHERE hostname LIKE ?", (prefix + "-%",))}
    acked = {hostname for hostname, _, _ in result["envoys"]}
    lost = sorted(acked - held)
    return {
        "sync": primary.sync, "rate": rate, "kill_after_s": after,
        "acked": len(acked), "acked_lost": len(lost), "lost_sample": lost[:10],
        "on_new_primary": len(held), "on_old_primary_disk": len(on_old),
        "held_not_acked": len(held - acked), "old_disk_not_on_new": len(on_old - held),
        "errors": result["errors"], "launched": result["launched"],
        "promote_output": promoted.strip().splitlines(),
        "acked_after_kill": sum(1 for _, _, at in result["envoys"] if at > killed),
        "last_ack_before_kill_ms": 1000 * (killed - max(
            (at for _, _, at in result["envoys"]), default=killed)),
    }


def sync_pairs(args):
    print("pairs B (sync: 1) and C (sync: 0)", flush=True)
    b_primary, b_standby = make_pair("b", 1)
    c_primary, c_standby = make_pair("c", 0)
    try:
        print("phase 2: %g enrollments/s for %d s at each pair" % (args.rate, args.sync_window),
              flush=True)
        runs = {}
        for sync, node in ((0, c_primary), (1, b_primary), (0, c_primary), (1, b_primary)):
            seconds = args.sync_window / 2
            result = enroll_load(node, args.rate, seconds, "e%d-%d" % (sync, len(runs)))
            runs.setdefault(sync, []).append(result)
        sync_figures = {}
        for sync, results in runs.items():
            sync_figures[sync] = {
                "runs": results, "p99_ms": max(r["p99_ms"] for r in results),
                "p50_ms": max(r["p50_ms"] for r in results),
                "acked": sum(r["acked"] for r in results),
                "errors": {k: sum(r["errors"].get(k, 0) for r in results)
                           for r in results for k in r["errors"]},
                "acked_per_s": sum(r["acked_per_s"] for r in results) / len(results)}
        s0, s1 = sync_figures[0], sync_figures[1]
        ratio = s1["p99_ms"] / s0["p99_ms"] if s0["p99_ms"] else None
        enrollment = {"rate": args.rate, "seconds_each": args.sync_window, "sync0": s0,
                      "sync1": s1, "p99_ratio": ratio}
        print("  sync 0: p50 %.1f ms, p99 %.1f ms (%d enrolled, errors %s); sync 1: p50 %.1f "
              "ms, p99 %.1f ms (%d, errors %s): ratio %.2f"
              % (s0["p50_ms"], s0["p99_ms"], s0["acked"], s0["errors"] or "none",
                 s1["p50_ms"], s1["p99_ms"], s1["acked"], s1["errors"] or "none", ratio),
              flush=True)

        print("phase 4: catch-up: standby of C stopped, %d tokens created at the primary"
              % (args.entries,), flush=True)
        catchup = catch_up(c_primary, c_standby, args.entries)
        print("  %d entries behind (%.0f token creations/s); the standby, started, applied "
              "its first batch %.2f s after its spawn and was caught up %.2f s after it: "
              "%.0f entries/s%s"
              % (catchup["entries"], catchup["writes_per_s"], catchup["spawn_to_first_batch_s"],
                 catchup["spawn_to_caught_up_s"], catchup["entries_per_s"],
                 "; it took a BASE COPY" if catchup["base_copy"] else ""), flush=True)

        print("phase 5: kill -9 the primary %g s into a burst of %g enrollments/s, promote"
              % (args.kill_after, args.burst_rate), flush=True)
        losses = []
        for label, (primary, standby) in (("k1", (b_primary, b_standby)),
                                          ("k0", (c_primary, c_standby))):
            loss = lost_at_kill(primary, standby, args.burst_rate, args.kill_after, label)
            losses.append(loss)
            print("  sync %d: %d acknowledged, %d of them missing on the new primary; it holds "
                  "%d (%d never acknowledged); the dead primary's disk %d; errors %s"
                  % (loss["sync"], loss["acked"], loss["acked_lost"], loss["on_new_primary"],
                     loss["held_not_acked"], loss["on_old_primary_disk"],
                     loss["errors"] or "none"), flush=True)
        return enrollment, catchup, losses
    finally:
        for node in (b_primary, b_standby, c_primary, c_standby):
            node.kill() if node.name.endswith("-p") else node.stop()


# -- report ---------------------------------------------------------------------------------


def _ok(value, target, lower_is_better=True):
    return report._ok(value, target, lower_is_better)


def write(figures, path=DOC):
    lag, enr, fo, cu = (figures["lag"], figures["enrollment"], figures["failover"],
                        figures["catchup"])
    loss = {item["sync"]: item for item in figures["loss"]}
    l0, l1 = loss[0], loss[1]
    storms = fo["sim_reconnect_storms"]
    storm = storms[-1]["seconds"] if storms else None
    cpu = lag["cpu_share"]
    intro = textwrap.fill(
        "`python bench/ha.py%(quick)s`, %(date)s, %(machine)s. Real `twistd -n vigo` "
        "servers on loopback (`peers.listen` set, `peers.sync_timeout` 2 s), each standby "
        "joined with `vigocli server standby invite`/`join` and promoted with `vigocli server "
        "promote`; servers, simulator and enroller share the same 2 cores. The fleet is "
        "`vigo-envoy sim` (X25519). Enrollments are paced open loop by the bench's own "
        "enroller process (the real `vigo.envoy.main.register`, X25519, latency from "
        "dialling to the Registered answer), since `vigo-envoy sim` cannot hold a rate. "
        "Raw figures: `bench/results/ha.json`." % {
            "quick": " --quick" if figures["quick"] else "", "date": figures["date"],
            "machine": figures["machine"]}, width=84)
    text = """## High availability (one replica set)

%(intro)s

| figure | ours | target | |
|---|---|---|---|
| replication lag, p99: commit to standby acknowledgement (the primary's `ack_seconds`), %(envoys)s envoys checking in every 15 s + %(rate)g enrollments/s for %(window)d s, `sync: 0` | p50 %(ack50).1f ms, p99 **%(ack99).1f ms** (%(acks)s acks); largest `standbys[].lag_seconds` sampled each second: %(lagmax).0f ms | <= 100 ms | %(lag_ok)s |
| the same window: enrollments answered, their p50 / p99; change-log entries; CPU (share of one core) of primary / standby / simulator | %(lag_acked)s at %(lag_rate).0f/s, %(lag_p50).1f / %(lag_p99).1f ms; %(lag_entries)s (%(lag_eps).0f/s); %(cpu_p).0f%% / %(cpu_s).0f%% / %(cpu_sim).0f%% | -- | -- |
| enrollment p99, `sync: 1` / `sync: 0`, %(rate)g enrollments/s, %(sw)d s at each pair (in two alternating halves), no other load | **%(ratio).2f** (%(e1).1f ms / %(e0).1f ms; p50 %(e1m).1f / %(e0m).1f ms) | <= 2 | %(ratio_ok)s |
| failover: from `vigocli server promote` (started right after `kill -9` of the primary) to all %(envoys)s envoys attached at the new primary (its `/api/v1/status`, polled every 0.1 s) | **%(fo).1f s** (the promote command itself %(fo_cmd).2f s; the simulator's reconnect storm, from the kill: %(storm)s) | <= 15 s for 5,000 | %(fo_ok)s |
| ... envoys enrolled again | **%(reenrolled)d** (envoys held %(tb)s before, %(ta)s after; the simulator enrolled %(se)s of %(envoys)s; refusals: %(refusals)s) | none | %(re_ok)s |
| standby catch-up: %(cu_n)s entries behind (REST token creations, one keep-alive connection, %(cu_w).0f/s), from starting the standby's process to its LSN equal to the primary's | **%(cu_rate)s entries/s** (%(cu_s).2f s; its first batch applied %(cu_first).2f s after the start)%(copy)s | >= 5,000/s | %(cu_ok)s |
| acknowledged enrollments lost: `kill -9` of the primary %(ka)g s into %(br)g enrollments/s, standby promoted, `sync: 1` | **%(l1)d** of %(a1)s (the new primary holds %(h1)s; the dead primary's disk %(d1)s) | 0 | %(l1_ok)s |
| the same, `sync: 0` | **%(l0)d** of %(a0)s (the new primary holds %(h0)s; the dead primary's disk %(d0)s) | only entries younger than the lag | -- |
%(note)s""" % {
        "intro": intro, "envoys": "{:,}".format(lag["envoys"]), "rate": lag["rate"],
        "window": lag["window_s"], "ack50": lag["ack_p50_ms"] or 0,
        "ack99": lag["ack_p99_ms"] or 0, "acks": "{:,}".format(lag["ack_samples"] or 0),
        "lagmax": lag["lag_seconds_max_ms"] or 0, "lag_ok": _ok(lag["ack_p99_ms"], 100),
        "lag_acked": "{:,}".format(lag["enroller"]["acked"]),
        "lag_rate": lag["enroller"]["acked_per_s"] or 0,
        "lag_p50": lag["enroller"]["p50_ms"] or 0, "lag_p99": lag["enroller"]["p99_ms"] or 0,
        "lag_entries": "{:,}".format(lag["entries"]), "lag_eps": lag["entries_per_s"] or 0,
        "cpu_p": 100 * cpu["primary"], "cpu_s": 100 * cpu["standby"], "cpu_sim": 100 * cpu["sim"],
        "sw": enr["seconds_each"], "ratio": enr["p99_ratio"] or 0,
        "e1": enr["sync1"]["p99_ms"], "e0": enr["sync0"]["p99_ms"],
        "e1m": enr["sync1"]["p50_ms"], "e0m": enr["sync0"]["p50_ms"],
        "ratio_ok": _ok(enr["p99_ratio"], 2),
        "fo": fo["promote_to_all_attached_s"] or 0, "fo_cmd": fo["promote_command_s"],
        "storm": "%.1f s" % (storm,) if storm is not None else "unfinished",
        "fo_ok": _ok(fo["promote_to_all_attached_s"], 15),
        "reenrolled": fo["reenrolled"], "tb": "{:,}".format(fo["envoys_total_before"]),
        "ta": "{:,}".format(fo["envoys_total_after"]), "se": "{:,}".format(fo["sim_enrolled"]),
        "refusals": ", ".join("%s %d" % kv for kv in sorted(fo["sim_refusals"].items()))
        or "none",
        "re_ok": "met" if fo["reenrolled"] == 0 else "**missed**",
        "cu_n": "{:,}".format(cu["entries"]), "cu_w": cu["writes_per_s"],
        "cu_rate": "{:,.0f}".format(cu["entries_per_s"]), "cu_s": cu["spawn_to_caught_up_s"],
        "cu_first": cu["spawn_to_first_batch_s"],
        "copy": "; it took a base copy instead of streaming" if cu["base_copy"] else "",
        "cu_ok": _ok(cu["entries_per_s"], 5000, False),
        "br": l1["rate"], "ka": l1["kill_after_s"],
        "l1": l1["acked_lost"], "a1": l1["acked"], "h1": l1["on_new_primary"],
        "d1": l1["on_old_primary_disk"],
        "l1_ok": "met" if l1["acked_lost"] == 0 else "**missed**",
        "l0": l0["acked_lost"], "a0": l0["acked"], "h0": l0["on_new_primary"],
        "d0": l0["on_old_primary_disk"], "note": notes(figures),
    }
    report.replace_section(path, "ha", text)


def notes(figures):
    """Paragraphs under the table, for what the figures alone do not say."""
    enr, fo = figures["enrollment"], figures["failover"]
    out = []
    if min(enr["sync0"]["p50_ms"], enr["sync1"]["p50_ms"]) >= 35:
        out.append(
            "Every enrollment here takes about 40 ms or more, with `sync: 0` as with `sync: 1` "
            "and with no other load, where a Register answered with `TCP_NODELAY` set on the "
            "server's end of the envoy connection takes a few ms (tried by hand outside this "
            "bench): the Registered answer, written a store commit after the TLS handshake, "
            "waits for the envoy's delayed ACK of what the server sent before it (Nagle's "
            "algorithm). That floor hides most of what `sync: 1` "
            "adds (the standby's round trip), so the p99 ratio above flatters it.")
    if figures["loss"] and all(item["acked_lost"] == 0 for item in figures["loss"]):
        out.append(
            "`kill -9` ends the process, not the machine: what the primary wrote to the "
            "replication socket before it died still reaches the standby, and a primary "
            "passes each entry to its streams (sent at once unless four batches are "
            "unanswered) before it answers the writes in it. So even "
            "`sync: 0` lost nothing here; what it can lose is what the primary had not yet "
            "written out when its machine died (docs/ha.md, section 3).")
    if fo["sim_refusals"].get("standby"):
        out.append(
            "The `standby` refusals are envoys that reached the promoted node while it was "
            "still serving as a standby that knew no primary (between `promote` and its "
            "rebuild): retryable, they back off and come again.")
    return "\n" + "\n\n".join(textwrap.fill(p, width=84) for p in out) + "\n" if out else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (under a minute)")
    parser.add_argument("--no-write", action="store_true",
                        help="do not update docs/benchmarks.md and bench/results/ha.json")
    parser.add_argument("--envoys", type=int, help="envoys checking in (default 5000; quick 500)")
    parser.add_argument("--rate", type=float, default=200.0, help="enrollments a second")
    parser.add_argument("--window", type=int, help="seconds of phase 1 (default 30; quick 8)")
    parser.add_argument("--sync-window", type=int,
                        help="seconds of enrollments at each pair in phase 2 (default 20; "
                             "quick 6)")
    parser.add_argument("--entries", type=int,
                        help="entries the standby catches up on (default 20000; quick 3000)")
    parser.add_argument("--burst-rate", type=float, help="enrollments a second in phase 5 "
                        "(default: --rate)")
    parser.add_argument("--kill-after", type=float,
                        help="seconds into the burst the primary is killed (default 3; quick 1.5)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the servers' directories (and logs) in /tmp")
    # The enroller's own options (python bench/ha.py --enroller ...).
    parser.add_argument("--enroller", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--max-outstanding", type=int, default=400, help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.enroller:
        run_enroller(args)
        return
    args.envoys = args.envoys or (500 if args.quick else 5000)
    args.window = args.window or (8 if args.quick else 30)
    args.sync_window = args.sync_window or (6 if args.quick else 20)
    args.entries = args.entries or (3000 if args.quick else 20000)
    args.burst_rate = args.burst_rate or args.rate
    args.kill_after = args.kill_after or (1.5 if args.quick else 3.0)
    figures = {"machine": harness.machine(), "date": datetime.date.today().isoformat(),
               "quick": args.quick, "options": {
                   "envoys": args.envoys, "rate": args.rate, "window": args.window,
                   "sync_window": args.sync_window, "entries": args.entries,
                   "burst_rate": args.burst_rate, "kill_after": args.kill_after}}
    began = time.monotonic()
    try:
        figures["lag"], figures["failover"] = lag_and_failover(args)
        figures["enrollment"], figures["catchup"], figures["loss"] = sync_pairs(args)
    finally:
        for node in STARTED:
            node.kill()
    if not args.keep:  # on failure they stay, with the servers' logs
        for node in STARTED:
            shutil.rmtree(node.workdir, ignore_errors=True)
    figures["seconds"] = time.monotonic() - began
    print("done in %.0f s" % (figures["seconds"],))
    if not args.no_write:
        write(figures)
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            json.dump(figures, f, indent=2)
        print("figures written to docs/benchmarks.md and bench/results/ha.json")


if __name__ == "__main__":
    main()
