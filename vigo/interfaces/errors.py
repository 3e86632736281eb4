"""Refusals: what every part of the server says no with, as data.

A ``Refusal`` has a stable ``code`` (a word a program can act on), a
``reason`` for people, and whether trying again later may succeed
(``retryable``). Each boundary carries those three fields as they are, never
as text to be parsed back: the envoy channel sends them in a Refused frame,
the admin API answers ``{"error": code, "detail": reason}`` with an HTTP
status chosen by code (``vigo.api.responses``), and peer RPC sends them in
its answer envelope (``to_wire`` and ``from_wire``), so a refusal raised by a
peer action on one bolt is raised again, code and all, at the caller.

The ``PeerError`` classes are the ways a call to a peer action fails; a
caller traps them by class (``failure.trap(UnknownAction)``) or looks at the
code. An action refuses with ``ActionError(reason, code=...)`` or any
``Refusal``; anything else it raises is reported to the caller as
``ActionFailed``, and its traceback stays in the called bolt's log.
"""

__all__ = [
    "ActionError", "ActionFailed", "BadArguments", "BoltStopping", "JoinRefused", "NotAMember", "PeerError",
    "PeerNoAnswer", "PeerUnreachable", "Refusal", "UnknownAction", "WIRE_ERRORS",
    "from_wire", "to_wire",
]

#: The longest code and reason a peer's error may carry (anything longer is cut).
MAX_CODE = 64
MAX_REASON = 4096


class Refusal(Exception):
    """A refused request: ``code``, ``reason`` and ``retryable``."""

    def __init__(self, code, reason, retryable=False):
        Exception.__init__(self, reason)
        self.code = code
        self.reason = reason
        self.retryable = retryable

    def __str__(self):
        return self.reason

    def __repr__(self):
        return "%s(%r, %r%s)" % (type(self).__name__, self.code, self.reason,
                                 ", retryable=True" if self.retryable else "")

    def as_dict(self):
        """``{"code", "reason", "retryable"}``, JSON-ready."""
        return {"code": self.code, "reason": self.reason, "retryable": self.retryable}


class PeerError(Refusal):
    """Base of every way a call to a peer action can fail, on both ends.

    Each subclass has its own default ``code``; ``ActionError`` carries the
    code the action chose.
    """

    code = "peer_error"
    retryable = False

    def __init__(self, reason, *, code=None, retryable=None):
        Refusal.__init__(self, code or type(self).code, reason,
                         type(self).retryable if retryable is None else retryable)


class NotAMember(PeerError):
    """The calling bolt's key is not (or no longer) an active roster member."""

    code = "not_member"


class UnknownAction(PeerError):
    """No action of that name is loaded on the called bolt."""

    code = "unknown_action"


class BadArguments(PeerError):
    """An argument had the wrong type, size or name; nothing was run."""

    code = "bad_arguments"


class ActionError(PeerError):
    """An action refused the call; its ``code`` and ``reason`` are for the caller.

    Actions raise this (or any ``Refusal``) for expected refusals, such as an
    unknown envoy. Without a ``code`` it is a generic refusal (``refused``).
    """

    code = "refused"


class ActionFailed(PeerError):
    """An action broke (its traceback is in the called bolt's log) or returned
    something that is not small JSON data."""

    code = "action_failed"


class JoinRefused(PeerError):
    """The called bolt did not admit the applicant."""

    code = "join_refused"


class BoltStopping(PeerError):
    """The called bolt is stopping: nothing was done. Callers treat it as an
    unreachable bolt (try again later, or elsewhere)."""

    code = "stopping"
    retryable = True


class PeerUnreachable(PeerError):
    """The peer could not be asked: not connected, or no answer in time.

    Raised on the calling side only. As such (not connected) the action did
    not run; as ``PeerNoAnswer`` it may or may not have.
    """

    code = "unreachable"
    retryable = True


class PeerNoAnswer(PeerUnreachable):
    """The call was sent, but no answer came (in time, or before a hang-up):
    the action may or may not have run."""

    code = "no_answer"


#: The errors that cross the wire, by the name they cross under.
WIRE_ERRORS = {cls.__name__: cls for cls in (
    NotAMember, UnknownAction, BadArguments, ActionError, ActionFailed, JoinRefused,
    BoltStopping)}


def to_wire(refusal):
    """A ``Refusal`` as the error half of a peer answer envelope: plain data.

    A ``PeerError`` of a wire class keeps its class; any other ``Refusal``
    (a fleet's, an action's own) crosses as ``ActionError`` with its code.
    """
    kind = type(refusal).__name__
    if kind not in WIRE_ERRORS:
        kind = ActionError.__name__
    return {"kind": kind, "code": refusal.code, "reason": refusal.reason,
            "retryable": bool(refusal.retryable)}


def from_wire(data, where="the peer"):
    """The ``PeerError`` that ``to_wire`` described; ``ActionFailed`` when
    ``data`` is not such a description (a peer that answers nonsense)."""
    if (type(data) is not dict or data.get("kind") not in WIRE_ERRORS
            or type(data.get("code")) is not str or type(data.get("reason")) is not str
            or type(data.get("retryable")) is not bool):
        return ActionFailed("%s answered with a malformed error" % (where,))
    code = data["code"][:MAX_CODE]
    return WIRE_ERRORS[data["kind"]](data["reason"][:MAX_REASON], code=code,
                                     retryable=data["retryable"])
