"""The envoy reassignment actions: ``reassign`` and ``accept-envoy``.

``vigocli spanner bolt reassign ENVOY --to BOLT``, asked at any bolt, finds
the bolt holding the envoy active (the source) and calls ``reassign`` there.
The source calls ``accept-envoy`` at the destination with the envoy's durable
fields; the destination stores it as active and writes the override envoy ->
itself in the roster (both durable before it answers) and answers with where
envoys reach it. The source then marks the envoy moved, durably, with that
redirect, and sends it there now if it is connected (else at its next Attach).
The envoy keeps its id and key: no re-enrollment.

The hand-over itself is a saga in the core, ``vigo.spanner.reassign``, with
its steps, its crash safety and the repair that finishes what a crash
interrupted; these actions only check their arguments and ask the bolt
(``IBolt.reassign``, ``IBolt.accept_envoy``). A refusal reaches the caller
with its code. See docs/operations.md ("Reassigning an envoy").
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import Float, Integer, IPeerAction, Optional, String

ENVOY_ID = String(128, min_length=1)
BOLT_ID = String(128, min_length=1)


@implementer(IPlugin, IPeerAction)
class AcceptEnvoy:
    """Take, here, an envoy another bolt hands over, and claim it in the roster."""

    name = "accept-envoy"
    description = ("Store an envoy another bolt hands over as active here and write the "
                   "override envoy -> this bolt; answers where envoys reach this bolt.")
    argument_schema = {
        "id": ENVOY_ID,
        "hostname": String(253, min_length=1),
        "public_key": String(64, min_length=1),
        "enrolled_at": Float(0),
        "last_seq": Integer(0, 2**63 - 1),
        "applied_version": String(64, min_length=64, pattern="[0-9a-f]{64}"),
        "token_id": Optional(String(128)),
    }

    def run(self, bolt, caller_id, args):
        return bolt.accept_envoy(caller_id, args)


@implementer(IPlugin, IPeerAction)
class Reassign:
    """Hand one envoy of this bolt to another bolt, and send it there."""

    name = "reassign"
    description = ("Move an envoy of this bolt (envoy: id or hostname) to bolt `to`: it "
                   "accepts it, then this bolt marks it moved and redirects it.")
    argument_schema = {
        "envoy": String(253, min_length=1),
        "to": BOLT_ID,
    }

    def run(self, bolt, caller_id, args):
        return bolt.reassign(args["envoy"], args["to"])


accept_envoy = AcceptEnvoy()
reassign = Reassign()
