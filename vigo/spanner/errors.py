"""What the spanner service says when it will not do what the admin asked.

The admin API answers a ``SpannerRefusal`` with its ``status`` and
``{"error": code, "detail": message}``. Codes in use: ``not_member``,
``already_member``, ``join_refused`` (409), ``not_found``, ``unknown_action``
(404), ``bad_request`` (400), ``action_failed`` (502), ``unreachable`` (503).
"""


class SpannerRefusal(Exception):
    """A refused spanner operation: a stable ``code``, a ``message`` for
    people, and the HTTP ``status`` to answer it with."""

    def __init__(self, code, message, status=409):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.status = status
