"""A base copy: everything a standby needs before it can follow the change log.

``make_base_copy`` (blocking: run it off the reactor) writes a gzipped tar
of a consistent online copy of the database (``vigo.store.online_copy``:
it holds the LSN and epoch it is at), the server's identity key and admin
token (every member serves under the same identity, so envoys keep their
pin) and the hostcrates file. A standby receives it with a
``BaseCopyReceiver`` (bounded by the size announced, checked against its
SHA-256) into ``data_dir/base-copy.tar.gz``, and ``install_base_copy``
(at the standby's next start, its store closed) puts the files in place.
The standby's own ``node.key`` and ``replica.json`` are never touched.
"""

import hashlib
import os
import shutil
import sqlite3
import tarfile
import tempfile

from vigo.store.online_copy import CopyError, check_database, copy_database

DB_FILE = "vigo.sqlite3"
ARCHIVE = "base-copy.tar.gz"
#: The data directory's files a base copy carries besides the database.
SECRET_FILES = ("identity.key", "admin-token")
HOSTCRATES_FILE = "replica-hostcrates.yaml"
#: The largest base copy a standby accepts (bytes).
MAX_SIZE = 16 * 1024 * 1024 * 1024


class BaseCopyError(Exception):
    """A base copy that cannot be made, received or installed."""


def _position(db_path):
    connection = sqlite3.connect(db_path)
    try:
        return tuple(connection.execute("SELECT lsn, epoch FROM replication_state").fetchone())
    finally:
        connection.close()


def make_base_copy(data_dir, scratch_dir, hostcrates=None):
    """Write a base copy of the server in ``data_dir`` under ``scratch_dir``;
    ``(path, size, sha256 hex, lsn, epoch)``. The caller removes the file."""
    fd, path = tempfile.mkstemp(prefix=".vigo-base-copy-", suffix=".tar.gz", dir=scratch_dir)
    os.close(fd)
    db_copy = path + ".db"
    try:
        try:
            copy_database(os.path.join(data_dir, DB_FILE), db_copy)
        except CopyError as e:
            raise BaseCopyError(str(e)) from None
        lsn, epoch = _position(db_copy)
        with tarfile.open(path, "w:gz", compresslevel=1) as archive:
            archive.add(db_copy, DB_FILE)
            for name in SECRET_FILES:
                source = os.path.join(data_dir, name)
                if os.path.exists(source):
                    archive.add(source, name)
            if hostcrates:
                archive.add(hostcrates, HOSTCRATES_FILE)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        if os.path.exists(db_copy):
            os.unlink(db_copy)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return path, os.path.getsize(path), digest.hexdigest(), lsn, epoch


class BaseCopyReceiver:
    """A base copy arriving at a standby, written to ``data_dir`` as it comes."""

    def __init__(self, data_dir, size, lsn, epoch):
        if not 0 < size <= MAX_SIZE:
            raise BaseCopyError("a base copy of %d bytes is out of range" % (size,))
        self.data_dir = data_dir
        self.size, self.lsn, self.epoch = size, lsn, epoch
        self.received = 0
        self._partial = os.path.join(data_dir, ARCHIVE + ".partial")
        self._file = open(self._partial, "wb")
        os.chmod(self._partial, 0o600)
        self._digest = hashlib.sha256()

    def chunk(self, data):
        if self.received + len(data) > self.size:
            self.abandon()
            raise BaseCopyError("the base copy is longer than announced")
        self._file.write(data)
        self._digest.update(data)
        self.received += len(data)

    def end(self, sha256):
        """Check and keep the copy (durably); its path."""
        if self.received != self.size or self._digest.hexdigest() != sha256:
            self.abandon()
            raise BaseCopyError("the base copy arrived damaged (%d of %d bytes, checksum %s)"
                                % (self.received, self.size,
                                   "matches" if self._digest.hexdigest() == sha256 else "differs"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        path = os.path.join(self.data_dir, ARCHIVE)
        os.replace(self._partial, path)
        return path

    def abandon(self):
        if not self._file.closed:
            self._file.close()
        if os.path.exists(self._partial):
            os.unlink(self._partial)


def pending_base_copy(data_dir):
    """The received base copy waiting to be installed, or None."""
    path = os.path.join(data_dir, ARCHIVE)
    return path if os.path.exists(path) else None


def install_base_copy(data_dir):
    """Put the received base copy's files in place (the store must be closed);
    ``(lsn, epoch)`` of the database installed."""
    path = os.path.join(data_dir, ARCHIVE)
    staging = tempfile.mkdtemp(prefix=".vigo-install-", dir=data_dir)
    try:
        names = []
        try:
            with tarfile.open(path, "r:gz") as archive:
                for member in archive:  # streamed: a base copy may be gigabytes
                    if not member.isfile() or member.name not in (
                            DB_FILE, HOSTCRATES_FILE, *SECRET_FILES) or member.name in names:
                        raise BaseCopyError("the base copy holds %r, which it may not"
                                            % (member.name,))
                    target = os.path.join(staging, member.name)
                    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        shutil.copyfileobj(archive.extractfile(member), f, 1 << 20)
                        f.flush()
                        os.fsync(f.fileno())
                    names.append(member.name)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BaseCopyError("the base copy cannot be read: %s" % (e,)) from None
        if DB_FILE not in names:
            raise BaseCopyError("the base copy holds no database")
        try:
            check_database(os.path.join(staging, DB_FILE))
        except CopyError as e:
            raise BaseCopyError(str(e)) from None
        for suffix in ("-wal", "-shm"):
            stale = os.path.join(data_dir, DB_FILE + suffix)
            if os.path.exists(stale):
                os.unlink(stale)
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(data_dir, name))
        _fsync_dir(data_dir)
        os.unlink(path)
        return _position(os.path.join(data_dir, DB_FILE))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["ARCHIVE", "BaseCopyError", "BaseCopyReceiver", "install_base_copy",
           "make_base_copy", "pending_base_copy"]
