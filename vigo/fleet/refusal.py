"""Why the server says no to an envoy, in words the envoy can act on."""

import re


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


_REFUSAL_TEXT = re.compile(r"([a-z][a-z0-9_]{0,63})( \(retryable\))?: (.*)", re.DOTALL)


def refusal_text(refusal):
    """A ``Refusal`` as one line that keeps its code, for a peer ``ActionError``:
    ``code: reason`` or ``code (retryable): reason``."""
    return "%s%s: %s" % (refusal.code, " (retryable)" if refusal.retryable else "",
                         refusal.reason)


def refusal_from_text(text, default_code):
    """The ``Refusal`` that ``refusal_text`` wrote; text in another form becomes
    a retryable refusal with ``default_code``."""
    match = _REFUSAL_TEXT.fullmatch(text)
    if match is None:
        return Refusal(default_code, text, retryable=True)
    return Refusal(match.group(1), match.group(3), retryable=match.group(2) is not None)
