"""The `row_info` of a row-level message, as Canvas stores it in sis_batch_errors.row_info (a text column).

Canvas passes one of two things, and ActiveRecord stores its `to_s`:

- the CSV row itself, for messages raised while a row is read (`rescue ImportError => e` in
  lib/sis/csv/*_importer.rb: `row_info: row`). The row is a CSV::Row built with CSVBaseImporter::PARSE_ARGS
  (values stripped, blanks nil, missing trailing values nil) to which csv_rows appended a `lineno` field;
  CSV::Row#to_s is `fields.to_csv`: `u1,,active,2\\n`.
- the importer's model, for messages found while a batch of rows is applied: SIS::Models::Enrollment#row_info
  and SIS::Models::User#row_info / #login_row_info (lib/sis/models/*.rb), a one-hash array's `to_s` in
  Ruby 3.4's inspect style: `[{course_id: "C1", section_id: nil, ...}]` (the 2026 uw-restclients-canvas
  sample of GET .../sis_imports/:id/errors shows this form and the enrollment's key order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

Row = Mapping[str, str | None]

# SIS::Models::Enrollment#row_info (key, CSV column), in the order of the 2026 sample.
ENROLLMENT_KEYS: tuple[tuple[str, str], ...] = (
    ("course_id", "course_id"),
    ("section_id", "section_id"),
    ("user_id", "user_id"),
    ("user_integration_id", "user_integration_id"),
    ("role", "role"),
    ("status", "status"),
    ("associated_user_id", "associated_user_id"),
    ("temporary_enrollment_source_user_id", "temporary_enrollment_source_user_id"),
    ("root_account_id", "root_account"),
    ("role_id", "role_id"),
    ("limit_section_privileges", "limit_section_privileges"),
    ("notify", "notify"),
    ("start_date", "start_date"),
    ("end_date", "end_date"),
)
# SIS::Models::User#row_info.
USER_KEYS: tuple[str, ...] = (
    "user_id",
    "login_id",
    "status",
    "first_name",
    "last_name",
    "email",
    "integration_id",
    "short_name",
    "full_name",
    "sortable_name",
    "authentication_provider_id",
)
# SIS::Models::User#login_row_info (key, CSV column).
LOGIN_KEYS: tuple[tuple[str, str], ...] = (
    ("existing_user_id", "existing_user_id"),
    ("existing_integration_id", "existing_integration_id"),
    ("existing_canvas_user_id", "existing_canvas_user_id"),
    ("root_account_id", "root_account"),
    ("user_id", "user_id"),
    ("login_id", "login_id"),
    ("status", "status"),
    ("email", "email"),
    ("integration_id", "integration_id"),
    ("authentication_provider_id", "authentication_provider_id"),
)

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\f": "\\f",
    "\v": "\\v",
    "\b": "\\b",
    "\a": "\\a",
    "\x1b": "\\e",
}


def ruby_inspect(value: str | None) -> str:
    """Ruby's `inspect` of a UTF-8 String (or `nil`): double quotes, backslash escapes, `#{`, `#$` and `#@`
    escaped, other control characters as \\uXXXX."""
    if value is None:
        return "nil"
    out = ['"']
    for index, char in enumerate(value):
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "#" and value[index + 1 : index + 2] in ("{", "$", "@"):
            out.append("\\#")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _ruby_csv_field(value: str | None) -> str:
    """Array#to_csv's quoting of one field: nil is empty; "" and anything holding a comma, quote, CR or LF is
    quoted with quotes doubled."""
    if value is None:
        return ""
    if value == "" or any(char in value for char in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_row_info(header: Sequence[str], fields: Sequence[str], lineno: int) -> str:
    """CSV::Row#to_s of a data row as csv_rows yields it: values stripped with blanks as nil, padded with nil
    to the header's length, and `lineno` set (appended, or put in place of a `lineno` column)."""
    values: list[str | None] = [field.strip() or None for field in fields]
    values += [None] * (len(header) - len(values))
    lowered = [name.strip().lower() for name in header]
    if "lineno" in lowered:
        values[lowered.index("lineno")] = str(lineno)
    else:
        values.append(str(lineno))
    return ",".join(_ruby_csv_field(value) for value in values) + "\n"


_TIME = re.compile(
    r"\A(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})"
    r"(?:[T ](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<frac>\d+))?)?)?"
    r"\s*(?P<zone>Z|[+-]\d{2}:?\d{2})?\Z"
)


def rails_time_inspect(value: str | None) -> str | None:
    """`Time.zone.parse(value).inspect` with Time.zone UTC (ActiveSupport::TimeWithZone#inspect:
    `Mon, 05 Jan 2026 00:00:00.000000000 UTC +00:00`); None for a blank or unparsable value (Canvas then
    keeps nil)."""
    if not value:
        return None
    match = _TIME.match(value.strip())
    if not match:
        return None
    try:
        moment = datetime(
            int(match["y"]),
            int(match["m"]),
            int(match["d"]),
            int(match["H"] or 0),
            int(match["M"] or 0),
            int(match["S"] or 0),
            int((match["frac"] or "0")[:6].ljust(6, "0")),
        )
    except ValueError:
        return None
    zone = match["zone"]
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    moment = moment.replace(tzinfo=UTC)
    nanoseconds = (match["frac"] or "").ljust(9, "0")[:9]
    return moment.strftime(f"%a, %d %b %Y %H:%M:%S.{nanoseconds} UTC +00:00")


def _hash_dump(pairs: Sequence[tuple[str, str | None]], times: frozenset[str] = frozenset()) -> str:
    """`[{key: value, ...}].to_s` in Ruby 3.4's style: strings inspected, nil as `nil`, the keys in `times`
    already rendered (a TimeWithZone's inspect)."""
    body = ", ".join(
        f"{key}: {value if key in times and value is not None else ruby_inspect(value)}" for key, value in pairs
    )
    return f"[{{{body}}}]"


def model_row_info(importer: str, row: Row) -> str | None:
    """The model's row_info for an enrollment, user or login row (None for other importers, whose messages
    carry the CSV row). `row` comes from sis_csv.row_dict: stripped values, blanks become nil."""

    def value(column: str) -> str | None:
        return row.get(column) or None

    if importer == "enrollment":
        pairs: list[tuple[str, str | None]] = []
        for key, column in ENROLLMENT_KEYS:
            if key in ("start_date", "end_date"):
                pairs.append((key, rails_time_inspect(value(column))))
            else:
                pairs.append((key, value(column)))
        return _hash_dump(pairs, frozenset({"start_date", "end_date"}))
    if importer == "user":
        return _hash_dump([(key, value(key)) for key in USER_KEYS])
    if importer == "login":
        return _hash_dump([(key, value(column)) for key, column in LOGIN_KEYS])
    return None
