"""A consistent copy of a live database, through SQLite's online backup API.

The server keeps its database in WAL mode, so a reader in another process (a
backup) or on another connection (a standby's base copy) sees one committed
state while the server goes on writing. ``copy_database`` copies it page by
page into a new file readable by its owner only; ``check_database`` says
whether a copy is whole and not newer than this server's schema.
"""

import os
import sqlite3

from vigo.store.migrations import SCHEMA_VERSION


class CopyError(Exception):
    """A database that cannot be copied or is not fit to use; the message says why."""


def copy_database(source_path, target_path, progress=None):
    """Copy the database at ``source_path`` into a new file ``target_path``
    (mode 0600; it must not exist). ``progress(remaining, total)`` is called
    as pages are copied. Returns the schema version of the copy."""
    if not os.path.exists(source_path):
        raise CopyError("no database at %s" % (source_path,))
    fd = os.open(target_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    try:
        source = sqlite3.connect(source_path)
        try:
            target = sqlite3.connect(target_path)
            try:
                # One step (pages=-1): the copy holds a read snapshot for its
                # length, so it is one committed state; WAL lets the server
                # write meanwhile.
                source.backup(target, pages=-1,
                              progress=None if progress is None
                              else lambda status, remaining, total: progress(remaining, total))
                target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                (version,) = target.execute("PRAGMA user_version").fetchone()
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as e:
        os.unlink(target_path)
        raise CopyError("cannot copy the database %s: %s" % (source_path, e)) from None
    return version


def check_database(path):
    """The schema version of the database at ``path``, after SQLite's
    integrity check; ``CopyError`` if it is damaged or newer than this server."""
    try:
        connection = sqlite3.connect("file:%s?mode=ro" % (path,), uri=True)
        try:
            (result,) = connection.execute("PRAGMA quick_check").fetchone()
            (version,) = connection.execute("PRAGMA user_version").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise CopyError("%s is not a usable database: %s" % (path, e)) from None
    if result != "ok":
        raise CopyError("%s is damaged: %s" % (path, result))
    if version > SCHEMA_VERSION:
        raise CopyError("%s has schema version %d, newer than this server's %d; "
                        "upgrade vigosrv" % (path, version, SCHEMA_VERSION))
    return version
