"""Where simulated envoys connect, and from which source address.

A ``Target`` is one server (address and pinned fingerprint, id, key once known),
shared by every envoy sent there. ``SimDialer`` opens connections to targets:
those to a loopback IPv4 server are spread over the source addresses
127.0.0.1..127.0.0.N, each with its own ephemeral ports. It keeps the
connections no envoy has attached on yet, so that they can be closed on stop.
"""

import ipaddress

from vigo.config.values import parse_address


class Target:
    """A server to dial: address, pinned fingerprint, id and (once known) key."""

    __slots__ = ("address", "bind", "fingerprint", "key", "server_id")

    def __init__(self, address, fingerprint, server_id, key, bind):
        self.address, self.fingerprint, self.server_id = address, fingerprint, server_id
        self.key, self.bind = key, bind


class SimDialer:
    """Opens connections with ``connect(address, fingerprint, listener, bind_address)``
    (a Deferred of a connected ``EnvoyClientProtocol``), spread over
    ``source_addresses`` loopback addresses (at most 254)."""

    def __init__(self, connect, source_addresses):
        self._connect = connect
        self._sources = [f"127.0.0.{i + 1}" for i in range(min(source_addresses, 254))]
        self._next_source = 0
        self._targets = {}
        self.unattached = set()  # connections opened and not yet attached on

    def target(self, address, fingerprint, server_id, key=None):
        """The ``Target`` for ``address`` and ``fingerprint``, learning ``key`` if new."""
        target = self._targets.get((address, fingerprint))
        if target is None:
            target = Target(address, fingerprint, server_id, key, self._bindable(address))
            self._targets[(address, fingerprint)] = target
        target.key = target.key or key
        return target

    def open(self, envoy, target):
        """Connect ``envoy`` (the listener) to ``target``; a Deferred of the protocol."""
        bind = None
        if target.bind:
            bind = self._sources[self._next_source % len(self._sources)]
            self._next_source += 1
        d = self._connect(target.address, target.fingerprint, envoy, bind)
        return d.addCallback(self._opened)

    def _opened(self, protocol):
        self.unattached.add(protocol)
        return protocol

    def _bindable(self, address):
        try:
            host = ipaddress.ip_address(parse_address(address).host)
        except ValueError:
            return False
        return bool(self._sources) and host.version == 4 and host.is_loopback
