"""``vigocli completion bash|zsh``: scripts generated from the parser that
shells accept (``bash -n``, ``zsh -n``), that name every command, and that
complete (bash, driven as its completion system drives it)."""

import argparse
import io
import os
import shutil
import subprocess

from twisted.internet import defer, reactor
from twisted.trial import unittest

from vigo.cli import arguments as cli_arguments
from vigo.cli import completion as cli_completion
from vigo.cli import main as cli


def command_words(parser=None, prefix=()):
    """Every command path of the parser: ``("spanner", "bolt", "act")``, ..."""
    parser = parser or cli_arguments.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from command_words(sub, prefix + (name,))


def shell(name):
    path = shutil.which(name)
    if path is None:
        raise unittest.SkipTest(f"{name} is not installed")
    return path


class ScriptTests(unittest.TestCase):

    def write(self, text):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def check_syntax(self, name, script):
        run = subprocess.run([shell(name), "-n", self.write(script)], capture_output=True,
                             text=True, timeout=60)
        self.assertEqual((run.returncode, run.stderr), (0, ""))

    def test_every_command_is_named(self):
        words = set(command_words())
        self.assertIn(("spanner", "bolt", "actions"), words)
        self.assertIn(("completion",), words)
        for shell_name in cli_arguments.SHELLS:
            script = cli_completion.script(shell_name)
            for path in words:
                self.assertIn(path[-1], script, (shell_name, path))
            for option in ("--data-dir", "--ca-file", "--json", "--version", "--expires-in"):
                self.assertIn(option, script, (shell_name, option))

    def test_bash_accepts_it(self):
        self.check_syntax("bash", cli_completion.script("bash"))

    def test_zsh_accepts_it(self):
        script = cli_completion.script("zsh")
        self.assertTrue(script.startswith("#compdef vigocli"), script[:80])
        self.check_syntax("zsh", script)

    def test_zsh_loads_it(self):
        """zsh's completion system takes it as the completer of vigocli."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "_vigocli"), "w") as f:
            f.write(cli_completion.script("zsh"))
        program = ("fpath=(%s $fpath); autoload -Uz compinit; compinit -u -d %s; "
                   "print -r -- ${_comps[vigocli]}" % (directory, os.path.join(directory, "dump")))
        run = subprocess.run([shell("zsh"), "-f", "-c", program], capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, HOME=directory))
        self.assertEqual((run.returncode, run.stderr), (0, ""))
        self.assertEqual(run.stdout.strip(), "_vigocli")

    def complete(self, *words):
        """What bash's completion offers for ``vigocli WORDS`` (the last word
        being completed), with the generated script loaded."""
        script = self.write(cli_completion.script("bash"))
        program = (
            'source "$1"; shift; COMP_WORDS=(vigocli "$@"); COMP_CWORD=$#; '
            'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; '
            '_shtab_vigocli vigocli "${COMP_WORDS[COMP_CWORD]}" '
            '"${COMP_WORDS[COMP_CWORD-1]}"; printf "%s\\n" "${COMPREPLY[@]}"')
        run = subprocess.run([shell("bash"), "--norc", "--noprofile", "-c", program, "bash",
                              script, *words], capture_output=True, text=True, timeout=60,
                             cwd=self.directory)
        self.assertEqual((run.returncode, run.stderr), (0, ""))
        return sorted(line for line in run.stdout.splitlines() if line)

    def test_bash_completes(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "data"))
        open(os.path.join(self.directory, "dump.pem"), "w").close()
        self.assertEqual(self.complete(""), sorted(
            path[0] for path in command_words() if len(path) == 1))
        self.assertEqual(self.complete("spanner", "bolt", "ac"), ["act", "actions"])
        self.assertEqual(self.complete("completion", ""), ["bash", "zsh"])
        self.assertIn("--all", self.complete("envoys", "list", "--"))
        self.assertEqual(self.complete("--data-dir", "d"), ["data"])
        self.assertEqual(self.complete("status", "--ca-file", "du"), ["dump.pem"])


class CommandTests(unittest.TestCase):
    """``vigocli completion SHELL`` prints the script and asks no server."""

    @defer.inlineCallbacks
    def test_prints_the_script(self):
        for shell_name in cli_arguments.SHELLS:
            out, err = io.StringIO(), io.StringIO()
            options = cli_arguments.parse(["completion", shell_name])
            status = yield defer.ensureDeferred(cli.run(reactor, options, out, err, {}))
            self.assertEqual((status, err.getvalue()), (0, ""))
            self.assertEqual(out.getvalue(), cli_completion.script(shell_name))

    def test_help_says_how_to_install_it(self):
        text = cli_arguments.build_parser()._subparsers._group_actions[0] \
            .choices["completion"].format_help()
        for words in ("source <(vigocli completion bash)",
                      "vigocli completion bash > /usr/share/bash-completion/completions/vigocli",
                      "vigocli completion zsh > ~/.zfunc/_vigocli", "fpath=(~/.zfunc $fpath)"):
            self.assertIn(words, text)
