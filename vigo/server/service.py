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
"""

import gc
import json
import os
import sys

from twisted.application import internet, service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from vigo.identity import write_private_file
from vigo.server.heap import FREEZE_INTERVAL, HEAP_SWEEP_INTERVAL, freeze_survivors, heap_sweep
from vigo.store import StoreError

FLUSH_INTERVAL = 10.0  # seconds between write-behind batches
RUN_FILE = "run.json"
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
        for interval, work in ((FLUSH_INTERVAL, self._flush),
                               (config.checkin.interval, fleet.sweep),
                               (FREEZE_INTERVAL, freeze_survivors),
                               (HEAP_SWEEP_INTERVAL, heap_sweep)):
            timer = internet.TimerService(interval, work)
            timer.clock = reactor  # not the global one
            timer.setServiceParent(self)

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
        if reason.check(CannotListenError, StoreError):
            why = reason.getErrorMessage()
            self.log.critical("vigo server cannot start: {why}", why=why)
        else:
            why = "%s: %s" % (reason.type.__name__, reason.getErrorMessage())
            self.log.failure("vigo server failed to start", reason)
        self.ready.errback(reason)
        self.ready.addErrback(lambda _: None)  # reported above
        if self.exit_on_failure:
            # twistd has no exit status of its own: a server that could not
            # start must not look like one that stopped cleanly.
            sys.__stderr__.write("twistd vigo: cannot start: %s\n" % (why,))  # not the log
            self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        if self.reactor.running:
            self.reactor.stop()

    def _run_file(self):
        return os.path.join(self.config.server.data_dir, RUN_FILE)

    def _write_run_file(self):
        """Where this server listens, for ``vigocli --data-dir`` and tests."""
        ports = self.advertised.ports
        info = {
            "server_id": self.identity.id,
            "pid": os.getpid(),
            "api_url": self.advertised.api_url(),
            "envoy_port": self.advertised.bound("envoy"),
            "envoy_address": str(self.advertised.envoy()),
            "mode": self.config.spanner.mode,
            "peer_port": ports["peer"].bound() if "peer" in ports else None,
            # For vigocli backup create: the config to back up with the data.
            "config_file": self.config.source,
        }
        path = self._run_file()
        if os.path.exists(path):
            os.unlink(path)
        write_private_file(path, json.dumps(info, indent=2).encode("utf-8"))

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
