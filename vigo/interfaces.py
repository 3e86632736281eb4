"""The interfaces the rest of vigosrv is written against.

Components depend on these, not on each other's classes, so each can be
replaced (standalone vs spanner ownership) or faked in a test; fakes are
checked against them with ``zope.interface.verify.verifyObject``.
"""

from zope.interface import Attribute, Interface


class IOwnership(Interface):
    """Who owns an envoy. The fleet asks; it never knows about federation.

    Standalone mode wires an ownership that owns everything; spanner mode wires
    one that reads the roster.
    """

    local_id = Attribute("The id of this server (its identity key's id).")

    def owner_of(hostname):
        """The ``Owner`` of a normalised hostname.

        Raises ``NoOwner`` when no server takes it.
        """


class IEnvoyConnection(Interface):
    """The server's end of one envoy's held connection."""

    def send(data):
        """Write framed bytes to the envoy."""

    def drop(refusal):
        """Tell the envoy why (a ``Refusal`` or ``Redirected``) and hang up."""

    def hang_up():
        """Close the connection cleanly, saying nothing (the server is stopping)."""


class IStore(Interface):
    """The durable store: jobs run off the reactor thread, answered once committed."""

    def run(job, *args):
        """Run ``job(cursor, *args)`` in a transaction; a Deferred of its result
        that fires only after the commit is on disk."""

    def close():
        """Finish queued work and close; a Deferred."""
