"""Which bolt owns a hostname: the one routing rule, used everywhere.

Owner = the envoy's override, if there is one and it names an active bolt;
else the active bolt with the most specific pattern matching the normalised
hostname (most literal, non-wildcard characters), ties to the lowest bolt id.
Draining and removed bolts take no new envoys. No match is a ``NoOwner``
naming the hostname.

The answer is a function of the roster alone, and a roster is a function of
its digest, so every bolt holding the same digest routes the same way. That
also makes the digest the cache key: the compiled table (all patterns in one
regular expression, most specific first) and recent answers are kept per
digest, shared by every roster object with that digest in the process.

``SpannerOwnership`` is the fleet's ``IOwnership`` on a bolt: the fleet asks it
who owns a hostname, and it answers with this rule over the bolt's roster.
"""

import collections
import fnmatch
import re

from zope.interface import implementer

from vigo.fleet.ownership import NoOwner as FleetNoOwner
from vigo.fleet.ownership import Owner
from vigo.hostnames import normalise_hostname
from vigo.identity import key_fingerprint
from vigo.interfaces.components import IOwnership
from vigo.spanner.roster.rows import ACTIVE

MAX_TABLES = 16
MAX_ANSWERS = 200_000  # cached hostname answers per table


class NoOwner(FleetNoOwner):
    """No active bolt's partition takes this hostname."""

    def __init__(self, hostname):
        super().__init__(
            "no active bolt's patterns match %r; a bolt that joins with "
            "spanner.patterns covering it would own it" % (hostname,))
        self.hostname = hostname


def specificity(pattern):
    """How many characters of a glob are literal (outside ``*``, ``?`` and ``[...]``)."""
    count, i, n = 0, 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c in "*?":
            i += 1
        elif c == "[":
            j = i + 1  # find the class's end exactly as fnmatch.translate does
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            end = pattern.find("]", j)
            if end < 0:  # fnmatch reads a lone '[' as a literal
                count += 1
                i += 1
            else:
                i = end + 1
        else:
            count += 1
            i += 1
    return count


class RoutingTable:
    """The compiled pattern table of one roster state (``without`` one bolt)."""

    def __init__(self, roster, without=None):
        entries = []
        for row in roster.active_bolts():
            if row.bolt_id == without:
                continue
            for pattern in set(row.patterns):
                entries.append((-specificity(pattern), row.bolt_id, pattern, row))
        entries.sort(key=lambda e: e[:3])
        # fnmatch.translate gives exactly fnmatchcase's semantics. In one
        # alternation the regex engine tries the entries in order, so the
        # first one that matches is the most specific pattern; each entry is
        # wrapped in a group, and the wrapper is the last group to close.
        alternatives, self._rows = [], {}
        group = 1
        for _, _, pattern, row in entries:
            translated = fnmatch.translate(pattern)
            assert translated.endswith("\\Z"), translated
            alternatives.append("(%s)" % (translated[:-2],))
            self._rows[group] = row
            group += 1 + re.compile(translated).groups
        self._regex = re.compile("|".join(alternatives)) if alternatives else None
        self._answers = {}

    def owner(self, hostname):
        """The pattern owner's row for a normalised hostname, or None."""
        row = self._answers.get(hostname, False)
        if row is False:
            match = self._regex.fullmatch(hostname) if self._regex is not None else None
            row = None if match is None else self._rows[match.lastindex]
            if len(self._answers) >= MAX_ANSWERS:
                self._answers.clear()
            self._answers[hostname] = row
        return row


_tables = collections.OrderedDict()


def routing_table(roster):
    """The ``RoutingTable`` for ``roster``'s current state (cached by digest)."""
    key = roster.digest()
    table = _tables.get(key)
    if table is None:
        table = _tables[key] = RoutingTable(roster)
        while len(_tables) > MAX_TABLES:
            _tables.popitem(last=False)
    else:
        _tables.move_to_end(key)
    return table


def owner_of(roster, hostname, envoy_id=None):
    """The ``AdmissionRow`` of the bolt that owns ``hostname`` (and ``envoy_id``).

    ``envoy_id``, when given, lets an override win. Raises ``NoOwner``, or
    ``HostnameError`` for something that is not a hostname.
    """
    return _owner(roster, routing_table(roster), hostname, envoy_id)


def owners_without(roster, bolt_id):
    """``owner(hostname, envoy_id)``: ``owner_of`` as it will answer once bolt
    ``bolt_id`` takes no envoys (draining), for the roster as it is now."""
    table = RoutingTable(roster, without=bolt_id)
    return lambda hostname, envoy_id=None: _owner(roster, table, hostname, envoy_id, bolt_id)


def _owner(roster, table, hostname, envoy_id, without=None):
    if envoy_id is not None:
        override = roster.override_of(envoy_id)
        if override is not None and override.bolt_id not in (None, without):
            row = roster.row(override.bolt_id)
            if row is not None and row.status == ACTIVE:
                return row
    name = normalise_hostname(hostname)
    row = table.owner(name)
    if row is None:
        raise NoOwner(name)
    return row


def explain_owner(roster, hostname, envoy_id=None):
    """Why ``owner_of`` answers what it does, for operators: ``{"hostname"
    (normalised), "bolt_id", "name", "by": "override" | "pattern", "pattern"
    (the most specific of the owner's patterns that matches; None for an
    override), "candidates": [{"bolt_id", "name", "pattern"}] (every active
    bolt with a matching pattern, most specific first)}``. Raises ``NoOwner``
    or ``HostnameError`` as ``owner_of`` does."""
    name = normalise_hostname(hostname)
    row = owner_of(roster, name, envoy_id)
    matches = []
    for candidate in roster.active_bolts():
        best = max((p for p in candidate.patterns if fnmatch.fnmatchcase(name, p)),
                   key=specificity, default=None)
        if best is not None:
            matches.append((-specificity(best), candidate.bolt_id, best, candidate.name))
    matches.sort()
    override = None if envoy_id is None else roster.override_of(envoy_id)
    by_override = override is not None and override.bolt_id == row.bolt_id
    return {"hostname": name, "bolt_id": row.bolt_id, "name": row.name,
            "by": "override" if by_override else "pattern",
            "pattern": None if by_override else matches[0][2],
            "candidates": [{"bolt_id": b, "name": n, "pattern": p} for _, b, p, n in matches]}


@implementer(IOwnership)
class SpannerOwnership:
    """Owner = the roster's routing answer (override, then most specific pattern).

    ``roster`` is the bolt's ``ILocalRoster``; ``local`` the ``IOwnership`` of
    this server alone (``StandaloneOwnership``), whose answer stands for this
    bolt. A bolt that has not founded or joined a federation yet owns every
    envoy, like a standalone server.
    """

    def __init__(self, roster, local):
        self.local_id = local.local_id
        self._roster = roster
        self._local = local

    def owner_of(self, hostname, envoy_id=None):
        roster = self._roster.current
        if roster is None:
            return self._local.owner_of(hostname)
        row = owner_of(roster, hostname, envoy_id)
        if row.bolt_id == self.local_id:
            return self._local.owner_of(hostname)
        return Owner(row.bolt_id, row.addresses.envoy, key_fingerprint(row.public_key), False)
