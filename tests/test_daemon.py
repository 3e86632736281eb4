"""``twistd vigo`` as an operator runs it: daemonized, signalled, and its log.

A daemonized twistd's parent exits once the server is ready (0) or could not
start (non-zero, the reason on stderr, no pidfile left behind); the daemon
takes SIGHUP (a reload) and SIGTERM (a clean stop: pidfile removed). These run
the installed ``twistd`` and wait on events: the launching process's exit, the
daemon's exit (a pidfd), its log file growing (inotify), never on sleeps.

The log: no line per HTTP or PB client connection ("Starting factory ..."),
and access lines in the ``vigo.api.access`` namespace.
"""

import json
import os
import random
import socket

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial import unittest
from twisted.web.resource import Resource
from zope.interface import implementer

from tests.events import rosters_of, until
from tests.processes import run_tool, write_config
from tests.serverkit import start_server
from tests.test_spanner_membership import spanner_config
from vigo.api.site import api_site

DEADLINE = 30.0


@implementer(IReadDescriptor)
class _Exited:
    """Fires ``ended`` when the process a pidfd names has exited."""

    def __init__(self, pid):
        self.fd = os.pidfd_open(pid)
        self.ended = defer.Deferred()
        reactor.addReader(self)

    def fileno(self):
        return self.fd

    def doRead(self):
        reactor.removeReader(self)
        os.close(self.fd)
        self.ended.callback(None)

    def connectionLost(self, reason):
        pass

    def logPrefix(self):
        return "pidfd"


def exited(pid):
    """A Deferred that fires once process ``pid`` (not our child) has exited."""
    return _Exited(pid).ended


def _deadline(d, what):
    timer = reactor.callLater(DEADLINE, lambda: d.called or d.errback(
        AssertionError("not within %g s: %s" % (DEADLINE, what))))
    d.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
    return d


def text_in_file(path, text, after=0):
    """A Deferred that fires once ``text`` is in file ``path`` (past offset
    ``after``), checked now and whenever the file is written (inotify)."""
    from twisted.internet import inotify

    d = defer.Deferred()
    notifier = inotify.INotify()
    notifier.startReading()

    def check(*ignored):
        if d.called:
            return
        with open(path, "rb") as f:
            f.seek(after)
            if text in f.read():
                d.callback(None)

    notifier.watch(FilePath(path), mask=inotify.IN_MODIFY, callbacks=[check])
    check()
    d.addBoth(lambda result: (notifier.loseConnection(), result)[1])
    return _deadline(d, "%r in %s" % (text, path))


class DaemonTests(unittest.TestCase):
    """A daemonized ``twistd vigo`` (no ``-n``), with a pidfile and a log file."""

    timeout = 90

    def setUp(self):
        if not hasattr(os, "pidfd_open"):
            raise unittest.SkipTest("needs os.pidfd_open (Linux 5.3, Python 3.9)")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.pidfile = os.path.join(self.directory, "twistd.pid")
        self.logfile = os.path.join(self.directory, "twistd.log")

    def twistd(self, config, *options):
        """Run twistd to start the daemon; ``(stdout, stderr, exit code)`` of
        the launching process, which exits once the daemon said how it went."""
        return run_tool("twistd", "--pidfile", self.pidfile, "--logfile", self.logfile,
                        *options, "vigo", "--config", config)

    def daemon_pid(self):
        with open(self.pidfile) as f:
            pid = int(f.read())
        self.addCleanup(self.kill, pid)
        return pid

    def kill(self, pid):
        """Cleanup: the daemon this test started, by its PID, if it still runs."""
        try:
            ended = exited(pid)
        except ProcessLookupError:
            return None
        os.kill(pid, 9)
        return ended

    def occupied(self):
        taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        return taken.getsockname()[1]

    @defer.inlineCallbacks
    def test_a_failed_start_exits_non_zero_and_leaves_no_pidfile(self):
        port = self.occupied()
        config = write_config(self.directory, server={"envoy_listen": "127.0.0.1:%d" % (port,)})
        out, err, code = yield self.twistd(config)
        self.assertNotEqual(code, 0, err)
        self.assertIn(b"cannot start: Couldn't listen on 127.0.0.1:%d" % (port,), err)
        self.assertFalse(os.path.exists(self.pidfile), "a pidfile naming a dead process")
        with open(self.logfile) as f:
            self.assertIn("vigo server cannot start: Couldn't listen", f.read())

    @defer.inlineCallbacks
    def test_a_failed_start_in_the_foreground_exits_1_and_removes_its_pidfile(self):
        port = self.occupied()
        config = write_config(self.directory, server={"envoy_listen": "127.0.0.1:%d" % (port,)})
        out, err, code = yield run_tool("twistd", "-n", "--pidfile", self.pidfile, "vigo",
                                        "--config", config)
        self.assertEqual(code, 1, out + err)
        self.assertIn(b"twistd vigo: cannot start: Couldn't listen", out + err)
        self.assertFalse(os.path.exists(self.pidfile))

    @defer.inlineCallbacks
    def test_started_reloaded_on_sighup_and_stopped(self):
        config = write_config(self.directory)
        out, err, code = yield self.twistd(config)
        self.assertEqual(code, 0, err)
        pid = self.daemon_pid()
        with open(os.path.join(self.directory, "data", "run.json")) as f:
            self.assertEqual(json.load(f)["pid"], pid)  # ready before the launcher exited
        ended = exited(pid)
        with open(config) as f:
            data = json.load(f)
        data["checkin"]["interval"] = "5s"
        data["peers"] = {"sync": 1}
        with open(config, "w") as f:
            json.dump(data, f)
        mark = os.path.getsize(self.logfile)
        os.kill(pid, 1)  # SIGHUP
        yield text_in_file(self.logfile, b"needs a restart: peers.sync", mark)
        with open(self.logfile, "rb") as f:
            f.seek(mark)
            log = f.read().decode()
        self.assertIn("SIGHUP: reloaded %s: checkin.interval 15s -> 5s" % (config,), log)
        self.assertFalse(ended.called)
        out, err, code = yield run_tool("vigocli", "--data-dir",
                                        os.path.join(self.directory, "data"), "status")
        self.assertEqual(code, 0, err)
        os.kill(pid, 15)  # SIGTERM
        yield _deadline(ended, "the daemon's exit")
        self.assertFalse(os.path.exists(self.pidfile))


# -- the log ------------------------------------------------------------------------------------


class Captured:
    """Every log event published while it listens."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self):
        return [formatEvent(event) for event in self.events]


class ClientFactoryNoiseTests(unittest.TestCase):
    """Two real bolts on loopback: joining (PB), snapshot pulls (HTTPS) and
    peer calls log no factory starting or stopping."""

    timeout = 60

    def setUp(self):
        self.group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        self.port = random.randrange(20000, 60000)

    @defer.inlineCallbacks
    def bolt(self, name):
        return (yield start_server(self, spanner_config(self.mktemp(), name, self.group,
                                                        self.port)))

    @defer.inlineCallbacks
    def test_no_line_per_client_connection(self):
        a = yield self.bolt("a")
        b = yield self.bolt("b")
        captured = Captured(self)  # the ports listen: only client connections from here
        yield a.spanner.admin.init()
        invite = yield a.spanner.admin.invite(3600)
        yield b.spanner.admin.join(invite["token"])
        yield until(lambda: len(a.spanner.roster.bolt_ids()) == 2, *rosters_of(a),
                    what="a holds b's row")
        for _ in range(3):
            yield b.spanner.puller.pull(a.identity.id)
            yield a.spanner.puller.pull(b.identity.id)
        yield a.spanner.admin.act("b", "ping", {})
        yield b.spanner.puller.stopService()  # closes its pooled connections
        yield task.deferLater(reactor, 0, lambda: None)
        self.assertEqual(b.spanner.puller.pulls["failed"], 0)
        noise = [line for line in captured.lines()
                 if line.startswith(("Starting factory", "Stopping factory"))]
        self.assertEqual(noise, [])


class AccessLogTests(unittest.TestCase):
    """Access lines are events of the ``vigo.api.access`` namespace."""

    @defer.inlineCallbacks
    def test_access_lines_have_their_own_namespace(self):
        from twisted.web.client import Agent, readBody

        root = Resource()
        site = api_site(root)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        captured = Captured(self)
        response = yield Agent(reactor).request(
            b"GET", b"http://127.0.0.1:%d/nothing?token=vgot_S3CRET" % (port.getHost().port,))
        yield readBody(response)
        access = [event for event in captured.events
                  if "GET /nothing" in formatEvent(event)]
        self.assertEqual(len(access), 1, captured.lines())
        [event] = access
        self.assertEqual(event["log_namespace"], "vigo.api.access")
        self.assertIn('"GET /nothing?token=REDACTED HTTP/1.1" 404', formatEvent(event))
        self.assertNotIn("S3CRET", formatEvent(event))
