"""Params files in the folders: seen and settled in drop/, read at the claim, moved with their data file.

A params file (``<data file name>.params.yaml``, file_options.py) is never taken on its own. It is read when its
data file is claimed, before the claim is recorded: one still being written (changed within the feed's
``settle_seconds``, on the daemon's clock) holds its data file as an unsettled file is held. Its options are
recorded in the job; then the data file is renamed into work/, then the params file beside it
(``<work name>.params.yaml``); at filing the data file goes to done/ or failed/, then the params file beside it.
Each move is idempotent and checks the params file's inode, so start-up recovery finishes a move a crash cut
between the two renames (docs/design.md "Crash protocol"). A params file whose data file has not turned up for
:data:`ORPHAN_SECONDS` is said once in the journal and left alone.

A params file is never applied on a guess, since its options (batch mode for a term above all) can delete data in
Canvas: a data file is refused (``params_refused``) when its params file appeared more than :data:`LEFT_OVER_SECONDS`
before it did (left over from an earlier file of that name: written after that one was claimed, or never matched),
or when a misnamed one lies beside it (``enrollments.params.yaml``, ``enrollments.csv.params.yml``:
:func:`lookalikes`) instead of being sent with the feed's options. A params file that appears just after a file of
its name was claimed is said at once (``params_file_after_its_file``, warning): it was not applied to that file.
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
#: A params file first seen this long (seconds, the daemon's clock) before its data file is left over, not its own.
LEFT_OVER_SECONDS = 900.0


def lookalikes(name: str) -> list[str]:
    """The names a params file for data file ``name`` is likely to be given by mistake: ``<name>.params.yml``, and
    the name without its extension with either suffix (``users.params.yaml``, ``users.params.yml``)."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return [f"{name}.params.yml", f"{stem}{PARAMS_SUFFIX}", f"{stem}.params.yml"]


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
    first_seen: float  # reset while its data file is there (the orphan clock)
    appeared: float  # first seen, never reset
    orphan_said: bool = False


@dataclass
class ParamsFiles:
    """The params files of every feed's drop folder that the daemon has looked at: ``feed -> name -> sighting``.
    ``lstat``: every look goes through it (the intake's)."""

    lstat: Callable[[str], os.stat_result] = os.lstat
    seen: dict[str, dict[str, _Sighting]] = field(default_factory=dict)
    #: feed -> data file name -> when it was last claimed (the daemon's clock), for ORPHAN_SECONDS
    claims: dict[str, dict[str, float]] = field(default_factory=dict)

    def claimed(self, feed: str, name: str, now: float) -> None:
        """Data file ``name`` of ``feed`` was claimed at ``now``: a params file of its name that appears soon after
        was meant for it and came too late (said when it is first seen)."""
        recent = self.claims.setdefault(feed, {})
        for old in [key for key, at in recent.items() if now - at > ORPHAN_SECONDS]:
            del recent[old]
        recent[name] = now

    def _note(self, feed: str, name: str, result: os.stat_result, now: float) -> _Sighting:
        sightings = self.seen.setdefault(feed, {})
        fingerprint = spool.fingerprint_of(result)
        sighting = sightings.get(name)
        if sighting is None:
            sighting = sightings[name] = _Sighting(fingerprint, now, now, now)
            data_name = file_options.data_name_for(name)
            claimed_at = self.claims.get(feed, {}).get(data_name)
            if claimed_at is not None and 0 <= now - claimed_at <= ORPHAN_SECONDS:
                log.warning(
                    "params_file_after_its_file",
                    feed=feed,
                    file=jobs.display_name(name),
                    after_seconds=round(now - claimed_at),
                    hint=f"{jobs.display_name(data_name)} was claimed before it appeared and was sent without it; "
                    "it is not applied to a later file of that name either: remove it, or drop both again",
                )
        elif sighting.fingerprint != fingerprint:
            sighting.fingerprint, sighting.since = fingerprint, now
        return sighting

    def prepare(self, feed: FeedSettings, name: str, now: float, seen_at: float | None = None) -> Prepared:
        """Look for ``name``'s params file in the drop folder and work out the file's options (file_options.py).
        ``seen_at``: when the data file was first seen (the daemon's clock; None: not known).

        Never raises for the params file's content: a bad one gives ``refusal``, and so does a params file left
        over (first seen more than :data:`LEFT_OVER_SECONDS` before ``seen_at``) or, with none of the right name,
        a misnamed one beside it (:func:`lookalikes`). Raises OSError only when the drop folder cannot be looked at
        (the claim is tried again later).
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
            misnamed = self._lookalike(feed, name)
            if misnamed is not None:
                return Prepared(
                    {"per_file": True},
                    refusal=f"a params file named {jobs.display_name(misnamed)} lies beside {shown}: a params file "
                    f"is named {jobs.display_name(params_name)} exactly; nothing was sent (not even with the feed's "
                    "options): rename or remove it, then drop the file again",
                )
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
        if seen_at is not None and seen_at - sighting.appeared > LEFT_OVER_SECONDS:
            reason = (
                f"params file {params_name}: in drop/ {round(seen_at - sighting.appeared)} s before {shown} appeared "
                "(left over from an earlier file of that name?); a params file is written just before or with its "
                "file; nothing was sent: check it, then drop both again"
            )
            return Prepared(kept, refusal=reason)
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

    def _lookalike(self, feed: FeedSettings, name: str) -> str | None:
        """A misnamed params file beside data file ``name`` in the drop folder, if any (:func:`lookalikes`)."""
        for candidate in lookalikes(name):
            try:
                self.lstat(str(feed.drop_dir / candidate))
            except OSError:
                continue
            return candidate
        return None

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
