"""The server's listening ports, as services, and the addresses it advertises.

Each port is a ``PortService``: a child of the server's service tree that
listens when the tree starts it and stops listening when the tree stops it
(the envoy port with eager TCP writes, ``vigo.fleet.port``; the API and the
peer port plain TCP), each over TLS and bounded by a ``PortGuard``
(``vigo.server.limits``: connection caps before TLS, handshake, first-request
and idle deadlines inside it). Listening is synchronous, so a port that cannot
be bound fails the start at once, naming the address.

``Advertised`` is where clients should dial this server: each port's listen
host, or the server's hostname when it listens on every interface, with the
port it is bound to (a configured port 0 becomes a real one once bound).
Enrollment tokens, Registered answers, redirects and a bolt's roster row all
carry these.
"""

from twisted.application import service
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

from vigo.config import Address
from vigo.fleet.port import listen_eager
from vigo.server.limits import PortGuard
from vigo.tls import identity_server_options

#: A reconnect storm of 10,000 envoys overflows Twisted's default backlog of 50.
ENVOY_BACKLOG = 4096
API_BACKLOG = 128
_EVERY_INTERFACE = ("0.0.0.0", "::", "")


class UnbufferedTLSFactory(TLSMemoryBIOFactory):
    """TLS without Twisted's small-write aggregation.

    The envoy channel writes one whole frame per event; aggregating it means a
    timer per write for nothing (measured: ~10 % of a check-in's CPU).
    """

    protocol = TLSMemoryBIOProtocol


class PortService(service.Service):
    """One listening port: ``listen()`` (which returns an ``IListeningPort``)
    when started, ``stopListening`` when stopped; ``guard`` is its
    ``PortGuard`` (its idle sweep runs while the port listens). With
    ``hang_up``, stopping also hangs up on every connection it accepted, so
    that peers do not wait on a server that stopped."""

    def __init__(self, name, listen, guard=None, hang_up=False):
        self.setName(name)
        self._listen = listen
        self.guard = guard
        self._hang_up = hang_up
        self.port = None

    def startService(self):
        self.port = self._listen()
        if self.guard is not None:
            self.guard.start()
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        port, self.port = self.port, None
        if self.guard is not None:
            self.guard.stop()
            if self._hang_up:
                self.guard.hang_up()
        return None if port is None else port.stopListening()

    def bound(self):
        """The port number it listens on, or None when it does not listen."""
        return None if self.port is None else self.port.getHost().port


def envoy_port(reactor, listen, identity, channel_factory, limits):
    """The envoy port on ``listen`` (an ``Address``): TLS with the identity's
    certificate (pinned by envoys), eager writes, a deep backlog; ``limits``
    its ``PortLimits``."""
    guard = PortGuard("envoy", limits, reactor)
    factory = guard.caps(UnbufferedTLSFactory(identity_server_options(identity), False,
                                              guard.deadlines(channel_factory)))
    return PortService("envoy", lambda: listen_eager(reactor, listen.port, factory,
                                                     ENVOY_BACKLOG, listen.host), guard)


def tls_port(reactor, name, listen, factory, options, limits, backlog=50, hang_up=False):
    """A TLS port named ``name`` on ``listen`` with ``options`` (a context
    factory) and ``limits`` (its ``PortLimits``); with ``hang_up``, stopping it
    closes the connections it accepted."""
    guard = PortGuard(name, limits, reactor)
    guarded = guard.caps(TLSMemoryBIOFactory(options, False, guard.deadlines(factory)))
    return PortService(name, lambda: reactor.listenTCP(listen.port, guarded, backlog,
                                                       listen.host), guard, hang_up)


def api_port(reactor, listen, site, options, limits):
    """The HTTPS admin API on ``listen``."""
    return tls_port(reactor, "api", listen, site, options, limits, API_BACKLOG)


class Advertised:
    """Where this server is to be dialled: ``hostname`` (used when a port listens
    on every interface), and per port name its configured ``Address`` and,
    once it listens, its ``PortService``."""

    def __init__(self, hostname, listens):
        self.hostname = hostname
        self.listens = dict(listens)
        self.ports = {}

    def add(self, port):
        """Advertise ``port`` (a ``PortService``) under its name."""
        self.ports[port.name] = port
        return port

    def bound(self, name):
        """The port ``name`` is bound to, else the configured one."""
        port = self.ports.get(name)
        bound = None if port is None else port.bound()
        return self.listens[name].port if bound is None else bound

    def address(self, name):
        """The ``Address`` clients dial for port ``name``."""
        host = self.listens[name].host
        if host in _EVERY_INTERFACE:
            host = self.hostname
        return Address(host, self.bound(name))

    def envoy(self):
        """Where envoys reach this server."""
        return self.address("envoy")

    def row(self):
        """This bolt's addresses as its roster row carries them."""
        return {name: str(self.address(name)) for name in ("envoy", "api", "peer")}

    def api_url(self):
        """The API's URL for a client on this host (``vigocli --data-dir``)."""
        host = self.listens["api"].host
        if host in _EVERY_INTERFACE:
            host = "127.0.0.1"
        return "https://%s:%d" % (host, self.bound("api"))
