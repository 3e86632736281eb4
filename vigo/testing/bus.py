"""An in-memory multicast network for deterministic gossip tests and figures.

Real sockets make loss, delay and partitions impossible to reproduce; this bus
stands in for them. Endpoints attach like a UDP port (``write(data, addr)``,
``joinGroup`` ...), deliveries are scheduled on the injected ``Clock`` with
seeded loss, fixed delay plus jitter, and partitions (groups of endpoint names
that cannot hear the rest) that ``heal()`` removes. ``freeze`` holds an
endpoint's incoming datagrams, the way a stopped process's socket buffer would.

``FreezableClock`` is one bolt's view of the shared clock, so a test can freeze
that bolt's timers too (SIGSTOP in miniature) while the others run on.
"""

import math
import random
from collections import Counter

from twisted.internet import defer
from twisted.internet.address import IPv4Address


class BusPort:
    """One endpoint: the transport its protocol writes to, and a listening port."""

    def __init__(self, bus, name, address, protocol):
        self.bus = bus
        self.name = name
        self.address = tuple(address)
        self.protocol = protocol
        self.groups = set()
        self.loopback = True
        self.ttl = 1
        self.interface = None
        self.connected = True

    # the multicast transport calls gossip makes
    def write(self, data, addr):
        if self.connected:
            self.bus._send(self, data, tuple(addr))

    def setTTL(self, ttl):
        self.ttl = ttl

    def setLoopbackMode(self, mode):
        self.loopback = bool(mode)

    def setOutgoingInterface(self, addr):
        self.interface = addr
        return defer.succeed(1)

    def joinGroup(self, addr, interface=""):
        self.groups.add(addr)
        return defer.succeed(1)

    def leaveGroup(self, addr, interface=""):
        self.groups.discard(addr)
        return defer.succeed(1)

    def getHost(self):
        return IPv4Address("UDP", *self.address)

    def stopListening(self):
        if self.connected:
            self.connected = False
            self.bus._detach(self)
            self.protocol.doStop()

    loseConnection = stopListening


class MulticastBus:
    """Delivers datagrams between attached endpoints on ``clock``.

    ``loss`` is the chance each copy is lost (drawn per recipient), ``delay`` +
    uniform(0, ``jitter``) its transit time. Traffic is counted per sender in
    ``sent_bytes`` / ``sent_datagrams`` (one write = one datagram, as on the wire)
    and per destination in ``sent_to``.
    """

    def __init__(self, clock, loss=0.0, delay=0.001, jitter=0.0, seed=0):
        self.clock = clock
        self.loss = loss
        self.delay = delay
        self.jitter = jitter
        self.rng = random.Random(seed)
        self._ports = {}
        self._partitions = []
        self._frozen = {}
        self.sent_bytes = Counter()
        self.sent_datagrams = Counter()
        self.sent_to = Counter()  # (sender name, destination address)
        self.largest = 0  # bytes of the largest datagram written
        self.delivered = 0
        self.lost = 0

    def listener(self, name, address):
        """A ``listen(protocol)`` for ``Gossiper`` that attaches here."""
        return lambda protocol: self.attach(name, address, protocol)

    def attach(self, name, address, protocol):
        port = BusPort(self, name, address, protocol)
        if port.address in self._ports:
            raise OSError("address %s:%d in use on the bus" % port.address)
        self._ports[port.address] = port
        protocol.makeConnection(port)
        return port

    def _detach(self, port):
        if self._ports.get(port.address) is port:
            del self._ports[port.address]

    def partition(self, *groups):
        """Split the network: names in different groups cannot hear each other
        (names in no group still hear everyone)."""
        self._partitions = [frozenset(group) for group in groups]

    def heal(self):
        self._partitions = []

    def freeze(self, name, seconds):
        """Hold datagrams to ``name`` until ``seconds`` from now."""
        self._frozen[name] = self.clock.seconds() + seconds

    def _group_of(self, name):
        for index, group in enumerate(self._partitions):
            if name in group:
                return index
        return None

    def can_hear(self, sender, receiver):
        a, b = self._group_of(sender), self._group_of(receiver)
        return a is None or b is None or a == b

    def _send(self, source, data, addr):
        self.sent_bytes[source.name] += len(data)
        self.sent_datagrams[source.name] += 1
        self.sent_to[(source.name, addr)] += 1
        self.largest = max(self.largest, len(data))
        target = self._ports.get(addr)
        if target is not None:
            recipients = [target]
        else:
            recipients = [p for p in self._ports.values()
                          if addr[0] in p.groups and p.address[1] == addr[1]
                          and (p is not source or source.loopback)]
        now = self.clock.seconds()
        arrivals = {}
        for port in recipients:
            if not self.can_hear(source.name, port.name):
                continue
            if self.loss and self.rng.random() < self.loss:
                self.lost += 1
                continue
            at = now + self.delay + (self.rng.uniform(0, self.jitter) if self.jitter else 0)
            at = max(at, self._frozen.get(port.name, -math.inf))
            arrivals.setdefault(at, []).append(port)
        for at, ports in arrivals.items():
            self.clock.callLater(at - now, self._deliver, ports, data, source.address)

    def _deliver(self, ports, data, source):
        for port in ports:
            if port.connected:
                self.delivered += 1
                port.protocol.datagramReceived(data, source)


class FreezableClock:
    """One process's view of a shared ``Clock``: same time, its own timers,
    which ``freeze`` postpones (a stopped process runs nothing, then runs
    everything overdue at once when it resumes)."""

    def __init__(self, clock):
        self._clock = clock
        self._calls = []

    def seconds(self):
        return self._clock.seconds()

    def callLater(self, delay, f, *args, **kwargs):
        call = self._clock.callLater(delay, f, *args, **kwargs)
        self._calls = [c for c in self._calls if c.active()]
        self._calls.append(call)
        return call

    def getDelayedCalls(self):
        return [c for c in self._calls if c.active()]

    def freeze(self, seconds):
        thaw = self._clock.seconds() + seconds
        for call in self.getDelayedCalls():
            if call.getTime() < thaw:
                call.reset(seconds)
