"""A claimed job's way through Canvas: upload (in a worker thread), finding a lost import, polling, finishing.

Each step reads the job, asks the pure core (jobs.py) what comes next, persists the result, then acts (docs/design.md
"Crash protocol": the intent before the POST, the final names before the move). Uploads run one at a time per
account in a worker thread that reports through a queue, so a long upload never holds up polling.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sisdaemon import jobs, spool
from sisdaemon.canvas import CanvasError, FaultKind, unapplied_options
from sisdaemon.jobs import AbortReason, Job, JobState
from sisdaemon.runtime import Runtime
from sisdaemon.state import known_import_ids

log = structlog.get_logger("sisdaemon")


@dataclass
class UploadResult:
    """What the upload worker reports: ``kind`` is "created", "error" or "changed"."""

    job_id: str
    kind: str
    sis_import: dict[str, Any] | None = None
    error: CanvasError | None = None
    changed_after: bool = False
    sha256: str | None = None
    fingerprint: jobs.Fingerprint | None = None
    ended_at: float = 0.0


class InFlight(Runtime):
    """The steps of claimed and in-flight jobs; :meth:`_step` runs one job's next step."""

    def _step(self, job: Job, now: float) -> None:
        """One step of one job. A fault never escapes: Canvas faults wait out their backoff; a file-system error
        or a bug is logged and the job is tried again later, so one bad job never stops the others."""
        try:
            if job.state is JobState.FINISHING:
                if job.next_action_at <= now:
                    self._finish_step(job, now)
                return
            if job.next_action_at > now or not self._gate_open(now):
                if job.state is JobState.CLAIMED and job.stable_since is not None:
                    self._check_in_work(job, now)
                return
            if job.state is JobState.CLAIMED:
                self._claimed_step(job, now)
            elif job.state is JobState.SUBMITTING:
                self._submitting_step(job, now)
            elif job.state is JobState.SUBMITTED:
                self._submitted_step(job, now)
        except CanvasError as error:
            self._retry_later(job.job_id, str(error), max(self.health.retry_at, now + self.policy.interval))
        except OSError as error:  # disk full, a folder gone or not writable: keep the job, try later
            message = f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
            if job.last_error != message:  # said once per new problem, not at every retry
                log.error("filesystem_error", error=message, hint="the file waits in work/; fix the folder")
            self._retry_later(job.job_id, message, now + self.policy.max_interval)
        except Exception as error:  # a bug: keep the job and the other jobs going, try later
            log.exception("job_step_failed", error=f"{type(error).__name__}: {error}")
            self._retry_later(job.job_id, f"{type(error).__name__}: {error}", now + self.policy.max_interval)

    def _claimed_step(self, job: Job, now: float) -> None:
        if job.stable_since is not None:
            self._check_in_work(job, now)
            return
        if not jobs.may_submit(job, now) or self.uploading is not None or job.feed in self.state.held:
            return
        if any(other.state is JobState.SUBMITTING for other in self.state.jobs.values()):
            return  # one POST of unknown outcome per account at a time
        if not self._canvas_ready(now):  # a cheap GET: a refused token never costs a large upload
            return
        feed = self.feeds[job.feed].settings
        options = feed.import_.set_options()
        tag = None
        if "diff_row_count_threshold" not in options and self.state.tags_echoed is not False:
            tag = jobs.TAG_BASE + secrets.randbits(30)
        if not job.zip_members:
            job = dataclasses.replace(job, zip_members=spool.zip_csv_members(feed.work_dir / job.work_name))
        job = jobs.begin_attempt(job, tag=tag, intent_at=self.client.server_now_iso(), now=now)
        self._put(job)  # the intent is recorded before the POST
        fields = list(feed.import_.form_fields())
        if tag is not None:
            fields.append(("diff_row_count_threshold", str(tag)))
        self.uploading = job.job_id
        log.info("upload_started", attempt=job.attempts, size=job.size)
        worker = threading.Thread(target=self._upload, args=(job, fields), name=f"upload-{job.job_id}", daemon=True)
        worker.start()

    def _upload(self, job: Job, fields: list[tuple[str, str]]) -> None:
        """Worker thread: check the file, hash it, POST it, check it again. Reports through ``self.results``."""
        feed = self.feeds[job.feed].settings
        result = UploadResult(job.job_id, "error")
        try:
            fd = spool.open_for_reading(feed.work_dir / job.work_name)
        except OSError as error:
            result.error = CanvasError(FaultKind.TRANSIENT, f"cannot open the claimed file: {error.strerror}")
            self.results.put(result)
            self.wake.set()
            return
        try:
            before = spool.fingerprint_of(os.fstat(fd)).without_ctime()
            if before != job.fingerprint:
                result.kind, result.fingerprint = "changed", before
                return
            result.sha256 = spool.sha256_of_fd(fd)
            filename = spool.upload_filename(job.job_id, job.name, spool.sniff_extension(fd))
            try:
                result.sis_import = self.client.create_sis_import(fd, filename, fields)
                result.kind = "created"
            except CanvasError as error:
                result.error = error
            after = spool.fingerprint_of(os.fstat(fd)).without_ctime()
            result.changed_after = after != before
            result.fingerprint = after
        finally:
            os.close(fd)
            result.ended_at = self.clock()
            self.results.put(result)
            self.wake.set()

    def _drain_results(self, now: float) -> None:
        while True:
            try:
                result = self.results.get_nowait()
            except queue.Empty:
                return
            self.uploading = None
            job = self.state.jobs.get(result.job_id)
            if job is None:
                continue
            with self._bound(job):
                self._apply_upload(job, result, now)

    def _apply_upload(self, job: Job, result: UploadResult, now: float) -> None:
        if result.sha256:
            job = dataclasses.replace(job, sha256=result.sha256)
        if result.kind == "changed":
            assert result.fingerprint is not None
            job = jobs.post_refused(job, "file changed before upload", retry_at=now)
            job = jobs.observe_in_work(job, result.fingerprint, now, self.feeds[job.feed].settings.settle_seconds)
            log.warning("file_changed_before_upload")
            self._put(job)
            return
        if result.kind == "created" and result.sis_import is not None:
            self._ok()
            job = jobs.upload_ended(job, now=result.ended_at)
            self._adopt(job, result.sis_import, now, how="created")
            job = self.state.jobs[job.job_id]
            if result.changed_after and job.state is JobState.SUBMITTED:
                log.warning("file_changed_during_upload", hint="aborting the import; the file settles again")
                self._put(jobs.request_abort(job, AbortReason.FILE_CHANGED, now=now))
            return
        error = result.error
        assert error is not None
        self._fault(error, now)
        if error.created_nothing:
            job = jobs.post_refused(job, str(error), retry_at=max(self.health.retry_at, now))
            log.warning("post_refused", error=str(error), kind=str(error.kind), status=error.status)
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
                hint="looking for the import before sending again",
            )
        self._put(job)

    def _adopt(self, job: Job, sis_import: dict[str, Any], now: float, *, how: str, provisional: bool = False) -> None:
        """The import is ours: record it (state and ledger), check Canvas applied every option."""
        kept = spool.strip_verifiers(sis_import)  # what the state keeps carries no download capability
        if provisional:
            job = jobs.adopt_provisionally(job, kept, now=now, interval=self.policy.interval)
        else:
            job = jobs.post_created(job, kept, now=now, interval=self.policy.interval)
        if job.tag is not None and how == "created":
            echoed = sis_import.get("diff_row_count_threshold") == job.tag
            if self.state.tags_echoed is not echoed:
                self.state.tags_echoed = echoed
                log.info("canvas_tag_support", echoes_tags=echoed)
        runtime = self.feeds[job.feed]
        runtime.history.note_import(job.import_id or 0)
        self._put(job)
        runtime.history.save()
        with structlog.contextvars.bound_contextvars(import_id=job.import_id):
            log.info("import_submitted", how=how, workflow_state=job.workflow_state, provisional=provisional)
            self._emit("submitted", job)
            options = dict(runtime.settings.import_.set_options())
            if job.tag is not None and self.state.tags_echoed:
                options["diff_row_count_threshold"] = job.tag
            missing = unapplied_options(options, sis_import)
            if missing:
                reason = f"Canvas did not apply option(s) {', '.join(missing)}"
                self._hold(job.feed, reason)
                self._put(jobs.request_abort(job, AbortReason.OPTION_NOT_APPLIED, now=now))

    def _submitting_step(self, job: Job, now: float) -> None:
        if self.uploading == job.job_id:
            return
        if not job.outcome_unknown:
            self._put(jobs.post_unknown(job, "no upload running", now=now))
            return
        since = jobs.parse_time(job.first_intent_at or job.intent_at)
        since_iso = jobs.iso((since or now) - self.policy.clock_skew)
        me = self._call(self.client.get_self)
        self.own_user_id = me.get("id")
        listing = list(self._call(lambda: list(self.client.list_sis_imports(since_iso))))
        known = known_import_ids([rt.history for rt in self.feeds.values()], self.state)
        candidates = jobs.own_candidates(listing, own_user_id=self.own_user_id, known_ids=known)
        decision = jobs.decide_lost_import(
            job,
            candidates,
            server_now=self.client.server_now(),
            now=now,
            policy=self.policy,
            tags_echoed=self.state.tags_echoed is not False,
        )
        self._abort_late(job, decision.late_originals)
        if decision.action in ("adopt", "adopt_provisionally") and decision.sis_import is not None:
            log.info("lost_import_found", import_id=decision.sis_import.get("id"), reason=decision.reason)
            self._adopt(
                job, dict(decision.sis_import), now, how="found", provisional=decision.action == "adopt_provisionally"
            )
            return
        if decision.action == "resend":
            log.warning("post_resend", reason=decision.reason, attempt=job.attempts + 1)
            self._put(jobs.resend(job, now=now))
            return
        if decision.action == "ambiguous":
            log.error("lost_import_ambiguous", reason=decision.reason, hint="the file is held; see `sisdaemon status`")
        self._put(
            jobs.after_listing(
                job, decision, now=now, interval=min(max(self.policy.interval, 1.0), self.policy.max_interval)
            )
        )

    def _abort_late(self, job: Job, late: tuple[Any, ...]) -> None:
        """Abort earlier attempts of ``job`` that turned up after it was sent again, while they are still queued."""
        history = self.feeds[job.feed].history
        for item in late:
            if item.get("workflow_state") in ("created", "initializing"):
                result = self._call(self.client.abort_sis_import, int(item["id"]))
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
            history.note_import(int(item["id"]))
            history.save()

    def _submitted_step(self, job: Job, now: float) -> None:
        assert job.import_id is not None
        if job.abort_reason is not None and job.workflow_state not in jobs.TERMINAL_STATES:
            result = self._call(self.client.abort_sis_import, job.import_id)
            log.warning(
                "import_abort_requested",
                reason=str(job.abort_reason),
                answered=(result or {}).get("workflow_state", "404"),
            )
        sis_import = self._call(self.client.get_sis_import, job.import_id)
        previous = job.workflow_state
        sis_import = spool.strip_verifiers(sis_import)  # what is kept in the state carries no download capability
        job, decision = jobs.on_poll(job, sis_import, now=now, server_now=self.client.server_now(), policy=self.policy)
        if job.workflow_state != previous:
            log.info("import_progress", workflow_state=job.workflow_state, progress=job.progress)
        if decision.action == "finish" and job.workflow_state in jobs.DONE_STATES:
            changed = self._changed_since_upload(job)
            if changed:
                # A writer went on after its stall: Canvas imported part of the file. The whole file follows.
                log.warning("partial_file_imported", reason=changed, hint="the whole file is sent again once settled")
                decision = jobs.PollDecision("resend", f"the file changed after its upload ({changed})")
                job = dataclasses.replace(job, abort_reason=AbortReason.FILE_CHANGED)
        if decision.action == "finish":
            job = jobs.finish(job, now=now, policy=self.policy)
            log.info("import_finished", workflow_state=job.workflow_state, outcome=str(job.outcome))
            self._put(job)
            self._finish_step(job, now)
            return
        if decision.action == "abort":
            job = dataclasses.replace(job, next_action_at=now)
            log.warning("import_timed_out", reason=decision.reason)
        elif decision.action in ("resend", "release"):
            settle = job.abort_reason is AbortReason.FILE_CHANGED
            log.warning("import_will_not_apply", reason=decision.reason)
            job = jobs.back_to_claimed(job, decision.reason, now=now, settle_again=settle)
        self._put(job)

    def _changed_since_upload(self, job: Job) -> str | None:
        """Why the claimed file is no longer what was uploaded (size or mtime changed, or a writer holds it open),
        or None when it is unchanged."""
        feed = self.feeds[job.feed].settings
        try:
            fd = spool.open_for_reading(feed.work_dir / job.work_name)
        except OSError:
            return None
        try:
            current = spool.fingerprint_of(os.fstat(fd)).without_ctime()
            if current != job.fingerprint:
                return f"size {job.fingerprint.size} -> {current.size} bytes"
            if self.writer_open(fd):
                return "still open for writing"
            return None
        finally:
            os.close(fd)

    def _finish_step(self, job: Job, now: float) -> None:
        runtime = self.feeds[job.feed]
        feed = runtime.settings
        folder = feed.done_dir if job.folder == "done" else feed.failed_dir
        if job.errors_csv is None and job.errors_csv_deadline is not None and job.import_id is not None:
            if not self._fetch_errors_csv(job, folder, now):
                return
            job = self.state.jobs[job.job_id]
        source = feed.work_dir / job.work_name
        target = folder / job.work_name
        if os.path.lexists(source):
            spool.write_sidecar(
                folder,
                job.work_name,
                spool.build_sidecar(job, base_url=self.settings.canvas.base_url, account_id=self.state.account_id),
            )
            spool.move_durably(source, target)
        elif not os.path.lexists(target):
            log.error("finished_file_missing", path=str(source))
        record = {
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
        }
        counts = ((job.sis_import or {}).get("data") or {}).get("counts")
        runtime.history.add(record, counts, success=job.folder == "done")
        runtime.history.save()
        del self.state.jobs[job.job_id]
        self._save()
        if job.folder != "done":
            self.failed_files += 1
        log.info(
            "file_filed",
            folder=job.folder,
            outcome=str(job.outcome),
            reason_code=job.reason_code,
            path=jobs.display_name(str(target)),
        )
        self._emit("filed", job)

    def _fetch_errors_csv(self, job: Job, folder: Path, now: float) -> bool:
        """Download the errors CSV beside the sidecar, waiting a bounded time for Canvas to write it.

        The download URL carries a verifier, so it is never stored: each try reads the import afresh and uses its
        ``errors_attachment.url`` at once. Returns True when finishing can go on (saved, or given up), False to
        come back later (``next_action_at`` says when).
        """
        assert job.import_id is not None
        deadline = job.errors_csv_deadline or now
        waiting = now < deadline
        retry = dataclasses.replace(job, next_action_at=now + min(max(self.policy.interval, 0.2), 5.0))
        try:
            fresh = self._call(self.client.get_sis_import, job.import_id)
            url = (fresh.get("errors_attachment") or {}).get("url")
            if url:
                name = spool.errors_csv_name(job.work_name)
                self._call(self.client.download, url, folder / name)
                self._put(dataclasses.replace(job, errors_csv=name, sis_import=spool.strip_verifiers(fresh)))
                log.info("errors_csv_saved", name=name)
                return True
        except CanvasError as error:
            if waiting:
                self.state.jobs[job.job_id] = retry
                return False
            note = f"errors CSV not saved: {error}"
        else:
            if waiting:
                self.state.jobs[job.job_id] = retry
                return False
            note = "Canvas wrote no errors CSV in time"
        log.warning("errors_csv_not_saved", reason=note, waited_seconds=self.policy.errors_csv_wait)
        self._put(dataclasses.replace(job, errors_csv_deadline=None, notes=(*job.notes, note)))
        return True
