"""``vigocli status``: the server at a glance."""

from vigo.cli.command import Command
from vigo.cli.format import fields, format_age


def status(answer, out, err):
    """``vigocli status``."""
    envoys = answer.get("envoys", {})
    total, active, online, connected = (
        envoys.get(k, 0) for k in ("total", "active", "online", "connected"))
    checkins = ", ".join(f"{k} {v}" for k, v in sorted(answer.get("checkins", {}).items()))
    fields([
        ("server", answer.get("server_id")),
        ("hostname", answer.get("hostname")),
        ("mode", answer.get("mode")),
        ("version", answer.get("version")),
        ("uptime", format_age(answer.get("uptime"))),
        ("envoy address", answer.get("envoy_address")),
        ("check-in interval", format_age(answer.get("checkin_interval"))),
        ("envoys", f"{total} total, {active} active, {online} online, {connected} connected"),
        ("check-ins", checkins or "none yet"),
    ], out)


COMMANDS = {
    "status": Command("GET", lambda options: "/api/v1/status", status),
}
