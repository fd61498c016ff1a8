"""What imports leave behind in the sandbox's Canvas: accounts, terms, users, courses, sections, enrollments,
observers, groups and admins, so that later imports get Canvas's cross-file messages ("User not found for
enrollment ...") and batch mode has something to delete.

Each `apply_*` function takes one row that passed sisdaemon.sis_csv.row_problem and either changes the world
and returns None, or returns the warning Canvas gives for it (the row is skipped). Messages come from
lib/sis/*_importer.rb and the specs in canvas-lms-specs/expected_messages.json; those marked *inferred* were
not found there. The caller holds the store lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sisdaemon import sis_csv

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
            self._put("EnrollmentTerm", sis_id, "active", None, {"name": sis_id})

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

    def _put(
        self,
        kind: str,
        sis_id: str,
        status: str,
        context: ImportContext | None,
        fields: dict[str, Any] | None = None,
    ) -> Item:
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

    # ---- importers (one row each) ------------------------------------------------------------------------

    def apply_account(self, row: Row, ctx: ImportContext) -> str | None:
        account_id = str(row["account_id"])
        parent = row.get("parent_account_id") or None
        if parent is not None and self.get("Account", parent) is None:
            return f"Parent account didn't exist for {account_id}"
        status = str(row["status"]).lower()
        self._put("Account", account_id, status, ctx, {"name": row.get("name"), "parent": parent})
        return None

    def apply_term(self, row: Row, ctx: ImportContext) -> str | None:
        fields = {"name": row.get("name"), "integration_id": row.get("integration_id") or None}
        self._put("EnrollmentTerm", str(row["term_id"]), str(row["status"]).lower(), ctx, fields)
        return None

    def apply_abstract_course(self, row: Row, ctx: ImportContext) -> str | None:
        self._put("AbstractCourse", str(row["abstract_course_id"]), str(row["status"]).lower(), ctx)
        return None

    def apply_course(self, row: Row, ctx: ImportContext) -> str | None:
        course_id = str(row["course_id"])
        account_id = row.get("account_id") or None
        if account_id is not None and self.get("Account", account_id) is None:
            return f'Account not found "{account_id}" for course {course_id}'
        term = self.active("EnrollmentTerm", row.get("term_id") or None)
        status = str(row["status"]).lower()
        if status in {"active", "published", "unpublished"}:
            status = "active"
        fields: dict[str, Any] = {"account": account_id, "term_id": term.canvas_id if term else None}
        fields["name"] = row.get("long_name")
        self._put("Course", course_id, status, ctx, fields)
        return None

    def apply_section(self, row: Row, ctx: ImportContext) -> str | None:
        section_id, course_id = str(row["section_id"]), str(row["course_id"])
        if self.get("Course", course_id) is None:
            return f"Section {section_id} references course {course_id} which doesn't exist"
        self._put("CourseSection", section_id, str(row["status"]).lower(), ctx, {"course": course_id})
        return None

    def apply_xlist(self, row: Row, ctx: ImportContext) -> str | None:
        section = self.get("CourseSection", row.get("section_id"))
        if section is None:
            return f"A cross-listing referenced a non-existent section {row.get('section_id')}"  # inferred
        xlist_course_id = str(row["xlist_course_id"])
        status = str(row["status"]).lower()
        if status == "active":
            if self.get("Course", xlist_course_id) is None:
                original = self.get("Course", section.fields.get("course"))
                fields = dict(original.fields) if original else {}
                self._put("Course", xlist_course_id, "active", ctx, fields)
            section.fields.setdefault("nonxlist_course", section.fields.get("course"))
            section.fields["course"] = xlist_course_id
        elif "nonxlist_course" in section.fields:
            section.fields["course"] = section.fields.pop("nonxlist_course")
        section.batch_id = ctx.batch_id
        return None

    def apply_user(self, row: Row, ctx: ImportContext) -> str | None:
        user_id, login_id = str(row["user_id"]), str(row["login_id"])
        holder = self.logins.get(login_id.lower())
        if holder is not None and holder != user_id:
            if not ctx.options.get("update_sis_id_if_login_claimed"):
                # user_importer_spec "should not allow a secondary user account with the same login id."
                return f"user {holder} has already claimed {user_id}'s requested login information, skipping"
            claimed = self.items["Pseudonym"].pop(holder)
            claimed.sis_id = user_id
            self.items["Pseudonym"][user_id] = claimed
        existing = self.get("Pseudonym", user_id)
        if existing is not None:
            old_login = str(existing.fields.get("login_id", "")).lower()
            if self.logins.get(old_login) == user_id:
                del self.logins[old_login]
        status = str(row["status"]).lower()
        fields = {"login_id": login_id, "integration_id": row.get("integration_id") or None}
        self._put("Pseudonym", user_id, status, ctx, fields)
        self.logins[login_id.lower()] = user_id
        if row.get("integration_id"):
            self.user_integration_ids[str(row["integration_id"])] = user_id
        if row.get("email"):
            self._put("CommunicationChannel", user_id, "deleted" if status == "deleted" else "active", ctx)
        return None

    def apply_login(self, row: Row, ctx: ImportContext) -> str | None:
        existing = row.get("existing_user_id") or None
        if existing is not None and self.get("Pseudonym", existing) is None:
            return f"Could not find the existing user for login with SIS ID {row.get('user_id')}"  # inferred
        login_id = str(row["login_id"])
        holder = self.logins.get(login_id.lower())
        if holder is not None and holder != row.get("user_id"):
            return f"user {holder} has already claimed {row.get('user_id')}'s requested login information, skipping"
        self._put("Pseudonym", str(row["user_id"]), "active", ctx, {"login_id": login_id})
        self.logins[login_id.lower()] = str(row["user_id"])
        return None

    def _find_user(self, user_id: str | None, integration_id: str | None) -> Item | None:
        if user_id:
            return self.active("Pseudonym", user_id)
        if integration_id:
            return self.active("Pseudonym", self.user_integration_ids.get(integration_id))
        return None

    def apply_enrollment(self, row: Row, ctx: ImportContext) -> str | None:
        role_problem = sis_csv.check_enrollment_role(row)
        if role_problem:
            return role_problem
        course_id, section_id = row.get("course_id") or None, row.get("section_id") or None
        user_id, user_integration_id = row.get("user_id") or None, row.get("user_integration_id") or None
        course = self.get("Course", course_id) if course_id else None
        section = self.get("CourseSection", section_id) if section_id else None
        ids = f"(Course ID: {course_id or ''}, Section ID: {section_id or ''}, User ID: {user_id or ''})"
        if course is None and section is None:
            return f"Neither course nor section existed for user enrollment {ids}"
        if course_id and course is None:
            return f"An enrollment referenced a non-existent course {course_id}"
        if section_id and section is None:
            return f"An enrollment referenced a non-existent section {section_id}"
        if (
            course is not None
            and section is not None
            and course.sis_id not in (section.fields.get("course"), section.fields.get("nonxlist_course"))
        ):
            return (
                f"An enrollment listed a section ({section_id}) and a course ({course_id}) "
                f"that are unrelated for user ({user_id or user_integration_id or ''})"
            )
        user = self._find_user(user_id, user_integration_id)
        if user is None:
            return (
                f"User not found for enrollment (User ID: {user_id or ''}, Course ID: {course_id or ''}, "
                f"Section ID: {section_id or ''})"
            )
        associated = row.get("associated_user_id") or None
        if associated is not None and self.active("Pseudonym", associated) is None:
            return f"An enrollment referenced a non-existent associated user {associated}"
        if course is None and section is not None:
            course = self.get("Course", section.fields.get("course"))
        course_sis = course.sis_id if course else ""
        role = row.get("role") or row.get("role_id") or ""
        key = f"{course_sis}|{section_id or ''}|{user.sis_id}|{role}"
        status = str(row["status"]).lower()
        if status == "deleted_last_completed":
            status = "deleted"
        self._put("Enrollment", key, status, ctx, {"course": course_sis, "section": section_id, "user": user.sis_id})
        return None

    def apply_admin(self, row: Row, ctx: ImportContext) -> str | None:
        user_id = str(row["user_id"])
        if self.get("Pseudonym", user_id) is None:
            return f"Invalid or unknown user_id '{user_id}' for admin"  # inferred
        account_id = row.get("account_id") or None
        if account_id is not None and self.get("Account", account_id) is None:
            return f"Invalid account_id given for admin {user_id}"  # inferred
        key = f"{account_id or ''}|{user_id}|{row.get('role') or row.get('role_id')}"
        self._put("AccountUser", key, str(row["status"]).lower(), ctx)
        return None

    def apply_group_category(self, row: Row, ctx: ImportContext) -> str | None:
        self._put("GroupCategory", str(row["group_category_id"]), str(row["status"]).lower(), ctx)
        return None

    def apply_differentiation_tag_set(self, row: Row, ctx: ImportContext) -> str | None:
        if self.get("Course", row.get("course_id")) is None:
            return f"Course with sis id {row.get('course_id')} not found"  # inferred
        self._put("GroupCategory", "tagset:" + str(row["tag_set_id"]), str(row["status"]).lower(), ctx)
        return None

    def apply_group(self, row: Row, ctx: ImportContext) -> str | None:
        status = str(row["status"]).lower()
        self._put("Group", str(row["group_id"]), "deleted" if status == "deleted" else "available", ctx)
        return None

    def apply_differentiation_tag(self, row: Row, ctx: ImportContext) -> str | None:
        status = str(row["status"]).lower()
        self._put("Group", "tag:" + str(row["tag_id"]), "deleted" if status == "deleted" else "available", ctx)
        return None

    def _membership(self, group_key: str, label: str, row: Row, ctx: ImportContext) -> str | None:
        if self.get("Group", group_key) is None:
            return f"Group {label} didn't exist for user {row.get('user_id')}"  # inferred
        if self.active("Pseudonym", row.get("user_id")) is None:
            return f"User {row.get('user_id')} didn't exist for group {label}"  # inferred
        status = str(row["status"]).lower()
        self._put("GroupMembership", f"{group_key}|{row.get('user_id')}", status, ctx)
        return None

    def apply_group_membership(self, row: Row, ctx: ImportContext) -> str | None:
        return self._membership(str(row["group_id"]), str(row["group_id"]), row, ctx)

    def apply_differentiation_tag_membership(self, row: Row, ctx: ImportContext) -> str | None:
        return self._membership("tag:" + str(row["tag_id"]), str(row["tag_id"]), row, ctx)

    def apply_grade_publishing_results(self, row: Row, ctx: ImportContext) -> str | None:
        return None

    def apply_user_observer(self, row: Row, ctx: ImportContext) -> str | None:
        observer_id, student_id = str(row["observer_id"]), str(row["student_id"])
        if self.active("Pseudonym", observer_id) is None:
            return f"An observer referenced a non-existent user {observer_id}"
        if self.active("Pseudonym", student_id) is None:
            return f"A student referenced a non-existent user {student_id}"
        if observer_id == student_id:
            return f"Can't observe yourself user {observer_id}"
        key = f"{observer_id}|{student_id}"
        status = str(row["status"]).lower()
        if status == "deleted" and self.active("UserObserver", key) is None:
            return f"Can't delete a non-existent observer for observer: {observer_id}, student: {student_id}"
        self._put("UserObserver", key, status, ctx)
        return None

    def apply_change_sis_id(self, row: Row, ctx: ImportContext) -> str | None:
        kinds = {
            "account": "Account",
            "term": "EnrollmentTerm",
            "course": "Course",
            "section": "CourseSection",
            "group": "Group",
            "group_category": "GroupCategory",
            "user": "Pseudonym",
        }
        kind = kinds[str(row["type"]).lower()]
        old_id, new_id = row.get("old_id"), row.get("new_id")
        if not old_id or not new_id:
            return None  # integration id changes: nothing the sandbox tracks
        item = self.items[kind].pop(old_id, None)
        if item is None:
            # inferred from change_sis_id_importer.rb
            return (
                f"An old_id, '{old_id}', referenced a non-existent {row.get('type')} and was not changed to '{new_id}'"
            )
        item.sis_id = new_id
        self.items[kind][new_id] = item
        return None

    def importer(self, name: str) -> Callable[[Row, ImportContext], str | None]:
        """The apply function for an importer name from sis_csv.IMPORTERS."""
        function: Callable[[Row, ImportContext], str | None] = getattr(self, f"apply_{name}")
        return function
