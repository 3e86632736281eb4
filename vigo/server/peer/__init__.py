"""High availability inside a partition: a primary, its standbys, promotion, fencing.

One server (a standalone server, or one spanner bolt) can be a replica set:
a primary serves, standbys hold a copy of its database, secrets and
hostcrates, and an operator promotes a standby when the primary dies. See
docs/ha.md for the operator's guide and ../shared/design/architecture.md
section 12 for the design.

* ``node``: this node's own key and role file (``replica.json``);
* ``protocol``: the AMP commands of the replication port; ``channel``: one
  connection, answered by the node's current role;
* ``members``: the replica set's records in the replicated database;
  ``pairing``: standby invitations as text;
* ``primary``: admits standbys, streams them the change log (``stream``) or
  a ``base_copy``, says when a write is durable enough (``peers.sync``), and
  is fenced by a higher epoch;
* ``standby``: follows a primary, applies its entries, finds a new one.
"""
