"""Real servers in this test process: ``vigo.server.build_server`` on a config
(loopback ports), started, waited for, and stopped at the test's cleanup."""

from twisted.internet import defer, reactor

from vigo.server import build_server


@defer.inlineCallbacks
def start_server(testcase, config):
    """The root service ``config`` builds (a ``VigoServer``, or a ``ServerHost``
    with ``peers.listen``), once it is ready; stopped at ``testcase``'s cleanup."""
    server = build_server(config, reactor)
    server.startService()
    testcase.addCleanup(lambda: server.stopService() if server.running else None)
    yield server.ready
    return server
