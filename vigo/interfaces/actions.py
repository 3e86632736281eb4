"""Peer actions and the bolt they run on: the interfaces a plugin author codes against.

An action is an ``IPeerAction`` dropin; it runs on a bolt it sees only as an
``IBolt`` (with its envoys as an ``IBoltFleet`` and its enrollment as an
``IBoltEnrollment``), never the server's internals, so the internals can
change under it. See docs/peer-actions.md and ``vigo/plugins/vigo_ping.py``.
"""

from zope.interface import Attribute, Interface


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
        and small (a few KiB; bulk data goes over HTTPS). Raise an
        ``ActionError`` (or any ``Refusal``) to refuse: the caller gets it
        back with its code, reason and ``retryable``. Any other exception is
        logged here and reported to the caller as ``ActionFailed``.
        """


class IPeerCaller(Interface):
    """Calling an action on a bolt by its id."""

    def call(bolt_id, action_name, args):
        """Call an action on a bolt; a Deferred of the action's result.

        It fails with ``PeerUnreachable`` (or ``PeerNoAnswer``) when the bolt
        cannot be reached or does not answer in time, or with the callee's
        refusal (``UnknownAction``, ``BadArguments``, ``NotAMember``,
        ``ActionError``, ``ActionFailed``), all from ``vigo.interfaces``.
        """


class IBolt(IPeerCaller):
    """The narrow view of the local bolt that peer actions get.

    ``call`` reaches any bolt by id, this one included (through the same
    checks as a peer's call).
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

    def fleet():
        """This bolt's envoys, as an ``IBoltFleet``: the reads and force-pushes
        the built-in ``query`` and ``force-push`` actions are made of."""

    def enrollment():
        """This bolt's enrollment, as an ``IBoltEnrollment``: what the built-in
        ``route-enrollment`` and ``redeem-token`` actions are made of."""

    def reassign(envoy, to):
        """Hand envoy ``envoy`` (an id or hostname) of this bolt to bolt ``to``:
        it accepts the envoy, then this bolt marks it moved and redirects it
        (``vigo.spanner.reassign``). A Deferred of ``{"envoy_id", "hostname",
        "from", "to", "changed", "delivered"}``; fails with a ``Refusal``
        (``not_found``, ``not_active``, ``same_bolt``, ``unreachable`` (the
        move stays pending and is finished later), or the destination's own
        refusal). Used by ``reassign``."""

    def accept_envoy(caller_id, fields):
        """Take, here, an envoy bolt ``caller_id`` hands over (its durable
        fields, as ``accept-envoy`` lists them) and claim it in the roster;
        durable before the Deferred fires with where envoys reach this bolt
        (``address``, ``server_id``, ``fingerprint``, ``envoy_id``, ``name``).
        Fails with a ``Refusal``. Used by ``accept-envoy``."""

    def drain(to):
        """Turn this bolt draining (if not yet) and hand its envoys over in the
        background, each to bolt ``to`` or, with None, to its owner by the
        roster (``vigo.spanner.drain``). A Deferred of the progress
        (``drain_status()``) once the drain has started. Used by ``drain``."""

    def drain_status():
        """The progress of this bolt's drain: ``state`` (idle, running, done,
        failed), ``status`` (this bolt's row), ``to``, ``total``, ``moved``,
        ``failed``, ``remaining`` (active envoys here now) and the last
        ``errors``. Used by ``drain-status``."""

    def take_row(bolt_id, data):
        """Merge the admission row (JSON form) that bolt ``bolt_id`` announces
        of itself, verified like any row (its own and its admitter's
        signatures); persisted before the Deferred fires with ``{"seq",
        "rejected"}``. Fails with ``ActionError`` for another bolt's row or a
        malformed one. Used by ``announce-row``."""


class IBoltFleet(Interface):
    """The envoys a bolt owns, as peer actions may read and push them.

    Only this bolt's own envoys: finding an envoy across the federation is
    the caller's job (ask every bolt). Envoys are described as plain JSON-able
    dicts, never as the records themselves.
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


class IBoltEnrollment(Interface):
    """Enrolling envoys on behalf of other bolts (spanner enrollment routing).

    Any bolt takes an envoy's Register; one that does not own the hostname
    forwards it to the owner (``route-enrollment``), and the owner has the
    token's use counted at the bolt that minted it (``redeem-token``). Both
    methods return a Deferred (or raise) and refuse with a ``Refusal`` (a
    stable ``code``, a ``reason``, and ``retryable``). Token texts hold a
    secret: never log them.
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
