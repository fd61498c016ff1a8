"""Filing a finished job: its errors CSV, a last check of the file against what was sent, the sidecar, the move into
done/ or failed/, and the history record (docs/design.md "Crash protocol": the final names are recorded first, a
sidecar that exists with its file still in work/ means "finish the move")."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from sisdaemon import bundle, file_options, jobs, params_files, sets, spool
from sisdaemon.canvas import CanvasClient, CanvasError
from sisdaemon.config import FeedSettings, PollingSettings
from sisdaemon.gate import Gate
from sisdaemon.jobs import Job
from sisdaemon.ledger import Ledger
from sisdaemon.writers import WriterCheck

log = structlog.get_logger("sisdaemon")


class Filer:
    """Files finished jobs. ``feeds``: feed name -> current settings; ``base_url``: Canvas's, for sidecars;
    ``to_wall``: the daemon's clock to wall time, for the sidecar's times; ``on_event``: called with ("filed",
    job). ``failed_files`` counts the files this run filed in failed/."""

    def __init__(
        self,
        feeds: Mapping[str, FeedSettings],
        ledger: Ledger,
        gate: Gate,
        client: CanvasClient,
        writer_check: WriterCheck,
        policy: PollingSettings,
        *,
        base_url: str,
        to_wall: Callable[[float | None], float | None],
        on_event: Callable[[str, Job], None] | None = None,
    ) -> None:
        self.feeds = feeds
        self.ledger = ledger
        self.gate = gate
        self.client = client
        self.writer_check = writer_check
        self.policy = policy
        self.base_url = base_url
        self.to_wall = to_wall
        self.on_event = on_event
        self.failed_files = 0

    def _work_path(self, job: Job) -> Path:
        return self.feeds[job.feed].work_dir / job.work_name

    def changed_since_upload(self, job: Job) -> str | None:
        """Why the claimed file is no longer what was uploaded (size or mtime changed, or a writer holds it open),
        or None when it is unchanged."""
        try:
            fd = spool.open_for_reading(self._work_path(job))
        except OSError:
            return None
        try:
            current = spool.fingerprint_of(os.fstat(fd)).without_ctime()
            before = job.fingerprint
            if current.size != before.size:
                return f"size {before.size} -> {current.size} bytes since the upload"
            if current != before:
                return "rewritten since the upload (modification time or inode changed)"
            if self.writer_check(fd):
                return "still open for writing"
            return None
        finally:
            os.close(fd)

    def finish(self, job: Job, now: float) -> None:
        """File a finishing job: the errors CSV (waited for a bounded time), the file checked again, the sidecar,
        the move, the history record. Raises OSError (the step is retried) or CanvasError."""
        feed = self.feeds[job.feed]
        folder = feed.done_dir if job.folder == "done" else feed.failed_dir
        if job.errors_csv is None and job.errors_csv_deadline is not None and job.import_id is not None:
            if not self._fetch_errors_csv(job, folder, now):
                return
            job = self.ledger.job(job.job_id) or job
        source = feed.work_dir / job.work_name
        if job.import_id is not None and os.path.lexists(source):
            # Checked again at filing: a writer that went on after its stall changed what Canvas was sent.
            job = self._partial(job, self.changed_since_upload(job), "file")
        if sets.is_set(job) and job.import_id is not None:
            # A member's writer that went on after the zip was built: what Canvas was sent is part of that file.
            job = self._partial(job, bundle.changed_since_built(job, feed.work_dir), "set")
        folder = feed.done_dir if job.folder == "done" else feed.failed_dir
        target = folder / job.work_name
        if os.path.lexists(source) and job.sha256 is None and (job.import_id is not None or job.superseded_by):
            # Hashed by the upload worker, but a kill before its result was applied lost it: hash the file again.
            # A superseded file was never read: its hash lets an operator match it with the export it came from.
            try:
                fd = spool.open_for_reading(source)
            except OSError:
                pass
            else:
                try:
                    job = dataclasses.replace(job, sha256=spool.sha256_of_fd(fd))
                finally:
                    os.close(fd)
                if job.import_id is not None:  # a superseded file's hash is only for its sidecar: found again
                    self.ledger.put(job)
        account_id = self.ledger.account_id
        sidecar = spool.build_sidecar(job, base_url=self.base_url, account_id=account_id, to_wall=self.to_wall)
        if job.file_options:  # the options sent (or refused) and where each came from
            sidecar["import_options"] = file_options.sidecar_section(
                job.file_options, params_files.params_in_folder(job)
            )
        if sets.is_set(job):  # each member beside the zip, with its own sidecar naming the set (bundle.py)
            bundle.file_members(job, feed.work_dir, folder, sidecar)
            sidecar = sets.set_sidecar(sidecar, job)
        if os.path.lexists(source):
            spool.write_sidecar(folder, job.work_name, sidecar, temp_dir=feed.work_dir)
            spool.move_durably(source, target)
        elif not os.path.lexists(target) and sets.is_built(job):  # a set refused before its zip was built has none
            log.error("finished_file_missing", path=str(source))
        self._file_params(feed, job, folder)
        counts = ((job.sis_import or {}).get("data") or {}).get("counts")
        self.ledger.record_finished(job, counts)
        if job.folder != "done":
            self.failed_files += 1
        # A file in failed/ is something an operator must look at: `journalctl -p err` shows it.
        level = log.info if job.folder == "done" else log.error
        level(
            "file_filed",
            folder=job.folder,
            outcome=str(job.outcome),
            reason_code=job.reason_code,
            # A set refused before its zip was built has none: its members are in the folder, each with a sidecar.
            path=jobs.display_name(str(target if os.path.lexists(target) else folder)),
            **({"files": sets.summary(job)["members"]} if sets.is_set(job) else {}),
        )
        if self.on_event:
            self.on_event("filed", job)

    def _partial(self, job: Job, changed: str | None, what: str) -> Job:
        """``job`` filed in failed/ as ``changed_during_import`` (recorded, said at error) when ``changed`` says
        why what Canvas was sent is part of ``what`` ("file", "set"); else ``job`` as it is."""
        if not changed or jobs.changed_at_filing(job, changed) == job:
            return job
        job = jobs.changed_at_filing(job, changed)
        log.error(
            "partial_file_imported",
            reason=changed,
            workflow_state=job.workflow_state,
            hint=f"filed in failed/ as changed_during_import; send the whole {what} again",
        )
        self.ledger.put(job)
        return job

    def _file_params(self, feed: FeedSettings, job: Job, folder: Path) -> None:
        """The params file follows its data file into ``folder`` (idempotent: filing again after a crash finishes
        it; a claim cut between its two renames is finished first)."""
        in_folder = params_files.params_in_folder(job)
        if in_folder is not None and not os.path.lexists(folder / in_folder):
            params_files.claim_beside(feed, job)
            params_files.file_beside(feed, job, folder)

    def _fetch_errors_csv(self, job: Job, folder: Path, now: float) -> bool:
        """Download the errors CSV beside the sidecar, waiting a bounded time for Canvas to write it.

        The download URL carries a verifier, so it is never stored: each try reads the import afresh and uses its
        ``errors_attachment.url`` at once. Returns True when finishing can go on (saved, or given up), False to
        come back later (``next_action_at`` says when).
        """
        assert job.import_id is not None
        deadline = job.errors_csv_deadline or now
        waiting = now < deadline
        retry = dataclasses.replace(job, next_action_at=now + min(max(self.policy.interval_seconds, 0.2), 5.0))
        try:
            fresh = self.gate.call(now, self.client.get_sis_import, job.import_id)
            url = (fresh.get("errors_attachment") or {}).get("url")
            if url:
                name = spool.errors_csv_name(job.work_name)
                target = folder / name
                self.gate.call(now, lambda: self.client.download(url, target, temp_dir=self.feeds[job.feed].work_dir))
                self.ledger.put(dataclasses.replace(job, errors_csv=name, sis_import=spool.strip_verifiers(fresh)))
                log.info("errors_csv_saved", name=name)
                return True
        except CanvasError as error:
            if waiting:
                self.ledger.keep(retry)
                return False
            note = f"errors CSV not saved: {error}"
        else:
            if waiting:
                self.ledger.keep(retry)
                return False
            note = "Canvas wrote no errors CSV in time"
        log.warning("errors_csv_not_saved", reason=note, waited_seconds=self.policy.errors_csv_wait_seconds)
        self.ledger.put(dataclasses.replace(job, errors_csv_deadline=None, notes=(*job.notes, note)))
        return True
