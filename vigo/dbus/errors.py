"""Refusals as D-Bus errors: one error name per refusal code, in one table.

A method that refuses answers with the D-Bus error
``org.vigo.Server.Error.<Name>`` of the refusal's code (``REFUSAL_ERRORS``:
``not_found`` is ``org.vigo.Server.Error.NotFound``) and the refusal's reason
as the message, so a caller acts on the error name as a program acts on the
code. A code missing from the table is ``org.vigo.Server.Error.Refused`` with
the message ``code: reason``. Anything else that goes wrong is
``org.vigo.Server.Error.Failed`` (the server's log has the traceback).
"""

from txdbus.error import DBusException

ERROR_PREFIX = "org.vigo.Server.Error."

#: Every refusal code (``vigo.interfaces.Refusal.code``) and its D-Bus error
#: name after ``ERROR_PREFIX``. The codes are those of docs/envoy-protocol.md,
#: the admin API (vigo/api/responses.py) and peer calls (vigo/interfaces/errors.py).
REFUSAL_ERRORS = {
    # anywhere
    "bad_request": "BadRequest",
    "malformed": "Malformed",
    "not_found": "NotFound",
    "conflict": "Conflict",
    "internal": "Internal",
    "timeout": "Timeout",
    "unavailable": "Unavailable",
    "stopping": "Stopping",
    # envoys and enrollment
    "not_active": "NotActive",
    "unknown_envoy": "UnknownEnvoy",
    "wrong_server": "WrongServer",
    "not_attached": "NotAttached",
    "busy": "Busy",
    "bad_signature": "BadSignature",
    "stale": "Stale",
    "replayed": "Replayed",
    "revoked": "Revoked",
    "replaced": "Replaced",
    "hostname_taken": "HostnameTaken",
    "already_enrolled": "AlreadyEnrolled",
    "key_mismatch": "KeyMismatch",
    "bad_token": "BadToken",
    "token_expired": "TokenExpired",
    "token_used": "TokenUsed",
    "token_withdrawn": "TokenWithdrawn",
    "foreign_token": "ForeignToken",
    "local_admin": "LocalAdmin",
    # a federation: routing, hand-overs, membership
    "not_spanner": "NotSpanner",
    "no_owner": "NoOwner",
    "not_owner": "NotOwner",
    "owner_unreachable": "OwnerUnreachable",
    "minter_unreachable": "MinterUnreachable",
    "routing_failed": "RoutingFailed",
    "unreachable": "Unreachable",
    "no_answer": "NoAnswer",
    "bad_answer": "BadAnswer",
    "moving": "Moving",
    "same_bolt": "SameBolt",
    "bolt_not_found": "BoltNotFound",
    "bolt_not_active": "BoltNotActive",
    "not_drained": "NotDrained",
    "drain_failed": "DrainFailed",
    "removed": "Removed",
    "self": "Self",
    "already_member": "AlreadyMember",
    "not_member": "NotMember",
    "join_refused": "JoinRefused",
    # peer actions
    "peer_error": "PeerError",
    "unknown_action": "UnknownAction",
    "bad_arguments": "BadArguments",
    "refused": "Refused",
    "action_failed": "ActionFailed",
    # high availability
    "ha_off": "HaOff",
    "standby": "Standby",
    "not_primary": "NotPrimary",
    "replication_timeout": "ReplicationTimeout",
}

#: A refusal whose code is not in the table; its message is ``code: reason``.
REFUSED = ERROR_PREFIX + "Refused"
#: Not a refusal: the server failed (its log says why).
FAILED = ERROR_PREFIX + "Failed"


class DbusError(DBusException):
    """An error answer: the D-Bus error ``dbusErrorName`` with ``message``."""

    def __init__(self, name, message):
        DBusException.__init__(self, message)
        self.dbusErrorName = name
        self.message = message

    def __str__(self):
        return self.message


def error_name(code):
    """The D-Bus error name of refusal ``code`` (None if it has none of its own)."""
    name = REFUSAL_ERRORS.get(code)
    return None if name is None else ERROR_PREFIX + name


def refused(refusal):
    """The ``DbusError`` a ``Refusal`` is answered with."""
    name = error_name(refusal.code)
    if name is None:
        return DbusError(REFUSED, "%s: %s" % (refusal.code, refusal.reason))
    return DbusError(name, refusal.reason)
