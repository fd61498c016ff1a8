"""The ledger: the state file and the feeds' histories, and the only writer of either.

Every part that changes a job, a hold, the recorded fault or a feed's history does it through :class:`Ledger`, which
holds its lock for each change (the loop's thread claims, the flight worker does the rest) and persists the change
before it returns (docs/design.md "Crash protocol": persist, then act). Parts read jobs and holds
from it freely; none of them holds a :class:`~sisdaemon.state.StateStore` or a :class:`~sisdaemon.state.History`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import structlog

from sisdaemon.jobs import Job, JobState, parse_time
from sisdaemon.state import History, State, StateStore, history_path, known_import_ids

log = structlog.get_logger("sisdaemon")


F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """Run a :class:`Ledger` method under the ledger's lock."""

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    return cast(F, wrapper)


class Ledger:
    """The daemon's persistent record: in-flight jobs, holds, what it learnt of Canvas, and a history per feed.

    ``state_file``: the state file's path (histories live beside it, see :func:`~sisdaemon.state.history_path`).
    :meth:`load` reads both (call it under the state lock). Writes raise OSError (a full or failing disk); the
    in-memory record is changed first, so a failed write is retried by the next one, and :attr:`write_fault` says
    why the last write failed until one succeeds.
    """

    def __init__(self, state_file: Path) -> None:
        self.store = StateStore(state_file)
        self.state_file = state_file
        self.state = State()
        self.histories: dict[str, History] = {}
        #: Why the last write of the state or a history failed (a full or failing disk), or None once one succeeds.
        self.write_fault: str | None = None
        # The loop (claims) and the flight worker (every other change) both write: one at a time.
        self.lock = threading.RLock()
        # Jobs whose claim the loop is still making (recorded, being renamed into work/, or being refused as empty
        # or not a regular file): the flight worker leaves them alone until the claim is whole. In memory only: at a
        # start-up, recovery settles a claim a crash cut short.
        self._claiming: set[str] = set()
        # Whether the state in memory holds a change no step needs on disk yet (put_later, record_finished): the
        # next write carries it, or flush at the end of the flight worker's turn.
        self._unsaved = False

    # --- loading ------------------------------------------------------------------------------------------------

    @_locked
    def load(self, feed_names: Iterable[str]) -> None:
        """Read the state file and the history of each feed in ``feed_names``. Raises StateError when one is
        damaged (naming the file)."""
        self.state = self.store.load()
        for name in feed_names:
            self.add_feed(name)

    @_locked
    def add_feed(self, name: str) -> None:
        """Read feed ``name``'s history (a feed added while running). Raises StateError when it is damaged."""
        if name not in self.histories:
            self.histories[name] = History(history_path(self.state_file, name))

    # --- reading ------------------------------------------------------------------------------------------------

    @_locked
    def job(self, job_id: str) -> Job | None:
        """The job with ``job_id``, or None once it is filed."""
        return self.state.jobs.get(job_id)

    @_locked
    def jobs(self) -> list[Job]:
        """Every claimed and in-flight job, oldest claim first."""
        return sorted(self.state.jobs.values(), key=lambda job: job.claimed_at)

    @_locked
    def flight_jobs(self) -> list[Job]:
        """The jobs the flight worker may take a step with: :meth:`jobs` without those whose claim is still being
        made (:meth:`claiming`)."""
        return [job for job in self.jobs() if job.job_id not in self._claiming]

    @contextlib.contextmanager
    def claiming(self, job_id: str) -> Iterator[None]:
        """While the loop claims ``job_id`` (records it, renames its file into work/, refuses it or hands it over),
        :meth:`flight_jobs` leaves it out, so the flight worker never uploads a file whose claim is not whole (a
        0-byte file about to be refused, a file not yet in work/)."""
        with self.lock:
            self._claiming.add(job_id)
        try:
            yield
        finally:
            with self.lock:
                self._claiming.discard(job_id)

    @_locked
    def jobs_of(self, feed: str) -> int:
        """How many jobs feed ``feed`` has claimed and not yet filed."""
        return sum(1 for job in self.state.jobs.values() if job.feed == feed)

    @_locked
    def any_submitting(self) -> bool:
        """Whether some job's POST is being sent or its answer is unknown (one such per account at a time)."""
        return any(job.state is JobState.SUBMITTING for job in self.state.jobs.values())

    @_locked
    def held(self, feed: str) -> str | None:
        """Why feed ``feed`` is held by a configuration fault, or None."""
        return self.state.held.get(feed)

    @_locked
    def paused(self, feed: str) -> dict[str, str | None] | None:
        """Who paused feed ``feed``, when and why (``{"reason", "by", "at"}``), or None when it is not paused."""
        pause = self.state.paused.get(feed)
        return dict(pause) if pause is not None else None

    @_locked
    def blocked(self, feed: str) -> bool:
        """Whether feed ``feed`` may send no new file: held by a configuration fault, or paused by an operator."""
        return feed in self.state.held or feed in self.state.paused

    @_locked
    def history(self, feed: str) -> History:
        """Feed ``feed``'s history (read-only for callers: change it through the ledger)."""
        return self.histories[feed]

    @_locked
    def known_import_ids(self) -> set[int]:
        """Every import id this daemon knows as its own (histories, jobs and their dead imports)."""
        return known_import_ids(self.histories.values(), self.state)

    @property
    def tags_echoed(self) -> bool | None:
        """Whether this Canvas echoes ``diff_row_count_threshold`` (None until learnt)."""
        return self.state.tags_echoed

    @property
    def account_id(self) -> int | None:
        """Canvas's numeric id of the configured account, once resolved."""
        return self.state.account_id

    # --- writing ------------------------------------------------------------------------------------------------

    @_locked
    def _written(self, write: Callable[[], None]) -> None:
        """Run a write, remembering in :attr:`write_fault` whether the disk took it. Raises OSError."""
        try:
            write()
        except OSError as error:
            self.write_fault = f"{error.filename or self.state_file}: {error.strerror or error}"
            raise
        self.write_fault = None

    @_locked
    def save(self) -> None:
        """Write the state file (atomic, durable), with every change made so far. Raises OSError (and remembers it
        in :attr:`write_fault`)."""
        self._written(lambda: self.store.save(self.state))
        self._unsaved = False

    @_locked
    def flush(self) -> bool:
        """Write the changes that waited for a write (:meth:`put_later`, :meth:`record_finished`), if any; the
        flight worker calls it at the end of each turn, the daemon once its worker stopped. Returns whether the
        state on disk is now whole (False: the write failed, see :attr:`write_fault`; the next write retries)."""
        return self.try_save() if self._unsaved else True

    @_locked
    def try_save(self) -> bool:
        """:meth:`save`, returning whether it worked instead of raising (a failing disk is then in
        :attr:`write_fault`)."""
        try:
            self.save()
        except OSError:
            return False
        return True

    @_locked
    def put(self, job: Job) -> None:
        """Record a new or changed job, then persist it (before the step it prepares). Raises OSError."""
        self.state.jobs[job.job_id] = job
        self.save()

    @_locked
    def put_later(self, job: Job) -> None:
        """Record a changed job that no step depends on finding on disk (docs/design.md "Crash protocol": e.g. a
        pre-flight check's result, which a crash only makes run again): the next write carries it, or
        :meth:`flush` at the end of the flight worker's turn. Several such changes of one turn cost one write."""
        self.state.jobs[job.job_id] = job
        self._unsaved = True

    @_locked
    def keep(self, job: Job) -> None:
        """Change a job in memory only: a retry time or a note that need not survive a restart."""
        self.state.jobs[job.job_id] = job

    @_locked
    def discard(self, job_id: str) -> None:
        """Remove a job in memory only (start-up recovery; its :meth:`save` follows)."""
        self.state.jobs.pop(job_id, None)

    @_locked
    def put_quietly(self, job: Job) -> None:
        """Record a job and try to persist it; a failing disk is not an error here (the state folder itself may be
        the one that is full), the next write carries the change."""
        self.state.jobs[job.job_id] = job
        self.try_save()

    @_locked
    def forget(self, job_id: str) -> None:
        """Remove a job that never left drop/ (its claim failed), and persist. Raises OSError."""
        self.state.jobs.pop(job_id, None)
        self.save()

    @_locked
    def hold(self, feed: str, reason: str) -> bool:
        """Hold ``feed`` for a configuration fault; returns True when the hold or its reason is new (then
        persisted)."""
        if self.state.held.get(feed) == reason:
            return False
        self.state.held[feed] = reason
        self.save()
        return True

    @_locked
    def pause(self, feed: str, *, reason: str | None, by: str, at: str) -> dict[str, str | None] | None:
        """Pause feed ``feed`` (``by``: a login name; ``at``: ISO 8601 UTC) and persist it. Returns the pause it
        replaces (None when the feed was not paused). Raises OSError."""
        before = self.state.paused.get(feed)
        self.state.paused[feed] = {"reason": reason, "by": by, "at": at}
        self.save()
        return before

    @_locked
    def resume(self, feed: str) -> dict[str, str | None] | None:
        """Resume feed ``feed`` and persist it; returns the pause it ended (None when it was not paused, and then
        nothing is written). Raises OSError."""
        before = self.state.paused.pop(feed, None)
        if before is not None:
            self.save()
        return before

    @_locked
    def release_holds(self) -> list[str]:
        """Release every held feed (in memory; the caller's next save persists it). Returns their names."""
        released = sorted(self.state.held)
        self.state.held.clear()
        return released

    @_locked
    def set_fault(self, fault: Mapping[str, Any] | None) -> None:
        """Record the current fault of talking to Canvas (for ``status``), or clear it; persisted when changed."""
        value = dict(fault) if fault is not None else None
        if self.state.fault != value:
            self.state.fault = value
            self.try_save()  # for `status` only: a full disk must not turn a Canvas fault into a crash

    @_locked
    def clear_warnings(self) -> None:
        """Forget the warnings of an earlier run (in memory; the next save persists it): each part says its own
        again when it still holds."""
        self.state.warnings.clear()

    @_locked
    def set_warning(self, name: str, text: str | None) -> None:
        """Record (or, with None, clear) a lasting condition ``status`` shows; persisted when changed, quietly (a
        warning must never stop the daemon)."""
        if self.state.warnings.get(name) == text:
            return
        if text is None:
            self.state.warnings.pop(name, None)
        else:
            self.state.warnings[name] = text
        self.try_save()

    @_locked
    def set_tags_echoed(self, echoed: bool) -> bool:
        """Remember whether Canvas echoes attempt tags; returns True when that is news (persisted with the next
        :meth:`put`)."""
        if self.state.tags_echoed is echoed:
            return False
        self.state.tags_echoed = echoed
        return True

    @_locked
    def set_account_id(self, account_id: int) -> None:
        """Remember the resolved account id (persisted with the next write)."""
        self.state.account_id = account_id

    @_locked
    def note_import(self, feed: str, import_id: int, *, save: bool = True) -> None:
        """Add ``import_id`` to feed ``feed``'s ledger of own imports (and persist the history unless ``save`` is
        False, as at start-up where the state's jobs already carry it). Raises OSError."""
        history = self.histories[feed]
        history.note_import(import_id)
        if save:
            self._written(history.save)

    @_locked
    def record_finished(self, job: Job, counts: Mapping[str, int] | None) -> None:
        """A job is filed: append its record to the feed's history (one fsync'd line, history.py), then drop it
        from the state. The drop is written with the next write of the state, or by :meth:`flush` at the end of
        the flight worker's turn, never before the history line: no step depends on it being on disk (a crash
        before it leaves the job ``finishing`` with its file filed, and finishing again is idempotent: the
        history takes one record per job). Raises OSError (the history line; the job then stays)."""
        record = history_record(job)
        history = self.histories[job.feed]
        history.add(record, counts, success=job.folder == "done")
        self._written(history.save)
        del self.state.jobs[job.job_id]
        self._unsaved = True


def history_record(job: Job) -> dict[str, Any]:
    """A filed job's record in its feed's history (history.py :class:`History`): its names (``work_name`` is its
    name in done/ or failed/), import, outcome, hash and size, Canvas's running time, and ``rows``: the data rows per
    SIS type its check counted (None when it was not checked), the shrink guard's baseline."""
    return {
        "job_id": job.job_id,
        "file": job.name,
        "work_name": job.work_name,
        "import_id": job.import_id,
        "outcome": str(job.outcome),
        "folder": job.folder,
        "finished_at": job.finished_at,
        "sha256": job.sha256,
        "size": job.size,
        "reason_code": job.reason_code,
        "running_seconds": running_seconds(job.sis_import),
        "rows": row_counts(job),
    }


def row_counts(job: Job) -> dict[str, int] | None:
    """The data rows per SIS type (Canvas's importer names) the check of ``job``'s file counted, or None."""
    rows = (job.scan or {}).get("rows")
    return {str(name): int(count) for name, count in rows.items()} if isinstance(rows, Mapping) else None


def running_seconds(sis_import: Mapping[str, Any] | None) -> float | None:
    """How long Canvas ran an import (``ended_at - started_at``, seconds), for the polling estimates of the next
    imports (polling.py); None when either time is missing."""
    if not sis_import:
        return None
    started, ended = parse_time(sis_import.get("started_at")), parse_time(sis_import.get("ended_at"))
    if started is None or ended is None or ended < started:
        return None
    return round(ended - started, 3)
