"""Peer RPC: bolts calling each other's actions over Perspective Broker and mutual TLS.

``tls`` (both ends present their identity key), ``server`` (the cred portal:
members get a peer perspective, others may only present an invite),
``client`` (one logged-in connection), ``pool`` (one client per bolt, calls by
bolt id), ``actions`` (the dropin registry and the rules an action runs
under), ``asking`` (an operation asked of another bolt, its failures said as
refusals). Answers cross as envelopes of plain data.
"""
