"""Diffing mode as Canvas does it: an import with a `diffing_data_set_identifier` is diffed against the previous
successful import of the same data set, and only the difference is applied; rows missing from the new file come
back with their status set to `deleted` (enrollments: `diffing_drop_status`; users: `diffing_user_remove_status`).

Sources: app/models/sis_batch.rb (generate_diff, the previous batch of the data set among the succeeded ones, the
file-size change_threshold, diffing_remaster) and lib/sis/csv/diff_generator.rb (one CSV per type paired with the
previous import's CSV of that type, keyed by each type's SIS id columns; mismatched headers: no diff for that type;
diff_row_count_threshold); docs/canvas-api.md §1, §3. The previous CSV is held in memory keyed by its SIS ids (an
emulator's liberty; Canvas streams it through its csv_diff gem).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from sisdaemon import sis_csv
from sisdaemon.sandbox.records import SisImport, StoredFile
from sisdaemon.sandbox.store import Store
from sisdaemon.sis_csv import DIFF_KEYS

SUCCEEDED = frozenset({"imported", "imported_with_messages"})
MSG_SIZE = "Diffing not performed because file size difference exceeded threshold"
MSG_ROWS = "Diffing not performed because difference row count exceeded threshold"


@dataclass
class Diffed:
    """One type's diff: the CSV written (`path`), its data rows, and how many of them are drops."""

    importer: str
    name: str
    path: Path
    rows: int
    dropped: int


def base_import(store: Store, sis_import: SisImport) -> SisImport | None:
    """The import this one is diffed against: the latest earlier import of the same data set that succeeded
    (sis_batch.rb generate_diff), or None (no identifier, a remaster, or the data set's first import). The caller
    holds the store lock."""
    if not sis_import.diffing_data_set_identifier or sis_import.diffing_remaster:
        return None
    earlier = [
        item
        for item in store.ordered_imports()
        if item.id != sis_import.id
        and item.diffing_data_set_identifier == sis_import.diffing_data_set_identifier
        and item.workflow_state in SUCCEEDED
        and item.prepared
        and (item.created_at, item.id) < (sis_import.created_at, sis_import.id)
    ]
    return earlier[-1] if earlier else None


def drop_status(importer: str, sis_import: SisImport) -> str:
    """The status a row missing from the new file is given: enrollments `diffing_drop_status`, users
    `diffing_user_remove_status`, else (and by default) `deleted`."""
    if importer == "enrollment" and sis_import.options.get("diffing_drop_status"):
        return str(sis_import.options["diffing_drop_status"])
    if importer == "user" and sis_import.options.get("diffing_user_remove_status"):
        return str(sis_import.options["diffing_user_remove_status"])
    return "deleted"


def _header(path: Path) -> list[str]:
    with path.open("rb") as stream:
        return [cell.strip().lower() for cell in (sis_csv.read_header(stream) or [])]


def diff_csv(importer: str, previous: Path, current: Path, target: Path, status: str) -> tuple[int, int] | None:
    """Write to `target` the rows of `current` that are new or changed since `previous`, then the rows of `previous`
    missing from `current` with their status set to `status`. Returns (rows written, of which dropped), or None when
    the two headers name different columns (no diff for this type)."""
    header = _header(current)
    if set(header) != set(_header(previous)) or "status" not in header:
        return None
    keys = DIFF_KEYS[importer]
    status_at = header.index("status")

    def rows(path: Path) -> list[tuple[tuple[str, ...], list[str]]]:
        found = []
        with path.open("rb") as stream:
            records = sis_csv.iter_records(stream)
            file_header = next(records).fields
            for record in records:
                row = sis_csv.row_dict(file_header, record.fields)
                if sis_csv.is_blank_row(row):
                    continue
                found.append((tuple(row.get(key) or "" for key in keys), [row.get(column) or "" for column in header]))
        return found

    before = dict(rows(previous))
    written = dropped = 0
    with target.open("w", newline="", encoding="utf-8") as sink:
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(header)
        for key, values in rows(current):
            if before.pop(key, None) != values:
                writer.writerow(values)
                written += 1
        for values in before.values():
            values[status_at] = status
            writer.writerow(values)
            written += 1
            dropped += 1
    return written, dropped


def generate_diff(
    store: Store, sis_import: SisImport, base: SisImport, current: dict[str, list[Path]], work_dir: Path
) -> list[Diffed] | None:
    """Diff each type this import supplies once against the base's CSV of that type (diff_generator.rb). Returns
    the diffed types, or None when a threshold stopped the diff (a warning and `diffing_threshold_exceeded`; the
    files are applied whole). The caller does not hold the store lock."""
    size_now = sum(path.stat().st_size for paths in current.values() for path in paths)
    size_before = sum(path.stat().st_size for paths in base.prepared.values() for path in paths)
    threshold = sis_import.change_threshold
    if threshold is not None and size_before and abs(1 - size_now / size_before) * 100 > threshold:
        _exceeded(store, sis_import, MSG_SIZE)
        return None
    diffed: list[Diffed] = []
    for importer, paths in current.items():
        previous = base.prepared.get(importer, [])
        if importer not in DIFF_KEYS or len(paths) != 1 or len(previous) != 1:
            continue
        target = work_dir / f"diff_{importer}.csv"
        counted = diff_csv(importer, previous[0], paths[0], target, drop_status(importer, sis_import))
        if counted is None:
            with store.lock:
                sis_import.add_error(
                    None, f"Unable to perform diffing against mismatched previous and current {importer} imports"
                )
            continue
        diffed.append(Diffed(importer, f"diff_{importer}.csv", target, *counted))
    limit = sis_import.options.get("diff_row_count_threshold")
    if limit is not None and sum(item.rows for item in diffed) > int(limit):
        _exceeded(store, sis_import, MSG_ROWS)
        return None
    with store.lock:
        stored = [
            store.add_file(
                StoredFile(
                    id=store.new_file_id(),
                    filename=item.name,
                    display_name=item.name,
                    content_type="text/csv",
                    path=item.path,
                    size=item.path.stat().st_size,
                )
            )
            for item in diffed
        ]
        sis_import.diffed_csv_attachments = stored
        sis_import.options["diffed_against_sis_batch_id"] = base.id
        sis_import.data["diffed_against_sis_batch_id"] = base.id
        sis_import.data["diffed_attachment_ids"] = [item.id for item in stored]
    return diffed


def _exceeded(store: Store, sis_import: SisImport, message: str) -> None:
    with store.lock:
        sis_import.diffing_threshold_exceeded = True
        sis_import.add_error(None, message)
