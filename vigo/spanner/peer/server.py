"""The server side of peer RPC: who may call, and what they may call.

Bolts call each other with Perspective Broker over mutual TLS (``vigo.spanner.peer.tls``).
Login goes through ``twisted.cred``, but the client sends no credentials of its
own: the root object's ``remote_login()`` reads the key the TLS peer proved it
holds and logs that in (``PeerKey``). ``RosterKeyChecker`` maps the key to a
roster member's bolt id, or to ``APPLICANT`` for a key the roster does not
know; ``PeerRealm`` hands a member a ``PeerPerspective`` (call any loaded
action) and an applicant an ``ApplicantPerspective`` (present a join token,
nothing else). A removed bolt is refused at login.

Every remote argument is checked against a schema before anything else looks
at it, and every result before it is sent. Every answer is an envelope of plain
data: ``{"ok": result}``, or ``{"error": ...}`` with the refusal's class name,
code, reason and ``retryable`` (``vigo.interfaces.errors.to_wire``), so a
refusal crosses as data, never as text to be parsed back, and PB never logs a
traceback for one. Only a refused login is a PB error (``LoginRefused``): it
happens before there is a perspective to answer with.
"""

import collections

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import Attribute, implementer

from vigo.config.values import parse_address
from vigo.identity import key_fingerprint
from vigo.interfaces.errors import (
    ActionFailed,
    BadArguments,
    JoinRefused,
    NotAMember,
    PeerError,
    Refusal,
    UnknownAction,
    to_wire,
)
from vigo.interfaces.schema import Json, SchemaError, String, check_json
from vigo.mutual_tls import PeerKeyError, peer_key, peer_server_options
from vigo.spanner.peer.actions import MAX_RESULT_BYTES, check_call, checked, run_checked_action
from vigo.spanner.peer.broker import BoundedBroker

MAX_JOIN_ROW_BYTES = 16 * 1024

TOKEN_TEXT = String(4096, min_length=1)
JOIN_ROW = Json(MAX_JOIN_ROW_BYTES)

#: Roster statuses whose bolts may call actions (a draining bolt still talks).
MEMBER_STATUSES = frozenset({"active", "draining"})

log = Logger()


class IPeerKey(ICredentials):
    """Credentials that are a key the TLS peer proved it holds."""

    public_key = Attribute("The raw 32-byte Ed25519 public key.")


@implementer(IPeerKey)
class PeerKey:
    """The TLS peer's key, as cred credentials (and as the login's mind)."""

    def __init__(self, public_key):
        self.public_key = public_key

    def __repr__(self):
        return "PeerKey(%s)" % (key_fingerprint(self.public_key),)


class _Applicant:
    """The avatar id of a key the roster does not know."""

    def __repr__(self):
        return "APPLICANT"


APPLICANT = _Applicant()


def member_id(roster, public_key):
    """The bolt id of an active or draining member with this key, None for an
    unknown key; raises ``NotAMember`` for a removed (or otherwise inactive) one."""
    row = roster.bolt_for_key(public_key)
    if row is None:
        return None
    if row.status not in MEMBER_STATUSES:
        raise NotAMember(
            "bolt %s (%s) is %s in the roster, so it may not call peers; a removed "
            "bolt rejoins only with a new identity and a new join token"
            % (row.bolt_id, row.name, row.status)
        )
    return row.bolt_id


@implementer(ICredentialsChecker)
class RosterKeyChecker:
    """Checks a ``PeerKey`` against the roster: a member's bolt id, or ``APPLICANT``."""

    credentialInterfaces = (IPeerKey,)

    def __init__(self, roster):
        self.roster = roster

    def requestAvatarId(self, credentials):
        try:
            bolt_id = member_id(self.roster, credentials.public_key)
        except NotAMember as e:
            return defer.fail(UnauthorizedLogin(str(e)))
        return defer.succeed(APPLICANT if bolt_id is None else bolt_id)


def refuse_join(peer_key, token_text, row_data):
    """The join handler of a bolt that admits no one over peer RPC."""
    raise JoinRefused(
        "this bolt does not admit new bolts (no join handler is configured); "
        "ask a bolt that minted your token"
    )


class LoginRefused(pb.Error):
    """A login the peer port refuses (a removed bolt, a key it cannot read)."""


class _CheckedAvatar(pb.Avatar):
    """An avatar that answers every call with an envelope of plain data, and
    refuses undecodable arguments, unknown methods and wrong arities with a
    ``PeerError`` in it rather than a logged traceback."""

    #: High availability (``peers.sync``): what the call's answer waits for,
    #: an object with ``head()`` and ``synced()`` (``PrimaryReplication``), or None.
    durability = None

    def __init__(self, refusals):
        self.refusals = refusals

    def unknown_method(self, name):  # pragma: no cover - subclasses say what to do instead
        raise NotImplementedError

    def perspectiveMessageReceived(self, broker, message, args, kw):
        durability = self.durability() if callable(self.durability) else None
        before = None if durability is None else durability.head()
        try:
            result = defer.maybeDeferred(self._receive, broker, message, args, kw)
        except PeerError as e:  # pragma: no cover - maybeDeferred catches it
            result = defer.fail(e)
        if durability is not None:
            # A call that wrote (an accepted envoy, a move) is acknowledged only
            # once peers.sync standbys hold it: the answer waits for them.
            result.addCallback(self._durable, durability, before)
        result.addCallbacks(self._ok, self._refused)
        return broker.serialize(result, self)

    @staticmethod
    def _durable(value, durability, before):
        if durability.head() == before:
            return value
        return durability.synced().addCallback(lambda _: value)

    def _ok(self, result):
        return {"ok": result}

    def _refused(self, failure):
        if not failure.check(Refusal):  # a bug here: logged, and still an answer
            log.failure("a peer call failed on this bolt", failure)
            failure = Failure(ActionFailed("the call failed on this bolt: %s: %s; its log has "
                                           "the traceback" % (failure.type.__name__,
                                                              failure.value)))
        self.refusals[failure.type.__name__] += 1
        return {"error": to_wire(failure.value)}

    def _receive(self, broker, message, args, kw):
        try:
            args = broker.unserialize(args, self)
            kw = broker.unserialize(kw, self)
        except Exception as e:
            raise BadArguments("the arguments could not be decoded: %s" % (e,)) from None
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        method = getattr(self, "perspective_" + message, None)
        if method is None:
            raise self.unknown_method(message)
        _check_arity(message, method, args, kw)
        return method(*args, **kw)


def _check_arity(name, method, args, kw):
    # Perspective methods take fixed positional arguments; reading the code
    # object is ~50x cheaper than inspect.signature on every call.
    code = method.__code__
    names = code.co_varnames[1:code.co_argcount]
    if kw or len(args) != len(names):
        raise BadArguments("%s takes %d argument%s (%s), got %d%s" % (
            name, len(names), "" if len(names) == 1 else "s", ", ".join(names), len(args),
            " and keywords %s" % (", ".join(sorted(map(str, kw))),) if kw else ""))


class PeerPerspective(_CheckedAvatar):
    """What a member bolt may do: call any loaded action, or ping."""

    def __init__(self, bolt, actions, caller_id, public_key, roster, refusals):
        super().__init__(refusals)
        self.bolt = bolt
        self.actions = actions
        self.caller_id = caller_id
        self.public_key = public_key
        self.roster = roster

    def unknown_method(self, name):
        return UnknownAction("bolt %s has no remote method %r; peers call act(action_name, args)"
                             % (self.bolt.id, name))

    def _still_member(self):
        # Membership was checked at login; a connection outlives a removal.
        if self.roster is not None and member_id(self.roster, self.public_key) != self.caller_id:
            raise NotAMember("bolt %s is no longer a member of this federation" % (self.caller_id,))

    def perspective_act(self, action_name, args):
        """Run action ``action_name`` with ``args`` (a dict of JSON data) here."""
        check_call(action_name, args)
        self._still_member()
        return run_checked_action(self.bolt, self.actions, self.caller_id, action_name, args)

    def perspective_ping(self):
        """This bolt's id and roster digest (hex): a cheap liveness check."""
        self._still_member()
        return {"bolt_id": self.bolt.id, "digest": self.bolt.roster_digest().hex()}


class ApplicantPerspective(_CheckedAvatar):
    """What a key unknown to the roster may do: present a join token."""

    def __init__(self, public_key, join_handler, refusals):
        super().__init__(refusals)
        self.public_key = public_key
        self.join_handler = join_handler

    def unknown_method(self, name):
        return NotAMember(
            "key %s is not a member of this federation, so it may not call %r; "
            "a server that is not a member can only join with a token"
            % (key_fingerprint(self.public_key), name)
        )

    def perspective_act(self, action_name, args):
        """Refused: only members call actions."""
        raise self.unknown_method("act")

    def perspective_join(self, token_text, row_data):
        """Present a join token and our signed admission row; the membership
        logic (the injected join handler) decides and answers a dict."""
        checked(TOKEN_TEXT, token_text, "token_text")
        if not isinstance(row_data, dict):
            raise BadArguments("row_data: expected a dict, got %s" % (type(row_data).__name__,))
        checked(JOIN_ROW, row_data, "row_data")
        d = defer.maybeDeferred(self.join_handler, self.public_key, token_text, row_data)
        d.addCallbacks(self._join_answer, self._join_failed)
        return d

    def _join_answer(self, answer):
        if not isinstance(answer, dict):
            raise ActionFailed("the join handler answered %s, not a dict" % (type(answer).__name__,))
        try:
            check_json(answer, MAX_RESULT_BYTES, "join answer")
        except SchemaError as e:
            raise ActionFailed(str(e)) from None
        return answer

    def _join_failed(self, failure):
        if failure.check(PeerError):
            return failure
        log.failure("a join by {key} failed", failure, key=key_fingerprint(self.public_key))
        raise JoinRefused("the join failed on this bolt: %s: %s; its log has the traceback"
                          % (failure.type.__name__, failure.value))


@implementer(IRealm)
class PeerRealm:
    """Hands out perspectives: a member's or an applicant's.

    The mind of a peer login is its ``PeerKey``: the applicant perspective must
    know the key it speaks for, and the member one re-checks it on each call.
    """

    def __init__(self, bolt, actions, join_handler=None, roster=None, refusals=None):
        self.bolt = bolt
        self.actions = actions
        self.join_handler = join_handler or refuse_join
        self.roster = roster
        self.refusals = collections.Counter() if refusals is None else refusals
        #: Set by the wiring when HA is on (``_CheckedAvatar.durability``).
        self.durability = None

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("peer RPC hands out PB perspectives only")
        if avatar_id is APPLICANT:
            avatar = ApplicantPerspective(mind.public_key, self.join_handler, self.refusals)
        else:
            avatar = PeerPerspective(self.bolt, self.actions, avatar_id, mind.public_key,
                                     self.roster, self.refusals)
        avatar.durability = lambda: self.durability
        return pb.IPerspective, avatar, lambda: None


class PeerPortal(Portal):
    """The cred portal of the peer port, wired from the roster, the local bolt
    facade, the loaded actions and the join handler (membership logic)."""

    def __init__(self, roster, bolt, actions, join_handler=None):
        self.refusals = collections.Counter()
        self.realm_of_peers = PeerRealm(bolt, actions, join_handler, roster, self.refusals)
        super().__init__(self.realm_of_peers, [RosterKeyChecker(roster)])

    def acknowledge_after(self, durability):
        """Answer calls that wrote only once ``durability.synced()`` fires (HA)."""
        self.realm_of_peers.durability = durability


@implementer(pb.IPBRoot)
class PeerLoginRoot:
    """The PB root of the peer port: a login object bound to each connection.

    ``key_of(transport)`` reads the peer's key (``peer_key``; tests inject one).
    """

    def __init__(self, portal, key_of=peer_key):
        self.portal = portal
        self.key_of = key_of

    def rootObject(self, broker):
        return _PeerLogin(self.portal, broker, self.key_of)


class _PeerLogin(pb.Referenceable):
    """``remote_login()``: log in as the key this connection's TLS peer holds."""

    def __init__(self, portal, broker, key_of):
        self.portal = portal
        self.broker = broker
        self.key_of = key_of
        self._avatar = None

    def remoteMessageReceived(self, broker, message, args, kw):
        try:
            args, kw = broker.unserialize(args), broker.unserialize(kw)
        except Exception as e:
            raise LoginRefused("the arguments could not be decoded: %s" % (e,)) from None
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        if message != "login":
            raise LoginRefused("the peer port's root only offers login(), not %r" % (message,))
        try:
            _check_arity(message, self.remote_login, args, kw)
        except BadArguments as e:
            raise LoginRefused(str(e)) from None
        return broker.serialize(self.remote_login(*args, **kw))

    def remote_login(self):
        """The caller's perspective (one per connection, however often asked)."""
        if self._avatar is not None:
            return self._avatar
        try:
            credentials = PeerKey(self.key_of(self.broker.transport))
        except PeerKeyError as e:
            raise LoginRefused("cannot log in: %s" % (e,)) from None
        d = self.portal.login(credentials, credentials, pb.IPerspective)
        d.addCallbacks(self._logged_in, self._refused)
        return d

    def _logged_in(self, result):
        _interface, avatar, logout = result
        self.broker.notifyOnDisconnect(logout)
        self._avatar = pb.AsReferenceable(avatar, "perspective")
        return self._avatar

    def _refused(self, failure):
        failure.trap(UnauthorizedLogin)
        raise LoginRefused(str(failure.value))


def peer_server_factory(portal, key_of=peer_key):
    """The PB server factory of the peer port."""
    factory = pb.PBServerFactory(PeerLoginRoot(portal, key_of))
    factory.protocol = BoundedBroker
    factory.noisy = False
    return factory


def listen_peers(reactor, identity, address, portal):
    """Listen for peers on ``address`` (``Address`` or ``"host:port"``) with
    mutual TLS; a Deferred of the listening port."""
    if isinstance(address, str):
        address = parse_address(address)
    endpoint = endpoints.SSL4ServerEndpoint(
        reactor, address.port, peer_server_options(identity), interface=address.host
    )
    return endpoint.listen(peer_server_factory(portal))
