"""The enrollment routing actions: ``route-enrollment`` and ``redeem-token``.

Any bolt takes an envoy's Register. One that does not own the hostname calls
``route-enrollment`` at the owner, which checks the envoy's signature and its
ownership, has the token's use counted by ``redeem-token`` at the bolt that
minted it (or counts it itself), stores the envoy, and answers with its own
Registered fields, which the first bolt hands to the envoy so it attaches at
the owner. See ``vigo.spanner.enrollment_routing`` for the calling side.

Both take an enrollment token's text, which holds its secret: among admitted
bolts over mutual TLS that is fine (see docs/security.md), but never log it.
A refusal reaches the caller with its code, so the envoy gets the code it
would get from the owner itself.
"""

import base64
import binascii

from twisted.internet import defer
from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import Integer, IPeerAction, Refusal, String

TOKEN = String(2048, min_length=1)  # no pattern: a schema error would quote the secret
B64_KEY = String(64, min_length=1)
B64_SIGNATURE = String(128, min_length=1)


def _raw(text, field, length):
    """The bytes of base64 ``text``, exactly ``length`` of them; else a refusal."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise Refusal("malformed", "%s is not valid base64" % (field,)) from None
    if len(data) != length:
        raise Refusal("malformed", "%s must be %d bytes, not %d" % (field, length, len(data)))
    return data


@implementer(IPlugin, IPeerAction)
class RouteEnrollment:
    """Enroll, here at the owner, an envoy that registered at another bolt."""

    name = "route-enrollment"
    description = ("Enroll an envoy here (this bolt owns its hostname) from a Register "
                   "another bolt took; answers this bolt's Registered fields.")
    argument_schema = {
        "hostname": String(253, min_length=1),
        "public_key": B64_KEY,
        "token": TOKEN,
        "ts": Integer(0, 2**63 - 1),
        "signature": B64_SIGNATURE,
    }

    def run(self, bolt, caller_id, args):
        public_key = _raw(args["public_key"], "public_key", 32)
        signature = _raw(args["signature"], "signature", 64)
        return bolt.enrollment().enroll_routed(
            args["hostname"], public_key, args["token"], args["ts"], signature)


@implementer(IPlugin, IPeerAction)
class RedeemToken:
    """Count one use of an enrollment token this bolt minted."""

    name = "redeem-token"
    description = ("Count one use of an enrollment token this bolt minted, for an "
                   "enrollment at another bolt; refuses a bad, expired or used token.")
    argument_schema = {"token": TOKEN}

    def run(self, bolt, caller_id, args):
        d = defer.maybeDeferred(bolt.enrollment().redeem, args["token"])
        return d.addCallback(lambda _: {"redeemed": True})


route_enrollment = RouteEnrollment()
redeem_token = RedeemToken()
