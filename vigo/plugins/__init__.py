"""Dropins for Vigo: peer actions and other plugins.

Third-party dropins in any ``vigo/plugins/`` directory on ``sys.path`` are found
too, the way ``twisted.plugins`` does it.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
