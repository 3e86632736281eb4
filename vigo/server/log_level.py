"""The server's log level (``log.level``): events less severe are dropped.

twistd starts logging to its observers before the server starts; ``install``
puts one filter in front of all of them (a ``FilteringLogObserver`` with a
``LogLevelFilterPredicate``), once per process, and ``set_level`` moves the
threshold, at start and on a reload (SIGHUP). The level is the process's, as
the log publisher is: the one ``LEVEL`` here.
"""

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    globalLogPublisher,
)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
          "error": LogLevel.error, "critical": LogLevel.critical}


class ProcessLogLevel:
    """The least severe level logged, applied in front of ``publisher``'s observers."""

    def __init__(self, publisher=globalLogPublisher):
        self.publisher = publisher
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
        self.installed = False

    @property
    def level(self):
        return self.predicate.logLevelForNamespace(None).name

    def install(self):
        """Filter every observer the publisher has now (twistd's) by the level."""
        if self.installed:
            return
        observers = list(getattr(self.publisher, "_observers", ()))
        for observer in observers:
            self.publisher.removeObserver(observer)
        self.publisher.addObserver(FilteringLogObserver(LogPublisher(*observers),
                                                        [self.predicate]))
        self.installed = True

    def set_level(self, name):
        """Log ``name`` (``log.level``: debug, info, warn, error, critical) and above."""
        # The default level (namespace None); the predicate keeps its own copy
        # of defaultLogLevel, so that attribute is not the one to change.
        self.predicate.setLogLevelForNamespace(None, LEVELS[name])


#: This process's log level.
LEVEL = ProcessLogLevel()
