"""Tier-1 gossip: every bolt's counters and liveness, in one datagram a tick.

``Gossiper`` is a Twisted service. Every ``spanner.gossip.interval`` (+-20 %
jitter, so bolts started together do not send in lockstep) it sends one signed
datagram (``datagram``) to the multicast group, or, where multicast is missing,
by unicast to every seed and as many known peers as a byte budget allows. What
it receives goes through cheap checks first and the signature last; anything
dropped is counted by reason and changes nothing. Accepted datagrams feed the
observability cache (``observability``), the failure detector (``detector``)
and, when the sender's roster digest differs from ours, a rate-limited,
jittered request for a tier-2 snapshot pull (``on_digest_mismatch``).

Everything runs on the injected clock and transport (``listen``), never the
global reactor, so the tests drive time and the network (``bus``).
"""

import math
import random
from collections import Counter

from twisted.application import service
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from vigo.config.values import Address, parse_address
from vigo.spanner.gossip import datagram
from vigo.spanner.gossip.detector import DOWN, HOP_PENALTY, FailureDetector, thresholds
from vigo.spanner.gossip.observability import ObservabilityCache
from vigo.spanner.gossip.pulls import PullRequests

JITTER = 0.2
#: drop reasons, in the order receivers check them (cheap first, crypto last)
DROP_REASONS = (
    "oversize", "malformed", "version", "foreign", "own", "removed", "unknown",
    "replayed", "bad_signature",
)
RESOLVE_EVERY = 60.0


def multicast_listener(reactor, config):
    """``listen`` for multicast: bound to the group address, so the socket only
    sees the group's traffic; SO_REUSEADDR so bolts on one host share the port."""
    def listen(protocol):
        return reactor.listenMulticast(
            config.port, protocol, interface=config.group, listenMultiple=True)
    return listen


def unicast_listener(reactor, config):
    """``listen`` for unicast mode: a plain UDP port on the configured interface."""
    def listen(protocol):
        return reactor.listenUDP(config.port, protocol, interface=config.interface)
    return listen


def listener_for(reactor, config):
    return (multicast_listener if config.multicast else unicast_listener)(reactor, config)


class GossipProtocol(DatagramProtocol):
    """The socket end: joins the group on start, hands datagrams to the gossiper.

    ``multicast`` is (group, interface, ttl) or None for unicast. The TTL is 1 by
    default so gossip never leaves the link (or the machine, on loopback).
    """

    def __init__(self, gossiper, multicast=None):
        self.gossiper = gossiper
        self.multicast = multicast

    def startProtocol(self):
        if self.multicast is None:
            return
        group, interface, ttl = self.multicast
        transport = self.transport
        transport.setTTL(ttl)
        transport.setLoopbackMode(True)  # other bolts on this host must hear us
        for d in (transport.setOutgoingInterface(interface),
                  transport.joinGroup(group, interface)):
            if isinstance(d, defer.Deferred):
                d.addErrback(self.gossiper._multicast_failed, group, interface)

    def datagramReceived(self, data, addr):
        self.gossiper.datagram_received(data, addr)


def gossip_addresses(roster, bolt_id, port):
    """Where each other bolt of ``roster`` (an ``ILocalRoster``) listens for
    unicast gossip: its peer host, and ``port`` (every bolt's gossip port)."""
    out = {}
    for other in roster.bolt_ids():
        row = roster.row(other)
        if row is not None and other != bolt_id:
            out[other] = (row.addresses.peer.rsplit(":", 1)[0].strip("[]"), port)
    return out


def _address(value):
    address = value if isinstance(value, Address) else parse_address(str(value))
    return address.host, address.port


class Gossiper(service.Service):
    """Tier-1 gossip for one bolt.

    ``clock`` provides callLater/seconds (the reactor in production); ``roster``
    provides ``IRosterView``; ``config`` is a ``GossipConfig``; ``counters_fn()``
    returns this bolt's counters as a dict (``datagram.Counters`` fields);
    ``listen(protocol)`` starts the socket and returns the listening port.
    ``peer_addresses()``, when given, returns {bolt id: (host, port)} of peers'
    gossip ports for unicast mode, on top of the addresses learned from peers'
    datagrams. ``config.seeds`` are used in unicast mode only (multicast mode
    sends to the group alone, so nothing arrives twice).

    Callbacks: ``on_state_change(bolt_id, old, new)`` on every detector
    transition; ``on_digest_mismatch(bolt_id)`` to ask for a snapshot pull
    from that bolt (rate-limited, see ``pulls.PullRequests``).
    """

    name = "gossip"
    log = Logger()

    def __init__(self, clock, identity, roster, config, counters_fn, listen, *,
                 on_digest_mismatch=None, on_state_change=None, peer_addresses=None,
                 rng=None, incarnation=None, ttl=1, unicast_budget=12_000, min_fanout=3,
                 suspect_after=None, down_after=None, pull_spacing=None,
                 verify=datagram.verify):
        self.clock = clock
        self.identity = identity
        self.id = identity.id
        self.roster = roster
        self.config = config
        self.interval = config.interval
        self._counters_fn = counters_fn
        self._listen = listen
        self._on_state_change = on_state_change
        self._heard = []
        self._peer_addresses = peer_addresses
        self.rng = rng or random.Random()
        self.incarnation = int(clock.seconds() * 1000) if incarnation is None else incarnation
        self.seq = 0
        self.ttl = ttl
        self.unicast_budget = unicast_budget
        self.min_fanout = min_fanout
        self._verify = verify
        self.seeds = [_address(seed) for seed in config.seeds]
        suspect, down = thresholds(self.interval, suspect_after, down_after)
        self.detector = FailureDetector(clock, suspect, down, self._state_changed)
        self.cache = ObservabilityCache()
        self.pulls = PullRequests(
            clock, self.rng, on_digest_mismatch, self._pull_candidates,
            jitter=self.interval / 2,
            spacing=self.interval / 2 if pull_spacing is None else pull_spacing,
            repeat=20 * self.interval)
        self.counters = Counter()
        self.dropped = Counter()
        self._roster_digest = None
        self._tags = {}
        self._peer_ids = set()
        self._rotation = 0
        self._last_counters = datagram.Counters()
        self._port = self._protocol = self._send_call = None
        self._resolved = {}
        self._last_error_log = -math.inf

    # -- service -----------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self._sync_roster()
        multicast = (self.config.group, self.config.interface, self.ttl)
        self._protocol = GossipProtocol(self, multicast if self.config.multicast else None)
        self._port = self._listen(self._protocol)
        # a random phase: bolts started together must not send in lockstep
        self._send_call = self.clock.callLater(self.rng.uniform(0, self.interval), self._tick)

    def stopService(self):
        service.Service.stopService(self)
        if self._send_call is not None and self._send_call.active():
            self._send_call.cancel()
        self._send_call = None
        self.detector.stop()
        self.pulls.stop()
        port, self._port = self._port, None
        return defer.maybeDeferred(port.stopListening) if port is not None else None

    # -- sending -----------------------------------------------------------

    def _tick(self):
        self._send_call = None
        try:
            self.send_now()
        except Exception:
            self.log.failure("gossip send failed; trying again next tick")
        delay = self.interval * self.rng.uniform(1 - JITTER, 1 + JITTER)
        self._send_call = self.clock.callLater(delay, self._tick)

    def send_now(self):
        """Send one datagram now (the loop calls this; so may a roster change,
        to spread a new digest without waiting for the next tick)."""
        transport = self._protocol.transport if self._protocol is not None else None
        if transport is None:
            return
        now = self.clock.seconds()
        digest = self._sync_roster()
        try:
            self._last_counters = datagram.Counters.from_mapping(self._counters_fn())
        except Exception:
            self.log.failure("gossip counters failed; sending the last good ones")
        self.seq += 1
        try:
            data = datagram.encode(
                self.identity, self.roster.federation_id, self.incarnation, self.seq,
                digest, self._last_counters, self._peer_entries(now))
        except ValueError as e:
            self._send_failed("encode", e, now)
            return
        targets = [(self.config.group, self.config.port)] if self.config.multicast \
            else self._unicast_targets(len(data))
        for address in targets:
            try:
                transport.write(data, address)
            except Exception as e:
                self._send_failed(address, e, now)
                continue
            self.counters["sent"] += 1
            self.counters["sent_bytes"] += len(data)

    def _send_failed(self, where, error, now):
        self.counters["send_errors"] += 1
        if now - self._last_error_log >= 60:
            self._last_error_log = now
            self.log.warn("gossip send to {where} failed: {error}", where=where, error=error)

    def _peer_entries(self, now):
        """(tag, age ms) for the peers we have recent evidence of, rotating
        through them when they do not all fit in one datagram."""
        capacity = datagram.max_peers(self.roster.federation_id, self.id)
        horizon = self.detector.down_after
        fresh = []
        for bolt_id in self.detector:
            age = self.detector.evidence_age(bolt_id, now)
            if age is not None and age < horizon:
                fresh.append((bolt_id, age))
        if len(fresh) > capacity:
            fresh.sort()
            start = self._rotation % len(fresh)
            self._rotation = start + capacity
            fresh = (fresh[start:] + fresh[:start])[:capacity]
        tag = datagram.peer_tag
        return [(tag(bolt_id), math.ceil(age * 1000)) for bolt_id, age in fresh]

    def _unicast_targets(self, size):
        """Every seed, plus as many known peers as ``unicast_budget`` bytes/s
        allow (at least ``min_fanout``), picked at random each tick: an isolated
        bolt so keeps retrying its seeds and every peer it ever knew."""
        seeds = self._seed_targets()
        known = set(self.cache.addresses().values())
        if self._peer_addresses is not None:
            roster = self.roster
            for bolt_id, address in self._peer_addresses().items():
                if bolt_id != self.id and not roster.is_removed(bolt_id):
                    known.add(_address(address) if isinstance(address, (str, Address))
                              else tuple(address))
        known.difference_update(seeds)
        fanout = max(self.min_fanout, int(self.unicast_budget * self.interval / size) - len(seeds))
        known = sorted(known)
        if len(known) > fanout:
            known = self.rng.sample(known, fanout)
        return seeds + known

    def _seed_targets(self):
        targets = []
        for host, port in self.seeds:
            if isIPAddress(host) or isIPv6Address(host):
                targets.append((host, port))
                continue
            ip, when = self._resolved.get(host, (None, -math.inf))
            if ip is not None:
                targets.append((ip, port))
            resolve = getattr(self.clock, "resolve", None)
            now = self.clock.seconds()
            if resolve is not None and now - when >= RESOLVE_EVERY:
                self._resolved[host] = (ip, now)
                resolve(host).addCallbacks(self._resolved_seed, self._resolve_failed,
                                           callbackArgs=(host,), errbackArgs=(host,))
        return targets

    def _resolved_seed(self, ip, host):
        self._resolved[host] = (ip, self.clock.seconds())

    def _resolve_failed(self, failure, host):
        self.log.warn("gossip seed {host} does not resolve: {error}",
                      host=host, error=failure.getErrorMessage())

    def _multicast_failed(self, failure, group, interface):
        self.counters["multicast_errors"] += 1
        self.log.error("gossip cannot use multicast group {group} on {interface}: {error}",
                       group=group, interface=interface, error=failure.getErrorMessage())

    # -- receiving ---------------------------------------------------------

    def datagram_received(self, data, address):
        """Check, in order of cost, then accept or drop-and-count."""
        now = self.clock.seconds()
        self.counters["received"] += 1
        try:
            gossip = datagram.decode(data)
        except datagram.DatagramError as e:
            self.dropped[e.reason] += 1
            return
        roster = self.roster
        sender = gossip.bolt_id
        if gossip.federation_id != roster.federation_id:
            reason = "foreign"
        elif sender == self.id:
            reason = "own"
        elif roster.is_removed(sender):
            reason = "removed"
        elif (key := roster.key_of(sender)) is None:
            reason = "unknown"
        elif self.cache.is_replay(gossip):
            reason = "replayed"
        elif not self._verify(gossip, key):
            reason = "bad_signature"
        else:
            reason = None
        if reason is not None:
            self.dropped[reason] += 1
            return
        self.counters["accepted"] += 1
        ours = self._sync_roster()
        self.cache.accept(gossip, now, address)
        detector = self.detector
        detector.heard(sender, now)
        tags = self._tags
        for tag, age_ms in gossip.peers:
            bolt_id = tags.get(tag)
            if bolt_id is not None and bolt_id != sender:
                detector.relayed(bolt_id, now - age_ms / 1000.0 - HOP_PENALTY, now)
        if gossip.digest != ours:
            self.pulls.mismatch(now)
        for listener in list(self._heard):
            try:
                listener()
            except Exception:
                self.log.failure("a gossip listener failed")

    def on_change(self, listener):
        """Call ``listener()`` after every datagram accepted (the observability
        cache and the detector have taken it in)."""
        self._heard.append(listener)

    def _sync_roster(self):
        """Our roster digest; when it changed, re-read who the peers are."""
        roster = self.roster
        digest = roster.digest()
        if digest != self._roster_digest:
            self._roster_digest = digest
            ids = {b for b in roster.bolt_ids() if b != self.id and not roster.is_removed(b)}
            # Only what changed: a roster of thousands changes by a few rows.
            known = self._peer_ids
            new = ids - known
            tag = datagram.peer_tag
            self._tags.update((tag(bolt_id), bolt_id) for bolt_id in new)
            self.detector.track_many(new)
            gone = known - ids
            if gone:
                self._tags = {tag: b for tag, b in self._tags.items() if b not in gone}
            for bolt_id in (set(self.detector) | set(self.cache)) - ids:
                self.detector.forget(bolt_id)
                self.cache.forget(bolt_id)
            self._peer_ids = ids
        return digest

    def _pull_candidates(self):
        """{bolt id: digest} of live peers whose roster digest differs from ours."""
        ours = self._sync_roster()
        return {bolt_id: record.digest for bolt_id, record in self.cache.items()
                if record.digest != ours and self.detector.state(bolt_id) != DOWN}

    # -- reads -------------------------------------------------------------

    def _state_changed(self, bolt_id, old, new):
        if self._on_state_change is not None:
            try:
                self._on_state_change(bolt_id, old, new)
            except Exception:
                self.log.failure("on_state_change failed")

    def peer_states(self):
        """{bolt id: dict} for admin reads: liveness and counters, with ages (s)."""
        self.detector.evaluate()
        now = self.clock.seconds()
        states = {}
        for bolt_id in self.detector:
            live = self.detector.get(bolt_id)
            record = self.cache.get(bolt_id)
            states[bolt_id] = {
                "state": live.state,
                "state_age": now - live.since,
                "last_heard": None if live.direct is None else now - live.direct,
                "evidence_age": self.detector.evidence_age(bolt_id, now),
                "transitions": live.transitions,
                "counters": record.counters._asdict() if record else None,
                "counters_age": now - record.received_at if record else None,
                "checkin_rate": record.checkin_rate if record else None,
                "incarnation": record.incarnation if record else None,
                "seq": record.seq if record else None,
                "digest": record.digest.hex() if record else None,
                "address": record.address if record else None,
            }
        return states

    def stats(self):
        """Counters for /metrics: sent, received, accepted, drops by reason,
        detector transitions, pull requests."""
        out = {key: self.counters[key] for key in (
            "sent", "sent_bytes", "send_errors", "received", "accepted", "multicast_errors")}
        out["pulls"] = self.pulls.requests
        out["dropped"] = {reason: self.dropped[reason] for reason in DROP_REASONS}
        out["transitions"] = dict(self.detector.transitions)
        return out
