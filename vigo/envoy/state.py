"""The envoy's state directory: its key, its enrollment and what it applied.

Files (each written whole to a temporary name, synced, then renamed over the
old one, mode 0600, so a crash leaves either the old or the new file):

* ``envoy.key``: the envoy's Ed25519 key, PKCS#8 PEM;
* ``envoy.json``: hostname, envoy id, interval and the server it talks to
  (address, key fingerprint, server id, public key, and ``replicas``: the
  envoy addresses of the server's replica set, primary first, as the server
  last sent them; a file written before replicas existed loads with none);
* ``seq``: the last check-in sequence sent;
* ``bundle.json``: the applied bundle (version, seq, document) for ``run``.
"""

import base64
import json
import os

import nacl.signing

from vigo.envoy.protocol import NO_VERSION
from vigo.envoy.replicas import replica_addresses
from vigo.identity import Identity, IdentityError, key_fingerprint, write_private_file

KEY_FILE = "envoy.key"
STATE_FILE = "envoy.json"
SEQ_FILE = "seq"
BUNDLE_FILE = "bundle.json"


class StateError(Exception):
    """The state directory is unusable; the message says what to do."""


class EnvoyState:
    """An envoy's state directory, loaded into attributes; ``save_*`` writes back.

    Attributes: ``hostname``, ``envoy_id``, ``server_address``,
    ``server_fingerprint``, ``server_id``, ``server_key`` (raw bytes or None),
    ``replicas`` (a tuple of "host:port", maybe empty), ``interval``,
    ``last_seq``, ``bundle_version`` (32 bytes), ``bundle_seq``,
    ``bundle_document``.
    """

    def __init__(self, path):
        self.path = path
        self.identity = None
        self.hostname = None
        self.envoy_id = None
        self.server_address = None
        self.server_fingerprint = None
        self.server_id = None
        self.server_key = None
        self.replicas = ()
        self.advertised_address = None
        self.interval = None
        self.last_seq = 0
        self.bundle_version = NO_VERSION
        self.bundle_seq = None
        self.bundle_document = None

    @classmethod
    def open(cls, path, create=False):
        """Load the state in ``path``; with ``create``, make it (and a key) if missing."""
        state = cls(path)
        if not os.path.isdir(path):
            if not create:
                raise StateError(f"{path} is not an envoy state directory; run register first")
            os.makedirs(path, mode=0o700, exist_ok=True)
        state._load_key(create)
        state._load_state()
        state._load_seq()
        state._load_bundle()
        return state

    @property
    def registered(self):
        """True once the envoy has an id and a server to attach to."""
        return bool(self.envoy_id and self.server_address and self.server_fingerprint)

    @property
    def public_key(self):
        """The envoy's raw 32-byte Ed25519 public key."""
        return self.identity.public_key

    def sign(self, message):
        """The envoy key's 64-byte signature of ``message``."""
        return self.identity.sign(message)

    # -- writing ------------------------------------------------------------

    def record_registration(self, hostname, registered, connected_address):
        """Keep what Register answered; ``connected_address`` is where it was reached.

        When the answering server is the one dialled, the envoy keeps dialling
        the same address (the advertised one may not resolve from here).
        """
        self.hostname = hostname
        self.envoy_id = registered.envoy_id
        self.interval = registered.interval
        self.advertised_address = registered.address
        self.set_server(connected_address, registered.fingerprint, registered.server_id,
                        registered.public_key, registered.replicas)

    def set_server(self, address, fingerprint, server_id, public_key=None, replicas=None):
        """Point the envoy at a server (after Register or a Redirect) and save.

        ``replicas`` (None: not told) replaces the replica list; a server of
        another key is another replica set, so the old list is dropped then.
        """
        if public_key is not None and key_fingerprint(public_key) != fingerprint:
            raise StateError("the server key does not match its fingerprint")
        if replicas is not None:
            self.replicas = tuple(replicas)
        elif fingerprint != self.server_fingerprint:
            self.replicas = ()
        self.server_address = address
        self.server_fingerprint = fingerprint
        self.server_id = server_id
        self.server_key = public_key
        self.save_state()

    def record_attach(self, address, replicas):
        """Keep where the envoy attached (a replica of the server's set, when the
        server's address failed) and the replica list the server sent (None: it
        sent none, the list is kept); save when either changed."""
        replicas = self.replicas if replicas is None else tuple(replicas)
        if (address, replicas) != (self.server_address, self.replicas):
            self.server_address, self.replicas = address, replicas
            self.save_state()

    def learn_server_key(self, public_key):
        """Keep the pinned server's key (read from its TLS certificate) and save."""
        if public_key is None or public_key == self.server_key:
            return
        if key_fingerprint(public_key) != self.server_fingerprint:
            raise StateError("the server key does not match the pinned fingerprint")
        self.server_key = public_key
        self.save_state()

    def save_state(self):
        """Write ``envoy.json``."""
        data = {
            "hostname": self.hostname,
            "envoy_id": self.envoy_id,
            "interval": self.interval,
            "server": {
                "address": self.server_address,
                "fingerprint": self.server_fingerprint,
                "server_id": self.server_id,
                "public_key": _b64(self.server_key),
                "advertised_address": self.advertised_address,
                "replicas": list(self.replicas),
            },
        }
        self._write_json(STATE_FILE, data)

    def record_seq(self, seq):
        """Remember the last check-in sequence sent."""
        self.last_seq = max(self.last_seq, seq)
        write_private_file(self._file(SEQ_FILE), b"%d\n" % (self.last_seq,))

    def apply_bundle(self, bundle):
        """Keep a verified bundle as the applied state."""
        self._write_json(BUNDLE_FILE, {
            "version": base64.b64encode(bundle.version).decode("ascii"),
            "seq": bundle.seq,
            "document": bundle.document,
        })
        self.bundle_version = bundle.version
        self.bundle_seq = bundle.seq
        self.bundle_document = bundle.document

    # -- reading ------------------------------------------------------------

    def _file(self, name):
        return os.path.join(self.path, name)

    def _write_json(self, name, data):
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        write_private_file(self._file(name), text.encode("utf-8"))

    def _read_json(self, name):
        path = self._file(name)
        if not os.path.exists(path):
            return None
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise StateError(f"{path} is damaged ({e}); remove the state directory "
                             "and register again") from None
        if not isinstance(data, dict):
            raise StateError(f"{path} is damaged (not a JSON object)")
        return data

    def _load_key(self, create):
        path = self._file(KEY_FILE)
        if not os.path.exists(path):
            if not create:
                raise StateError(f"{path} is missing; run register first")
            seed = bytes(nacl.signing.SigningKey.generate())
            self.identity = Identity(seed)
            write_private_file(path, self.identity.to_pem())
            return
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise StateError(f"{path} is readable by others (mode {mode:o}); "
                             f"run: chmod 600 {path}")
        with open(path, "rb") as f:
            try:
                self.identity = Identity.from_pem(f.read())
            except IdentityError as e:
                raise StateError(f"{path}: {e}") from None

    def _load_state(self):
        data = self._read_json(STATE_FILE)
        if data is None:
            return
        server = data.get("server") or {}
        self.hostname = data.get("hostname")
        self.envoy_id = data.get("envoy_id")
        self.interval = data.get("interval")
        self.server_address = server.get("address")
        self.server_fingerprint = server.get("fingerprint")
        self.server_id = server.get("server_id")
        self.advertised_address = server.get("advertised_address")
        self.server_key = _unb64(server.get("public_key"))
        self.replicas = replica_addresses(server.get("replicas")) or ()

    def _load_seq(self):
        path = self._file(SEQ_FILE)
        if os.path.exists(path):
            with open(path, "rb") as f:
                try:
                    self.last_seq = int(f.read().strip() or 0)
                except ValueError:
                    self.last_seq = 0  # the time-based sequence still moves forward

    def _load_bundle(self):
        data = self._read_json(BUNDLE_FILE)
        if data is None:
            return
        version = _unb64(data.get("version"))
        if version is None or len(version) != 32:
            raise StateError(f"{self._file(BUNDLE_FILE)} is damaged (bad version)")
        self.bundle_version = version
        self.bundle_seq = data.get("seq")
        self.bundle_document = data.get("document")


def _b64(data):
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _unb64(text):
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:
        return None
