"""Canvas's rules on combining SIS import options (sis_imports_api_controller.rb#create; docs/canvas-api.md §1): a
combination Canvas refuses (400) or silently ignores is a configuration error, at the key to change."""

from __future__ import annotations

from collections.abc import Callable

from sisdaemon.config.crosskeys import Problems, Validated, checks

DIFFING_OPTIONS = ("diffing_remaster_data_set", "diffing_drop_status", "diffing_user_remove_status")
"""Options Canvas reads only with a diffing_data_set_identifier (diff_row_count_threshold too)."""


def import_option_problems(values: Validated) -> Problems:
    """The problems of a feed's ``import`` options between each other, each at its key; a rule that needs an option
    that did not validate is skipped (:func:`sisdaemon.config.crosskeys.checks`)."""
    # The rules follow sis_imports_api_controller.rb#create (docs/canvas-api.md §1).
    v = values

    def batch() -> bool:
        return v.batch_mode is True

    def multi() -> bool:
        return v.multi_term_batch_mode is not None

    def diffing() -> bool:
        return v.diffing_data_set_identifier is not None

    def unless_override(key: str) -> tuple[str, Callable[[], object], str]:
        condition = lambda: getattr(v, key) is not None and v.override_sis_stickiness is not True  # noqa: E731
        return key, condition, "has no effect unless override_sis_stickiness is true (Canvas ignores it)"

    def needs_diffing(key: str) -> tuple[str, Callable[[], object], str]:
        return (
            key,
            lambda: getattr(v, key) is not None and not diffing(),
            "has no effect without diffing_data_set_identifier",
        )

    return checks(
        (
            "batch_mode",
            lambda: v.batch_mode is False and multi(),
            "is false, but multi_term_batch_mode turns batch mode on",
        ),
        (
            "batch_mode_term_id",
            lambda: v.batch_mode_term_id is not None and not batch(),
            "has no effect unless batch_mode is true",
        ),
        (
            "batch_mode_term_id",
            lambda: batch() and v.batch_mode_term_id is None and not multi(),
            "required when batch_mode is true (else Canvas answers 400)",
        ),
        (
            "multi_term_batch_mode",
            lambda: v.multi_term_batch_mode is False,
            "false is not allowed: Canvas turns batch mode on when it is sent",
        ),
        (
            "multi_term_batch_mode",
            lambda: v.multi_term_batch_mode is True and batch() and v.batch_mode_term_id is not None,
            "Canvas ignores it when batch_mode_term_id is given; keep one",
        ),
        ("change_threshold", lambda: v.change_threshold is None and batch(), "required when batch_mode is true"),
        (
            "change_threshold",
            lambda: v.change_threshold is None and multi() and not batch(),
            "required with multi_term_batch_mode (else Canvas answers 400)",
        ),
        unless_override("add_sis_stickiness"),
        unless_override("clear_sis_stickiness"),
        (
            "diffing_data_set_identifier",
            lambda: diffing() and (batch() or multi()),
            "cannot be used with batch mode (Canvas ignores diffing then)",
        ),
        *(needs_diffing(key) for key in (*DIFFING_OPTIONS, "diff_row_count_threshold")),
        (
            "batch_mode_enrollment_drop_status",
            lambda: v.batch_mode_enrollment_drop_status is not None and not (batch() or multi()),
            "has no effect unless batch mode is on",
        ),
    )
