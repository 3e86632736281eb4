"""This node of a replica set: its own key, its role, and whom it follows.

Every member of a replica set shares the server's identity (envoys pin it)
but holds a key of its own, ``node.key``, that the replication channel's
mutual TLS presents: members pin each other by it, and a node's id is that
key's id. ``replica.json`` is what this node alone knows and a base copy
never overwrites: its role (``primary`` or ``standby``), the highest epoch
it has heard of, and, on a standby, the primary it follows and whether it
needs a base copy before it can follow. A server without the file is a
primary (of a set of one until a standby joins).
"""

import json
import os

import attr

from vigo.identity import load_or_create_identity, write_private_file

NODE_KEY_FILE = "node.key"
NODE_FILE = "replica.json"
PRIMARY = "primary"
STANDBY = "standby"


class NodeFileError(Exception):
    """``replica.json`` cannot be read; the message names the fix."""


def node_identity(data_dir):
    """This node's own key (created on first use): what the replication port presents."""
    return load_or_create_identity(data_dir, NODE_KEY_FILE)


@attr.s(auto_attribs=True)
class NodeState:
    """What ``replica.json`` holds (see the module docstring)."""

    role: str = PRIMARY
    epoch: int = 0
    primary_id: str = ""
    primary_address: str = ""
    primary_fingerprint: str = ""
    needs_base_copy: bool = False

    @property
    def standby(self):
        return self.role == STANDBY

    @classmethod
    def load(cls, data_dir):
        path = os.path.join(data_dir, NODE_FILE)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            raise NodeFileError("cannot read %s (%s); restore it, or remove it to start "
                                "this node as a primary" % (path, e)) from None
        if not isinstance(data, dict) or data.get("role") not in (PRIMARY, STANDBY):
            raise NodeFileError("%s is not a replica node file (no role)" % (path,))
        fields = attr.fields_dict(cls)
        try:
            return cls(**{name: type(getattr(cls(), name))(data[name])
                          for name in fields if name in data})
        except (TypeError, ValueError) as e:
            raise NodeFileError("%s: %s" % (path, e)) from None

    def save(self, data_dir):
        """Write it durably (before anything that depends on it is said)."""
        write_private_file(os.path.join(data_dir, NODE_FILE),
                           json.dumps(attr.asdict(self), indent=2).encode("utf-8"))

    def follow(self, epoch, primary_id, address, fingerprint, needs_base_copy=None):
        """Be a standby of ``primary_id`` (at ``address``, pinned by ``fingerprint``)."""
        self.role = STANDBY
        self.epoch = max(self.epoch, epoch)
        self.primary_id, self.primary_address = primary_id, address
        self.primary_fingerprint = fingerprint
        if needs_base_copy is not None:
            self.needs_base_copy = needs_base_copy

    def promoted(self, epoch):
        """Be the primary at ``epoch``."""
        self.role = PRIMARY
        self.epoch = epoch
        self.primary_id = self.primary_address = self.primary_fingerprint = ""
        self.needs_base_copy = False
