"""Why the server says no to an envoy, in words the envoy can act on."""


class Refusal(Exception):
    """A refused request: a stable ``code``, a ``reason`` for people, and
    whether trying again later may succeed (``retryable``)."""

    def __init__(self, code, reason, retryable=False):
        Exception.__init__(self, reason)
        self.code = code
        self.reason = reason
        self.retryable = retryable

    def as_dict(self):
        return {"code": self.code, "reason": self.reason, "retryable": self.retryable}


class Redirected(Exception):
    """The envoy belongs to another server: go there (same id, same key)."""

    def __init__(self, address, server_id, fingerprint, reason):
        Exception.__init__(self, reason)
        self.address = address
        self.server_id = server_id
        self.fingerprint = fingerprint
        self.reason = reason

    def as_dict(self):
        return {
            "address": self.address,
            "server_id": self.server_id,
            "fingerprint": self.fingerprint,
            "reason": self.reason,
        }
