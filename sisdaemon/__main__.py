"""``python -m sisdaemon``: the same as the ``sisdaemon`` command."""

from sisdaemon.cli import entry_point

entry_point()
