"""Real ``twistd -n vigo`` processes and CLI runs, for integration tests.

A server is ready when it logs its ready line; tests wait for that event (and
for process exit), never for time to pass. Processes are stopped by the PID
this harness started, never by name.
"""

import json
import os
import signal
import socket
import sys

import yaml
from twisted.internet import defer, error, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue

BIN = os.path.dirname(sys.executable)
READY = b"server "
TIMEOUT = 60.0


def tool(name):
    return os.path.join(BIN, name)


def environment(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGO_")}
    env.update(extra)
    return env


def write_config(directory, **sections):
    """A server.yaml on loopback with ephemeral ports; ``sections`` add keys."""
    os.makedirs(directory, exist_ok=True)
    config = {
        "server": {
            "data_dir": os.path.join(directory, "data"),
            "hostname": "localhost",
            "envoy_listen": "127.0.0.1:0",
            "api_listen": "127.0.0.1:0",
        },
        "checkin": {"interval": "15s"},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    path = os.path.join(directory, "server.yaml")
    with open(path, "w") as f:
        json.dump(config, f)  # JSON is YAML
    return path


def free_ports(count):
    """``count`` distinct loopback ports that were free a moment ago.

    Held open together so they differ, then closed so the server can take
    them; a restart on the same config then keeps its addresses.
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ServerProcess(protocol.ProcessProtocol):
    """One ``twistd -n vigo`` child process."""

    def __init__(self, config_path, args=(), env=None, prefix=()):
        self.config_path = config_path
        self.args = list(args)
        self.env = dict(env or {})  # e.g. VIGO_FAILPOINTS (vigo.failpoints)
        self.prefix = list(prefix)  # a command that execs twistd (ip netns exec NS): same PID
        self.output = b""
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.exit_code = None
        self.exit_signal = None  # the signal that ended it (twistd re-raises SIGTERM)
        self.run = None
        self._timeout = None
        self._waiting = []  # (text, Deferred): see wait_for

    @property
    def data_dir(self):
        with open(self.config_path) as f:
            return yaml.safe_load(f)["server"]["data_dir"]  # JSON, or a restored YAML

    def start(self):
        argv = self.prefix + [tool("twistd"), "-n", "--pidfile=", "vigo", "--config",
                                  self.config_path]
        self.transport = reactor.spawnProcess(
            self, argv[0], argv + self.args, env=environment(**self.env),
            path=os.path.dirname(self.config_path),
        )
        self._timeout = reactor.callLater(TIMEOUT, self._too_slow)
        return self.ready

    def _too_slow(self):
        self._timeout = None
        if not self.ready.called:
            self.ready.errback(RuntimeError("server not ready in time:\n" + self.output.decode()))
            self.kill()

    def wait_for(self, text, after=0):
        """A Deferred that fires once ``text`` (bytes) is in the output (after
        offset ``after``), failing if the process ends first."""
        if text in self.output[after:]:
            return defer.succeed(self)
        d = defer.Deferred()
        self._waiting.append((text, after, d))
        return d

    def outReceived(self, data):
        self.output += data
        waiting, self._waiting = self._waiting, []
        for text, after, d in waiting:
            if text in self.output[after:]:
                d.callback(self)
            else:
                self._waiting.append((text, after, d))
        if not self.ready.called and b" ready: " in self.output:
            with open(os.path.join(self.data_dir, "run.json")) as f:
                self.run = json.load(f)
            if self._timeout is not None and self._timeout.active():
                self._timeout.cancel()
            self.ready.callback(self)

    errReceived = outReceived

    def processEnded(self, reason):
        self.exit_code = reason.value.exitCode
        self.exit_signal = getattr(reason.value, "signal", None)
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if not self.ready.called:
            self.ready.errback(RuntimeError(
                "server exited (%r) before ready:\n%s" % (self.exit_code, self.output.decode())))
        waiting, self._waiting = self._waiting, []
        for text, _, d in waiting:
            d.errback(RuntimeError("server exited before it said %r:\n%s"
                                   % (text, self.output.decode()[-4000:])))
        self.ended.callback(self.exit_code)

    def signal(self, name):
        try:
            self.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass
        return self.ended

    def stop(self):
        """SIGTERM, and a Deferred that fires when it has exited."""
        return self.signal("TERM")

    def kill(self):
        """SIGKILL: no chance to flush anything."""
        return self.signal("KILL")

    @property
    def envoy_server(self):
        return "127.0.0.1:%d" % (self.run["envoy_port"],)


class ToolProcess(protocol.ProcessProtocol):
    """A long-running console script (``vigo-envoy sim`` under a test), stopped
    by its PID with ``stop()`` (``stop_signal``); ``output`` holds what it printed."""

    stop_signal = "KILL"  # it keeps nothing worth flushing

    def __init__(self, name, *args, prefix=()):
        self.argv = list(prefix) + [tool(name)] + [str(a) for a in args]
        self.output = b""
        self.ended = defer.Deferred()

    def start(self, path=None):
        self.transport = reactor.spawnProcess(self, self.argv[0], self.argv,
                                              env=environment(), path=path)
        return self

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)

    def stop(self):
        """Send ``stop_signal``; a Deferred of its exit."""
        try:
            self.transport.signalProcess(self.stop_signal)
        except error.ProcessExitedAlready:
            pass
        return self.ended


def run_tool(name, *args, prefix=(), **env):
    """(stdout, stderr, exit code) of one run of a console script; ``prefix``
    is a command it runs under (e.g. ``ip netns exec NS``), which must exec it."""
    argv = list(prefix) + [tool(name)] + [str(a) for a in args]
    return getProcessOutputAndValue(
        argv[0], argv[1:], env=environment(**env), reactor=reactor
    )


def vigocli(data_dir, *args):
    return run_tool("vigocli", "--data-dir", data_dir, *args)


__all__ = ["ServerProcess", "ToolProcess", "free_ports", "run_tool", "vigocli", "write_config",
           "signal"]
