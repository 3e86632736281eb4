"""SIGHUP: the server reads its config file again and applies what can change live.

``Reloader`` is what the signal runs (``vigo.server.service.VigoProcess``
installs it): it loads the file the server started with (``config.source``,
with the same ``--mode`` and ``--data-dir``), validates it, and hands it to the
root service's ``reload`` (``VigoServer.reload``, or ``ServerHost.reload``,
which forwards it to its current tree); ``reload_tree`` applies it to one tree.

What changes live:

* ``hostcrates``: the file is read again (the same path too): every envoy's
  bundle is recomputed, and an envoy whose bundle changed gets it at its next
  check-in (the version it reports no longer matches);
* ``checkin.interval`` and ``checkin.offline_after``: envoys are told the new
  interval as they attach or enroll; the offline sweep runs on it (an envoy
  attached before a shorter one is allowed the one it was told). An interval
  not shorter than the running ``limits.envoy.idle`` needs a restart;
* on a bolt that is a member, ``spanner.bolt_name`` and ``spanner.patterns``
  *as the config file sets them*: the next seq of its row, signed and
  announced to the other bolts (``OwnRow.change``). A key the file leaves out
  (the name then defaults to the hostname; no patterns) leaves the row's
  alone: ``spanner init`` may have set them. Envoys the bolt holds stay; the
  patterns decide where new envoys enroll.

Everything else that differs (ports, ``data_dir``, the mode, TLS files,
limits, ``peers.*``, gossip, D-Bus) is not applied, and the log says
``needs a restart: <keys>``. A config that does not load, a hostcrates file
that does not parse, a name or patterns the roster refuses: one log line says
what is wrong, and nothing changes. The config has no log level: there is
none to reload.

A standby (high availability) keeps what it is given for when it is
promoted; its read-only API shows the new hostcrates at once.
"""

import os

import attr
import yaml
from twisted.internet import defer
from twisted.logger import Logger

from vigo.config import Address, ConfigError, load_config
from vigo.fleet.hostcrates import Hostcrates, HostcratesError
from vigo.interfaces.errors import Refusal
from vigo.server.log_level import LEVEL

#: Config keys a reload applies; any other key that differs needs a restart.
LIVE_KEYS = frozenset({"checkin.interval", "checkin.offline_after", "hostcrates",
                       "spanner.bolt_name", "spanner.patterns", "log.level"})


class ReloadRefused(Exception):
    """The new config cannot be applied; nothing was changed. One line: why."""


@attr.s
class Report:
    """What one reload did: ``config`` is the config in force now (the old
    one with what was applied), ``reloaded`` says what changed live,
    ``restart`` names the keys that differ but need a restart, ``failed``
    what could not be applied (after the rest was)."""

    config = attr.ib()
    reloaded = attr.ib(factory=list)
    restart = attr.ib(factory=list)
    failed = attr.ib(factory=list)


def config_loader(config, mode=None, data_dir=None):
    """A function loading the config the server was started with again: the
    same file (``config.source``) with the same command-line overrides."""
    def load():
        if config.source is None:
            raise ConfigError("the server started on built-in defaults (no config file): "
                              "there is nothing to reload")
        if not os.path.isfile(config.source):
            raise ConfigError("%s: the config file is gone" % (config.source,))
        return load_config(config.source, mode=mode, data_dir=data_dir)
    return load


def flattened(value, prefix=""):
    """``{dotted key: value}`` of a config (or one of its sections; an
    address is one value)."""
    if not attr.has(type(value)) or isinstance(value, Address):
        return {prefix: value}
    out = {}
    for field in attr.fields(type(value)):
        key = "%s.%s" % (prefix, field.name) if prefix else field.name
        out.update(flattened(getattr(value, field.name), key))
    return out


def differing(old, new):
    """The dotted keys whose values differ between two configs, sorted."""
    before, after = flattened(old), flattened(new)
    return sorted(key for key in set(before) | set(after)
                  if key != "source" and before.get(key) != after.get(key))


def row_keys_set(path):
    """``(name, patterns)``: whether the config file ``path`` sets
    ``spanner.bolt_name``, and non-empty ``spanner.patterns``."""
    if path is None:
        return False, False
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError):
        return False, False
    spanner = data.get("spanner") if isinstance(data, dict) else None
    if not isinstance(spanner, dict):
        return False, False
    return spanner.get("bolt_name") is not None, bool(spanner.get("patterns"))


def _seconds(value):
    return "%gs" % (value,)


def _member_row(tree):
    """The ``OwnRow`` of ``tree`` if it is a bolt that is a member, else None."""
    parts = getattr(tree, "spanner", None)
    if parts is None or parts.roster.current is None:
        return None
    return parts.own_row


async def reload_tree(tree, new):
    """Apply config ``new`` to the running tree ``tree`` (a ``VigoServer``,
    or a standby's tree): a ``Report``. Raises ``ReloadRefused`` (nothing
    changed) if part of it cannot be applied."""
    old = tree.config
    report = Report(config=old)
    keys = set(differing(old, new))
    restart = {key for key in keys if key not in LIVE_KEYS}
    fleet = getattr(tree, "fleet", None)  # None on a standby
    later = "" if fleet is not None else " (when this node is promoted)"

    # -- check everything first: a refusal changes nothing ---------------------------
    try:
        hostcrates = Hostcrates.load(new.hostcrates)
    except HostcratesError as e:
        raise ReloadRefused(str(e)) from None
    cadence = {"checkin.interval", "checkin.offline_after"} & keys
    if "checkin.interval" in cadence and new.checkin.interval >= old.limits.envoy.idle:
        # The envoy port keeps its idle deadline: envoys would be hung up on
        # between check-ins.
        cadence.discard("checkin.interval")
        restart.add("checkin.interval")
    row_keys = {"spanner.bolt_name", "spanner.patterns"} & keys
    own_row, row_changes = _member_row(tree), {}
    if own_row is not None:
        sets_name, sets_patterns = row_keys_set(new.source)
        try:
            row_changes = own_row.changes_for(
                name=new.spanner.bolt_name if sets_name else None,
                patterns=new.spanner.patterns if sets_patterns else None)
        except Refusal as e:
            raise ReloadRefused("spanner.bolt_name / spanner.patterns: %s" % (e.reason,)) \
                from None
    elif getattr(tree, "spanner", None) is not None or fleet is None:
        # A bolt not yet a member founds or joins with the config it started
        # with; a standby publishes no row.
        restart |= row_keys
        row_keys = set()

    # -- apply ------------------------------------------------------------------------
    applied = {"hostcrates": new.hostcrates}
    shown = new.hostcrates or "(none)"
    if fleet is not None:
        if not hostcrates.same_as(fleet.hostcrates):
            changed = fleet.set_hostcrates(hostcrates)
            report.reloaded.append("hostcrates %s: %d envoy(s) get a new bundle at their next "
                                   "check-in" % (shown, changed))
        else:
            fleet.hostcrates = hostcrates
            if "hostcrates" in keys:
                report.reloaded.append("hostcrates %s: the same bundles" % (shown,))
        replication = getattr(tree, "replication", None)
        if replication is not None:
            replication.hostcrates = new.hostcrates  # what base copies carry from now on
    elif new.hostcrates is not None and hasattr(getattr(tree, "api", None), "hostcrates"):
        tree.api.hostcrates = hostcrates
        report.reloaded.append("hostcrates %s" % (shown,))
    if cadence:
        interval = new.checkin.interval if "checkin.interval" in cadence else \
            old.checkin.interval
        applied["checkin"] = attr.evolve(old.checkin, interval=interval,
                                         offline_after=new.checkin.offline_after)
        if "checkin.interval" in cadence:
            report.reloaded.append("checkin.interval %s -> %s (envoys are told as they "
                                   "attach)%s" % (_seconds(old.checkin.interval),
                                                  _seconds(interval), later))
        if "checkin.offline_after" in cadence:
            report.reloaded.append("checkin.offline_after %d -> %d%s" % (
                old.checkin.offline_after, new.checkin.offline_after, later))
        if fleet is not None:
            fleet.set_cadence(interval, new.checkin.offline_after)
            tree.set_sweep_interval(interval)
    if row_keys or row_changes:
        applied["spanner"] = attr.evolve(old.spanner, bolt_name=new.spanner.bolt_name,
                                         patterns=new.spanner.patterns)
    if "log.level" in keys:
        LEVEL.set_level(new.log.level)
        applied["log"] = new.log
        report.reloaded.append("log.level %s -> %s" % (old.log.level, new.log.level))
    report.config = tree.config = attr.evolve(old, **applied)
    if row_changes:
        try:
            row = await own_row.change(**row_changes)
        except Exception as e:
            report.failed.append("spanner.bolt_name / spanner.patterns: %s" % (
                getattr(e, "reason", None) or e,))
        else:
            if row is not None:
                report.reloaded.append("its row: seq %d with %s, signed and announced" % (
                    row.seq, ", ".join(
                        "name %r" % (row.name,) if key == "name" else
                        "patterns %s" % (", ".join(row.patterns) or "(none)",)
                        for key in sorted(row_changes))))
    report.restart = sorted(restart)
    return report


async def reload_host(host, new):
    """Apply config ``new`` to ``host``'s current tree (a ``ServerHost``: HA
    on); the trees it builds next are built from what was applied."""
    if host.current is None or host._rebuilding is not None:
        raise ReloadRefused("this node is changing its role: send SIGHUP again once it is "
                            "ready")
    report = await reload_tree(host.current, new)
    host.config = report.config
    return report


class Reloader:
    """Reloads the config of the root service ``server`` (its ``reload``)
    when asked (SIGHUP); ``load()`` returns the config file's config again,
    or raises ``ConfigError``. One reload at a time; one asked for while the
    server starts runs once it is ready (``started``)."""

    log = Logger()

    def __init__(self, server, load):
        self.server = server
        self._load = load
        self._lock = defer.DeferredLock()
        self._ready = False
        self._pending = False

    def started(self):
        """The server is ready: a reload asked for meanwhile runs now."""
        self._ready = True
        if self._pending:
            self._pending = False
            self.reload()

    def reload(self):
        """Reload now (after any reload under way); a Deferred of the
        ``Report``, or of None if nothing was reloaded. Never fails: what went
        wrong is logged."""
        if not self._ready:
            if not self._pending:
                self.log.info("SIGHUP: the server is starting; its config is reloaded once "
                              "it is ready")
            self._pending = True
            return defer.succeed(None)
        return self._lock.run(lambda: defer.ensureDeferred(self._reload()))

    async def _reload(self):
        try:
            new = self._load()
            report = await defer.maybeDeferred(self.server.reload, new)
        except (ConfigError, ReloadRefused) as e:
            self.log.error("SIGHUP: config not reloaded, nothing changed: {why}", why=str(e))
            return None
        except Exception:
            self.log.failure("SIGHUP: reloading the config failed")
            return None
        what = "; ".join(report.reloaded) or "nothing to change"
        if report.failed:
            what += "; not applied: " + "; ".join(report.failed)
        self.log.info("SIGHUP: reloaded {source}: {what}", source=new.source, what=what,
                      reloaded=report.reloaded, failed=report.failed)
        if report.restart:
            self.log.warn("SIGHUP: changed in {source} but not applied, needs a restart: "
                          "{keys}",
                          source=new.source, keys=", ".join(report.restart),
                          restart=report.restart)
        return report
