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
the server runs on without it (D-Bus is optional, the admin API is not).
"""

import json

from twisted.internet import defer
from twisted.logger import Logger
from txdbus import client, objects
from txdbus.error import RemoteError
from txdbus.interface import DBusInterface, Method, Signal

from vigo.fleet.refusal import Refusal

BUS_NAME = "org.vigo.Server"
OBJECT_PATH = "/org/vigo/Server"
INTERFACE = "org.vigo.Server1"


class Refused(RemoteError):
    """A refusal, as the D-Bus error ``org.vigo.Server1.Refused``."""

    dbusErrorName = INTERFACE + ".Refused"


class ServerObject(objects.DBusObject):
    """``/org/vigo/Server``: the server's status and force-push."""

    dbusInterfaces = [DBusInterface(
        INTERFACE,
        Method("Status", returns="s"),
        Method("ForcePush", arguments="s", returns="s"),
        Signal("EnvoyEnrolled", "ss"),
    )]

    def __init__(self, server):
        objects.DBusObject.__init__(self, OBJECT_PATH)
        self.server = server

    def dbus_Status(self):
        return json.dumps(self.server.status(), sort_keys=True)

    def dbus_ForcePush(self, envoy):
        d = defer.maybeDeferred(self.server.fleet.force_push, envoy)

        def refused(failure):
            failure.trap(Refusal)
            raise Refused("%s: %s" % (failure.value.code, failure.value.reason))

        return d.addErrback(refused)

    def enrolled(self, envoy_id, hostname):
        self.emitSignal("EnvoyEnrolled", envoy_id, hostname)


class DbusControl:
    """The server's D-Bus presence: connect, export, own the name; ``stop``."""

    log = Logger()

    def __init__(self, reactor, server, bus):
        self.reactor = reactor
        self.server = server
        self.bus = bus
        self.connection = None
        self.object = ServerObject(server)

    async def start(self):
        """Connect and own ``org.vigo.Server``; True if it did (else logged)."""
        try:
            self.connection = await client.connect(self.reactor, self.bus)
            self.connection.exportObject(self.object)
            await self.connection.requestBusName(BUS_NAME)
        except Exception as e:
            self.log.warn("D-Bus control is off: cannot use bus {bus!r}: {why}", bus=self.bus,
                          why=e)
            self.stop()
            return False
        self.server.enrollment.listeners.append(self.object.enrolled)
        self.log.info("D-Bus control on bus {bus!r} as {name}", bus=self.bus, name=BUS_NAME)
        return True

    def stop(self):
        listeners = self.server.enrollment.listeners
        if self.object.enrolled in listeners:
            listeners.remove(self.object.enrolled)
        if self.connection is not None:
            self.connection.disconnect()
            self.connection = None
