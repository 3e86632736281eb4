"""One simulated envoy: its key, id, server, sequence and applied version.

``SimEnvoy`` is a record the ``Simulator`` drives, and the ``IEnvoyListener`` of
its connection, passing what the connection says back to the simulator.
"""

from nacl.bindings import crypto_sign
from zope.interface import implementer

from vigo.envoy.protocol import NO_VERSION, IEnvoyListener
from vigo.envoy.sim.figures import tally

# SimEnvoy.state
NEW, ENROLLING, ATTACHED, RECONNECTING, MOVING, FAILED, STOPPED = range(7)


@implementer(IEnvoyListener)
class SimEnvoy:
    """One simulated envoy: its key, id, server, sequence and applied version."""

    __slots__ = ("attempt", "envoy_id", "force", "index", "protocol", "public_key",
                 "secret", "seq", "sim", "state", "target", "timer", "version")

    def __init__(self, sim, index):
        self.sim, self.index = sim, index
        self.public_key = self.secret = self.envoy_id = None
        self.target = self.protocol = self.timer = None
        self.state, self.seq, self.version = NEW, 0, NO_VERSION
        self.attempt, self.force = 0, False

    def sign(self, message):
        """The envoy key's 64-byte signature of ``message``."""
        return crypto_sign(message, self.secret)[:64]

    def envoy_connected(self, protocol):
        self.sim.open_connections += 1

    def envoy_disconnected(self, protocol, reason):
        self.sim._lost(self, protocol)

    def envoy_force_push(self, protocol):
        self.sim._force_push(self, protocol)

    def envoy_redirected(self, protocol, redirect):
        if protocol is self.protocol:
            self.sim._move(self, redirect)

    def envoy_refused(self, protocol, refusal):
        tally(self.sim.refusals, refusal.code)

    def envoy_bundle(self, protocol, bundle):
        self.version = self.sim._versions.setdefault(bundle.version, bundle.version)
