"""vigosrv: the Vigo fleet state-enforcement server, on Twisted."""

__version__ = "0.2.0"
