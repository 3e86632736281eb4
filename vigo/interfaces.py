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


class IPeerAction(Interface):
    """One thing a bolt can be asked to do by another bolt, over peer RPC.

    Actions are dropins: an object providing ``IPlugin`` and ``IPeerAction``
    in a module under any ``vigo/plugins/`` directory on ``sys.path`` (see
    ``vigo/plugins/vigo_ping.py``). The peer server checks the caller's
    membership and every argument against ``argument_schema`` before ``run``
    is called, and checks that the result is small, JSON-able data after, so an
    action only holds its own logic.
    """

    name = Attribute(
        "The action's name, unique among the loaded actions: 1 to 64 characters "
        "of ``[a-z0-9_-]``. Callers name it in ``IBolt.call``."
    )
    description = Attribute("One line for operators and ``vigocli``: what the action does.")
    argument_schema = Attribute(
        "A mapping of argument name to a ``vigo.spanner.schema`` schema. The "
        "arguments a caller sends must be exactly these names (``Optional`` ones "
        "may be left out); anything else is refused before ``run``."
    )

    def run(bolt, caller_id, args):
        """Do the action on this bolt; the result or a Deferred of it.

        ``bolt`` is the callee's ``IBolt``; ``caller_id`` is the id of the
        calling bolt, already authenticated by its TLS key and checked against
        the roster (it is this bolt's own id for a local call); ``args`` is a
        dict already checked against ``argument_schema``.

        The result must be JSON-able (dict, list, str, int, float, bool, None)
        and small (a few KiB; bulk data goes over HTTPS). Raise a
        ``vigo.spanner.peer_errors.ActionError`` to refuse with a message the
        caller sees; any other exception is logged here and reported to the
        caller as a failure of the action.
        """


class IBolt(Interface):
    """The narrow view of the local bolt that peer actions get.

    Actions see this facade, not the server's internals, so the internals can
    change under them. It is deliberately small; later work adds what the
    built-in actions need (fleet reads, force-push, reassign, accept envoy,
    drain), each as a documented method here.
    """

    id = Attribute("This bolt's id (derived from its identity key).")
    name = Attribute("This bolt's human-friendly name from the roster.")
    log = Attribute("A ``twisted.logger.Logger`` to log through.")

    def now():
        """Wall-clock time in seconds since the epoch, from the bolt's injected clock."""

    def roster_digest():
        """The digest (bytes) of this bolt's copy of the roster; equal digests,
        equal rosters."""

    def peer_states():
        """The liveness view as this bolt's failure detector sees it now: a dict
        of bolt id to a dict with ``state`` (``"alive"``, ``"suspect"``, ``"down"``
        or ``"unknown"``), ``last_heard`` and ``evidence_age`` (seconds), and the
        bolt's gossiped ``counters`` with their age (``counters_age``)."""

    def call(bolt_id, action_name, args):
        """Call an action on another bolt (or on this one, by its own id).

        A Deferred of the action's result. It fails with ``PeerUnreachable``
        when the bolt cannot be reached in time, or with the callee's refusal
        (``UnknownAction``, ``BadArguments``, ``NotAMember``, ``ActionError``,
        ``ActionFailed``) from ``vigo.spanner.peer_errors``.
        """
