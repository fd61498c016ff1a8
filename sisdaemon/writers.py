"""Whether an uploader still holds a file open for writing, and saying so when the daemon cannot tell.

Settling is a promise, not a proof (docs/design.md "Crash protocol"): a writer that stalls longer than
``settle_seconds`` can still be writing. With CAP_LEASE (or as the file's owner) the daemon asks the kernel by taking
a read lease (:func:`sisdaemon.spool.writer_open`); without it, or on NFS, it cannot tell.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from sisdaemon import spool

log = structlog.get_logger("sisdaemon")


class WriterCheck:
    """Calls ``probe(fd)`` (default :func:`sisdaemon.spool.writer_open`; a test may play a filesystem without
    leases with ``lambda fd: None``): True while a writer holds the file open, False when none does, None when the
    daemon cannot tell. Warns once when it cannot tell."""

    def __init__(self, probe: Callable[[int], bool | None] = spool.writer_open) -> None:
        self.probe = probe
        self.warned = False

    def __call__(self, fd: int) -> bool | None:
        """Whether a writer holds ``fd``'s file open (see the class docstring)."""
        writing = self.probe(fd)
        if writing is None and not self.warned:
            self.warned = True
            log.warning(
                "open_writer_check_unavailable",
                hint="cannot take a read lease on uploaded files (not their owner without CAP_LEASE, or NFS): "
                "settle_seconds alone decides when a file is whole; grant CAP_LEASE (see the systemd unit)",
            )
        return writing
