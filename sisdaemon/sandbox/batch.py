"""Batch mode's clean-up and restore_states: what an import deletes from its terms when it ends, and how a
restore undoes an import's changes.

Sources: app/models/sis_batch.rb (remove_previous_imports, batch_mode_terms, term_*_scope, detect_changes,
detect_change_item, change_detected_message, remove_non_batch_*, restore_states_for_batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sisdaemon.sandbox.records import Progress, SisImport, utc_now
from sisdaemon.sandbox.world import ImportContext, Item, Statistics, World


def batch_terms(world: World, sis_import: SisImport) -> set[int] | None:
    """The Canvas ids of the terms batch mode cleans: the batch_mode_term, or with multi_term_batch_mode the
    terms this import supplied (None when it supplied none: sis_batch.rb batch_mode_terms)."""
    if sis_import.options.get("multi_term_batch_mode"):
        terms = {term.canvas_id for term in world.items["EnrollmentTerm"].values() if term.batch_id == sis_import.id}
        return terms or None
    return {sis_import.batch_mode_term_id} if sis_import.batch_mode_term_id is not None else set()


def cleanup_batch(world: World, sis_import: SisImport, notify: Callable[[], None], hold: Callable[[], None]) -> None:
    """Batch mode: delete the term's SIS courses, sections and enrollments this import did not include,
    unless a change_threshold is exceeded (sis_batch.rb remove_previous_imports, detect_change_item).

    The caller holds the store lock; `notify` wakes waiters, `hold` waits while the import is stuck in
    `cleanup_batch` (Sandbox.stick)."""
    supplied = [
        kind for kind in ("course", "section", "enrollment") if kind in sis_import.data.get("supplied_batches", [])
    ]
    if not supplied:
        return
    terms = batch_terms(world, sis_import)
    if terms is None:
        # batch_mode_terms: multi_term_batch_mode without a terms.csv aborts the batch.
        sis_import.workflow_state = "aborted"
        sis_import.add_error(None, "Terms not found. Terms must be included with multi_term_batch_mode")
        return
    sis_import.workflow_state = "cleanup_batch"
    sis_import.progress = 0
    sis_import.touch()
    notify()
    hold()
    if sis_import.workflow_state == "aborted":
        return  # aborted during the clean-up: fast_update_progress raises SisBatch::Aborted

    def course_in_terms(course_sis: str | None) -> bool:
        course = world.get("Course", course_sis)
        return course is not None and world.course_term(course) in terms

    scopes: dict[str, list[Item]] = {}
    totals: dict[str, int] = {}
    if "course" in supplied:
        in_term = [
            c
            for c in world.items["Course"].values()
            if c.status != "deleted" and c.batch_id is not None and course_in_terms(c.sis_id)
        ]
        scopes["courses"] = [c for c in in_term if c.batch_id != sis_import.id]
        totals["courses"] = len(in_term)
    if "section" in supplied:
        in_term = [
            s
            for s in world.items["CourseSection"].values()
            if s.status != "deleted" and s.batch_id is not None and course_in_terms(s.fields.get("course"))
        ]
        scopes["sections"] = [s for s in in_term if s.batch_id != sis_import.id]
        totals["sections"] = len(in_term)
    drop_option = sis_import.options.get("batch_mode_enrollment_drop_status")
    if "enrollment" in supplied:
        # term_enrollments_scope: active (not deleted) SIS enrollments of the terms, less those already in the
        # drop status, so an enrollment a previous batch completed is neither dropped again nor counted in the
        # change_threshold ratio.
        skipped = {"deleted", drop_option} if drop_option else {"deleted"}
        in_term = [
            e
            for e in world.items["Enrollment"].values()
            if e.status not in skipped and e.batch_id is not None and course_in_terms(e.fields.get("course"))
        ]
        scopes["enrollments"] = [e for e in in_term if e.batch_id != sis_import.id]
        totals["enrollments"] = len(in_term)
    threshold = sis_import.change_threshold
    for kind in ("courses", "sections", "enrollments"):
        if kind not in scopes or threshold is None or not totals[kind]:
            continue
        if len(scopes[kind]) / totals[kind] * 100 > threshold:
            sis_import.workflow_state = "aborted"
            sis_import.add_error(
                None,
                f"{len(scopes[kind])} {kind} would be deleted and exceeds the set threshold of {threshold}%",
            )
            return
    total = sum(len(items) for items in scopes.values()) or 1
    done = 0
    context = ImportContext(
        sis_import.id, sis_import.options, sis_import.statistics or Statistics(), sis_import.rollback
    )
    drop_status = drop_option or "deleted"
    counts = sis_import.data["counts"]
    for kind, key in (
        ("enrollments", "batch_enrollments_deleted"),
        ("sections", "batch_sections_deleted"),
        ("courses", "batch_courses_deleted"),
    ):
        if kind not in scopes:
            continue
        for item in scopes[kind]:
            status = drop_status if kind == "enrollments" else "deleted"
            world.set_status(item, status, context)
            done += 1
        if kind != "courses" or sis_import.options.get("multi_term_batch_mode"):
            # sis_batch.rb records batch_courses_deleted only in multi-term batch mode (audit against Canvas's
            # source); the sections and enrollments counts always.
            counts[key] = len(scopes[kind])
        sis_import.progress = min(100, round(done * 100 / total))
        sis_import.touch()


def restore_states(
    world: World,
    sis_import: SisImport,
    progress: Progress,
    *,
    undelete_only: bool,
    unconclude_only: bool,
    batch_mode: bool,
) -> None:
    """restore_states: undo the import's recorded changes, then `restored` (or `partially_restored` when a
    flag narrowed it) (sis_batch.rb restore_states_for_batch). The caller holds the store lock."""

    def current_status(entry: tuple[str, str, Any]) -> str | None:
        item = world.items[entry[0]].get(entry[1])
        return item.status if item else None

    progress.workflow_state = "running"
    rollback = sis_import.rollback
    if undelete_only:
        rollback = [entry for entry in rollback if current_status(entry) == "deleted"]
    if unconclude_only:
        rollback = [entry for entry in rollback if current_status(entry) == "completed"]
    restored = world.restore(rollback)
    stats = sis_import.data.setdefault("statistics", Statistics().as_json())
    for kind in stats:
        if isinstance(stats[kind], dict):
            stats[kind]["restored"] = sum(1 for entry in rollback if entry[0] == kind)
    partial = undelete_only or unconclude_only or batch_mode
    sis_import.workflow_state = "partially_restored" if partial else "restored"
    sis_import.touch()
    progress.workflow_state = "completed"
    progress.completion = 100.0
    progress.message = f"{restored} restored"
    progress.updated_at = utc_now()
