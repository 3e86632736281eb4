"""What every ``make fuzz`` harness shares.

Each ``fuzz_*.py`` beside this file is an atheris (libFuzzer) harness of one
decoder family a stranger reaches; ``make fuzz`` runs each for a bounded time
(``FUZZ_SECONDS``) on a corpus under ``var/fuzz/``. A harness crashes -- and
``make fuzz`` fails, leaving the input in ``var/fuzz/crashes/`` -- on any
exception the decoder may not raise, on a traceback Twisted logs, and on a
broken promise (a refusal not counted, a state that changed); libFuzzer's
``-timeout`` makes a hang a crash too. Replay a crash with
``.venv/bin/python fuzz/fuzz_NAME.py var/fuzz/crashes/crash-...``.

The harnesses import the working tree (not the copy installed in .venv), and
instrument only ``vigo`` for coverage.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import atheris  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402


def instrumented():
    """A context in which ``vigo`` modules are imported with coverage hooks."""
    return atheris.instrument_imports(include=["vigo"])


class LoggedFailures:
    """Tracebacks Twisted logs (``log.failure``): each one is a bug."""

    def __init__(self):
        self.failures = []
        globalLogPublisher.addObserver(self)

    def __call__(self, event):
        if "log_failure" in event:
            self.failures.append(event["log_failure"])

    def check(self):
        if self.failures:
            failures, self.failures = self.failures, []
            raise AssertionError("a traceback was logged:\n"
                                 + "\n".join(f.getTraceback() for f in failures))


def run(test_one_input, seeds=(), max_len=4096):
    """Fuzz ``test_one_input(data)`` with inputs of up to ``max_len`` bytes
    (unless ``-max_len=`` is given); an empty corpus directory (the first
    argument that is not an option) is first given ``seeds``."""
    argv = list(sys.argv)
    corpus = [arg for arg in argv[1:] if not arg.startswith("-")]
    if corpus and seeds and os.path.isdir(corpus[0]) and not os.listdir(corpus[0]):
        for number, seed in enumerate(seeds):
            with open(os.path.join(corpus[0], "seed-%d" % (number,)), "wb") as f:
                f.write(seed)
    if not any(arg.startswith("-max_len=") for arg in argv):
        argv.insert(1, "-max_len=%d" % (max_len,))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
