"""``vigocli``, the admin command line: a thin client of the REST API.

``vigo.cli.main`` runs one parsed command (``vigocli = vigo.cli.main:main``);
``vigo.cli.arguments`` is its parser and ``vigo.cli.target`` finds the API to
talk to and the credentials. ``vigo.cli.commands`` is the table of every
command, assembled from one module per command group (``server``, ``tokens``,
``envoys``, ``spanner``, ``drain``, ``replicas``, ``backup``), each holding its
commands' requests and the printers for their answers; ``vigo.cli.command`` is
the row type and ``vigo.cli.format`` the formatting they share (errors
included: with ``--json`` they are JSON on stdout too).
``vigo.cli.completion`` prints shell completion scripts made from the parser.
"""
