"""Dialling a server: a TLS connection to ``host:port`` with the server's key pinned.

``connect`` gives a Deferred of the connected ``EnvoyClientProtocol``; every
connection to one fingerprint shares one client TLS creator.
"""

import functools

from twisted.internet import endpoints
from twisted.internet.protocol import Factory

from vigo.config.values import parse_address
from vigo.envoy.protocol import EnvoyClientProtocol
from vigo.tls import PinnedKeyClientCreator

CONNECT_TIMEOUT = 10.0


class EnvoyClientFactory(Factory):
    """Builds one ``EnvoyClientProtocol`` for one connection attempt."""

    noisy = False

    def __init__(self, clock, listener=None):
        self.clock = clock
        self.listener = listener

    def buildProtocol(self, addr):
        protocol = EnvoyClientProtocol(self.clock, self.listener)
        protocol.factory = self
        return protocol


@functools.lru_cache(maxsize=256)
def pinned_creator(fingerprint):
    """The (shared) client TLS creator pinning one server key fingerprint."""
    return PinnedKeyClientCreator(fingerprint)


def connect(reactor, address, fingerprint, listener=None, bind_address=None,
            timeout=CONNECT_TIMEOUT):
    """Open a TLS connection to ``address`` ("host:port") pinned to ``fingerprint``.

    A Deferred of the connected ``EnvoyClientProtocol`` (the handshake finishes
    under it; a wrong key fails its first request). ``bind_address`` is a
    source host for the connection (spreading ephemeral ports).
    """
    target = parse_address(address)
    bind = (bind_address, 0) if bind_address else None
    kind = endpoints.TCP6ClientEndpoint if ":" in target.host else endpoints.TCP4ClientEndpoint
    tcp = kind(reactor, target.host, target.port, timeout, bind)
    endpoint = endpoints.wrapClientTLS(pinned_creator(fingerprint), tcp)
    return endpoint.connect(EnvoyClientFactory(reactor, listener))
