"""One server process as a service tree, started in an order that cannot route wrong.

``VigoServer`` is the root ``MultiService`` the wiring (``vigo.server.
standalone``, ``vigo.server.spanner``) fills. Starting it:

1. opens the store and runs the *loaders* in order (the fleet index, the API
   tokens, a bolt's roster): everything an answer depends on is in memory;
2. only then starts its children in order: the ``ports`` (envoy, API, a
   bolt's peer port; a port that cannot be bound fails the start here), the
   timers, and whatever else the wiring added (a bolt's peer clients, drain,
   member services; D-Bus);
3. runs the *after-start* hooks (a restarted bolt republishes its row), writes
   ``data_dir/run.json`` (for ``vigocli --data-dir``) and says it is ready.

So no envoy is ever answered from a half-loaded index or roster: enrollment,
ownership and routing are built whole by the wiring, before anything listens.
Stopping stops listening first, hangs up on envoys, stops the children,
writes behind what is dirty and closes the store.

``VigoProcess`` is what ``twistd vigo`` runs around the root service (a
``VigoServer``, or a ``ServerHost`` with HA on): SIGHUP reloads the config
(``vigo.server.reload``); a daemonized twistd reports the start only once the
server is ready (so a start that fails exits non-zero); a failed start stops
the process with exit status 1 after twistd's own clean-up (its pidfile).
"""

import atexit
import gc
import json
import os
import signal
import sys

from twisted.application import internet, service
from twisted.internet import defer
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure

from vigo.identity import write_private_file
from vigo.server.heap import FREEZE_INTERVAL, HEAP_SWEEP_INTERVAL, freeze_survivors, heap_sweep
from vigo.server.log_level import LEVEL
from vigo.server.reload import Reloader, reload_tree
from vigo.store import StoreError

FLUSH_INTERVAL = 10.0  # seconds between write-behind batches
RUN_FILE = "run.json"
def write_run_file(config, identity, advertised, **more):
    """``data_dir/run.json``: where this server listens (and ``more``), for
    ``vigocli --data-dir`` and tests."""
    info = {
        "server_id": identity.id,
        "pid": os.getpid(),
        "api_url": advertised.api_url(),
        "envoy_port": advertised.bound("envoy"),
        "envoy_address": str(advertised.envoy()),
        "mode": config.spanner.mode,
        # For vigocli backup create: the config to back up with the data.
        "config_file": config.source,
        **more,
    }
    path = os.path.join(config.server.data_dir, RUN_FILE)
    if os.path.exists(path):
        os.unlink(path)
    write_private_file(path, json.dumps(info, indent=2).encode("utf-8"))


class VigoServer(service.MultiService):
    """The root service of one server (see the module docstring).

    ``reactor`` is the reactor; ``config`` the validated config; ``identity``,
    ``store`` and ``fleet`` the server's; ``advertised`` its ``Advertised``
    addresses; ``status`` its ``ServerStatus``; ``loaders`` and ``after_start``
    callables returning Deferreds (or values), run in order. With
    ``exit_on_failure`` (twistd), a failed start exits the process non-zero.
    The wiring sets the parts it built as attributes (``api``, ``enrollment``,
    a bolt's ``spanner``) for tools and tests to reach.
    """

    log = Logger()

    def __init__(self, reactor, config, identity, store, fleet, advertised, status,
                 loaders=(), after_start=(), exit_on_failure=False):
        service.MultiService.__init__(self)
        self.reactor = reactor
        self.config = config
        self.identity = identity
        self.store = store
        self.fleet = fleet
        self.advertised = advertised
        self.status = status
        self.loaders = list(loaders)
        self.after_start = list(after_start)
        self.exit_on_failure = exit_on_failure
        self.ready = defer.Deferred()
        self.listening = False
        self.ports = service.MultiService()
        self.ports.setName("ports")
        self.ports.setServiceParent(self)
        self._sweeper = None
        for interval, work in ((FLUSH_INTERVAL, self._flush),
                               (config.checkin.interval, fleet.sweep),
                               (FREEZE_INTERVAL, freeze_survivors),
                               (HEAP_SWEEP_INTERVAL, heap_sweep)):
            timer = self._timer(interval, work)
            if work == fleet.sweep:
                self._sweeper = timer

    def _timer(self, interval, work):
        timer = internet.TimerService(interval, work)
        timer.clock = self.reactor  # not the global one
        timer.setServiceParent(self)
        return timer

    def add_port(self, port):
        """Listen on ``port`` (a ``PortService``) with the others, and advertise it."""
        self.advertised.add(port).setServiceParent(self.ports)
        return port

    # -- start -----------------------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self.status.started()
        d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.ready.callback, self._failed)

    async def _start(self):
        self.store.open()
        for load in self.loaders:
            await defer.maybeDeferred(load)
        if not self.running:  # stopped while loading: listen on nothing
            return self
        # What was loaded lives as long as the server: keep the cyclic collector
        # from rescanning it (tens of thousands of records) on every full pass.
        gc.collect()
        gc.freeze()
        for child in list(self):
            child.startService()
        self.listening = True
        for hook in self.after_start:
            await defer.maybeDeferred(hook)
        self._write_run_file()
        self.log.info(
            "vigo {mode} server {id} ready: {n} envoy(s); envoys on {envoy}, API on {api}",
            mode=self.config.spanner.mode, id=self.identity.id, n=len(self.fleet.index),
            envoy=self.advertised.bound("envoy"), api=self.advertised.api_url())
        return self

    def _failed(self, reason):
        why = failure_line(reason)
        if reason.check(CannotListenError, StoreError):
            self.log.critical("vigo server cannot start: {why}", why=why)
        else:
            self.log.failure("vigo server failed to start", reason)
        self.ready.errback(reason)
        self.ready.addErrback(lambda _: None)  # reported above
        if self.exit_on_failure:
            # A server that could not start must not look like one that
            # stopped cleanly: twistd cleans up (its pidfile), then exits 1.
            sys.__stderr__.write("twistd vigo: cannot start: %s\n" % (why,))  # not the log
            exit_status_at_exit(1)
        stop_reactor(self.reactor)

    # -- reload (SIGHUP) ------------------------------------------------------------------

    def reload(self, config):
        """Apply what ``config`` changes that can change live (``vigo.server.
        reload``); a Deferred of its ``Report``."""
        return defer.ensureDeferred(reload_tree(self, config))

    def set_sweep_interval(self, interval):
        """Run the offline sweep every ``interval`` seconds from now on."""
        old, self._sweeper = self._sweeper, self._timer(interval, self.fleet.sweep)
        old.disownServiceParent()

    def _run_file(self):
        return os.path.join(self.config.server.data_dir, RUN_FILE)

    def _write_run_file(self):
        ports = self.advertised.ports
        write_run_file(self.config, self.identity, self.advertised,
                       peer_port=ports["peer"].bound() if "peer" in ports else None)

    # -- background work ----------------------------------------------------------------

    def _flush(self):
        if self.running and self.listening:
            return self.fleet.flush()

    # -- stop ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self.ports.running:
            yield self.ports.stopService()
        self.fleet.hang_up_all()
        run_file = self._run_file()
        if self.listening and os.path.exists(run_file):
            os.unlink(run_file)
        try:
            for child in reversed(list(self)):
                if child.running:  # a failed start may have left some never started
                    try:
                        yield defer.maybeDeferred(child.stopService)
                    except Exception:
                        self.log.failure("stopping {child} failed", child=child.name or child)
            if self.listening:
                self.listening = False
                yield self.fleet.flush()
        finally:
            yield self.store.close()


def failure_line(reason):
    """One line saying why a start failed."""
    if reason.check(CannotListenError, StoreError):
        return reason.getErrorMessage()
    return "%s: %s" % (reason.type.__name__, reason.getErrorMessage())


def stop_reactor(reactor):
    """Stop ``reactor`` (once it runs, if it does not yet: a start that
    fails at once fails before twistd runs it), unless it is stopping."""
    if not reactor.running:
        reactor.callWhenRunning(stop_reactor, reactor)
        return
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


_at_exit = {}


def exit_status_at_exit(status, last=None):
    """Make this process exit with ``status`` once it would otherwise exit
    (cleanly, 0): after twistd's clean-up (its pidfile removed), which offers
    no exit status of its own. ``last()``, if given, runs just before."""
    if not _at_exit:
        atexit.register(_exit_now)
    _at_exit["status"] = status
    if last is not None:
        _at_exit.setdefault("last", []).append(last)


def _exit_now():
    for last in _at_exit.get("last", ()):
        try:
            last()
        except Exception:  # noqa: S110 - exiting: nothing more to do about it
            pass
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: S110 - a closed stream: nothing to flush
            pass
    os._exit(_at_exit["status"])


#: twistd writes this to its status pipe when the daemon started (it exits 0).
_STARTED = b"0"


class VigoProcess(service.MultiService):
    """The service ``twistd vigo`` runs: the root service ``server`` (a
    ``VigoServer`` or a ``ServerHost``) and what the process needs around it.

    * SIGHUP reloads the config: ``load()`` returns the config file's config
      again (``vigo.server.reload.config_loader``); the handler runs the
      reload on the reactor thread (``callFromThread``);
    * a daemonized twistd's parent waits on a status pipe, and twistd says
      "started" as soon as the services are started, before any port is
      bound: this takes the pipe over (``twistd_options``, twistd's own
      options) and writes to it once ``server`` is ready, or fails, so a
      start that fails exits non-zero;
    * a failed start stops the reactor, and the process exits 1 after
      twistd removed its pidfile (and only then tells a daemon's parent, so
      that no pidfile is left when the parent exits).

    ``signals`` is the ``signal`` module and ``exit_status`` sets the
    process's exit status (tests give fakes).
    """

    log = Logger()

    def __init__(self, server, reactor, load, twistd_options=None, signals=signal,
                 exit_status=exit_status_at_exit, log_level=None):
        service.MultiService.__init__(self)
        self.server = server
        self.log_level = LEVEL if log_level is None else log_level
        self.reactor = reactor
        self.reloader = Reloader(server, load)
        self._options = twistd_options
        self._signals = signals
        self._exit_status = exit_status
        self._handling = False  # SIGHUP
        self._pipe = None
        server.setServiceParent(self)

    def startService(self):
        # log.level, in front of twistd's observers (which exist by now).
        self.log_level.install()
        self.log_level.set_level(self.server.config.log.level)
        self._pipe = self._take_status_pipe()
        self._signals.signal(self._signals.SIGHUP, self._sighup)
        self._handling = True
        ready = self.server.ready  # before the start: it may fail at once
        ready.addBoth(self._settled)
        service.MultiService.startService(self)

    def stopService(self):
        # Stopping: SIGHUP is ignored (its default would kill the process
        # before twistd removed its pidfile).
        if self._handling:
            self._signals.signal(self._signals.SIGHUP, self._signals.SIG_IGN)
            self._handling = False
        return service.MultiService.stopService(self)

    def _sighup(self, signum, frame):
        # A signal handler runs between two bytecodes of the reactor thread:
        # do the work on the reactor's next turn.
        if self.running:
            self.reactor.callFromThread(self.reloader.reload)

    def _take_status_pipe(self):
        """twistd's status pipe (a daemon's parent waits on it), taken from
        twistd so that it says nothing before the server is ready."""
        options = self._options
        if options is None or options.get("statusPipe") is None:
            return None
        pipe = options["statusPipe"]
        options["statusPipe"] = None
        return pipe

    def _report(self, message):
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            try:
                os.write(pipe, message[:100])  # twistd's parent reads 100 bytes
            finally:
                os.close(pipe)

    def _settled(self, result):
        if isinstance(result, Failure):
            why = b"1 cannot start: " + failure_line(result).encode("utf-8", "backslashreplace")
            self._exit_status(1, lambda: self._report(why))
            stop_reactor(self.reactor)
            return None  # the server logged it
        self._report(_STARTED)
        self.reloader.started()
        return result
