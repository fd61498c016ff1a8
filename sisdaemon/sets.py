"""Sets of related files sent as one import: which files go together, when a set is taken, what a manifest says,
and the set's parts of a job and its sidecars (pure: no I/O, no clock, no logging; docs/design.md "Sets of files").

Canvas orders the CSVs inside one import itself (accounts, terms, users, courses, sections, enrollments, ...;
docs/canvas-api.md), while separate imports run in the order they were sent: enrollments sent before their users
give "User not found" warnings. A feed with ``collect_seconds`` sends the CSVs that become ready close together as
one zip; a feed with a ``manifest`` sends the files its manifest lists, once all of them are there, as one zip.

Collecting: a set is taken once no further file of the feed became ready for ``collect_seconds`` after the last one
and none is still settling, or ``collect_max_seconds`` after its first file became ready at the latest (a steady
trickle cannot hold a set for ever); at most :data:`MAX_SET_FILES` files go in one set (the oldest; the rest form the
next), and a set that has them all is taken at once (it cannot grow; a backlog goes out set after set). Only
regular, non-empty ``.csv`` files are collected: a zip, an empty file or a FIFO is taken alone, as without
collecting, and so is a set of one.

Manifests (:func:`parse_manifest`): UTF-8 text (or UTF-16 with its BOM), one file name a line; blank lines and lines
starting with ``#`` are skipped, spaces around a name are dropped; each name is a plain name of a ``.csv`` file in
the same drop folder (no ``/``, no leading dot) that the feed's patterns take.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from sisdaemon import jobs
from sisdaemon.config import FeedSettings
from sisdaemon.jobs import Fingerprint, Job

#: The dropped name of a set's zip (its name in work/, done/ and failed/ is ``<stamp>_<job id>_set.zip``); the
#: attachment Canvas gets is ``<job id>_set.zip``.
SET_NAME = "set.zip"
#: At most this many files go in one set (the job record lists each; the state stays small).
MAX_SET_FILES = 100
#: A collecting feed decides on at most this many of its ready files, oldest first, so that a decision costs the
#: same whatever the backlog (docs/design.md promise 6).
LOOKAHEAD = 2 * MAX_SET_FILES
#: A manifest larger than this is refused (it is read whole, in the loop's thread).
MANIFEST_MAX_BYTES = 64 * 1024

#: A member's role in its set: a CSV that goes into the zip, or the manifest that listed the set (filed with it).
CSV, MANIFEST = "csv", "manifest"


def grouped(feed: FeedSettings) -> bool:
    """Whether ``feed`` sends related files together (``collect_seconds`` or a ``manifest``)."""
    return feed.collect_seconds > 0 or feed.manifest is not None


def is_manifest(feed: FeedSettings, name: str) -> bool:
    """Whether ``name`` is a manifest of ``feed`` (its ``manifest`` pattern, ignoring case)."""
    return feed.manifest is not None and fnmatchcase(name.casefold(), feed.manifest.casefold())


def collectable(name: str) -> bool:
    """Whether a file of this name can go into a set's zip: a ``.csv`` (a zip in a zip is not read by Canvas)."""
    return name.casefold().endswith(".csv")


# --- collecting --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A ready file of a grouped feed: ``ready_at`` is when it was first found ready (seconds since the epoch, the
    daemon's clock); ``plain``: a regular, non-empty file (anything else is taken alone, to be refused)."""

    name: str
    ready_at: float
    plain: bool = True


@dataclass(frozen=True)
class Collected:
    """What to do now with a feed's ready files: ``take`` them as one set (names, oldest first), take ``alone`` one
    by one as without collecting, and decide again at ``wake_at`` (None: when something changes)."""

    take: tuple[str, ...] = ()
    alone: tuple[str, ...] = ()
    wake_at: float | None = None


def collect(
    ready: Sequence[Candidate],
    *,
    settling: bool,
    now: float,
    collect_seconds: float,
    collect_max_seconds: float,
) -> Collected:
    """Decide whether the ready files of a collecting feed (``ready``: oldest first; the first
    :data:`LOOKAHEAD` of them are enough) form a set to take now.

    ``settling``: another file of the feed has been seen but is not ready yet (the window stays open for it, up to
    ``collect_max_seconds``). Times in seconds (the daemon's clock).
    """
    members = [item for item in ready if item.plain and collectable(item.name)]
    alone = tuple(item.name for item in ready if not (item.plain and collectable(item.name)))
    if not members:
        return Collected(alone=alone)
    first = min(item.ready_at for item in members)
    last = max(item.ready_at for item in members)
    deadline, quiet = first + collect_max_seconds, last + collect_seconds
    if now >= deadline or len(members) >= MAX_SET_FILES or (now >= quiet and not settling):
        chosen = tuple(item.name for item in members[:MAX_SET_FILES])
        if len(chosen) == 1:
            return Collected(alone=(*alone, *chosen))
        return Collected(take=chosen, alone=alone)
    return Collected(alone=alone, wake_at=deadline if settling else min(quiet, deadline))


# --- manifests ---------------------------------------------------------------------------------------------------


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the line and says why."""


def parse_manifest(data: bytes, *, takes: Callable[[str], bool]) -> tuple[str, ...]:
    """The file names a manifest lists, in its order, each once (format: the module's docstring).

    ``takes(name)``: whether the feed takes a file of that name (its patterns; no temp or dot name). The text is
    UTF-8 (a BOM allowed), or UTF-16 when it starts with a UTF-16 BOM. Raises ManifestError: too large (over
    :data:`MANIFEST_MAX_BYTES`), not UTF-8 (or UTF-16 after its BOM), a line that is a path or names a file
    the feed does not take or that is not a CSV, no names at all, or more than :data:`MAX_SET_FILES`.
    """
    if len(data) > MANIFEST_MAX_BYTES:
        raise ManifestError(f"larger than {MANIFEST_MAX_BYTES} bytes: a manifest lists file names only")
    # UTF-16 with its BOM is what PowerShell 5's Out-File and ">" write on a Windows upstream: read it as such.
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        text = data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"not {'UTF-16' if utf16 else 'UTF-8'} text (byte {error.start})") from None
    names: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
            raise ManifestError(f"line {number}: {name!r} is a path; list plain names of files in the drop folder")
        if not collectable(name):
            raise ManifestError(f"line {number}: {name!r} is not a .csv file; only CSV files go into one import")
        if name.startswith(".") or not takes(name):
            raise ManifestError(f"line {number}: {name!r} is not a name this feed takes (its patterns)")
        if name not in names:
            names.append(name)
    if not names:
        raise ManifestError("lists no file")
    if len(names) > MAX_SET_FILES:
        raise ManifestError(f"lists {len(names)} files; at most {MAX_SET_FILES} go in one import")
    return tuple(names)


@dataclass(frozen=True)
class Listed:
    """What to do with a manifest's set: ``action`` "take" (every listed file is ready), "wait" (until ``wake_at``
    at the latest) or "refuse" (its time is up: the ``present`` files and the manifest go to failed/);
    ``missing``: listed names not in the drop folder; ``unsettled``: listed names there but not settled yet."""

    action: str
    present: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unsettled: tuple[str, ...] = ()
    wake_at: float | None = None


def manifest_set(
    listed: Sequence[str],
    *,
    ready: Collection[str],
    settling: Collection[str],
    manifest_ready_at: float,
    now: float,
    timeout: float,
) -> Listed:
    """Decide a manifest's set: ``listed`` (from :func:`parse_manifest`), the feed's ``ready`` and ``settling``
    names now; ``manifest_ready_at``: when the manifest was first found ready; ``timeout``:
    ``manifest_timeout_seconds``. Times in seconds (the daemon's clock)."""
    present = tuple(name for name in listed if name in ready)
    unsettled = tuple(name for name in listed if name not in ready and name in settling)
    missing = tuple(name for name in listed if name not in ready and name not in settling)
    if not missing and not unsettled:
        return Listed("take", present)
    deadline = manifest_ready_at + timeout
    if now >= deadline:
        return Listed("refuse", present, missing, unsettled)
    return Listed("wait", present, missing, unsettled, wake_at=deadline)


def incomplete_reason(manifest: str, decided: Listed, timeout: float) -> str:
    """The sidecar's ``reason`` for a manifest's set refused whole (reason_code ``manifest_incomplete``)."""
    parts = []
    if decided.missing:
        parts.append(f"missing: {', '.join(decided.missing)}")
    if decided.unsettled:
        parts.append(f"still being written (left in drop/): {', '.join(decided.unsettled)}")
    return (
        f"the manifest {manifest} lists files that were not all there {timeout:g} s after it "
        f"(manifest_timeout_seconds): {'; '.join(parts)}; nothing of the set was sent"
    )


def unlisted(ready: Sequence[str], manifests: Mapping[str, Sequence[str]]) -> list[str]:
    """The ready non-manifest files no manifest of ``manifests`` (manifest name -> its listed names) lists: they
    wait for their manifest."""
    listed = {name for names in manifests.values() for name in names}
    return [name for name in ready if name not in listed and name not in manifests]


# --- the set's job -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A file of a set as it was ready in drop/: its name, fingerprint (at the look before the claim) and when it
    was first seen."""

    name: str
    fingerprint: Fingerprint
    seen_at: float


def claim_set(job_id: str, feed: str, members: Sequence[Member], *, manifest: str | None, now: float) -> Job:
    """A new claimed job for a set, before any member leaves drop/ (persist this first). Its file is the zip
    :data:`SET_NAME`, not built yet (its fingerprint is zero until :func:`built`); ``manifest`` names the member
    that is the set's manifest (filed with the set, not zipped)."""
    job = jobs.claim(job_id, feed, SET_NAME, Fingerprint(0, 0, 0), seen_at=min(m.seen_at for m in members), now=now)
    records: list[dict[str, Any]] = [
        {
            "name": member.name,
            "work_name": jobs.work_name_for(member.name, job_id, now),
            "role": MANIFEST if member.name == manifest else CSV,
            "ino": member.fingerprint.ino,
            "size": member.fingerprint.size,
            "mtime_ns": member.fingerprint.mtime_ns,
            "sha256": None,
        }
        for member in members
    ]
    size = sum(int(record["size"]) for record in records if record["role"] == CSV)
    return dataclasses.replace(job, size=size, file_set={"members": records, "built": False, "manifest": manifest})


def is_set(job: Job) -> bool:
    """Whether ``job`` sends a set of files (its file in work/ is the set's zip)."""
    return job.file_set is not None


def is_built(job: Job) -> bool:
    """Whether ``job``'s file is whole in work/: any single file, or a set whose zip was built and recorded."""
    return job.file_set is None or bool(job.file_set.get("built"))


def members_of(job: Job, role: str | None = None) -> list[Mapping[str, Any]]:
    """The member records of a set job (``role``: only those of that role), in the set's order; [] for a single
    file."""
    found = list((job.file_set or {}).get("members") or [])
    return [member for member in found if role is None or member.get("role") == role]


def member_fingerprints(job: Job, role: str | None = CSV) -> dict[str, Fingerprint]:
    """Each member's fingerprint as recorded (name -> inode, size, mtime; no ctime: a rename changes it)."""
    return {
        str(member["name"]): Fingerprint(int(member["ino"]), int(member["size"]), int(member["mtime_ns"]))
        for member in members_of(job, role)
    }


def observe_members(job: Job, current: Mapping[str, Fingerprint], now: float, settle: float) -> Job:
    """A set's members in work/ before its zip is built, as :func:`jobs.observe_in_work` is for one file: a member
    whose fingerprint (``current``: name -> fingerprint now) differs from its record is recorded anew and the set
    settles again from ``now`` (``stable_since``); a set held still for ``settle`` seconds clears ``stable_since``
    and is due now (its zip is built)."""
    assert job.file_set is not None
    recorded = member_fingerprints(job, None)
    changed = {
        name: found.without_ctime()
        for name, found in current.items()
        if name in recorded and found.without_ctime() != recorded[name]
    }
    if changed:
        records = [
            {**member, "ino": found.ino, "size": found.size, "mtime_ns": found.mtime_ns, "sha256": None}
            if (found := changed.get(str(member["name"]))) is not None
            else member
            for member in members_of(job)
        ]
        size = sum(int(member["size"]) for member in records if member.get("role") == CSV)
        return dataclasses.replace(
            job, size=size, file_set={**job.file_set, "members": records, "built": False}, stable_since=now
        )
    if job.stable_since is not None and now - job.stable_since >= settle:
        return dataclasses.replace(job, stable_since=None, next_action_at=now)
    return job


def without_member(job: Job, name: str, note: str) -> Job:
    """``job`` with member ``name`` left out (it could not be taken), ``note`` saying why (a built set keeps its
    zip's size: the zip is sent as it is)."""
    assert job.file_set is not None
    kept = [member for member in members_of(job) if member["name"] != name]
    size = job.size if is_built(job) else sum(int(member["size"]) for member in kept if member.get("role") == CSV)
    return dataclasses.replace(job, size=size, file_set={**job.file_set, "members": kept}, notes=(*job.notes, note))


def built(job: Job, fingerprint: Fingerprint, hashes: Mapping[str, str], zip_members: tuple[str, ...] = ()) -> Job:
    """A set job whose zip is whole in work/: its fingerprint (without ctime) and size, each member's sha256
    (``hashes``: name -> hex digest, taken while the zip was written) and the zip's CSV member names."""
    assert job.file_set is not None
    records = [
        {**member, "sha256": hashes.get(str(member["name"]), member.get("sha256"))} for member in members_of(job)
    ]
    return dataclasses.replace(
        job,
        fingerprint=fingerprint.without_ctime(),
        size=fingerprint.size,
        zip_members=zip_members,
        file_set={**job.file_set, "members": records, "built": True},
    )


def refuse_incomplete(job: Job, decided: Listed, reason: str, *, now: float) -> Job:
    """claimed -> finishing: a manifest's set refused whole (reason_code ``manifest_incomplete``): its present
    members and manifest go to failed/, the missing and unsettled names recorded for the sidecars."""
    assert job.file_set is not None
    marked = dataclasses.replace(
        job, file_set={**job.file_set, "missing": list(decided.missing), "unsettled": list(decided.unsettled)}
    )
    return jobs.reject(marked, "manifest_incomplete", reason, now=now)


def summary(job: Job) -> dict[str, Any]:
    """The sidecar's ``set``: ``id`` (the set's job id), ``members`` (the CSVs sent together, as dropped),
    ``manifest`` (its name or None), ``zip`` (the zip's name in done/ or failed/, None when none was built), and
    for a refused set ``missing`` and ``unsettled``."""
    file_set = job.file_set or {}
    result: dict[str, Any] = {
        "id": job.job_id,
        "members": [jobs.display_name(str(member["name"])) for member in members_of(job, CSV)],
        "manifest": jobs.display_name(str(file_set["manifest"])) if file_set.get("manifest") else None,
        "zip": job.work_name if file_set.get("built") else None,
    }
    for key in ("missing", "unsettled"):
        if file_set.get(key):
            result[key] = list(file_set[key])
    return result


def member_sidecar(sidecar: Mapping[str, Any], member: Mapping[str, Any], job: Job) -> dict[str, Any]:
    """A member's own sidecar from its set's (``sidecar``, spool.build_sidecar's): the member's ``file`` (name,
    size, sha256), its ``role``, and the ``set``; the outcome and the shared import (``canvas``) are the set's."""
    own = dict(sidecar)
    own["file"] = {
        "name": jobs.display_name(str(member["name"])),
        "size": member.get("size"),
        "sha256": member.get("sha256"),
        "role": member.get("role"),
    }
    own["set"] = summary(job)
    if member.get("from") and isinstance(sidecar.get("retry_of"), Mapping):  # came out of failed/ with a retried zip
        old = str(member["from"])
        own["retry_of"] = {**sidecar["retry_of"], "file": old, "sidecar": f"{old}.result.retried.json"}
    return own


def set_sidecar(sidecar: Mapping[str, Any], job: Job) -> dict[str, Any]:
    """The zip's own sidecar: spool.build_sidecar's with the ``set`` (which lists the members)."""
    return {**sidecar, "set": summary(job)}


def retry_refusal(sidecar: Mapping[str, Any]) -> str | None:
    """Why ``sisdaemon retry`` does not send a set's member (or manifest) alone, from its sidecar: a member was sent
    with the others in one import, so it is sent again with them, by retrying the set's zip (one import again);
    a set refused before its zip was built is dropped again whole. None for any other file (the zip included)."""
    found = sidecar.get("set")
    role = (sidecar.get("file") or {}).get("role") if isinstance(sidecar.get("file"), Mapping) else None
    if not isinstance(found, Mapping) or role not in (CSV, MANIFEST):
        return None
    members = ", ".join(str(name) for name in found.get("members") or [])
    where = f"a member of set {found.get('id')}" + (f" ({members})" if members else "")  # a manifest's alone: none
    if found.get("zip"):
        return f"{where}, sent as one import: retry the set's zip {found['zip']} to send its files together again"
    return f"{where}, refused whole ({sidecar.get('reason_code')}): drop the whole set again, files and manifest"


# --- retrying a set ----------------------------------------------------------------------------------------------


def is_set_zip(sidecar: Mapping[str, Any]) -> bool:
    """Whether ``sidecar`` is a set's zip's (not a member's): ``sisdaemon retry`` of it sends the set again."""
    found, file = sidecar.get("set"), sidecar.get("file")
    role = file.get("role") if isinstance(file, Mapping) else None
    return isinstance(found, Mapping) and bool(found.get("zip")) and role is None


def set_files(sidecar: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The files of a set, from its zip's sidecar: (name as dropped, role), the CSVs in the set's order, then its
    manifest."""
    found = sidecar.get("set") or {}
    files = [(str(name), CSV) for name in found.get("members") or []]
    if found.get("manifest"):
        files.append((str(found["manifest"]), MANIFEST))
    return files


def retried_set(job: Job, members: Sequence[Mapping[str, Any]], manifest: str | None, notes: Sequence[str]) -> Job:
    """The job of ``sisdaemon retry`` of a set's zip (``job``: the zip claimed from failed/ as one file, not
    recorded yet) with the set's files still in failed/ as its members: each record as :func:`claim_set` makes it,
    plus ``from`` (its name in failed/), so that each is moved back into work/ with the zip and filed beside the new
    one with a sidecar naming the new import. The zip is whole: the set is built. ``notes``: files of the set no
    longer in failed/ (left out)."""
    file_set = {"members": [dict(member) for member in members], "built": True, "manifest": manifest}
    return dataclasses.replace(job, file_set=file_set, notes=(*job.notes, *notes))
