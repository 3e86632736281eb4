"""Backups: made while the server's store is open, restored into a new directory.

A real ``Store`` on a real SQLite file holds envoys and tokens while the backup
is taken; the restored directory holds the same database, the same keys, a
server.yaml that points at them, and every envoy's sequence floor moved up.
Damaged archives and directories in use are refused before anything is
written. tests.test_integration.BackupTests does the same with real processes.
"""

import io
import json
import os
import sqlite3
import stat
import tarfile

import yaml
from twisted.internet import defer
from twisted.trial import unittest

from tests.fleetkit import EnvoyKey, FleetKit
from vigo.backup import RESTORE_FLOOR, BackupError, create_backup, read_backup, restore_backup
from vigo.config import load_config
from vigo.identity import write_private_file
from vigo.store.online_copy import CopyError, check_database, copy_database

NOW = 1_790_000_000.0


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def rows(path, sql):
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


class BackupTests(unittest.TestCase):
    def setUp(self):
        self.kit = FleetKit(self)
        self.data_dir = self.kit.data_dir
        write_private_file(os.path.join(self.data_dir, "identity.key"),
                           self.kit.identity.to_pem())
        write_private_file(os.path.join(self.data_dir, "admin-token"), b"vgot_secret\n")
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        with open(os.path.join(self.base, "hostcrates.yaml"), "w") as f:
            f.write("- match: '*'\n  environment: prod\n")
        self.config = os.path.join(self.base, "server.yaml")
        self.write_config()
        self.archive = os.path.join(self.base, "backup.tar.gz")

    def write_config(self, tls=""):
        with open(self.config, "w") as f:
            f.write("# the operator's comment\nhostcrates: hostcrates.yaml\nserver:\n"
                    "  data_dir: %s\n  hostname: vigo.example.com\n%s" % (self.data_dir, tls))

    @defer.inlineCallbacks
    def enrolled(self, n):
        keys = []
        for _ in range(n):
            self.count = getattr(self, "count", 0) + 1
            key = EnvoyKey("web%d.dc1.example.com" % (self.count,))
            yield defer.ensureDeferred(self.kit.enroll(key))
            keys.append(key)
        return keys

    @defer.inlineCallbacks
    def test_a_backup_taken_while_the_store_runs_restores_the_same_server(self):
        keys = yield self.enrolled(3)
        token = yield self.kit.tokens.create(uses=5)
        manifest = create_backup(self.data_dir, self.archive, self.config, clock=lambda: NOW)
        self.assertEqual(mode_of(self.archive), 0o600)
        self.assertEqual(manifest["server_id"], self.kit.identity.id)
        self.assertEqual(sorted(manifest["files"]), [
            "config/hostcrates.yaml", "config/server.yaml", "data/admin-token",
            "data/identity.key", "data/vigo.sqlite3"])
        # Written after the backup: not in it.
        yield self.enrolled(1)

        target = os.path.join(self.base, "restored")
        later = self.kit.clock.seconds() + 86400  # above every reservation the kit took
        restored = restore_backup(self.archive, target, clock=lambda: later)
        self.assertEqual((restored["server_id"], restored["envoys"]),
                         (self.kit.identity.id, 3))
        self.assertEqual(mode_of(target), 0o700)
        for name in ("identity.key", "admin-token", "vigo.sqlite3", "server.yaml"):
            self.assertEqual(mode_of(os.path.join(target, name)), 0o600, name)
        with open(os.path.join(target, "identity.key"), "rb") as f:
            self.assertEqual(f.read(), self.kit.identity.to_pem())
        db = os.path.join(target, "vigo.sqlite3")
        self.assertEqual(sorted(r[0] for r in rows(db, "SELECT id FROM envoys")),
                         sorted(k.id for k in keys))
        self.assertEqual(rows(db, "SELECT id, uses FROM enrollment_tokens WHERE uses = 5"),
                         [(token.token_id, 5)])
        floor = int(later * 1_000_000) + RESTORE_FLOOR
        self.assertEqual({r[0] for r in rows(db, "SELECT last_seq FROM envoys")}, {floor})

        # The server.yaml it wrote loads, and points into the restored directory.
        config = load_config(restored["config"], environ={})
        self.assertEqual(config.server.data_dir, target)
        self.assertEqual(config.server.hostname, "vigo.example.com")
        self.assertEqual(config.hostcrates, os.path.join(target, "hostcrates.yaml"))
        with open(os.path.join(target, "server.yaml.orig")) as f:
            self.assertIn("# the operator's comment", f.read())

    @defer.inlineCallbacks
    def test_the_operators_tls_files_come_along(self):
        cert, key = os.path.join(self.base, "api.crt"), os.path.join(self.base, "api.key")
        for path, text in ((cert, "CERT"), (key, "KEY")):
            write_private_file(path, text.encode())
        self.write_config("  tls: {cert_file: %s, key_file: %s}\n" % (cert, key))
        yield self.enrolled(1)
        create_backup(self.data_dir, self.archive, self.config)
        target = os.path.join(self.base, "restored")
        restored = restore_backup(self.archive, target)
        with open(restored["config"]) as f:
            tls = yaml.safe_load(f)["server"]["tls"]
        self.assertEqual(tls, {"cert_file": os.path.join(target, "tls", "api.crt"),
                               "key_file": os.path.join(target, "tls", "api.key")})
        with open(tls["key_file"]) as f:
            self.assertEqual(f.read(), "KEY")

    def test_refusals_change_nothing(self):
        create_backup(self.data_dir, self.archive, self.config)
        e = self.assertRaises(BackupError, create_backup, self.data_dir, self.archive)
        self.assertIn("exists already", str(e))
        e = self.assertRaises(BackupError, create_backup, self.base,
                              os.path.join(self.base, "other.tar.gz"))
        self.assertIn("holds no vigo database", str(e))

        busy = os.path.join(self.base, "busy")
        os.makedirs(busy)
        with open(os.path.join(busy, "something"), "w") as f:
            f.write("mine")
        e = self.assertRaises(BackupError, restore_backup, self.archive, busy)
        self.assertIn("is not empty", str(e))
        self.assertEqual(os.listdir(busy), ["something"])

    def test_a_damaged_archive_is_refused_before_anything_is_written(self):
        create_backup(self.data_dir, self.archive, self.config)
        with tarfile.open(self.archive, "r:gz") as archive:
            members = {info.name: archive.extractfile(info).read() for info in archive}
        members["data/admin-token"] = b"vgot_swapped\n"
        tampered = os.path.join(self.base, "tampered.tar.gz")
        with tarfile.open(tampered, "w:gz") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        target = os.path.join(self.base, "restored")
        e = self.assertRaises(BackupError, restore_backup, tampered, target)
        self.assertIn("data/admin-token does not match its checksum", str(e))
        self.assertFalse(os.path.exists(target))
        garbage = os.path.join(self.base, "garbage")
        with open(garbage, "wb") as f:
            f.write(b"not an archive")
        self.assertIn("is not a vigo backup",
                      str(self.assertRaises(BackupError, read_backup, garbage)))

    def test_a_database_newer_than_this_server_is_refused(self):
        copy = os.path.join(self.base, "copy.sqlite3")
        copy_database(os.path.join(self.data_dir, "vigo.sqlite3"), copy)
        connection = sqlite3.connect(copy)
        connection.execute("PRAGMA user_version = 999")
        connection.close()
        self.assertIn("newer than this server's",
                      str(self.assertRaises(CopyError, check_database, copy)))
        self.assertRaises(CopyError, copy_database, os.path.join(self.base, "nothing"),
                          os.path.join(self.base, "x"))

    def test_the_cli_writes_and_restores(self):
        from vigo.cli.arguments import parse
        from vigo.cli.backup import create, restore

        with open(os.path.join(self.data_dir, "run.json"), "w") as f:
            json.dump({"config_file": self.config}, f)
        out, err = io.StringIO(), io.StringIO()
        status = create(parse(["backup", "create", self.archive, "--data-dir", self.data_dir]),
                        out, err)
        self.assertEqual((status, err.getvalue()), (0, ""))
        self.assertRegex(out.getvalue(), r"(?m)^server +%s$" % (self.kit.identity.id,))
        self.assertIn("config/server.yaml", json.dumps(read_backup(self.archive)[0]))
        target = os.path.join(self.base, "restored")
        out = io.StringIO()
        status = restore(parse(["backup", "restore", self.archive, "--data-dir", target]),
                         out, err)
        self.assertEqual(status, 0, err.getvalue())
        self.assertIn("start it with: twistd vigo --config %s/server.yaml" % (target,),
                      out.getvalue())
        status = restore(parse(["backup", "restore", self.archive]), out, err)
        self.assertEqual(status, 2)
        self.assertIn("needs --data-dir DIR", err.getvalue())
