"""Per-file options, pure: the params file's validation, the term pattern, and the options a file ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sisdaemon import file_options
from sisdaemon.config import ConfigError, FeedSettings, parse_config
from sisdaemon.config.term_pattern import compile_term_pattern, term_in_name
from sisdaemon.file_options import ParamsRefused, parse_params, work_out
from sisdaemon.jobs import Fingerprint
from sisdaemon.settle import Observation, SettleTracker
from sisdaemon.watcher import skip_reason


def feed(**settings: Any) -> FeedSettings:
    config = {
        "canvas": {"base_url": "https://canvas.example.edu", "account_id": "1", "token_env": "T"},
        "feeds": [{"name": "f", "drop_dir": "/d", "done_dir": "/o", "failed_dir": "/x", **settings}],
    }
    return parse_config(config, source=Path("c.yaml")).feeds[0]


# --- the term pattern -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "term"),
    [
        ("enrollments_{term}.csv", "enrollments_2026FA.csv", "2026FA"),
        ("enrollments_{term}.csv", "ENROLLMENTS_2026fa.CSV", "2026fa"),  # literal parts ignore case; the term keeps it
        ("enrollments_{term}.csv", "enrollments_2026.FA.csv", "2026.FA"),
        ("*_{term}.csv", "nightly_enrollments_2026SP.csv", "2026SP"),  # lazy: the term is the last part
        ("{term}-sections.zip", "2026-SU-sections.zip", "2026-SU"),
        ("enrollments_{term}_?.csv", "enrollments_T1_3.csv", "T1"),
        ("enrollments_{term}.csv", "enrollments_.csv", None),  # no term
        ("enrollments_{term}.csv", "enrollments_2026FA.csv.bak", None),  # the whole name
        ("enrollments_{term}.csv", "users_2026FA.csv", None),
        ("enrollments_{term}.csv", "enrollments_ 2026FA.csv", None),  # white space at an end is no SIS id
        ("a.b_{term}.csv", "aXb_1.csv", None),  # "." is literal, not a regex wildcard
        ("a(b)_{term}[x].csv", "a(b)_1[x].csv", "1"),
    ],
)
def test_a_term_pattern_takes_the_term_from_the_whole_file_name(pattern: str, name: str, term: str | None) -> None:
    assert term_in_name(pattern, name) == term


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("enrollments.csv", "exactly once"),
        ("{term}_{term}.csv", "exactly once"),
        ("{year}_{term}.csv", "only placeholder"),
        ("dir/{term}.csv", "without /"),
    ],
)
def test_a_bad_term_pattern_is_refused_with_what_is_wrong(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        compile_term_pattern(pattern)


def test_a_bad_term_pattern_is_a_configuration_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        feed(term_from_name="enrollments.csv", **{"import": {"change_threshold": 10}})

    assert caught.value.problems == [
        'feeds[0].term_from_name: must hold "{term}" exactly once, e.g. "enrollments_{term}.csv"'
    ]


def test_term_from_name_needs_what_batch_mode_needs() -> None:
    with pytest.raises(ConfigError) as caught:
        feed(term_from_name="e_{term}.csv", **{"import": {"diffing_data_set_identifier": "x"}})

    assert caught.value.problems == [
        "feeds[0].term_from_name: needs import.change_threshold (it turns batch mode on)",
        "feeds[0].term_from_name: cannot be used with import.diffing_data_set_identifier",
    ]


def test_allow_params_names_only_canvas_s_options() -> None:
    with pytest.raises(ConfigError) as caught:
        feed(allow_params=["batch_mode_term_id", "import_type"])

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("feeds[0].allow_params[1]: 'import_type' is not one of Canvas's")


# --- names -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["users.csv.params.yaml", "USERS.CSV.PARAMS.YAML", "x.params.yaml"])
def test_a_params_file_is_never_taken_as_a_data_file_whatever_the_patterns(name: str) -> None:
    assert skip_reason(name, ["*"]) == "params_file"
    assert skip_reason(name, ["*.yaml"]) == "params_file"


def test_a_params_file_is_named_after_its_data_file_s_whole_name() -> None:
    assert file_options.params_name_for("enrollments.csv") == "enrollments.csv.params.yaml"
    assert file_options.data_name_for("enrollments.csv.params.yaml") == "enrollments.csv"


# --- the params file ---------------------------------------------------------------------------------------------


def test_a_params_file_gives_each_key_with_its_line() -> None:
    text = b"# for the spring term\nbatch_mode_term_id: sis_term_id:2026SP\n\noverride_sis_stickiness: true\n"

    parsed = parse_params(text, "e.csv.params.yaml", ["batch_mode_term_id", "override_sis_stickiness"])

    assert parsed == {"batch_mode_term_id": ("sis_term_id:2026SP", 2), "override_sis_stickiness": (True, 4)}


def test_an_empty_params_file_sets_nothing() -> None:
    assert parse_params(b"# nothing\n", "e.csv.params.yaml", ["skip_deletes"]) == {}


@pytest.mark.parametrize(
    ("text", "allowed", "reason"),
    [
        (
            b"batch_mode_term_id: sis_term_id:X\nskip_deletes: true\n",
            ["batch_mode_term_id"],
            "params file p.params.yaml: line 2: skip_deletes: not allowed by the feed's allow_params "
            "(batch_mode_term_id)",
        ),
        (b"", [], "params file p.params.yaml: this feed takes no params file (its allow_params is empty)"),
        (
            b"batch_mode_term: 5\n",
            ["batch_mode_term_id"],
            "params file p.params.yaml: line 1: batch_mode_term: unknown key, not one of Canvas's sis_import options",
        ),
        (b"skip_deletes: [true\n", ["skip_deletes"], "params file p.params.yaml, line 2: not valid YAML"),
        (b"- skip_deletes\n", ["skip_deletes"], "params file p.params.yaml, line 1: must be a mapping"),
        (b"a: 1\na: 2\n", ["skip_deletes"], "params file p.params.yaml, line 2: not valid YAML"),
        (b"skip_deletes: \xe9\n", ["skip_deletes"], "params file p.params.yaml: is not UTF-8 text"),
    ],
)
def test_a_params_file_that_cannot_be_used_is_refused_naming_the_file_key_and_line(
    text: bytes, allowed: list[str], reason: str
) -> None:
    with pytest.raises(ParamsRefused) as caught:
        parse_params(text, "p.params.yaml", allowed)

    assert str(caught.value).startswith(reason)


# --- the options a file ends with -----------------------------------------------------------------------------------


BATCH_FEED = {"import": {"change_threshold": 10}, "term_from_name": "enrollments_{term}.csv"}


def test_a_term_from_the_file_name_turns_batch_mode_on_for_that_file() -> None:
    worked = work_out(feed(**BATCH_FEED), "enrollments_2026FA.csv")

    assert worked["options"] == {
        "batch_mode": True,
        "batch_mode_term_id": "sis_term_id:2026FA",
        "change_threshold": 10,
    }
    assert worked["sources"] == {
        "batch_mode": "file_name",
        "batch_mode_term_id": "file_name",
        "change_threshold": "feed",
    }
    assert worked["per_file"] and worked["warnings"] == []
    assert file_options.per_file_term(worked) == ("sis_term_id:2026FA", "file_name")


def test_a_name_that_does_not_match_is_sent_with_the_feed_s_options_and_a_warning() -> None:
    worked = work_out(feed(**BATCH_FEED), "users.csv")

    assert worked["options"] == {"change_threshold": 10}
    assert worked["warnings"] == [
        "the file name does not match term_from_name 'enrollments_{term}.csv': sent with the feed's own options "
        "(no batch mode)"
    ]
    assert file_options.per_file_term(worked) is None


def test_a_params_file_s_term_wins_over_the_file_name_s() -> None:
    settings = feed(**BATCH_FEED, allow_params=["batch_mode_term_id"])
    parsed = parse_params(b"batch_mode_term_id: sis_term_id:2026SP\n", "p", settings.allow_params)

    worked = work_out(settings, "enrollments_2026FA.csv", parsed, "p")

    assert worked["options"]["batch_mode_term_id"] == "sis_term_id:2026SP"
    assert worked["sources"]["batch_mode_term_id"] == "params_file"
    assert worked["sources"]["batch_mode"] == "file_name"
    assert worked["params_file"] == "p"
    assert file_options.per_file_term(worked) == ("sis_term_id:2026SP", "params_file")


def test_the_feed_s_own_term_is_not_checked_per_file() -> None:
    settings = feed(**{"import": {"batch_mode": True, "batch_mode_term_id": "sis_term_id:X", "change_threshold": 5}})

    assert file_options.per_file_term(work_out(settings, "users.csv")) is None


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (
            b"\nchange_threshold: '10'\n",
            "params file p: line 2: change_threshold: must be a whole number, not a string",
        ),
        (b"change_threshold: 101\n", "params file p: line 1: change_threshold: must be at most 100"),
        (
            b"batch_mode_term_id: sis_term_id:X\n",
            "params file p: line 1: batch_mode_term_id: has no effect unless batch_mode is true",
        ),
        (
            b"batch_mode: true\n",
            "params file p: batch_mode_term_id: required when batch_mode is true (else Canvas answers 400) (from the "
            "feed's import section)",
        ),
    ],
)
def test_a_bad_value_or_combination_is_refused_naming_the_key_its_line_and_where_it_came_from(
    params: bytes, reason: str
) -> None:
    allowed = ["batch_mode", "batch_mode_term_id", "change_threshold"]
    settings = feed(allow_params=allowed, **{"import": {"change_threshold": 10}})

    with pytest.raises(ParamsRefused) as caught:
        work_out(settings, "users.csv", parse_params(params, "p", allowed), "p")

    assert str(caught.value) == reason


def test_an_upload_sends_what_the_claim_recorded_or_else_the_feed_s_options_now() -> None:
    settings = feed(**BATCH_FEED)
    recorded = work_out(settings, "enrollments_2026FA.csv")

    assert file_options.for_attempt(recorded, settings, "users.csv") == recorded
    assert file_options.for_attempt(None, settings, "users.csv")["options"] == {"change_threshold": 10}
    # claimed without options of its own (`sisdaemon retry`): the name's term still applies
    assert file_options.for_attempt(None, settings, "enrollments_2026FA.csv") == recorded
    assert file_options.for_attempt(None, feed(), "users.csv") == file_options.from_feed(feed())
    assert file_options.form_fields(recorded["options"]) == [
        ("batch_mode", "true"),
        ("batch_mode_term_id", "sis_term_id:2026FA"),
        ("change_threshold", "10"),
    ]


# --- holding a data file while its params file settles ---------------------------------------------------------------


def test_a_held_file_is_ready_again_only_at_the_end_of_its_hold() -> None:
    tracker = SettleTracker(settle=1.0, empty_grace=5.0)
    seen = Observation("a.csv", Fingerprint(1, 10, 1), True, "file")
    tracker.observe("a.csv", seen, 0.0)
    tracker.observe("a.csv", seen, 1.0)
    assert tracker.first_ready() is not None

    tracker.hold("a.csv", 4.0)

    assert tracker.first_ready() is None
    assert tracker.due(3.9) == [] and tracker.next_due(3.9) == 4.0
    assert tracker.due(4.0) == ["a.csv"]
    tracker.observe("a.csv", seen, 4.0)
    ready = tracker.first_ready()
    assert ready is not None and ready.seen_at == 0.0  # still first seen at 0
