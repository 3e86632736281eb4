"""Spanner: servers ("bolts") federated as write-equal peers, no hub, no leader.

Found by the product's words:

* ``roster/``: the admissions roster, a CRDT of signed rows and records
  (``rows``, ``records``, ``crdt``, ``parts``, ``hlc``), its snapshots, its
  storage, and ``local``: this bolt's copy, the one way it changes;
* ``gossip/``: tier-1 datagrams (``datagram``), the failure detector
  (``detector``), the observability cache (``observability``), the
  ``gossiper``, and tier-2 snapshot ``pulls``;
* ``peer/``: peer RPC over Perspective Broker: mutual ``tls``, the ``server``
  (portal, perspectives), the ``client`` and the ``pool`` of clients, the
  ``actions`` registry, and ``asking`` another bolt on an operator's behalf;
* one module per operation: ``membership`` (init, join, admit, remove),
  ``invites``, ``routing`` (who owns a hostname), ``enrollment_routing``,
  ``reads`` (envoys at any bolt), ``reassign``, ``drain``, ``handover`` (the
  repair of interrupted hand-overs), ``own_row`` (this bolt's row), ``status``;
* ``bolt``: the ``IBolt`` facade peer actions run on; ``admin``: what the API
  asks of a bolt; ``member``: the services a member runs.

The wiring that builds a bolt from these is ``vigo.server.spanner``.
"""
