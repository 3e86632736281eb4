"""Spanner federation: the replicated roster, routing, gossip, snapshots and peer RPC."""
