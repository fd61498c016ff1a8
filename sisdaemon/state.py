"""The state file, the per-feed history files and the single-instance locks.

State (docs/design.md "Crash protocol"): only claimed and in-flight jobs, JSON with a ``version``, written by atomic
replace (temp file in the same folder, fsync, rename, fsync of the folder) before every externally visible step.
History: one bounded JSON file per feed beside the state file, the ledger of this daemon's imports.
Locks: an exclusive ``flock`` on ``<state_file>.lock`` (never replaced) and one on
``<lock_dir>/<host>_<account id>.lock``; a second daemon exits at once naming the holder's pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import fcntl
import json
import os
import re
import secrets
import stat
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from sisdaemon import effects
from sisdaemon.jobs import Job

STATE_VERSION = 1
HISTORY_VERSION = 1
#: How many import records a history file keeps (oldest dropped first): enough for recovery and duplicate checks.
HISTORY_LIMIT = 1000


class StateError(Exception):
    """The state or history file cannot be read (damaged JSON, wrong version); the message names the file."""


class LockHeld(Exception):
    """Another process holds a lock. ``pid`` is the holder's pid as it wrote it (None if unknown)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by {holder}: another sisdaemon is running with this state or account")


def fsync_dir(path: Path) -> None:
    """fsync a folder, so a rename or a new name in it survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    effects.happened("dir.fsynced")


#: The temp names :func:`write_atomic` uses: ``.<target name>.<8 lower-case hex digits>.tmp``.
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp", re.DOTALL)


def write_atomic(
    path: Path, data: bytes, mode: int = 0o640, *, effect: str = "file", temp_dir: Path | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically: temp file in the same folder (named as :data:`TEMP_NAME`
    says), fsync, rename, fsync the folder. A kill before the rename leaves the temp file behind; see
    :func:`remove_stale_temp_files`.

    ``effect`` names the write for the side-effect seam (effects.py): ``<effect>.temp_written`` once the temp file
    is whole on disk, ``<effect>.replaced`` once it has replaced ``path``. ``temp_dir``: where the temp file is made
    (default: ``path``'s folder; another folder must be on the same mount), so that a kill leaves it where it is
    cleaned up (a sidecar's temp file in work/, not in done/).

    Raises OSError (the old file is then untouched).
    """
    temp = (temp_dir or path.parent) / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        effects.happened(f"{effect}.temp_written")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    effects.happened(f"{effect}.replaced")
    fsync_dir(path.parent)


def owned_by_state(state_file: Path) -> Callable[[str], bool]:
    """A test of a file name: whether it is ``state_file``'s own name or one of its history files' names (what
    :func:`remove_stale_temp_files` may clean up for the daemon that holds ``state_file``'s lock)."""
    history = re.compile(re.escape(state_file.stem) + r"\.history\..+\.json", re.DOTALL)

    def owned(name: str) -> bool:
        return name == state_file.name or history.fullmatch(name) is not None

    return owned


def remove_stale_temp_files(
    folder: Path,
    *,
    owned: Callable[[str], bool] | None = None,
    min_age_seconds: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> list[Path]:
    """Remove the temp files that writes by :func:`write_atomic` killed before their rename left in ``folder``.

    Only regular files whose whole name matches :data:`TEMP_NAME` are candidates, and only those whose target name
    passes ``owned`` (default: any; :func:`owned_by_state` for the state folder, which other instances may share).
    ``min_age_seconds``: keep temp files modified less than this many seconds ago (by ``clock``, seconds since
    the epoch, compared with their mtime). Call it with the default 0 only while holding the lock of whatever
    writes them (the state lock, at start-up): a temp file is then never one being written. Scans the folder
    once (keep it for small folders, such as the state folder).

    Returns the paths removed. Raises OSError when the folder cannot be listed or a file cannot be removed
    (a file already gone is not an error); a missing folder has nothing to remove.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    oldest = clock() - min_age_seconds
    for entry in entries:
        match = TEMP_NAME.fullmatch(entry.name)
        if match is None or (owned is not None and not owned(match["target"])):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or (min_age_seconds > 0 and info.st_mtime > oldest):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(Path(entry.path))
    return removed


def write_json_atomic(path: Path, value: Any, *, effect: str = "file", temp_dir: Path | None = None) -> None:
    """:func:`write_atomic` of ``value`` as indented, key-sorted JSON with a final newline."""
    data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
    write_atomic(path, data, effect=effect, temp_dir=temp_dir)


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


class _FaultShape(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    kind: str
    message: str
    since: float | None = None
    count: int = 0


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
    ``fault``: the current fault of talking to Canvas (kind, message, since, count), or None.
    ``warnings``: lasting conditions an operator should know of (name -> sentence), e.g. ``writer_check`` while the
    daemon cannot tell whether uploaders still write; shown by ``status``.
    """

    jobs: dict[str, Job] = field(default_factory=dict)
    tags_echoed: bool | None = None
    held: dict[str, str] = field(default_factory=dict)
    account_id: int | None = None
    fault: dict[str, Any] | None = None  # the current fault of talking to Canvas, for `status`
    warnings: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "warnings": dict(self.warnings),
            "version": STATE_VERSION,
            "jobs": [job.to_dict() for job in self.jobs.values()],
            "tags_echoed": self.tags_echoed,
            "held": dict(self.held),
            "account_id": self.account_id,
            "fault": self.fault,
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


class Lock:
    """An exclusive, non-blocking ``flock`` on a file that is never replaced; the holder's pid is written in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock. Raises LockHeld (with the holder's pid) if another process has it; OSError otherwise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(self.path, read_lock_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no stale pid for the next reader; we still hold the lock here
            os.close(self._fd)  # closing drops the flock; the file stays (never replaced, never removed)
            self._fd = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_lock_pid(path: Path) -> int | None:
    """The pid written in a lock file, or None."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_locked(path: Path) -> bool:
    """Whether some process holds ``path``'s flock (tested without keeping it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def state_lock_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".lock")


def account_lock_path(lock_dir: Path, host: str, account_id: int) -> Path:
    """``<lock_dir>/<host>_<account id>.lock`` with the host made safe for a file name."""
    safe_host = re.sub(r"[^A-Za-z0-9.-]", "_", host)
    return lock_dir / f"{safe_host}_{account_id}.lock"


def account_uuid_lock_path(lock_dir: Path, uuid: str) -> Path:
    """``<lock_dir>/account-<uuid>.lock``: the same for every host name that reaches one Canvas account."""
    return lock_dir / f"account-{re.sub(r'[^A-Za-z0-9.-]', '_', uuid)}.lock"


@contextlib.contextmanager
def locks(*paths: Path) -> Iterator[None]:
    """Hold every lock in ``paths`` (in order) for the ``with`` body. Raises LockHeld."""
    held: list[Lock] = []
    try:
        for path in paths:
            lock = Lock(path)
            lock.acquire()
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()
