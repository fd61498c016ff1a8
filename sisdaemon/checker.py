"""The pre-flight worker: checks a claimed file as Canvas would read it (sisdaemon.sis_csv), in a thread of its own,
reporting through a queue, so that a large file's check never holds up the flight worker's polls or the loop.

The same read gives the file's sha256 and its data rows per SIS type (for duplicate detection and the shrink guard);
for a batch-mode or diffing feed each SIS type the file holds is then compared with the earlier file given for
that type, the feed's last imported file that held it (:func:`sisdaemon.guard.diff_bases`,
:func:`sisdaemon.sis_csv.compare_types`). It never touches the ledger: admission.py applies its result. A check
changes nothing outside this process (the comparison's temporary files are removed, or cleared at start-up after a
kill), so a crash or a stop during one only means it runs again (docs/design.md "Crash protocol").
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sisdaemon import jobs, sis_csv
from sisdaemon.jobs import Job


@dataclass
class CheckResult:
    """What a check found: ``report`` (None when the file could not be read: ``error`` says why; its ``sha256`` and
    row counts are the file's); ``bases``: type -> the earlier file that type was compared with (the given bases
    of the types the file holds); ``comparison`` of those types when bases were given (None when one could not be
    read: ``base_error`` says why); ``fingerprint``: the file's (without ctime) while it was read, unchanged
    from start to end (else ``error`` says it changed)."""

    job_id: str
    report: sis_csv.Report | None = None
    error: str | None = None
    comparison: sis_csv.Comparison | None = None
    bases: dict[str, Path] = field(default_factory=dict)
    base_error: str | None = None
    fingerprint: jobs.Fingerprint | None = None


def _fingerprint(path: Path) -> jobs.Fingerprint:
    status = os.stat(path)
    return jobs.Fingerprint(status.st_ino, status.st_size, status.st_mtime_ns)


class Checker:
    """Runs one pre-flight check at a time in a daemon thread; ``wake`` is set when a result is ready. Once
    :meth:`stop` is called (the daemon stops: ``Flight.stop``) no check starts and none is left running."""

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self.running: str | None = None  # the job id whose file is being checked
        self._results: queue.Queue[CheckResult] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # the last check's
        self._lock = threading.Lock()  # start (the flight worker) against stop (the daemon's thread)

    def start(
        self,
        job_id: str,
        path: Path,
        name: str,
        *,
        bases: Mapping[str, Path] | None = None,
        temp_dir: Path | None = None,
    ) -> bool:
        """Check ``path`` (shown as ``name``) for job ``job_id`` unless a check runs; returns whether it started.
        ``bases``: type -> the earlier file to compare that type with (None: no comparison); the types the file
        holds are compared (:func:`sisdaemon.sis_csv.compare_types`, its partition files in ``temp_dir``). Never
        after :meth:`stop`."""
        with self._lock:
            if self.running is not None or self._stop.is_set():
                return False
            self.running = job_id
            self._thread = threading.Thread(
                target=self._run,
                args=(job_id, path, name, dict(bases) if bases is not None else None, temp_dir),
                name=f"check-{job_id}",
                daemon=True,
            )
            self._thread.start()
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop a running check (it looks every few thousand rows; its job is checked again after a restart), start
        none from now on, and wait up to ``timeout`` seconds for its thread to end. Returns whether no check thread
        is left."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def results(self) -> Iterator[CheckResult]:
        """The results ready now (each is returned once)."""
        while True:
            try:
                yield self._results.get_nowait()
            except queue.Empty:
                return

    def _run(self, job_id: str, path: Path, name: str, bases: dict[str, Path] | None, temp_dir: Path | None) -> None:
        result = CheckResult(job_id)
        try:
            before = _fingerprint(path)
            result.report = sis_csv.check_file(path, name=name, should_stop=self._stop.is_set)
            if bases is not None:
                held = set(result.report.csvs.values())
                result.bases = {importer: base for importer, base in bases.items() if importer in held}
                try:
                    result.comparison = sis_csv.compare_types(
                        result.bases,
                        path,
                        names={base: base.name for base in result.bases.values()},
                        after_name=name,
                        temp_dir=temp_dir,
                        should_stop=self._stop.is_set,
                    )
                except (OSError, zipfile.BadZipFile) as error:
                    where = getattr(error, "filename", None) or ", ".join(sorted(map(str, result.bases.values())))
                    result.base_error = f"{getattr(error, 'strerror', None) or error}: {os.path.basename(str(where))}"
            if _fingerprint(path) != before:
                result.report, result.error = None, "the file changed while it was checked"
            result.fingerprint = before
        except sis_csv.Cancelled:
            result.report, result.error = None, "stopped"
        except OSError as error:
            result.report, result.error = None, f"{error.strerror or error}: {error.filename or path}"
        except Exception as error:  # a bug in the check must not leave the job waiting for ever
            result.report, result.error = None, f"{type(error).__name__}: {error}"
        finally:
            self.running = None
            self._results.put(result)
            self.wake.set()


#: At most this many problems are kept in the state and the sidecar (the rest are counted).
PREFLIGHT_KEPT = 50


def preflight_summary(report: sis_csv.Report, mode: str) -> dict[str, Any]:
    """The sidecar's ``preflight``: ``{"mode", "fatal", "problems": [...], "left_out": {code: n}, "rows": {type:
    n}}`` with at most PREFLIGHT_KEPT problems (the fatal ones first)."""
    ordered = sorted(report.problems, key=lambda problem: not problem.fatal)
    left_out = dict(report.left_out)
    for problem in ordered[PREFLIGHT_KEPT:]:
        left_out[problem.code] = left_out.get(problem.code, 0) + 1
    return {
        "mode": mode,
        "fatal": report.fatal,
        "problems": [problem.as_dict() for problem in ordered[:PREFLIGHT_KEPT]],
        "left_out": left_out,
        "rows": dict(report.types),
    }


def after_check(job: Job, report: sis_csv.Report, mode: str, *, now: float) -> Job:
    """The claimed ``job`` once its file was checked (pure): with ``mode`` "reject", a file Canvas would fail goes
    to failed/ unsent (:func:`sisdaemon.jobs.reject`, ``reason_code: preflight``); otherwise it goes on to its
    upload. Either way the findings are kept for its sidecar (``preflight``)."""
    checked = dataclasses.replace(job, preflight=preflight_summary(report, mode), next_action_at=now)
    if report.fatal and mode == "reject":
        return jobs.reject(checked, "preflight", preflight_reason(report), now=now)
    return checked


def preflight_reason(report: sis_csv.Report) -> str:
    """The sidecar's ``reason`` for a file pre-flight rejects: the first fatal problem, and how many more."""
    fatal = [problem for problem in report.problems if problem.fatal]
    more = f" (and {len(fatal) - 1} more fatal problem(s); see preflight)" if len(fatal) > 1 else ""
    return f"pre-flight: Canvas would fail this file: {fatal[0].render()}{more}"
