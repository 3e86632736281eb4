"""``vigocli spanner bolt drain`` and ``remove``: requests in several steps.

``drain BOLT [--to BOLT]`` starts the drain (``POST .../bolts/{id}/drain``),
then polls its progress (``GET .../drain``) every ``POLL`` seconds, shown as a
``tqdm`` progress bar on stderr, until it is done or failed; the answer is the
final progress. ``remove BOLT [--force]`` drains the bolt the same way, then
removes it (``DELETE .../bolts/{id}``); with ``--force``, a bolt that cannot
be reached is removed without draining.
"""

from urllib.parse import quote

from twisted.internet import task

POLL = 0.5  # seconds between two progress reads
FINISHED = ("done", "failed")


def _drain_path(options):
    return "/api/v1/spanner/bolts/" + quote(options.bolt, safe="") + "/drain"


async def drain(reactor, ask, options, err):
    """``(status, answer)`` of a whole drain: the final progress, or a refusal.
    ``ask(method, path, body)`` is one request's ``(status, answer)``."""
    from tqdm import tqdm

    body = {} if getattr(options, "to", None) is None else {"to": options.to}
    status, answer = await ask("POST", _drain_path(options), body)
    if status >= 400:
        return status, answer
    bar = tqdm(total=answer.get("total") or 0, unit="envoy", file=err,
               desc="draining %s" % (answer.get("name") or options.bolt,),
               disable=options.json, leave=True)
    try:
        while answer.get("state") not in FINISHED:
            await task.deferLater(reactor, POLL, lambda: None)
            status, answer = await ask("GET", _drain_path(options), None)
            if status >= 400:
                return status, answer
            bar.total = answer.get("total") or 0
            bar.n = (answer.get("moved") or 0) + (answer.get("failed") or 0)
            if answer.get("failed"):
                bar.set_postfix(failed=answer["failed"], refresh=False)
            bar.refresh()
    finally:
        bar.close()
    return status, answer


async def remove(reactor, ask, options, err):
    """``(status, answer)`` of draining a bolt, then removing it."""
    status, me = await ask("GET", "/api/v1/spanner/status", None)
    if status < 400 and options.bolt in (me.get("bolt_id"), me.get("name")):
        return 409, {"error": "self", "detail": "bolt %s cannot remove itself (nothing was "
                     "drained): ask another bolt, with that bolt's --data-dir or --api"
                     % (options.bolt,)}
    status, answer = await drain(reactor, ask, options, err)
    unreachable = status == 503 and options.force
    if status == 503 and not options.force:
        answer = dict(answer, detail="%s; a bolt lost for good is removed without draining "
                      "with --force (its envoys are stranded)" % (answer.get("detail"),))
    if status >= 400 and not unreachable:
        return status, answer
    if status < 400 and answer.get("state") != "done":
        return 409, {"error": "drain_failed", "detail": "the drain of bolt %s ended with "
                     "%s envoys not moved; the bolt is not removed (last errors: %s)"
                     % (options.bolt, answer.get("failed"),
                        "; ".join(answer.get("errors") or []) or "none")}
    path = "/api/v1/spanner/bolts/" + quote(options.bolt, safe="")
    return await ask("DELETE", path + ("?force=1" if options.force else ""), None)


def drain_failed(answer):
    """A drain that ended with envoys not moved exits 1."""
    return answer.get("state") == "failed"
