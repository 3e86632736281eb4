"""The plugin API: everything a peer action dropin may import from vigo.

A dropin imports this package (and Twisted, zope.interface and the standard
library), nothing else of vigo; an import-linter contract holds the built-in
dropins in ``vigo/plugins/`` to that. Here are:

* the interfaces an action implements and runs on (``vigo.interfaces.actions``):
  ``IPeerAction``, ``IBolt``, ``IBoltFleet``, ``IBoltEnrollment``, ``IPeerCaller``;
* the schemas its arguments are checked with (``vigo.interfaces.schema``);
* the refusals it raises and its calls fail with (``vigo.interfaces.errors``):
  ``Refusal`` and ``ActionError`` carry a code, a reason and ``retryable`` to
  the caller as data.

``vigo.interfaces.components`` holds the interfaces the server's own
components are wired through; plugins do not need them.
"""

from vigo.interfaces.actions import IBolt, IBoltEnrollment, IBoltFleet, IPeerAction, IPeerCaller
from vigo.interfaces.errors import (
    ActionError,
    ActionFailed,
    BadArguments,
    JoinRefused,
    NotAMember,
    PeerError,
    PeerNoAnswer,
    PeerUnreachable,
    Refusal,
    UnknownAction,
)
from vigo.interfaces.schema import (
    Boolean,
    Bytes,
    DictOf,
    Float,
    Integer,
    Json,
    ListOf,
    Optional,
    Record,
    Schema,
    SchemaError,
    String,
    check,
    check_json,
)

__all__ = [
    "ActionError", "ActionFailed", "BadArguments", "Boolean", "Bytes", "DictOf", "Float",
    "IBolt", "IBoltEnrollment", "IBoltFleet", "IPeerAction", "IPeerCaller", "Integer",
    "JoinRefused", "Json", "ListOf", "NotAMember", "Optional", "PeerError", "PeerNoAnswer",
    "PeerUnreachable", "Record", "Refusal", "Schema", "SchemaError", "String",
    "UnknownAction", "check", "check_json",
]
