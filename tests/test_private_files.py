"""Secret files are the server user's alone, or the server does not start.

What the start-up check refuses (each message names the file, its mode and
the fix) and what it accepts; that the API certificate the server writes is
0644 whatever the umask. tests.test_integration.StartFailureTests runs the
real ``twistd vigo`` on an opened-up data directory.
"""

import os
import stat

from twisted.trial import unittest

from vigo.config import config_from_mapping
from vigo.private_files import SECRET_FILES, PrivateFileError, check_data_dir, check_private_file
from vigo.server.wiring import fleet_parts
from vigo.tls import API_CERT_FILE, API_KEY_FILE, ensure_api_certificate


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class CheckTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir, mode=0o700)
        for name, _ in SECRET_FILES:
            path = os.path.join(self.data_dir, name)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

    def test_a_private_directory_and_files_pass(self):
        check_data_dir(self.data_dir)
        check_data_dir(os.path.join(self.data_dir, "not-yet"))  # made private when created

    def test_each_secret_file_open_to_others_is_refused(self):
        for name, what in SECRET_FILES:
            path = os.path.join(self.data_dir, name)
            for mode in (0o644, 0o640, 0o604, 0o620):
                os.chmod(path, mode)
                e = self.assertRaises(PrivateFileError, check_data_dir, self.data_dir)
                self.assertEqual(str(e), "%s (%s) is open to others (mode %o); run: chmod 600 %s"
                                 % (path, what, mode, path))
            os.chmod(path, 0o600)
            check_data_dir(self.data_dir)

    def test_a_directory_open_to_others_is_refused(self):
        for mode in (0o755, 0o750, 0o701, 0o770):
            os.chmod(self.data_dir, mode)
            e = self.assertRaises(PrivateFileError, check_data_dir, self.data_dir)
            self.assertEqual(str(e), "the data directory %s is open to others (mode %o); "
                             "run: chmod 700 %s" % (self.data_dir, mode, self.data_dir))
        os.chmod(self.data_dir, 0o700)

    def test_missing_files_are_fine(self):
        os.unlink(os.path.join(self.data_dir, "admin-token"))
        check_data_dir(self.data_dir)
        check_private_file(os.path.join(self.data_dir, "nothing"), "nothing")

    def test_the_operators_tls_key_is_checked_before_anything_is_made(self):
        key = os.path.join(self.data_dir, "operator.key")
        with open(key, "w") as f:
            f.write("not read")
        os.chmod(key, 0o644)
        config = config_from_mapping({"server": {
            "data_dir": os.path.join(self.data_dir, "fresh"), "hostname": "vigo.test",
            "tls": {"cert_file": key, "key_file": key}}})
        e = self.assertRaises(PrivateFileError, fleet_parts, config, None)
        self.assertIn("(the API's TLS key, server.tls.key_file) is open to others (mode 644)",
                      str(e))
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "fresh")),
                         "nothing written")

    def test_fleet_parts_refuses_an_open_data_directory(self):
        os.chmod(self.data_dir, 0o755)
        config = config_from_mapping({"server": {"data_dir": self.data_dir,
                                                 "hostname": "vigo.test"}})
        e = self.assertRaises(PrivateFileError, fleet_parts, config, None)
        self.assertIn("chmod 700", str(e))
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "identity.key.tmp")))


class CertificateModeTests(unittest.SynchronousTestCase):
    def test_the_api_certificate_is_0644_and_its_key_0600_whatever_the_umask(self):
        for umask in (0o000, 0o022, 0o077):
            data_dir = os.path.abspath(self.mktemp())
            os.makedirs(data_dir, mode=0o700)
            old = os.umask(umask)
            try:
                ensure_api_certificate(data_dir, "vigo.test", "127.0.0.1")
            finally:
                os.umask(old)
            self.assertEqual(mode_of(os.path.join(data_dir, API_CERT_FILE)), 0o644, oct(umask))
            self.assertEqual(mode_of(os.path.join(data_dir, API_KEY_FILE)), 0o600, oct(umask))
