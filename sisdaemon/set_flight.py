"""The flight's part for sets (run by the flight worker, flight.py): a set's members in work/ until its zip is built,
and the zip built by the zip worker (bundler.py, a thread of its own) and recorded as built before the set's check
and upload (docs/design.md "Sets of files"; the decisions are sets.py's).

A member that a writer changed after the set was claimed (it stalled past settling, then wrote more) is handled as a
single file that changed in work/ is (jobs.observe_in_work): its new fingerprint is recorded, the set settles again
(``stable_since``), and its zip is built once it holds still; the journal says so once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import structlog

from sisdaemon import jobs, sets, spool
from sisdaemon.bundler import BuildResult, Bundler
from sisdaemon.config import FeedSettings
from sisdaemon.jobs import Fingerprint, Job, JobState
from sisdaemon.ledger import Ledger
from sisdaemon.logs import Conditions, bound
from sisdaemon.writers import WriterCheck

log = structlog.get_logger("sisdaemon")


class SetZips:
    """Sets whose zip is not built yet. ``feeds``: feed name -> current settings; ``bundler``: the zip worker;
    ``retry_later(job_id, error, now)``: puts a job off (a build that failed is tried again later)."""

    def __init__(
        self,
        feeds: Mapping[str, FeedSettings],
        ledger: Ledger,
        writer_check: WriterCheck,
        conditions: Conditions,
        bundler: Bundler,
        *,
        retry_later: Callable[[str, str, float], None],
    ) -> None:
        self.feeds = feeds
        self.ledger = ledger
        self.writer_check = writer_check
        self.conditions = conditions
        self.bundler = bundler
        self.retry_later = retry_later

    def building(self) -> bool:
        """Whether a zip is being built (the zip worker wakes the flight when it ends)."""
        return self.bundler.running is not None

    def check_members(self, job: Job, now: float) -> None:
        """fstat each CSV member of set ``job`` (zip not built yet): a member that changed since its claim, or one a
        writer holds open, means the writer is still at it; the set settles again (sets.observe_members)."""
        work_dir = self.feeds[job.feed].work_dir
        current: dict[str, Fingerprint] = {}
        writing = False
        key = ("work_file_unreadable", job.job_id)
        for member in sets.members_of(job, sets.CSV):
            try:
                fd = spool.open_for_reading(work_dir / str(member["work_name"]))
            except OSError as error:
                self.conditions.start(key, "work_file_unreadable", level="error", error=str(error))
                return
            try:
                current[str(member["name"])] = spool.fingerprint_of(os.fstat(fd))
                writing = bool(self.writer_check(fd)) or writing
            finally:
                os.close(fd)
        self.conditions.end(key, "work_file_readable")
        self._observe(job, current, now, writing=writing)

    def build(self, job: Job) -> None:
        """Start building set ``job``'s zip in work/ (one set at a time); :meth:`collect` records its result."""
        if self.bundler.start(job, self.feeds[job.feed].work_dir):
            log.debug("set_zip_started", files=len(sets.members_of(job, sets.CSV)), size=job.size)

    def collect(self, now: float) -> None:
        """Apply every finished build's result to its set."""
        for result in self.bundler.results():
            self._apply(result, now)

    def stop(self) -> None:
        """The daemon stops: a zip being built is given up at its next piece (built again after a restart)."""
        self.bundler.stop()

    def _apply(self, result: BuildResult, now: float) -> None:
        """Record a finished build: the zip as built, only while the set is claimed, unbuilt and its members are as
        they were when the build started; or members that changed (the set settles again); or the error (tried
        again later)."""
        job = self.ledger.job(result.job_id)
        if job is None or job.state is not JobState.CLAIMED or sets.is_built(job):
            return
        with bound(job):
            if result.changed:
                self._observe(job, result.changed, now, writing=False)
            elif result.error is not None:
                if result.error == "stopped":
                    return
                if job.last_error != result.error:  # said once per new problem, not at every retry
                    log.error("filesystem_error", error=result.error, hint="the set waits in work/; fix the folder")
                self.retry_later(job.job_id, result.error, now)
            elif result.zipped is not None and result.members == sets.member_fingerprints(job):
                zipped = result.zipped
                built = sets.built(job, zipped.fingerprint, zipped.hashes, zipped.zip_members)
                self.ledger.put(dataclasses.replace(built, next_action_at=now))  # recorded before anything is sent
                log.info("set_zip_built", size=built.size, files=len(sets.members_of(built, sets.CSV)))

    def _observe(self, job: Job, current: Mapping[str, Fingerprint], now: float, *, writing: bool) -> None:
        """Record what was seen of set ``job``'s members (changed ones anew); said once, as
        ``set_member_changed_after_claim``, when the set starts settling again."""
        updated = sets.observe_members(job, current, now, self.feeds[job.feed].settle_seconds)
        if writing and updated.stable_since is None and job.stable_since is not None:
            updated = dataclasses.replace(updated, stable_since=now)  # settled in size, but still being written
        if updated == job:
            return
        if updated.stable_since is not None and job.stable_since is None:
            recorded = sets.member_fingerprints(job)
            log.warning(
                "set_member_changed_after_claim",
                files=[
                    jobs.display_name(name)
                    for name, seen in current.items()
                    if seen.without_ctime() != recorded.get(name)
                ],
                hint="its writer was still at it: the set settles again, then its zip is built",
            )
        self.ledger.put(updated)
