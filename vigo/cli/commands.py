"""Every ``vigocli`` command: the ``COMMANDS`` table, by command key.

Every command is one row of ``COMMANDS``: an HTTP method, a path built from
the parsed arguments, an optional JSON body, and a printer for people
(``--json`` prints the server's answer instead); see ``vigo.cli.command``.
The key is the one the parser sets as ``options.command``
(``vigo.cli.arguments``).

The rows live with their printers, one module per command group:

* ``vigo.cli.server``: ``status``;
* ``vigo.cli.tokens``: ``token ...`` and ``api-token ...``;
* ``vigo.cli.envoys``: ``envoys ...``;
* ``vigo.cli.spanner``: ``spanner ...`` (with its nested ``bolt`` group);
* ``vigo.cli.drain``: ``spanner bolt drain`` and ``remove``, in several steps;
* ``vigo.cli.replicas``: ``server ...``, this server's replica set (HA);
* ``vigo.cli.backup``: ``backup create`` and ``restore``, which work on this
  host's files and ask no server;
* ``vigo.cli.completion``: ``completion bash|zsh``, a shell completion script
  generated from the parser (no server either).

A new group of commands is a new subparser group plus a new module of rows
added here, as the spanner ones are; nothing else changes.
"""

from vigo.cli import backup, completion, drain, envoys, replicas, server, spanner, tokens

COMMANDS = {
    **server.COMMANDS,
    **tokens.COMMANDS,
    **envoys.COMMANDS,
    **spanner.COMMANDS,
    **drain.COMMANDS,
    **replicas.COMMANDS,
    **backup.COMMANDS,
    **completion.COMMANDS,
}
