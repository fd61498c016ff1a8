"""Canvas's SIS CSV rules as pure functions: which importer a header row selects, the columns and statuses
each importer accepts, and the messages Canvas gives for a bad row or file.

Shared by the sandbox (``sisdaemon.sandbox``) and the daemon's pre-flight check. Everything here streams: a
file is read a chunk or a row at a time, UTF-8 is checked incrementally (a multibyte character split across
two chunks is not an error), so memory does not grow with file size.

Sources (instructure/canvas-lms): ``lib/sis/csv/import_refactored.rb`` (importer order, header predicates,
"Invalid UTF-8", "Malformed CSV", "Couldn't find Canvas CSV import headers", "Skipping unknown file type",
ignored zip entries), ``lib/sis/csv/csv_base_importer.rb`` (PARSE_ARGS: headers downcased, blank lines
skipped, values stripped), ``lib/sis/csv/*_importer.rb`` and ``lib/sis/*_importer.rb`` (per-row messages), and
the spec assertions collected in ``canvas-lms-specs/expected_messages.json`` (the wording tested here).
Where a message was not found in those sources it is marked *inferred* next to it.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

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

    `header` is the first CSV record as read; it is downcased here as Canvas does (not stripped). The first
    importer in IMPORTERS whose predicate matches wins (import_refactored.rb `process_file`).
    """
    row = [(cell or "").lower() for cell in header]
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


# --------------------------------------------------------------------------------------------------------------
# Streaming reading


class CsvFileError(Exception):
    """A file-level failure: the message Canvas records with failure: true (the file is skipped)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def iter_chunks(stream: BinaryIO, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Yield `stream`'s bytes in chunks of at most `chunk_size` bytes until EOF."""
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            return
        yield chunk


def iter_utf8_text(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decode UTF-8 incrementally, dropping a leading BOM; raise CsvFileError("Invalid UTF-8") on bad bytes.

    A character split across two chunks is joined, never reported (Canvas spec "does not invalidly break up
    UTF-8 characters"; import_refactored.rb `valid_utf8?` retries a split chunk). A truncated character at
    the very end of the input is invalid.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    at_start = True
    try:
        for chunk in chunks:
            text = decoder.decode(chunk)
            if at_start and text:
                at_start = False
                if text.startswith("\ufeff"):
                    text = text[1:]
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if at_start and tail.startswith("\ufeff"):
            tail = tail[1:]
        if tail:
            yield tail
    except UnicodeDecodeError as error:
        raise CsvFileError(MSG_INVALID_UTF8) from error


def check_utf8(stream: BinaryIO, chunk_size: int = 1 << 16) -> bool:
    """True if the whole stream is valid UTF-8 (a BOM allowed). Reads to EOF in `chunk_size` pieces."""
    try:
        for _ in iter_utf8_text(iter_chunks(stream, chunk_size)):
            pass
    except CsvFileError:
        return False
    return True


class _LineSource:
    """Turns decoded text chunks into lines that keep their endings, splitting only on \\n, \\r\\n and \\r.

    csv.reader wants lines; str.splitlines would also split on \\x0b, \\x1c, \\u2028 ..., which a CSV may
    hold inside a field.
    """

    _BREAK = re.compile(r"\r\n|\r|\n")

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = iter(texts)

    def __iter__(self) -> Iterator[str]:
        pending = ""
        for text in self._texts:
            pending += text
            start = 0
            for match in self._BREAK.finditer(pending):
                end = match.end()
                if match.group() == "\r" and end == len(pending):
                    break  # may be the first half of \r\n split across chunks
                yield pending[start:end]
                start = end
            pending = pending[start:]
        if pending:
            yield pending


@dataclass(frozen=True)
class CsvRecord:
    """One CSV record: `line` is the 1-based physical line where it ends (the header is line 1)."""

    line: int
    fields: list[str]


def iter_records(stream: BinaryIO, chunk_size: int = 1 << 16) -> Iterator[CsvRecord]:
    """Yield the CSV records of a UTF-8 byte stream one at a time, blank lines skipped (Ruby skip_blanks).

    Raises CsvFileError("Invalid UTF-8") for bad bytes and CsvFileError("Malformed CSV") for a quote left
    open at EOF or text after a closing quote (Ruby's CSV::MalformedCSVError; Python's csv in strict mode).
    Ruby also refuses a quote inside an unquoted field (`a"b`); Python's reader accepts it, so this does too.
    """
    reader = csv.reader(_LineSource(iter_utf8_text(iter_chunks(stream, chunk_size))), strict=True)
    try:
        for fields in reader:
            if not fields:
                continue
            yield CsvRecord(reader.line_num, fields)
    except csv.Error as error:
        raise CsvFileError(MSG_MALFORMED) from error


def read_header(stream: BinaryIO) -> list[str] | None:
    """The first record of a CSV stream (as read, not downcased), or None for a file with no records."""
    for record in iter_records(stream):
        return record.fields
    return None


def row_dict(header: Sequence[str], fields: Sequence[str]) -> dict[str, str | None]:
    """Map a record onto the downcased header like Ruby's CSV::Row: values stripped, missing ones None.

    A duplicated header name keeps its first value (CSV::Row#[] returns the first match).
    """
    row: dict[str, str | None] = {}
    for index, name in enumerate(header):
        key = name.lower()
        if key in row:
            continue
        row[key] = fields[index].strip() if index < len(fields) else None
    return row


def is_blank_row(row: Mapping[str, str | None]) -> bool:
    """A row whose every value is empty (",,,,,"): Canvas skips it without a message (expected_messages.json
    users_notify_blank_row.csv)."""
    return all(not value for value in row.values())


def open_text(data: bytes) -> BinaryIO:
    """A binary stream over `data` (tests and small in-memory files)."""
    return io.BytesIO(data)


# --------------------------------------------------------------------------------------------------------------
# Per-row checks that need no other data (what Canvas's CSV layer checks before the SIS layer looks things up)


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
