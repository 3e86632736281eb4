"""Narrow, read-only views of spanner state, for the code that only needs to look.

Tier-1 gossip needs five facts about the roster and nothing else. Coding it
against this interface (not the roster CRDT's classes) keeps the two apart: the
roster can change shape freely, gossip can be tested with a tiny fake, and the
server wires the real roster in by providing this interface.
"""

from zope.interface import Attribute, Interface


class IRosterView(Interface):
    """What gossip reads from the admissions roster. Every call must be cheap:
    gossip asks on every datagram it receives (``digest``, ``key_of``,
    ``is_removed``) and on every one it sends (``digest``).
    """

    federation_id = Attribute(
        "The federation's id (str). Datagrams naming another federation are foreign."
    )

    def key_of(bolt_id):
        """The pinned 32-byte Ed25519 public key of an admitted bolt, or None when
        ``bolt_id`` is not admitted (unknown)."""

    def is_removed(bolt_id):
        """True when a removal record for ``bolt_id`` exists. Removal is final."""

    def digest():
        """The 32-byte roster digest: equal digests mean equal rosters."""

    def bolt_ids():
        """An iterable of every admitted bolt id (removed ones may be included;
        callers filter with ``is_removed``)."""
