"""One Vigo server: its parts wired together as a Twisted service.

``VigoServer`` is a ``MultiService``. Starting it opens the store, rebuilds the
fleet index, and only then starts listening, so no envoy is ever answered from
a half-loaded index. Stopping it stops listening, writes behind what is dirty
and closes the store.
"""

import gc
import json
import os
import sys

from twisted.application import internet, service
from twisted.internet import defer, endpoints
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

from vigo import __version__
from vigo.api.app import AdminAPI
from vigo.api.auth import ApiTokens
from vigo.api.site import api_site
from vigo.config import Address
from vigo.fleet.channel import EnvoyChannelFactory
from vigo.fleet.enrollment import Enrollment
from vigo.fleet.fleet import Fleet
from vigo.fleet.hostcrates import Hostcrates
from vigo.fleet.ownership import StandaloneOwnership
from vigo.fleet.port import listen_eager
from vigo.identity import load_or_create_identity, write_private_file
from vigo.metrics import fleet_registry
from vigo.store import Store, StoreError
from vigo.tls import api_server_options, ensure_api_certificate, identity_server_options


class UnbufferedTLSFactory(TLSMemoryBIOFactory):
    """TLS without Twisted's small-write aggregation.

    The envoy channel writes one whole frame per event; aggregating it means a
    timer per write for nothing (measured: ~10 % of a check-in's CPU).
    """

    protocol = TLSMemoryBIOProtocol


LISTEN_BACKLOG = 4096  # a reconnect storm of 10,000 envoys overflows Twisted's 50
FLUSH_INTERVAL = 10.0  # seconds between write-behind batches
RUN_FILE = "run.json"
HEAP_SWEEP_INTERVAL = 600.0  # seconds between full sweeps of the frozen heap


def heap_sweep():
    """Collect everything once, then freeze the survivors again.

    Thousands of held TLS connections are hundreds of thousands of objects; a
    full pass of the cyclic collector over them stalls the reactor for
    150-300 ms, which showed as check-in p99. So the server freezes its
    long-lived heap (at start-up and after every write-behind flush) and the
    collector's automatic passes see only young objects; a connection that
    closes while frozen is reclaimed here, at most ``HEAP_SWEEP_INTERVAL``
    later, in one pause every ten minutes instead of several a minute.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class VigoServer(service.MultiService):
    """The standalone server (and, later, the fleet half of a spanner bolt)."""

    log = Logger()

    def __init__(self, config, reactor, exit_on_failure=False):
        service.MultiService.__init__(self)
        self.config = config
        self.reactor = reactor
        self.exit_on_failure = exit_on_failure
        self.clock = reactor
        data_dir = config.server.data_dir
        self.identity = load_or_create_identity(data_dir)
        self.hostcrates = (
            Hostcrates.from_file(config.hostcrates) if config.hostcrates else Hostcrates()
        )
        self.store = Store.in_directory(data_dir, reactor)
        self.fleet = Fleet(
            self.store, self.identity, self.hostcrates, reactor,
            config.checkin.interval, config.checkin.offline_after,
        )
        self.envoy_address = config.server.envoy_listen
        self.ownership = StandaloneOwnership(self.identity, self.envoy_address)
        self.enrollment = Enrollment(
            self.fleet, self.store, self.identity, self.ownership, reactor, self.envoy_address
        )
        self.spanner = None
        if config.spanner.mode == "spanner":
            from vigo.spanner.service import SpannerService

            self.spanner = SpannerService(self)
            self.spanner.setServiceParent(self)
        self.api_tokens = ApiTokens(self.store, reactor)
        self.registry = fleet_registry(self.fleet, self.spanner)
        self.api = AdminAPI(self)
        self.started_at = None
        self.ports = {}
        self.ready = defer.Deferred()
        self.dbus = None  # vigo.dbus_control.DbusControl when dbus.bus is set
        internet.TimerService(FLUSH_INTERVAL, self._flush).setServiceParent(self)
        internet.TimerService(config.checkin.interval, self.fleet.sweep).setServiceParent(self)
        internet.TimerService(HEAP_SWEEP_INTERVAL, heap_sweep).setServiceParent(self)

    def startService(self):
        service.Service.startService(self)
        self.started_at = self.clock.seconds()
        d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.ready.callback, self._failed)

    async def _start(self):
        self.store.open()
        loaded = await self.fleet.load()
        # The index lives as long as the server: keep the cyclic collector from
        # rescanning it (tens of thousands of records) on every full pass.
        gc.collect()
        gc.freeze()
        await self.api_tokens.load(self.config.server.data_dir)
        for child in list(self):
            child.startService()
        envoy_port = await self._listen_envoys()
        self.envoy_address = self._advertised(self.config.server.envoy_listen, envoy_port)
        self.ownership = StandaloneOwnership(self.identity, self.envoy_address)
        api_port = await self._listen_api()
        self.ports = {"envoy": envoy_port, "api": api_port}
        if self.spanner is not None:
            from vigo.spanner.enrollment_routing import EnrollmentRouter
            from vigo.spanner.ownership import SpannerOwnership

            self.ownership = SpannerOwnership(self.spanner, self.ownership.owner_of(""))
            # Any bolt takes a Register: the owner enrolls, the minter redeems.
            self.enrollment.router = EnrollmentRouter(
                self.spanner.facade, lambda bolt_id: self.spanner.key_of(bolt_id) is not None)
            await self.spanner.start()
            self.ports["peer"] = self.spanner.peer_port.getHost().port
        self.enrollment.ownership = self.ownership
        self.enrollment.envoy_address = self.envoy_address
        if self.config.dbus.bus != "none":
            from vigo.dbus_control import DbusControl

            self.dbus = DbusControl(self.reactor, self, self.config.dbus.bus)
            self.dbus.start()  # in the background: a wedged bus must not hold us up
        self._write_run_file()
        self.log.info(
            "vigo {mode} server {id} ready: {n} envoy(s); envoys on {envoy}, API on {api}",
            mode=self.config.spanner.mode, id=self.identity.id, n=loaded,
            envoy=envoy_port, api=self.api_url(),
        )
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

    async def _listen_envoys(self):
        listen = self.config.server.envoy_listen
        self._envoy_port = listen_eager(
            self.reactor, listen.port,
            UnbufferedTLSFactory(
                identity_server_options(self.identity), False,
                EnvoyChannelFactory(self.fleet, self.enrollment, self.clock),
            ),
            LISTEN_BACKLOG, listen.host,
        )
        return self._envoy_port.getHost().port

    async def _listen_api(self):
        listen = self.config.server.api_listen
        if self.config.server.tls is not None:
            cert, key = self.config.server.tls.cert_file, self.config.server.tls.key_file
        else:
            cert, key = ensure_api_certificate(
                self.config.server.data_dir, self.config.server.hostname, listen.host
            )
        endpoint = endpoints.SSL4ServerEndpoint(
            self.reactor, listen.port, api_server_options(cert, key),
            backlog=128, interface=listen.host,
        )
        self._api_port = await endpoint.listen(api_site(self.api.resource()))
        return self._api_port.getHost().port

    def _advertised(self, listen, port):
        """The address clients should dial: the listen host, or our hostname
        when listening on every interface."""
        host = listen.host
        if host in ("0.0.0.0", "::", ""):
            host = self.config.server.hostname
        return Address(host, port)

    def advertised_addresses(self, peer_port):
        """This server's envoy, API and peer addresses as others should dial them."""
        api = self._advertised(self.config.server.api_listen, self.ports["api"])
        peer = self._advertised(self.config.spanner.peer_listen, peer_port.getHost().port)
        return {"envoy": str(self.envoy_address), "api": str(api), "peer": str(peer)}

    def gossip_counters(self):
        """What this bolt tells the federation about itself twice a second."""
        counts = self.fleet.counts()
        stats = self.fleet.stats
        return {
            "envoys_owned": counts["active"], "envoys_online": counts["online"],
            "checkins": sum(stats.checkins.values()), "enrollments": stats.enrollments,
            "pushes": stats.pushes, "load_permille": 0, "status": "active",
        }

    def api_url(self):
        host = self.config.server.api_listen.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return "https://%s:%d" % (host, self.ports.get("api", self.config.server.api_listen.port))

    def _write_run_file(self):
        """Where this server listens, for ``vigocli --data-dir`` and tests."""
        info = {
            "server_id": self.identity.id,
            "pid": os.getpid(),
            "api_url": self.api_url(),
            "envoy_port": self.ports["envoy"],
            "envoy_address": str(self.envoy_address),
            "mode": self.config.spanner.mode,
            "peer_port": self.ports.get("peer"),
        }
        path = os.path.join(self.config.server.data_dir, RUN_FILE)
        if os.path.exists(path):
            os.unlink(path)
        write_private_file(path, json.dumps(info, indent=2).encode("utf-8"))

    def _flush(self):
        if self.running and self.ports:
            # Whatever survived this long (held connections, their records) is
            # long-lived: keep the collector's full passes off it (see heap_sweep).
            gc.freeze()
            return self.fleet.flush()

    @defer.inlineCallbacks
    def stopService(self):
        for port in ("_envoy_port", "_api_port"):
            listening = getattr(self, port, None)
            if listening is not None:
                yield listening.stopListening()
        self.fleet.hang_up_all()
        if self.dbus is not None:
            self.dbus.stop()
        run_file = os.path.join(self.config.server.data_dir, RUN_FILE)
        if self.ports and os.path.exists(run_file):
            os.unlink(run_file)
        yield service.MultiService.stopService(self)
        if self.ports:
            yield self.fleet.flush()
        yield self.store.close()

    def status(self):
        """The server at a glance, for ``/api/v1/status`` and ``vigocli status``."""
        now = self.clock.seconds()
        return {
            "server_id": self.identity.id,
            "fingerprint": self.identity.fingerprint,
            "hostname": self.config.server.hostname,
            "mode": self.config.spanner.mode,
            "version": __version__,
            "uptime": 0.0 if self.started_at is None else now - self.started_at,
            "envoy_address": str(self.envoy_address),
            "checkin_interval": self.config.checkin.interval,
            "envoys": self.fleet.counts(),
            "checkins": dict(self.fleet.stats.checkins),
            "spanner": None if self.spanner is None else self.spanner.status(),
        }
