"""The fleet: every envoy a server owns, and the envoy channel they talk over.

``wire`` (the frames), ``channel`` (a connection's protocol), ``port`` (eager
TCP writes), ``index`` (the in-memory records), ``fleet`` (attach, check-in,
force-push, revoke, write-behind), ``enrollment`` and ``enrollment_tokens``,
``hostcrates`` (bundles by hostname), ``ownership`` (who owns an envoy),
``moves`` (handing envoys to another server), ``view`` (what peer actions see),
``stats``. The fleet knows nothing of the federation: it asks an
``IOwnership``.
"""
