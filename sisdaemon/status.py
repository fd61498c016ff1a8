"""``sisdaemon status``: feeds and in-flight jobs, read from the state and history files (no lock needed)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sisdaemon.config import ConfigFile, FeedSettings, Settings, instance_name, state_file_of
from sisdaemon.drift import Drift, compare
from sisdaemon.freshness import judge_feed
from sisdaemon.heartbeat import heartbeat_path, read_heartbeat, running_config
from sisdaemon.jobs import display_name, iso
from sisdaemon.order import account_limit, in_canvas, pending_imports
from sisdaemon.recovery import orphans_in_work
from sisdaemon.state import (
    History,
    StateError,
    StateStore,
    history_path,
    is_locked,
    read_lock_pid,
    state_lock_path,
)
from sisdaemon.waits import feed_wait, job_wait
from sisdaemon.watcher import NEVER_TAKEN, is_candidate_name, skip_reason

#: How many of each feed's last finished files ``status`` shows (newest first).
LAST_FINISHED_SHOWN = 5


def drop_problem(feed: FeedSettings) -> str | None:
    """A sentence when the feed's drop folder is missing or cannot be read (a fault: nothing arrives), else None."""
    try:
        os.scandir(feed.drop_dir).close()
    except FileNotFoundError:
        return f"feed {feed.name}: the drop folder {feed.drop_dir} is missing: no file can arrive"
    except OSError as error:
        return f"feed {feed.name}: the drop folder {feed.drop_dir} cannot be read ({error.strerror})"
    return None


def last_finished(history: History | None, count: int = LAST_FINISHED_SHOWN) -> list[dict[str, Any]]:
    """The feed's last ``count`` finished files from its history, newest first: ``[{"file", "outcome",
    "reason_code", "folder", "work_name", "import_id", "finished_at"}]`` (times ISO 8601 UTC)."""
    if history is None:
        return []
    return [
        {
            "file": display_name(str(record.get("file"))),
            "outcome": record.get("outcome"),
            "reason_code": record.get("reason_code"),
            "folder": record.get("folder"),
            "work_name": display_name(str(record.get("work_name"))),
            "import_id": record.get("import_id"),
            "finished_at": iso(record.get("finished_at")),
        }
        for record in reversed(history.records[-count:])
    ]


def drop_queue(folder: Path, patterns: Sequence[str]) -> tuple[int, float | None] | None:
    """The files in drop folder ``folder`` the daemon would take (``patterns``; never-taken names left out): how
    many, and the inode change time (seconds since the epoch) of the oldest, None when none waits (its arrival: the
    rename into drop/ sets it, while an mtime kept by ``rsync -t`` says nothing of it). None when the folder cannot
    be read (said by the daemon)."""
    count, oldest = 0, None
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not is_candidate_name(entry.name, patterns) or entry.is_dir(follow_symlinks=False):
                    continue
                count += 1
                try:
                    changed = entry.stat(follow_symlinks=False).st_ctime
                except OSError:
                    continue  # gone since it was listed
                oldest = changed if oldest is None else min(oldest, changed)
    except OSError:
        return None
    return count, oldest


def waiting_in_drop(feed: FeedSettings) -> int | None:
    """How many files in the feed's drop folder the daemon would take (the queue); None if it cannot be read."""
    queue = drop_queue(feed.drop_dir, feed.patterns)
    return None if queue is None else queue[0]


#: How many names left in a drop folder that will never be taken ``status`` lists per feed (it counts them all).
NEVER_TAKEN_SHOWN = 10


def never_taken(feed: FeedSettings, shown: int = NEVER_TAKEN_SHOWN) -> dict[str, Any] | None:
    """The names in the feed's drop folder the daemon will never take, as ``{"count", "names": [{"name", "reason",
    "why"}]}`` (at most ``shown`` names, sorted; reasons: watcher.skip_reason's, or ``folder``); None when there is
    none or the folder cannot be read (said elsewhere)."""
    found: list[dict[str, str]] = []
    try:
        with os.scandir(feed.drop_dir) as entries:
            for entry in entries:
                reason = skip_reason(entry.name, feed.patterns)
                if reason is None and entry.is_dir(follow_symlinks=False):
                    reason = "folder"
                if reason in NEVER_TAKEN:  # not a params file: it waits for its data file (params_files.py)
                    found.append({"name": display_name(entry.name), "reason": reason, "why": NEVER_TAKEN[reason]})
    except OSError:
        return None
    if not found:
        return None
    return {"count": len(found), "names": sorted(found, key=lambda item: item["name"])[:shown]}


#: Below this many free bytes in the state folder's filesystem, the daemon may fail to write its state (the state file
#: is rewritten whole, with a temp copy beside it).
STATE_DISK_LOW = 64 * 1024


def state_disk_problem(state_file: Path) -> str | None:
    """A sentence when the state folder's filesystem is (nearly) full, or None. The daemon then claims no file."""
    try:
        result = os.statvfs(state_file.parent)
    except OSError:
        return None
    free = result.f_bavail * result.f_frsize
    if free >= STATE_DISK_LOW:
        return None
    return (
        f"{state_file.parent}: only {free} bytes free; the daemon claims no file while it cannot write its state "
        "(imports in flight go on)"
    )


def config_drift(file: ConfigFile, problems: Sequence[str], state_file: Path | None) -> Drift:
    """The config file on disk (``file``, and the loader's ``problems`` with it) against what the daemon running on
    ``state_file`` loaded (drift.py; None: the state's place is not known, so no daemon is looked for). Raises
    OSError when the heartbeat cannot be read."""
    running = running_config(state_file) if state_file is not None else None
    return compare(
        path=os.path.abspath(file.path),
        file_sha256=file.sha256,
        running=running,
        problems=problems,
        instance=instance_name(file.path),
    )


def add_drift(daemon: dict[str, Any], drift: Drift) -> None:
    """Put the drift in the report's ``daemon``: ``config`` (drift.py's ``as_dict``), each finding a start would
    fail with in ``problems``, the others in ``warnings``."""
    daemon["config"] = drift.as_dict()
    for finding in drift.findings():
        daemon["problems" if finding.critical else "warnings"].append(finding.text)


def collect_unloadable(file: ConfigFile, problems: Sequence[str]) -> dict[str, Any]:
    """The report for a config file on disk that does not load (``problems``: the loader's): no feed or job can
    be shown, but whether a daemon still runs on an earlier version, and on which, can (its state file found as
    far as the file tells: config.state_file_of). :func:`collect`'s shape, with ``feeds`` and ``jobs`` null (the
    feeds are not known)."""
    state_file = state_file_of(file)
    lock = state_lock_path(state_file) if state_file is not None else None
    running = lock is not None and is_locked(lock)
    daemon: dict[str, Any] = {
        "running": running,
        "pid": read_lock_pid(lock) if lock is not None and running else None,
        "problems": [],
        "warnings": [],
        "orphans_in_work": [],
    }
    add_drift(daemon, config_drift(file, problems, state_file))
    return {"daemon": daemon, "feeds": None, "jobs": None}


def collect(settings: Settings, config_file: ConfigFile | None = None) -> dict[str, Any]:
    """The status report: ``{"daemon": {...}, "feeds": [...], "jobs": [...]}`` (the shape issue 2 fixes, plus each
    feed's ``waiting``: files in drop/ not yet claimed). With ``config_file`` (the file ``settings`` were read
    from), ``daemon.config`` says whether the daemon runs that file (drift.py), and a drift is a warning.

    Feed ``state``: "held" (a configuration fault holds it), "paused" (an operator paused it; ``paused`` says who,
    when and why), "fault" (Canvas calls are failing), "busy" (jobs in
    flight) or "idle". Times are ISO 8601 UTC.
    """
    lock = state_lock_path(settings.state_file)
    problems: list[str] = []
    if (space := state_disk_problem(settings.state_file)) is not None:
        problems.append(space)
    try:
        state = StateStore(settings.state_file).load()
        state_data = state.to_dict()
    except StateError as error:
        problems.append(str(error))
        state_data = {"jobs": [], "held": {}, "fault": None, "paused": {}}
        state = None
    fault = state_data.get("fault")
    held = state_data.get("held") or {}
    paused = state_data.get("paused") or {}
    feeds = []
    jobs = state_data.get("jobs", [])
    now = time.time()
    pending = pending_imports(str(job.get("state")) for job in jobs)  # the account's, every feed's
    max_pending = account_limit(feed.max_pending_imports for feed in settings.feeds)
    for feed in settings.feeds:
        if (missing := drop_problem(feed)) is not None:
            problems.append(missing)
        try:
            history = History(history_path(settings.state_file, feed.name))
        except StateError as error:
            problems.append(str(error))
            history = None
        feed_jobs = [job for job in jobs if job["feed"] == feed.name]
        if feed.name in held:
            feed_state = "held"
        elif feed.name in paused:
            feed_state = "paused"
        elif fault or missing:
            feed_state = "fault"
        elif feed_jobs:
            feed_state = "busy"
        else:
            feed_state = "idle"
        last_error = held.get(feed.name) or (fault or {}).get("message") or missing
        waiting = waiting_in_drop(feed)
        wait = feed_wait(
            waiting=waiting,
            paused=paused.get(feed.name),
            held=held.get(feed.name),
            fault=fault,
            in_flight=len(feed_jobs),
            max_in_flight=feed.max_in_flight,
            pending=pending,
            max_pending=max_pending,
        )
        if wait is None and waiting and feed.manifest is not None:  # a manifest feed takes nothing without one
            text = f"files are taken with a manifest ({feed.manifest}) that lists them"
            wait = {"reason": "awaiting_manifest", "text": text, "until": None}
        feeds.append(
            {
                "waiting": waiting,
                "never_taken": never_taken(feed),
                "drop_dir_problem": missing,
                "waits_for": _shown(wait),
                "last_finished": last_finished(history),
                "name": feed.name,
                "state": feed_state,
                "held": feed.name in held,
                "paused": paused.get(feed.name),
                "last_error": last_error,
                "last_file_at": iso(history.last_file_at) if history else None,
                "last_success_at": iso(history.last_success_at) if history else None,
            }
        )
    add_freshness(settings, feeds, jobs)
    first_in_line = next((job for job in jobs if job["state"] == "submitting"), None)
    feed_settings = {feed.name: feed for feed in settings.feeds}
    sending = in_canvas(str(job.get("state")) for job in jobs)
    report_jobs = [
        {
            "job_id": job["job_id"],
            "feed": job["feed"],
            "file": display_name(job["name"]),
            "state": job["state"],
            "import_id": job.get("import_id"),
            "workflow_state": job.get("workflow_state"),
            "progress": job.get("progress"),
            "queued_behind": queued_place(job),
            "last_error": job.get("last_error"),
            # a set of related files sent as one zip (sets.py): its members, as dropped
            "members": [display_name(str(m["name"])) for m in (job.get("file_set") or {}).get("members") or []],
            "waits_for": _shown(
                job_wait(
                    job,
                    paused=paused.get(job["feed"]),
                    held=held.get(job["feed"]),
                    fault=fault,
                    first_in_line=first_in_line if first_in_line is not job else None,
                    resend_after_seconds=settings.polling.resend_after_seconds,
                    settle_seconds=feed_settings[job["feed"]].settle_seconds if job["feed"] in feed_settings else 0,
                    now=now,
                    in_canvas=sending,
                    max_pending=max_pending,
                )
            ),
        }
        for job in jobs
    ]
    running = is_locked(lock)
    if not running and (stranded := stranded_jobs(jobs)):
        problems.append(stranded)
    daemon = {
        "running": running,
        "pid": read_lock_pid(lock) if running else None,
        "problems": problems,
        "warnings": sorted((state_data.get("warnings") or {}).values()),
        "orphans_in_work": orphans_in_work(settings, state),
    }
    if config_file is not None:
        add_drift(daemon, config_drift(config_file, (), settings.state_file))
    return {"daemon": daemon, "feeds": feeds, "jobs": report_jobs}


def queued_place(job: dict[str, Any]) -> dict[str, Any] | None:
    """``{"import_id", "seen_at"}``: the import a job's queued (``created``) import waited behind when Canvas was last
    asked (``seen_at``, ISO 8601 UTC); None unless the job is submitted and Canvas had its import queued then, and
    when the observation's time is not known (a state written before it was recorded)."""
    if job.get("state") != "submitted" or job.get("workflow_state") != "created":
        return None
    behind, seen_at = job.get("queued_behind"), job.get("queued_behind_at")
    if not isinstance(behind, int) or not isinstance(seen_at, int | float):
        return None
    return {"import_id": behind, "seen_at": iso(seen_at)}


def stranded_jobs(jobs: list[dict[str, Any]]) -> str | None:
    """A sentence when jobs are claimed or in flight (``jobs``: the state's stored jobs) while no daemon runs:
    nothing moves them on (their imports are not followed, their files stay in work/) until one runs again."""
    if not jobs:
        return None
    sent = sum(1 for job in jobs if job.get("import_id") is not None)
    return (
        f"the daemon is not running, but {len(jobs)} job(s) are claimed or in flight ({sent} sent to Canvas): "
        "nothing follows them until it runs again (systemctl start sisdaemon@<instance>; its journal says why it "
        "stopped)"
    )


def _shown(wait: dict[str, Any] | None) -> dict[str, Any] | None:
    """A wait as ``status`` shows it: ``until`` as ISO 8601 UTC."""
    return None if wait is None else {**wait, "until": iso(wait["until"])}


def _wait_text(wait: dict[str, Any] | None) -> str:
    if wait is None:
        return ""
    return f" — waits: {wait['text']}" + (f" (until {wait['until']})" if wait["until"] else "")


#: Control characters (C0, DEL, C1) that would break a line of ``status`` or drive the terminal (ESC).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def escape_controls(text: str) -> str:
    """``text`` with each control character written as the journal's JSON writes it (``\\n``, ``\\t``,
    ``\\u001b``): a file name holding a newline or an escape sequence stays on its line and cannot drive the
    terminal."""
    return _CONTROL.sub(lambda match: _SHORT_ESCAPES.get(match.group(), f"\\u{ord(match.group()):04x}"), text)


def render_text(report: dict[str, Any]) -> str:
    """A short human-readable form of :func:`collect`'s report; control characters in names and texts are escaped
    (:func:`escape_controls`), so each line is one line."""
    daemon = report["daemon"]
    lines = [f"daemon: {'running, pid ' + str(daemon['pid']) if daemon['running'] else 'not running'}"]
    lines += [f"problem: {problem}" for problem in daemon["problems"]]
    lines += [f"warning: {warning}" for warning in daemon["warnings"]]
    lines += [f"orphan in work/ (no job records it): {orphan['path']}" for orphan in daemon["orphans_in_work"]]
    if report["feeds"] is None:  # the config does not load: its feeds are not known (collect_unloadable)
        return "\n".join(escape_controls(line) for line in lines)
    for feed in report["feeds"]:
        line = f"feed {feed['name']}: {feed['state']}, {feed['waiting']} waiting in drop/"
        if feed["last_error"]:
            line += f" ({feed['last_error']})"
        if feed["paused"]:
            pause = feed["paused"]
            line += f" (paused by {pause['by']} at {pause['at']}" + (f": {pause['reason']}" if pause["reason"] else "")
            line += f"; `sisdaemon resume {feed['name']}` takes files again)"
        if feed["drop_dir_problem"]:
            line = f"feed {feed['name']}: {feed['state']}, FAULT: {feed['drop_dir_problem']}"
        line += f"; last file {feed['last_file_at'] or '-'}, last success {feed['last_success_at'] or '-'}"
        lines.append(line + _wait_text(feed["waits_for"]))
        lines += [f"  {'STALE: ' if item['stale'] else ''}{item['message']}" for item in feed.get("freshness", [])]
        if left := feed.get("never_taken"):
            more = left["count"] - len(left["names"])
            lines.append(
                f"  NEVER TAKEN: {left['count']} name(s) in drop/ the daemon will never take: "
                + "; ".join(f"{item['name']} ({item['why']})" for item in left["names"])
                + (f"; and {more} more" if more else "")
            )
        for item in feed["last_finished"]:
            reason = f" ({item['reason_code']})" if item["reason_code"] else ""
            where = f"{item['outcome']}{reason} -> {item['folder']}/"
            lines.append(f"  finished {item['finished_at']}: {item['file']} {where}")
    if not report["jobs"]:
        lines.append("no jobs in flight")
    for job in report["jobs"]:
        line = f"  {job['job_id']} {job['feed']}/{job['file']}: {job['state']}"
        if job["members"]:
            line += f" (a set of {len(job['members'])}: {', '.join(job['members'])})"
        if job["import_id"] is not None:
            line += f", import {job['import_id']} {job['workflow_state']} {job['progress']}"
        if job["last_error"]:
            line += f" [{job['last_error']}]"
        lines.append(line + _wait_text(job["waits_for"]))
    return "\n".join(escape_controls(line) for line in lines)


def add_freshness(settings: Settings, feeds: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> None:
    """Add each feed's ``freshness`` to the report: ``[{"expectation": "file" | "success", "stale", "due_at",
    "message"}]``, one per window the feed sets (freshness.py), judged now from its history, its jobs in flight and
    the daemon's last start (the heartbeat file)."""
    try:
        beat = read_heartbeat(heartbeat_path(settings.state_file))
    except OSError:
        beat = None
    now = time.time()
    settings_of = {feed.name: feed for feed in settings.feeds}
    for report in feeds:
        feed = settings_of[report["name"]]
        try:
            history: History | None = History(history_path(settings.state_file, feed.name))
        except (StateError, OSError):
            history = None  # said already as a problem
        verdicts = judge_feed(
            feed,
            now=now,
            started_at=beat.started_at if beat else None,
            last_file_at=history.last_file_at if history else None,
            last_success_at=history.last_success_at if history else None,
            claimed_at=[job["claimed_at"] for job in jobs if job["feed"] == feed.name and job.get("claimed_at")],
        )
        report["freshness"] = [
            {
                "expectation": verdict.expectation,
                "stale": verdict.stale,
                "due_at": iso(verdict.due_at),
                "message": verdict.sentence(),
            }
            for verdict in verdicts
        ]
