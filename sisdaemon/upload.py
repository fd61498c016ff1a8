"""The upload worker: one POST of a claimed file at a time, in a thread, reporting through a queue.

A long upload thus never holds up the loop (scans, polls of other imports, watchdog pings, signals). The worker checks
the file against its claim fingerprint before sending and again after (docs/design.md "Settling is a promise, not a
proof"), and posts it with the client, which reads it once and hashes it on the way (no second pass over a large
file); it never touches the ledger: the flight applies its result.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sisdaemon import jobs, spool
from sisdaemon.canvas import BodyDigest, CanvasClient, CanvasError, FaultKind
from sisdaemon.jobs import Job
from sisdaemon.observer import QUIET, Observer


@dataclass
class UploadResult:
    """What the upload worker reports.

    ``kind``: "created" (``sis_import`` is Canvas's answer), "error" (``error`` says why; the POST may or may not
    have created an import, see ``error.created_nothing``) or "changed" (the file differs from its claim; nothing
    was sent). ``changed_after``: the file changed while it was sent. ``sha256``: of the bytes sent, when the whole
    file was sent (else None: filing hashes the file). ``ended_at``: the daemon's clock (seconds).
    """

    job_id: str
    kind: str
    sis_import: dict[str, Any] | None = None
    error: CanvasError | None = None
    changed_after: bool = False
    sha256: str | None = None
    fingerprint: jobs.Fingerprint | None = None
    ended_at: float = 0.0


class Uploader:
    """Runs uploads in worker threads with ``client``; ``wake`` is set when a result is ready; ``clock`` gives the
    daemon's time (seconds); ``observer`` hears each upload's size, duration and result."""

    def __init__(
        self, client: CanvasClient, wake: threading.Event, clock: Callable[[], float], observer: Observer = QUIET
    ) -> None:
        self.observer = observer
        self.client = client
        self.wake = wake
        self.clock = clock
        self._results: queue.Queue[UploadResult] = queue.Queue()

    def start(self, job: Job, path: Path, fields: list[tuple[str, str]]) -> None:
        """Send ``path`` (``job``'s file in work/) with the options ``fields`` in a new worker thread (multipart,
        see :meth:`CanvasClient.create_sis_import`)."""
        worker = threading.Thread(target=self._run, args=(job, path, fields), name=f"upload-{job.job_id}", daemon=True)
        worker.start()

    def pending(self) -> bool:
        """Whether a result waits to be collected."""
        return not self._results.empty()

    def results(self) -> Iterator[UploadResult]:
        """The results ready now (each is returned once)."""
        while True:
            try:
                yield self._results.get_nowait()
            except queue.Empty:
                return

    def _run(self, job: Job, path: Path, fields: list[tuple[str, str]]) -> None:
        result = UploadResult(job.job_id, "error")
        try:
            fd = spool.open_for_reading(path)
        except OSError as error:
            result.error = CanvasError(FaultKind.TRANSIENT, f"cannot open the claimed file: {error.strerror}")
            self._report(result)
            return
        try:
            before = spool.fingerprint_of(os.fstat(fd)).without_ctime()
            if before != job.fingerprint:
                result.kind, result.fingerprint = "changed", before
                return
            filename = spool.upload_filename(job.job_id, job.name, spool.sniff_extension(fd))
            digest = BodyDigest()
            started = time.monotonic()
            try:
                result.sis_import = self.client.create_sis_import(fd, filename, fields, digest=digest)
                result.kind = "created"
            except CanvasError as error:
                result.error = error
            self.observer.upload_ended(job.feed, before.size, time.monotonic() - started, result.kind)
            after = spool.fingerprint_of(os.fstat(fd)).without_ctime()
            result.changed_after = after != before
            if digest.bytes == before.size and not result.changed_after:
                result.sha256 = digest.hexdigest()
            result.fingerprint = after
        finally:
            os.close(fd)
            self._report(result)

    def _report(self, result: UploadResult) -> None:
        result.ended_at = self.clock()
        self._results.put(result)
        self.wake.set()
