"""``vigocli``, the admin command line: a thin client of the REST API.

``vigo.cli.main`` runs a command; the commands, their arguments and how their
answers are shown live beside it.
"""
