"""Run trial and end with one line: ``trial: N passed, N failed, N skipped``.

The counts come from trial's own closing summary (``PASSED (successes=...)`` or
``FAILED (failures=..., errors=..., successes=...)``); the exit status is
trial's, and non-zero whenever that summary is missing.
"""

import argparse
import re
import subprocess
import sys

SUMMARY = re.compile(r"^(PASSED|FAILED) \((?P<counts>[^)]*)\)\s*$")


def count(summary_counts):
    counts = dict(
        (name.strip(), int(value))
        for name, value in (part.split("=") for part in summary_counts.split(","))
    )
    passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
    failed = (
        counts.get("failures", 0)
        + counts.get("errors", 0)
        + counts.get("unexpectedSuccesses", 0)
    )
    return passed, failed, counts.get("skips", 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("tests", nargs="+")
    args = parser.parse_args()
    command = [sys.executable, "-m", "twisted.trial"]
    if args.jobs > 1:
        command.append("--jobs=%d" % (args.jobs,))
    command.extend(args.tests)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    summary = None
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        match = SUMMARY.match(line)
        if match:
            summary = match
    status = process.wait()
    if summary is None:
        print("trial: 0 passed, 1 failed, 0 skipped")
        return status or 1
    passed, failed, skipped = count(summary.group("counts"))
    print("trial: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return status if status else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
