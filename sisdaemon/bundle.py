"""A set's files on disk: its members renamed from drop/ into work/, its zip built in work/ (run in a thread of its
own by bundler.py), and each member filed beside the zip in done/ or failed/ with its own sidecar (docs/design.md
"Sets of files"; the decisions are in sets.py).

Crash protocol: the set's job is recorded with every member before the first rename out of drop/; each rename is
durable (both folders fsynced); the zip is written under a temp name in work/, fsynced and renamed to the job's
``work_name``, and only then recorded as built, so an upload only ever reads a whole zip. After a kill each step is
done again from what the folders show: a member still in drop/ (the same inode) is renamed, a zip not recorded as
built is built again from the members (nothing was sent from it), a member already filed is left where it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sisdaemon import effects, sets, spool
from sisdaemon.jobs import Fingerprint, Job, display_name
from sisdaemon.state import fsync_dir

#: Bytes read and written at a time while a member is copied into the zip (memory stays flat).
CHUNK = 1 << 20
#: Canvas refuses a zip whose content is 100 times its size or more (sis_imports_api_controller.rb; the sandbox's
#: prepare.py): a set that deflate shrinks past this ratio is stored uncompressed instead.
MAX_RATIO = 90


def take_members(
    job: Job,
    drop_dir: Path,
    work_dir: Path,
    *,
    before_rename: Callable[[str], None] = lambda name: None,
    rename_failed: Callable[[str], None] = lambda name: None,
    filed_dir: Path | None = None,
) -> Job:
    """Rename each member of set ``job`` that is not in ``work_dir`` yet from ``drop_dir`` (the same inode it was
    claimed with), durably. A member that is gone, was replaced, or cannot be renamed is left out of the set
    (:func:`sets.without_member`, with a note); the caller records the returned job. ``before_rename(name)`` and
    ``rename_failed(name)``: the intake's watch expectations (its own renames wake nothing). ``filed_dir``: where a
    set being filed (refused before its zip was built) goes; a member already moved there is in its place."""
    for member in sets.members_of(job):
        name, target = str(member["name"]), work_dir / str(member["work_name"])
        if os.path.lexists(target) or (filed_dir is not None and os.path.lexists(filed_dir / str(member["work_name"]))):
            continue
        source = drop_dir / name
        try:
            same = os.lstat(source).st_ino == member["ino"]
        except OSError:
            same = False
        if not same:
            job = sets.without_member(job, name, f"{display_name(name)} was gone from drop/ when the set was taken")
            continue
        before_rename(name)
        try:
            spool.move_durably(source, target)
        except OSError as error:
            rename_failed(name)
            note = f"{display_name(name)} could not be taken ({error.strerror or error}); it stays in drop/"
            job = sets.without_member(job, name, note)
    return job


class Cancelled(Exception):
    """The build was stopped (the daemon stops): the temp zip is removed, and the zip is built again later."""


class MemberChanged(OSError):
    """A member in work/ is not as it was claimed (a writer that stalled past settling wrote more): ``changed``
    maps each such member's name to its fingerprint now (without ctime). Nothing was recorded; the set settles
    again (sets.observe_members)."""

    def __init__(self, changed: Mapping[str, Fingerprint]) -> None:
        super().__init__(f"changed after the set was claimed: {', '.join(display_name(name) for name in changed)}")
        self.changed = dict(changed)


@dataclass(frozen=True)
class Zipped:
    """A set's zip as written and renamed into work/: its ``fingerprint`` there, each CSV member's sha256
    (``hashes``: name -> hex digest, of the bytes zipped) and the zip's CSV member names; recorded with
    :func:`sets.built`."""

    fingerprint: Fingerprint
    hashes: dict[str, str]
    zip_members: tuple[str, ...]


def read_piece(source: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes of a member (the default reader; tests inject a slow one)."""
    return source.read(size)


def changed_members(job: Job, work_dir: Path) -> dict[str, Fingerprint]:
    """The CSV members of set ``job`` whose file in work/ differs from its record (name -> fingerprint now, without
    ctime). Raises OSError (a member gone or unreadable)."""
    recorded = sets.member_fingerprints(job)
    changed: dict[str, Fingerprint] = {}
    for member in sets.members_of(job, sets.CSV):
        name = str(member["name"])
        current = spool.fingerprint_of(os.lstat(work_dir / str(member["work_name"]))).without_ctime()
        if current != recorded[name]:
            changed[name] = current
    return changed


def changed_since_built(job: Job, work_dir: Path) -> str | None:
    """Why set ``job``'s members in work/ are no longer what its zip holds (a member's writer went on after the
    zip was built: Canvas was sent part of it), or None. Members gone from work/ (filed already, after a kill
    mid-filing) are not looked at. Raises OSError (a member unreadable)."""
    recorded = sets.member_fingerprints(job)
    changed = []
    for member in sets.members_of(job, sets.CSV):
        name = str(member["name"])
        try:
            current = spool.fingerprint_of(os.lstat(work_dir / str(member["work_name"]))).without_ctime()
        except FileNotFoundError:
            continue
        if current != recorded[name]:
            size = recorded[name].size
            what = f"size {size} -> {current.size} bytes" if current.size != size else "rewritten"
            changed.append(f"{name}: {what}")
    return f"set member changed since its zip was built ({'; '.join(changed)})" if changed else None


def _temp_path(job: Job, work_dir: Path) -> Path:
    # The name atomic.TEMP_NAME matches (start-up removes it after a kill); fixed, so a rebuild replaces it.
    return work_dir / f".{job.work_name}.00000000.tmp"


def build_zip(
    job: Job,
    work_dir: Path,
    *,
    compression: int = zipfile.ZIP_DEFLATED,
    should_stop: Callable[[], bool] = lambda: False,
    read: Callable[[BinaryIO, int], bytes] = read_piece,
) -> Zipped:
    """Write set ``job``'s zip in ``work_dir``; the caller records it as built (:func:`sets.built`) before the upload.

    The CSV members go in the set's order under their dropped names, each streamed in :data:`CHUNK` pieces
    (``read(source, size)``) and hashed on the way (memory stays flat); written to a temp name, fsynced, then renamed
    to ``job.work_name`` (a zip left by a kill before it was recorded is replaced: nothing was sent from it). A set
    that deflate shrinks past :data:`MAX_RATIO` is written again stored. ``should_stop`` is asked between pieces.
    Raises MemberChanged (a member differs from its record, before or while it is read), Cancelled, OSError (a
    member unreadable: the caller tries again later); the temp zip is removed first."""
    changed = changed_members(job, work_dir)
    if changed:
        raise MemberChanged(changed)
    target, temp = work_dir / job.work_name, _temp_path(job, work_dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)  # a zip from before a kill, never recorded as built, so never uploaded
    hashes = _write_zip(job, work_dir, temp, compression, should_stop, read)
    total = sum(int(member["size"]) for member in sets.members_of(job, sets.CSV))
    if compression != zipfile.ZIP_STORED and total >= MAX_RATIO * max(os.path.getsize(temp), 1):
        os.unlink(temp)
        hashes = _write_zip(job, work_dir, temp, zipfile.ZIP_STORED, should_stop, read)
    effects.happened("bundle.zip_written")
    spool.move_durably(temp, target)
    fingerprint = spool.fingerprint_of(os.lstat(target))
    return Zipped(fingerprint, hashes, spool.zip_csv_members(target))


def _write_zip(
    job: Job,
    work_dir: Path,
    temp: Path,
    compression: int,
    should_stop: Callable[[], bool],
    read: Callable[[BinaryIO, int], bytes],
) -> dict[str, str]:
    """Write the zip to ``temp`` (fsynced); returns each member's sha256. Raises as :func:`build_zip`."""
    hashes: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    try:
        with open(temp, "xb") as handle:
            with zipfile.ZipFile(handle, "w", compression=compression, allowZip64=True) as archive:
                for member in sets.members_of(job, sets.CSV):
                    hashes[str(member["name"])] = _add_member(archive, work_dir, member, should_stop, read)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return hashes


def _add_member(
    archive: zipfile.ZipFile,
    work_dir: Path,
    member: Mapping[str, Any],
    should_stop: Callable[[], bool],
    read: Callable[[BinaryIO, int], bytes],
) -> str:
    """Copy one member into ``archive`` (a fixed date: the same set gives the same bytes); returns its sha256.
    Raises MemberChanged when the member is not as recorded before or after it was read, Cancelled."""
    name, path = str(member["name"]), work_dir / str(member["work_name"])
    recorded = Fingerprint(int(member["ino"]), int(member["size"]), int(member["mtime_ns"]))
    fd = spool.open_for_reading(path)
    with os.fdopen(fd, "rb") as source:
        before = spool.fingerprint_of(os.fstat(source.fileno())).without_ctime()
        if before != recorded:
            raise MemberChanged({name: before})
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = archive.compression
        info.external_attr = 0o640 << 16
        digest = hashlib.sha256()
        left = before.size  # no further: a writer that keeps appending must not keep the build (and the zip) growing
        with archive.open(info, "w", force_zip64=before.size > 2**31) as target:
            while left > 0 and (block := read(source, min(CHUNK, left))):
                if should_stop():
                    raise Cancelled()
                digest.update(block)
                target.write(block)
                left -= len(block)
        after = spool.fingerprint_of(os.fstat(source.fileno())).without_ctime()
        if after != recorded:  # written to while it was read: the zip holds part of it
            raise MemberChanged({name: after})
    return digest.hexdigest()


def file_members(job: Job, work_dir: Path, folder: Path, sidecar: Mapping[str, Any]) -> None:
    """Move each member of set ``job`` still in ``work_dir`` into ``folder`` (done/ or failed/), its own sidecar
    (:func:`sets.member_sidecar` of the set's ``sidecar``) written first; members already moved are left alone
    (idempotent after a kill). Raises OSError."""
    for member in sets.members_of(job):
        source = work_dir / str(member["work_name"])
        if not os.path.lexists(source):
            continue
        own = sets.member_sidecar(sidecar, member, job)
        spool.write_sidecar(folder, str(member["work_name"]), own, temp_dir=work_dir)
        spool.move_durably(source, folder / str(member["work_name"]))


def work_names(job: Job) -> set[str]:
    """The names set ``job`` may have in work/: the zip's and each member's (for the orphan report)."""
    return {job.work_name, *(str(member["work_name"]) for member in sets.members_of(job))}


def recover_claim(job: Job, drop_dir: Path, work_dir: Path, filed_dir: Path | None = None) -> Job:
    """Start-up: finish an interrupted claim of set ``job`` (members still in drop/ are renamed; gone ones left out;
    ``filed_dir``: for a set refused before its zip was built, where members already filed are) and, when its zip
    was never recorded as built, remove a half-written temp zip (the flight builds it again)."""
    job = take_members(job, drop_dir, work_dir, filed_dir=filed_dir)
    if not sets.is_built(job):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_temp_path(job, work_dir))
            fsync_dir(work_dir)
    return job
