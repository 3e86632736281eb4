"""Failing over inside a replica set: which server address an envoy dials next.

A replica set (a primary and its standbys) shares one identity key, so every
replica passes the envoy's pin. Its Registered and Attached answers name the
set's envoy addresses, primary first (``replicas``); the envoy keeps them in
its state directory. When the address it dials cannot be reached, it tries the
others in that order, skipping the one that failed: one ``FailoverPass``. A
standby answers with a Redirect to its primary; one that names an address this
pass already failed to reach is passed over too, so a dead primary and its
not-yet-promoted standbys end the pass (one failure, for the backoff) instead
of sending the envoy round in circles.
"""

import functools

from vigo.config.values import parse_address

MAX_REPLICAS = 16  # addresses kept from one answer; a replica set is a handful


def replica_addresses(value):
    """The replica addresses in ``value`` (a decoded JSON field) as a tuple of
    "host:port" strings, in order, without repeats; None when it is no list of
    strings. Entries that are not host:port are left out, and so is everything
    after the first ``MAX_REPLICAS``.

    The tuples are shared: equal lists give the same tuple, so thousands of
    simulated envoys told the same list hold one copy, and comparing a list with
    the one already kept is mostly an identity check.
    """
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value):
        return None
    return _normalised(tuple(value[:MAX_REPLICAS]))


@functools.lru_cache(maxsize=256)
def _normalised(addresses):
    kept = []
    for text in addresses:
        try:
            address = str(parse_address(text))
        except ValueError:
            continue
        if address not in kept:
            kept.append(address)
    return tuple(kept)


def failover_order(current, replicas):
    """The addresses to dial: ``current`` first, then the other ``replicas``
    in their order (primary first)."""
    return (current, *(address for address in replicas if address != current))


class ReplicasUnreachable(Exception):
    """No replica of the set could be reached; ``failures`` is a list of
    ``(address, reason)`` in the order they were tried."""

    def __init__(self, failures):
        self.failures = failures
        Exception.__init__(self, "no replica answered: " + "; ".join(
            f"{address} ({_reason(reason)})" for address, reason in failures))


def _reason(reason):
    return str(reason) or type(reason).__name__


class FailoverPass:
    """One pass over a replica set, starting at ``current``: ``address`` is the
    one to dial now. ``failed`` and ``redirected`` say what became of it and
    move on; when no address is left they raise ``ReplicasUnreachable`` (or,
    when no replicas are known, the error of the last address itself)."""

    def __init__(self, current, replicas=()):
        self.address = current
        self._order = failover_order(current, replicas)
        self._failures = []
        self._passed = set()

    @property
    def failures(self):
        """``(address, reason)`` of each address passed over so far."""
        return list(self._failures)

    def failed(self, error):
        """``address`` could not be reached (``error``); the next address to dial."""
        self._pass_over(error)
        return self._next(error)

    def redirected(self, address):
        """The server at ``address`` is a standby of this set naming ``address``
        (its primary); the next address to dial: that one, unless this pass
        already failed to reach it."""
        self._pass_over(f"a standby, it redirects to {address}")
        if address not in self._passed:
            self.address = address
            return address
        return self._next(None)

    def _pass_over(self, reason):
        self._failures.append((self.address, reason))
        self._passed.add(self.address)

    def _next(self, error):
        for address in self._order:
            if address not in self._passed:
                self.address = address
                return address
        if len(self._order) == 1 and error is not None:
            raise error  # a server of one address: its own error, as it always was
        raise ReplicasUnreachable(self.failures)
