"""Gossip datagrams: any bytes from any address.

``datagram.decode`` may raise only ``DatagramError``; a ``Gossiper`` fed the
datagram counts it received and dropped (a reason), accepts nothing it cannot
verify, and its peers' states do not change.
"""

import sys

import harness

with harness.instrumented():
    from twisted.internet.task import Clock
    from zope.interface import implementer

    from vigo.config import GossipConfig
    from vigo.identity import Identity
    from vigo.interfaces.components import IRosterView
    from vigo.spanner.gossip import datagram
    from vigo.spanner.gossip.gossiper import Gossiper
    from vigo.testing.bus import MulticastBus

FED = "fed-fuzz"
ME, PEER, REMOVED, STRANGER = (Identity(bytes([n]) * 32) for n in (1, 2, 3, 4))


@implementer(IRosterView)
class Roster:
    federation_id = FED
    keys = {i.id: i.public_key for i in (ME, PEER, REMOVED)}

    def key_of(self, bolt_id):
        return self.keys.get(bolt_id)

    def is_removed(self, bolt_id):
        return bolt_id == REMOVED.id

    def digest(self):
        return b"\x00" * 32

    def bolt_ids(self):
        return list(self.keys)


clock = Clock()
config = GossipConfig(group="239.192.0.9", port=1532, interface="10.0.0.1", interval=0.5,
                      multicast=True, seeds=())
gossiper = Gossiper(clock, ME, Roster(), config, dict,
                    MulticastBus(clock, delay=0).listener(ME.id, ("10.0.0.1", 1532)),
                    incarnation=1)
gossiper.startService()
clock.advance(0.1)
failures = harness.LoggedFailures()
PEERS_BEFORE = gossiper.peer_states()


def test_one_input(data):
    try:
        decoded = datagram.decode(data)
    except datagram.DatagramError:
        decoded = None
    if decoded is not None:
        datagram.verify(decoded, PEER.public_key)  # a bool, never an exception
    stats = gossiper.stats()
    gossiper.datagram_received(data, ("10.0.0.2", 1532))
    after = gossiper.stats()
    failures.check()
    if after["accepted"] != stats["accepted"]:
        raise AssertionError("an unsigned datagram was accepted")
    if (after["received"] != stats["received"] + 1
            or sum(after["dropped"].values()) != sum(stats["dropped"].values()) + 1):
        raise AssertionError("a datagram was not counted: %r -> %r" % (stats, after))
    if gossiper.peer_states() != PEERS_BEFORE:
        raise AssertionError("a dropped datagram changed the peers' states")


def _unsigned(identity, federation=FED, seq=1):
    """A datagram of ``identity`` whose signature is zeros: a seed one flipped
    bit away from a valid signature would be accepted, rightly."""
    data = datagram.encode(identity, federation, 1000, seq, b"\x01" * 32,
                           {"checkins": 5, "status": "active"},
                           [(datagram.peer_tag(PEER.id), 10)])
    return data[:-datagram.SIGNATURE_SIZE] + b"\x00" * datagram.SIGNATURE_SIZE


SEEDS = [_unsigned(PEER), _unsigned(STRANGER), _unsigned(REMOVED), _unsigned(PEER, "other-fed"),
         _unsigned(ME)]

if __name__ == "__main__":
    harness.run(test_one_input, SEEDS, max_len=2 * datagram.MAX_DATAGRAM)
    sys.exit(0)
