"""What imports leave behind in the sandbox's Canvas: accounts, terms, users, courses, sections, enrollments,
observers, groups and admins, so that later imports get Canvas's cross-file messages ("User not found for
enrollment ...") and batch mode has something to delete.

The World holds the objects (Items), looks them up and changes their state, counting each change in the
import's Statistics and its rollback list. The per-type importers that change it row by row are in
sisdaemon.sandbox.importers. The caller holds the store lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, str | None]

# data.statistics types (sis_batch.rb statistics / SisBatchRollBackData::RESTORE_ORDER).
STAT_TYPES: tuple[str, ...] = (
    "Account",
    "EnrollmentTerm",
    "AbstractCourse",
    "Course",
    "CourseSection",
    "GroupCategory",
    "Group",
    "Pseudonym",
    "CommunicationChannel",
    "Enrollment",
    "GroupMembership",
    "UserObserver",
    "AccountUser",
)


@dataclass
class Item:
    """One SIS object: `kind` (a STAT_TYPES name), `sis_id`, Canvas `canvas_id`, `status` ("active",
    "deleted", ...), the import (`batch_id`) that last touched it, and kind-specific `fields`."""

    kind: str
    sis_id: str
    canvas_id: int
    status: str
    batch_id: int | None
    fields: dict[str, Any] = field(default_factory=dict)


class Statistics:
    """data.statistics of one import: per type created/restored/deleted (+ concluded, deactivated) and
    total_state_changes (sis_batch.rb statistics)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_type: dict[str, dict[str, int]] = {}
        for kind in STAT_TYPES:
            entry = {"created": 0, "restored": 0, "deleted": 0}
            if kind in {"Course", "Enrollment"}:
                entry["concluded"] = 0
            if kind == "Enrollment":
                entry["deactivated"] = 0
            self.by_type[kind] = entry

    def record(self, kind: str, before: str | None, after: str) -> None:
        """Count a change of one object's state from `before` (None: it did not exist) to `after`."""
        if before == after:
            return
        self.total += 1
        entry = self.by_type[kind]
        if after == "deleted":
            entry["deleted"] += 1
        elif before is None:
            entry["created"] += 1
        elif before == "deleted":
            entry["restored"] += 1
        if after == "completed" and "concluded" in entry:
            entry["concluded"] += 1
        if after == "inactive" and "deactivated" in entry:
            entry["deactivated"] += 1

    def as_json(self) -> dict[str, Any]:
        """`{"total_state_changes": N, "Account": {...}, ...}`."""
        json: dict[str, Any] = {"total_state_changes": self.total}
        for kind in STAT_TYPES:
            json[kind] = dict(self.by_type[kind])
        return json


@dataclass
class ImportContext:
    """What an importer needs to know about the import that runs it."""

    batch_id: int
    options: Mapping[str, Any]
    stats: Statistics
    rollback: list[tuple[str, str, Any]]


class World:
    """The Canvas data of one root account (`root_account_id`), with Canvas ids allocated as objects appear.

    `terms` may name sis_term_ids that exist as active terms from the start; Canvas's "Default Term" is id 1.
    """

    def __init__(
        self, root_account_id: int, root_account_name: str = "Sandbox University", terms: list[str] | None = None
    ) -> None:
        self.root_account_id = root_account_id
        self.root_account_name = root_account_name
        self._ids: dict[str, int] = {}
        self.items: dict[str, dict[str, Item]] = {kind: {} for kind in STAT_TYPES}
        self.logins: dict[str, str] = {}  # login_id (lowercase) -> user sis id
        self.user_integration_ids: dict[str, str] = {}
        self.default_term_id = 1
        self._ids["EnrollmentTerm"] = 1
        self.term_names: dict[int, str] = {1: "Default Term"}
        for sis_id in terms or []:
            self.put("EnrollmentTerm", sis_id, "active", None, {"name": sis_id})

    # ---- lookups -----------------------------------------------------------------------------------------

    def _next_id(self, kind: str) -> int:
        start = self.root_account_id if kind == "Account" else 0
        value = max(self._ids.get(kind, 0), start) + 1
        self._ids[kind] = value
        return value

    def get(self, kind: str, sis_id: str | None) -> Item | None:
        """The object of `kind` with this SIS id, any status, or None."""
        if sis_id is None:
            return None
        return self.items[kind].get(sis_id)

    def active(self, kind: str, sis_id: str | None) -> Item | None:
        """The object of `kind` with this SIS id unless it is missing or deleted."""
        item = self.get(kind, sis_id)
        return item if item is not None and item.status != "deleted" else None

    def find_term(self, reference: str) -> int | None:
        """Resolve a batch_mode_term_id among active terms: a Canvas id, `sis_term_id:X` or
        `sis_integration_id:X` (api_find, lib/api.rb). None when not found."""
        terms = [item for item in self.items["EnrollmentTerm"].values() if item.status == "active"]
        if reference.startswith("sis_term_id:"):
            wanted = reference.split(":", 1)[1]
            return next((t.canvas_id for t in terms if t.sis_id == wanted), None)
        if reference.startswith("sis_integration_id:"):
            wanted = reference.split(":", 1)[1]
            return next((t.canvas_id for t in terms if t.fields.get("integration_id") == wanted), None)
        if reference.isdigit():
            number = int(reference)
            if number == self.default_term_id:
                return number
            return next((t.canvas_id for t in terms if t.canvas_id == number), None)
        return None

    def term_json(self, reference: str) -> dict[str, Any] | None:
        """``GET /api/v1/accounts/:id/terms/:id`` (terms_api_controller.rb#show, api_find: a Canvas id or
        ``sis_term_id:X``): the active term's JSON, or None (a 404)."""
        canvas_id = self.find_term(reference)
        if canvas_id is None:
            return None
        item = next((t for t in self.items["EnrollmentTerm"].values() if t.canvas_id == canvas_id), None)
        return {
            "id": canvas_id,
            "name": item.fields.get("name", item.sis_id) if item else "Default Term",
            "sis_term_id": item.sis_id if item else None,
            "workflow_state": "active",
        }

    def find_account(self, reference: str) -> int | None:
        """Resolve an `:account_id` path segment: a Canvas id, `self` (the root) or `sis_account_id:X`."""
        if reference == "self":
            return self.root_account_id
        if reference.startswith("sis_account_id:"):
            item = self.active("Account", reference.split(":", 1)[1])
            return item.canvas_id if item else None
        if reference.isdigit():
            number = int(reference)
            if number == self.root_account_id:
                return number
            if any(a.canvas_id == number and a.status != "deleted" for a in self.items["Account"].values()):
                return number
        return None

    def account_json(self, canvas_id: int) -> dict[str, Any]:
        """Account JSON (lib/api/v1/account.rb) for the root or a sub-account."""
        sub = next((a for a in self.items["Account"].values() if a.canvas_id == canvas_id), None)
        parent: int | None = None
        if sub is not None:
            parent_item = self.get("Account", sub.fields.get("parent"))
            parent = parent_item.canvas_id if parent_item else self.root_account_id
        return {
            "id": canvas_id,
            "name": sub.fields.get("name") if sub else self.root_account_name,
            "workflow_state": "active",
            "parent_account_id": parent,
            "root_account_id": None if sub is None else self.root_account_id,
            "uuid": f"sandbox{canvas_id:08d}",
            "default_storage_quota_mb": 500,
            "default_user_storage_quota_mb": 50,
            "default_group_storage_quota_mb": 50,
            "default_time_zone": "Etc/UTC",
            "sis_account_id": sub.sis_id if sub else None,
            "integration_id": sub.fields.get("integration_id") if sub else None,
            "sis_import_id": sub.batch_id if sub else None,
            "lti_guid": f"sandbox{canvas_id:08d}:canvas-lms",
        }

    def is_root(self, canvas_id: int) -> bool:
        """True for the root account (SIS imports run only there)."""
        return canvas_id == self.root_account_id

    # ---- changes -----------------------------------------------------------------------------------------

    def put(
        self,
        kind: str,
        sis_id: str,
        status: str,
        context: ImportContext | None,
        fields: dict[str, Any] | None = None,
    ) -> Item:
        """Create or update the object of `kind` with this SIS id; with a `context`, count the change in its
        statistics and rollback (the object takes the import's batch id). `fields` are merged in."""
        item = self.items[kind].get(sis_id)
        before = item.status if item else None
        batch_id = context.batch_id if context else None
        if item is None:
            item = Item(kind, sis_id, self._next_id(kind), status, batch_id, dict(fields or {}))
            self.items[kind][sis_id] = item
        else:
            item.status = status
            item.batch_id = batch_id
            item.fields.update(fields or {})
        if context is not None:
            context.stats.record(kind, before, status)
            if before != status:
                context.rollback.append((kind, sis_id, before))
        return item

    def set_status(self, item: Item, status: str, context: ImportContext) -> None:
        """Change an object's status for batch-mode cleanup (keeps its batch id)."""
        before = item.status
        item.status = status
        context.stats.record(item.kind, before, status)
        if before != status:
            context.rollback.append((item.kind, item.sis_id, before))

    def restore(self, rollback: list[tuple[str, str, Any]]) -> int:
        """Undo recorded state changes, newest first (restore_states); returns how many were restored."""
        restored = 0
        for kind, sis_id, before in reversed(rollback):
            item = self.items[kind].get(sis_id)
            if item is None:
                continue
            item.status = before if before is not None else "deleted"
            restored += 1
        return restored

    def course_term(self, course: Item) -> int:
        """The Canvas id of a course's term."""
        return int(course.fields.get("term_id") or self.default_term_id)
