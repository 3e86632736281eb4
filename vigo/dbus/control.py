"""The exported object ``/org/vigo/Server`` and the service that offers it on a bus."""

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from txdbus import client, objects

from vigo.dbus.errors import FAILED, DbusError, refused
from vigo.dbus.spec import (
    BUS_NAME,
    INTERFACE,
    OBJECT_PATH,
    PROPERTIES,
    PROPERTIES_INTERFACE,
    SERVER,
)
from vigo.dbus.values import status_dict, typed
from vigo.interfaces.errors import Refusal

_DBUS_ERROR = "org.freedesktop.DBus.Error."


def server_properties(server_id, mode, counts, replication=lambda: None):
    """A callable of the values of ``org.vigo.Server1``'s properties.

    ``counts()`` is the fleet's envoy counts (``Fleet.counts``);
    ``replication()`` the server's ``PrimaryReplication`` with HA on, else
    None: a server without HA is the primary of a set of one, at epoch 0 (as
    ``GET /api/v1/server/status`` says).
    """
    def properties():
        figures = counts()
        replica = replication()
        if replica is None:
            role, epoch = "primary", 0
        else:
            role, epoch = ("fenced" if replica.fenced else "primary"), replica.epoch
        return {"ServerId": server_id, "Mode": mode, "Role": role, "Epoch": epoch,
                "EnvoysTotal": figures["total"], "EnvoysActive": figures["active"],
                "EnvoysOnline": figures["online"], "EnvoysConnected": figures["connected"]}
    return properties


class ServerObject(objects.DBusObject):
    """``/org/vigo/Server``: ``org.vigo.Server1`` and its properties.

    ``status()`` is the server at a glance; ``force_push(envoy)`` a Deferred
    of ``now`` or ``next_attach`` (or a ``Refusal``); ``properties()`` the
    values of the properties (``server_properties``). ``refresh()`` samples
    them and emits ``PropertiesChanged`` with those that changed since the
    last sample; ``Get`` and ``GetAll`` refresh first, so a caller is never
    told a value the signal has not carried.
    """

    log = Logger()

    # Only these: txdbus's base class declares the Properties interface
    # without argument names, ``PROPERTIES`` replaces it.
    dbusInterfaces = [SERVER, PROPERTIES]

    def __init__(self, status, force_push, properties):
        objects.DBusObject.__init__(self, OBJECT_PATH)
        self._status = status
        self._force_push = force_push
        self._properties = properties
        self._types = {prop.name: prop.sig for prop in SERVER.properties.values()}
        self.published = None

    def getInterfaces(self):
        return iter(self.dbusInterfaces)

    # -- org.vigo.Server1 ---------------------------------------------------------------

    def dbus_Status(self):
        try:
            return status_dict(self._status())
        except Exception:
            self.log.failure("D-Bus Status() failed")
            raise DbusError(FAILED, "Status failed on the server; its log says why") from None

    def dbus_ForcePush(self, envoy):
        d = defer.maybeDeferred(self._force_push, envoy)

        def failed(failure):
            if failure.check(Refusal):
                raise refused(failure.value)
            self.log.failure("D-Bus ForcePush({envoy!r}) failed", failure, envoy=envoy)
            raise DbusError(FAILED, "ForcePush failed on the server; its log says why")

        return d.addErrback(failed)

    def enrolled(self, envoy_id, hostname):
        self.emitSignal("EnvoyEnrolled", envoy_id, hostname)

    # -- properties ---------------------------------------------------------------------

    def refresh(self):
        """Sample the properties; emit ``PropertiesChanged`` with those that
        changed since the last sample (none the first time). Their values."""
        values = {name: typed(self._types[name], value)
                  for name, value in self._properties().items()}
        before, self.published = self.published, values
        if before is not None:
            changed = {name: value for name, value in values.items()
                       if before.get(name) != value}
            if changed:
                self.emitSignal("PropertiesChanged", INTERFACE, changed, [],
                                interface=PROPERTIES_INTERFACE)
        return values

    def getAllProperties(self, interfaceName):
        # What txdbus's InterfacesAdded and GetManagedObjects say.
        return dict(self.refresh()) if interfaceName in (INTERFACE, "") else {}

    def _known(self, interface_name, property_name):
        if interface_name not in (INTERFACE, ""):
            raise DbusError(_DBUS_ERROR + "UnknownInterface",
                            "no interface %r here" % (interface_name,))
        if property_name not in self._types:
            raise DbusError(_DBUS_ERROR + "UnknownProperty",
                            "no property %r in %s" % (property_name, INTERFACE))

    @objects.dbusMethod(PROPERTIES_INTERFACE, "Get")
    def _get(self, interface_name, property_name):
        self._known(interface_name, property_name)
        return self.refresh()[property_name]

    @objects.dbusMethod(PROPERTIES_INTERFACE, "GetAll")
    def _get_all(self, interface_name):
        if interface_name not in (INTERFACE, ""):
            raise DbusError(_DBUS_ERROR + "UnknownInterface",
                            "no interface %r here" % (interface_name,))
        return dict(self.refresh())

    @objects.dbusMethod(PROPERTIES_INTERFACE, "Set")
    def _set(self, interface_name, property_name, value):
        self._known(interface_name, property_name)
        raise DbusError(_DBUS_ERROR + "PropertyReadOnly",
                        "%s.%s is read-only" % (INTERFACE, property_name))


#: Seconds to connect to the bus and own the name.
CONNECT_TIMEOUT = 10.0
#: Seconds between two samples of the properties (PropertiesChanged lags a
#: change by at most this). A sample counts the fleet's envoys, on the
#: reactor: about 4 ms for 50,000 envoys (measured), 0.1% of its time.
PROPERTIES_INTERVAL = 5.0


class _Factory(client.DBusClientFactory):
    """txdbus's client factory, remembering the protocols it built."""

    def __init__(self):
        client.DBusClientFactory.__init__(self)
        self.built = []

    def buildProtocol(self, addr):
        protocol = client.DBusClientFactory.buildProtocol(self, addr)
        self.built.append(protocol)
        return protocol


class PropertySampler:
    """``object.refresh()`` every ``interval`` seconds on ``clock``, from
    ``start()`` to ``stop()``; a sample that fails is logged, the next one runs."""

    log = Logger()

    def __init__(self, clock, obj, interval):
        self._loop = task.LoopingCall(self._sample, obj)
        self._loop.clock = clock
        self.interval = interval

    def _sample(self, obj):
        try:
            obj.refresh()
        except Exception:
            self.log.failure("sampling the D-Bus properties failed")

    def start(self):
        if not self._loop.running:
            self._loop.start(self.interval, now=True)

    def stop(self):
        if self._loop.running:
            self._loop.stop()


class DbusControl(service.Service):
    """The server's D-Bus presence, a service: connect, export, own the name,
    sample the properties. The server does not wait for it: ``started`` fires
    with True once the name is owned, False when the bus could not be used
    (logged).

    ``bus`` is ``dbus.bus``; ``status``, ``force_push`` and ``properties`` are
    ``ServerObject``'s; ``enrolled`` the list of listeners enrollment calls with
    ``(envoy_id, hostname)``, which the signal joins while connected.
    """

    log = Logger()

    name = "dbus"

    def __init__(self, reactor, bus, status, force_push, enrolled, properties):
        self.reactor = reactor
        self.bus = bus
        self.connection = None
        self.object = ServerObject(status, force_push, properties)
        self.sampler = PropertySampler(reactor, self.object, PROPERTIES_INTERVAL)
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
        self.sampler.start()
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
        self.sampler.stop()
        if self.object.enrolled in self._enrolled:
            self._enrolled.remove(self.object.enrolled)
        if self.connection is not None:
            self.connection.disconnect()
            self.connection = None
