"""A claimed job's way through Canvas: upload, finding a lost import, polling, finishing.

Each step reads the job, asks the pure core (jobs.py, lost.py, polling.py) what comes next, records the result in the
ledger, then acts (docs/design.md "Crash protocol": the intent before the POST, the final names before the move).
Uploads run in the upload worker (upload.py), one at a time per account; the gate in front of Canvas (gate.py) says
when Canvas may be called.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from sisdaemon import file_options, jobs, lost, order, polling, sets, spool, vanished
from sisdaemon.admission import Admission
from sisdaemon.bundler import Bundler
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind, unapplied_options
from sisdaemon.checker import Checker
from sisdaemon.config import FeedSettings, PollingSettings
from sisdaemon.filing import Filer
from sisdaemon.gate import Gate
from sisdaemon.jobs import AbortReason, Job, JobState
from sisdaemon.ledger import Ledger
from sisdaemon.logs import Conditions, bound
from sisdaemon.set_flight import SetZips
from sisdaemon.terms import TermCheck
from sisdaemon.turns import Turns
from sisdaemon.upload import Uploader, UploadResult
from sisdaemon.writers import WriterCheck

log = structlog.get_logger("sisdaemon")


class Flight:
    """The steps of claimed and in-flight jobs: :meth:`step` runs one job's next step, :meth:`collect_uploads`
    applies finished uploads.

    ``feeds``: feed name -> its current settings (the daemon's table). ``base_url``: Canvas's, for sidecars.
    ``to_wall``: turns a reading of the daemon's clock into wall time, for the times a sidecar shows.
    ``on_event``: called with ("submitted" | "filed", job), for ``submit --wait``. ``conditions`` logs lasting
    conditions once when they start and end. ``failed_files`` counts the files this run filed in failed/
    (``run --once`` exits 1 when there are any). ``stopping``: the daemon's stop event (a set's zip being built gives
    up as soon as it is set).
    """

    def __init__(
        self,
        feeds: Mapping[str, FeedSettings],
        ledger: Ledger,
        gate: Gate,
        client: CanvasClient,
        uploader: Uploader,
        writer_check: WriterCheck,
        policy: PollingSettings,
        *,
        base_url: str,
        to_wall: Callable[[float | None], float | None] = lambda moment: moment,
        on_event: Callable[[str, Job], None] | None = None,
        conditions: Conditions | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.feeds = feeds
        self.conditions = conditions or Conditions()
        self.ledger = ledger
        self.gate = gate
        self.client = client
        self.uploader = uploader
        self.writer_check = writer_check
        self.policy = policy
        self.base_url = base_url
        self.to_wall = to_wall
        self.on_event = on_event
        self.checker = Checker(uploader.wake)  # pre-flight checks, in a thread of their own (checker.py)
        #: Whose turn it is: the journal's lines for a job waiting for the account's one upload, and where an
        #: import stands in Canvas's queue.
        self.turns = Turns(ledger, gate, client, self.conditions, to_wall=to_wall)
        self.terms = TermCheck(gate, client)  # a file's own batch-mode term, asked of Canvas before its upload
        self.admission = Admission(
            feeds,
            ledger,
            self.checker,
            retry_later=lambda job_id, error, now: self._retry_later(job_id, error, now + self.policy.interval_seconds),
        )
        #: A set's members in work/ and its zip, built in a thread of its own (set_flight.py, bundler.py).
        self.sets = SetZips(
            feeds,
            ledger,
            writer_check,
            self.conditions,
            Bundler(uploader.wake, stopping=stopping),
            retry_later=lambda job_id, error, now: self._retry_later(job_id, error, now + policy.max_interval_seconds),
        )
        self.filer = Filer(
            feeds,
            ledger,
            gate,
            client,
            writer_check,
            policy,
            base_url=base_url,
            to_wall=to_wall,
            on_event=on_event,
        )

    @property
    def failed_files(self) -> int:
        """How many files this run filed in failed/."""
        return self.filer.failed_files

    def _emit(self, name: str, job: Job) -> None:
        if self.on_event:
            self.on_event(name, job)

    def _work_path(self, job: Job) -> Path:
        return self.feeds[job.feed].work_dir / job.work_name

    def step(self, job: Job, now: float) -> None:
        """One step of one job. A fault never escapes: Canvas faults wait out their backoff; a file-system error
        or a bug is logged and the job is tried again later, so one bad job never stops the others."""
        try:
            if job.state is JobState.FINISHING:
                if job.next_action_at <= now:
                    self.filer.finish(job, now)
                return
            if job.next_action_at > now or not self.gate.is_open(now):
                if job.state is JobState.CLAIMED and job.stable_since is not None:
                    self.check_in_work(job, now)
                return
            if job.state is JobState.CLAIMED:
                self._claimed(job, now)
            elif job.state is JobState.SUBMITTING:
                self._submitting(job, now)
            elif job.state is JobState.SUBMITTED:
                self._submitted(job, now)
        except CanvasError as error:
            self._retry_later(
                job.job_id, str(error), max(self.gate.health.retry_at, now + self.policy.interval_seconds)
            )
        except OSError as error:  # disk full, a folder gone or not writable: keep the job, try later
            message = f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
            if job.last_error != message:  # said once per new problem, not at every retry
                log.error("filesystem_error", error=message, hint="the file waits in work/; fix the folder")
            self._retry_later(job.job_id, message, now + self.policy.max_interval_seconds)
        except Exception as error:  # a bug: keep the job and the other jobs going, try later
            log.exception("job_step_failed", error=f"{type(error).__name__}: {error}")
            self._retry_later(job.job_id, f"{type(error).__name__}: {error}", now + self.policy.max_interval_seconds)

    def _not_found(self, job: Job, key: tuple[str, ...], error: CanvasError, now: float) -> None:
        """Canvas answered 404 for the job's import (a Canvas refreshed or restored, a state file from another
        Canvas): said once while it lasts; the file waits in work/ until ``polling.import_not_found_seconds`` have
        passed (or at once when an abort was asked for), then goes to failed/ as ``import_not_found`` (vanished.py)."""
        grace = self.policy.import_not_found_seconds
        self.conditions.start(
            key,
            "import_not_found",
            level="error",
            error=str(error),
            hint=f"the file waits in work/ for up to {grace:g} s, then goes to failed/; check canvas.base_url and "
            "the import in Canvas",
        )
        before = job.not_found_since
        job = vanished.on_not_found(job, now=now, grace=grace)
        if job.state is JobState.FINISHING:
            self.conditions.end(key, "import_not_found_given_up", waited_seconds=round(vanished.gone_for(job, now)))
            log.warning("import_finished", workflow_state=job.workflow_state, outcome=str(job.outcome))
            self.ledger.put(job)
            self.filer.finish(job, now)
            return
        job = dataclasses.replace(job, last_error=str(error), next_action_at=now + self.policy.max_interval_seconds)
        if job.not_found_since != before:
            self.ledger.put(job)  # the first 404 is kept across restarts: the grace runs from it
        else:
            self.ledger.keep(job)

    def _retry_later(self, job_id: str, error: str, when: float) -> None:
        """Put a job off until ``when`` with its error recorded for ``status`` (saved when the error is new)."""
        current = self.ledger.job(job_id)
        if current is None:
            return
        changed = dataclasses.replace(current, last_error=error, next_action_at=when)
        if current.last_error != error:
            self.ledger.put_quietly(changed)
        else:
            self.ledger.keep(changed)

    # --- claimed: settle in work/, then upload ------------------------------------------------------------------

    def check_in_work(self, job: Job, now: float) -> None:
        """fstat the claimed file: a change since it settled, or a writer holding it open, means the writer is still
        at it; it settles again."""
        feed = self.feeds[job.feed]
        if not sets.is_built(job):
            self.sets.check_members(job, now)  # a set whose zip is not built yet: each of its members
            return
        try:
            fd = spool.open_for_reading(self._work_path(job))
        except OSError as error:
            key = ("work_file_unreadable", job.job_id)
            self.conditions.start(key, "work_file_unreadable", level="error", error=str(error))
            return
        self.conditions.end(("work_file_unreadable", job.job_id), "work_file_readable")
        try:
            current = spool.fingerprint_of(os.fstat(fd))
            writing = self.writer_check(fd)
        finally:
            os.close(fd)
        updated = jobs.observe_in_work(job, current, now, feed.settle_seconds)
        if writing and updated.stable_since is None and job.stable_since is not None:
            updated = dataclasses.replace(updated, stable_since=now)  # settled in size, but still being written
        if updated != job:
            if updated.stable_since is not None and job.stable_since is None:
                log.warning("file_changed_after_claim", size=current.size)
            self.ledger.put(updated)

    def _claimed(self, job: Job, now: float) -> None:
        if job.stable_since is not None:
            self.check_in_work(job, now)
            return
        if not sets.is_built(job):
            self.sets.build(job)
            return
        if self.admission.waits_for_check(job, now):
            return  # checked once, before its first upload; its result comes back through collect_uploads
        if not jobs.may_submit(job, now) or self.ledger.blocked(job.feed):
            return  # a held or paused feed sends nothing new (said by the feed's own lines); imports sent go on
        limits = [feed.max_pending_imports for feed in self.feeds.values()]
        if not order.may_send((other.state.value for other in self.ledger.jobs()), limits):
            return  # max_pending_imports (files retried past it wait in work/); status says so
        if not self.gate.may_upload():
            self.turns.wait_for_upload(job)
            return
        if not self.gate.ready(now):  # a cheap GET: a refused token never costs a large upload
            return
        feed = self.feeds[job.feed]
        job = dataclasses.replace(
            job, file_options=file_options.for_attempt(job.file_options, feed, spool.submitted_name(job.name))
        )
        refused = self.terms.refusal(job, now)  # its own term (file name, params file) is one Canvas knows
        if refused is not None:
            log.error("unknown_term", reason=refused.reason, hint="nothing was sent; see the sidecar in failed/")
            self.ledger.put(refused)
            return
        options = job.file_options["options"] if job.file_options else {}
        tag = None
        if "diff_row_count_threshold" not in options and self.ledger.tags_echoed is not False:
            tag = jobs.TAG_BASE + secrets.randbits(30)
        if not job.zip_members:
            job = dataclasses.replace(job, zip_members=spool.zip_csv_members(self._work_path(job)))
        job = jobs.begin_attempt(job, tag=tag, intent_at=self.client.server_now_iso(), now=now)
        self.ledger.put(job)  # the intent is recorded before the POST
        fields = file_options.form_fields(options)
        if tag is not None:
            fields.append(("diff_row_count_threshold", str(tag)))
        self.gate.uploading = job.job_id
        self.turns.upload_starts(job.job_id)
        log.info("upload_started", attempt=job.attempts, size=job.size)
        self.uploader.start(job, self._work_path(job), fields)

    def stop(self) -> None:
        """The daemon stops: a zip being built is given up at its next piece (built again after a restart), and a
        pre-flight check at its next few thousand rows (checked again after a restart); the check's thread is
        waited for (a few seconds at most), so it does not outlive the daemon."""
        self.sets.stop()
        if not self.checker.stop():
            log.error("preflight_check_did_not_stop", hint="its file is checked again after a restart")

    def collect_uploads(self, now: float) -> None:
        """Apply every finished zip build's, pre-flight check's and upload's result to its job."""
        self.sets.collect(now)
        self.admission.collect(now)
        for result in self.uploader.results():
            self.gate.uploading = None
            job = self.ledger.job(result.job_id)
            if job is None:
                continue
            with bound(job):
                self._apply_upload(job, result, now)

    def _apply_upload(self, job: Job, result: UploadResult, now: float) -> None:
        if result.sha256:
            job = dataclasses.replace(job, sha256=result.sha256)
        if result.kind == "changed":
            assert result.fingerprint is not None
            job = jobs.post_refused(job, "file changed before upload", retry_at=now)
            job = jobs.observe_in_work(job, result.fingerprint, now, self.feeds[job.feed].settle_seconds)
            log.warning("file_changed_before_upload")
            self.ledger.put(job)
            return
        if result.kind == "created" and result.sis_import is not None:
            self.gate.ok()
            job = jobs.upload_ended(job, now=result.ended_at)
            job = self._adopt(job, result.sis_import, now, how="created")
            if result.changed_after and job.state is JobState.SUBMITTED:
                log.warning("file_changed_during_upload", hint="aborting the import; the file settles again")
                self.ledger.put(jobs.request_abort(job, AbortReason.FILE_CHANGED, now=now))
            return
        error = result.error
        assert error is not None
        if error.kind is FaultKind.FILE:
            # A fault of this file alone (413: too large): failed/, with Canvas's answer; the gate stays open and
            # the feed goes on with its next file.
            job = jobs.refused_as_file(job, error.reason_code or "refused", str(error), now=now)
            log.error("file_refused_by_canvas", reason_code=job.reason_code, error=str(error), status=error.status)
            self.ledger.put(job)
            return
        self.gate.fault(error, now)
        if error.created_nothing:
            said = log.debug if job.last_error == str(error) else log.warning  # the gate says the fault lasts
            job = jobs.post_refused(job, str(error), retry_at=max(self.gate.health.retry_at, now))
            said("post_refused", error=str(error), kind=str(error.kind), status=error.status)
            if error.kind is FaultKind.CONFIGURATION:
                hint = (
                    " (check canvas.account_id and the feed's import.batch_mode_term_id)" if error.status == 404 else ""
                )
                self._hold(job.feed, f"{error}{hint}")
        else:
            job = jobs.post_unknown(job, str(error), now=result.ended_at)
            log.warning(
                "post_outcome_unknown",
                error=str(error),
                status=error.status,
                hint="looking for the import before sending again; no other upload of this account meanwhile",
                # the wait's end is journaled as lost_import_found or post_resend
                resend_no_earlier_than=jobs.iso(self.to_wall(result.ended_at + self.policy.resend_after_seconds)),
            )
        self.ledger.put(job)

    def _hold(self, feed: str, reason: str) -> None:
        if self.ledger.hold(feed, reason):
            log.error(
                "feed_held",
                feed=feed,
                reason=reason,
                hint="fix the configuration; the feed resumes when the config file changes or on SIGHUP",
            )

    def _expected_running(self, job: Job) -> float | None:
        """How long Canvas will likely run ``job``'s import, from its feed's history (polling.py)."""
        return polling.scaled_running_seconds(self.ledger.history(job.feed).timed_record(job.name), job.size)

    def _adopt(self, job: Job, sis_import: dict[str, Any], now: float, *, how: str, provisional: bool = False) -> Job:
        """The import is ours: record it (state and ledger), check Canvas applied every option. Returns the job as
        recorded."""
        kept = spool.strip_verifiers(sis_import)  # what the state keeps carries no download capability
        interval = polling.first_poll_delay(self._expected_running(job), self.policy)
        if provisional:
            job = jobs.adopt_provisionally(job, kept, now=now, interval=interval)
        else:
            job = jobs.post_created(job, kept, now=now, interval=interval)
        if job.tag is not None and how == "created":
            echoed = sis_import.get("diff_row_count_threshold") == job.tag
            if self.ledger.set_tags_echoed(echoed):
                log.info("canvas_tag_support", echoes_tags=echoed)
        self.ledger.put(job)
        self.ledger.note_import(job.feed, job.import_id or 0)
        with structlog.contextvars.bound_contextvars(import_id=job.import_id):
            log.info("import_submitted", how=how, workflow_state=job.workflow_state, provisional=provisional)
            self._emit("submitted", job)
            options = dict((job.file_options or {}).get("options") or self.feeds[job.feed].import_.set_options())
            if job.tag is not None and self.ledger.tags_echoed:
                options["diff_row_count_threshold"] = job.tag
            missing = unapplied_options(options, sis_import)
            if missing:
                self._hold(job.feed, f"Canvas did not apply option(s) {', '.join(missing)}")
                job = jobs.request_abort(job, AbortReason.OPTION_NOT_APPLIED, now=now)
                self.ledger.put(job)
        return job

    # --- submitting: the answer was lost; find the import --------------------------------------------------------

    def _submitting(self, job: Job, now: float) -> None:
        if self.gate.uploading == job.job_id:
            return
        if not job.outcome_unknown:
            self.ledger.put(jobs.post_unknown(job, "no upload running", now=now))
            return
        candidates = self._own_unknown_imports(job, now)
        decision = lost.decide_lost_import(
            job,
            candidates,
            server_now=self.client.server_now(),
            now=now,
            policy=self.policy,
            tags_echoed=self.ledger.tags_echoed is not False,
        )
        self._abort_late(job, decision.late_originals, now)
        if decision.action in ("adopt", "adopt_provisionally") and decision.sis_import is not None:
            log.info("lost_import_found", import_id=decision.sis_import.get("id"), reason=decision.reason)
            self._adopt(
                job, dict(decision.sis_import), now, how="found", provisional=decision.action == "adopt_provisionally"
            )
            return
        if decision.action == "resend":
            log.warning("post_resend", reason=decision.reason, attempt=job.attempts + 1)
            self.ledger.put(jobs.resend(job, now=now))
            return
        if decision.action == "ambiguous":
            log.error("lost_import_ambiguous", reason=decision.reason, hint="the file is held; see `sisdaemon status`")
        interval = min(max(self.policy.interval_seconds, 1.0), self.policy.max_interval_seconds)
        self.ledger.put(lost.after_listing(job, decision, now=now, interval=interval))

    def _own_unknown_imports(self, job: Job, now: float) -> list[Any]:
        """The token's user's imports created since ``job``'s first intent (less the clock skew) that no job and no
        ledger knows. Raises CanvasError."""
        since = jobs.parse_time(job.first_intent_at or job.intent_at)
        since_iso = jobs.iso((since or now) - self.policy.clock_skew_seconds)
        me = self.gate.call(now, self.client.get_self)
        self.gate.own_user_id = me.get("id")
        listing = self.gate.call(now, lambda: list(self.client.list_sis_imports(since_iso)))
        return lost.own_candidates(listing, own_user_id=self.gate.own_user_id, known_ids=self.ledger.known_import_ids())

    def _abort_late(self, job: Job, late: tuple[Any, ...], now: float) -> None:
        """Abort earlier attempts of ``job`` that turned up after it was sent again, while they are still queued."""
        for item in late:
            if item.get("workflow_state") in ("created", "initializing"):
                result = self.gate.call(now, self.client.abort_sis_import, int(item["id"]))
                log.warning(
                    "late_original_aborted",
                    late_import_id=item.get("id"),
                    workflow_state=(result or {}).get("workflow_state"),
                )
            else:
                log.error(
                    "late_original_running",
                    late_import_id=item.get("id"),
                    workflow_state=item.get("workflow_state"),
                    hint="an earlier attempt of this file was imported too; check it in Canvas",
                )
            self.ledger.note_import(job.feed, int(item["id"]))

    # --- submitted: poll until Canvas ends the import --------------------------------------------------------------

    def _submitted(self, job: Job, now: float) -> None:
        assert job.import_id is not None
        if job.abort_reason is None and job.workflow_state in ("created", "initializing"):
            # Checked again after the upload while Canvas has not started: a change means it was sent part of the
            # file, and an abort now costs nothing (the whole file follows once it settles).
            changed = self.filer.changed_since_upload(job)
            if changed:
                log.warning("file_changed_after_upload", reason=changed, hint="aborting the queued import")
                job = jobs.request_abort(job, AbortReason.FILE_CHANGED, now=now)
                self.ledger.put(job)
        if job.abort_reason is not None and job.workflow_state not in jobs.TERMINAL_STATES:
            result = self.gate.call(now, self.client.abort_sis_import, job.import_id)
            log.warning(
                "import_abort_requested",
                reason=str(job.abort_reason),
                answered=(result or {}).get("workflow_state", "404"),
            )
        if job.old_tags and self.ledger.tags_echoed is not False and job.workflow_state not in jobs.TERMINAL_STATES:
            # An earlier attempt was given up on (answer lost, or stuck initializing): Canvas may still run it. Keep
            # looking while this one is in flight, and abort it while it is queued (never a second import).
            self._abort_late(job, lost.late_originals(job, self._own_unknown_imports(job, now)), now)
        key = ("import_not_found", job.job_id)
        try:
            sis_import = self.gate.call(now, self.client.get_sis_import, job.import_id)
        except CanvasError as error:
            if error.kind is not FaultKind.NOT_FOUND:
                raise
            self._not_found(job, key, error, now)
            return
        self.conditions.end(key, "import_found_again")
        job = vanished.on_found(job)
        previous, before = job.workflow_state, job.abort_reason
        seen = (previous, job.progress, job.queued_behind)
        sis_import = spool.strip_verifiers(sis_import)  # what is kept in the state carries no download capability
        job, decision = polling.on_poll(
            job,
            sis_import,
            now=now,
            server_now=self.client.server_now(),
            policy=self.policy,
            expected_running=self._expected_running(job),
        )
        job = self.turns.place_in_queue(job, now)
        if job.workflow_state != previous:
            log.info("import_progress", workflow_state=job.workflow_state, progress=job.progress)
        if (job.workflow_state, job.progress, job.queued_behind) != seen:
            self._emit("progress", job)  # `submit --wait` prints each change
        log.debug(
            "import_polled",
            workflow_state=job.workflow_state,
            progress=job.progress,
            next_poll_in_seconds=round(job.next_action_at - now, 2),
        )
        if decision.action == "finish":
            job = jobs.finish(job, now=now, errors_csv_wait=self.policy.errors_csv_wait_seconds)
            log.info("import_finished", workflow_state=job.workflow_state, outcome=str(job.outcome))
            self.ledger.put(job)
            self.filer.finish(job, now)
            return
        if decision.action == "hold":
            self.conditions.start(
                ("import_not_this_file", job.job_id), "import_not_this_file", level="error", reason=job.last_error
            )
        if decision.action == "abort":
            job = dataclasses.replace(job, next_action_at=now)
            if job.abort_reason is AbortReason.TIMED_OUT and job.abort_reason is not before:
                log.warning("import_timed_out", reason=decision.reason)
        elif decision.action in ("resend", "release"):
            settle = job.abort_reason is AbortReason.FILE_CHANGED
            log.warning("import_will_not_apply", reason=decision.reason)
            job = jobs.back_to_claimed(job, decision.reason, now=now, settle_again=settle)
        self.ledger.put(job)

    # --- the loop's view ---------------------------------------------------------------------------------------

    def after_turn(self) -> None:
        """Every job took its step: end the journal's wait lines of jobs that are gone (turns.py)."""
        self.turns.end_waits_of_gone_jobs()

    def due_times(self, now: float) -> list[float]:
        """When each job next needs a step (seconds since the epoch), for the loop's sleep. Work that waits on
        something else (an upload in progress, a closed gate, a held feed) is left out: that thing wakes the loop."""
        times = []
        health = self.gate.health
        sending = self.gate.uploading is not None or self.ledger.any_submitting()
        for job in self.ledger.jobs():
            if job.job_id == self.gate.uploading:
                continue  # its worker wakes the loop when the upload ends
            if job.state is JobState.CLAIMED:
                if self.checker.running is not None and job.scan is None:
                    continue  # the pre-flight worker wakes the loop when its check ends
                if job.stable_since is not None:
                    times.append(now + min(self.feeds[job.feed].settle_seconds / 4, 1.0))
                    continue
                if self.sets.building() and not sets.is_built(job):
                    continue  # the zip worker wakes the loop when its build ends (one set at a time)
                if sending or self.ledger.blocked(job.feed):
                    continue
            when = job.next_action_at
            if health.kind is not None and job.state is not JobState.FINISHING:
                when = max(when, health.retry_at)
            times.append(when)
        return times
