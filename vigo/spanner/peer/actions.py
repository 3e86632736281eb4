"""Peer actions: finding the dropins, and running one under the rules.

Actions are ``IPeerAction`` dropins found with ``getPlugins(IPeerAction,
vigo.plugins)``; ``vigo.plugins`` extends its ``__path__`` with
``pluginPackagePaths``, so a ``vigo/plugins/`` directory (without
``__init__.py``) on any ``sys.path`` entry contributes actions too.

``run_action`` is the one way an action runs, for a peer's call and a local
one alike: the name and arguments are checked first (size, type, the action's
``argument_schema``), the result after, and whatever the action raises becomes
a ``PeerError`` with a message for the caller.

``load_actions`` also notes where each action came from (``Origin``: its
module, file, and the installed distribution that holds the file, if any),
logs one line naming them all, and adds the one action that is not a dropin:
``actions`` (``LoadedActions``), which lists them (``vigocli spanner bolt
actions BOLT``).
"""

import importlib.metadata
import os
import sys

import attr
from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface import implementer
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


#: The name of the built-in action that lists the loaded ones (``LoadedActions``).
LIST_ACTIONS = "actions"
#: Characters of an action's description that ``actions`` answers with, at most.
MAX_DESCRIPTION = 300


def load_actions(package=None):
    """Every peer action dropin, as a dict of name to action, with ``actions``.

    A dropin that does not provide ``IPeerAction`` properly, or whose name is
    taken already, is left out with an error in the log that names its module;
    the built-in dropins come first (vigosrv's own: the package's, not another
    distribution's dropin installed beside them), then the others in module
    order, so the same one wins every time and a built-in name cannot be
    taken over. The log says which actions were loaded and from where.
    """
    if package is None:
        package = vigo.plugins
    found = list(getPlugins(IPeerAction, package))
    listing = LoadedActions()
    origins = find_origins(package, [_module_of(action) for action in found + [listing]])
    origins[_module_of(listing)] = attr.evolve(origins[_module_of(listing)], builtin=True)
    found.sort(key=lambda action: (not origins[_module_of(action)].builtin, _module_of(action)))
    actions = {listing.name: listing}
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
    listing.origins = {name: origins[_module_of(action)] for name, action in actions.items()}
    listing.actions = actions
    log.info("peer actions loaded: {summary}", summary=origins_summary(listing.describe()),
             actions=listing.describe())
    return actions


@attr.s(frozen=True)
class Origin:
    """Where a peer action came from: its ``module``, the ``path`` of its file,
    the installed ``distribution`` (and its ``version``) whose files hold it, or
    None, and whether it is ``builtin`` (part of vigosrv)."""

    module = attr.ib()
    path = attr.ib()
    distribution = attr.ib()
    version = attr.ib()
    builtin = attr.ib()


def find_origins(package, modules):
    """``{module: Origin}`` for the named (imported) modules.

    A module's distribution is the installed one whose file list (its
    ``RECORD``) holds the module's file, looked up in the ``sys.path``
    directory the module was found in. A module is built in when it comes
    from the same distribution as ``package`` itself, or lies in
    ``package``'s own directory and comes from no distribution (a source
    checkout, an editable install): a dropin another distribution installed
    beside the built-in ones is not built in.
    """
    files = {module: _file_of(module) for module in modules}
    own_init = _file_of(package.__name__)
    owners = _owners([f for f in [own_init, *files.values()] if f is not None])
    own_distribution = owners.get(own_init)
    own_directory = os.path.dirname(own_init) if own_init else None
    origins = {}
    for module, path in files.items():
        owner = owners.get(path)
        if owner is not None:
            is_builtin = owner == own_distribution
        else:
            is_builtin = path is not None and os.path.dirname(path) == own_directory
        name, version = owner if owner is not None else (None, None)
        if is_builtin and version is None:
            version = vigo.__version__
        origins[module] = Origin(module, path, name, version, is_builtin)
    return origins


def _file_of(module):
    path = getattr(sys.modules.get(module), "__file__", None)
    return os.path.realpath(path) if path else None


def _owners(paths):
    """``{path: (distribution name, version)}`` for the files of ``paths`` that
    an installed distribution lists, each looked for in the distributions of
    the directories above it (``distribution.files``, its ``RECORD``)."""
    wanted = {}  # directory -> {relative name: path}
    for path in set(paths):
        for directory, name in _candidate_roots(path):
            wanted.setdefault(directory, {})[name] = path
    owners = {}
    for directory, names in wanted.items():
        try:
            distributions = list(importlib.metadata.distributions(path=[directory]))
        except OSError:
            continue
        for distribution in distributions:
            record = distribution.read_text("RECORD")
            if record is not None and not any(name in record for name in names):
                continue  # the quick look: none of the names is in its RECORD
            try:
                listed = distribution.files or ()
            except (OSError, ValueError):
                continue
            for entry in listed:
                path = names.get(str(entry).replace(os.sep, "/"))
                if path is not None and path not in owners \
                        and os.path.realpath(distribution.locate_file(entry)) == path:
                    owners[path] = (distribution.metadata["Name"], distribution.version)
    return owners


def _candidate_roots(path):
    """``(directory, relative name)`` pairs that could have led to ``path``: the
    ``sys.path`` directories it lies under."""
    for entry in sys.path:
        root = os.path.realpath(entry or os.curdir)
        if path.startswith(root.rstrip(os.sep) + os.sep):
            yield root, os.path.relpath(path, root).replace(os.sep, "/")


def origins_summary(described):
    """One line naming the loaded actions and their origins (the start-up log):
    ``11 built in (vigosrv 0.2.0, in /usr/lib/.../vigo/plugins): accept-envoy,
    ...; echo from acme-echo 1.0 (vigo.plugins.acme_echo); ...``."""
    builtin = [entry for entry in described if entry["builtin"]]
    places = sorted({os.path.dirname(e["path"]) for e in builtin
                     if e["path"] and e["module"].startswith("vigo.plugins.")})
    parts = []
    if builtin:
        parts.append("%d built in (vigosrv %s%s): %s" % (
            len(builtin), vigo.__version__, "".join(", in " + p for p in places),
            ", ".join(e["name"] for e in builtin)))
    for entry in described:
        if not entry["builtin"]:
            parts.append("%s from %s" % (entry["name"], origin_text(entry)))
    return "; ".join(parts) or "none"


def origin_text(entry):
    """Where a third-party action came from, in words: ``acme-echo 1.0
    (vigo.plugins.x)``, or ``vigo.plugins.x, no distribution:
    /opt/site-actions/vigo/plugins/x.py``."""
    if entry.get("distribution"):
        return "%s %s (%s)" % (entry["distribution"], entry.get("version"), entry.get("module"))
    return "%s, no distribution: %s" % (entry.get("module"), entry.get("path"))


@implementer(IPeerAction)
class LoadedActions:
    """The built-in ``actions`` action: the peer actions loaded on this bolt
    (this one included) and where each came from. Not a dropin: the loader
    adds it, as it alone knows what it loaded."""

    name = LIST_ACTIONS
    description = "The peer actions loaded on this bolt, and where each came from."
    argument_schema = {}

    def __init__(self):
        self.actions = {}
        self.origins = {}

    def describe(self):
        """The loaded actions, by name: name, description and origin of each."""
        described = []
        for name in sorted(self.actions):
            origin = self.origins[name]
            description = getattr(self.actions[name], "description", None)
            described.append({
                "name": name,
                "description": str(description or "")[:MAX_DESCRIPTION],
                "module": origin.module, "path": origin.path,
                "distribution": origin.distribution, "version": origin.version,
                "builtin": origin.builtin,
            })
        return described

    def run(self, bolt, caller_id, args):
        described = self.describe()
        return {"bolt_id": bolt.id, "name": bolt.name, "vigosrv": vigo.__version__,
                "actions": described, "count": len(described)}


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
