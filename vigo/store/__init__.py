"""The server's SQLite database: ``Store`` runs jobs on its own thread, group-committed.

* ``vigo.store.database``: ``Store`` (one connection, one thread; a job's
  answer means committed to disk), ``shielded``, ``StoreError``;
* ``vigo.store.migrations``: the schema, as the migrations that build it.

Each part of the server keeps its own jobs (functions of a cursor) beside the
code that uses them.
"""

from vigo.store.database import DB_FILE, Store, StoreClosed, StoreError, connect, shielded
from vigo.store.migrations import MIGRATIONS, SCHEMA_VERSION, migrate

__all__ = ["DB_FILE", "MIGRATIONS", "SCHEMA_VERSION", "Store", "StoreClosed", "StoreError",
           "connect", "migrate", "shielded"]
