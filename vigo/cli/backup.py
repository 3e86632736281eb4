"""``vigocli backup create`` and ``restore``: on the server's host, no API.

A backup is read from the server's files while it runs (its data directory,
``--data-dir``, and its server.yaml), and a restore writes a new data
directory; neither asks the server anything (``vigo.backup`` does the work).
"""

import json
import os

from vigo.backup import BackupError, create_backup, restore_backup
from vigo.cli.command import Command
from vigo.cli.format import fields, report_error

RUN_FILE = "run.json"


def _config_of(data_dir):
    """The config file the server in ``data_dir`` runs with (its run.json), or None."""
    try:
        with open(os.path.join(data_dir, RUN_FILE)) as f:
            path = json.load(f).get("config_file")
    except (OSError, ValueError, AttributeError):
        return None
    return path if isinstance(path, str) and os.path.isfile(path) else None


def _failed(options, out, err, code, detail, status):
    """Report an error (as JSON too with ``--json``); the exit status."""
    report_error(out, err, options.json, code, detail, human=detail)
    return status


def create(options, out, err):
    if options.data_dir is None:
        return _failed(options, out, err, "usage", "backup create needs --data-dir DIR, the "
                       "server's data directory", 2)
    config = options.config or _config_of(options.data_dir)
    try:
        manifest = create_backup(options.data_dir, options.file, config)
    except BackupError as e:
        return _failed(options, out, err, "backup_failed", str(e), 1)
    if options.json:
        print(json.dumps(manifest, indent=2, sort_keys=True), file=out)
        return 0
    fields([
        ("backup", options.file),
        ("server", manifest["server_id"]),
        ("taken", manifest["created_at"]),
        ("files", ", ".join(name.split("/", 1)[1] for name in manifest["files"])),
    ], out)
    if config is None:
        print("note: no server.yaml in it (the server runs without one, or give --config "
              "PATH)", file=err)
    return 0


def restore(options, out, err):
    if options.data_dir is None:
        return _failed(options, out, err, "usage", "backup restore needs --data-dir DIR, a new "
                       "directory to restore into", 2)
    try:
        restored = restore_backup(options.file, options.data_dir)
    except BackupError as e:
        return _failed(options, out, err, "restore_failed", str(e), 1)
    if options.json:
        print(json.dumps(restored, indent=2, sort_keys=True), file=out)
        return 0
    fields([
        ("restored", restored["server_id"]),
        ("taken", restored["created_at"]),
        ("envoys", restored["envoys"]),
        ("config", restored["config"]),
    ], out)
    print(f"start it with: twistd vigo --config {restored['config']}", file=out)
    return 0


def _unused(options):
    raise AssertionError("a local command asks no server")


COMMANDS = {
    "backup create": Command(None, _unused, None, local=create),
    "backup restore": Command(None, _unused, None, local=restore),
}
