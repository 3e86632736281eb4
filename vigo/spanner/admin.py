"""What the admin API asks of a bolt: the federation's operations, by bolt key.

``BoltAdmin`` is the ``IFederationAdmin`` of a bolt: the API's spanner routes
and the ``/spanner`` page call it, and it hands each request to the one
component that does it (membership, invites, status, the reads fan-out, the
hand-over, the drain), after turning the bolt names an operator types into
ids. ``FederatedEnvoys`` is a bolt's ``IEnvoyOperations``: the API's envoy
routes, answered across every bolt. A standalone server is wired with
``vigo.api.spanner.NoFederation`` and ``vigo.api.envoys.LocalEnvoys`` instead.
"""

from twisted.internet import defer
from zope.interface import implementer

from vigo.hostnames import HostnameError
from vigo.interfaces.components import IEnvoyOperations, IFederationAdmin
from vigo.interfaces.errors import Refusal
from vigo.spanner.drain import ask_drain
from vigo.spanner.peer.actions import LIST_ACTIONS
from vigo.spanner.peer.asking import action_refusal, ask
from vigo.spanner.reassign import reassign_anywhere
from vigo.spanner.roster.snapshot import encode_snapshot, sign_snapshot
from vigo.spanner.routing import NoOwner, explain_owner


@implementer(IFederationAdmin)
class BoltAdmin:
    """The operations of one bolt.

    ``identity`` is the bolt's (it signs the snapshots it serves); ``roster``
    its ``ILocalRoster``; ``status`` its ``FederationStatus``; ``membership``,
    ``invites``, ``reads`` (``FleetReads``) its components; ``bolt`` its
    ``IBolt`` (``call`` reaches any bolt, this one too); ``clock`` an
    ``IReactorTime``.
    """

    def __init__(self, identity, roster, status, membership, invites, reads, bolt, clock):
        self._identity = identity
        self._roster = roster
        self._status = status
        self._membership = membership
        self._invites = invites
        self._reads = reads
        self._bolt = bolt
        self._clock = clock

    # -- this bolt and its roster -------------------------------------------------------

    def status(self):
        return self._status.status()

    def init(self, name=None, patterns=None):
        d = self._membership.init(name, patterns)
        return d.addCallback(lambda _: self.status())

    def invite(self, expires_in):
        d = self._invites.mint(expires_in)
        return d.addCallback(lambda invite: {
            "token": invite.encode(), "token_id": invite.token_id,
            "expires_at": invite.expires_at_ms / 1000.0, "minter_id": invite.minter_id})

    def join(self, token_text):
        d = self._membership.join(token_text)
        return d.addCallback(lambda _: self.status())

    def snapshot(self):
        roster = self._roster.require_member()
        signed = sign_snapshot(roster, self._identity, int(self._clock.seconds() * 1000))
        return roster.digest().hex(), encode_snapshot(signed)

    def resolve(self, key):
        """The id of the bolt ``key`` names: its id, or its unique name."""
        roster = self._roster.require_member()
        if roster.row(key) is not None:
            return key
        named = [bolt_id for bolt_id in roster.bolt_ids()
                 if roster.row(bolt_id) is not None and roster.row(bolt_id).name == key]
        if len(named) == 1:
            return named[0]
        if named:
            raise Refusal("not_found", "%d bolts are named %r: use a bolt id" % (len(named), key))
        raise Refusal("not_found", "no bolt %r in the roster" % (key,))

    def bolts(self):
        return self._status.bolts()

    def bolt(self, key):
        return self._status.describe(self._roster.row(self.resolve(key)))

    def owner(self, hostname, envoy_id=None):
        """Which bolt owns ``hostname`` by this bolt's roster, and why
        (``vigo.spanner.routing.explain_owner``)."""
        roster = self._roster.require_member()
        try:
            return explain_owner(roster, hostname, envoy_id)
        except HostnameError as e:
            raise Refusal("bad_request", str(e)) from None
        except NoOwner as e:
            raise Refusal("no_owner", str(e)) from None

    def act(self, bolt_key, action, args):
        """Run a peer action on any bolt (this one included)."""
        bolt_id = self.resolve(bolt_key)
        return self._bolt.call(bolt_id, action, args).addErrback(action_refusal, bolt_id, action)

    def actions(self, key):
        """The peer actions loaded on bolt ``key`` and where each came from: its
        built-in ``actions`` action (``vigo.spanner.peer.actions.LoadedActions``),
        run here in-process for this bolt, over peer RPC for another."""

        def asked():
            bolt_id = self.resolve(key)
            d = self._bolt.call(bolt_id, LIST_ACTIONS, {})
            d.addErrback(action_refusal, bolt_id, LIST_ACTIONS)
            return d.addCallback(lambda answer: dict(answer, bolt_id=bolt_id))

        return defer.maybeDeferred(asked)

    # -- the bolts that own envoys ---------------------------------------------------------

    def resolve_owner(self, key):
        """``resolve``, refusing a removed bolt (it owns no envoys); before this
        bolt is a member, only this bolt (by id or name)."""
        if self._roster.current is None and key in (self._identity.id, self._status.name()):
            return self._identity.id
        bolt_id = self.resolve(key)
        if self._roster.is_removed(bolt_id):
            raise Refusal("not_found", "bolt %s was removed from the federation; it owns no "
                          "envoys" % (bolt_id,))
        return bolt_id

    def bolt_envoys(self, key, offline=False):
        bolt_id = self.resolve_owner(key)
        return self._reads.bolt_envoys(bolt_id, dict(self._status.reachable_bolts())[bolt_id],
                                       offline)

    def push_bolt(self, key):
        return self._reads.push_bolt(self.resolve_owner(key))

    # -- moving envoys, draining and removing bolts ----------------------------------------

    def reassign(self, key, to):
        """Move envoy ``key`` to bolt ``to`` (id or name); see ``vigo.spanner.reassign``."""
        return defer.maybeDeferred(lambda: reassign_anywhere(
            self._reads, self._bolt, self._clock, self._roster, key, self.resolve(to)))

    def drain(self, key, to=None):
        return defer.maybeDeferred(lambda: ask_drain(
            self._bolt, self._clock, self._roster, self.resolve(key),
            None if to is None else self.resolve(to)))

    def drain_status(self, key):
        def asked():
            bolt_id = self.resolve(key)
            d = ask(self._bolt, self._clock, bolt_id, "drain-status", {})
            return d.addCallback(lambda answer: dict(answer,
                                                     name=self._roster.row(bolt_id).name))

        return defer.maybeDeferred(asked)

    def remove_bolt(self, key, force=False):
        return defer.maybeDeferred(lambda: self._membership.remove(self.resolve(key), force))


@implementer(IEnvoyOperations)
class FederatedEnvoys:
    """The admin API's envoy routes at a bolt: reads and pushes asked of every
    bolt (``reads``), a reassign anywhere (``admin``), a revoke of this bolt's
    own envoy (``fleet``)."""

    def __init__(self, admin, reads, fleet):
        self._admin = admin
        self._reads = reads
        self._fleet = fleet

    def list(self, bolt=None, offline=False, moved=False):
        only = None if bolt is None else self._admin.resolve_owner(bolt)
        return self._reads.list_all(offline=offline, only=only, moved=moved)

    def show(self, key):
        return self._reads.show(key)

    def push(self, key):
        return self._reads.push(key)

    def revoke(self, key):
        d = defer.maybeDeferred(self._fleet.revoke, key)
        return d.addCallback(lambda record: {"envoy_id": record.id, "state": record.state})

    def reassign(self, key, to):
        return self._admin.reassign(key, to)
