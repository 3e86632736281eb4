"""Asking a bolt to do something for an operator, and saying why it did not.

An admin operation asked at one bolt often runs at another (a reassign at the
envoy's bolt, a drain at the draining bolt). ``ask`` calls the action there
with a deadline and turns whatever went wrong into a ``Refusal`` the operator
can act on: the bolt did not answer (``unreachable``), it has no such action,
the arguments were wrong, or the action refused, with the action's own code
kept (``not_found``, ``not_active``, ...) and the bolt named.

``action_refusal`` is the plainer translation for reads and ``act``: any
refusal of the action itself is ``action_failed``.
"""

from twisted.internet import defer

from vigo.interfaces.errors import (
    ActionError,
    BadArguments,
    PeerError,
    PeerUnreachable,
    Refusal,
    UnknownAction,
)

#: Seconds a bolt has to answer ``reassign``, ``drain``, ``drain-status`` (a
#: reassign there: two peer calls, three writes).
CALL_TIMEOUT = 30.0


def action_refusal(failure, bolt_id, action):
    """A failed peer action as an operator's ``Refusal``."""
    message = failure.getErrorMessage()
    if failure.check(defer.TimeoutError, defer.CancelledError):
        raise Refusal("unreachable", "bolt %s did not answer %s in time; it may or may not "
                      "have run it" % (bolt_id, action), retryable=True)
    if failure.check(PeerUnreachable):
        raise Refusal("unreachable", message, retryable=True)
    if failure.check(UnknownAction):
        raise Refusal("unknown_action", message)
    if failure.check(BadArguments):
        raise Refusal("bad_request", message)
    if failure.check(PeerError):
        raise Refusal("action_failed", "%s on bolt %s: %s" % (action, bolt_id, message))
    return failure


def refusal_of(failure, bolt_id, action):
    """As ``action_refusal``, but an action's refusal keeps its own code."""
    if failure.check(ActionError) and failure.value.code != ActionError.code:
        refused = failure.value
        reason = refused.reason
        if bolt_id not in reason:  # most reasons name the bolt already
            reason = "%s (on bolt %s)" % (reason, bolt_id)
        raise Refusal(refused.code, reason, refused.retryable)
    return action_refusal(failure, bolt_id, action)


def ask(caller, clock, bolt_id, action, args, timeout=CALL_TIMEOUT):
    """Run ``action`` at ``bolt_id`` through ``caller`` (an ``IPeerCaller``)
    within ``timeout`` seconds of ``clock``: a Deferred of its answer, or of
    a ``Refusal`` (``refusal_of``)."""
    d = caller.call(bolt_id, action, args)
    d.addTimeout(timeout, clock)
    return d.addErrback(refusal_of, bolt_id, action)
