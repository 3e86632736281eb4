"""The server process: its wiring per mode, its start-up order, its ports.

* ``build_server(config, reactor)``: the ``VigoServer`` of the config's mode;
* ``vigo.server.standalone`` and ``vigo.server.spanner``: one wiring module
  per mode, building the components from plain values and their collaborators;
* ``vigo.server.wiring``: the fleet half every server has, served;
* ``vigo.server.service``: ``VigoServer``, the root service and its start-up
  order (load, then listen);
* ``vigo.server.ports``: the listening ports as services, advertised addresses;
* ``vigo.server.status``: the server at a glance;
* high availability (``peers.listen``): ``vigo.server.host`` (the root
  service, one tree per role), ``vigo.server.standby`` (a standby's tree) and
  ``vigo.server.peer`` (replication, promotion, fencing).
"""


def build_server(config, reactor, exit_on_failure=False):
    """The ``VigoServer`` for ``config``: a standalone server, or a spanner bolt.

    A standalone server imports no federation code at all. Raises
    ``IdentityError``, ``PrivateFileError``, ``HostcratesError``,
    ``TLSFilesError`` or ``OSError`` for a data directory, key, certificate or
    hostcrates file that cannot be used (``twistd vigo`` says so in one line).
    """
    if config.peers.listen is not None:
        # HA on: the node's role decides the tree, and may change it (docs/ha.md).
        from vigo.server.host import ServerHost

        return ServerHost(config, reactor, exit_on_failure=exit_on_failure)
    if config.spanner.mode == "spanner":
        from vigo.server.spanner import build
    else:
        from vigo.server.standalone import build
    return build(config, reactor, exit_on_failure=exit_on_failure)
