"""Enrollment: turning a token into an enrolled envoy.

A token is redeemed and the envoy stored in one transaction, so an envoy told
"registered" is on disk and the token's use is counted; a refusal changes
nothing.

In spanner mode any bolt takes a Register: a bolt that does not own the
hostname forwards it to the owner (``router.route``), and the owner redeems a
token another bolt minted at that minter (``router.redeem_at``) before it
stores the envoy. The token's use is counted where it was minted, the envoy is
stored only at its owner, and a refusal anywhere stores nothing.
"""

from time import perf_counter

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vigo.fleet import wire
from vigo.fleet.enrollment_tokens import check_token
from vigo.fleet.index import ACTIVE, EnvoyRecord
from vigo.fleet.ownership import NoOwner, Redirected
from vigo.fleet.replay import first_reservation
from vigo.hostnames import HostnameError, normalise_hostname
from vigo.identity import key_id, verify_signature
from vigo.interfaces.actions import IBoltEnrollment
from vigo.interfaces.errors import Refusal
from vigo.metrics import ENROLLMENT_BUCKETS, ENROLLMENT_OUTCOMES, DurationsBy
from vigo.tokens import EnrollmentToken, TokenError

log = Logger()


def check_enrollable(cursor, envoy_id, hostname):
    """Refuse an envoy whose key is known here, or whose hostname is taken."""
    existing = cursor.execute("SELECT state FROM envoys WHERE id = ?", (envoy_id,)).fetchone()
    if existing is not None:
        raise Refusal(
            existing[0] if existing[0] != ACTIVE else "already_enrolled",
            "envoy %s (this key) is %s; enroll with a new key"
            % (envoy_id, existing[0] if existing[0] != ACTIVE else "already enrolled"),
        )
    taken = cursor.execute(
        "SELECT id FROM envoys WHERE hostname = ? AND state = 'active'", (hostname,)
    ).fetchone()
    if taken is not None:
        raise Refusal(
            "hostname_taken",
            "%s is already enrolled as envoy %s; revoke it first "
            "(vigocli envoys revoke %s)" % (hostname, taken[0], taken[0]),
        )


def store_envoy(cursor, now, envoy_id, hostname, public_key, token_id):
    """Store an enrolled envoy whose token was redeemed elsewhere (at its minter)."""
    check_enrollable(cursor, envoy_id, hostname)
    cursor.execute(
        "INSERT INTO envoys (id, hostname, public_key, state, enrolled_at, token_id, last_seen, "
        "seq_reserved) VALUES (?, ?, ?, 'active', ?, ?, ?, ?)",
        (envoy_id, hostname, public_key, now, token_id, now, first_reservation(0, now)),
    )


def redeem_and_enroll(cursor, token_id, secret_hash, now, envoy_id, hostname, public_key):
    """Count one use of the token and store the envoy, or refuse and change nothing."""
    check_token(cursor, token_id, secret_hash, now)
    check_enrollable(cursor, envoy_id, hostname)
    cursor.execute("UPDATE enrollment_tokens SET used = used + 1 WHERE id = ?", (token_id,))
    store_envoy(cursor, now, envoy_id, hostname, public_key, token_id)


@implementer(IBoltEnrollment)
class Enrollment:
    """Enrolls the envoys that present a token.

    ``fleet`` takes them in; ``store`` is the ``IStore``; ``identity`` this
    server's; ``ownership`` its ``IOwnership``; ``clock`` an ``IReactorTime``;
    ``envoy_address()`` where envoys reach this server now; ``tokens`` its
    ``EnrollmentTokens``. ``router`` enrolls at other bolts (spanner mode,
    ``vigo.spanner.enrollment_routing``): ``route(owner_id, fields)`` and
    ``redeem_at(minter_id, token_text)``, each a Deferred that fails with
    ``Refusal``; without one a non-owner redirects, and only this server's
    own tokens are taken.
    """

    def __init__(self, fleet, store, identity, ownership, clock, envoy_address, tokens,
                 router=None):
        self.fleet = fleet
        self.store = store
        self.identity = identity
        self.ownership = ownership
        self.clock = clock
        self.envoy_address = envoy_address
        self.tokens = tokens
        self.router = router
        #: ``listener(envoy_id, hostname)`` for each envoy enrolled here, once
        #: it is durable (the D-Bus ``EnvoyEnrolled`` signal).
        self.listeners = []
        #: High availability (``peers.sync``): ``synced()``, a Deferred that
        #: fires when what is committed may be acknowledged (None: at once).
        self.synced = None
        #: Each Register's time to its answer, by outcome (``register``).
        self.durations = DurationsBy(ENROLLMENT_BUCKETS, ENROLLMENT_OUTCOMES)

    def register(self, hostname, public_key, token_text, timestamp_ms, signature):
        """Enroll an envoy; a Deferred of the Registered fields.

        Raises (or fails with) ``Refusal``, or ``Redirected`` when another
        server owns the hostname and there is no ``router`` to enroll it there.
        With a router (a spanner bolt), the owner enrolls the envoy and the
        fields are the owner's, so the envoy goes on to attach there.

        The time it took goes to ``durations`` by outcome: ``enrolled`` (here),
        ``routed`` (at the owner), ``redirected``, ``refused`` or ``failed``.
        """
        started = perf_counter()
        try:
            answer = self._register(hostname, public_key, token_text, timestamp_ms, signature)
        except Exception as e:
            self.durations.observe(_outcome(e), perf_counter() - started)
            raise
        return answer.addBoth(self._answered, started)

    def _answered(self, result, started):
        if isinstance(result, Failure):
            outcome = _outcome(result.value)
        elif isinstance(result, dict) and result.get("server_id") != self.identity.id:
            outcome = "routed"
        else:
            outcome = "enrolled"
        self.durations.observe(outcome, perf_counter() - started)
        return result

    def _register(self, hostname, public_key, token_text, timestamp_ms, signature):
        sent_hostname = hostname  # what the envoy signed
        hostname, token, now = self._checked(hostname, public_key, token_text,
                                             timestamp_ms, signature)
        owner = self._owner(hostname)
        if not owner.local:
            if self.router is None:
                raise Redirected(owner.address, owner.server_id, owner.fingerprint,
                                 "%s belongs to server %s" % (hostname, owner.server_id))
            return self.router.route(owner.server_id, {
                "hostname": sent_hostname, "public_key": wire.b64(public_key),
                "token": token_text, "ts": timestamp_ms, "signature": wire.b64(signature),
            })
        return self._enroll_here(hostname, public_key, token, token_text, now)

    def enroll_routed(self, hostname, public_key, token_text, timestamp_ms, signature):
        """Enroll an envoy whose Register another bolt forwarded here, the owner.

        Checks everything ``register`` checks (the envoy's signature included),
        and that this bolt owns the hostname. A Deferred of this bolt's
        Registered fields; fails with ``Refusal``.
        """
        hostname, token, now = self._checked(hostname, public_key, token_text,
                                             timestamp_ms, signature)
        owner = self._owner(hostname)
        if not owner.local:
            raise Refusal("not_owner", "%s belongs to server %s by this bolt's roster, not "
                          "to this bolt (%s); try again once the rosters agree"
                          % (hostname, owner.server_id, self.identity.id), retryable=True)
        return self._enroll_here(hostname, public_key, token, token_text, now)

    def redeem(self, token_text):
        """Count one use of a token this bolt minted (for an enrollment another
        bolt does); a Deferred that fails with ``Refusal`` when it cannot."""
        return self.tokens.redeem(token_text)

    def _checked(self, hostname, public_key, token_text, timestamp_ms, signature):
        sent_hostname = hostname
        try:
            hostname = normalise_hostname(hostname)
            token = EnrollmentToken.decode(token_text)
            # JSON's "\udc00" escapes decode to text UTF-8 cannot encode: the
            # signed message, the secret's hash and peer calls would all fail.
            for field in token.token_id, token.secret, token.server_id:
                field.encode("utf-8")
        except (HostnameError, TokenError) as e:
            raise Refusal("bad_request", str(e)) from None
        except UnicodeEncodeError:
            raise Refusal("bad_request", "the token is damaged (a field is not text)") from None
        except RecursionError:
            raise Refusal("bad_request", "the token is damaged (nested too deeply)") from None
        if type(public_key) is not bytes or len(public_key) != 32:
            raise Refusal("bad_request", "the public key must be 32 bytes (Ed25519)")
        now = self.clock.seconds()
        # 0 <= ts < 2**63 first: ts / 1000.0 of a huge int raises OverflowError.
        if (type(timestamp_ms) is not int or not 0 <= timestamp_ms < wire.MAX_INT
                or abs(timestamp_ms / 1000.0 - now) > 300):
            raise Refusal("stale", "the timestamp is off by more than 300 s; fix the clock")
        message = wire.register_message(sent_hostname, public_key, token.token_id, timestamp_ms)
        if not verify_signature(public_key, message, signature):
            raise Refusal("bad_signature", "the register signature does not verify")
        return hostname, token, now

    def _owner(self, hostname):
        try:
            return self.ownership.owner_of(hostname)
        except NoOwner as e:
            raise Refusal("no_owner", str(e)) from None

    def _enroll_here(self, hostname, public_key, token, token_text, now):
        d = defer.maybeDeferred(self._enroll_now, hostname, public_key, token, token_text, now)
        if self.synced is None:
            return d
        # Registered is an acknowledgement: not before peers.sync standbys hold it.
        return d.addCallback(lambda fields: self.synced().addCallback(lambda _: fields))

    def _enroll_now(self, hostname, public_key, token, token_text, now):
        envoy_id = key_id(public_key)
        existing = self.fleet.index.get(envoy_id)
        if existing is not None and existing.state == ACTIVE and existing.hostname == hostname:
            # Enrolled already (a retry after a lost answer): the same answer again.
            return defer.succeed(self._registered(existing))

        def enrolled(_):
            record = EnvoyRecord(envoy_id, hostname, public_key, None,
                                 enrolled_at=now, last_seen=now,
                                 seq_reserved=first_reservation(0, now))
            self.fleet.add(record)
            for listener in list(self.listeners):
                try:  # best-effort (a D-Bus signal): the envoy is enrolled
                    listener(record.id, record.hostname)
                except Exception:
                    log.failure("an enrollment listener failed")
            return self._registered(record)

        if token.server_id == self.identity.id:
            d = self.store.run(redeem_and_enroll, token.token_id, token.secret_hash, now,
                               envoy_id, hostname, public_key)
            return d.addCallback(enrolled)
        if self.router is None:
            raise Refusal("foreign_token",
                          "the token was minted by server %s, but %s belongs to this server "
                          "(%s): enroll it with a token from this server"
                          % (token.server_id, hostname, self.identity.id))
        # Minted by another bolt: refuse what this bolt would refuse before the
        # minter counts a use, then redeem there, then store here. Only a race
        # with another enrollment of the same hostname or key between the two
        # checks can cost a use without an enrollment.
        d = self.store.run(check_enrollable, envoy_id, hostname)
        d.addCallback(lambda _: self.router.redeem_at(token.server_id, token_text))
        d.addCallback(lambda _: self.store.run(store_envoy, now, envoy_id, hostname,
                                               public_key, token.token_id))
        return d.addCallback(enrolled)

    def _registered(self, record):
        return {
            "envoy_id": record.id,
            "hostname": record.hostname,
            "server_id": self.identity.id,
            "public_key": wire.b64(self.identity.public_key),
            "fingerprint": self.identity.fingerprint,
            "address": str(self.envoy_address()),
            "interval": self.fleet.interval,
        }


def _outcome(error):
    """The ``durations`` outcome of a Register that failed with ``error``."""
    if isinstance(error, Refusal):
        return "refused"
    if isinstance(error, Redirected):
        return "redirected"
    return "failed"
