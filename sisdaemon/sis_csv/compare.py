"""Comparing two SIS files (each a CSV or a zip of CSVs) row by row, keyed as Canvas keys rows when it diffs two
imports of one data set (:data:`~sisdaemon.sis_csv.DIFF_KEYS`), in bounded memory.

How (a hash-partitioned pass, chosen over an external sort: one write and one read of each row, no merge passes,
and the comparison needs no order): each file is streamed once and every data row of a keyed type is written, with
its line and values, to one of P partition files in a temporary folder, chosen by the hash of (type, key). Then,
partition by partition, the earlier file's rows are loaded into a dict and the newer file's rows streamed against
it: a key found with other values is *changed*, one not found *added*, and what is left of the dict *removed*.
Memory holds one partition of the earlier file: P is the earlier file's size over ``partition_bytes`` (at most
:data:`MAX_PARTITIONS`, one open file each while a side is written), so it stays flat as files grow, up to
``MAX_PARTITIONS * partition_bytes`` (1 GiB of CSV by default), then grows slowly. Disk: about both files' size
again, in ``temp_dir``, removed at the end (a kill leaves a ``.sisdaemon-diff-*`` folder, which
:func:`remove_stale_diff_dirs` clears).

Several earlier files can take part (:func:`compare_types`): each SIS type is compared with the earlier file given
for it (a feed's last imported file that held that type), so a file of users is never compared with a file of
courses; the earlier side's partitions then hold each earlier file's rows of its own types only.

Rows are compared on the columns both files have (names stripped and lower-cased, values stripped, as Canvas reads
them); blank rows and rows with every key column empty are not compared (Canvas skips them).
"""

from __future__ import annotations

import csv
import heapq
import operator
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sisdaemon.sis_csv.archive import is_zip, unsafe_member_name
from sisdaemon.sis_csv.problems import Cancelled
from sisdaemon.sis_csv.reading import CsvFileError, iter_records
from sisdaemon.sis_csv.schema import DIFF_KEYS, detect_importer, is_csv_name, is_ignored_zip_entry

#: Target bytes of CSV text per partition (of the earlier file): what one partition's dict holds, roughly.
PARTITION_BYTES = 2 << 20
#: At most this many partitions (each is an open file while a side is written).
MAX_PARTITIONS = 512
#: Ids kept per type and kind (added, removed, changed): the first few by line.
EXAMPLES = 5
#: Rows between two looks at ``should_stop``.
STOP_EVERY = 10_000
#: The prefix of the temporary folders.
TEMP_PREFIX = ".sisdaemon-diff-"

KINDS = ("added", "removed", "changed")


@dataclass
class TypeDiff:
    """One SIS type's comparison. ``key``: the columns that key its rows (empty: Canvas never diffs this type, and
    only the counts are given). ``before``/``after``: data rows in the earlier/newer file; ``added``, ``removed``,
    ``changed``: keyed rows; ``unkeyed``: rows with every key column empty (not compared); ``duplicates``: rows
    whose key an earlier row of the same file had (not compared); ``headers_differ``: the two files' columns of this
    type differ (Canvas then applies the file whole, without a diff); ``csvs``: how many CSVs of this type each file
    has (Canvas diffs a type only when each has one); ``examples``: kind -> the first few ids (by line);
    ``against``: the earlier file this type was compared with (its name as given)."""

    importer: str
    key: tuple[str, ...]
    before: int = 0
    after: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    unkeyed: int = 0
    duplicates: int = 0
    headers_differ: bool = False
    csvs: list[int] = field(default_factory=lambda: [0, 0])
    examples: dict[str, list[str]] = field(default_factory=dict)
    against: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``sisdaemon diff --json``, sidecars)."""
        return {
            "against": self.against,
            "key": list(self.key),
            "before": self.before,
            "after": self.after,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unkeyed": self.unkeyed,
            "duplicates": self.duplicates,
            "headers_differ": self.headers_differ,
            "csvs": {"before": self.csvs[0], "after": self.csvs[1]},
            "examples": {kind: list(self.examples.get(kind, [])) for kind in KINDS},
        }


@dataclass
class Comparison:
    """A newer file compared with one earlier file or several (one per type): ``types`` by Canvas's importer name,
    in the order first seen, only the types compared like for like (each held by the newer file and by the earlier
    file it was compared with); ``left_out``: type -> why it was not compared (held by one side only);
    ``problems``: CSVs that could not be read (or only in part), as ``"<file>: <what>"``."""

    before: str
    after: str
    types: dict[str, TypeDiff] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"before", "after", "types": {importer: TypeDiff.as_dict()}, "left_out", "problems"}``."""
        return {
            "before": self.before,
            "after": self.after,
            "types": {name: diff.as_dict() for name, diff in self.types.items()},
            "left_out": dict(self.left_out),
            "problems": list(self.problems),
        }

    def keep_common(self) -> None:
        """Leave out the types only one side holds (a type the newer file lacks is not touched by Canvas; one the
        earlier file lacks has nothing to compare with), naming each in ``left_out``."""
        for name, diff in list(self.types.items()):
            if not diff.csvs[1]:
                self.left_out[name] = f"only in the earlier file {diff.against}: the newer file does not change it"
            elif not diff.csvs[0]:
                self.left_out[name] = f"not in the earlier file {diff.against}: nothing to compare with"
            else:
                continue
            del self.types[name]


def show_key(columns: tuple[str, ...], values: list[str]) -> str:
    """A row's id for people: the value alone for a one-column key, else ``column=value`` for each one set."""
    if len(columns) == 1:
        return values[0]
    return " ".join(f"{column}={value}" for column, value in zip(columns, values, strict=True) if value)


def content_size(path: Path) -> int:
    """The bytes of CSV text in ``path``: its size, or for a zip its members' unpacked sizes. Raises OSError."""
    if is_zip(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError):
            pass
    return path.stat().st_size


def iter_csvs(path: Path, shown: str) -> Iterator[tuple[str, IO[bytes]]]:
    """The CSVs of a file as Canvas would read them: the file itself, or a zip's ``.csv`` members (by name; junk,
    unsafe names and other files left out), each as (name for people, an open binary stream). Raises OSError,
    zipfile.BadZipFile."""
    if not is_zip(path):
        with path.open("rb") as stream:
            yield shown, stream
        return
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda member: member.filename):
            if info.is_dir() or unsafe_member_name(info.filename) or is_ignored_zip_entry(info.filename):
                continue
            if not is_csv_name(info.filename) or info.flag_bits & 0x1:
                continue
            with archive.open(info) as stream:
                yield f"{shown}: {info.filename}", stream


def held_types(path: Path) -> set[str]:
    """The SIS types ``path`` holds (a CSV, or a zip's CSVs), from each CSV's header alone (a CSV whose header
    cannot be read or names no type is left out). Raises OSError, zipfile.BadZipFile."""
    found: set[str] = set()
    for _, stream in iter_csvs(path, str(path)):
        try:
            first = next(iter_records(stream), None)  # type: ignore[arg-type]
        except CsvFileError:
            continue
        importer = detect_importer(first.fields) if first is not None else None
        if importer is not None:
            found.add(importer)
    return found


class _Examples:
    """The first few ids by line, per (type, kind), in bounded memory (a max-heap of EXAMPLES per list)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.heaps: dict[tuple[str, str], list[tuple[int, str]]] = {}

    def add(self, diff: TypeDiff, kind: str, line: int, key: list[str]) -> None:
        heap = self.heaps.setdefault((diff.importer, kind), [])
        if len(heap) < self.limit:
            heapq.heappush(heap, (-line, show_key(diff.key, key)))
        elif -heap[0][0] > line:
            heapq.heapreplace(heap, (-line, show_key(diff.key, key)))

    def result(self, importer: str) -> dict[str, list[str]]:
        return {
            kind: [item for _, item in sorted(self.heaps.get((importer, kind), []), reverse=True)] for kind in KINDS
        }


class _Side:
    """One file's rows written to partition files: ``columns[importer]`` is the column order its rows are stored in
    (its first CSV of that type, names sorted)."""

    def __init__(self, folder: Path, label: str, partitions: int) -> None:
        self.paths = [folder / f"{label}-{index}.csv" for index in range(partitions)]
        self.columns: dict[str, list[str]] = {}
        self.name = ""  # the file being written now (an earlier side can have several, one after another)
        self.opened = False


def _split(
    path: Path,
    shown: str,
    side: _Side,
    index: int,
    comparison: Comparison,
    should_stop: Callable[[], bool] | None,
    only: Collection[str] | None = None,
) -> None:
    """Stream ``path``'s rows into ``side``'s partitions; count them into ``comparison`` (``index``: 0 before, 1
    after). ``only``: the types taken from this file (None: all); the other CSVs are skipped unread."""
    partitions = len(side.paths)
    mode = "a" if side.opened else "w"  # an earlier side's second file adds to the partitions of its first
    side.opened = True
    sinks = [target.open(mode, newline="", encoding="utf-8", errors="surrogatepass") for target in side.paths]
    writers = [csv.writer(sink, lineterminator="\n") for sink in sinks]
    rows_seen = 0
    try:
        for name, stream in iter_csvs(path, shown):
            records = iter_records(stream)  # type: ignore[arg-type]
            try:
                first = next(records, None)
                if first is None:
                    continue
                importer = detect_importer(first.fields)
                if importer is None:
                    comparison.problems.append(f"{name}: the header names no SIS CSV type Canvas knows; not compared")
                    continue
                if only is not None and importer not in only:
                    continue
                diff = comparison.types.setdefault(importer, TypeDiff(importer, DIFF_KEYS.get(importer, ())))
                if index == 0:
                    diff.against = side.name
                diff.csvs[index] += 1
                at: dict[str, int] = {}
                for position, cell in enumerate(first.fields):
                    at.setdefault(cell.strip().lower(), position)
                columns = side.columns.setdefault(importer, sorted(at))
                positions = [at.get(column, -1) for column in columns]
                key_at = [columns.index(column) if column in columns else -1 for column in diff.key]
                for record in records:
                    fields = record.fields
                    count = len(fields)
                    values = [fields[p].strip() if 0 <= p < count else "" for p in positions]
                    if not any(values):
                        continue  # a blank row: Canvas skips it
                    rows_seen += 1
                    if rows_seen % STOP_EVERY == 0 and should_stop is not None and should_stop():
                        raise Cancelled
                    if index == 0:
                        diff.before += 1
                    else:
                        diff.after += 1
                    if not diff.key:
                        continue
                    key = [values[k] if k >= 0 else "" for k in key_at]
                    if not any(key):
                        if index == 1:  # counted for the newer file
                            diff.unkeyed += 1
                        continue
                    bucket = hash((importer, *key)) % partitions
                    writers[bucket].writerow([importer, record.line, *key, *values])
            except CsvFileError as error:
                comparison.problems.append(f"{name}: {error.message}: compared up to the bad line only")
    finally:
        for sink in sinks:
            sink.close()


def _rows(path: Path) -> Iterator[list[str]]:
    with path.open(newline="", encoding="utf-8", errors="surrogatepass") as source:
        yield from csv.reader(source)


def _projector(indexes: list[int]) -> Callable[[list[str]], str]:
    """A function that gives a stored row's values at ``indexes`` as one string (what two rows are compared by: one
    string a row keeps memory low)."""
    if not indexes:
        return lambda row: ""
    if len(indexes) == 1:
        only = indexes[0]
        return lambda row: row[only]
    getter = operator.itemgetter(*indexes)
    return lambda row: "\x1f".join(getter(row))


def _match(
    before: _Side, after: _Side, comparison: Comparison, examples: _Examples, should_stop: Callable[[], bool] | None
) -> None:
    """Compare the two sides partition by partition: one partition of the earlier file in a dict at a time."""
    old_values: dict[str, Callable[[list[str]], str]] = {}
    new_values: dict[str, Callable[[list[str]], str]] = {}
    for importer, diff in comparison.types.items():
        old, new = before.columns.get(importer), after.columns.get(importer)
        start = 2 + len(diff.key)  # a stored row: importer, line, the key's values, then the columns' values
        common = sorted(set(old or ()) & set(new or ()))
        if old is not None and new is not None:
            diff.headers_differ = set(old) != set(new)
        old_values[importer] = _projector([start + old.index(column) for column in common] if old else [])
        new_values[importer] = _projector([start + new.index(column) for column in common] if new else [])
    seen = 0
    for old_path, new_path in zip(before.paths, after.paths, strict=True):
        held: dict[tuple[str, ...], tuple[int, str]] = {}
        for row in _rows(old_path):
            importer = row[0]
            identity = (importer, *row[2 : 2 + len(DIFF_KEYS[importer])])
            if identity in held:
                comparison.types[importer].duplicates += 1
            held[identity] = (int(row[1]), old_values[importer](row))
        taken: set[tuple[str, ...]] = set()
        for row in _rows(new_path):
            seen += 1
            if seen % STOP_EVERY == 0 and should_stop is not None and should_stop():
                raise Cancelled
            importer, line = row[0], int(row[1])
            diff = comparison.types[importer]
            key = row[2 : 2 + len(diff.key)]
            identity = (importer, *key)
            if identity in taken:
                diff.duplicates += 1
                continue
            taken.add(identity)
            found = held.pop(identity, None)
            if found is None:
                diff.added += 1
                examples.add(diff, "added", line, key)
            elif found[1] != new_values[importer](row):
                diff.changed += 1
                examples.add(diff, "changed", line, key)
        for identity, (line, _) in held.items():
            diff = comparison.types[identity[0]]
            diff.removed += 1
            examples.add(diff, "removed", line, list(identity[1:]))


def compare_files(
    before: Path,
    after: Path,
    *,
    before_name: str | None = None,
    after_name: str | None = None,
    temp_dir: Path | None = None,
    partition_bytes: int = PARTITION_BYTES,
    examples: int = EXAMPLES,
    should_stop: Callable[[], bool] | None = None,
) -> Comparison:
    """Compare ``after`` (the newer file) with ``before`` (the earlier one), each a CSV or a zip, keyed per type by
    :data:`DIFF_KEYS`, streaming both (see the module's doc for memory and disk), on the types both files hold
    (:meth:`Comparison.keep_common`: the others are named in ``left_out``). ``temp_dir``: where the partition files
    go (default: the system's).

    Raises OSError (a file that cannot be read, a full temp folder), zipfile.BadZipFile, Cancelled when
    ``should_stop()`` turns true.
    """
    comparison = _compare(
        [(before, before_name or str(before), None)],
        after,
        after_name or str(after),
        None,
        temp_dir=temp_dir,
        partition_bytes=partition_bytes,
        examples=examples,
        should_stop=should_stop,
    )
    comparison.keep_common()
    return comparison


def compare_types(
    bases: Mapping[str, Path],
    after: Path,
    *,
    names: Mapping[Path, str] | None = None,
    after_name: str | None = None,
    temp_dir: Path | None = None,
    partition_bytes: int = PARTITION_BYTES,
    examples: int = EXAMPLES,
    should_stop: Callable[[], bool] | None = None,
) -> Comparison:
    """Compare each SIS type of ``bases`` (type -> the earlier file that type is compared with) in ``after``, the
    newer file, with that type's rows in its earlier file; several types may share an earlier file, which is then
    read once. Each earlier file gives only its own types' rows; ``after`` gives only the types of ``bases``. A type
    of ``bases`` that ``after`` does not hold, or its earlier file no longer holds, is left out (``left_out``).
    ``names``: an earlier file -> its name for people (``TypeDiff.against``; default its path). Memory and disk as
    :func:`compare_files`, the partitions sized on the earlier files' total size.

    Raises OSError (a file that cannot be read, a full temp folder), zipfile.BadZipFile, Cancelled when
    ``should_stop()`` turns true.
    """
    grouped: dict[Path, set[str]] = {}
    for importer, path in bases.items():
        grouped.setdefault(path, set()).add(importer)
    sources = [(path, (names or {}).get(path) or str(path), types) for path, types in grouped.items()]
    comparison = _compare(
        sources,
        after,
        after_name or str(after),
        set(bases),
        temp_dir=temp_dir,
        partition_bytes=partition_bytes,
        examples=examples,
        should_stop=should_stop,
    )
    comparison.keep_common()
    return comparison


def _compare(
    sources: Sequence[tuple[Path, str, Collection[str] | None]],
    after: Path,
    after_name: str,
    after_only: Collection[str] | None,
    *,
    temp_dir: Path | None,
    partition_bytes: int,
    examples: int,
    should_stop: Callable[[], bool] | None,
) -> Comparison:
    """Compare ``after`` with the earlier ``sources`` (each: a file, its name for people, the types taken from it
    or None for all)."""
    comparison = Comparison(", ".join(name for _, name, _ in sources), after_name)
    size = sum(content_size(path) for path, _, _ in sources)
    partitions = max(1, min(MAX_PARTITIONS, -(-size // max(partition_bytes, 1))))
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=temp_dir))
    try:
        old, new = _Side(folder, "before", partitions), _Side(folder, "after", partitions)
        for path, name, only in sources:
            old.name = name
            _split(path, name, old, 0, comparison, should_stop, only)
        for part in [] if old.opened else old.paths:
            part.touch()  # no earlier file: its partitions are empty
        new.name = after_name
        _split(after, after_name, new, 1, comparison, should_stop, after_only)
        kept = _Examples(examples)
        _match(old, new, comparison, kept, should_stop)
        for importer, diff in comparison.types.items():
            if diff.key:
                diff.examples = kept.result(importer)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return comparison


def remove_stale_diff_dirs(folder: Path) -> list[Path]:
    """Remove the temporary folders a killed comparison left in ``folder``; returns them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        if name.startswith(TEMP_PREFIX):
            shutil.rmtree(folder / name, ignore_errors=True)
            removed.append(folder / name)
    return removed
