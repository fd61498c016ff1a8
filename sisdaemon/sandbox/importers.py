"""The sandbox's importers: one `apply_*` function per SIS CSV type, each applying one row to the World.

Each takes the World, one row that passed sisdaemon.sis_csv.row_problem and the ImportContext, and either
changes the world and returns None, or returns the warning Canvas gives for it (the row is skipped). Messages
come from lib/sis/*_importer.rb and the specs in canvas-lms-specs/expected_messages.json; those marked
*inferred* were not found there. The caller holds the store lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sisdaemon import sis_csv
from sisdaemon.sandbox.world import ImportContext, Item, Row, World

Apply = Callable[[World, Row, ImportContext], str | None]
"""An importer: applies one row to the world; returns None, or the warning for a skipped row."""


def apply_account(world: World, row: Row, ctx: ImportContext) -> str | None:
    account_id = str(row["account_id"])
    parent = row.get("parent_account_id") or None
    if parent is not None and world.get("Account", parent) is None:
        return f"Parent account didn't exist for {account_id}"
    status = str(row["status"]).lower()
    world.put("Account", account_id, status, ctx, {"name": row.get("name"), "parent": parent})
    return None


def apply_term(world: World, row: Row, ctx: ImportContext) -> str | None:
    fields = {"name": row.get("name"), "integration_id": row.get("integration_id") or None}
    world.put("EnrollmentTerm", str(row["term_id"]), str(row["status"]).lower(), ctx, fields)
    return None


def apply_abstract_course(world: World, row: Row, ctx: ImportContext) -> str | None:
    world.put("AbstractCourse", str(row["abstract_course_id"]), str(row["status"]).lower(), ctx)
    return None


def apply_course(world: World, row: Row, ctx: ImportContext) -> str | None:
    course_id = str(row["course_id"])
    account_id = row.get("account_id") or None
    if account_id is not None and world.get("Account", account_id) is None:
        return f'Account not found "{account_id}" for course {course_id}'
    term = world.active("EnrollmentTerm", row.get("term_id") or None)
    status = str(row["status"]).lower()
    if status in {"active", "published", "unpublished"}:
        status = "active"
    fields: dict[str, Any] = {"account": account_id, "term_id": term.canvas_id if term else None}
    fields["name"] = row.get("long_name")
    world.put("Course", course_id, status, ctx, fields)
    return None


def apply_section(world: World, row: Row, ctx: ImportContext) -> str | None:
    section_id, course_id = str(row["section_id"]), str(row["course_id"])
    if world.get("Course", course_id) is None:
        return f"Section {section_id} references course {course_id} which doesn't exist"
    world.put("CourseSection", section_id, str(row["status"]).lower(), ctx, {"course": course_id})
    return None


def apply_xlist(world: World, row: Row, ctx: ImportContext) -> str | None:
    section = world.get("CourseSection", row.get("section_id"))
    if section is None:
        return f"A cross-listing referenced a non-existent section {row.get('section_id')}"  # inferred
    xlist_course_id = str(row["xlist_course_id"])
    status = str(row["status"]).lower()
    if status == "active":
        if world.get("Course", xlist_course_id) is None:
            original = world.get("Course", section.fields.get("course"))
            fields = dict(original.fields) if original else {}
            world.put("Course", xlist_course_id, "active", ctx, fields)
        section.fields.setdefault("nonxlist_course", section.fields.get("course"))
        section.fields["course"] = xlist_course_id
    elif "nonxlist_course" in section.fields:
        section.fields["course"] = section.fields.pop("nonxlist_course")
    section.batch_id = ctx.batch_id
    return None


def already_claimed(holder: str, user_id: str) -> str:
    """The warning for a login another user holds, in today's wording (lib/sis/user_importer.rb; the older specs'
    "user X has already claimed Y's requested login information, skipping" is gone; docs/canvas-api.md §3)."""
    return (
        f"An existing Canvas user with the SIS ID {holder} has already claimed {user_id}'s user_id requested login "
        "information, skipping"
    )


def apply_user(world: World, row: Row, ctx: ImportContext) -> str | None:
    user_id, login_id = str(row["user_id"]), str(row["login_id"])
    holder = world.logins.get(login_id.lower())
    if holder is not None and holder != user_id:
        if not ctx.options.get("update_sis_id_if_login_claimed"):
            # user_importer_spec "should not allow a secondary user account with the same login id."
            return already_claimed(holder, user_id)
        claimed = world.items["Pseudonym"].pop(holder)
        claimed.sis_id = user_id
        world.items["Pseudonym"][user_id] = claimed
    existing = world.get("Pseudonym", user_id)
    if existing is not None:
        old_login = str(existing.fields.get("login_id", "")).lower()
        if world.logins.get(old_login) == user_id:
            del world.logins[old_login]
    status = str(row["status"]).lower()
    fields = {"login_id": login_id, "integration_id": row.get("integration_id") or None}
    world.put("Pseudonym", user_id, status, ctx, fields)
    world.logins[login_id.lower()] = user_id
    if row.get("integration_id"):
        world.user_integration_ids[str(row["integration_id"])] = user_id
    if row.get("email"):
        world.put("CommunicationChannel", user_id, "deleted" if status == "deleted" else "active", ctx)
    return None


def apply_login(world: World, row: Row, ctx: ImportContext) -> str | None:
    existing = row.get("existing_user_id") or None
    if existing is not None and world.get("Pseudonym", existing) is None:
        return f"Could not find the existing user for login with SIS ID {row.get('user_id')}"  # inferred
    login_id = str(row["login_id"])
    holder = world.logins.get(login_id.lower())
    if holder is not None and holder != row.get("user_id"):
        return already_claimed(holder, str(row.get("user_id")))
    world.put("Pseudonym", str(row["user_id"]), "active", ctx, {"login_id": login_id})
    world.logins[login_id.lower()] = str(row["user_id"])
    return None


def _find_user(world: World, user_id: str | None, integration_id: str | None) -> Item | None:
    if user_id:
        return world.active("Pseudonym", user_id)
    if integration_id:
        return world.active("Pseudonym", world.user_integration_ids.get(integration_id))
    return None


def apply_enrollment(world: World, row: Row, ctx: ImportContext) -> str | None:
    role_problem = sis_csv.check_enrollment_role(row)
    if role_problem:
        return role_problem
    course_id, section_id = row.get("course_id") or None, row.get("section_id") or None
    user_id, user_integration_id = row.get("user_id") or None, row.get("user_integration_id") or None
    course = world.get("Course", course_id) if course_id else None
    section = world.get("CourseSection", section_id) if section_id else None
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
    user = _find_user(world, user_id, user_integration_id)
    if user is None:
        return (
            f"User not found for enrollment (User ID: {user_id or ''}, Course ID: {course_id or ''}, "
            f"Section ID: {section_id or ''})"
        )
    associated = row.get("associated_user_id") or None
    if associated is not None and world.active("Pseudonym", associated) is None:
        return f"An enrollment referenced a non-existent associated user {associated}"
    if course is None and section is not None:
        course = world.get("Course", section.fields.get("course"))
    course_sis = course.sis_id if course else ""
    role = row.get("role") or row.get("role_id") or ""
    key = f"{course_sis}|{section_id or ''}|{user.sis_id}|{role}"
    status = str(row["status"]).lower()
    if status == "deleted_last_completed":
        status = "deleted"
    world.put("Enrollment", key, status, ctx, {"course": course_sis, "section": section_id, "user": user.sis_id})
    return None


def apply_admin(world: World, row: Row, ctx: ImportContext) -> str | None:
    user_id = str(row["user_id"])
    if world.get("Pseudonym", user_id) is None:
        return f"Invalid or unknown user_id '{user_id}' for admin"  # inferred
    account_id = row.get("account_id") or None
    if account_id is not None and world.get("Account", account_id) is None:
        return f"Invalid account_id given for admin {user_id}"  # inferred
    key = f"{account_id or ''}|{user_id}|{row.get('role') or row.get('role_id')}"
    world.put("AccountUser", key, str(row["status"]).lower(), ctx)
    return None


def apply_group_category(world: World, row: Row, ctx: ImportContext) -> str | None:
    world.put("GroupCategory", str(row["group_category_id"]), str(row["status"]).lower(), ctx)
    return None


def apply_differentiation_tag_set(world: World, row: Row, ctx: ImportContext) -> str | None:
    if world.get("Course", row.get("course_id")) is None:
        return f"Course with sis id {row.get('course_id')} not found"  # inferred
    world.put("GroupCategory", "tagset:" + str(row["tag_set_id"]), str(row["status"]).lower(), ctx)
    return None


def apply_group(world: World, row: Row, ctx: ImportContext) -> str | None:
    status = str(row["status"]).lower()
    world.put("Group", str(row["group_id"]), "deleted" if status == "deleted" else "available", ctx)
    return None


def apply_differentiation_tag(world: World, row: Row, ctx: ImportContext) -> str | None:
    status = str(row["status"]).lower()
    world.put("Group", "tag:" + str(row["tag_id"]), "deleted" if status == "deleted" else "available", ctx)
    return None


def _membership(world: World, group_key: str, label: str, row: Row, ctx: ImportContext) -> str | None:
    if world.get("Group", group_key) is None:
        return f"Group {label} didn't exist for user {row.get('user_id')}"  # inferred
    if world.active("Pseudonym", row.get("user_id")) is None:
        return f"User {row.get('user_id')} didn't exist for group {label}"  # inferred
    status = str(row["status"]).lower()
    world.put("GroupMembership", f"{group_key}|{row.get('user_id')}", status, ctx)
    return None


def apply_group_membership(world: World, row: Row, ctx: ImportContext) -> str | None:
    return _membership(world, str(row["group_id"]), str(row["group_id"]), row, ctx)


def apply_differentiation_tag_membership(world: World, row: Row, ctx: ImportContext) -> str | None:
    return _membership(world, "tag:" + str(row["tag_id"]), str(row["tag_id"]), row, ctx)


def apply_grade_publishing_results(world: World, row: Row, ctx: ImportContext) -> str | None:
    return None


def apply_user_observer(world: World, row: Row, ctx: ImportContext) -> str | None:
    observer_id, student_id = str(row["observer_id"]), str(row["student_id"])
    if world.active("Pseudonym", observer_id) is None:
        return f"An observer referenced a non-existent user {observer_id}"
    if world.active("Pseudonym", student_id) is None:
        return f"A student referenced a non-existent user {student_id}"
    if observer_id == student_id:
        return f"Can't observe yourself user {observer_id}"
    key = f"{observer_id}|{student_id}"
    status = str(row["status"]).lower()
    if status == "deleted" and world.active("UserObserver", key) is None:
        return f"Can't delete a non-existent observer for observer: {observer_id}, student: {student_id}"
    world.put("UserObserver", key, status, ctx)
    return None


def apply_change_sis_id(world: World, row: Row, ctx: ImportContext) -> str | None:
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
    item = world.items[kind].pop(old_id, None)
    if item is None:
        # inferred from change_sis_id_importer.rb
        return f"An old_id, '{old_id}', referenced a non-existent {row.get('type')} and was not changed to '{new_id}'"
    item.sis_id = new_id
    world.items[kind][new_id] = item
    return None


_IMPORTERS: dict[str, Apply] = {
    "change_sis_id": apply_change_sis_id,
    "account": apply_account,
    "term": apply_term,
    "abstract_course": apply_abstract_course,
    "course": apply_course,
    "section": apply_section,
    "xlist": apply_xlist,
    "user": apply_user,
    "login": apply_login,
    "enrollment": apply_enrollment,
    "admin": apply_admin,
    "group_category": apply_group_category,
    "differentiation_tag_set": apply_differentiation_tag_set,
    "group": apply_group,
    "differentiation_tag": apply_differentiation_tag,
    "group_membership": apply_group_membership,
    "differentiation_tag_membership": apply_differentiation_tag_membership,
    "grade_publishing_results": apply_grade_publishing_results,
    "user_observer": apply_user_observer,
}


def importer(name: str) -> Apply:
    """The apply function for an importer name from sis_csv.IMPORTERS."""
    return _IMPORTERS[name]
