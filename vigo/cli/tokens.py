"""``vigocli token ...`` and ``api-token ...``: enrollment tokens (which let
envoys enroll) and admin API tokens (which let operators and tools use the API).

A new token is shown once: the token alone goes to ``out``, the note about it
to ``err``.
"""

from vigo.cli.command import Command, segment
from vigo.cli.format import format_time, table

# -- enrollment tokens -------------------------------------------------------------


def _token_body(options):
    body = {"uses": options.uses}
    if options.expires_in is not None:
        body["expires_in"] = options.expires_in
    return body


def token_created(answer, out, err):
    """``vigocli token create``: the token alone on ``out``, the note on ``err``."""
    print(answer["token"], file=out)
    uses = answer.get("uses", 1)
    expires = answer.get("expires_at")
    envoys = "1 envoy" if uses == 1 else f"{uses} envoys"
    lifetime = "never expires" if expires is None else f"expires at {format_time(expires)}"
    print(f"This enrollment token is shown once: keep it now. It enrolls {envoys} and "
          f"{lifetime}.", file=err)


def token_table(answer, out, err):
    """``vigocli token list``."""
    tokens = answer.get("tokens", [])
    if not tokens:
        print("no enrollment tokens", file=out)
        return
    rows = [[t["token_id"], t["state"], "%d/%d" % (t["used"], t["uses"]),
             format_time(t["created_at"]),
             "never" if t["expires_at"] is None else format_time(t["expires_at"])]
            for t in tokens]
    table(rows, ["TOKEN", "STATE", "USED", "CREATED", "EXPIRES"], out)


def token_withdrawn(answer, out, err):
    """``vigocli token withdraw``."""
    print("enrollment token %s withdrawn%s" % (
        answer["token_id"], "" if answer.get("changed") else " (it already was)"), file=out)


# -- admin API tokens --------------------------------------------------------------


def api_token_created(answer, out, err):
    """``vigocli api-token create``: the token alone on ``out``, the note on ``err``."""
    print(answer["token"], file=out)
    print("This API token (%s, id %s) is shown once: keep it now. Use it with --token or "
          "$VIGO_TOKEN; 'vigocli api-token withdraw %s' withdraws it."
          % (answer["name"], answer["token_id"], answer["token_id"]), file=err)


def api_token_table(answer, out, err):
    """``vigocli api-token list``."""
    rows = [[t["token_id"], t["name"], format_time(t["created_at"])]
            for t in answer.get("tokens", [])]
    table(rows, ["TOKEN", "NAME", "CREATED"], out)


def api_token_withdrawn(answer, out, err):
    """``vigocli api-token withdraw``."""
    print("API token %s withdrawn" % (answer["token_id"],), file=out)


COMMANDS = {
    "token create": Command("POST", lambda options: "/api/v1/tokens", token_created,
                            body=_token_body),
    "token list": Command("GET", lambda options: "/api/v1/tokens", token_table),
    "token withdraw": Command("DELETE", lambda o: "/api/v1/tokens/" + segment(o.token_id),
                              token_withdrawn),
    "api-token create": Command("POST", lambda options: "/api/v1/api-tokens",
                                api_token_created, body=lambda o: {"name": o.name}),
    "api-token list": Command("GET", lambda options: "/api/v1/api-tokens", api_token_table),
    "api-token withdraw": Command("DELETE",
                                  lambda o: "/api/v1/api-tokens/" + segment(o.token_id),
                                  api_token_withdrawn),
}
