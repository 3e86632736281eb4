"""Peer actions: finding the dropins, and running one under the rules.

Actions are ``IPeerAction`` dropins found with ``getPlugins(IPeerAction,
vigo.plugins)``; ``vigo.plugins`` extends its ``__path__`` with
``pluginPackagePaths``, so a ``vigo/plugins/`` directory (without
``__init__.py``) on any ``sys.path`` entry contributes actions too.

``run_action`` is the one way an action runs, for a peer's call and a local
one alike: the name and arguments are checked first (size, type, the action's
``argument_schema``), the result after, and whatever the action raises becomes
a ``PeerError`` with a message for the caller.
"""

import os
import sys

from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

import vigo.plugins
from vigo.interfaces.actions import IPeerAction
from vigo.interfaces.errors import (
    ActionError,
    ActionFailed,
    BadArguments,
    BoltStopping,
    PeerError,
    PeerUnreachable,
    Refusal,
    UnknownAction,
)
from vigo.interfaces.schema import Json, Record, Schema, SchemaError, String, check, check_json
from vigo.store import StoreClosed

#: Encoded size bounds. PB allows 640 KiB a string; peer RPC carries small
#: control messages, and bulk data goes over HTTPS.
MAX_ARGS_BYTES = 64 * 1024
MAX_RESULT_BYTES = 256 * 1024

ACTION_NAME = String(64, min_length=1, pattern=r"[a-z0-9_-]{1,64}")
ARGUMENTS = Json(MAX_ARGS_BYTES)

log = Logger()


def load_actions(package=None):
    """Every peer action dropin, as a dict of name to action.

    A dropin that does not provide ``IPeerAction`` properly, or whose name is
    taken already, is left out with an error in the log that names its module;
    the package's own dropins come first, then the others in module order, so
    the same one wins every time and a built-in name cannot be taken over.
    """
    if package is None:
        package = vigo.plugins
    own_directory = os.path.dirname(os.path.abspath(package.__file__))

    def precedence(action):
        # The package's own dropins first: a third party cannot take over a
        # built-in action's name, only be refused for trying.
        module = sys.modules.get(_module_of(action))
        where = os.path.dirname(os.path.abspath(getattr(module, "__file__", None) or "?"))
        return (where != own_directory, _module_of(action))

    found = sorted(getPlugins(IPeerAction, package), key=precedence)
    actions = {}
    for action in found:
        problem = _problem_with(action)
        if problem is None and action.name in actions:
            problem = "action %r is already provided by %s; rename one of them" % (
                action.name, _module_of(actions[action.name]))
        if problem is not None:
            log.error("peer action dropin {module} ignored: {problem}",
                      module=_module_of(action), problem=problem)
            continue
        actions[action.name] = action
    return actions


def _module_of(action):
    return getattr(action, "__module__", None) or type(action).__module__


def _problem_with(action):
    try:
        verifyObject(IPeerAction, action)
    except Invalid as e:
        return "it does not provide IPeerAction: %s" % (e,)
    try:
        check(ACTION_NAME, action.name, "name")
        Record(action.argument_schema)
    except (SchemaError, ValueError, TypeError) as e:
        return "%s (argument_schema maps names to vigo.interfaces.schema schemas)" % (e,)
    if not all(isinstance(schema, Schema) for schema in action.argument_schema.values()):
        return "argument_schema values must be vigo.interfaces.schema schemas"
    return None


def checked(schema, value, path):
    """``schema.check``, raising ``BadArguments`` (which crosses the wire) instead."""
    try:
        check(schema, value, path)
    except SchemaError as e:
        raise BadArguments(str(e)) from None


def check_call(action_name, args):
    """Refuse a bad action name, or arguments that are not a small dict of JSON data."""
    checked(ACTION_NAME, action_name, "action_name")
    if not isinstance(args, dict):
        raise BadArguments("args: expected a dict, got %s" % (type(args).__name__,))
    checked(ARGUMENTS, args, "args")


def run_action(bolt, actions, caller_id, action_name, args):
    """Run a named action for ``caller_id``: check, run, check the result.

    A Deferred of the result; fails with a ``PeerError``. The peer perspective
    and local calls both come through here, so both are held to the same rules.
    """
    try:
        check_call(action_name, args)
    except PeerError:
        return defer.fail()
    return run_checked_action(bolt, actions, caller_id, action_name, args)


def run_checked_action(bolt, actions, caller_id, action_name, args):
    """``run_action`` for a name and arguments that already passed ``check_call``."""
    try:
        action = actions.get(action_name)
        if action is None:
            raise UnknownAction(
                "bolt %s has no action %r; it has: %s"
                % (bolt.id, action_name, ", ".join(sorted(actions)) or "none")
            )
        checked(Record(action.argument_schema), args, "args")
    except PeerError:
        return defer.fail()
    d = defer.maybeDeferred(action.run, bolt, caller_id, args)
    d.addCallbacks(_checked_result, _action_failed,
                   callbackArgs=(bolt, action_name), errbackArgs=(bolt, action_name, caller_id))
    return d


def _checked_result(result, bolt, action_name):
    try:
        check_json(result, MAX_RESULT_BYTES)
    except SchemaError as e:
        log.error("peer action {action} returned what it may not: {error}",
                  action=action_name, error=str(e))
        raise ActionFailed(
            "action %r on bolt %s returned a bad result (%s)" % (action_name, bolt.id, e)
        ) from None
    return result


def _action_failed(failure, bolt, action_name, caller_id):
    if failure.check(PeerUnreachable):  # a call the action made: not the caller's problem
        raise ActionError("action %r on bolt %s: %s" % (action_name, bolt.id, failure.value))
    if failure.check(PeerError):
        return failure
    if failure.check(Refusal):  # the action's own refusal (a fleet's, say): its code stands
        refused = failure.value
        raise ActionError(refused.reason, code=refused.code, retryable=refused.retryable)
    if failure.check(StoreClosed):  # called while this bolt stops: expected, no traceback
        raise BoltStopping("bolt %s is stopping: action %r did nothing; try again"
                           % (bolt.id, action_name))
    log.failure("peer action {action} failed (called by {caller})", failure,
                action=action_name, caller=caller_id)
    raise ActionFailed(
        "action %r failed on bolt %s: %s: %s; that bolt's log has the traceback"
        % (action_name, bolt.id, failure.type.__name__, failure.value)
    )
