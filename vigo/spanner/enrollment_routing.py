"""Enrollment routing: a Register taken at any bolt, enrolled at the owner.

``EnrollmentRouter`` is the ``router`` a spanner bolt gives its ``Enrollment``.
It calls two built-in peer actions (``vigo/plugins/vigo_enrollment.py``):

* ``route-enrollment`` at the owner of the hostname, with the envoy's Register
  as it was sent (the envoy's signature covers it, so the owner checks it);
* ``redeem-token`` at the bolt that minted the token, from the owner.

Refusals cross as data and come back as a ``Refusal`` with the same code,
reason and ``retryable``. A bolt that cannot be reached
becomes a retryable ``owner_unreachable`` or ``minter_unreachable``: the owner
stores the envoy only after the minter counted the use, so either way nothing
was stored. Token texts are never logged.
"""

from vigo.interfaces.errors import (
    ActionError,
    BoltStopping,
    PeerError,
    PeerNoAnswer,
    PeerUnreachable,
    Refusal,
)

ROUTE_ACTION = "route-enrollment"
REDEEM_ACTION = "redeem-token"


class EnrollmentRouter:
    """Routes enrollments through ``peers`` (an ``IPeerCaller`` reaching other
    bolts); ``is_member(bolt_id)`` says whether a bolt is in this bolt's roster."""

    def __init__(self, peers, is_member):
        self.peers = peers
        self.is_member = is_member

    def route(self, owner_id, fields):
        """Have ``owner_id`` enroll the envoy; a Deferred of its Registered fields."""
        d = self.peers.call(owner_id, ROUTE_ACTION, fields)
        return d.addErrback(_refusal, "owner_unreachable",
                            "the bolt that owns this hostname (%s)" % (owner_id,))

    def redeem_at(self, minter_id, token_text):
        """Have ``minter_id`` count one use of its token; a Deferred."""
        if not self.is_member(minter_id):
            raise Refusal("foreign_token", "the token was minted by server %s, which is not "
                          "a bolt of this federation" % (minter_id,))
        d = self.peers.call(minter_id, REDEEM_ACTION, {"token": token_text})
        return d.addErrback(_refusal, "minter_unreachable",
                            "the bolt that minted the token (%s)" % (minter_id,))


def _refusal(failure, unreachable_code, who):
    if failure.check(PeerNoAnswer):
        raise Refusal(unreachable_code, "%s did not answer: %s; it may have enrolled the "
                      "envoy: register again with the same state directory (the same key); "
                      "if it did, it answers with the same envoy" % (
                          who, failure.getErrorMessage()), retryable=True)
    if failure.check(PeerUnreachable, BoltStopping):
        raise Refusal(unreachable_code, "%s cannot be reached: %s; nothing was stored, "
                      "try again" % (who, failure.getErrorMessage()), retryable=True)
    if failure.check(ActionError):
        refused = failure.value
        if refused.code == ActionError.code:  # no code of its own: say where it failed
            raise Refusal("routing_failed", "%s could not enroll: %s" % (who, refused.reason),
                          retryable=True)
        raise Refusal(refused.code, refused.reason, refused.retryable)
    if failure.check(PeerError):
        raise Refusal("routing_failed", "%s could not enroll: %s; nothing was stored, "
                      "try again" % (who, failure.getErrorMessage()), retryable=True)
    return failure
