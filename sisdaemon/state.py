"""The state file and the per-feed history files, their shapes checked on load (the atomic writes are in atomic.py,
the single-instance locks in locks.py).

State (docs/design.md "Crash protocol"): only claimed and in-flight jobs, JSON with a ``version``, written by atomic
replace (temp file in the same folder, fsync, rename, fsync of the folder) before every externally visible step.
History: one bounded JSON file per feed beside the state file, the ledger of this daemon's imports.
Locks: an exclusive ``flock`` on ``<state_file>.lock`` (never replaced) and one on
``<lock_dir>/<host>_<account id>.lock``; a second daemon exits at once naming the holder's pid.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from sisdaemon.atomic import (
    TEMP_NAME,
    fsync_dir,
    owned_by_state,
    remove_stale_temp_files,
    write_atomic,
    write_json_atomic,
)
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
HISTORY_VERSION = 1
#: How many import records a history file keeps (oldest dropped first): enough for recovery and duplicate checks.
HISTORY_LIMIT = 1000


class StateError(Exception):
    """The state or history file cannot be read (damaged JSON, wrong version); the message names the file."""


def read_json(path: Path) -> Any:
    """Read a JSON file; None when it does not exist. Raises StateError naming the file when it is not UTF-8 or not
    JSON, OSError when it cannot be read."""
    return _read_json(path, None)


_ABSENT: Any = object()


def _read_json(path: Path, absent: Any) -> Any:
    """:func:`read_json`, returning ``absent`` for a missing file (so that a file holding ``null`` is not taken
    for a missing one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return absent
    except UnicodeDecodeError as error:
        raise StateError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise StateError(f"{path}: not valid JSON ({error}); move it aside to start afresh") from error


# --- the files' shapes ---------------------------------------------------------------------------------------
# Checked on load with pydantic in strict mode (an int is not a string, "yes" is not a boolean), so that a damaged
# file is refused naming the file and the field instead of failing later with a traceback. Parsed by json.loads
# first: dropped names with non-UTF-8 bytes are kept as lone surrogates, which pydantic's own JSON parser refuses.


def _disk_type(hint: Any) -> Any:
    """The type a dataclass field has once written as JSON: tuples are lists, enums their values, nested
    dataclasses objects checked the same way."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return list[_disk_type(arguments[0])]  # type: ignore[misc]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_disk_type(argument) for argument in arguments)]  # noqa: UP007 (built at run time)
    if origin in (dict, Mapping):
        return dict[_disk_type(arguments[0]), _disk_type(arguments[1])]  # type: ignore[misc]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return Literal[tuple(member.value for member in hint)]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _record_model(hint)
    return hint


def _record_model(cls: type[Any]) -> type[BaseModel]:
    """A strict pydantic model of a dataclass as :func:`dataclasses.asdict` writes it, derived from its fields, so
    a field added to :class:`Job` is checked without being listed here. Unknown keys are ignored, as
    ``Job.from_dict`` ignores them."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            default: Any = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = ...
        fields[item.name] = (_disk_type(hints[item.name]), default)
    model: type[BaseModel] = create_model(
        f"{cls.__name__}OnDisk", __config__=ConfigDict(strict=True, extra="ignore"), **fields
    )
    return model


_JOB_SHAPE = _record_model(Job)


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


class _HistoryShape(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    version: Literal[1]
    records: list[dict[str, Any]] = []
    import_ids: list[int] = []
    last_counts: dict[str, int] = {}
    last_file_at: float | None = None
    last_success_at: float | None = None


class _RecordShape(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    job_id: str
    file: str | None = None
    work_name: str | None = None
    import_id: int | None = None
    outcome: str | None = None
    folder: str | None = None
    finished_at: float | None = None
    sha256: str | None = None
    size: int | None = None
    reason_code: str | None = None


_StateShape.model_rebuild()


def _check_shape(path: Path, shape: type[BaseModel], data: Any, where: str = "") -> None:
    """Validate ``data`` against ``shape``. Raises StateError ``"<path>: <dotted field>: <problem>"`` (the first
    three problems, on one line)."""
    if not where and not isinstance(data, dict):
        raise StateError(f"{path}: top level: expected a JSON object, found {_json_kind(data)}")
    try:
        shape.model_validate(data)
    except ValidationError as error:
        raise _damaged(path, error, where) from None


def _damaged(path: Path, error: ValidationError, where: str) -> StateError:
    problems = []
    details = error.errors(include_url=False)
    for detail in details[:3]:
        field_name = _dotted(where, detail["loc"]) or "top level"
        message = detail["msg"][:1].lower() + detail["msg"][1:]
        if detail["type"] not in ("missing", "extra_forbidden"):
            message += f" (found {_json_kind(detail.get('input'))})"
        problems.append(f"{field_name}: {message}")
    if len(details) > 3:
        problems.append(f"and {len(details) - 3} more problems")
    return StateError(f"{path}: {'; '.join(problems)}")


def _dotted(where: str, location: Iterable[int | str]) -> str:
    """``jobs.ab12`` + ``("fingerprint", "size")`` -> ``jobs.ab12.fingerprint.size``; list indexes as ``[0]``."""
    text = where
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _json_kind(value: Any) -> str:
    """What a JSON value is, shortly (never its whole text: a damaged file may be large)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "…"
        return f"the string {json.dumps(shown)}"
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else type(value).__name__


def _entry_name(collection: str, index: int, entry: Any) -> str:
    """``jobs.ab12`` for an entry with a usable ``job_id``, else ``jobs[0]``."""
    job_id = entry.get("job_id") if isinstance(entry, dict) else None
    if isinstance(job_id, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", job_id):
        return f"{collection}.{job_id}"
    return f"{collection}[{index}]"


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
        _check_shape(path, _StateShape, data)
        jobs: dict[str, Job] = {}
        for index, item in enumerate(data.get("jobs", [])):
            where = _entry_name("jobs", index, item)
            _check_shape(path, _JOB_SHAPE, item, where)
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
        data = _read_json(self.path, _ABSENT)
        return State() if data is _ABSENT else State.from_dict(data, self.path)

    def save(self, state: State) -> None:
        """Write ``state`` atomically and durably. Raises OSError."""
        write_json_atomic(self.path, state.to_dict(), effect="state")


def history_path(state_file: Path, feed: str) -> Path:
    """``<state folder>/<state stem>.history.<feed>.json``."""
    return state_file.with_name(f"{state_file.stem}.history.{feed}.json")


class History:
    """A feed's bounded ledger: recent imports, last imported counts per SIS type, last file and last success.

    ``records``: newest last, each ``{"job_id", "file", "work_name", "import_id", "outcome", "folder",
    "finished_at", "sha256", "size"}`` (times are seconds since the epoch). At most :data:`HISTORY_LIMIT` kept.
    """

    def __init__(self, path: Path) -> None:
        """Read the history at ``path`` (empty when there is no file). Raises StateError naming the file and the
        field when it has the wrong shape (a damaged history is never taken as an empty one), OSError when it
        cannot be read."""
        self.path = path
        data = _read_json(path, _ABSENT)
        if data is _ABSENT:
            data = {}
        else:
            if isinstance(data, dict) and "version" in data and data["version"] != HISTORY_VERSION:
                raise StateError(f"{path}: history version {data['version']!r} is not {HISTORY_VERSION}")
            _check_shape(path, _HistoryShape, data)
            for index, record in enumerate(data.get("records", [])):
                _check_shape(path, _RecordShape, record, _entry_name("records", index, record))
        # One record per job (an older version could write a job twice when killed between the history and the
        # state save): the first one counts.
        self.records: list[dict[str, Any]] = []
        self._recorded: set[str] = set()
        for record in data.get("records", []):
            if record["job_id"] not in self._recorded:
                self._recorded.add(record["job_id"])
                self.records.append(record)
        self.import_ids: list[int] = list(data.get("import_ids", []))
        self.last_counts: dict[str, int] = dict(data.get("last_counts", {}))
        self.last_file_at: float | None = data.get("last_file_at")
        self.last_success_at: float | None = data.get("last_success_at")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": HISTORY_VERSION,
            "records": self.records[-HISTORY_LIMIT:],
            "import_ids": self.import_ids[-HISTORY_LIMIT:],
            "last_counts": self.last_counts,
            "last_file_at": self.last_file_at,
            "last_success_at": self.last_success_at,
        }

    def note_import(self, import_id: int) -> None:
        """Add an import id to the ledger (call when an import is created or adopted)."""
        if import_id not in self.import_ids:
            self.import_ids.append(import_id)
            del self.import_ids[:-HISTORY_LIMIT]

    def add(self, record: Mapping[str, Any], counts: Mapping[str, int] | None, success: bool) -> bool:
        """Append a finished job's record (``record["job_id"]`` a str); remember the counts and success time.

        Idempotent by job id: a job recorded already (the daemon was killed after the history save and before
        the state save, so it files the job again at restart) changes nothing. Returns whether it was added.
        """
        job_id = str(record["job_id"])
        if job_id in self._recorded:
            return False
        self.records.append(dict(record))
        self._recorded.add(job_id)
        if len(self.records) > HISTORY_LIMIT:
            for dropped in self.records[:-HISTORY_LIMIT]:
                self._recorded.discard(str(dropped["job_id"]))
            del self.records[:-HISTORY_LIMIT]
        finished_at = record.get("finished_at")
        self.last_file_at = finished_at
        if success:
            self.last_success_at = finished_at
            if counts:
                self.last_counts.update({key: int(value) for key, value in counts.items() if isinstance(value, int)})
        return True

    def save(self) -> None:
        """Write the history atomically and durably. Raises OSError."""
        write_json_atomic(self.path, self.to_dict(), effect="history")


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
