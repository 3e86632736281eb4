"""Peer RPC between bolts: the names the server wiring and actions use.

The pieces live in ``peer_tls`` (mutual TLS), ``peer_server`` (cred portal,
perspectives, listening), ``peer_client`` (long-lived connections), ``actions``
(dropin discovery and the rules an action runs under), ``peer_bolt`` (the
``IBolt`` facade) and ``peer_errors``. Wiring a bolt, in short::

    actions = load_actions()
    clients = PeerClients(reactor, identity)
    bolt = BoltFacade(identity, name, roster, actions, clients, locate, reactor)
    portal = PeerPortal(roster, bolt, actions, join_handler)
    port = yield listen_peers(reactor, identity, config.spanner.peer_listen, portal)
    answer = yield bolt.call(other_bolt_id, "ping", {})
"""

from vigo.spanner.actions import load_actions, run_action
from vigo.spanner.peer_bolt import BoltFacade
from vigo.spanner.peer_client import PeerClient, PeerClients
from vigo.spanner.peer_errors import (
    ActionError,
    ActionFailed,
    BadArguments,
    JoinRefused,
    NotAMember,
    PeerError,
    PeerUnreachable,
    UnknownAction,
)
from vigo.spanner.peer_server import (
    APPLICANT,
    ApplicantPerspective,
    IPeerRoster,
    PeerKey,
    PeerPerspective,
    PeerPortal,
    PeerRealm,
    RosterKeyChecker,
    listen_peers,
)
from vigo.spanner.peer_tls import PeerClientCreator, peer_key, peer_server_options

__all__ = [
    "APPLICANT", "ActionError", "ActionFailed", "ApplicantPerspective", "BadArguments",
    "BoltFacade", "IPeerRoster", "JoinRefused", "NotAMember", "PeerClient", "PeerClientCreator",
    "PeerClients", "PeerError", "PeerKey", "PeerPerspective", "PeerPortal", "PeerRealm",
    "PeerUnreachable", "RosterKeyChecker", "UnknownAction", "listen_peers", "load_actions",
    "peer_key", "peer_server_options", "run_action",
]
