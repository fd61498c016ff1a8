"""A feed's history: the ledger of this daemon's imports, one append-only file of JSON lines per feed.

docs/design.md "Crash protocol" (History). Each change is one line appended and fsync'd, so a finished file costs
O(1) bytes written whatever the history holds; the file is rewritten whole (atomically: temp file, fsync, rename,
fsync of the folder) only now and then, when its lines reach :data:`COMPACT_AFTER`, keeping the newest
:data:`HISTORY_LIMIT` records. Lines, in order:

- ``{"version": 2}``: the first line, the format;
- ``{"record": {...}, "counts": {...} | null, "success": bool}``: a finished job (its record, the row counts of a
  success, whether it went to done/);
- ``{"import_id": n}``: an import this daemon created or adopted;
- ``{"summary": {"import_ids", "last_counts", "last_file_at", "last_success_at"}}``: written by a compaction, after
  the records it kept; it states what they alone no longer say.

Read back by replaying the lines. A kill in the middle of an append leaves a last line without its newline: it is
ignored on read (the change it held was not yet acted on: the ledger appends before the state moves on) and cut off
before the next append. Any other line that is not what it should be makes the file damaged (StateError naming the
line), never silently empty. A history written whole by an older version (one JSON object, ``"version": 1``) still
loads; its first compaction rewrites it in lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from sisdaemon import effects
from sisdaemon.atomic import write_atomic
from sisdaemon.shapes import ABSENT, StateError, check_shape, entry_name, read_json_or

HISTORY_VERSION = 2
#: How many import records a history keeps (oldest dropped at compaction): enough for recovery and duplicate checks.
HISTORY_LIMIT = 1000
#: Lines after which the next save compacts the file (rewrites it with the newest records only).
COMPACT_AFTER = 2 * HISTORY_LIMIT + 100


class _HistoryV1Shape(BaseModel):
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
    running_seconds: float | None = None
    rows: dict[str, int] | None = None


class _RecordLine(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    record: dict[str, Any]
    counts: dict[str, int] | None = None
    success: bool = False


class _ImportLine(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    import_id: int


class _Summary(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    import_ids: list[int] = []
    last_counts: dict[str, int] = {}
    last_file_at: float | None = None
    last_success_at: float | None = None


class _SummaryLine(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    summary: _Summary


def history_path(state_file: Path, feed: str) -> Path:
    """``<state folder>/<state stem>.history.<feed>.json`` (JSON lines; the name is kept from version 1)."""
    return state_file.with_name(f"{state_file.stem}.history.{feed}.json")


class History:
    """A feed's bounded ledger: recent imports, last imported counts per SIS type, last file and last success.

    ``records``: newest last, each ``{"job_id", "file", "work_name", "import_id", "outcome", "folder",
    "finished_at", "sha256", "size", "reason_code", "running_seconds", "rows"}`` (times are seconds since the epoch;
    ``running_seconds``: Canvas's ``ended_at - started_at``, None when unknown; ``work_name``: the file's name in
    its ``folder``; ``rows``: data rows per SIS type its check counted, the shrink guard's baseline, None when it
    was not checked). ``import_ids``: this daemon's imports,
    oldest first. Changes (:meth:`add`, :meth:`note_import`) are kept in memory until :meth:`save` appends them.
    """

    def __init__(self, path: Path) -> None:
        """Read the history at ``path`` (empty when there is no file). Raises StateError naming the file and the
        line or field when it is damaged (a damaged history is never taken as an empty one), OSError when it
        cannot be read."""
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.import_ids: list[int] = []
        self.last_counts: dict[str, int] = {}
        self.last_file_at: float | None = None
        self.last_success_at: float | None = None
        self._recorded: set[str] = set()
        self._known_ids: set[int] = set()
        # For timed_record, without a pass over the records per poll: records are numbered as they are added (the
        # kept ones are the last len(records) numbers); the newest timed record of each file name, and of any.
        self._added = 0
        self._timed_by_file: dict[Any, tuple[int, dict[str, Any]]] = {}
        self._newest_timed: tuple[int, dict[str, Any]] | None = None
        self._pending: list[dict[str, Any]] = []  # lines not yet appended
        self._lines = 0  # whole lines in the file
        self._valid_bytes: int | None = None  # where the whole lines end (None: no file, or version 1 to rewrite)
        self._load()

    # --- reading ------------------------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            first = json.loads(data.split(b"\n", 1)[0])
        except ValueError:
            first = None
        if first != {"version": HISTORY_VERSION}:
            self._load_version_1()  # one JSON object: version 1's format (or a damaged file, said as such)
            return
        end = 0
        number = 0
        while end < len(data):
            newline = data.find(b"\n", end)
            if newline < 0:
                break  # a torn last line: an append a kill cut short; ignored, cut off before the next append
            number += 1
            self._replay(data[end:newline], number)
            end = newline + 1
        self._lines = number
        self._valid_bytes = end

    def _replay(self, raw: bytes, number: int) -> None:
        where = f"line {number}"
        try:
            line = json.loads(raw.decode("utf-8"))
        except ValueError as error:  # UnicodeDecodeError included
            raise StateError(f"{self.path}: {where}: not valid JSON ({error}); move it aside to start afresh") from None
        if number == 1:
            return  # {"version": 2}, checked before
        if isinstance(line, dict) and "record" in line:
            check_shape(self.path, _RecordLine, line, where)
            check_shape(self.path, _RecordShape, line["record"], f"{where}.record")
            self._apply_record(line["record"], line.get("counts"), bool(line.get("success")))
        elif isinstance(line, dict) and "import_id" in line:
            check_shape(self.path, _ImportLine, line, where)
            self._apply_import(line["import_id"])
        elif isinstance(line, dict) and "summary" in line:
            check_shape(self.path, _SummaryLine, line, where)
            summary = line["summary"]
            self.import_ids = []
            self._known_ids = set()
            for import_id in summary.get("import_ids", []):
                self._apply_import(import_id)
            self.last_counts = dict(summary.get("last_counts", {}))
            self.last_file_at = summary.get("last_file_at")
            self.last_success_at = summary.get("last_success_at")
        else:
            raise StateError(f"{self.path}: {where}: expected a record, an import_id or a summary")

    def _load_version_1(self) -> None:
        data = read_json_or(self.path, ABSENT)
        if data is ABSENT:
            return
        if isinstance(data, dict) and "version" in data and data["version"] != 1:
            raise StateError(f"{self.path}: history version {data['version']!r} is not {HISTORY_VERSION}")
        check_shape(self.path, _HistoryV1Shape, data)
        for index, record in enumerate(data.get("records", [])):
            check_shape(self.path, _RecordShape, record, entry_name("records", index, record))
        for record in data.get("records", []):
            self._apply_record(record, None, False)
        self.import_ids, self._known_ids = [], set()
        for import_id in data.get("import_ids", []):
            self._apply_import(import_id)
        self.last_counts = dict(data.get("last_counts", {}))
        self.last_file_at = data.get("last_file_at")
        self.last_success_at = data.get("last_success_at")
        self._lines = COMPACT_AFTER  # the next save rewrites it in lines

    def _apply_record(self, record: Mapping[str, Any], counts: Mapping[str, int] | None, success: bool) -> bool:
        job_id = str(record["job_id"])
        if job_id in self._recorded:
            return False  # one record per job (an older version could write a job twice): the first one counts
        kept = dict(record)
        self.records.append(kept)
        self._recorded.add(job_id)
        if isinstance(kept.get("running_seconds"), int | float):
            self._newest_timed = self._timed_by_file[kept.get("file")] = (self._added, kept)
            if len(self._timed_by_file) > 2 * HISTORY_LIMIT:  # names of records long dropped
                first_kept = self._added + 1 - min(len(self.records), HISTORY_LIMIT)
                self._timed_by_file = {key: item for key, item in self._timed_by_file.items() if item[0] >= first_kept}
        self._added += 1
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

    def _apply_import(self, import_id: int) -> bool:
        if import_id in self._known_ids:
            return False
        self.import_ids.append(import_id)
        self._known_ids.add(import_id)
        if len(self.import_ids) > HISTORY_LIMIT:
            for dropped in self.import_ids[:-HISTORY_LIMIT]:
                self._known_ids.discard(dropped)
            del self.import_ids[:-HISTORY_LIMIT]
        return True

    def timed_record(self, name: str) -> dict[str, Any] | None:
        """The record :func:`sisdaemon.polling.expected_running_seconds` chooses among :attr:`records`: the newest
        with a ``running_seconds`` of the file name ``name``, else the newest with one of any name, else None. O(1):
        called at every poll (issue 9)."""
        first_kept = self._added - len(self.records)
        for found in (self._timed_by_file.get(name), self._newest_timed):
            if found is not None and found[0] >= first_kept:
                return found[1]
        return None

    def to_dict(self) -> dict[str, Any]:
        """What the history holds, as one object (the shape of version 1's file)."""
        return {
            "version": 1,
            "records": list(self.records),
            "import_ids": list(self.import_ids),
            "last_counts": dict(self.last_counts),
            "last_file_at": self.last_file_at,
            "last_success_at": self.last_success_at,
        }

    # --- changing -----------------------------------------------------------------------------------------------

    def note_import(self, import_id: int) -> None:
        """Add an import id to the ledger (call when an import is created or adopted); :meth:`save` writes it."""
        if self._apply_import(import_id):
            self._pending.append({"import_id": import_id})

    def add(self, record: Mapping[str, Any], counts: Mapping[str, int] | None, success: bool) -> bool:
        """Append a finished job's record (``record["job_id"]`` a str); remember the counts and success time.

        Idempotent by job id: a job recorded already (the daemon was killed after the history save and before
        the state save, so it files the job again at restart) changes nothing. Returns whether it was added.
        """
        if not self._apply_record(record, counts, success):
            return False
        self._pending.append({"record": dict(record), "counts": dict(counts) if counts else None, "success": success})
        return True

    def save(self) -> None:
        """Write the changes since the last save: appended as lines and fsync'd, or, once the file has
        :data:`COMPACT_AFTER` lines (or has none yet, or is version 1's), by rewriting it whole with the newest
        records. Raises OSError (the changes stay pending and are written by the next save)."""
        if self._valid_bytes is None or self._lines + len(self._pending) >= COMPACT_AFTER:
            self._compact()
        elif self._pending:
            self._append()

    def _encode(self, lines: list[dict[str, Any]]) -> bytes:
        text = "".join(json.dumps(line, separators=(",", ":"), sort_keys=True) + "\n" for line in lines)
        return text.encode()  # ASCII: json.dumps escapes the rest, lone surrogates of undecodable names included

    def _append(self) -> None:
        data = self._encode(self._pending)
        assert self._valid_bytes is not None
        fd = os.open(self.path, os.O_WRONLY)
        try:
            if os.fstat(fd).st_size != self._valid_bytes:
                os.ftruncate(fd, self._valid_bytes)  # cut off a torn line (or a failed append's part)
            os.pwrite(fd, data, self._valid_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        effects.happened("history.appended")
        self._valid_bytes += len(data)
        self._lines += len(self._pending)
        self._pending.clear()

    def _compact(self) -> None:
        lines: list[dict[str, Any]] = [{"version": HISTORY_VERSION}]
        lines += [{"record": record} for record in self.records]
        summary = {
            "import_ids": list(self.import_ids),
            "last_counts": dict(self.last_counts),
            "last_file_at": self.last_file_at,
            "last_success_at": self.last_success_at,
        }
        lines.append({"summary": summary})
        data = self._encode(lines)
        write_atomic(self.path, data, effect="history")
        self._valid_bytes = len(data)
        self._lines = len(lines)
        self._pending.clear()
