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

The parts: ``schema`` (importers, header predicates, columns, statuses, file names, file-level messages),
``reading`` (the streaming reader), ``rows`` (per-row checks), and the pre-flight check the daemon and
``sisdaemon validate`` run: ``problems`` (a problem and a file's report), ``preflight`` (one CSV) and ``archive``
(a file: a CSV or a zip, its sha256 taken on the way by ``hashing``); and ``compare`` (two files row by row, keyed
as Canvas diffs them: ``sisdaemon diff`` and the daemon's diff summary). Every name is importable from here.
"""

from __future__ import annotations

from sisdaemon.sis_csv.archive import check_file, is_zip, unsafe_member_name
from sisdaemon.sis_csv.compare import (
    Comparison,
    TypeDiff,
    compare_files,
    compare_types,
    held_types,
    remove_stale_diff_dirs,
    show_key,
)
from sisdaemon.sis_csv.preflight import check_csv
from sisdaemon.sis_csv.problems import Cancelled, Problem, Report
from sisdaemon.sis_csv.reading import (
    CsvFileError,
    CsvRecord,
    check_utf8,
    is_blank_row,
    iter_chunks,
    iter_records,
    iter_utf8_text,
    open_text,
    read_header,
    row_dict,
)
from sisdaemon.sis_csv.rows import check_enrollment_role, row_problem, row_warnings, valid_date
from sisdaemon.sis_csv.schema import (
    COUNT_KEYS,
    DIFF_KEYS,
    ENROLLMENT_ROLES,
    IMPORTERS,
    MSG_CRASH,
    MSG_INVALID_UTF8,
    MSG_MALFORMED,
    MSG_NO_HEADERS,
    MSG_UNKNOWN_FILE_TYPE,
    PASSWORD_HEADERS,
    REQUIRED_COLUMNS,
    STATUSES,
    UTF8_BOM,
    detect_importer,
    is_csv_name,
    is_ignored_zip_entry,
    is_zip_name,
    missing_columns,
)

__all__ = [
    "COUNT_KEYS",
    "DIFF_KEYS",
    "ENROLLMENT_ROLES",
    "IMPORTERS",
    "MSG_CRASH",
    "MSG_INVALID_UTF8",
    "MSG_MALFORMED",
    "MSG_NO_HEADERS",
    "MSG_UNKNOWN_FILE_TYPE",
    "PASSWORD_HEADERS",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "UTF8_BOM",
    "Cancelled",
    "Comparison",
    "CsvFileError",
    "CsvRecord",
    "Problem",
    "Report",
    "TypeDiff",
    "check_csv",
    "check_enrollment_role",
    "check_file",
    "check_utf8",
    "compare_files",
    "compare_types",
    "detect_importer",
    "held_types",
    "is_blank_row",
    "is_csv_name",
    "is_ignored_zip_entry",
    "is_zip",
    "is_zip_name",
    "iter_chunks",
    "iter_records",
    "iter_utf8_text",
    "missing_columns",
    "open_text",
    "read_header",
    "remove_stale_diff_dirs",
    "row_dict",
    "row_problem",
    "row_warnings",
    "show_key",
    "unsafe_member_name",
    "valid_date",
]
