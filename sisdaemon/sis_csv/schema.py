"""Canvas's SIS CSV types: the importers in Canvas's order, the header predicates that pick one, each importer's
required columns and statuses, the zip entries and file names Canvas reads or skips, and the file-level messages.

Sources: ``lib/sis/csv/import_refactored.rb`` (importer order, header predicates, messages, ignored zip entries)
and ``lib/sis/csv/*_importer.rb``; see :mod:`sisdaemon.sis_csv`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# Importers in the order Canvas imports them (and tries their header predicates): the first predicate that
# matches a header row wins. lib/sis/csv/import_refactored.rb IMPORTERS (2025, with logins and
# differentiation tags; the institutional_tag_* importers exist only behind a feature flag and are left out).
IMPORTERS: tuple[str, ...] = (
    "change_sis_id",
    "account",
    "term",
    "abstract_course",
    "course",
    "section",
    "xlist",
    "user",
    "login",
    "enrollment",
    "admin",
    "group_category",
    "differentiation_tag_set",
    "group",
    "differentiation_tag",
    "group_membership",
    "differentiation_tag_membership",
    "grade_publishing_results",
    "user_observer",
)

# data.counts keys: every importer pluralised (ActiveSupport's pluralize), in Canvas's order.
COUNT_KEYS: dict[str, str] = {
    "change_sis_id": "change_sis_ids",
    "account": "accounts",
    "term": "terms",
    "abstract_course": "abstract_courses",
    "course": "courses",
    "section": "sections",
    "xlist": "xlists",
    "user": "users",
    "login": "logins",
    "enrollment": "enrollments",
    "admin": "admins",
    "group_category": "group_categories",
    "differentiation_tag_set": "differentiation_tag_sets",
    "group": "groups",
    "differentiation_tag": "differentiation_tags",
    "group_membership": "group_memberships",
    "differentiation_tag_membership": "differentiation_tag_memberships",
    "grade_publishing_results": "grade_publishing_results",
    "user_observer": "user_observers",
}

#: The columns that key a row of each type when Canvas diffs two imports of one data set (lib/sis/csv/diff_generator.rb
#: KEYS_BY_TYPE); types not listed are never diffed. Shared by the sandbox's diffing and ``sisdaemon diff``.
DIFF_KEYS: dict[str, tuple[str, ...]] = {
    "account": ("account_id",),
    "term": ("term_id",),
    "abstract_course": ("abstract_course_id",),
    "course": ("course_id",),
    "section": ("section_id",),
    "group_category": ("group_category_id",),
    "group": ("group_id",),
    "group_membership": ("group_id", "user_id"),
    "user": ("user_id",),
    "enrollment": (
        "course_id",
        "section_id",
        "role_id",
        "role",
        "user_id",
        "user_integration_id",
        "associated_user_id",
    ),
    "xlist": ("xlist_course_id", "section_id"),
    "user_observer": ("observer_id", "student_id"),
    "admin": ("user_id", "account_id", "role_id", "role"),
}

# Columns whose values import_refactored.rb filters out of the downloadable copy of a users CSV
# (HEADERS_TO_EXCLUDE_FOR_DOWNLOAD): such a file is listed as "<name>_filtered.csv".
PASSWORD_HEADERS: frozenset[str] = frozenset({"password", "ssha_password"})

# Zip entries Canvas skips without a message (import_refactored.rb IGNORE_FILES: __macosx, "Desktop DB/DF",
# dotfiles).
_IGNORED_ENTRY = re.compile(r"__macosx|desktop d[bf]", re.IGNORECASE)

# Messages (file level). failure=True ones make the import failed_with_messages (sis_batch.rb).
MSG_INVALID_UTF8 = "Invalid UTF-8"
MSG_MALFORMED = "Malformed CSV"
MSG_NO_HEADERS = "Couldn't find Canvas CSV import headers"
MSG_UNKNOWN_FILE_TYPE = "Skipping unknown file type"
MSG_CRASH = "Error while importing CSV. Please contact support. (Error report {number})"

UTF8_BOM = b"\xef\xbb\xbf"


def _has(row: Sequence[str], *names: str) -> bool:
    return all(name in row for name in names)


def _has_any(row: Sequence[str], *names: str) -> bool:
    return any(name in row for name in names)


# Header predicates, one per importer (lib/sis/csv/<type>_importer.rb `<type>_csv?`). `row` is the header row,
# downcased.
_PREDICATES: dict[str, Callable[[Sequence[str]], bool]] = {
    "change_sis_id": lambda r: _has_any(r, "old_id", "old_integration_id"),
    "account": lambda r: _has(r, "account_id", "parent_account_id"),
    "term": lambda r: _has(r, "term_id", "name"),
    "abstract_course": lambda r: _has(r, "abstract_course_id", "short_name") and "course_id" not in r,
    "course": lambda r: _has(r, "course_id", "short_name"),
    "section": lambda r: _has(r, "section_id", "name"),
    "xlist": lambda r: _has(r, "xlist_course_id", "section_id"),
    "user": lambda r: (
        _has(r, "user_id", "login_id")
        and not _has_any(r, "existing_user_id", "existing_integration_id", "existing_canvas_user_id")
    ),
    "login": lambda r: _has_any(r, "existing_user_id", "existing_integration_id", "existing_canvas_user_id"),
    "enrollment": lambda r: _has_any(r, "section_id", "course_id") and _has_any(r, "user_id", "user_integration_id"),
    "admin": lambda r: _has(r, "account_id", "user_id"),
    "group_category": lambda r: _has(r, "group_category_id", "category_name"),
    "differentiation_tag_set": lambda r: _has(r, "tag_set_id", "set_name"),
    "group": lambda r: _has(r, "group_id", "name"),
    "differentiation_tag": lambda r: _has(r, "tag_id", "name"),
    "group_membership": lambda r: _has(r, "group_id", "user_id"),
    "differentiation_tag_membership": lambda r: _has(r, "tag_id", "user_id"),
    # grade_publishing_results_importer.rb: enrollment_id and grade_publishing_status.
    "grade_publishing_results": lambda r: _has(r, "enrollment_id", "grade_publishing_status"),
    "user_observer": lambda r: _has(r, "observer_id", "student_id"),
}

# Allowed `status` values per importer (docs `sis_csv.md` and the importers' regexes). Canvas compares them
# case-insensitively for most types (`status =~ /\Aactive|deleted\z/i`).
STATUSES: dict[str, frozenset[str]] = {
    "account": frozenset({"active", "deleted"}),
    "term": frozenset({"active", "deleted"}),
    "abstract_course": frozenset({"active", "deleted"}),
    "course": frozenset({"active", "deleted", "completed", "unpublished", "published"}),
    "section": frozenset({"active", "deleted"}),
    "xlist": frozenset({"active", "deleted"}),
    "user": frozenset({"active", "suspended", "deleted"}),
    "login": frozenset({"active", "suspended", "deleted"}),
    "enrollment": frozenset({"active", "deleted", "completed", "inactive", "deleted_last_completed"}),
    "admin": frozenset({"active", "deleted"}),
    "group_category": frozenset({"active", "deleted"}),
    "differentiation_tag_set": frozenset({"active", "deleted"}),
    "group": frozenset({"available", "deleted", "closed", "completed"}),
    "differentiation_tag": frozenset({"available", "deleted"}),
    "group_membership": frozenset({"accepted", "deleted"}),
    "differentiation_tag_membership": frozenset({"accepted", "deleted"}),
    "grade_publishing_results": frozenset({"published", "error"}),
    "user_observer": frozenset({"active", "deleted"}),
}

# Required columns per importer (docs `sis_csv.md`, ✓ column). A tuple inside the tuple means "one of".
REQUIRED_COLUMNS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "change_sis_id": (("old_id", "old_integration_id"), ("new_id", "new_integration_id"), "type"),
    "account": ("account_id", "parent_account_id", "name", "status"),
    "term": ("term_id", "name", "status"),
    "abstract_course": ("abstract_course_id", "short_name", "long_name", "status"),
    "course": ("course_id", "short_name", "long_name", "status"),
    "section": ("section_id", "course_id", "name", "status"),
    "xlist": ("xlist_course_id", "section_id", "status"),
    "user": ("user_id", "login_id", "status"),
    "login": (
        "user_id",
        "login_id",
        ("existing_user_id", "existing_integration_id", "existing_canvas_user_id"),
    ),
    "enrollment": (("course_id", "section_id"), ("user_id", "user_integration_id"), ("role", "role_id"), "status"),
    "admin": ("user_id", "account_id", ("role", "role_id"), "status"),
    "group_category": ("group_category_id", "category_name", "status"),
    "differentiation_tag_set": ("tag_set_id", "course_id", "set_name", "status"),
    "group": ("group_id", "name", "status"),
    "differentiation_tag": ("tag_id", "name", "status"),
    "group_membership": ("group_id", "user_id", "status"),
    "differentiation_tag_membership": ("tag_id", "user_id", "status"),
    "grade_publishing_results": ("enrollment_id", "grade_publishing_status"),
    "user_observer": ("observer_id", "student_id", "status"),
}

# Built-in enrollment roles (case-sensitive, enrollment_importer.rb).
ENROLLMENT_ROLES: frozenset[str] = frozenset({"student", "teacher", "ta", "observer", "designer"})


def detect_importer(header: Sequence[str | None]) -> str | None:
    """The importer a header row selects, or None ("Couldn't find Canvas CSV import headers").

    `header` is the first CSV record as read; each cell is stripped and downcased here as Canvas's header
    converters do (csv_base_importer.rb PARSE_ARGS), so `" user_id "` is `user_id`. The first importer in
    IMPORTERS whose predicate matches wins (import_refactored.rb `process_file`).
    """
    row = [(cell or "").strip().lower() for cell in header]
    for name in IMPORTERS:
        if _PREDICATES[name](row):
            return name
    return None


def missing_columns(importer: str, header: Sequence[str]) -> list[str]:
    """Required columns of `importer` absent from a (downcased) header, "a|b" for a one-of group.

    Canvas has no file-level error for this (each row then fails its own check); the pre-flight reports it.
    """
    present = set(header)
    missing: list[str] = []
    for column in REQUIRED_COLUMNS[importer]:
        if isinstance(column, tuple):
            if not present.intersection(column):
                missing.append("|".join(column))
        elif column not in present:
            missing.append(column)
    return missing


def is_ignored_zip_entry(path: str) -> bool:
    """True for zip entries Canvas skips silently: anything under __MACOSX, "Desktop DB/DF", dotfiles.

    `path` is the entry's name inside the zip ("create/.DS_Store"). import_refactored.rb IGNORE_FILES.
    """
    basename = path.rstrip("/").rsplit("/", 1)[-1]
    return bool(_IGNORED_ENTRY.search(path)) or basename.startswith(".")


def is_csv_name(name: str) -> bool:
    """Canvas processes a stored file or zip entry only if its extension is .csv (any case)."""
    return name.lower().endswith(".csv")


def is_zip_name(name: str) -> bool:
    """An upload is unzipped only when its (multipart or `sis_import.<extension>`) name ends in .zip."""
    return name.lower().endswith(".zip")
