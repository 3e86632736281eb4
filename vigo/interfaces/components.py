"""The interfaces the server's components are wired through.

Each component is built from plain values and the few collaborators it uses,
and it knows those collaborators only by one of these interfaces. The real
classes declare them (``@implementer``); the tests' fakes are checked against
them with ``zope.interface.verify.verifyObject``, so neither can drift. The
wiring that connects the real ones is ``vigo.server.standalone`` and
``vigo.server.spanner``.
"""

from zope.interface import Attribute, Interface

# -- storage and the fleet --------------------------------------------------------


class IStore(Interface):
    """The durable store: jobs run off the reactor thread, answered once committed."""

    def open():
        """Open (and migrate) the database; ``StoreError`` if it cannot be."""

    def run(job, *args):
        """Run ``job(cursor, *args)`` in a transaction; a Deferred of its result
        that fires only after the commit is on disk."""

    def close():
        """Finish queued work and close; a Deferred."""


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


class IEnvoyMoves(Interface):
    """The fleet's half of handing envoys between bolts (``vigo.fleet.moves``)."""

    def endpoint():
        """Where envoys reach this server: ``{"address", "server_id", "fingerprint"}``."""

    def describe(key):
        """An envoy's description (by id or unique hostname), or None."""

    def active_envoys():
        """``[(envoy_id, hostname)]`` of every active envoy, sorted by id."""

    def export(key):
        """A Deferred of the durable fields of one envoy (``id``, ``hostname``,
        ``public_key`` (base64), ``state``, ``redirect``, ``enrolled_at``,
        ``last_seq``, ``applied_version`` (hex), ``token_id``), or of None."""

    def accept(fields):
        """Store an envoy another bolt hands over (``export``'s fields) as
        active, durably; a Deferred of its id. Idempotent; fails with a
        ``Refusal`` (revoked here, another key, hostname taken, malformed)."""

    def move(envoy_id, redirect):
        """Mark an envoy moved (durably) with ``redirect`` for its next Attach,
        ending its pending move in the same write, and redirect it now if it is
        connected: a Deferred of ``"now"`` or ``"next_attach"``."""

    def begin_move(envoy_id, to):
        """Note durably that this server is handing the envoy to bolt ``to``."""

    def cancel_move(envoy_id):
        """Forget the envoy's pending move; a Deferred."""

    def pending_moves(envoy_id=None):
        """A Deferred of ``{envoy_id: (to, started_at_ms)}`` of the moves begun
        and not finished (of ``envoy_id`` alone, when given)."""


class IEnvoyOperations(Interface):
    """What the admin API's envoy routes do: one object per mode, chosen at wiring.

    A standalone server answers from its own fleet; a bolt asks every bolt.
    Each method returns a Deferred (or a value) and refuses with a ``Refusal``.
    """

    def list(bolt=None, offline=False, moved=False):
        """``{"envoys", "count", ...}``, sorted by hostname, each envoy once (at
        the bolt that holds it); ``bolt`` (an id or name) narrows it to one
        bolt; ``offline`` to active envoys not heard from; ``moved`` adds the
        copies bolts keep of the envoys they handed to another."""

    def show(key):
        """One envoy's description, by id or hostname."""

    def push(key):
        """Force-push one envoy: ``{"envoy_id", "delivered", ...}``."""

    def revoke(key):
        """Revoke one envoy of this server for good: ``{"envoy_id", "state"}``."""

    def reassign(key, to):
        """Move an envoy to bolt ``to`` (spanner only; ``not_spanner`` otherwise)."""


# -- the roster -------------------------------------------------------------------


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


class IPeerRoster(Interface):
    """What peer RPC reads from the roster: who a key is, and the digest."""

    def bolt_for_key(public_key):
        """The row (``.bolt_id``, ``.status``, ``.name``) of the bolt whose pinned
        key is these 32 bytes, or None. Removed bolts should still be found
        (status ``"removed"``) so that they are refused rather than treated as
        applicants."""

    def digest():
        """The roster digest (bytes)."""


class ILocalRoster(IRosterView, IPeerRoster):
    """This bolt's copy of the roster, and the one way to change it.

    Every change is persisted before it is taken in, announced to the
    ``on_change`` listeners (gossip sends at once) and, the first time the bolt
    holds a roster, to the ``on_member`` listeners.
    """

    current = Attribute("The ``Roster``, or None before this bolt founds or joins a federation.")

    def require_member():
        """``current``, or a ``Refusal`` (``not_member``) saying how to found or join."""

    def row(bolt_id):
        """The bolt's current row, or None (also before this bolt is a member)."""

    def status_of(bolt_id):
        """``active``, ``draining`` or ``removed``; None when unknown."""

    def locate(bolt_id):
        """``(peer address, key fingerprint)`` of a bolt in the roster, or None."""

    def load():
        """Read the roster from the store (None when this bolt has none); a Deferred."""

    def become(roster):
        """Take ``roster`` as this bolt's first roster (found, joined): persisted,
        then held. A Deferred; ``already_member`` when it holds one already."""

    def commit(candidate, job=None):
        """Persist ``candidate`` (a changed copy of ``current``; with ``job``,
        the store job that persists it), then merge it in. A Deferred."""

    def merge(parts):
        """Merge verified-on-the-way-in ``RosterParts`` (a snapshot's); persist
        when anything changed. A Deferred of the ``MergeReport``."""

    def write_override(envoy_id, bolt_id):
        """Give ``envoy_id`` to ``bolt_id``: an override signed by this bolt,
        persisted, then gossiped; nothing when the roster says so already."""

    def on_member(listener):
        """Call ``listener(roster)`` once this bolt holds a roster (now, if it does)."""

    def on_change(listener):
        """Call ``listener()`` after every change taken in."""


class IRowPublisher(Interface):
    """This bolt's own roster row: only it signs a new seq of it."""

    def publish(**changes):
        """The next seq of this bolt's row with ``changes`` (``status``,
        ``addresses``, ...): persisted, then gossiped. A Deferred."""


# -- peer operations --------------------------------------------------------------


class IReassigner(Interface):
    """Both ends of handing an envoy to another bolt (``vigo.spanner.reassign``)."""

    def reassign(envoy, to):
        """At the source: hand envoy ``envoy`` (id or hostname) to bolt ``to``."""

    def accept(caller_id, fields):
        """At the destination: take the envoy bolt ``caller_id`` hands over."""

    def busy(envoy_id):
        """True while a hand-over or an accept of the envoy runs here."""


class IDrainer(Interface):
    """A bolt's own drain (``vigo.spanner.drain``)."""

    def start(to=None):
        """Turn draining and hand every envoy over in the background; a
        Deferred of ``status()`` once started."""

    def status():
        """The progress."""

    def resume():
        """After a restart: go on with a drain not finished; a Deferred."""

    def stop():
        """Move no more envoys; a Deferred that fires when moves under way end."""


class IFederationAdmin(Interface):
    """What the admin API's spanner routes and page ask of a server: one object
    per mode, chosen at wiring (``vigo.spanner.admin`` for a bolt,
    ``vigo.api.spanner.NoFederation`` for a standalone server).

    Each method returns a value or a Deferred and refuses with a ``Refusal``.
    """

    def status():
        """This server's federation at a glance (``mode``, ``state``, ...)."""

    def init(name=None, patterns=None):
        """Found a federation here."""

    def invite(expires_in):
        """Mint a one-shot invite: ``{"token", "token_id", "expires_at", "minter_id"}``."""

    def join(token_text):
        """Join the federation an invite names."""

    def snapshot():
        """``(etag, body)`` of the signed roster snapshot."""

    def bolts():
        """Every bolt of the roster, described."""

    def bolt(key):
        """One bolt, by id or unique name."""

    def resolve(key):
        """The id of the bolt a key (id or unique name) names."""

    def owner(hostname, envoy_id=None):
        """Which bolt owns a hostname, and why."""

    def act(bolt, action, args):
        """Run a peer action on a bolt."""

    def actions(key):
        """The peer actions loaded on a bolt, and where each came from."""

    def bolt_envoys(key, offline=False):
        """One bolt's envoys, asked of it."""

    def push_bolt(key):
        """Force-push every active envoy of one bolt."""

    def drain(key, to=None):
        """Start draining a bolt."""

    def drain_status(key):
        """A bolt's drain progress."""

    def remove_bolt(key, force=False):
        """Record the removal of a drained bolt."""


# -- high availability ---------------------------------------------------------------


class IReplicaSet(Interface):
    """What the ``/api/v1/server/`` routes do (docs/ha.md): this node's part in
    its replica set. Each method returns a Deferred (or a value) and refuses
    with a ``Refusal`` (``ha_off`` when ``peers.listen`` is not set)."""

    def status():
        """``{"role", "epoch", "node_id", "primary", "lsn", "standbys", ...}``."""

    def invite(expires_in):
        """At the primary: a standby invitation, ``{"token", "expires_at", ...}``."""

    def join(token):
        """At a fresh server: become a standby of the invitation's primary."""

    def standbys():
        """``{"standbys": [...]}``: every other member, with its lag."""

    def remove(node_id):
        """At the primary: remove a standby from the replica set."""

    def promote():
        """At a standby: become the primary of the next epoch."""
