"""Test and simulation harnesses (as ``twisted.internet.testing``), not used by the product.

``store`` (an ``IStore`` that answers at once), ``bus`` (an in-memory
multicast network on a fake clock), ``gossip`` (a federation of gossipers on
it), ``join`` (bolts that join and converge, in one process) and ``scale``
(many bolts and envoys, routing checked everywhere).
"""
