"""Folder moves, names and sidecars.

Moves are ``rename(2)`` within one filesystem, never replacing a name: ``renameat2(RENAME_NOREPLACE)`` where the
kernel and filesystem offer it, else a plain rename of a name made unique by its job id (docs/design.md "Folders").
Pure builders (names, the sidecar dict) sit beside a few small functions that touch the disk.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sisdaemon import __version__, effects
from sisdaemon.jobs import Fingerprint, Job, canvas_verdict, display_name, iso
from sisdaemon.state import fsync_dir, write_json_atomic

SIDECAR_SCHEMA = 1
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def fingerprint_of(result: os.stat_result) -> Fingerprint:
    """The settle fingerprint of a stat result: inode, size (bytes), mtime and ctime (ns)."""
    return Fingerprint(result.st_ino, result.st_size, result.st_mtime_ns, result.st_ctime_ns)


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, refusing to replace an existing ``target`` (FileExistsError).

    Uses renameat2(RENAME_NOREPLACE) when available; where the filesystem lacks it (EINVAL, ENOSYS: NFS, CIFS,
    old kernels) it checks for the target first, then renames (names are unique by job id, so this is a second
    guard, not the only one). Raises OSError (EXDEV when the folders are on different mounts).
    """
    if _renameat2 is not None:
        result = _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        if result == 0:
            effects.happened("spool.renamed")
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "target exists", str(target))
    os.rename(source, target)
    effects.happened("spool.renamed")


def move_durably(source: Path, target: Path) -> None:
    """:func:`rename_noreplace`, then fsync both folders."""
    rename_noreplace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def open_for_reading(path: Path) -> int:
    """Open a file read-only without following a symlink and without blocking on a FIFO.

    Returns the fd (caller closes it). Raises OSError (ELOOP for a symlink).
    """
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def writer_open(fd: int) -> bool | None:
    """Whether some process holds this file open for writing, tested with a read lease (fcntl(2) F_SETLEASE),
    which the kernel refuses with EAGAIN while any writer has the file open. The lease is dropped at once.

    ``fd`` must be open read-only. Returns None where leases cannot tell: a file the daemon does not own without
    CAP_LEASE (EACCES), or a filesystem without leases such as NFS (EINVAL). Settling then stands alone.
    """
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as error:
        return True if error.errno == errno.EAGAIN else None
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def sniff_extension(fd: int) -> str:
    """``zip`` when the file starts with a zip signature (``PK\\x03\\x04`` or the empty ``PK\\x05\\x06``), else ``csv``.

    Canvas goes by the attachment's filename (docs/canvas-api.md §1: only .csv and .zip are processed), so the name
    must match the content, not whatever the upstream called it.
    """
    head = os.pread(fd, 4, 0)
    return "zip" if head in (b"PK\x03\x04", b"PK\x05\x06") else "csv"


def upload_filename(job_id: str, name: str, extension: str) -> str:
    """``<job id>_<stem>.<csv|zip>``: the attachment's filename, which carries the job id for recovery."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or "file"
    return f"{job_id}_{safe}.{extension}"


#: At most this many member names are kept for a zip (enough to recognise an SIS zip; the state stays small).
ZIP_MEMBERS_KEPT = 200


def zip_csv_members(path: Path) -> tuple[str, ...]:
    """Base names of the ``.csv`` members of a zip, as Canvas lists them in ``csv_attachments`` (nested folders
    flattened; ``__MACOSX`` and dot-files left out, as Canvas skips them). Empty for a file that is not a zip.
    Reads only the zip's central directory."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = []
            for info in archive.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if info.is_dir() or base.startswith(".") or "__macosx" in info.filename.lower():
                    continue
                if base.lower().endswith(".csv"):
                    names.append(base)
                if len(names) >= ZIP_MEMBERS_KEPT:
                    break
            return tuple(names)
    except (OSError, zipfile.BadZipFile):
        return ()


def sha256_of_fd(fd: int, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of an open file, read in ``chunk``-byte pieces (memory flat)."""
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, chunk, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def strip_verifiers(value: Any) -> Any:
    """A copy of a Canvas JSON value with every download capability removed (docs/design.md promise 4): each URL that
    carries a ``verifier``, and each File's ``uuid`` (Canvas's verifier is the file's uuid)."""
    if isinstance(value, Mapping):
        return {
            key: strip_verifiers(item)
            for key, item in value.items()
            if not (isinstance(item, str) and "verifier=" in item) and key != "uuid"
        }
    if isinstance(value, list):
        return [strip_verifiers(item) for item in value]
    return value


_SUBMITTED = re.compile(r"sisdaemon-submit-\d{8}T\d{6}Z-[0-9a-f]{8}_(.+)", re.DOTALL)


def submitted_name(name: str) -> str:
    """The operator's own name of a file handed over by ``sisdaemon submit`` (which adds a unique prefix);
    any other name unchanged."""
    match = _SUBMITTED.fullmatch(name)
    return match.group(1) if match else name


def build_sidecar(
    job: Job,
    *,
    base_url: str,
    account_id: int | None,
    to_wall: Callable[[float | None], float | None] = lambda moment: moment,
) -> dict[str, Any]:
    """The sidecar dict for a finishing job (docs/design.md "The sidecar", schema 1). ``to_wall`` turns the job's
    times (the daemon's clock) into wall time for the timeline."""
    sis_import = job.sis_import or {}
    data = sis_import.get("data") or {}
    sidecar: dict[str, Any] = {
        "schema": SIDECAR_SCHEMA,
        "file": {"name": display_name(submitted_name(job.name)), "size": job.size, "sha256": job.sha256},
        "feed": job.feed,
        "job_id": job.job_id,
        "outcome": str(job.outcome),
        "timeline": {
            "seen_at": iso(to_wall(job.seen_at)),
            "claimed_at": iso(to_wall(job.claimed_at)),
            "submitted_at": iso(to_wall(job.submitted_at)),
            "finished_at": iso(to_wall(job.finished_at)),
        },
        "attempts": job.attempts,
        "sisdaemon_version": __version__,
    }
    if submitted_name(job.name) != job.name:
        sidecar["file"]["handed_over_as"] = display_name(job.name)  # by `sisdaemon submit`
    if job.reason_code:
        sidecar["reason_code"] = job.reason_code
        sidecar["reason"] = job.reason
    if job.import_id is not None or sis_import:
        sidecar["canvas"] = {
            "base_url": base_url,
            "account_id": account_id,
            "import_id": job.import_id,
            "workflow_state": sis_import.get("workflow_state"),
            "progress": sis_import.get("progress"),
            "counts": data.get("counts"),
            "statistics": data.get("statistics"),
            "processing_errors": sis_import.get("processing_errors", []),
            "processing_warnings": sis_import.get("processing_warnings", []),
            "errors_csv": job.errors_csv,
            "sis_import": strip_verifiers(sis_import),
        }
    if job.preflight is not None:
        sidecar["preflight"] = job.preflight
    verdict = canvas_verdict(sis_import)
    if job.guard is not None or verdict is not None:
        # The shrink guard's findings (guard.py), and Canvas's own guards' verdict where it gave one.
        sidecar["shrink_guard"] = {**(job.guard or {}), "canvas": verdict}
    if job.diff is not None:
        sidecar["diff"] = job.diff  # batch-mode and diffing feeds: the change since the last imported file
    if job.duplicate_of is not None:
        sidecar["duplicate_of"] = dict(job.duplicate_of)  # skip_duplicates_hours: the earlier import
    if job.superseded_by is not None:
        sidecar["superseded_by"] = dict(job.superseded_by)  # supersede: true: the newer file that was imported instead
    if job.notes:
        sidecar["notes"] = list(job.notes)
    if job.retry_of:
        sidecar["retry_of"] = dict(job.retry_of)  # `sisdaemon retry`: the earlier attempt and its sidecar
    if job.aborted_by:
        sidecar["aborted_by"] = dict(job.aborted_by)  # `sisdaemon abort`: who asked, and when
    return sidecar


def sidecar_name(work_name: str) -> str:
    return f"{work_name}.result.json"


def errors_csv_name(work_name: str) -> str:
    return f"{work_name}.errors.csv"


def retried_sidecar_name(work_name: str) -> str:
    """``<work name>.result.retried.json``: the sidecar of a file in failed/ once ``sisdaemon retry`` took the file
    (kept beside its errors CSV; no longer matched by ``*.result.json``, which lists the files waiting in failed/)."""
    return f"{work_name}.result.retried.json"


_WORK_NAME = re.compile(r"\d{8}T\d{6}Z_[A-Za-z0-9]+_(.+)", re.DOTALL)


def dropped_name(work_name: str) -> str:
    """The name a file was dropped under, from its name in work/, done/ or failed/ (``<stamp>_<job id>_<name>``;
    a name shortened to fit stays shortened); any other name unchanged."""
    match = _WORK_NAME.fullmatch(work_name)
    return match.group(1) if match else work_name


def complete_retry_rename(failed_dir: Path, retry_of: Mapping[str, Any]) -> bool:
    """Rename a retried file's old sidecar in ``failed_dir`` to its ``retry_of["sidecar"]`` name, unless that was done
    already (idempotent: start-up recovery calls it again after a crash). Returns whether it renamed. Raises
    OSError."""
    old = failed_dir / sidecar_name(str(retry_of["file"]))
    new = failed_dir / str(retry_of["sidecar"])
    if not os.path.lexists(old) or os.path.lexists(new):
        return False
    move_durably(old, new)
    return True


def write_sidecar(folder: Path, work_name: str, sidecar: Mapping[str, Any], *, temp_dir: Path | None = None) -> Path:
    """Write ``<folder>/<work name>.result.json`` atomically; returns its path. ``temp_dir``: where its temp file is
    made (the work folder: a kill then leaves it where start-up cleans up, never in done/). Raises OSError."""
    path = folder / sidecar_name(work_name)
    write_json_atomic(path, sidecar, effect="sidecar", temp_dir=temp_dir)
    return path
