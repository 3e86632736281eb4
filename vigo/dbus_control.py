"""Local control over D-Bus (``dbus.bus``), with txdbus.

A server started with ``dbus.bus`` set (``session``, ``system`` or a D-Bus
address) owns the bus name ``org.vigo.Server`` and exports one object,
``/org/vigo/Server``, with the interface ``org.vigo.Server1``:

* ``Status() -> s``: what ``GET /api/v1/status`` answers, as JSON text;
* ``ForcePush(s envoy) -> s``: force-push one envoy of this server (id or
  hostname): ``now`` or ``next_attach``; refused with the D-Bus error
  ``org.vigo.Server1.Refused`` whose message is ``code: reason``;
* the signal ``EnvoyEnrolled(s envoy_id, s hostname)`` when an envoy enrolls
  here.

Who may call it is the bus's policy: ``etc/dbus-org.vigo.Server.conf`` for the
system bus lets root (and the ``vigo`` user, which owns the name) call it. The
connection is made at start-up; a bus that cannot be reached is logged and
the server runs on without it (D-Bus is optional, the admin API is not): the
server does not wait for the bus to become ready.
"""

import json

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from txdbus import client, objects
from txdbus.error import RemoteError
from txdbus.interface import DBusInterface, Method, Signal

from vigo.interfaces.errors import Refusal

BUS_NAME = "org.vigo.Server"
OBJECT_PATH = "/org/vigo/Server"
INTERFACE = "org.vigo.Server1"


class Refused(RemoteError):
    """A refusal, as the D-Bus error ``org.vigo.Server1.Refused``."""

    dbusErrorName = INTERFACE + ".Refused"


class ServerObject(objects.DBusObject):
    """``/org/vigo/Server``: the server's ``status()`` and ``force_push(envoy)``."""

    dbusInterfaces = [DBusInterface(
        INTERFACE,
        Method("Status", returns="s"),
        Method("ForcePush", arguments="s", returns="s"),
        Signal("EnvoyEnrolled", "ss"),
    )]

    def __init__(self, status, force_push):
        objects.DBusObject.__init__(self, OBJECT_PATH)
        self._status = status
        self._force_push = force_push

    def dbus_Status(self):
        return json.dumps(self._status(), sort_keys=True)

    def dbus_ForcePush(self, envoy):
        d = defer.maybeDeferred(self._force_push, envoy)

        def refused(failure):
            failure.trap(Refusal)
            raise Refused("%s: %s" % (failure.value.code, failure.value.reason))

        return d.addErrback(refused)

    def enrolled(self, envoy_id, hostname):
        self.emitSignal("EnvoyEnrolled", envoy_id, hostname)


#: Seconds to connect to the bus and own the name.
CONNECT_TIMEOUT = 10.0


class _Factory(client.DBusClientFactory):
    """txdbus's client factory, remembering the protocols it built."""

    def __init__(self):
        client.DBusClientFactory.__init__(self)
        self.built = []

    def buildProtocol(self, addr):
        protocol = client.DBusClientFactory.buildProtocol(self, addr)
        self.built.append(protocol)
        return protocol


class DbusControl(service.Service):
    """The server's D-Bus presence, a service: connect, export, own the name.
    The server does not wait for it: ``started`` fires with True once the name
    is owned, False when the bus could not be used (logged).

    ``bus`` is ``dbus.bus``; ``status()`` the server at a glance;
    ``force_push(envoy)`` a Deferred of ``now`` or ``next_attach`` (or a
    ``Refusal``); ``enrolled`` the list of listeners enrollment calls with
    ``(envoy_id, hostname)``, which the signal joins while connected.
    """

    log = Logger()

    name = "dbus"

    def __init__(self, reactor, bus, status, force_push, enrolled):
        self.reactor = reactor
        self.bus = bus
        self.connection = None
        self.object = ServerObject(status, force_push)
        self._enrolled = enrolled
        self.started = defer.Deferred()
        self._stopped = False

    def startService(self):
        service.Service.startService(self)
        self.start()

    def stopService(self):
        service.Service.stopService(self)
        self.stop()

    def start(self):
        """Connect and own ``org.vigo.Server`` in the background; ``started``."""
        d = defer.ensureDeferred(self._start())
        d.addErrback(lambda f: self.log.failure("D-Bus control failed to start", f) or False)
        d.chainDeferred(self.started)
        return self.started

    async def _connect(self):
        """``txdbus.client.connect``, keeping hold of what it builds so that a
        bus that never answers can be hung up on."""
        from txdbus import endpoints

        factory = _Factory()
        connected = factory.getConnection()
        last = None
        for endpoint in endpoints.getDBusEndpoints(self.reactor, self.bus):
            try:
                await endpoint.connect(factory)
                break
            except Exception as e:
                last = e
        else:
            raise ConnectionError("no address of the bus answers: %s" % (last,))
        try:
            return await connected.addTimeout(CONNECT_TIMEOUT, self.reactor)
        except defer.TimeoutError:
            for protocol in factory.built:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()
            raise ConnectionError("no answer within %g s" % (CONNECT_TIMEOUT,)) from None

    async def _start(self):
        try:
            self.connection = await self._connect()
            if self._stopped:
                return self._give_up("the server stopped meanwhile")
            self.connection.exportObject(self.object)
            naming = self.connection.requestBusName(BUS_NAME)
            await naming.addTimeout(CONNECT_TIMEOUT, self.reactor)
        except Exception as e:
            return self._give_up(e)
        if self._stopped:
            return self._give_up("the server stopped meanwhile")
        self._enrolled.append(self.object.enrolled)
        self.log.info("D-Bus control on bus {bus!r} as {name}", bus=self.bus, name=BUS_NAME)
        return True

    def _give_up(self, why):
        self.log.warn("D-Bus control is off: cannot use bus {bus!r}: {why}", bus=self.bus,
                      why=why or "no answer")
        self._disconnect()
        return False

    def stop(self):
        self._stopped = True
        self._disconnect()

    def _disconnect(self):
        if self.object.enrolled in self._enrolled:
            self._enrolled.remove(self.object.enrolled)
        if self.connection is not None:
            self.connection.disconnect()
            self.connection = None
