"""Backups: one archive holds everything a server needs to start again elsewhere.

``create_backup`` writes a gzipped tar archive (mode 0600: it holds the
server's secrets) of:

* ``data/vigo.sqlite3``: a consistent online copy of the database (enrollments,
  tokens, the roster: ``vigo.store.online_copy``), taken while the server runs;
* ``data/identity.key``, ``admin-token``, ``api-key.pem``, ``api-cert.pem``
  (whichever exist): the server's keys, as they are;
* ``config/server.yaml``, the hostcrates file and ``server.tls`` files it names;
* ``manifest.json``: what is in it, with each member's SHA-256.

``restore_backup`` checks all of that before it writes anything, then makes a
fresh data directory (it refuses one that is not empty) holding the data files
and a ``server.yaml`` that points at them: the restored server starts with
``twistd vigo --config DIR/server.yaml`` and serves its envoys under the same
identity.

A restore also moves every envoy's check-in sequence floor up to now (plus the
reservation and the clock window: ``RESTORE_FLOOR``), since check-ins accepted
after the backup was taken are not in it and could otherwise be replayed; the
envoys learn the new floor when they attach.
"""

import datetime
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time

import yaml

from vigo import __version__
from vigo.config import ConfigError, load_config
from vigo.identity import Identity, IdentityError
from vigo.store.online_copy import CopyError, check_database, copy_database

FORMAT = 1
DB_FILE = "vigo.sqlite3"
#: The data directory's files a backup holds besides the database (0600 but the certificate).
DATA_FILES = ("identity.key", "admin-token", "api-key.pem", "api-cert.pem")
PUBLIC_FILES = ("api-cert.pem",)
#: Microseconds a restore puts every envoy's sequence floor above now: the
#: reservation (10 min) and the check-in clock window (300 s).
RESTORE_FLOOR = (600 + 300) * 1_000_000


class BackupError(Exception):
    """A backup that cannot be made or restored; the message says why and what to do."""


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _config_files(config_path):
    """``{archive name: path}`` of the config file and the files it names."""
    if config_path is None:
        return {}
    try:
        config = load_config(config_path, environ={})
    except ConfigError as e:
        raise BackupError("cannot read the config to back it up: %s" % (e,)) from None
    files = {"config/server.yaml": config_path}
    if config.hostcrates:
        files["config/hostcrates.yaml"] = config.hostcrates
    if config.server.tls is not None:
        files["config/tls/api.crt"] = config.server.tls.cert_file
        files["config/tls/api.key"] = config.server.tls.key_file
    return files


def create_backup(data_dir, archive_path, config_path=None, clock=time.time):
    """Write the backup of the server in ``data_dir`` (its config at
    ``config_path``, if any) to ``archive_path``, which must not exist.
    Returns the manifest."""
    if os.path.exists(archive_path):
        raise BackupError("%s exists already; give a new file name" % (archive_path,))
    if not os.path.isfile(os.path.join(data_dir, DB_FILE)):
        raise BackupError("%s holds no vigo database (%s); is it the server's data "
                          "directory?" % (data_dir, DB_FILE))
    members = {}
    scratch = tempfile.mkdtemp(prefix=".vigo-backup-",
                               dir=os.path.dirname(os.path.abspath(archive_path)))
    try:
        copy = os.path.join(scratch, DB_FILE)
        try:
            schema = copy_database(os.path.join(data_dir, DB_FILE), copy)
        except CopyError as e:
            raise BackupError(str(e)) from None
        members["data/" + DB_FILE] = _read(copy)
        for name in DATA_FILES:
            path = os.path.join(data_dir, name)
            if os.path.exists(path):
                members["data/" + name] = _read(path)
        for name, path in _config_files(config_path).items():
            members[name] = _read(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    identity = _identity(members)
    manifest = {
        "format": FORMAT,
        "vigo_version": __version__,
        "created_at": datetime.datetime.fromtimestamp(
            clock(), datetime.timezone.utc).isoformat(timespec="seconds"),
        "server_id": identity.id,
        "schema_version": schema,
        "files": {name: _sha256(data) for name, data in sorted(members.items())},
    }
    partial = archive_path + ".partial"
    fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            _add(archive, "manifest.json", json.dumps(manifest, indent=2).encode())
            for name, data in sorted(members.items()):
                _add(archive, name, data)
            raw.flush()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, archive_path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return manifest


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BackupError("cannot read %s: %s" % (path, e.strerror)) from None


def _add(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(data))


def _identity(members):
    data = members.get("data/identity.key")
    if data is None:
        raise BackupError("the backup holds no identity.key: it cannot restore a server")
    try:
        return Identity.from_pem(data)
    except IdentityError as e:
        raise BackupError("identity.key in the backup: %s" % (e,)) from None


# -- restore -----------------------------------------------------------------------


def read_backup(archive_path):
    """``(manifest, {name: bytes})`` of a backup, every member checked
    against the manifest; ``BackupError`` for anything else."""
    try:
        archive = tarfile.open(archive_path, mode="r:gz")
    except (OSError, tarfile.TarError) as e:
        raise BackupError("%s is not a vigo backup (%s)" % (archive_path, e)) from None
    members = {}
    with archive:
        try:
            for info in archive:
                if not info.isfile() or info.name in members:
                    raise BackupError("%s holds %r, which no vigo backup holds"
                                      % (archive_path, info.name))
                members[info.name] = archive.extractfile(info).read()
        except (OSError, tarfile.TarError, EOFError) as e:
            raise BackupError("%s is damaged: %s" % (archive_path, e)) from None
    try:
        manifest = json.loads(members.pop("manifest.json"))
        files = manifest["files"]
    except (KeyError, ValueError, TypeError):
        raise BackupError("%s has no readable manifest.json" % (archive_path,)) from None
    if manifest.get("format") != FORMAT:
        raise BackupError("%s is a backup of format %r; this vigo reads format %d"
                          % (archive_path, manifest.get("format"), FORMAT))
    if set(files) != set(members):
        raise BackupError("%s does not hold what its manifest lists" % (archive_path,))
    for name, data in members.items():
        if _sha256(data) != files[name]:
            raise BackupError("%s: %s does not match its checksum; the archive is damaged"
                              % (archive_path, name))
    if "data/" + DB_FILE not in members:
        raise BackupError("%s holds no database" % (archive_path,))
    _identity(members)
    return manifest, members


def restore_backup(archive_path, data_dir, clock=time.time):
    """Restore the backup at ``archive_path`` into ``data_dir`` (missing or
    empty). Returns ``{"server_id", "envoys", "config", "created_at"}``."""
    manifest, members = read_backup(archive_path)
    data_dir = os.path.abspath(data_dir)
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise BackupError("%s is not empty: restore into a new or empty directory"
                          % (data_dir,))
    created = not os.path.exists(data_dir)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    os.chmod(data_dir, 0o700)
    try:
        for name, data in members.items():
            if name.startswith("data/"):
                base = name[len("data/"):]
                _write(os.path.join(data_dir, base), data,
                       0o644 if base in PUBLIC_FILES else 0o600)
        db = os.path.join(data_dir, DB_FILE)
        try:
            check_database(db)
        except CopyError as e:
            raise BackupError(str(e)) from None
        envoys = _raise_sequence_floors(db, clock())
        config = _restore_config(members, data_dir, archive_path, manifest)
    except BaseException:
        for name in os.listdir(data_dir):
            path = os.path.join(data_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        if created:
            os.rmdir(data_dir)
        raise
    return {"server_id": manifest["server_id"], "envoys": envoys, "config": config,
            "created_at": manifest.get("created_at")}


def _write(path, data, mode):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _raise_sequence_floors(db, now):
    """Every envoy's last sequence at least now + ``RESTORE_FLOOR``; how many envoys."""
    floor = int(now * 1_000_000) + RESTORE_FLOOR
    connection = sqlite3.connect(db)
    try:
        with connection:
            columns = {row[1] for row in connection.execute("PRAGMA table_info(envoys)")}
            if "seq_reserved" in columns:
                connection.execute(
                    "UPDATE envoys SET last_seq = MAX(last_seq, seq_reserved, ?), "
                    "seq_reserved = MAX(last_seq, seq_reserved, ?)", (floor, floor))
            else:
                connection.execute("UPDATE envoys SET last_seq = MAX(last_seq, ?)", (floor,))
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM envoys WHERE state = 'active'").fetchone()
    finally:
        connection.close()
    return count


def _restore_config(members, data_dir, archive_path, manifest):
    """Write ``data_dir/server.yaml`` pointing at the restored files; its path."""
    original = members.get("config/server.yaml")
    config = {}
    if original is not None:
        try:
            config = yaml.safe_load(original) or {}
        except yaml.YAMLError as e:
            raise BackupError("the server.yaml in the backup does not parse: %s" % (e,)) \
                from None
        _write(os.path.join(data_dir, "server.yaml.orig"), original, 0o600)
    if not isinstance(config, dict):
        raise BackupError("the server.yaml in the backup is not a mapping")
    server = dict(config.get("server") or {})
    server["data_dir"] = data_dir
    for name, data in members.items():
        if name.startswith("config/") and name != "config/server.yaml":
            _write(os.path.join(data_dir, name[len("config/"):]), data, 0o600)
    if "config/hostcrates.yaml" in members:
        config["hostcrates"] = os.path.join(data_dir, "hostcrates.yaml")
    if "config/tls/api.crt" in members:
        server["tls"] = {"cert_file": os.path.join(data_dir, "tls", "api.crt"),
                         "key_file": os.path.join(data_dir, "tls", "api.key")}
    config["server"] = server
    path = os.path.join(data_dir, "server.yaml")
    header = ("# Restored by vigocli backup restore from %s (backup of server %s, taken %s).\n"
              "# Paths point into this directory; the original file is server.yaml.orig.\n"
              % (os.path.abspath(archive_path), manifest["server_id"],
                 manifest.get("created_at")))
    _write(path, (header + yaml.safe_dump(config, sort_keys=False)).encode(), 0o600)
    return path
