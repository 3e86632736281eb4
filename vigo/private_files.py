"""Files that hold secrets are the server user's alone, or the server does not start.

The data directory holds the identity key, the local admin token, the API TLS
key and the database (token hashes, envoy keys, the roster). The server makes
each of them readable by its owner only; one that someone opened up since (or
an operator's ``server.tls.key_file`` that anyone may read) is refused at start
with the file's name, its mode and the command that fixes it, as ssh refuses a
private key others can read. Nothing is changed on the operator's behalf.
"""

import os
import stat

#: The data directory's secret files, with what each holds (for the message).
SECRET_FILES = (
    ("identity.key", "the server's identity key"),
    ("admin-token", "the local admin API token"),
    ("api-key.pem", "the API's TLS key"),
    ("vigo.sqlite3", "the database"),
    ("vigo.sqlite3-wal", "the database's write-ahead log"),
    ("vigo.sqlite3-shm", "the database's shared memory"),
)


class PrivateFileError(Exception):
    """A secret file or the data directory is open to others; the message
    names it and the fix."""


def _mode(path):
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def check_private_file(path, what):
    """Refuse ``path`` (holding ``what``) if its group or others have any access."""
    mode = _mode(path)
    if mode is not None and mode & 0o077:
        raise PrivateFileError(
            "%s (%s) is open to others (mode %o); run: chmod 600 %s" % (path, what, mode, path))


def check_data_dir(data_dir):
    """Refuse a data directory open to others, or any secret file in it that is.
    A directory or file that does not exist yet is made private when created."""
    mode = _mode(data_dir)
    if mode is None:
        return
    if mode & 0o077:
        raise PrivateFileError(
            "the data directory %s is open to others (mode %o); run: chmod 700 %s"
            % (data_dir, mode, data_dir))
    for name, what in SECRET_FILES:
        check_private_file(os.path.join(data_dir, name), what)
