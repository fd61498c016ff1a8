"""Start-up recovery: reconcile the state file with the folders after a stop or a crash (a named code path, as rq's
``StartedJobRegistry.cleanup`` is).

claimed: finish an interrupted rename out of drop/, then its params file's (or, for ``sisdaemon retry``, out of
failed/, and the rename of the retried file's old sidecar). submitting: the POST's answer is unknown; the flight
looks for the import. finishing: the flight finishes writing the sidecar and the move. Files in work/ that no job
records are reported, never moved (only a person can tell whether Canvas has them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import structlog

from sisdaemon import bundle, jobs, params_files, set_retry, sets, spool
from sisdaemon.config import FeedSettings, Settings
from sisdaemon.jobs import JobState
from sisdaemon.ledger import Ledger
from sisdaemon.logs import bound
from sisdaemon.sis_csv import remove_stale_diff_dirs
from sisdaemon.state import State, remove_stale_temp_files

log = structlog.get_logger("sisdaemon")

#: At most this many orphans are reported (the work folder holds only in-flight files unless something went wrong).
ORPHANS_SHOWN = 50


def recover(ledger: Ledger, feeds: Mapping[str, FeedSettings], settings: Settings, *, now: float) -> None:
    """Reconcile ``ledger``'s jobs with the folders of ``feeds`` (name -> settings) and persist the result (a failed
    write is left in ``ledger.write_fault`` for the loop); then report orphans in the work folders. Jobs of feeds no
    longer configured are kept and reported. Raises OSError when a rename fails."""
    for job in ledger.jobs():
        feed = feeds.get(job.feed)
        with bound(job):
            if feed is None:
                log.error("job_of_unknown_feed", hint="restore the feed in the config to finish this job")
                continue
            work = feed.work_dir / job.work_name
            if sets.is_set(job) and not sets.is_built(job) and job.state in (JobState.CLAIMED, JobState.FINISHING):
                # A set's claim (or its refusal): members still in drop/ are renamed now; its zip is built (again)
                # by the flight, a refused set is filed.
                filed = None  # a refused set part filed: its members already in failed/ are in their place
                if job.state is JobState.FINISHING:
                    filed = feed.failed_dir if job.folder == "failed" else feed.done_dir
                job = bundle.recover_claim(job, feed.drop_dir, feed.work_dir, filed)
                if not sets.members_of(job):
                    log.error("claimed_file_missing", path=str(feed.drop_dir), reason="no file of the set is left")
                    ledger.discard(job.job_id)
                    continue
            elif job.state is JobState.CLAIMED and not os.path.lexists(work):
                # A file sent again by `sisdaemon retry` is claimed from failed/, never from drop/.
                source = feed.failed_dir / job.retry_of["file"] if job.retry_of else feed.drop_dir / job.name
                try:
                    same = os.lstat(source).st_ino == job.fingerprint.ino
                except FileNotFoundError:
                    same = False
                if same:
                    spool.move_durably(source, work)
                    log.info("claim_completed", reason="recovery")
                else:
                    log.error("claimed_file_missing", path=str(work))
                    ledger.discard(job.job_id)
                    continue
            if job.state is not JobState.FINISHING:  # killed between the data file's and its params file's renames
                params_files.claim_beside(feed, job)
            if job.state is JobState.CLAIMED and job.superseded_by is not None:
                # Killed between a superseded file's claim and its filing: it is filed, never sent.
                job = jobs.supersede(job, now=now)  # kept below, saved before the flight worker starts
                log.info("file_superseded", reason="recovery", superseded_by=(job.superseded_by or {}).get("file"))
            # Times from an earlier run are readings of that run's clock: one in the future (the wall clock was
            # stepped back between the runs) must not put a job off; it is due now.
            job = jobs.due_by(job, now)
            if job.state is JobState.SUBMITTING and not job.outcome_unknown:
                job = jobs.post_unknown(job, "stopped while the POST was in the air", now=now)
                log.warning(
                    "post_outcome_unknown",
                    reason="recovery",
                    hint="looking for the import before sending again; no other upload of this account meanwhile",
                    resend_no_earlier_than=jobs.iso(now + settings.polling.resend_after_seconds),
                )
            if job.retry_of:  # killed between the retry's two renames: its old sidecar is renamed now
                spool.complete_retry_rename(feed.failed_dir, job.retry_of)
                if sets.is_set(job) and job.state is JobState.CLAIMED:  # and a retried set's files (set_retry.py)
                    job = set_retry.take_members(job, feed.failed_dir, feed.work_dir)
            ledger.keep(job)
            if job.import_id is not None:
                ledger.note_import(job.feed, job.import_id, save=False)
    ledger.try_save()  # a full disk at start is a fault the loop reports and waits out, not a reason to exit
    for feed in feeds.values():  # a kill while a sidecar or errors CSV was written leaves a temp file in work/
        for leftover in remove_stale_temp_files(feed.work_dir, owned=_sidecar_or_errors_csv):
            log.info("stale_temp_file_removed", path=str(leftover), reason="a sidecar's write or a download was cut")
        for leftover in remove_stale_diff_dirs(feed.work_dir):
            log.info("stale_temp_file_removed", path=str(leftover), reason="a comparison with the last import was cut")
    for orphan in orphans_in_work(settings, ledger.state):
        log.warning(
            "orphan_in_work",
            feed=orphan["feed"],
            path=orphan["path"],
            hint="a file in work/ that no job records (a state file moved aside?): check Canvas for its import "
            "before moving it back to drop/ or to done/",
        )


def _sidecar_or_errors_csv(name: str) -> bool:
    """Whether ``name`` is a sidecar's or an errors CSV's (whose temp files are made in work/)."""
    return name.endswith((".result.json", ".errors.csv"))


def orphans_in_work(settings: Settings, state: State | None) -> list[dict[str, str]]:
    """Files in a feed's work folder that no job in the state records, as ``[{"feed", "path"}]`` (at most
    :data:`ORPHANS_SHOWN`). They are left alone: only a person can tell whether Canvas has them."""
    known = {name for job in state.jobs.values() for name in bundle.work_names(job)} if state else set()
    known |= {params_files.params_in_folder(job) or job.work_name for job in state.jobs.values()} if state else set()
    found: list[dict[str, str]] = []
    for feed in settings.feeds:
        try:
            names = sorted(os.listdir(feed.work_dir))
        except OSError:
            continue
        for name in names:
            if name not in known and not name.startswith("."):
                found.append({"feed": feed.name, "path": jobs.display_name(str(feed.work_dir / name))})
                if len(found) >= ORPHANS_SHOWN:
                    return found
    return found
