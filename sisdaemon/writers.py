"""Whether an uploader still holds a file open for writing, and saying so when the daemon cannot tell.

Settling is a promise, not a proof (docs/design.md "Crash protocol"): a writer that stalls longer than
``settle_seconds`` can still be writing. With CAP_LEASE (or as the file's owner) the daemon asks the kernel by taking
a read lease (:func:`sisdaemon.spool.writer_open`); without it, or on NFS, it cannot tell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from sisdaemon import spool
from sisdaemon.logs import Conditions

log = structlog.get_logger("sisdaemon")

#: What ``status`` and the journal say while the daemon cannot tell whether uploaders still write.
UNAVAILABLE = (
    "cannot tell whether an uploader still writes a file (no read lease: not the files' owner without CAP_LEASE, "
    "or NFS): settle_seconds alone decides when a file is whole, so an in-place upload that stalls longer is sent "
    "partial; grant CAP_LEASE (the shipped unit does) or have uploaders write under a temp name and rename"
)


class WriterCheck:
    """Calls ``probe(fd)`` (default :func:`sisdaemon.spool.writer_open`; a test may play a filesystem without
    leases with ``lambda fd: None``): True while a writer holds the file open, False when none does, None when the
    daemon cannot tell.

    While it cannot tell, it says so loudly: a warning in the journal when that starts, a reminder every few
    minutes (``conditions``), and ``report(UNAVAILABLE)`` (the daemon records it for ``status``); ``report(None)``
    once it can tell again. ``blind`` says whether the last check could not tell.
    """

    def __init__(
        self,
        probe: Callable[[int], bool | None] = spool.writer_open,
        *,
        conditions: Conditions | None = None,
        report: Callable[[str | None], Any] = lambda text: None,
    ) -> None:
        self.probe = probe
        self.conditions = conditions or Conditions()
        self.report = report
        self.blind = False

    def __call__(self, fd: int) -> bool | None:
        """Whether a writer holds ``fd``'s file open (see the class docstring)."""
        writing = self.probe(fd)
        key = ("open_writer_check_unavailable",)
        if writing is None:
            self.conditions.start(key, "open_writer_check_unavailable", hint=UNAVAILABLE)
            if not self.blind:
                self.blind = True
                self.report(UNAVAILABLE)
        else:
            self.conditions.end(key, "open_writer_check_available")
            if self.blind:
                self.blind = False
                self.report(None)
        return writing
