"""vigosrv: the Vigo fleet state-enforcement server, on Twisted."""

__version__ = "0.1.0"
