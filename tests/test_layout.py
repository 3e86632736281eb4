"""The shape of the code: import contracts, and plugins that use only the plugin API."""

import ast
import os
import pkgutil
import subprocess
import sys
import tomllib

from twisted.trial import unittest

import vigo
import vigo.plugins

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_API = "vigo.interfaces"


def contracts():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


class ImportContractTests(unittest.TestCase):
    def test_contracts_are_kept(self):
        """``lint-imports`` (the contracts in pyproject.toml) passes."""
        lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
        if not os.path.exists(lint):
            raise unittest.SkipTest("import-linter is not installed (pip install '.[test]')")
        result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("0 broken", result.stdout)

    def test_plugin_contract_forbids_every_other_part_of_vigo(self):
        """A new top-level module of vigo cannot slip past the plugin contract."""
        (contract,) = [c for c in contracts() if c.get("source_modules") == ["vigo.plugins"]]
        parts = {"vigo." + m.name for m in pkgutil.iter_modules(vigo.__path__)}
        self.assertEqual(set(contract["forbidden_modules"]),
                         parts - {PLUGIN_API, "vigo.plugins"})


class PluginImportTests(unittest.TestCase):
    """The built-in dropins import only the plugin API, Twisted, zope.interface
    and the standard library: they are what third-party authors copy."""

    def test_dropins(self):
        directory = os.path.dirname(vigo.plugins.__file__)
        allowed = set(sys.stdlib_module_names) | {"twisted", "zope"}
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(directory, name)) as f:
                tree = ast.parse(f.read(), name)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    ok = (module.split(".")[0] in allowed or module == PLUGIN_API
                          or module.startswith(PLUGIN_API + "."))
                    self.assertTrue(ok, "%s imports %s" % (name, module))
