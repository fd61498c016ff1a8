"""Per-row checks that need no other data: what Canvas's CSV layer checks before the SIS layer looks things up.

:func:`row_problem` gives the message for a row Canvas skips (each importer's own check), :func:`row_warnings`
those for a row imported all the same, :func:`check_enrollment_role` the role check Canvas makes last. Messages
come from ``lib/sis/*_importer.rb`` and ``canvas-lms-specs/expected_messages.json``; *inferred* marks the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from sisdaemon.sis_csv.schema import ENROLLMENT_ROLES, STATUSES


def _blank(value: str | None) -> bool:
    return value is None or value == ""


def _status_ok(importer: str, status: str | None) -> bool:
    return status is not None and status.lower() in STATUSES[importer]


def _improper(status: str | None) -> str:
    return f'Improper status "{status or ""}"'


_DATE = re.compile(
    r"\A(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})"
    r"(?:[T ](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d+)?)?)?"
    r"\s*(?:Z|[+-]\d{2}:?\d{2})?\Z"
)


def valid_date(value: str) -> bool:
    """Canvas accepts dates like `2011-1-05 00:00:00`, `2013-05-03 00:00:00-06:00` and ISO 8601; a month 13 or
    day 32 is a "Bad date format" (term_importer_spec "creates terms")."""
    match = _DATE.match(value.strip())
    if not match:
        return False
    month, day = int(match["m"]), int(match["d"])
    hour = int(match["H"] or 0)
    minute = int(match["M"] or 0)
    second = int(match["S"] or 0)
    return 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61


def _check_account(row: Mapping[str, str | None]) -> str | None:
    account_id = row.get("account_id")
    if _blank(account_id):
        return "No account_id given for an account"
    if not _status_ok("account", row.get("status")):
        return f"{_improper(row.get('status'))} for account {account_id}, skipping"
    if _blank(row.get("name")):
        return f"No name given for account {account_id}, skipping"
    return None


def _check_term(row: Mapping[str, str | None]) -> str | None:
    term_id = row.get("term_id")
    if _blank(term_id):
        return "No term_id given for a term"
    if not _status_ok("term", row.get("status")):
        return f"{_improper(row.get('status'))} for term {term_id}"
    if _blank(row.get("name")):
        return f"No name given for term {term_id}"
    return None


def _check_abstract_course(row: Mapping[str, str | None]) -> str | None:
    # inferred: worded like course_importer.rb's messages
    abstract_id = row.get("abstract_course_id")
    if _blank(abstract_id):
        return "No abstract_course_id given for an abstract course"
    if _blank(row.get("short_name")):
        return f"No short_name given for abstract course {abstract_id}"
    if _blank(row.get("long_name")):
        return f"No long_name given for abstract course {abstract_id}"
    if not _status_ok("abstract_course", row.get("status")):
        return f"{_improper(row.get('status'))} for abstract course {abstract_id}"
    return None


def _check_course(row: Mapping[str, str | None]) -> str | None:
    course_id = row.get("course_id")
    if _blank(course_id):
        return "No course_id given for a course"
    if not _status_ok("course", row.get("status")):
        return f"{_improper(row.get('status'))} for course {course_id}"
    if _blank(row.get("short_name")):
        return f"No short_name given for course {course_id}"
    if _blank(row.get("long_name")):
        return f"No long_name given for course {course_id}"
    return None


def _check_section(row: Mapping[str, str | None]) -> str | None:
    section_id, course_id = row.get("section_id"), row.get("course_id")
    if _blank(section_id):
        return f"No section_id given for a section in course {course_id or ''}"
    if _blank(course_id):
        return f"No course_id given for a section {section_id}"
    if not _status_ok("section", row.get("status")):
        return f"{_improper(row.get('status'))} for section {section_id} in course {course_id}"
    if _blank(row.get("name")):
        return f"No name given for section {section_id} in course {course_id}"
    return None


def _check_xlist(row: Mapping[str, str | None]) -> str | None:
    if _blank(row.get("xlist_course_id")):
        return "No xlist_course_id given for a cross-listing"
    if _blank(row.get("section_id")):
        return "No section_id given for a cross-listing"
    if not _status_ok("xlist", row.get("status")):
        return f"{_improper(row.get('status'))} for a cross-listing"
    return None


def _check_user(row: Mapping[str, str | None]) -> str | None:
    user_id = row.get("user_id")
    if _blank(user_id):
        return "No user_id given for a user"
    if _blank(row.get("login_id")):
        return f"No login_id given for user {user_id}"
    if _blank(row.get("status")):
        return f"No status given for user {user_id}"
    if not _status_ok("user", row.get("status")):
        return f"Improper status for user {user_id}"
    return None


def _check_login(row: Mapping[str, str | None]) -> str | None:
    # inferred: worded like user_importer.rb's messages
    user_id = row.get("user_id")
    if _blank(user_id):
        return "No user_id given for a login"
    if _blank(row.get("login_id")):
        return f"No login_id given for login {user_id}"
    if all(_blank(row.get(k)) for k in ("existing_user_id", "existing_integration_id", "existing_canvas_user_id")):
        return f"No existing user provided for login with SIS ID {user_id}"
    return None


def _check_enrollment(row: Mapping[str, str | None]) -> str | None:
    if _blank(row.get("course_id")) and _blank(row.get("section_id")):
        return "No course_id or section_id given for an enrollment"
    if _blank(row.get("user_id")) and _blank(row.get("user_integration_id")):
        return "No user_id given for an enrollment"
    if not _status_ok("enrollment", row.get("status")):
        return f"{_improper(row.get('status'))} for an enrollment"
    return None


def check_enrollment_role(row: Mapping[str, str | None], custom_roles: Iterable[str] = ()) -> str | None:
    """Canvas checks an enrollment's role after every row's other checks (accounts define custom roles), so
    this message comes after the rest (enrollment_importer_spec "skips bad content")."""
    role, role_id = row.get("role"), row.get("role_id")
    if not _blank(role_id):
        return None
    if role in ENROLLMENT_ROLES or (role is not None and role in set(custom_roles)):
        return None
    return f'Improper role "{role or ""}" for an enrollment'


def _check_admin(row: Mapping[str, str | None]) -> str | None:
    # inferred: admin_importer.rb's messages
    user_id = row.get("user_id")
    if _blank(user_id):
        return "No user_id given for admin"
    if row.get("account_id") is None:
        return f"No account_id given for admin {user_id}"
    if _blank(row.get("role")) and _blank(row.get("role_id")):
        return f"No role_id or role given for admin {user_id}"
    if not _status_ok("admin", row.get("status")):
        return f"Invalid or missing status for admin {user_id}"
    return None


def _check_group_category(row: Mapping[str, str | None]) -> str | None:
    # inferred
    category_id = row.get("group_category_id")
    if _blank(category_id):
        return "No sis_id given for a group category"
    if _blank(row.get("category_name")):
        return f"No name given for group category {category_id}"
    if not _status_ok("group_category", row.get("status")):
        return f"{_improper(row.get('status'))} for group category {category_id}"
    return None


def _check_differentiation_tag_set(row: Mapping[str, str | None]) -> str | None:
    # inferred
    tag_set_id = row.get("tag_set_id")
    if _blank(tag_set_id):
        return "No sis_id given for a differentiation tag set"
    if _blank(row.get("set_name")):
        return f"No name given for differentiation tag set {tag_set_id}"
    if not _status_ok("differentiation_tag_set", row.get("status")):
        return f"{_improper(row.get('status'))} for differentiation tag set {tag_set_id}"
    return None


def _check_group(row: Mapping[str, str | None]) -> str | None:
    group_id = row.get("group_id")
    if _blank(group_id):
        return "No group_id given for a group"
    if _blank(row.get("name")):
        return f"No name given for group {group_id}"  # inferred
    if not _status_ok("group", row.get("status")):
        return f"{_improper(row.get('status'))} for group {group_id}"  # inferred
    return None


def _check_differentiation_tag(row: Mapping[str, str | None]) -> str | None:
    # inferred
    tag_id = row.get("tag_id")
    if _blank(tag_id):
        return "No tag_id given for a differentiation tag"
    if _blank(row.get("name")):
        return f"No name given for differentiation tag {tag_id}"
    if not _status_ok("differentiation_tag", row.get("status")):
        return f"{_improper(row.get('status'))} for differentiation tag {tag_id}"
    return None


def _check_membership(kind: str, id_column: str) -> Callable[[Mapping[str, str | None]], str | None]:
    # inferred: group_membership_importer.rb's wording
    def check(row: Mapping[str, str | None]) -> str | None:
        if _blank(row.get(id_column)):
            return f"No {id_column} given for a {kind} user"
        if _blank(row.get("user_id")):
            return f"No user_id given for a {kind} user"
        if not _status_ok("group_membership", row.get("status")):
            return f"{_improper(row.get('status'))} for a {kind} user"
        return None

    return check


def _check_grade_publishing_results(row: Mapping[str, str | None]) -> str | None:
    # inferred
    if _blank(row.get("enrollment_id")):
        return "No enrollment_id given"
    if not _status_ok("grade_publishing_results", row.get("grade_publishing_status")):
        return f'Improper grade_publishing_status "{row.get("grade_publishing_status") or ""}" for enrollment'
    return None


def _check_user_observer(row: Mapping[str, str | None]) -> str | None:
    if _blank(row.get("observer_id")):
        return "No observer_id given for a user observer"
    if _blank(row.get("student_id")):
        return "No user_id given for a user observer"
    if not _status_ok("user_observer", row.get("status")):
        return f"{_improper(row.get('status'))} for a user_observer"
    return None


def _check_change_sis_id(row: Mapping[str, str | None]) -> str | None:
    # inferred: change_sis_id_importer.rb
    if _blank(row.get("old_id")) and _blank(row.get("old_integration_id")):
        return "No old_id or old_integration_id given for change_sis_id"
    if _blank(row.get("new_id")) and _blank(row.get("new_integration_id")):
        return "No new_id or new_integration_id given for change_sis_id"
    kind = (row.get("type") or "").lower()
    if kind not in {"account", "term", "course", "section", "group", "group_category", "user"}:
        return f"Invalid type {row.get('type') or ''} for change_sis_id"
    return None


_ROW_CHECKS: dict[str, Callable[[Mapping[str, str | None]], str | None]] = {
    "change_sis_id": _check_change_sis_id,
    "account": _check_account,
    "term": _check_term,
    "abstract_course": _check_abstract_course,
    "course": _check_course,
    "section": _check_section,
    "xlist": _check_xlist,
    "user": _check_user,
    "login": _check_login,
    "enrollment": _check_enrollment,
    "admin": _check_admin,
    "group_category": _check_group_category,
    "differentiation_tag_set": _check_differentiation_tag_set,
    "group": _check_group,
    "differentiation_tag": _check_differentiation_tag,
    "group_membership": _check_membership("group", "group_id"),
    "differentiation_tag_membership": _check_membership("differentiation tag", "tag_id"),
    "grade_publishing_results": _check_grade_publishing_results,
    "user_observer": _check_user_observer,
}


def row_problem(importer: str, row: Mapping[str, str | None]) -> str | None:
    """The message Canvas gives for a row that fails a check needing no other data, or None if it passes.

    `row` comes from row_dict. Such a row is skipped with a warning (failure: false); the import goes on.
    Checks that need other data (does the course exist? has another user claimed this login?) and the
    enrollment role (check_enrollment_role) are made later by the importer.
    """
    return _ROW_CHECKS[importer](row)


def row_warnings(importer: str, row: Mapping[str, str | None]) -> list[str]:
    """Warnings for a row that is imported all the same (a term's bad date: "Bad date format for term T")."""
    if importer == "term":
        for column in ("start_date", "end_date"):
            value = row.get(column)
            if value and value != "<delete>" and not valid_date(value):
                return [f"Bad date format for term {row.get('term_id')}"]
    return []
