"""Standby invitations as an operator hands them over: ``vgos_...`` text.

``vigocli server standby invite`` at the primary mints one; ``vigocli server
standby join TOKEN`` at a fresh server redeems it. The text carries what the
joining server needs to trust the primary before it sends the secret: the
primary's node id, replication address and node-key fingerprint (so the
joiner pins the primary), and the invitation's id and secret (so the primary
admits the joiner's node key, which it pins from then on).
"""

import os

import attr

from vigo.tokens import _b64url, decode_payload, encode_payload, new_id

INVITE_PREFIX = "vgos_"


@attr.s(frozen=True, slots=True)
class StandbyInvite:
    invite_id = attr.ib()
    secret = attr.ib(repr=False)
    primary_id = attr.ib()
    address = attr.ib()
    fingerprint = attr.ib()

    @classmethod
    def mint(cls, primary_id, address, fingerprint):
        return cls(new_id(), _b64url(os.urandom(32)), primary_id, address, fingerprint)

    def encode(self):
        return encode_payload(INVITE_PREFIX, {
            "pid": self.primary_id, "addr": self.address, "fp": self.fingerprint,
            "iid": self.invite_id, "sec": self.secret})

    __str__ = encode

    @classmethod
    def decode(cls, text):
        """Parse an invitation; ``TokenError`` says what is wrong with it."""
        fields = decode_payload(
            text, INVITE_PREFIX, "a standby invitation", ("pid", "addr", "fp", "iid", "sec"),
            hint="; make one at the primary with: vigocli server standby invite")
        return cls(fields["iid"], fields["sec"], fields["pid"], fields["addr"], fields["fp"])
