"""Admin API request bodies: any bytes, with any Content-Length.

``read_object`` (which every route with a body calls) may raise only an
``ApiError`` of status 400 or 413, and otherwise returns a dict with only the
allowed keys. The first byte picks the Content-Length header and the keys
allowed.
"""

import io
import sys

import harness

with harness.instrumented():
    from vigo.api.responses import ApiError, read_object

LENGTHS = [None, b"0", b"5", b"99999999999999999999", b"-1", b"1e3", b"\xd9\xa1", b" 7"]
ALLOWED = [None, ("uses", "expires_in"), (), ("name",), ("to",)]


class Request:
    def __init__(self, body, length):
        self.content = io.BytesIO(body)
        self.length = length

    def getHeader(self, name):
        return self.length if name == b"content-length" else None


def test_one_input(data):
    if not data:
        return
    length = LENGTHS[data[0] % len(LENGTHS)]
    allowed = ALLOWED[(data[0] >> 3) % len(ALLOWED)]
    try:
        value = read_object(Request(data[1:], length), allowed)
    except ApiError as e:
        if e.status not in (400, 413):
            raise
        return
    if not isinstance(value, dict) or (allowed is not None and set(value) - set(allowed)):
        raise AssertionError("read_object returned %r" % (value,))


SEEDS = [b"\x00{}", b'\x08{"uses": 2, "expires_in": "1h"}', b'\x18{"name": "ci"}',
         b"\x00" + b"[" * 100, b'\x20{"to": "bolt-2"}']

if __name__ == "__main__":
    harness.run(test_one_input, SEEDS)
    sys.exit(0)
