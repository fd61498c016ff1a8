"""The state file and the per-feed history files, their shapes checked on load (the atomic writes are in atomic.py,
the single-instance locks in locks.py).

State (docs/design.md "Crash protocol"): only claimed and in-flight jobs, JSON with a ``version``, written by atomic
replace (temp file in the same folder, fsync, rename, fsync of the folder) before every externally visible step.
History: one bounded, append-only file of JSON lines per feed beside the state file, the ledger of this daemon's
imports (history.py; re-exported here with the shape checks of shapes.py).
Locks: an exclusive ``flock`` on ``<state_file>.lock`` (never replaced) and one on
``<lock_dir>/<host>_<account id>.lock``; a second daemon exits at once naming the holder's pid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from sisdaemon.atomic import (
    TEMP_NAME,
    fsync_dir,
    owned_by_state,
    remove_stale_temp_files,
    write_atomic,
    write_json_atomic,
)
from sisdaemon.history import HISTORY_LIMIT, HISTORY_VERSION, History, history_path
from sisdaemon.jobs import Job
from sisdaemon.locks import (
    Lock,
    LockHeld,
    account_lock_path,
    account_uuid_lock_path,
    is_locked,
    locks,
    read_lock_pid,
    state_lock_path,
)
from sisdaemon.shapes import ABSENT, StateError, check_shape, entry_name, read_json, read_json_or, record_model

# Re-exported for the callers: the atomic writes (atomic.py) and the locks (locks.py) the state relies on.
__all__ = [
    "HISTORY_LIMIT",
    "HISTORY_VERSION",
    "STATE_VERSION",
    "TEMP_NAME",
    "History",
    "Lock",
    "LockHeld",
    "State",
    "StateError",
    "StateStore",
    "account_lock_path",
    "account_uuid_lock_path",
    "fsync_dir",
    "history_path",
    "is_locked",
    "known_import_ids",
    "locks",
    "owned_by_state",
    "read_json",
    "read_lock_pid",
    "remove_stale_temp_files",
    "state_lock_path",
    "write_atomic",
    "write_json_atomic",
]

STATE_VERSION = 1


_JOB_SHAPE = record_model(Job)


class _StateShape(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    version: Literal[1]
    jobs: list[dict[str, Any]] = []
    tags_echoed: bool | None = None
    held: dict[str, str] = {}
    account_id: int | None = None
    fault: _FaultShape | None = None
    warnings: dict[str, str] = {}
    paused: dict[str, _PauseShape] = {}


class _PauseShape(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    reason: str | None = None
    by: str
    at: str


class _FaultShape(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    kind: str
    message: str
    since: float | None = None
    count: int = 0
    retry_at: float | None = None


_StateShape.model_rebuild()


@dataclass
class State:
    """The daemon's state: in-flight jobs by id, plus what it learnt of Canvas.

    ``tags_echoed``: None until learnt; then whether Canvas echoes ``diff_row_count_threshold``.
    ``held``: feed name -> reason, for feeds held by a configuration fault; cleared when the config changes.
    ``fault``: the current fault of talking to Canvas, or None: ``{"kind", "message", "since", "count",
    "retry_at"}``; ``since`` (the first fault in a row) and ``retry_at`` (the next call to Canvas: the end of the
    backoff) are wall-clock seconds since the epoch, for ``status`` to show (the daemon measures the backoff on its
    own clock); ``retry_at`` is rewritten at each fault.
    ``warnings``: lasting conditions an operator should know of (name -> sentence), e.g. ``writer_check`` while the
    daemon cannot tell whether uploaders still write; shown by ``status``.
    ``paused``: feed name -> ``{"reason": str | None, "by": login name, "at": ISO 8601 UTC}`` for feeds an operator
    paused (``sisdaemon pause``): no new file is taken from them until ``sisdaemon resume``; kept across restarts.
    """

    jobs: dict[str, Job] = field(default_factory=dict)
    tags_echoed: bool | None = None
    held: dict[str, str] = field(default_factory=dict)
    account_id: int | None = None
    fault: dict[str, Any] | None = None  # the current fault of talking to Canvas, for `status`
    warnings: dict[str, str] = field(default_factory=dict)
    paused: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "warnings": dict(self.warnings),
            "version": STATE_VERSION,
            "jobs": [job.to_dict() for job in self.jobs.values()],
            "tags_echoed": self.tags_echoed,
            "held": dict(self.held),
            "account_id": self.account_id,
            "fault": self.fault,
            "paused": {feed: dict(pause) for feed, pause in self.paused.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> State:
        """Rebuild the state from :meth:`to_dict`'s output (parsed JSON), checking its whole shape first.

        Raises StateError ``"<path>: <field>: <problem>"``, e.g. ``state.json: jobs.ab12.fingerprint: field
        required``, or naming the version when it is not :data:`STATE_VERSION`.
        """
        if isinstance(data, dict) and "version" in data and data["version"] != STATE_VERSION:
            raise StateError(f"{path}: state version {data['version']!r} is not {STATE_VERSION}")
        check_shape(path, _StateShape, data)
        jobs: dict[str, Job] = {}
        for index, item in enumerate(data.get("jobs", [])):
            where = entry_name("jobs", index, item)
            check_shape(path, _JOB_SHAPE, item, where)
            try:
                job = Job.from_dict(item)
            except (KeyError, TypeError, ValueError) as error:  # a rule of Job's own that the shape does not hold
                raise StateError(f"{path}: {where}: {error}") from None
            jobs[job.job_id] = job
        return cls(
            jobs=jobs,
            tags_echoed=data.get("tags_echoed"),
            held=dict(data.get("held", {})),
            account_id=data.get("account_id"),
            fault=data.get("fault"),
            warnings=dict(data.get("warnings", {})),
            paused={feed: dict(pause) for feed, pause in data.get("paused", {}).items()},
        )


class StateStore:
    """Reads and writes the state file at ``path``. ``save`` is atomic and durable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> State:
        """The state on disk; a fresh :class:`State` when there is no file.

        Raises StateError naming the file and the field when it is damaged (see :meth:`State.from_dict`),
        OSError when it cannot be read.
        """
        data = read_json_or(self.path, ABSENT)
        return State() if data is ABSENT else State.from_dict(data, self.path)

    def save(self, state: State) -> None:
        """Write ``state`` atomically and durably, as compact JSON (written several times per file: issue 9).
        Raises OSError."""
        write_json_atomic(self.path, state.to_dict(), effect="state", compact=True)


def known_import_ids(histories: Iterable[History], state: State) -> set[int]:
    """Every import id this daemon knows as its own: the ledgers, in-flight jobs and their dead imports."""
    ids: set[int] = set()
    for history in histories:
        ids.update(history.import_ids)
    for job in state.jobs.values():
        if job.import_id is not None:
            ids.add(job.import_id)
        ids.update(job.dead_import_ids)
    return ids
