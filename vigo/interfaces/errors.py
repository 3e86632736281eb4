"""The errors of peer RPC, the same classes on both ends of the wire.

The server raises ``pb.Error`` subclasses: PB sends those to the caller without
logging a traceback here (a refusal is not a bug in this bolt). The client turns
what arrives back into these classes, so a caller can ``failure.trap`` them
without knowing about PB.
"""

from twisted.spread import pb


class PeerError(pb.Error):
    """Base of every peer RPC error a caller may see."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class NotAMember(PeerError):
    """The calling bolt's key is not (or no longer) an active roster member."""


class UnknownAction(PeerError):
    """No action of that name is loaded on the called bolt."""


class BadArguments(PeerError):
    """An argument had the wrong type, size or name; nothing was run."""


class ActionError(PeerError):
    """An action refused the call; its message is for the caller.

    Actions raise this (or a subclass) for expected refusals, such as an
    unknown envoy; anything else they raise is reported as ``ActionFailed``.
    """


class ActionFailed(PeerError):
    """An action broke (its traceback is in the called bolt's log) or returned
    something that is not small JSON data."""


class JoinRefused(PeerError):
    """The called bolt did not admit the applicant."""


class PeerUnreachable(Exception):
    """The peer could not be asked: not connected, or no answer in time.

    Raised on the calling side only. As such (not connected) the action did
    not run; as ``PeerNoAnswer`` it may or may not have.
    """


class PeerNoAnswer(PeerUnreachable):
    """The call was sent, but no answer came (in time, or before a hang-up):
    the action may or may not have run."""


#: Every error that crosses the wire, for the client to map back by name.
WIRE_ERRORS = (NotAMember, UnknownAction, BadArguments, ActionError, ActionFailed, JoinRefused)
