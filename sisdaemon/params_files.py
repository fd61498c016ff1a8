"""Params files in the folders: seen and settled in drop/, read at the claim, moved with their data file.

A params file (``<data file name>.params.yaml``, file_options.py) is never taken on its own. It is read when its
data file is claimed, before the claim is recorded: one still being written (changed within the feed's
``settle_seconds``, on the daemon's clock) holds its data file as an unsettled file is held. Its options are
recorded in the job; then the data file is renamed into work/, then the params file beside it
(``<work name>.params.yaml``); at filing the data file goes to done/ or failed/, then the params file beside it.
Each move is idempotent and checks the params file's inode, so start-up recovery finishes a move a crash cut
between the two renames (docs/design.md "Crash protocol"). A params file whose data file has not turned up for
:data:`ORPHAN_SECONDS` is said once in the journal and left alone.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from sisdaemon import file_options, jobs, spool
from sisdaemon.config import FeedSettings
from sisdaemon.file_options import PARAMS_SUFFIX, ParamsRefused
from sisdaemon.jobs import Fingerprint, Job
from sisdaemon.logs import Conditions
from sisdaemon.settle import SettleTracker

log = structlog.get_logger("sisdaemon")

#: A params file with no data file beside it for this long (seconds) is said once in the journal (``info``).
ORPHAN_SECONDS = 900.0


@dataclass(frozen=True)
class Prepared:
    """What a data file's claim takes from its params file and name.

    ``hold_until``: the params file is still settling (or unreadable): leave the data file in drop/ until then
    (seconds since the epoch, the daemon's clock). Otherwise ``file_options`` is what the job records (None: the
    feed's options, nothing per file), and ``refusal`` the reason the file is refused (``params_refused``).
    """

    file_options: dict[str, Any] | None = None
    refusal: str | None = None
    hold_until: float | None = None
    unreadable: str | None = None  # why the params file cannot be read (said as a lasting condition)


@dataclass
class _Sighting:
    fingerprint: Fingerprint
    since: float  # unchanged since (the daemon's clock)
    first_seen: float
    orphan_said: bool = False


@dataclass
class ParamsFiles:
    """The params files of every feed's drop folder that the daemon has looked at: ``feed -> name -> sighting``.
    ``lstat``: every look goes through it (the intake's)."""

    lstat: Callable[[str], os.stat_result] = os.lstat
    seen: dict[str, dict[str, _Sighting]] = field(default_factory=dict)

    def _note(self, feed: str, name: str, result: os.stat_result, now: float) -> _Sighting:
        sightings = self.seen.setdefault(feed, {})
        fingerprint = spool.fingerprint_of(result)
        sighting = sightings.get(name)
        if sighting is None:
            sighting = sightings[name] = _Sighting(fingerprint, now, now)
        elif sighting.fingerprint != fingerprint:
            sighting.fingerprint, sighting.since = fingerprint, now
        return sighting

    def prepare(self, feed: FeedSettings, name: str, now: float) -> Prepared:
        """Look for ``name``'s params file in the drop folder and work out the file's options (file_options.py).

        Never raises for the params file's content: a bad one gives ``refusal``. Raises OSError only when the drop
        folder cannot be looked at (the claim is tried again later).
        """
        params_name = file_options.params_name_for(name)
        shown = spool.submitted_name(name)
        try:
            result: os.stat_result | None = self.lstat(str(feed.drop_dir / params_name))
        except FileNotFoundError:
            result = None
        except OSError as error:
            if error.errno != errno.ENAMETOOLONG:
                raise
            result = None  # a data file's name so long that no params file can be named after it
        if result is None:
            self.seen.get(feed.name, {}).pop(params_name, None)
            if feed.term_from_name is None:
                return Prepared()
            try:
                worked_out = file_options.work_out(feed, shown)
            except ParamsRefused as refused:
                return Prepared({"per_file": True}, refusal=str(refused))
            return Prepared(worked_out if worked_out["per_file"] else None)
        sighting = self._note(feed.name, params_name, result, now)
        if now - sighting.since < feed.settle_seconds:
            return Prepared(hold_until=sighting.since + feed.settle_seconds)
        kept: dict[str, Any] = {"per_file": True, "params_file": params_name, "params_ino": result.st_ino}
        if not stat.S_ISREG(result.st_mode):
            reason = f"params file {params_name}: not a regular file; moved as it is, never followed or read"
            return Prepared(kept, refusal=reason)
        try:
            text = _read_bounded(feed.drop_dir / params_name, sighting.fingerprint)
        except PermissionError as error:
            return Prepared(hold_until=now + feed.rescan_seconds, unreadable=str(error))
        except _Changed:
            sighting.since = now  # written again since it was looked at: it settles again
            return Prepared(hold_until=now + feed.settle_seconds)
        except ParamsRefused as refused:
            return Prepared(kept, refusal=str(refused))
        try:
            parsed = file_options.parse_params(text, params_name, feed.allow_params)
            worked_out = file_options.work_out(feed, shown, parsed, params_name)
        except ParamsRefused as refused:
            return Prepared(kept, refusal=str(refused))
        return Prepared({**worked_out, **kept})

    def scanned(self, feed: FeedSettings, skipped: Mapping[str, str], present: Mapping[str, Any], now: float) -> None:
        """After a full scan of ``feed``'s drop folder (``skipped``: names never taken and why; ``present``: the
        candidates): note each params file, forget those gone, and say once (``params_file_orphaned``, info) of
        one whose data file has not been there for :data:`ORPHAN_SECONDS`."""
        names = [name for name, reason in skipped.items() if reason == "params_file"]
        sightings = self.seen.setdefault(feed.name, {})
        for gone in set(sightings) - set(names):
            del sightings[gone]
        for name in names:
            try:
                sighting = self._note(feed.name, name, self.lstat(str(feed.drop_dir / name)), now)
            except OSError:
                continue
            if file_options.data_name_for(name) in present:
                sighting.first_seen = now  # its data file is there: not an orphan (yet)
            elif now - sighting.first_seen >= ORPHAN_SECONDS and not sighting.orphan_said:
                sighting.orphan_said = True
                log.info(
                    "params_file_orphaned",
                    feed=feed.name,
                    file=jobs.display_name(name),
                    waited_seconds=round(now - sighting.first_seen),
                    hint=f"no {jobs.display_name(file_options.data_name_for(name))} beside it; it is never taken "
                    "on its own: drop its data file, or remove it",
                )


def hold(feed: FeedSettings, tracker: SettleTracker, name: str, prepared: Prepared, conditions: Conditions) -> float:
    """Leave the ready file ``name`` in drop/ until ``prepared.hold_until`` (returned): its params file is still
    being written, or cannot be read (said once while it lasts, as ``params_file_unreadable``)."""
    assert prepared.hold_until is not None
    shown = jobs.display_name(name)
    if prepared.unreadable is not None:
        conditions.start(
            ("params_unreadable", feed.name, name),
            "params_file_unreadable",
            level="error",
            feed=feed.name,
            file=shown,
            error=prepared.unreadable,
            hint="the file waits in the drop folder until the daemon can read its params file",
        )
    else:
        log.debug("params_file_settling", feed=feed.name, file=shown)
    tracker.hold(name, prepared.hold_until)
    return prepared.hold_until


class _Changed(Exception):
    """The params file changed between its look and its read."""


def _read_bounded(path: Path, seen: Fingerprint) -> bytes:
    """The params file's bytes, read without following a symlink or blocking on a FIFO. Raises _Changed when it is
    not the file last looked at, ParamsRefused when it is larger than PARAMS_LIMIT, OSError otherwise."""
    fd = spool.open_for_reading(path)
    try:
        current = spool.fingerprint_of(os.fstat(fd))
        if current != seen:
            raise _Changed
        if current.size > file_options.PARAMS_LIMIT:
            raise ParamsRefused(
                f"params file {path.name}: {current.size} bytes, more than {file_options.PARAMS_LIMIT} (not read)"
            )
        return os.pread(fd, file_options.PARAMS_LIMIT + 1, 0)
    finally:
        os.close(fd)


def params_in_folder(job: Job) -> str | None:
    """The params file's name in work/, done/ or failed/ (``<work name>.params.yaml``), or None without one."""
    if not job.file_options or not job.file_options.get("params_file"):
        return None
    return job.work_name + PARAMS_SUFFIX


def claim_beside(feed: FeedSettings, job: Job) -> bool:
    """Rename the job's params file from drop/ into work/ beside its data file, unless done already (idempotent:
    start-up recovery calls it again after a crash between the two renames). A params file in drop/ that is not
    the one read at the claim (another inode) is left there (the job keeps the options it recorded). Returns
    whether it renamed. Raises OSError."""
    in_work = params_in_folder(job)
    if in_work is None or os.path.lexists(feed.work_dir / in_work):
        return False
    assert job.file_options is not None
    source = feed.drop_dir / str(job.file_options["params_file"])
    try:
        same = os.lstat(source).st_ino == job.file_options.get("params_ino")
    except FileNotFoundError:
        same = False
    if not same:
        log.error(
            "params_file_missing",
            file=jobs.display_name(source.name),
            hint="the file goes on with the options recorded at its claim; the params file is not filed beside it",
        )
        return False
    spool.move_durably(source, feed.work_dir / in_work)
    return True


def file_beside(feed: FeedSettings, job: Job, folder: Path) -> bool:
    """Rename the job's params file from work/ into ``folder`` (done/ or failed/) beside its data file, unless done
    already (idempotent: filing again after a crash). Returns whether it renamed. Raises OSError."""
    in_folder = params_in_folder(job)
    if in_folder is None:
        return False
    source = feed.work_dir / in_folder
    if not os.path.lexists(source) or os.path.lexists(folder / in_folder):
        return False
    spool.move_durably(source, folder / in_folder)
    return True
