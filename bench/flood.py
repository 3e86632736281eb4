"""Benchmark: real envoys checking in while 10,000 bad connections flood the envoy port.

One real ``twistd -n vigo`` server (the shipped limits: handshake 10 s,
first_request 30 s, per_source 20,000, connections 50,000), on loopback:

1. **quiet**: ``--envoys`` simulated envoys (``vigo-envoy sim``) check in every
   ``--interval`` for ``--window`` seconds: their p99 latency;
2. **flood**: a separate flooder process (this file with ``--flooder``, so its
   reactor and CPU are its own) holds ``--bad`` bad connections open against
   the envoy port, reopening each one the server cuts: connections that never
   send a byte, dribblers that send a TLS ClientHello a byte every
   ``--dribble-every`` seconds, and clients that finish TLS, wait, and send a
   garbage frame. Once they are held, the same legitimate load runs again (new
   envoys, same count and cadence): p99 again.

Figures: flood p99 / quiet p99 (target <= 2), the server's resident memory per
bad connection held, the server's refusal counters (``/metrics``), check-in
errors, and the CPU of server, flooder and simulators in each phase (all on
the same cores). Raw figures go to bench/results/flood.json and a section of
docs/benchmarks.md. Every process started is stopped by its PID.

Usage: python bench/flood.py [--quick] [--no-write]
"""

import argparse
import datetime
import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "flood.json")
DOC = os.path.join(HERE, "..", "docs", "benchmarks.md")

# The flooder's mix of bad connections, as shares of --bad.
MIX = {"silent": 0.70, "dribbler": 0.20, "garbage": 0.10}
FLOOD_SOURCES = ["127.0.0.%d" % (n,) for n in range(10, 30)]  # the sims use 127.0.0.1-4


# -- the flooder (a process of its own) ---------------------------------------------


def garbage_frames():
    """Garbage an attacker sends after TLS, one kind after another."""
    from vigo.fleet import wire

    return [
        b"\xff\xff\xff\xf0" + b"x" * 16,  # a length past MAX_REQUEST
        wire.frame(b"\x7fgarbage"),  # an unknown type
        wire.frame(bytes((wire.ATTACH,)) + b"{not json"),  # malformed
        wire.frame(bytes((wire.CHECKIN,)) + bytes(wire.CHECKIN_BODY.size)),  # not attached
    ]


def client_hello():
    from OpenSSL import SSL

    connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def run_flooder(args):
    """Hold ``args.bad`` bad connections open until SIGTERM; status to ``args.status``."""
    import resource

    from twisted.internet import endpoints, protocol, reactor, task
    from twisted.internet.interfaces import IHandshakeListener
    from zope.interface import implementer

    from vigo.tls import PinnedKeyClientCreator

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = args.server.rsplit(":", 1)
    port = int(port)
    creator = PinnedKeyClientCreator(args.fingerprint)
    hello = client_hello()
    frames = garbage_frames()
    rng = random.Random(1)
    stats = {"target": args.bad, "open": 0, "connecting": 0, "opened": 0, "lost": 0,
             "connect_failed": 0, "handshakes": 0, "garbage_sent": 0, "dribbled_bytes": 0,
             "lifetime": {}}
    kinds = []
    for kind, share in args.mix.items():
        kinds += [kind] * round(args.bad * share)
    kinds = kinds[:args.bad] + ["silent"] * (args.bad - len(kinds))

    @implementer(IHandshakeListener)
    class Bad(protocol.Protocol):
        def __init__(self, slot):
            self.slot = slot
            self.started = None
            self.timer = None
            self.sent = 0

        def connectionMade(self):
            stats["connecting"] -= 1
            stats["open"] += 1
            self.started = reactor.seconds()
            if self.slot.kind == "dribbler":
                self.timer = reactor.callLater(rng.uniform(0, args.dribble_every), self.dribble)

        def dribble(self):
            self.timer = None
            if self.sent < len(hello) - 1:  # never the last byte
                self.transport.write(hello[self.sent:self.sent + 1])
                self.sent += 1
                stats["dribbled_bytes"] += 1
                self.timer = reactor.callLater(args.dribble_every, self.dribble)

        def handshakeCompleted(self):
            stats["handshakes"] += 1
            if self.slot.kind == "garbage":
                self.timer = reactor.callLater(rng.uniform(0, 2 * args.garbage_hold),
                                               self.garbage)

        def garbage(self):
            self.timer = None
            self.transport.write(frames[self.slot.n % len(frames)])
            self.slot.n += 1
            stats["garbage_sent"] += 1

        def connectionLost(self, reason):
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self.timer = None
            stats["open"] -= 1
            stats["lost"] += 1
            life = stats["lifetime"].setdefault(self.slot.kind, [0, 0.0, 0.0])
            lived = reactor.seconds() - self.started
            life[0] += 1
            life[1] += lived
            life[2] = max(life[2], lived)
            self.slot.closed(0.0)

    class Factory(protocol.ClientFactory):
        noisy = False

        def __init__(self, slot):
            self.slot = slot

        def buildProtocol(self, addr):
            return Bad(self.slot)

        def clientConnectionFailed(self, connector, reason):
            self.slot.failed()

    class Slot:
        def __init__(self, kind, source):
            self.kind, self.source, self.n = kind, source, rng.randrange(len(frames))

        def open(self):
            if stopping:
                return
            stats["connecting"] += 1
            stats["opened"] += 1
            if self.kind == "garbage":
                endpoint = endpoints.wrapClientTLS(creator, endpoints.TCP4ClientEndpoint(
                    reactor, host, port, 30, (self.source, 0)))
                endpoint.connect(Factory(self)).addErrback(lambda _: self.failed())
            else:
                reactor.connectTCP(host, port, Factory(self), 30, (self.source, 0))

        def failed(self):
            stats["connecting"] -= 1
            stats["connect_failed"] += 1
            self.closed(0.5)  # do not spin on a port that refuses

        def closed(self, delay):
            if not stopping:
                reactor.callLater(delay, self.open)

    slots = [Slot(kind, FLOOD_SOURCES[n % len(FLOOD_SOURCES)]) for n, kind in enumerate(kinds)]
    rng.shuffle(slots)
    stopping = False
    pending = iter(slots)

    def ramp():
        """Open ``args.ramp`` connections a second until every slot is open."""
        for _ in range(max(1, args.ramp // 10)):
            slot = next(pending, None)
            if slot is None:
                ramping.stop()
                return
            slot.open()

    def write_status():
        stats["time"] = time.time()
        tmp = args.status + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, args.status)

    def stop(*_):
        nonlocal stopping
        stopping = True
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    ramping = task.LoopingCall(ramp)
    reactor.callWhenRunning(ramping.start, 0.1)
    reactor.callWhenRunning(task.LoopingCall(write_status).start, 0.5)
    reactor.run(installSignalHandlers=False)
    write_status()


def parse_mix(text):
    mix = {}
    for part in text.split(","):
        kind, _, share = part.partition("=")
        if kind not in MIX:
            raise argparse.ArgumentTypeError("no kind %r (kinds: %s)" % (kind, ", ".join(MIX)))
        mix[kind] = float(share)
    if abs(sum(mix.values()) - 1.0) > 1e-6:
        raise argparse.ArgumentTypeError("the shares must add up to 1")
    return mix


# -- the probed server (--probe) ---------------------------------------------------------


def run_probed_server(config, out):
    """The server as ``twistd -n vigo --config CONFIG`` runs it, plus two probes
    written to ``out`` (JSON) every 2 s and at exit: the reactor's stalls (a
    5 ms ticker's lateness over 20 ms) and the cyclic collector's pauses over
    5 ms, each with its wall-clock time."""
    import gc

    from twisted.internet import reactor, task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from vigo.tap import Options, makeService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    # Which reactor events take over 1 ms, by kind: a read or write of one
    # connection (by its protocol's class, outermost first), or the timed calls.
    slow = {}

    def timed(kind, work, *args):
        began = time.perf_counter()
        try:
            return work(*args)
        finally:
            took = time.perf_counter() - began
            if took > 0.001:
                entry = slow.setdefault(kind, [0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += took
                entry[2] = max(entry[2], took)

    from vigo.server import service as server_service

    for name in ("freeze_survivors", "heap_sweep"):
        work = getattr(server_service, name)
        setattr(server_service, name,
                lambda work=work, name=name: timed("timed: " + name, work))
    options = Options()
    options.parseOptions(["--config", config])
    service = makeService(options)
    probes = {"stalls": [], "gc": [], "slow_events": slow}
    started = [0.0]

    def collector(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            took = time.perf_counter() - started[0]
            if took > 0.005:
                probes["gc"].append((time.time(), info["generation"], took))

    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        late = now - last[0] - TICK
        last[0] = now
        if late > 0.02:
            probes["stalls"].append((time.time(), late))

    def dump():
        with open(out + ".tmp", "w") as f:
            json.dump(probes, f)
        os.replace(out + ".tmp", out)

    do_read_or_write = reactor._doReadOrWrite
    run_until_current = reactor.runUntilCurrent

    def _doReadOrWrite(selectable, fd, event):
        layers, protocol = [], getattr(selectable, "protocol", None)
        while protocol is not None and len(layers) < 4:
            layers.append(type(protocol).__name__)
            protocol = getattr(protocol, "wrappedProtocol", None)
        kind = "%s(%s)" % (type(selectable).__name__, ">".join(layers))
        return timed(kind, do_read_or_write, selectable, fd, event)

    reactor._doReadOrWrite = _doReadOrWrite
    reactor.runUntilCurrent = lambda: timed("timed calls", run_until_current)
    gc.callbacks.append(collector)
    task.LoopingCall(tick).start(TICK)
    task.LoopingCall(dump).start(2.0)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", dump)
    reactor.run()


TICK = 0.005


class ProbedServer(harness.Server):
    """``harness.Server``, run by ``run_probed_server``."""

    def spawn(self):
        self.probes = os.path.join(self.workdir, "probes.json")
        self.log = open(os.path.join(self.workdir, "server.log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--probed-server", self.config,
             "--probes", self.probes],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir, env=self.env)
        return self


def probed(server, start, end):
    """The probes' figures between wall-clock ``start`` and ``end``."""
    try:
        with open(server.probes) as f:
            probes = json.load(f)
    except (AttributeError, OSError, ValueError):
        return None
    stalls = [late for at, late in probes["stalls"] if start <= at <= end]
    gen2 = [took for at, gen, took in probes["gc"] if start <= at <= end and gen == 2]
    pauses = [took for at, gen, took in probes["gc"] if start <= at <= end]
    seconds = end - start
    return {"seconds": seconds, "stalled_s": sum(stalls),
            "stalls_over_50ms": sum(1 for late in stalls if late > 0.05),
            "stalls_over_100ms": sum(1 for late in stalls if late > 0.1),
            "longest_stall_ms": 1000 * max(stalls, default=0),
            "gc_pause_s": sum(pauses), "gen2_pauses": len(gen2),
            "longest_gen2_ms": 1000 * max(gen2, default=0),
            # Since the server started (not windowed): [count, seconds, longest].
            "slow_events": probes.get("slow_events", {})}


# -- the driver -----------------------------------------------------------------------


def micro(count):
    """On the real envoy-port wiring (``envoy_port``) in this process (a fresh
    one: memory is read as RSS growth): what OpenSSL alone holds for a server
    connection as the TLS layer makes it at accept; then the CPU to accept
    ``count`` connections that never send a byte and to cut them at their
    handshake deadline, and their memory. The objects stay alive till the end,
    so that no measure reuses another's freed memory."""
    import gc
    import socket

    from OpenSSL import SSL
    from twisted.internet import reactor

    from vigo.config import Address, PortLimits
    from vigo.fleet.channel import EnvoyChannelFactory
    from vigo.fleet.fleet import Fleet
    from vigo.fleet.hostcrates import Hostcrates
    from vigo.identity import Identity
    from vigo.server.ports import envoy_port
    from vigo.tls import identity_server_options

    identity = Identity.generate()
    # OpenSSL alone: a server connection as the TLS layer makes it at accept
    # (SSL_new, then a first handshake step that finds nothing to read).
    context = identity_server_options(identity).getContext()
    held, rss4 = [], harness.rss_bytes(os.getpid())
    for _ in range(count):
        connection = SSL.Connection(context, None)
        connection.set_accept_state()
        try:
            connection.do_handshake()
        except SSL.WantReadError:
            pass
        held.append(connection)
    rss5 = harness.rss_bytes(os.getpid())
    fleet = Fleet(None, identity, Hostcrates(), reactor, 15.0, 3)
    limits = PortLimits(handshake=3.0, first_request=30.0, idle=600.0, per_source=count,
                        connections=count)
    port = envoy_port(reactor, Address("127.0.0.1", 0), identity,
                      EnvoyChannelFactory(fleet, None, reactor), limits)
    port.startService()
    guard = port.guard

    def spin(done, timeout=60):
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            reactor.iterate(0.01)

    clients = []
    try:
        gc.collect()
        objects, rss0, cpu0 = len(gc.get_objects()), harness.rss_bytes(os.getpid()), \
            time.process_time()
        for n in range(count):
            client = socket.socket()
            client.setblocking(False)
            client.bind((FLOOD_SOURCES[n % len(FLOOD_SOURCES)], 0))
            client.connect_ex(("127.0.0.1", port.bound()))
            clients.append(client)
            if n % 500 == 499:  # within the listen backlog
                spin(lambda n=n: guard.open > n)
        spin(lambda: guard.open >= count)
        cpu1 = time.process_time()
        gc.collect()
        rss1, objects1 = harness.rss_bytes(os.getpid()), len(gc.get_objects())
        accepted = guard.open
        cpu2 = time.process_time()
        spin(lambda: guard.open == 0)  # each cut at its handshake deadline
        cpu3 = time.process_time()
    finally:
        for client in clients:
            client.close()
        port.stopService()
    del held
    return {"connections": count, "accepted": accepted,
            "accept_us": (cpu1 - cpu0) / count * 1e6, "cut_us": (cpu3 - cpu2) / count * 1e6,
            "rss_kb": (rss1 - rss0) / count / 1024, "gc_objects": (objects1 - objects) / count,
            "openssl_kb": (rss5 - rss4) / count / 1024}


def metrics(server):
    """The server's envoy-port and frame figures from ``/metrics``."""
    context = ssl.create_default_context(cafile=os.path.join(server.data_dir, "api-cert.pem"))
    url = "https://127.0.0.1:%d/metrics" % (server.api_port,)
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        text = response.read().decode()
    figures = {"refused": {}, "frames_refused": {}, "open": None}
    for line in text.splitlines():
        m = re.match(r'vigo_connections_refused_total\{port="envoy",reason="(\w+)"\} (\S+)', line)
        if m:
            figures["refused"][m.group(1)] = int(float(m.group(2)))
        m = re.match(r'vigo_envoy_frames_refused_total\{reason="(\w+)"\} (\S+)', line)
        if m:
            figures["frames_refused"][m.group(1)] = int(float(m.group(2)))
        m = re.match(r'vigo_connections\{port="envoy"\} (\S+)', line)
        if m:
            figures["open"] = int(float(m.group(1)))
    return figures


def flooder_status(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def cpu(pids):
    """CPU seconds of each live PID in ``pids`` (a dict name: pid)."""
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = harness.cpu_seconds(pid)
        except OSError:
            out[name] = None
    return out


def phase(server, token, envoys, interval, window, prefix, others, sample=None):
    """Run ``envoys`` simulated envoys checking in every ``interval`` s for
    ``window`` s (after they enrolled); the sims' summary and each process's
    CPU share (of one core) over the steady window."""
    sims = harness.start_sims(server, token, [envoys], "%gs" % interval, "%ds" % window, prefix)
    try:
        took = harness.wait_until(lambda: connected(server) >= envoys, 300, 0.25)
        if took is None:
            raise RuntimeError("only %d of %d envoys attached" % (connected(server), envoys))
        time.sleep(interval * 1.5)  # past every envoy's first check-in
        pids = dict(others, server=server.pid, sims=sims[0].pid)
        cpu0, t0, wall0 = cpu(pids), time.monotonic(), time.time()
        samples = []
        while sims[0].poll() is None:
            if sample is not None:
                samples.append(sample())
            time.sleep(1.0)
            if time.monotonic() - t0 > window * 0.8:
                break
        cpu1, t1, wall1 = cpu(pids), time.monotonic(), time.time()
        results = harness.sim_results(sims)
    finally:
        for sim in sims:
            if sim.poll() is None:
                sim.kill()
                sim.wait()
    (result,) = results
    shares = {name: (cpu1[name] - cpu0[name]) / (t1 - t0)
              for name in pids if cpu0.get(name) is not None and cpu1.get(name) is not None}
    return {"sim": result, "enroll_s": took, "cpu_share": shares, "samples": samples,
            "probes": probed(server, wall0, wall1)}


def say(phase):
    sim = phase["sim"]
    print("  p50 %.1f ms, p99 %.1f ms; %d check-ins, %d errors; CPU (share of a core): %s"
          % (sim["p50_ms"], sim["p99_ms"], sim["checkins"], sum(sim["errors"].values()),
             ", ".join("%s %.0f%%" % (k, 100 * v) for k, v in sorted(phase["cpu_share"].items()))),
          flush=True)
    if phase["probes"]:
        print("  probes: %s" % (phase["probes"],), flush=True)


def connected(server):
    return server.status()["envoys"]["connected"]


def run(args):
    from vigo.tokens import EnrollmentToken

    figures = {"machine": harness.machine(), "date": datetime.date.today().isoformat(),
               "envoys": args.envoys, "interval_s": args.interval, "window_s": args.window,
               "bad": args.bad, "mix": args.mix, "dribble_every_s": args.dribble_every,
               "garbage_hold_s": args.garbage_hold, "settle_s": args.settle, "quick": args.quick,
               "probe": args.probe}
    print("micro: accept and cut %d silent connections in process" % (args.micro,), flush=True)
    figures["micro"] = m = json.loads(subprocess.check_output(
        [sys.executable, os.path.abspath(__file__), "--micro-run", str(args.micro)]))
    print("  accept %.0f us, cut %.0f us of CPU each; %.1f KB and %.0f tracked objects each "
          "(OpenSSL alone: %.1f KB)" % (m["accept_us"], m["cut_us"], m["rss_kb"],
                                       m["gc_objects"], m["openssl_kb"]), flush=True)
    kind = ProbedServer if args.probe else harness.Server
    server = kind(interval="%gs" % args.interval).start()
    flooder = None
    status_path = os.path.join(server.workdir, "flooder.json")
    try:
        token = server.token_for(2 * args.envoys)
        fingerprint = EnrollmentToken.decode(token).fingerprint

        print("quiet: %d envoys every %g s for %d s" % (args.envoys, args.interval, args.window),
              flush=True)
        quiet = phase(server, token, args.envoys, args.interval, args.window, "q", {})
        figures["quiet"] = quiet
        say(quiet)
        harness.wait_until(lambda: connected(server) == 0, 30, 0.25)
        time.sleep(2.0)
        before = metrics(server)
        rss_before = harness.rss_bytes(server.pid)

        print("flood: %d bad connections (%s)" % (args.bad, ", ".join(
            "%d%% %s" % (share * 100, kind) for kind, share in args.mix.items())), flush=True)
        env = dict(os.environ)
        conf = os.path.join(server.workdir, "openssl-x25519.cnf")
        with open(conf, "w") as f:
            f.write(harness.X25519_ONLY)
        env["OPENSSL_CONF"] = conf
        log = open(os.path.join(server.workdir, "flooder.log"), "ab")
        flood_started = time.monotonic()
        flooder = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--flooder",
             "--server", "127.0.0.1:%d" % (server.envoy_port,), "--fingerprint", fingerprint,
             "--bad", str(args.bad), "--dribble-every", str(args.dribble_every),
             "--garbage-hold", str(args.garbage_hold), "--ramp", str(args.ramp),
             "--mix", ",".join("%s=%r" % item for item in args.mix.items()),
             "--status", status_path],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        held = harness.wait_until(
            lambda: flooder_status(status_path).get("open", 0) >= args.bad * 0.99, 300, 0.25)
        if held is None:
            raise RuntimeError("the flooder holds only %s connections"
                               % (flooder_status(status_path).get("open"),))
        print("  %d held after %.1f s; holding %d s before measuring memory"
              % (flooder_status(status_path)["open"], held, args.settle), flush=True)
        time.sleep(args.settle)
        rss_samples = []
        for _ in range(5):
            rss_samples.append(harness.rss_bytes(server.pid))
            time.sleep(0.5)
        held_status = flooder_status(status_path)
        held_metrics = metrics(server)
        rss_held = sorted(rss_samples)[len(rss_samples) // 2]
        figures["rss_before_mb"] = rss_before / 2**20
        figures["rss_held_mb"] = rss_held / 2**20
        figures["held_by_flooder"] = held_status.get("open")
        figures["held_by_server"] = held_metrics["open"]
        figures["rss_per_bad_kb"] = (rss_held - rss_before) / held_metrics["open"] / 1024
        print("  server RSS %.0f MB -> %.0f MB with %d held (server: %d open): %.1f KB each"
              % (figures["rss_before_mb"], figures["rss_held_mb"], held_status.get("open"),
                 held_metrics["open"], figures["rss_per_bad_kb"]), flush=True)

        def sample():
            return {"flooder_open": flooder_status(status_path).get("open"),
                    "server_open": metrics(server)["open"]}

        flood = phase(server, token, args.envoys, args.interval, args.window, "f",
                      {"flooder": flooder.pid}, sample)
        figures["flood"] = flood
        after = metrics(server)
        figures["flood_s"] = time.monotonic() - flood_started
        figures["flooder"] = flooder_status(status_path)
        figures["rss_end_mb"] = harness.rss_bytes(server.pid) / 2**20
        figures["refused"] = {k: v - before["refused"].get(k, 0)
                              for k, v in after["refused"].items()}
        figures["frames_refused"] = {k: v - before["frames_refused"].get(k, 0)
                                     for k, v in after["frames_refused"].items()}
        opens = [s["flooder_open"] for s in flood["samples"] if s["flooder_open"] is not None]
        figures["held_during_flood"] = {"min": min(opens), "mean": sum(opens) / len(opens)} \
            if opens else None
        say(flood)
        print("  the flooder held %s during it" % (figures["held_during_flood"],), flush=True)
    finally:
        if flooder is not None and flooder.poll() is None:
            flooder.send_signal(signal.SIGTERM)
            try:
                flooder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                flooder.kill()
                flooder.wait()
        server.stop()
    q, f = figures["quiet"]["sim"]["p99_ms"], figures["flood"]["sim"]["p99_ms"]
    figures["p99_ratio"] = f / q if q else None
    print("flood p99 / quiet p99 = %.2f (target <= 2)" % (figures["p99_ratio"],))
    print("refused: %s; frames refused: %s" % (figures["refused"], figures["frames_refused"]))
    return figures


def _ok(value, target):
    return "met" if value is not None and value <= target else "**missed**"


def write(figures, path=DOC):
    q, f = figures["quiet"], figures["flood"]
    errors = {name: sum(figures[name]["sim"]["errors"].values()) for name in ("quiet", "flood")}
    refusals = {name: sum(figures[name]["sim"]["refusals"].values())
                for name in ("quiet", "flood")}
    checkins = {name: figures[name]["sim"]["checkins"] for name in ("quiet", "flood")}
    share = {name: figures[name]["cpu_share"] for name in ("quiet", "flood")}
    fl = figures["flooder"]
    m = figures["micro"]
    lifetimes = ", ".join("%s %.1f s (max %.1f s)" % (kind, life[1] / life[0], life[2])
                          for kind, life in sorted(fl.get("lifetime", {}).items()) if life[0])
    mix = ", ".join("%d%% %s" % (share * 100, kind) for kind, share in figures["mix"].items())
    refused = ", ".join("%s %s" % (k, "{:,}".format(v))
                        for k, v in sorted(figures["refused"].items()) if v)
    frames = ", ".join("%s %s" % (k, "{:,}".format(v))
                       for k, v in sorted(figures["frames_refused"].items()) if v)
    held = figures["held_during_flood"]
    intro = textwrap.fill(
        "`python bench/flood.py`%(quick)s, %(date)s, %(machine)s. One real `twistd -n vigo` "
        "server with the shipped limits (handshake 10 s, first_request 30 s, per_source "
        "20,000, connections 50,000); %(envoys)d simulated envoys (`vigo-envoy sim`, X25519) "
        "checking in every %(interval)g s, for %(window)d s quietly, then again (new envoys, "
        "same load) while a separate flooder process holds %(bad)s bad connections on the "
        "envoy port from 20 loopback addresses, reopening at once each one the server cuts: "
        "%(mix)s. Dribblers send a ClientHello a byte every %(dribble)g s; garbage clients "
        "finish TLS, wait 0-%(hold2)g s, send one garbage frame (oversize, unknown type, "
        "malformed, CheckIn before Attach) and are hung up on. Server, flooder and simulator "
        "share the same 2 cores. Raw figures: `bench/results/flood.json`." % {
            "quick": " --quick" if figures["quick"] else "", "date": figures["date"],
            "machine": figures["machine"], "envoys": figures["envoys"],
            "interval": figures["interval_s"], "window": figures["window_s"],
            "bad": "{:,}".format(figures["bad"]), "mix": mix,
            "dribble": figures["dribble_every_s"], "hold2": 2 * figures["garbage_hold_s"]},
        width=84)
    text = """## Flood

%(intro)s

| figure | ours | target |
|---|---|---|
| check-in p99, flood / quiet | **%(ratio).2f** (%(fp99).1f ms / %(qp99).1f ms) | <= 2 (%(ratio_ok)s) |
| check-in p50, quiet / flood | %(qp50).1f ms / %(fp50).1f ms | -- |
| check-ins answered, quiet / flood; errors; refusals | %(qn)s / %(fn)s; %(qe)d / %(fe)d; %(qr)d / %(fr)d | no errors |
| bad connections held during the flood (flooder's count, min / mean) | %(hmin)s / %(hmean)s | %(bad)s |
| server resident memory per bad connection held | **%(rss_per).1f KB** (%(rss0).0f MB idle, %(rss1).0f MB with %(held_server)s open) | -- |
| server CPU, quiet / flood (share of one core) | %(sq).0f%% / %(sf).0f%% | -- |
| flooder CPU / simulator CPU during the flood | %(ff).0f%% / %(simf).0f%% (quiet: simulator %(simq).0f%%) | -- |
| refused or cut by the envoy port during the flood (`vigo_connections_refused_total`) | %(refused)s | -- |
| frames refused (`vigo_envoy_frames_refused_total`) | %(frames)s | -- |
| bad connections' lifetime as the flooder saw it (mean) | %(lifetimes)s | -- |
| in process, one connection that never sends a byte: server CPU to accept it / to cut it at its deadline | %(accept_us).0f us / %(cut_us).0f us | -- |
| in process, its memory; what OpenSSL alone holds for it; objects the cyclic collector tracks | %(micro_kb).1f KB; %(openssl_kb).1f KB; %(gc_objects).0f | -- |

The refusals and frames are counted over the whole flood (%(flood_s).0f s: the ramp,
%(settle)d s held before memory is read, the measured window). The in-process lines
are `micro()` in bench/flood.py: %(micro_n)s connections accepted by the real
envoy-port wiring in one process, cut at a 3 s handshake deadline.
""" % {
        "intro": intro, "bad": "{:,}".format(figures["bad"]),
        "ratio": figures["p99_ratio"], "fp99": f["sim"]["p99_ms"], "qp99": q["sim"]["p99_ms"],
        "ratio_ok": _ok(figures["p99_ratio"], 2.0),
        "qp50": q["sim"]["p50_ms"], "fp50": f["sim"]["p50_ms"],
        "qn": "{:,}".format(checkins["quiet"]), "fn": "{:,}".format(checkins["flood"]),
        "qe": errors["quiet"], "fe": errors["flood"],
        "qr": refusals["quiet"], "fr": refusals["flood"],
        "hmin": "{:,}".format(held["min"]) if held else "--",
        "hmean": "{:,.0f}".format(held["mean"]) if held else "--",
        "rss_per": figures["rss_per_bad_kb"], "rss0": figures["rss_before_mb"],
        "rss1": figures["rss_held_mb"], "held_server": "{:,}".format(figures["held_by_server"]),
        "sq": 100 * share["quiet"].get("server", 0), "sf": 100 * share["flood"].get("server", 0),
        "ff": 100 * share["flood"].get("flooder", 0), "simf": 100 * share["flood"].get("sims", 0),
        "simq": 100 * share["quiet"].get("sims", 0),
        "refused": refused or "none", "frames": frames or "none", "lifetimes": lifetimes,
        "flood_s": figures["flood_s"], "settle": figures["settle_s"],
        "micro_n": "{:,}".format(m["connections"]), "accept_us": m["accept_us"],
        "cut_us": m["cut_us"], "micro_kb": m["rss_kb"], "openssl_kb": m["openssl_kb"],
        "gc_objects": m["gc_objects"],
    }
    report.replace_section(path, "flood", text)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(figures, f, indent=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--no-write", action="store_true",
                        help="do not update docs/benchmarks.md and bench/results/flood.json")
    parser.add_argument("--envoys", type=int, help="legitimate envoys (default 300; quick 50)")
    parser.add_argument("--interval", type=float, default=1.0, help="their check-in interval")
    parser.add_argument("--window", type=int, help="seconds of each phase (default 20; quick 8)")
    parser.add_argument("--bad", type=int, help="bad connections (default 10000; quick 1000)")
    parser.add_argument("--dribble-every", type=float, default=1.0,
                        help="seconds between two bytes of a dribbler")
    parser.add_argument("--garbage-hold", type=float, default=10.0,
                        help="mean seconds a garbage client waits after TLS")
    parser.add_argument("--mix", type=parse_mix, default=MIX,
                        help="shares of bad connections by kind, e.g. silent=0.7,dribbler=0.2,"
                             "garbage=0.1 (the default)")
    parser.add_argument("--ramp", type=int, default=2000, help="bad connections opened a second")
    parser.add_argument("--settle", type=int, default=15,
                        help="seconds the flood is held before memory is read")
    parser.add_argument("--probe", action="store_true",
                        help="run the server with probes of its reactor stalls and collector "
                             "pauses (not the headline figures: they are read without)")
    # The flooder's own options (python bench/flood.py --flooder ...).
    parser.add_argument("--flooder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--fingerprint", help=argparse.SUPPRESS)
    parser.add_argument("--status", help=argparse.SUPPRESS)
    parser.add_argument("--probed-server", help=argparse.SUPPRESS)
    parser.add_argument("--probes", help=argparse.SUPPRESS)
    parser.add_argument("--micro-run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.micro_run:
        print(json.dumps(micro(args.micro_run)))
        return
    if args.probed_server:
        run_probed_server(args.probed_server, args.probes)
        return
    if args.flooder:
        run_flooder(args)
        return
    args.envoys = args.envoys or (50 if args.quick else 300)
    args.window = args.window or (8 if args.quick else 20)
    args.bad = args.bad or (1000 if args.quick else 10000)
    args.micro = 1000 if args.quick else 4000
    if args.quick:
        args.settle = min(args.settle, 5)
    figures = run(args)
    if not args.no_write:
        write(figures)
        print("figures written to docs/benchmarks.md and bench/results/flood.json")


if __name__ == "__main__":
    main()
