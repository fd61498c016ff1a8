"""``sisdaemon retry`` of a set's zip: the set goes again as ONE import, and its files come back out of failed/ with
the zip, so each is filed again beside the new zip with its own sidecar naming the new import and its ``retry_of``
(docs/design.md "Sets of files"; the job's shape is sets.py's).

Crash protocol, as for one retried file: the new job is recorded with every member (each with ``from``, its name in
failed/) before anything leaves failed/; then the zip is renamed into work/ and its old sidecar aside, then each
member and its old sidecar. After a kill, start-up recovery does the rest again (:func:`take_members`): a member
still in failed/ (the same inode) is renamed, one that is gone is left out with a note.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sisdaemon import jobs, sets, spool
from sisdaemon.jobs import Job, display_name


def _claimed_at(zip_name: str) -> float | None:
    """When the set of the zip filed as ``zip_name`` (``<UTC stamp>_<job id>_set.zip``) was claimed, to the second:
    its members' names in failed/ carry the same stamp."""
    try:
        stamp = dt.datetime.strptime(zip_name[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return stamp.timestamp()


def with_members(job: Job, failed_dir: Path, zip_name: str, sidecar: Mapping[str, Any]) -> Job:
    """The retry's job for the set's zip ``zip_name`` in ``failed_dir`` (``job``: the zip claimed as one file, not
    recorded yet; ``sidecar``: the zip's) with the set's files found in failed/ as its members (sets.retried_set):
    each member's name there is derived as the set's claim made it (jobs.work_name_for with the set's id and stamp),
    its inode, size and mtime looked at now, its sha256 taken from its old sidecar."""
    found = sidecar.get("set") or {}
    claimed_at = _claimed_at(zip_name)
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for name, role in sets.set_files(sidecar):
        old = jobs.work_name_for(name, str(found.get("id")), claimed_at) if claimed_at is not None else name
        try:
            status = os.lstat(failed_dir / old)
        except OSError:
            status = None
        if status is None or not stat.S_ISREG(status.st_mode):
            notes.append(f"{display_name(name)} of the set was no longer in failed/ ({old}): not sent again")
            continue
        records.append(
            {
                "name": name,
                "work_name": jobs.work_name_for(name, job.job_id, job.claimed_at),
                "role": role,
                "ino": status.st_ino,
                "size": status.st_size,
                "mtime_ns": status.st_mtime_ns,
                "sha256": _old_sha256(failed_dir / spool.sidecar_name(old)),
                "from": old,
            }
        )
    manifest = next((str(record["name"]) for record in records if record["role"] == sets.MANIFEST), None)
    return sets.retried_set(job, records, manifest, notes)


def _old_sha256(path: Path) -> str | None:
    """A member's sha256 as its old sidecar gives it (None when it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        value = json.loads(path.read_text(encoding="utf-8"))["file"]["sha256"]
        return value if isinstance(value, str) else None
    return None


def take_members(job: Job, failed_dir: Path, work_dir: Path) -> Job:
    """Rename each member of the retried set ``job`` still in ``failed_dir`` into ``work_dir`` (durably; the same
    inode it was recorded with), then its old sidecar aside (``<name>.result.retried.json``). A member that is gone
    or cannot be renamed is left out with a note; the caller records the returned job. Idempotent (start-up
    recovery calls it again after a kill). Raises OSError when an old sidecar cannot be renamed."""
    for member in sets.members_of(job):
        old = member.get("from")
        if not old:
            continue
        name, target, source = str(member["name"]), work_dir / str(member["work_name"]), failed_dir / str(old)
        if not os.path.lexists(target):
            try:
                same = os.lstat(source).st_ino == member["ino"]
            except OSError:
                same = False
            try:
                if not same:
                    raise FileNotFoundError(f"{old} is no longer in failed/")
                spool.move_durably(source, target)
            except OSError as error:
                note = f"{display_name(name)} could not be taken from failed/ ({error.strerror or error}); not sent"
                job = sets.without_member(job, name, note)
                continue
        spool.complete_retry_rename(failed_dir, {"file": old, "sidecar": spool.retried_sidecar_name(str(old))})
    return job


def taken_names(job: Job) -> set[str]:
    """The names in failed/ that retried set ``job`` took with its zip (``retry --all-failed`` skips them)."""
    return {str(member["from"]) for member in sets.members_of(job) if member.get("from")}
