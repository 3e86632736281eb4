"""Generic formatting for ``vigocli``'s printers: ages, times, tables, fields.

Each command group module (``vigo.cli.server``, ``tokens``, ``envoys``,
``spanner``, ``drain``) holds the printers for its answers. A printer takes
the server's JSON answer and the output streams: what a script should capture
goes to ``out``; notes for the person at the terminal go to ``err``. ``--json``
bypasses all of this, but for errors: ``report_error`` prints an error both
ways, a line on ``err`` and, with ``--json``, a JSON object on ``out``.
"""

import datetime
import json


def format_age(seconds):
    """A short age: ``42s``, ``3m05s``, ``2h01m``, ``4d03h``; ``-`` for never."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_time(timestamp):
    """A UTC ISO 8601 time to the second; ``-`` for None."""
    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def yes_no(value):
    """``yes`` or ``no``."""
    return "yes" if value else "no"


def bolt_label(bolt_id, names):
    """A bolt id with its name from ``names`` (id -> name) when there is one."""
    name = (names or {}).get(bolt_id)
    return f"{bolt_id} ({name})" if name else bolt_id


def table(rows, headers, out):
    """Print ``rows`` (lists of text) under ``headers`` in left-aligned columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [headers] + rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


def fields(pairs, out):
    """Print ``(label, value)`` pairs as aligned ``label  value`` lines."""
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        print(f"{label.ljust(width)}  {value}", file=out)


def report_error(out, err, as_json, code, detail, human=None, extra=None):
    """An error, for people and for scripts.

    On ``err`` (unless None), ``vigocli: HUMAN``, by default ``vigocli: CODE:
    DETAIL``; with ``as_json``, on ``out`` the JSON object ``{"error": CODE,
    "detail": DETAIL}`` with the fields of ``extra`` (``http_status``, say), so
    that ``vigocli --json`` prints JSON on stdout whatever happens.
    """
    if err is not None:
        print(f"vigocli: {f'{code}: {detail}' if human is None else human}", file=err)
    if as_json:
        print(json.dumps(dict(extra or {}, error=code, detail=detail), indent=2,
                         sort_keys=True), file=out)
