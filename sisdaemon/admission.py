"""Admission: what a claimed file's check decides before its upload (docs/design.md "A dropped file's life").

The check runs once per file content in the pre-flight worker (checker.py): the pre-flight problems, the file's
sha256 and row counts per SIS type (one read), and for a batch-mode or diffing feed the comparison of each SIS type
the file holds with the feed's last imported file in done/ that held that type (guard.diff_bases: the shrink guard's
baseline, so the guard and the diff never disagree about the earlier file). Its result is applied here, in the
flight worker's thread: checker.after_check (pre-flight reject), then guard.decide (duplicates, the shrink guard),
the job recorded in the ledger.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any

import structlog

from sisdaemon import guard
from sisdaemon.checker import Checker, CheckResult, after_check, preflight_reason
from sisdaemon.config import FeedSettings
from sisdaemon.jobs import Job, JobState, Outcome
from sisdaemon.ledger import Ledger
from sisdaemon.logs import bound

log = structlog.get_logger("sisdaemon")


class Admission:
    """Starts the checks of claimed jobs and applies their results. ``feeds``: feed name -> current settings;
    ``retry_later(job_id, error, now)``: puts a job off (a check that could not be done is tried again)."""

    def __init__(
        self,
        feeds: Mapping[str, FeedSettings],
        ledger: Ledger,
        checker: Checker,
        *,
        retry_later: Callable[[str, str, float], None],
    ) -> None:
        self.feeds = feeds
        self.ledger = ledger
        self.checker = checker
        self.retry_later = retry_later

    def waits_for_check(self, job: Job, now: float) -> bool:
        """Whether claimed ``job`` still waits for its check (started here when it is due and none runs)."""
        feed = self.feeds[job.feed]
        if not guard.needs_check(feed) or job.scan is not None:
            return False
        if job.next_action_at <= now:
            bases = self._diff_bases(job, None)[0]
            if self.checker.start(
                job.job_id,
                feed.work_dir / job.work_name,
                job.name,
                bases=None if bases is None else guard.base_paths(bases, feed.done_dir),
                temp_dir=feed.work_dir,
            ):
                log.debug("preflight_started", compared_with=sorted({str(b["file"]) for b in (bases or {}).values()}))
        return True

    def collect(self, now: float) -> None:
        """Apply every finished check's result to its job (a job filed or changed meanwhile is left alone)."""
        for checked in self.checker.results():
            job = self.ledger.job(checked.job_id)
            if job is not None and job.state is JobState.CLAIMED and job.scan is None:
                with bound(job):
                    self._apply_check(job, checked, now)

    def _diff_bases(
        self, job: Job, types: Collection[str] | None
    ) -> tuple[dict[str, dict[str, Any]] | None, dict[str, str]]:
        """Per SIS type, the earlier file in done/ to compare ``job``'s file with (:func:`guard.diff_bases`; None for
        a feed that is neither in batch mode nor diffing) and the types not compared, with why."""
        feed = self.feeds[job.feed]
        if not guard.watched(feed.import_):
            return None, {}
        return guard.diff_bases(self.ledger.history(job.feed).records, types, feed.done_dir)

    def _apply_check(self, job: Job, checked: CheckResult, now: float) -> None:
        """Record a pre-flight result: the file's sha256 and row counts; then checker.after_check (pre-flight) and
        guard.decide (duplicates, the shrink guard) decide. A check that could not read the file is tried again
        later."""
        if checked.report is None or checked.fingerprint != job.fingerprint:
            error = checked.error or "the file changed since it was checked"
            if error != "stopped":
                log.warning("preflight_not_done", error=error, hint="tried again shortly")
            self.retry_later(job.job_id, f"pre-flight check: {error}", now)
            return
        feed = self.feeds[job.feed]
        report = checked.report
        scan = {"rows": dict(report.types), "types": sorted(set(report.csvs.values()))}
        bases = self._diff_bases(job, scan["types"])[0]
        if bases is not None and guard.base_paths(bases, feed.done_dir) != checked.bases:
            # A file of the feed was filed (or one left done/) while this one was checked: compared with another
            # earlier file than the shrink guard would now use. Compare again, never disagree.
            log.info("diff_compared_again", hint="the feed's last imported file of a type changed during the check")
            self.waits_for_check(job, now)
            return
        job = dataclasses.replace(job, sha256=report.sha256, scan=scan, next_action_at=now)
        mode = feed.preflight
        if mode != "off":
            job = after_check(job, report, mode, now=now)
            if job.state is JobState.FINISHING:
                log.error(
                    "preflight_rejected", reason=job.reason, hint="fix the file and drop it again; nothing was sent"
                )
            elif report.fatal:
                log.warning("preflight_failed_sent_anyway", reason=preflight_reason(report), mode=mode)
            elif report.problems:
                log.info("preflight_warnings", warnings=len(report.problems))
        if job.state is JobState.CLAIMED:
            job = self._decide(job, checked, now)
        if job.state is JobState.CLAIMED:
            # Nothing is done on the strength of it before the next write (the intent before the POST carries it);
            # a crash only makes the check run again.
            self.ledger.put_later(job)
        else:
            self.ledger.put(job)  # finishing: its final names are on disk before the move

    def _decide(self, job: Job, checked: CheckResult, now: float) -> Job:
        """Duplicates and the shrink guard (guard.decide), with the diff summary of a batch-mode or diffing feed."""
        feed = self.feeds[job.feed]
        records = list(self.ledger.history(job.feed).records)
        summary = None
        if guard.watched(feed.import_):
            compared, not_compared = guard.diff_bases(records, (job.scan or {}).get("types") or [], feed.done_dir)
            note = checked.base_error
            if not compared and not not_compared:
                note = note or "the check recognised no SIS CSV in the file: nothing to compare"
            summary = guard.diff_summary(checked.comparison, compared, not_compared, feed.import_, note)
        job = guard.decide(job, feed, records, diff=summary, now=now)
        if job.outcome is Outcome.DUPLICATE_SKIPPED:
            log.info(
                "duplicate_skipped", reason=job.reason, earlier_import_id=(job.duplicate_of or {}).get("import_id")
            )
        elif job.reason_code == "shrink_guard":
            log.error("shrink_guard_held", reason=job.reason, hint="nothing was sent; see the sidecar in failed/")
        elif job.guard is not None and job.guard.get("released_by"):
            log.warning("shrink_guard_released", shrunk=job.guard.get("shrunk"), **job.guard["released_by"])
        if summary is not None and "types" in summary:
            log.info("diff_summary", summary=guard.summary_line(summary))
        return job
