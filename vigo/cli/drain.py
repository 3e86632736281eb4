"""``vigocli spanner bolt drain`` and ``remove``: requests in several steps.

``drain BOLT [--to BOLT]`` starts the drain (``POST .../bolts/{id}/drain``),
then polls its progress (``GET .../drain``) every ``POLL`` seconds, shown as a
``tqdm`` progress bar on stderr when stderr is a terminal (never into a file or
a pipe, nor with ``--json``), until it is done or failed; the answer is the
final progress. ``remove BOLT [--force]`` drains the bolt the same way, then
removes it (``DELETE .../bolts/{id}``); with ``--force``, a bolt that cannot
be reached is removed without draining.

Both are ``Command`` rows with a ``flow`` (the steps) besides the usual
printer of the final answer.
"""

from twisted.internet import task

from vigo.cli.command import Command, bolt_path
from vigo.cli.format import bolt_label

POLL = 0.5  # seconds between two progress reads
FINISHED = ("done", "failed")


def _drain_path(options):
    return bolt_path(options) + "/drain"


# -- drain -------------------------------------------------------------------------


async def drain(reactor, ask, options, err):
    """``(status, answer)`` of a whole drain: the final progress, or a refusal.
    ``ask(method, path, body)`` is one request's ``(status, answer)``."""
    from tqdm import tqdm

    body = {} if getattr(options, "to", None) is None else {"to": options.to}
    status, answer = await ask("POST", _drain_path(options), body)
    if status >= 400:
        return status, answer
    # disable=None: tqdm draws only when err is a terminal; a file or a pipe
    # gets no "\r" frames (the printer's final line says how it ended).
    bar = tqdm(total=answer.get("total") or 0, unit="envoy", file=err,
               desc="draining %s" % (answer.get("name") or options.bolt,),
               disable=True if options.json else None, leave=True)
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


def drain_failed(answer):
    """A drain that ended with envoys not moved exits 1."""
    return answer.get("state") == "failed"


def bolt_drained(answer, out, err):
    """``vigocli spanner bolt drain``: the final progress."""
    bolt_id = answer.get("bolt_id")
    label = bolt_label(bolt_id, {bolt_id: answer.get("name")})
    to = answer.get("to") or "each envoy's owner"
    print(f"bolt {label} {'drained' if answer.get('state') == 'done' else 'drain failed'}: "
          f"{answer.get('moved', 0)} of {answer.get('total', 0)} envoys moved to {to}, "
          f"{answer.get('failed', 0)} failed, {answer.get('remaining', 0)} still here",
          file=out)
    for error in answer.get("errors") or []:
        print(f"  {error}", file=err)


# -- remove ------------------------------------------------------------------------


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
    return await ask("DELETE", bolt_path(options) + ("?force=1" if options.force else ""), None)


def bolt_removed(answer, out, err):
    """``vigocli spanner bolt remove``."""
    bolt_id = answer.get("bolt_id")
    label = bolt_label(bolt_id, {bolt_id: answer.get("name")})
    if not answer.get("changed"):
        print(f"bolt {label} was already removed", file=out)
        return
    forced = " without draining (it could not be reached)" if answer.get("forced") else ""
    print(f"bolt {label} removed from the federation{forced}", file=out)


COMMANDS = {
    "spanner bolt drain": Command("POST", bolt_path, bolt_drained, flow=drain,
                                  failed=drain_failed),
    "spanner bolt remove": Command("DELETE", bolt_path, bolt_removed, flow=remove),
}
