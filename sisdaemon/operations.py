"""Operator requests applied to the ledger and the folders: pause, resume, retry, abort.

The one implementation of what each operator command changes, used by the running daemon (a request read from the
control folder, control.py, applied in the loop's thread) and by the command itself when no daemon runs (under the
state lock). Every change is journaled with the invoking user (``by``, ``sudo_user`` when run through sudo, and
``login_user``, the user who logged in, when it differs from ``by``: see ops.invoker).

A request is a mapping ``{"action", "by", "at", "sudo_user"?, "login_user"?, ...}``; :meth:`Operations.apply`
returns the answer ``{"ok": bool, "message": str, ...}``. Each operation can be applied twice without harm (a crash
between applying a request and answering it applies it again): a second pause refreshes the pause, a second retry
finds the file taken already, a second abort finds the abort asked for already.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from sisdaemon import jobs, set_retry, sets, spool
from sisdaemon.config import FeedSettings
from sisdaemon.file_options import PARAMS_SUFFIX
from sisdaemon.jobs import Job, JobState
from sisdaemon.ledger import Ledger
from sisdaemon.logs import bound

log = structlog.get_logger("sisdaemon")

#: ``retry --all-failed`` claims at most this many files at once (every claim is a job in the state, which must stay
#: small, docs/design.md promise 6); the answer says how many are left for the next run.
RETRY_BATCH_MAX = 100


def _answer(ok: bool, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": ok, "message": message, **extra}


class Operations:
    """Applies operator requests.

    ``feeds``: feed name -> its current settings. ``on_claimed(job, now)``: called after a retried file was claimed
    into work/ (the daemon checks it there and wakes its flight worker). ``on_changed()``: called after any change
    the flight worker should see at once (a resume, an abort).
    """

    def __init__(
        self,
        feeds: Mapping[str, FeedSettings],
        ledger: Ledger,
        *,
        on_claimed: Callable[[Job, float], None] = lambda job, now: None,
        on_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.feeds = feeds
        self.ledger = ledger
        self.on_claimed = on_claimed
        self.on_changed = on_changed

    def apply(self, request: Mapping[str, Any], now: float) -> dict[str, Any]:
        """Apply one request (``now``: the daemon's clock, seconds since the epoch); returns the answer. A request
        that names an unknown action or feed is answered ``ok: False``; a file-system error while applying is
        answered so too (nothing is half done: the state is written before each visible step)."""
        action = request.get("action")
        who = {"by": str(request.get("by") or "unknown"), "at": str(request.get("at") or jobs.iso(now))}
        for key in ("sudo_user", "login_user"):  # who ran it through sudo; who logged in (the audit login uid)
            if request.get(key):
                who[key] = str(request[key])
        try:
            if action == "pause":
                return self._pause(request, who)
            if action == "resume":
                return self._resume(request, who)
            if action == "retry":
                return self._retry(request, who, now)
            if action == "abort":
                return self._abort(request, who, now)
        except OSError as error:
            log.error("operator_request_failed", action=action, error=str(error), **who)
            return _answer(False, f"{action}: {error.filename or ''}: {error.strerror or error}".replace(": : ", ": "))
        return _answer(False, f"unknown request {action!r}")

    def _feed(self, name: Any) -> FeedSettings | None:
        return self.feeds.get(str(name)) if name is not None else None

    # --- pause and resume ----------------------------------------------------------------------------------------

    def _pause(self, request: Mapping[str, Any], who: dict[str, str]) -> dict[str, Any]:
        feed = self._feed(request.get("feed"))
        if feed is None:
            return _answer(False, f"no feed named {request.get('feed')!r} (feeds: {', '.join(self.feeds)})")
        reason = request.get("reason") or None
        before = self.ledger.pause(feed.name, reason=reason, by=who["by"], at=who["at"])
        in_flight = self.ledger.jobs_of(feed.name)
        log.warning("feed_paused", feed=feed.name, reason=reason, was_paused=before is not None, **who)
        self.on_changed()
        return _answer(
            True,
            f"feed {feed.name} paused: no new file is taken from {feed.drop_dir}"
            + (f"; {in_flight} file(s) in flight go on" if in_flight else ""),
            paused=self.ledger.paused(feed.name),
        )

    def _resume(self, request: Mapping[str, Any], who: dict[str, str]) -> dict[str, Any]:
        feed = self._feed(request.get("feed"))
        if feed is None:
            return _answer(False, f"no feed named {request.get('feed')!r} (feeds: {', '.join(self.feeds)})")
        before = self.ledger.resume(feed.name)
        if before is None:
            return _answer(True, f"feed {feed.name} was not paused; nothing changed")
        log.info("feed_resumed", feed=feed.name, paused_by=before.get("by"), paused_at=before.get("at"), **who)
        self.on_changed()
        return _answer(True, f"feed {feed.name} resumed (paused by {before.get('by')} at {before.get('at')})")

    # --- retry -----------------------------------------------------------------------------------------------------

    def _retry(self, request: Mapping[str, Any], who: dict[str, str], now: float) -> dict[str, Any]:
        only_feed = request.get("feed")
        if only_feed is not None and only_feed not in self.feeds:
            return _answer(False, f"no feed named {only_feed!r} (feeds: {', '.join(self.feeds)})")
        feeds = [self.feeds[only_feed]] if only_feed else list(self.feeds.values())
        targets: list[tuple[FeedSettings | None, Path]]
        if request.get("all_failed"):
            targets = [(feed, path) for feed in feeds for path in failed_files(feed)]
            # A set's zip first: its retry takes the set's files with it (set_retry.py), which are then skipped.
            targets.sort(key=lambda target: not target[1].name.endswith(f"_{sets.SET_NAME}"))
        else:
            targets = []
            for name in request.get("files") or []:
                path = Path(str(name))
                feed = self._feed_of(path, feeds)
                if feed is None:
                    targets.append((None, path))
                else:
                    targets.append((feed, feed.failed_dir / path.name))
        left = max(len(targets) - RETRY_BATCH_MAX, 0)
        claimed: list[dict[str, Any]] = []
        refused: list[dict[str, str]] = []
        taken: set[Path] = set()  # the files of a set whose zip was claimed above: they went with it
        for feed, path in targets[:RETRY_BATCH_MAX]:
            if feed is None:
                refused.append({"file": str(path), "why": "in no feed's failed folder"})
                continue
            if path in taken:
                continue
            why, job = self._retry_one(feed, path, who, now, force=bool(request.get("force")))
            if job is not None:
                claimed.append({"file": str(path), "job_id": job.job_id, "feed": feed.name, "work_name": job.work_name})
                taken.update(feed.failed_dir / name for name in set_retry.taken_names(job))
            else:
                refused.append({"file": str(path), "why": why})
        parts = [f"{len(claimed)} file(s) claimed to be sent again"]
        if refused:
            parts.append(f"{len(refused)} refused")
        if left:
            parts.append(f"{left} more in failed/: run it again once these are done")
        if not targets:
            parts = ["no file in failed/ to send again"]
        return _answer(not refused, "; ".join(parts), claimed=claimed, refused=refused, left=left)

    def _feed_of(self, path: Path, feeds: list[FeedSettings]) -> FeedSettings | None:
        """The feed whose failed folder holds ``path`` (a bare name is looked for in each, with its old sidecar
        once sent again; with one feed, it is that feed's)."""
        for feed in feeds:
            if path.parent != Path() and os.path.abspath(path.parent) == os.path.abspath(feed.failed_dir):
                return feed
            if path.parent == Path() and any(
                os.path.lexists(feed.failed_dir / name) for name in (path.name, spool.retried_sidecar_name(path.name))
            ):
                return feed
        return feeds[0] if len(feeds) == 1 and path.parent == Path() else None

    def _retry_one(
        self, feed: FeedSettings, path: Path, who: dict[str, str], now: float, *, force: bool = False
    ) -> tuple[str, Job | None]:
        """Claim one failed file into work/ as a new job: the job recorded first, then the file renamed, then its old
        sidecar renamed (recovery finishes either rename after a crash). ``force`` (``retry --force``): the new job
        passes the shrink guard once (``released_by``: who released it). Returns (why refused, None) or ("",
        job)."""
        name = path.name
        for job in self.ledger.jobs():
            if job.retry_of and job.retry_of.get("file") == name and job.feed == feed.name:
                return f"already being sent again as job {job.job_id}", None
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            retried = feed.failed_dir / spool.retried_sidecar_name(name)
            if os.path.lexists(retried):
                return "sent again already (its sidecar was renamed to " + retried.name + ")", None
            return f"not in {feed.failed_dir}", None
        if name.startswith(".") or name.endswith((".json", ".errors.csv")):
            return "a sidecar, an errors CSV or a temporary file, not a file that was sent", None
        if not stat.S_ISREG(status.st_mode):
            return "not a regular file (it was filed as it was dropped: replace it with a real file in drop/)", None
        if os.path.lexists(feed.failed_dir / (name + PARAMS_SUFFIX)):
            # Its options came from that params file; sent again without them it could run in another term.
            return (
                f"it was dropped with a params file ({name}{PARAMS_SUFFIX}), which retry does not apply: drop both "
                "into drop/ again, the params file first"
            ), None
        sidecar_path = feed.failed_dir / spool.sidecar_name(name)
        try:
            sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return f"no sidecar {sidecar_path.name} beside it: not filed by sisdaemon", None
        except (OSError, ValueError) as error:
            return f"its sidecar {sidecar_path.name} cannot be read ({error})", None
        if not isinstance(sidecar, dict):
            sidecar = {}
        if (refusal := sets.retry_refusal(sidecar)) is not None:
            return refusal, None
        job = jobs.claim(
            secrets.token_hex(5),
            feed.name,
            spool.dropped_name(name),
            spool.fingerprint_of(status),
            seen_at=now,
            now=now,
        )
        retry_of = {
            "file": name,
            "job_id": sidecar.get("job_id"),
            "outcome": sidecar.get("outcome"),
            "reason_code": sidecar.get("reason_code"),
            "sidecar": spool.retried_sidecar_name(name),
            **who,
        }
        if force:
            retry_of["force"] = True
        job = dataclasses.replace(job, retry_of=retry_of, released_by=dict(who) if force else None)
        if sets.is_set_zip(sidecar):  # the set goes again as one import: its files come out of failed/ with it
            job = set_retry.with_members(job, feed.failed_dir, name, sidecar)
        with bound(job), self.ledger.claiming(job.job_id):
            self.ledger.put(job)  # recorded (with a set's every file) before the file leaves failed/
            try:
                spool.move_durably(path, feed.work_dir / job.work_name)
            except OSError as error:
                self.ledger.forget(job.job_id)
                return f"cannot be moved into {feed.work_dir}: {error.strerror or error}", None
            spool.complete_retry_rename(feed.failed_dir, retry_of)
            if sets.is_set(job):
                taken = set_retry.take_members(job, feed.failed_dir, feed.work_dir)
                if taken != job:
                    job = taken
                    self.ledger.put(job)
            log.info(
                "file_retried",
                retry_of=name,
                old_job_id=retry_of["job_id"],
                old_outcome=retry_of["outcome"],
                old_reason_code=retry_of["reason_code"],
                force=force,
                **who,
            )
            if force and retry_of["reason_code"] == "shrink_guard":
                log.warning("shrink_guard_release_requested", retry_of=name, **who)
            self.on_claimed(job, now)
        return "", job

    # --- abort -------------------------------------------------------------------------------------------------

    def _abort(self, request: Mapping[str, Any], who: dict[str, str], now: float) -> dict[str, Any]:
        target = str(request.get("target"))
        found = self.ledger.job(target)
        if found is None:
            found = next((job for job in self.ledger.jobs() if str(job.import_id) == target), None)
        if found is None:
            return _answer(False, f"no job and no import {target} in flight (`sisdaemon status` lists them)")
        job = found
        what = f"job {job.job_id} ({jobs.display_name(job.name)})"
        if job.state is JobState.FINISHING:
            return _answer(False, f"{what} has finished already ({job.outcome}); it is being filed in {job.folder}/")
        if job.state is not JobState.SUBMITTED or job.import_id is None:
            return _answer(
                False,
                f"{what} has no import in Canvas yet ({job.state}); nothing to abort: pause the feed "
                "(`sisdaemon pause`) to keep it from being sent",
            )
        if job.workflow_state in jobs.TERMINAL_STATES:
            return _answer(False, f"{what}: Canvas ended import {job.import_id} already ({job.workflow_state})")
        if job.abort_reason is jobs.AbortReason.OPERATOR:
            asked = f"{what}: the abort of import {job.import_id} was asked for already"
            return _answer(True, asked, job_id=job.job_id)
        with bound(job):
            self.ledger.put(jobs.abort_by_operator(job, by=who["by"], at=who["at"], now=now))
            log.warning("import_abort_requested_by_operator", workflow_state=job.workflow_state, **who)
        self.on_changed()
        return _answer(
            True,
            f"{what}: asking Canvas to abort import {job.import_id}; the file then goes to failed/ "
            "(reason_code aborted_by_operator)",
            job_id=job.job_id,
            import_id=job.import_id,
        )


def failed_files(feed: FeedSettings) -> list[Path]:
    """The files in ``feed``'s failed folder that ``retry --all-failed`` sends again: regular files with a sidecar
    beside them, oldest name first (names start with their UTC stamp)."""
    try:
        names = sorted(os.listdir(feed.failed_dir))
    except FileNotFoundError:
        return []
    present = set(names)
    return [
        feed.failed_dir / name
        for name in names
        if not name.startswith(".")
        and not name.endswith((".json", ".errors.csv"))
        and spool.sidecar_name(name) in present
        and os.path.isfile(feed.failed_dir / name)
        and not os.path.islink(feed.failed_dir / name)
    ]
