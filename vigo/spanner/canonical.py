"""One byte encoding for everything the federation signs or hashes.

A signature or a digest is only as good as the agreement on the bytes under it:
two bolts that serialise the same record differently would disagree on
whether it verifies. So every signed body is JSON with sorted keys, no
whitespace, ASCII only and no floats, and binary values never appear in it
raw: callers base64 them first (``b64``) and decode with ``unb64``, which
accepts only the one canonical base64 spelling of each byte string.
"""

import base64
import binascii
import json

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


class SpannerError(Exception):
    """Something from (or for) the federation is not acceptable.

    ``reason`` is a short machine-readable word (``malformed``,
    ``bad_signature``, ...) used as a counter label; the message says more.
    """

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def canonical(obj):
    """The canonical bytes of a JSON-ready value (dicts, lists, str, int, None, bool).

    Raises ``TypeError`` for bytes or other unencodable values, ``ValueError``
    for NaN/infinity: callers encode binary with ``b64`` and never use floats.
    """
    return _ENCODER.encode(obj).encode("ascii")


def b64(data):
    """Standard, padded base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def unb64(text, field, length=None, max_length=None, error=SpannerError):
    """The bytes of canonical base64 ``text``; ``error("malformed", ...)`` if not.

    ``length`` demands an exact decoded length, ``max_length`` caps it (checked
    on the text before decoding, so a huge string costs nothing). ``error`` is
    the ``SpannerError`` subclass the caller's own callers expect.
    """
    if type(text) is not str:
        raise error("malformed", "%s must be a base64 string" % (field,))
    limit = length if length is not None else max_length
    if limit is not None and len(text) > 4 * ((limit + 2) // 3):
        raise error("malformed", "%s is too long" % (field,))
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise error("malformed", "%s is not valid base64" % (field,)) from None
    if length is not None and len(data) != length:
        raise error(
            "malformed", "%s must be %d bytes, not %d" % (field, length, len(data))
        )
    # Strict mode still lets the unused bits of the last character vary:
    # only the one spelling that encoding gives back is canonical.
    if binascii.b2a_base64(data, newline=False) != text.encode("ascii"):
        raise error("malformed", "%s is not canonical base64" % (field,))
    return data
