"""Where simulated envoys connect, from which source address, and how they attach.

A ``Target`` is one server (address and pinned fingerprint, id, key once known),
shared by every envoy sent there. ``SimDialer`` opens connections to targets:
those to a loopback IPv4 server are spread over the source addresses
127.0.0.1..127.0.0.N, each with its own ephemeral ports. It keeps the
connections no envoy has attached on yet, so that they can be closed on stop.
``SimDialer.attach`` attaches an envoy at its target, following redirects.

A target's ``replicas`` is the ``ReplicaSet`` its server last named (Attached
carries it): the set's targets, primary first, one object shared by all of
them, so failing over costs an envoy nothing but its ``target``. Where to go
when a target fails is in ``next_replica``, ``first_replica`` and
``passed``: one pass walks the set forward from where the envoy was, then to
where the last envoy attached (the set's ``serving``, once, as the set may
have changed order under it: a promoted standby names itself first), and ends
(the envoy backs off, then starts again at the primary). So without
remembering anything per envoy a pass always ends. From the primary, where an
attached envoy is, that is the real envoy's order (``vigo.envoy.replicas``);
from a standby the real envoy also tries the replicas before it.
"""

import ipaddress

from twisted.internet import defer

from vigo.config.values import parse_address
from vigo.envoy.answers import Redirected

MAX_HOPS = 5  # redirects followed in a row before giving up


class StandbyRedirect(Exception):
    """A standby redirected the envoy back to a replica this pass already tried
    (its primary is down and no other was promoted yet): a failed attempt."""


class Target:
    """A server to dial: address, pinned fingerprint, id, (once known) key and
    ``ReplicaSet``."""

    __slots__ = ("address", "bind", "fingerprint", "key", "replicas", "server_id")

    def __init__(self, address, fingerprint, server_id, key, bind):
        self.address, self.fingerprint, self.server_id = address, fingerprint, server_id
        self.key, self.bind, self.replicas = key, bind, None


class ReplicaSet:
    """The replica set a server named: its ``addresses`` (the tuple the answer
    decoded to) and their ``targets``, primary first; ``serving`` is the target
    an envoy last attached at, until one fails to reach it."""

    __slots__ = ("addresses", "serving", "targets")

    def __init__(self, addresses, targets):
        self.addresses, self.targets, self.serving = addresses, targets, None

    def place(self, target):
        """``target``'s place in the set; one past the last when it is not in it."""
        try:
            return self.targets.index(target)
        except ValueError:
            return len(self.targets)


def next_replica(target):
    """The target to dial at once when ``target`` cannot be reached: the next
    replica of its set, after the last the one serving (if another), or None
    when the pass is over (or there is no set).

    Each jump to ``serving`` uses it up (failing to reach it forgets it), and
    only an envoy that attaches sets it again, so passes end."""
    replicas = target.replicas
    if replicas is None:
        return None
    if replicas.serving is target:
        replicas.serving = None
    place = replicas.place(target) + 1
    return replicas.targets[place] if place < len(replicas.targets) else replicas.serving


def first_replica(target):
    """Where a new pass begins after ``target``'s ended: its set's primary
    (``target`` itself when it knows no set)."""
    replicas = target.replicas
    return replicas.targets[0] if replicas is not None and replicas.targets else target


def passed(target, moved):
    """True when a Redirect from ``target`` to ``moved`` (a standby naming its
    primary) points back over ground this pass has covered: ``moved`` is in the
    same set, not after ``target``. Following it could go round for ever."""
    replicas = target.replicas
    return (replicas is not None and moved.replicas is replicas
            and replicas.place(moved) <= replicas.place(target))


class SimDialer:
    """Opens connections with ``connect(address, fingerprint, listener, bind_address)``
    (a Deferred of a connected ``EnvoyClientProtocol``), spread over
    ``source_addresses`` loopback addresses (at most 254). ``timed(d)`` puts a
    request's timeout on ``d``; redirects are counted in ``figures.redirects``."""

    def __init__(self, connect, source_addresses, timed, figures):
        self._connect = connect
        self._timed = timed
        self._figures = figures
        self._sources = [f"127.0.0.{i + 1}" for i in range(min(source_addresses, 254))]
        self._next_source = 0
        self._targets = {}
        self._replica_sets = {}
        self.unattached = set()  # connections opened and not yet attached on

    def target(self, address, fingerprint, server_id, key=None):
        """The ``Target`` for ``address`` and ``fingerprint``, learning ``key`` if new."""
        target = self._targets.get((address, fingerprint))
        if target is None:
            target = Target(address, fingerprint, server_id, key, self._bindable(address))
            self._targets[(address, fingerprint)] = target
        target.key = target.key or key
        return target

    def learn_replicas(self, target, addresses):
        """``target``'s server named its replica set: ``addresses`` (a tuple,
        primary first). Equal lists give one shared ``ReplicaSet``."""
        known = target.replicas
        if known is not None and known.addresses is addresses:
            return  # what every envoy after the first hears: the tuple is interned
        key = (target.fingerprint, addresses)
        replicas = self._replica_sets.get(key)
        if replicas is None:
            targets = tuple(self.target(address, target.fingerprint, target.server_id,
                                        target.key) for address in addresses)
            replicas = self._replica_sets[key] = ReplicaSet(addresses, targets)
        target.replicas = replicas
        for replica in replicas.targets:
            replica.replicas = replicas

    def open(self, envoy, target):
        """Connect ``envoy`` (the listener) to ``target``; a Deferred of the protocol."""
        bind = None
        if target.bind:
            bind = self._sources[self._next_source % len(self._sources)]
            self._next_source += 1
        d = self._connect(target.address, target.fingerprint, envoy, bind)
        return d.addCallback(self._opened)

    @defer.inlineCallbacks
    def attach(self, envoy, protocol=None):
        """Attach ``envoy`` at ``envoy.target`` (on ``protocol`` when given),
        following redirects into ``envoy.target`` and learning the replica set
        Attached names; a Deferred of ``(protocol, Attached)``. Fails with what
        failed, ``StandbyRedirect`` (see ``passed``) or, after ``MAX_HOPS``
        redirects, ``Redirected``."""
        for _ in range(MAX_HOPS + 1):
            target = envoy.target
            if protocol is None:
                protocol = yield self.open(envoy, target)
            try:
                attached = yield self._timed(
                    protocol.attach(envoy.envoy_id, target.server_id, envoy.sign, target.key))
            except Redirected as r:
                self._figures.redirects += 1
                moved = self.target(r.address, r.fingerprint, r.server_id)
                if passed(target, moved):
                    raise StandbyRedirect(f"{target.address} redirects to {r.address}") from None
                envoy.target, protocol = moved, None
                continue
            except BaseException:
                protocol.close()
                raise
            target.key = target.key or protocol.server_key
            if attached.replicas is not None:
                self.learn_replicas(target, attached.replicas)
            if target.replicas is not None:
                target.replicas.serving = target
            return protocol, attached
        raise Redirected(envoy.target.address, envoy.target.server_id,
                         envoy.target.fingerprint, f"more than {MAX_HOPS} redirects in a row")

    def _opened(self, protocol):
        self.unattached.add(protocol)
        return protocol

    def _bindable(self, address):
        try:
            host = ipaddress.ip_address(parse_address(address).host)
        except ValueError:
            return False
        return bool(self._sources) and host.version == 4 and host.is_loopback
