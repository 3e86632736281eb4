"""Gossip: tier-1 signed datagrams for liveness and counters, tier-2 snapshot pulls.

``datagram`` is the wire format, ``gossiper`` the service that sends and
receives, ``detector`` the failure detector, ``observability`` the cache of
each peer's figures, ``pulls`` when and how a bolt pulls a peer's roster.
"""
