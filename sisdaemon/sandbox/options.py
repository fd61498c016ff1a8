"""How the create endpoint reads its options, as app/controllers/sis_imports_api_controller.rb#create does.

Two stages, as in Canvas: `check_before_create` runs before the import row exists (import_type, batch-mode
term lookup: refusals leave nothing behind); `apply_options` runs inside SisBatch.create_with_attachment's
block, after the row was saved as `initializing`, so its 400s leave an orphan `initializing` import visible in
the index (sis_batch.rb create_with_attachment).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sisdaemon.sandbox.records import SisImport

# SIS::CSV::DiffGenerator::VALID_ENROLLMENT_DROP_STATUS / VALID_USER_REMOVE_STATUS (lib/sis/csv/diff_generator.rb).
VALID_ENROLLMENT_DROP_STATUS: tuple[str, ...] = ("deleted", "completed", "inactive", "deleted_last_completed")
VALID_USER_REMOVE_STATUS: tuple[str, ...] = ("deleted", "suspended")

NOT_FOUND_BODY: dict[str, Any] = {"errors": [{"message": "The specified resource does not exist."}]}


@dataclass(frozen=True)
class Refusal:
    """An answer that refuses the request: HTTP `status` with JSON `body` (a dict, list or bare string)."""

    status: int
    body: Any


def value_to_boolean(value: str | None) -> bool:
    """Canvas::Plugin.value_to_boolean (lib/canvas/plugin.rb): yes/true/on/1 true and no/false/off/0/"" false,
    case-insensitively; any other string is true when its leading integer (Ruby to_i) is non-zero; absent is
    false."""
    if value is None:
        return False
    lowered = value.lower()
    if lowered in {"yes", "true", "on", "1"}:
        return True
    if lowered in {"no", "false", "off", "0", ""}:
        return False
    return ruby_to_i(value) != 0


_LEADING_INT = re.compile(r"\A[ \t\n\v\f\r]*([+-]?[0-9]+(?:_[0-9]+)*)")


def ruby_to_i(value: str | None) -> int:
    """Ruby's String#to_i: the leading integer (underscores between digits allowed), 0 when there is none."""
    if value is None:
        return 0
    match = _LEADING_INT.match(value)
    return int(match.group(1).replace("_", "")) if match else 0


def cast_integer_column(value: str | None) -> int | None:
    """How ActiveModel casts a string into an integer attribute (change_threshold): `value.presence`, then
    `to_i`. Blank (empty or whitespace) is nil; anything else is its leading integer, so "12abc" is 12 and
    "abc" is 0 (activemodel lib/active_model/type/helpers/numeric.rb `cast`, type/integer.rb `cast_value`)."""
    if value is None or not value.strip():
        return None
    return ruby_to_i(value)


def check_before_create(params: Mapping[str, str], find_term: Callable[[str], int | None]) -> Refusal | int | None:
    """The checks Canvas makes before the import row exists.

    Returns a Refusal, or the Canvas id of the batch-mode term (int), or None (no term). `find_term` resolves
    a batch_mode_term_id (Canvas id or `sis_term_id:X`) among active terms, None when not found. An unknown
    import_type makes the controller raise: Canvas's generic 500.
    """
    import_type = params.get("import_type") or "instructure_csv"
    if import_type != "instructure_csv":
        return Refusal(
            500,
            {
                "errors": [{"message": "An error occurred.", "error_code": "internal_server_error"}],
                "error_report_id": 1,
            },
        )
    term_id: int | None = None
    if value_to_boolean(params.get("batch_mode")):
        raw_term = params.get("batch_mode_term_id")
        if raw_term is not None and raw_term.strip():
            term_id = find_term(raw_term.strip())
            if term_id is None:
                # api_find raises ActiveRecord::RecordNotFound -> 404 [inferred from api_find]
                return Refusal(404, NOT_FOUND_BODY)
        if term_id is None and "multi_term_batch_mode" not in params:
            return Refusal(400, {"message": "Batch mode specified, but the given batch_mode_term_id cannot be found."})
    return term_id


def apply_options(sis_import: SisImport, params: Mapping[str, str], batch_mode_term_id: int | None) -> Refusal | None:
    """Write the options onto a new `initializing` import in the controller's order; a Refusal returned
    part-way leaves the import half-configured and `initializing`, as Canvas does."""
    sis_import.change_threshold = cast_integer_column(params.get("change_threshold"))
    options = sis_import.options
    threshold = ruby_to_i(params["diff_row_count_threshold"]) if "diff_row_count_threshold" in params else None
    if threshold is not None and threshold > 0:
        options["diff_row_count_threshold"] = threshold
    if batch_mode_term_id is not None:
        sis_import.batch_mode = True
        sis_import.batch_mode_term_id = batch_mode_term_id
    elif "multi_term_batch_mode" in params:
        # Tested by presence: multi_term_batch_mode=false still turns batch mode on.
        sis_import.batch_mode = True
        options["multi_term_batch_mode"] = value_to_boolean(params["multi_term_batch_mode"])
        # `unless batch.change_threshold`: only nil refuses; 0 (from "0" or "abc") is truthy in Ruby.
        if sis_import.change_threshold is None:
            return Refusal(400, {"message": "change_threshold is required to use multi term_batch mode."})
    elif (params.get("diffing_data_set_identifier") or "").strip():
        sis_import.diffing_data_set_identifier = params["diffing_data_set_identifier"]
        sis_import.diffing_remaster = value_to_boolean(params.get("diffing_remaster_data_set"))
    options["skip_deletes"] = value_to_boolean(params.get("skip_deletes"))
    options["update_sis_id_if_login_claimed"] = value_to_boolean(params.get("update_sis_id_if_login_claimed"))
    if value_to_boolean(params.get("override_sis_stickiness")):
        options["override_sis_stickiness"] = True
        for option in ("add_sis_stickiness", "clear_sis_stickiness"):
            if value_to_boolean(params.get(option)):
                options[option] = True
    for name, valid, message in (
        ("diffing_drop_status", VALID_ENROLLMENT_DROP_STATUS, "Invalid diffing_drop_status"),
        ("diffing_user_remove_status", VALID_USER_REMOVE_STATUS, "Invalid diffing_user_remove_status"),
        (
            "batch_mode_enrollment_drop_status",
            VALID_ENROLLMENT_DROP_STATUS,
            "Invalid batch_mode_enrollment_drop_status",
        ),
    ):
        value = params.get(name)
        if value is not None and value.strip():
            if value not in valid:
                return Refusal(400, {"message": message})
            options[name] = value
    identifier = sis_import.diffing_data_set_identifier
    if identifier is not None and len(identifier) > 128:
        # validates :diffing_data_set_identifier, length: { maximum: 128 } -> save! raises RecordInvalid,
        # which Canvas renders as a 400 with the record's errors [inferred].
        return Refusal(
            400,
            {
                "errors": {
                    "diffing_data_set_identifier": [
                        {"attribute": "diffing_data_set_identifier", "type": "too_long", "message": "too_long"}
                    ]
                }
            },
        )
    return None
