"""The shrink guard, duplicate skipping and the diff summary: pure decisions on a checked file, from its feed's
history (docs/design.md "A dropped file's life").

- **Shrink guard** (feeds in batch mode or with a diffing identifier, where a missing row is a deletion): a file
  whose row count of a SIS type it holds falls by more than ``shrink_guard_percent`` since the feed's last imported
  file with that type (a header-only CSV included) is held: failed/, ``reason_code: shrink_guard``, never sent,
  until ``sisdaemon retry --force`` releases it. A feed's first file has no baseline and passes, with a note.
- **Duplicates** (``skip_duplicates_hours``): a file whose sha256 equals that of a file the same feed imported
  within the window goes to done/ unsent, outcome ``duplicate_skipped``.
- **Diff summary** (batch-mode and diffing feeds): each SIS type the file holds compared with the feed's last
  imported file that held that type (:func:`diff_bases`, on the guard's own :func:`baseline`, so the guard and the
  diff always name the same earlier file; :func:`sisdaemon.sis_csv.compare_types`) as counts and a few ids per
  kind, a type never imported before named as such, and what Canvas would delete or set to the drop status
  (docs/canvas-api.md §1: batch mode deletes the courses, sections and enrollments of the term a file leaves out;
  diffing drops the rows of the data set's previous import that the new one lacks).

Nothing here does I/O but :func:`diff_bases`'s look whether an earlier file is still in done/ (``exists``, to be
replaced in tests): the history's records and the check's results come in, a job goes out.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sisdaemon import jobs
from sisdaemon.config import FeedSettings, ImportOptions
from sisdaemon.jobs import Job
from sisdaemon.sis_csv import Comparison

#: The types batch mode deletes when a file leaves them out (sis_batch.rb remove_previous_imports).
BATCH_DELETED_TYPES = ("course", "section", "enrollment")
#: Ids shown per kind in a one-line summary.
SHOWN = 3


def watched(options: ImportOptions) -> bool:
    """Whether a feed's imports delete what a file leaves out: batch mode (or multi-term batch mode), or a diffing
    identifier."""
    return bool(options.batch_mode or options.multi_term_batch_mode or options.diffing_data_set_identifier)


def guard_percent(feed: FeedSettings) -> int | None:
    """The feed's shrink guard threshold in percent, or None when the guard does not apply (not a batch-mode or
    diffing feed, or ``shrink_guard_percent`` 0 or null)."""
    return feed.shrink_guard_percent if watched(feed.import_) and feed.shrink_guard_percent else None


def needs_check(feed: FeedSettings) -> bool:
    """Whether a claimed file of ``feed`` is read before its upload: for the pre-flight check, the guard's row
    counts, the diff summary or the sha256 that finds duplicates."""
    return feed.preflight != "off" or watched(feed.import_) or feed.skip_duplicates_hours is not None


def imported(records: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """The history's records of files Canvas imported (in done/, with an import id), newest first."""
    for record in reversed(records):
        if record.get("folder") == "done" and record.get("import_id") is not None:
            yield record


def baseline(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per SIS type, the row count of the feed's last imported file that held that type: ``{type: {"rows",
    "file", "job_id", "import_id"}}`` (records without counts, from before counts were kept, give none)."""
    found: dict[str, dict[str, Any]] = {}
    for record in imported(records):
        for importer, count in (record.get("rows") or {}).items():
            if importer not in found:
                found[importer] = {
                    "rows": count,
                    "file": record.get("work_name"),
                    "job_id": record.get("job_id"),
                    "import_id": record.get("import_id"),
                }
    return found


def diff_bases(
    records: Sequence[Mapping[str, Any]],
    types: Collection[str] | None,
    done_dir: Path,
    *,
    exists: Callable[[Path], bool] = os.path.lexists,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Which earlier file each SIS type of a new file is compared with: the feed's last imported file that held that
    type, as the shrink guard's :func:`baseline` says (one function decides for both). ``types``: the types the new
    file holds (None: every type of the baseline, before the new file's types are known). Returns ``(compared,
    not_compared)``: ``compared`` type -> the baseline's entry (``{"rows", "file", "job_id", "import_id"}``, ``file``
    its name in ``done_dir``) for the types whose earlier file is still there; ``not_compared`` type -> why not (the
    feed's first file with that type; its earlier file no longer in done/)."""
    before = baseline(records)
    compared: dict[str, dict[str, Any]] = {}
    not_compared: dict[str, str] = {}
    for importer in sorted(before) if types is None else types:
        base = before.get(importer)
        if base is None:
            not_compared[importer] = f"first file with {importer} rows in this feed: nothing to compare with"
        elif not base["file"] or not exists(done_dir / str(base["file"])):
            not_compared[importer] = (
                f"the last imported file with {importer} rows, {base['file']}, is no longer in done/: not compared"
            )
        else:
            compared[importer] = base
    return compared, not_compared


def base_paths(compared: Mapping[str, Mapping[str, Any]], done_dir: Path) -> dict[str, Path]:
    """:func:`diff_bases`'s ``compared`` as type -> the earlier file's path in ``done_dir``."""
    return {importer: done_dir / str(base["file"]) for importer, base in compared.items()}


def shrinkage(
    before: Mapping[str, Mapping[str, Any]], rows: Mapping[str, int], types: Sequence[str], percent: int
) -> list[dict[str, Any]]:
    """The types of ``types`` (those the new file holds; a type it leaves out is not touched by Canvas) whose count
    in ``rows`` fell by more than ``percent`` from ``before`` (:func:`baseline`): ``[{"type", "before", "after",
    "fall_percent", "file", "import_id"}]``."""
    shrunk = []
    for importer in types:
        base = before.get(importer)
        if base is None or not base["rows"]:
            continue
        old, new = int(base["rows"]), int(rows.get(importer, 0))
        if (old - new) * 100 > percent * old:
            shrunk.append(
                {
                    "type": importer,
                    "before": old,
                    "after": new,
                    "fall_percent": round((old - new) * 100 / old, 1),
                    "file": base["file"],
                    "import_id": base["import_id"],
                }
            )
    return shrunk


def duplicate_of(
    records: Sequence[Mapping[str, Any]], sha256: str | None, now: float, hours: float | None
) -> Mapping[str, Any] | None:
    """The feed's import of a file with this ``sha256`` that finished within ``hours`` before ``now`` (seconds since
    the epoch), newest first, or None."""
    if sha256 is None or hours is None:
        return None
    for record in imported(records):
        finished = record.get("finished_at")
        if finished is not None and now - float(finished) > hours * 3600:
            return None  # newest first: the rest are older still
        if record.get("sha256") == sha256:
            return record
    return None


def drop_status(importer: str, options: ImportOptions) -> str:
    """The status Canvas gives a row a file leaves out: enrollments ``diffing_drop_status`` /
    ``batch_mode_enrollment_drop_status``, users ``diffing_user_remove_status``, else ``deleted``."""
    if importer == "enrollment":
        chosen = options.diffing_drop_status if options.diffing_data_set_identifier else None
        return chosen or options.batch_mode_enrollment_drop_status or "deleted"
    if importer == "user" and options.diffing_data_set_identifier:
        return options.diffing_user_remove_status or "deleted"
    return "deleted"


def canvas_would(comparison: Comparison, options: ImportOptions) -> dict[str, dict[str, Any]]:
    """What Canvas would delete or set to the drop status, per type: ``{type: {"rows", "status", "examples"}}``.
    Diffing: the removed rows of each type both files hold in one CSV with the same columns (else Canvas applies
    the file whole; diff_generator.rb). Batch mode: the removed courses, sections and enrollments of the types the
    new file holds (Canvas deletes every SIS object of those types in the term the file leaves out, so this is the
    least it deletes)."""
    result: dict[str, dict[str, Any]] = {}
    diffing = options.diffing_data_set_identifier is not None and not options.diffing_remaster_data_set
    batch = bool(options.batch_mode or options.multi_term_batch_mode)
    for importer, diff in comparison.types.items():
        if not diff.removed:
            continue
        if diffing and (diff.csvs != [1, 1] or diff.headers_differ):
            continue
        if batch and (importer not in BATCH_DELETED_TYPES or not diff.csvs[1]):
            continue
        if diffing or batch:
            status = drop_status(importer, options)
            result[importer] = {"rows": diff.removed, "status": status, "examples": diff.examples.get("removed", [])}
    return result


def diff_summary(
    comparison: Comparison | None,
    compared: Mapping[str, Mapping[str, Any]],
    not_compared: Mapping[str, str],
    options: ImportOptions,
    note: str | None = None,
) -> dict[str, Any]:
    """The sidecar's ``diff``: ``{"against": [{"file", "job_id", "import_id", "types"}], "types": {type: {"against",
    "before", "after", "added", "removed", "changed", "examples", ...}}, "not_compared": {type: why},
    "canvas_would": canvas_would(...), "problems", "note"}``. ``compared``: type -> the earlier file's entry
    (:func:`diff_bases`; ``{"file"}`` at least) that type was compared with; ``against`` lists each earlier file
    once with its types. ``canvas_would`` is given only when a type was compared (never from a comparison of
    unlike files)."""
    summary: dict[str, Any] = {"against": []}
    if comparison is not None:
        files: dict[str, dict[str, Any]] = {}
        types: dict[str, Any] = {}
        for name, diff in comparison.types.items():
            base = compared.get(name) or {"file": diff.against}
            shown = {key: base.get(key) for key in ("file", "job_id", "import_id")}
            item = files.setdefault(str(base.get("file")), shown | {"types": []})
            item["types"].append(name)
            types[name] = {"against": base.get("file")} | {
                key: value
                for key, value in diff.as_dict().items()
                if key in ("key", "before", "after", "added", "removed", "changed", "examples", "headers_differ")
            }
        summary["against"] = list(files.values())
        summary["types"] = types
        if comparison.types:
            summary["canvas_would"] = canvas_would(comparison, options)
        if comparison.problems:
            summary["problems"] = list(comparison.problems)
    left_out = {**not_compared, **(comparison.left_out if comparison is not None else {})}
    if left_out:
        summary["not_compared"] = left_out
    if note:
        summary["note"] = note
    return summary


def summary_line(summary: Mapping[str, Any]) -> str:
    """The diff summary in one line for people (the shrink guard's reason, the journal): per earlier file the types
    compared with it, then the types not compared and why."""
    parts = []
    for base in summary.get("against") or []:
        shown = []
        for name in base["types"]:
            diff = summary["types"][name]
            text = f"{name} {diff['before']} -> {diff['after']} rows"
            if diff.get("key"):
                text += f" ({diff['added']} added, {diff['removed']} removed, {diff['changed']} changed"
                removed = diff.get("examples", {}).get("removed", [])[:SHOWN]
                text += f"; removed e.g. {', '.join(removed)})" if removed else ")"
            shown.append(text)
        parts.append(f"since {base['file']}: " + "; ".join(shown))
    would = summary.get("canvas_would") or {}
    if would:
        parts.append(
            "Canvas would set "
            + ", ".join(f"{item['rows']} {name} row(s) to {item['status']}" for name, item in would.items())
        )
    parts += [f"{name}: {why}" for name, why in (summary.get("not_compared") or {}).items()]
    if not parts:
        return str(summary.get("note") or "no comparison")
    return "; ".join(parts)


def decide(
    job: Job,
    feed: FeedSettings,
    records: Sequence[Mapping[str, Any]],
    *,
    diff: Mapping[str, Any] | None,
    now: float,
) -> Job:
    """A claimed, checked job (``job.scan`` and ``job.sha256`` set) once its feed's history is consulted: skipped as
    a duplicate (:func:`jobs.skip_duplicate`), held by the shrink guard (:func:`jobs.reject`, ``shrink_guard``), or
    let through with the guard's findings (``job.guard``) and ``diff`` kept for its sidecar."""
    job = dataclasses.replace(job, diff=dict(diff) if diff is not None else None)
    earlier = duplicate_of(records, job.sha256, now, feed.skip_duplicates_hours)
    if earlier is not None:
        of = {key: earlier.get(key) for key in ("job_id", "import_id", "work_name", "finished_at")}
        reason = (
            f"the same content (sha256) as {earlier.get('work_name')}, imported as import {earlier.get('import_id')} "
            f"at {jobs.iso(earlier.get('finished_at'))}, within skip_duplicates_hours "
            f"({feed.skip_duplicates_hours:g}): not sent"
        )
        return jobs.skip_duplicate(job, of, reason, now=now)
    if not watched(feed.import_):
        return job
    scan = job.scan or {}
    rows, types = dict(scan.get("rows") or {}), list(scan.get("types") or [])
    percent = guard_percent(feed)
    before = baseline(records)
    findings: dict[str, Any] = {
        "percent": percent,
        "rows": rows,
        "baseline": {name: base["rows"] for name, base in before.items() if name in types},
    }
    if percent is None:
        findings["note"] = "the shrink guard is off for this feed (shrink_guard_percent 0 or null)"
        return dataclasses.replace(job, guard=findings)
    if not types:
        findings["note"] = "the check recognised no SIS CSV in the file: nothing to compare"
        return dataclasses.replace(job, guard=findings)
    if not any(name in before for name in types):
        findings["note"] = "no baseline: the feed's first imported file with these types; it passes"
        return dataclasses.replace(job, guard=findings)
    shrunk = shrinkage(before, rows, types, percent)
    findings["shrunk"] = shrunk
    if not shrunk:
        return dataclasses.replace(job, guard=findings)
    if job.released_by:
        findings["released_by"] = dict(job.released_by)
        return dataclasses.replace(job, guard=findings)
    falls = "; ".join(
        f"{item['type']} rows fell from {item['before']} to {item['after']} ({item['fall_percent']:g}% > {percent}%)"
        for item in shrunk
    )
    reason = f"shrink guard: {falls} since {shrunk[0]['file']} (import {shrunk[0]['import_id']}); held, not sent"
    if diff is not None:
        reason += f"; diff {summary_line(diff)}"
    reason += "; if this is meant, release it with `sisdaemon retry --force <this file>`"
    return jobs.reject(dataclasses.replace(job, guard=findings), "shrink_guard", reason, now=now)
