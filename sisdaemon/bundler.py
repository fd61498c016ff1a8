"""The zip worker: builds a set's zip (bundle.py) in a thread of its own, reporting through a queue, as the
pre-flight worker (checker.py) and the upload worker (upload.py) do, so that compressing a large set never holds up
the flight worker's polls of other jobs (docs/design.md "The parts").

It never touches the ledger: the flight records the zip as built from its result, and only while the set's members
are still as they were when the build started. The crash protocol is bundle.py's (temp name, fsync, rename; recorded
as built only afterwards), so a stop or a kill during a build only means it runs again.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sisdaemon import bundle, sets
from sisdaemon.jobs import Fingerprint, Job


@dataclass
class BuildResult:
    """What a build did for job ``job_id``: ``zipped`` (the zip is whole in work/, under the job's name), or
    ``changed`` (members not as recorded: name -> fingerprint now; nothing built), or ``error`` (why not: a member
    unreadable, the disk; "stopped" when the daemon stops). ``members``: the members' recorded fingerprints the
    build started from (the flight records the zip only when they are still the job's)."""

    job_id: str
    members: dict[str, Fingerprint]
    zipped: bundle.Zipped | None = None
    changed: dict[str, Fingerprint] = field(default_factory=dict)
    error: str | None = None


class Bundler:
    """Builds one set's zip at a time in a daemon thread; ``wake`` is set when a result is ready. ``read(source,
    size)``: how members are read (bundle.read_piece; tests inject a slow reader). ``stopping``: the daemon's stop
    event; a build gives up at its next piece once it is set (as after :meth:`stop`), without waiting for the flight
    worker to end."""

    def __init__(
        self,
        wake: threading.Event,
        *,
        read: Callable[[BinaryIO, int], bytes] = bundle.read_piece,
        stopping: threading.Event | None = None,
    ) -> None:
        self.wake = wake
        self.read = read
        self._stopping = stopping or threading.Event()
        self.running: str | None = None  # the job id whose zip is being built
        self._results: queue.Queue[BuildResult] = queue.Queue()
        self._stop = threading.Event()

    def start(self, job: Job, work_dir: Path) -> bool:
        """Build set ``job``'s zip in ``work_dir`` unless a build runs (or the worker was stopped); returns whether
        it started."""
        if self.running is not None or self._should_stop():
            return False
        self.running = job.job_id
        thread = threading.Thread(target=self._run, args=(job, work_dir), name=f"zip-{job.job_id}", daemon=True)
        thread.start()
        return True

    def stop(self) -> None:
        """Stop a running build at its next piece (its temp zip is removed; it is built again after a restart)."""
        self._stop.set()

    def _should_stop(self) -> bool:
        return self._stop.is_set() or self._stopping.is_set()

    def results(self) -> Iterator[BuildResult]:
        """The results ready now (each is returned once)."""
        while True:
            try:
                yield self._results.get_nowait()
            except queue.Empty:
                return

    def _run(self, job: Job, work_dir: Path) -> None:
        result = BuildResult(job.job_id, sets.member_fingerprints(job))
        try:
            result.zipped = bundle.build_zip(job, work_dir, should_stop=self._should_stop, read=self.read)
        except bundle.MemberChanged as changed:
            result.changed = changed.changed
        except bundle.Cancelled:
            result.error = "stopped"
        except OSError as error:
            result.error = f"{error.strerror or error}: {error.filename or work_dir}".rstrip(": ")
        except Exception as error:  # a bug in the build must not leave the set waiting for ever
            result.error = f"{type(error).__name__}: {error}"
        finally:
            self._results.put(result)  # before running is cleared: the flight never starts a second build meanwhile
            self.running = None
            self.wake.set()
