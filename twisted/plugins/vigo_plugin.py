"""The twistd dropin: ``twistd vigo`` runs the Vigo server (vigosrv)."""

from twisted.application.service import ServiceMaker

vigo = ServiceMaker(
    "Vigo server",
    "vigo.tap",
    "vigosrv: the Vigo fleet server (standalone, or a spanner bolt)",
    "vigo",
)
