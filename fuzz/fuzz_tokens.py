"""Invites, enrollment tokens and hostnames: any text an operator or envoy pastes.

``Invite.decode`` may raise only ``InviteError``, ``EnrollmentToken.decode``
only ``TokenError``, ``normalise_hostname`` only ``HostnameError``. The first
byte picks the decoder; the rest is the text, or (for the two tokens) the
bytes under the prefix's base64url, so their JSON is reached.
"""

import base64
import sys

import harness

with harness.instrumented():
    from vigo.hostnames import HostnameError, normalise_hostname
    from vigo.identity import Identity
    from vigo.spanner.invites import Invite, InviteError
    from vigo.tokens import EnrollmentToken, TokenError

MINTER = Identity(b"\x05" * 32)


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def test_one_input(data):
    if not data:
        return
    choice, rest = data[0] % 5, data[1:]
    text = rest.decode("utf-8", "surrogateescape" if data[0] & 0x80 else "replace")
    if choice == 0:
        _invite("vgoj_" + _b64url(rest))
    elif choice == 1:
        _invite(text)
    elif choice == 2:
        _token("vgoe_" + _b64url(rest))
    elif choice == 3:
        _token(text)
    else:
        try:
            name = normalise_hostname(text)
        except HostnameError:
            return
        if normalise_hostname(name) != name or not name.isascii() or "\n" in name:
            raise AssertionError("%r normalised to %r" % (text, name))


def _invite(text):
    try:
        invite = Invite.decode(text)
    except InviteError:
        return
    invite.verify(MINTER.public_key)
    invite.expired(0)
    invite.encode()


def _token(text):
    try:
        token = EnrollmentToken.decode(text)
    except TokenError:
        return
    token.encode()


def _payload(text):
    """The bytes under a token's prefix and base64url."""
    body = text[5:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


SEEDS = [
    b"\x00" + _payload(Invite.mint(MINTER, "fed", "10.0.0.1:1533", 0, 60).encode()),
    b"\x02" + _payload(EnrollmentToken.mint("s" * 20, "10.0.0.1:1530", "fp").encode()),
    b"\x04web1.dc1.example.com",
]

if __name__ == "__main__":
    harness.run(test_one_input, SEEDS)
    sys.exit(0)
