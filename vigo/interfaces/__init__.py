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
        "A mapping of argument name to a ``vigo.interfaces.schema`` schema. The "
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
        ``vigo.interfaces.errors.ActionError`` to refuse with a message the
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
        ``ActionFailed``) from ``vigo.interfaces.errors``.
        """

    def fleet():
        """This bolt's envoys, as an ``IBoltFleet``: the reads and force-pushes
        the built-in ``query`` and ``force-push`` actions are made of."""


    def enrollment():
        """This bolt's enrollment, as an ``IBoltEnrollment``: what the built-in
        ``route-enrollment`` and ``redeem-token`` actions are made of."""

    def write_override(envoy_id, bolt_id):
        """Give ``envoy_id`` to ``bolt_id`` in the roster (an override signed by
        this bolt, ordered by its hybrid logical clock), persisted before the
        Deferred fires, then gossiped. Does nothing when the roster already
        gives the envoy to ``bolt_id``. Used by ``accept-envoy``."""

    def take_row(bolt_id, data):
        """Merge the admission row (JSON form) that bolt ``bolt_id`` announces
        of itself, verified like any row (its own and its admitter's
        signatures); persisted before the Deferred fires, with the seq of the
        row now held. Fails with ``ActionError`` for another bolt's row or a
        malformed one. Used by ``announce-row``."""

    def drainer():
        """This bolt's drain (``vigo.spanner.drain.Drainer``): ``start(to)`` turns
        the bolt draining and hands its envoys over in the background,
        ``status()`` is the progress. Used by ``drain`` and ``drain-status``."""

class IBoltFleet(Interface):
    """The envoys a bolt owns, as peer actions may read and push them.

    Only this bolt's own envoys: finding an envoy across the federation is
    the caller's job (ask every bolt). Envoys are described as plain JSON-able
    dicts (``EnvoyRecord.describe``), never as the records themselves.
    """

    def describe(key):
        """The full description of an envoy, by id or unique hostname; None
        if this bolt has no such envoy."""

    def envoys(offline=False):
        """Descriptions of every envoy, sorted by (hostname, id); with
        ``offline``, only active envoys not heard from lately. An iterator:
        callers that need only a page stop early."""

    def counts():
        """``{"total", "active", "online", "connected"}`` envoy counts."""

    def push(key):
        """Force-push one envoy, by id or unique hostname: it takes its full
        bundle now if connected, else at its next attach (durable before the
        answer). A Deferred of ``{"envoy_id", "delivered": "now" |
        "next_attach"}``, or of ``{"envoy_id", "refused": code, "detail"}``
        when the envoy is unknown here (``not_found``) or not active
        (``not_active``)."""

    def push_all():
        """Force-push every active envoy of this bolt, with one durable write.
        A Deferred of ``{"envoys": n, "now": n, "next_attach": n}`` (marked;
        sent down an open connection; to get it at their next attach)."""

    def endpoint():
        """Where envoys reach this bolt: ``{"address", "server_id",
        "fingerprint"}`` (a Redirect's fields)."""

    def export(key):
        """The durable fields of one envoy (by id or unique hostname), to hand
        it to another bolt: a Deferred of ``{"id", "hostname", "public_key"
        (base64), "state", "redirect", "enrolled_at", "last_seq",
        "applied_version" (hex), "token_id"}``, or of None if unknown here."""

    def accept(fields):
        """Store an envoy another bolt hands over (``export``'s durable fields)
        as active, durably before the Deferred fires (with the envoy id).
        Idempotent: the same id and key again is accepted; fails with
        ``vigo.fleet.refusal.Refusal`` (revoked here, hostname taken, malformed)."""

    def move(envoy_id, redirect):
        """Mark an envoy of this bolt moved (durably), with ``redirect`` (an
        ``endpoint()`` of its new bolt) for its next Attach, and redirect it now
        if it is connected: a Deferred of ``"now"`` or ``"next_attach"``. It
        ends the envoy's pending move (``begin_move``) in the same write."""

    def begin_move(envoy_id, to):
        """Note durably, before asking bolt ``to`` to accept the envoy, that
        this bolt is handing it over, so that a restart finishes a hand-over a
        crash interrupted (``vigo.spanner.handover``). A Deferred."""

    def cancel_move(envoy_id):
        """Forget the envoy's pending move (the destination refused it). A Deferred."""

    def pending_moves(envoy_id=None):
        """A Deferred of ``{envoy_id: (to, started_at_ms)}``: the hand-overs
        begun and not finished (of envoy ``envoy_id`` alone, when given)."""


class IBoltEnrollment(Interface):
    """Enrolling envoys on behalf of other bolts (spanner enrollment routing).

    Any bolt takes an envoy's Register; one that does not own the hostname
    forwards it to the owner (``route-enrollment``), and the owner has the
    token's use counted at the bolt that minted it (``redeem-token``). Both
    methods return a Deferred (or raise) and refuse with
    ``vigo.fleet.refusal.Refusal`` (a stable ``code``, a ``reason``, and
    ``retryable``). Token texts hold a secret: never log them.
    """

    def enroll_routed(hostname, public_key, token_text, timestamp_ms, signature):
        """Enroll an envoy here, as its owner, from a Register another bolt
        forwarded: the envoy's signature is checked, this bolt must own the
        hostname, the token is redeemed at its minter, and the envoy is stored
        durably before the answer. A Deferred of the Registered fields
        (``envoy_id``, ``hostname``, ``server_id``, ``public_key`` (base64),
        ``fingerprint``, ``address``, ``interval``), all of this bolt.
        ``public_key`` and ``signature`` are raw bytes. A retry by an envoy
        already enrolled here with that hostname gets the same answer again."""

    def redeem(token_text):
        """Count one use of an enrollment token this bolt minted, durably, in one
        transaction; a Deferred. Refuses (``bad_token``, ``token_expired``,
        ``token_used``) and changes nothing when it cannot."""
