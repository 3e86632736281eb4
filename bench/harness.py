"""Shared plumbing for benchmarks: real server processes, their API, /proc.

Benchmarks are plain programs (not tests): they start real ``twistd -n vigo``
and ``vigo-envoy sim`` processes on loopback, measure, stop what they started
by PID, and print and record figures.
"""

import json
import os
import platform
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.path.dirname(sys.executable)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Offer only classic X25519 in the TLS handshake (see docs/benchmarks.md):
# OpenSSL reads this at start-up; pyOpenSSL has no call for key-exchange groups.
X25519_ONLY = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Groups = X25519
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count):
    """``count`` distinct loopback ports, free a moment ago, below the kernel's
    ephemeral range: the thousands of outgoing connections of this bench (and of
    whatever else runs here) take their ports from that range, and one could
    take a server's port while it restarts."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    candidates = list(range(max(10000, low - 12000), low)) if low > 11024 else []
    random.shuffle(candidates)
    held = []
    try:
        for port in candidates:
            if len(held) == count:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
        while len(held) < count:  # no room below the range: any free port
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def machine():
    return "%s, %d cores, Python %s" % (platform.machine(), os.cpu_count(), platform.python_version())


def cpu_seconds(pid):
    """User + system CPU seconds of a process (threads included)."""
    with open("/proc/%d/stat" % (pid,)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid):
    with open("/proc/%d/statm" % (pid,)) as f:
        return int(f.read().split()[1]) * PAGE


class Server:
    """A ``twistd -n vigo`` process on fixed loopback ports in a temp directory."""

    def __init__(self, workdir=None, interval="15s", env=None, ports=None, sections=None):
        """``ports``: the envoy and API ports (default: free ones); ``sections``:
        more of server.yaml (e.g. ``peers``)."""
        self.workdir = workdir or tempfile.mkdtemp(prefix="vigo-bench-")
        self.data_dir = os.path.join(self.workdir, "data")
        self.envoy_port, self.api_port = ports or (free_port(), free_port())
        self.config = os.path.join(self.workdir, "server.yaml")
        with open(self.config, "w") as f:
            json.dump({
                "server": {"data_dir": self.data_dir, "hostname": "localhost",
                           "envoy_listen": "127.0.0.1:%d" % self.envoy_port,
                           "api_listen": "127.0.0.1:%d" % self.api_port},
                "checkin": {"interval": interval},
                **(sections or {}),
            }, f)
        self.env = env
        self.process = None
        self.log = None

    args = ()  # extra options after "twistd -n vigo"

    def start(self, timeout=120):
        """Spawn the server and wait until it is ready."""
        return self.spawn().wait_ready(timeout)

    def spawn(self):
        """Start the process without waiting (so several can start together)."""
        self.log = open(os.path.join(self.workdir, "server.log"), "ab")
        self.process = subprocess.Popen(
            [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "vigo", *self.args,
             "--config", self.config],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir, env=self.env,
        )
        return self

    def wait_ready(self, timeout=120):
        """Wait until run.json names our process, then read the admin token."""
        deadline = time.monotonic() + timeout
        run = os.path.join(self.data_dir, "run.json")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited; see %s" % (self.log.name,))
            try:
                with open(run) as f:
                    if json.load(f)["pid"] == self.process.pid:
                        break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("server not ready in %d s" % (timeout,))
        with open(os.path.join(self.data_dir, "admin-token")) as f:
            self.token = f.read().strip()
        self._ssl = ssl.create_default_context(cafile=os.path.join(self.data_dir, "api-cert.pem"))
        return self

    @property
    def pid(self):
        return self.process.pid

    def api(self, method, path, body=None):
        request = urllib.request.Request(
            "https://127.0.0.1:%d%s" % (self.api_port, path), method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": "Bearer " + self.token,
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=self._ssl, timeout=30) as response:
            return json.load(response)

    def token_for(self, uses):
        return self.api("POST", "/api/v1/tokens", {"uses": uses})["token"]

    def status(self):
        return self.api("GET", "/api/v1/status")

    def stop(self, sig=signal.SIGTERM):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)
        if self.log is not None:
            self.log.close()


def start_sims(server, token, counts, interval, duration, prefix, x25519_only=True):
    """One ``vigo-envoy sim`` process per entry of ``counts``; the Popen list."""
    env = dict(os.environ)
    if x25519_only:
        path = os.path.join(server.workdir, "openssl-x25519.cnf")
        with open(path, "w") as f:
            f.write(X25519_ONLY)
        env["OPENSSL_CONF"] = path
    sims = []
    for n, count in enumerate(counts):
        sims.append(subprocess.Popen(
            [os.path.join(BIN, "vigo-envoy"), "sim", "--server", "127.0.0.1:%d" % server.envoy_port,
             "--token", token, "--count", str(count), "--interval", interval,
             "--duration", duration, "--json", "--concurrency", "100",
             "--hostname-template", "%s-%d-{n}.bench.example.com" % (prefix, n)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=server.workdir))
    return sims


def sim_results(sims, timeout=900):
    results = []
    for sim in sims:
        out, _ = sim.communicate(timeout=timeout)
        results.append(json.loads(out.decode()) if out.strip() else {})
    return results


def wait_until(predicate, timeout, step=0.1):
    """Poll ``predicate`` until true; the seconds it took, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None
