"""The configuration layer: YAML -> settings, every problem by file and dotted key; machine checks; token."""

from __future__ import annotations

import copy
import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from sisdaemon.config import (
    ConfigError,
    FeedSettings,
    ImportOptions,
    Settings,
    TokenError,
    check_runtime,
    load_config,
    parse_config,
    read_token,
)
from sisdaemon.config.checks import work_dirs_to_create

TOKEN = "7~SecretTokenValue0123456789abcdefABCDEF"
MINIMAL: dict[str, Any] = {
    "canvas": {
        "base_url": "https://myschool.instructure.com",
        "account_id": "1",
        "token_env": "CANVAS_TOKEN",
    },
    "feeds": [{"name": "nightly", "drop_dir": "sis/drop", "done_dir": "sis/done", "failed_dir": "sis/failed"}],
}


def config(**changes: Any) -> dict[str, Any]:
    """MINIMAL with top-level keys replaced; ``canvas=`` and ``feed=``/``import_=`` update the sections."""
    data = copy.deepcopy(MINIMAL)
    data["canvas"].update(changes.pop("canvas", {}))
    data["feeds"][0].update(changes.pop("feed", {}))
    if "import_" in changes:
        data["feeds"][0]["import"] = changes.pop("import_")
    data.update(changes)
    return data


def write(tmp_path: Path, data: object, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load(tmp_path: Path, data: object) -> Settings:
    return load_config(write(tmp_path, data))


def problems(tmp_path: Path, data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data)
    return caught.value.problems


def import_problems(tmp_path: Path, options: dict[str, Any]) -> list[str]:
    return problems(tmp_path, config(import_=options))


# --- a valid file and its defaults --------------------------------------------------------------------------


def test_a_minimal_file_gets_every_documented_default(tmp_path: Path) -> None:
    settings = load(tmp_path, MINIMAL)

    canvas = settings.canvas
    assert (canvas.token_env, canvas.token_file) == ("CANVAS_TOKEN", None)
    assert (canvas.timeout_seconds, canvas.upload_timeout_seconds) == (60, 1800)
    assert (canvas.verify_tls, canvas.ca_bundle, canvas.requests_verify) == (True, None, True)
    assert settings.state_file == Path("/var/lib/sisdaemon/state.json")
    assert settings.lock_dir == Path("/run/lock/sisdaemon")
    assert settings.polling.model_dump() == {
        "interval_seconds": 5,
        "max_interval_seconds": 60,
        "queued_timeout_seconds": 21600,
        "running_timeout_seconds": 86400,
        "resend_after_seconds": 900,
        "clock_skew_seconds": 300,
        "initializing_dead_seconds": 600,
        "errors_csv_wait_seconds": 120,
        "import_not_found_seconds": 3600,
    }
    assert (settings.log.format, settings.log.level) == ("json", "info")
    feed = settings.feeds[0]
    assert feed.patterns == ("*.csv", "*.zip")
    assert (feed.settle_seconds, feed.empty_grace_seconds, feed.rescan_seconds) == (10, 300, 60)
    assert (feed.watch, feed.max_in_flight) == ("events", 4)
    assert feed.import_ == ImportOptions()
    assert feed.import_.form_fields() == []


def test_relative_folders_are_taken_from_the_config_files_folder(tmp_path: Path) -> None:
    feed = load(tmp_path, MINIMAL).feeds[0]

    assert feed.drop_dir == tmp_path / "sis" / "drop"
    assert feed.done_dir == tmp_path / "sis" / "done"
    assert feed.failed_dir == tmp_path / "sis" / "failed"


def test_work_dir_defaults_to_a_folder_named_after_the_feed_beside_drop_dir(tmp_path: Path) -> None:
    data = config(feed={"drop_dir": "/srv/sis/drop/", "done_dir": "/srv/sis/done", "failed_dir": "/srv/sis/failed"})

    assert load(tmp_path, data).feeds[0].work_dir == Path("/srv/sis/work-nightly")


def test_an_explicit_work_dir_is_kept(tmp_path: Path) -> None:
    assert load(tmp_path, config(feed={"work_dir": "/srv/work"})).feeds[0].work_dir == Path("/srv/work")


def test_loading_looks_at_no_folder_and_creates_none(tmp_path: Path) -> None:
    settings = load(tmp_path, MINIMAL)

    assert not settings.feeds[0].drop_dir.exists()
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load(tmp_path, MINIMAL)

    with pytest.raises(ValueError, match="frozen"):
        settings.canvas.base_url = "https://elsewhere.example"  # type: ignore[misc]


def test_a_yaml_integer_account_id_becomes_its_digits(tmp_path: Path) -> None:
    assert load(tmp_path, config(canvas={"account_id": 1})).canvas.account_id == "1"


@pytest.mark.parametrize("account_id", ["self", "sis_account_id:MAIN", "42"])
def test_account_id_takes_digits_self_or_an_sis_id(tmp_path: Path, account_id: str) -> None:
    assert load(tmp_path, config(canvas={"account_id": account_id})).canvas.account_id == account_id


def test_a_yaml_integer_is_accepted_where_seconds_are_floats(tmp_path: Path) -> None:
    settings = load(tmp_path, config(polling={"interval_seconds": 0.2, "max_interval_seconds": 2}))

    assert (settings.polling.interval_seconds, settings.polling.max_interval_seconds) == (0.2, 2.0)


def test_patterns_match_file_names_ignoring_case(tmp_path: Path) -> None:
    feed = load(tmp_path, MINIMAL).feeds[0]

    assert feed.matches("USERS.CSV") and feed.matches("batch.Zip")
    assert not feed.matches("users.csv.part")


def test_a_ca_bundle_is_what_requests_verify_gets(tmp_path: Path) -> None:
    canvas = load(tmp_path, config(canvas={"ca_bundle": "ca.pem"})).canvas

    assert canvas.requests_verify == str(tmp_path / "ca.pem")


def test_verify_tls_false_is_what_requests_verify_gets(tmp_path: Path) -> None:
    assert load(tmp_path, config(canvas={"verify_tls": False})).canvas.requests_verify is False


# --- base_url -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalised", "host"),
    [
        ("https://MySchool.instructure.com/", "https://MySchool.instructure.com", "myschool.instructure.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("http://127.3.4.5", "http://127.3.4.5", "127.3.4.5"),
        ("http://localhost:3000//", "http://localhost:3000", "localhost:3000"),
        ("http://[::1]:8080", "http://[::1]:8080", "[::1]:8080"),
        ("https://lms.example.edu/canvas/", "https://lms.example.edu/canvas", "lms.example.edu"),
    ],
)
def test_base_url_is_normalised_and_gives_the_host_for_lock_names(
    tmp_path: Path, given: str, normalised: str, host: str
) -> None:
    canvas = load(tmp_path, config(canvas={"base_url": given})).canvas

    assert (canvas.base_url, canvas.host) == (normalised, host)


def test_http_to_a_host_that_is_not_loopback_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, config(canvas={"base_url": "http://canvas.example.edu"})) == [
        "canvas.base_url: http:// is allowed only for localhost, 127.0.0.0/8 and ::1; use https://"
    ]


@pytest.mark.parametrize("url", ["https://x.instructure.com/api/v1", "https://x.instructure.com/api/v1/"])
def test_a_base_url_ending_in_api_v1_is_refused(tmp_path: Path, url: str) -> None:
    assert problems(tmp_path, config(canvas={"base_url": url})) == [
        "canvas.base_url: give the instance URL without /api/v1"
    ]


@pytest.mark.parametrize(
    "url",
    ["ftp://x.example", "myschool.instructure.com", "https://", "https://u:p@x.example", "https://x:99999"],
)
def test_a_base_url_that_is_not_a_plain_https_url_is_refused(tmp_path: Path, url: str) -> None:
    [problem] = problems(tmp_path, config(canvas={"base_url": url}))

    assert problem.startswith("canvas.base_url: ")


# --- what is refused, by key --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {**MINIMAL, "colour": "blue"},
            "colour: unknown key; known: canvas, state_file, lock_dir, polling, log, metrics, feeds",
        ),
        (config(canvas={"tokenenv": "X"}), "canvas.tokenenv: unknown key (did you mean token_env?)"),
        (
            config(polling={"intervall_seconds": 1}),
            "polling.intervall_seconds: unknown key (did you mean interval_seconds?)",
        ),
        (config(log={"levle": "info"}), "log.levle: unknown key (did you mean level?)"),
        (config(feed={"imprt": {}}), "feeds[0].imprt: unknown key (did you mean import?)"),
        (
            config(import_={"batchmode": True}),
            "feeds[0].import.batchmode: unknown key (did you mean batch_mode?)",
        ),
    ],
)
def test_an_unknown_key_is_refused_at_every_level(tmp_path: Path, data: dict[str, Any], expected: str) -> None:
    assert problems(tmp_path, data) == [expected]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (config(canvas={"verify_tls": "yes"}), "canvas.verify_tls: must be true or false, not a string"),
        (config(canvas={"timeout_seconds": "60"}), "canvas.timeout_seconds: must be a number, not a string"),
        (
            config(canvas={"timeout_seconds": True}),
            "canvas.timeout_seconds: must be a number, not true/false",
        ),
        (config(canvas={"account_id": True}), "canvas.account_id: must be a string, not true/false"),
        (config(feed={"max_in_flight": 2.5}), "feeds[0].max_in_flight: must be a whole number, not a number"),
        (config(feed={"patterns": "*.csv"}), "feeds[0].patterns: must be a list, not a string"),
        (config(feed={"drop_dir": 5}), "feeds[0].drop_dir: must be a path, not a number"),
        (config(polling=[1]), "polling: must be a mapping (key: value lines), not a list"),
        (config(feeds={"name": "x"}), "feeds: must be a list, not a mapping"),
        (
            config(import_={"change_threshold": "10"}),
            "feeds[0].import.change_threshold: must be a whole number, not a string",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(tmp_path: Path, data: dict[str, Any], expected: str) -> None:
    assert problems(tmp_path, data) == [expected]


def test_a_bare_yaml_yes_is_a_string_and_not_a_boolean(tmp_path: Path) -> None:
    text = yaml.safe_dump(MINIMAL) + "log: {format: json}\n"
    text = text.replace("token_env: CANVAS_TOKEN", "token_env: CANVAS_TOKEN\n  verify_tls: yes")

    assert problems(tmp_path, text) == ["canvas.verify_tls: must be true or false, not a string"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (config(log={"format": "text"}), "log.format: must be one of 'json' or 'console'"),
        (config(log={"level": "INFO"}), "log.level: must be one of 'debug', 'info', 'warning' or 'error'"),
        (config(feed={"watch": "inotify"}), "feeds[0].watch: must be one of 'events' or 'poll'"),
        (config(feed={"preflight": "strict"}), "feeds[0].preflight: must be one of 'off', 'warn' or 'reject'"),
        (
            config(import_={"diffing_identifier": "x", "diffing_drop_status": "gone"}),
            "feeds[0].import.diffing_drop_status: must be one of 'deleted', 'completed', 'inactive' or "
            "'deleted_last_completed'",
        ),
        (
            config(import_={"diffing_data_set_identifier": "x", "diffing_user_remove_status": "inactive"}),
            "feeds[0].import.diffing_user_remove_status: must be one of 'deleted' or 'suspended'",
        ),
        (
            config(import_={"batch_mode_enrollment_drop_status": "deleted_last_completed"}),
            "feeds[0].import.batch_mode_enrollment_drop_status: must be one of 'deleted', 'completed' or 'inactive'",
        ),
    ],
)
def test_a_value_outside_its_allowed_set_is_refused(tmp_path: Path, data: dict[str, Any], expected: str) -> None:
    assert expected in problems(tmp_path, data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (config(canvas={"timeout_seconds": 0}), "canvas.timeout_seconds: must be greater than 0"),
        (
            config(canvas={"upload_timeout_seconds": float("inf")}),
            "canvas.upload_timeout_seconds: must be a finite number",
        ),
        (config(polling={"clock_skew_seconds": -1}), "polling.clock_skew_seconds: must be greater than 0"),
        (
            config(polling={"max_interval_seconds": 1}),
            "polling.max_interval_seconds: must be at least interval_seconds",
        ),
        (config(feed={"settle_seconds": 0}), "feeds[0].settle_seconds: must be greater than 0"),
        (config(feed={"max_in_flight": 0}), "feeds[0].max_in_flight: must be at least 1"),
        (config(feed={"patterns": []}), "feeds[0].patterns: must not be empty"),
        (
            config(feed={"patterns": ["in/*.csv"]}),
            "feeds[0].patterns[0]: must be a file name pattern without /",
        ),
        (config(feed={"name": "night ly"}), "feeds[0].name: must be 1-64 letters, digits, _ . or -"),
        (config(feed={"drop_dir": ""}), "feeds[0].drop_dir: must not be empty"),
        (
            config(feed={"drop_dir": "~/drop"}),
            "feeds[0].drop_dir: ~ is not expanded here; give the full path",
        ),
        (config(feeds=[]), "feeds: must not be empty"),
        (
            config(canvas={"account_id": "main"}),
            'canvas.account_id: must be digits, "self" or "sis_account_id:<id>"',
        ),
        (
            config(canvas={"account_id": -1}),
            'canvas.account_id: must be digits, "self" or "sis_account_id:<id>"',
        ),
        (config(canvas={"account_id": "١٢"}), 'canvas.account_id: must be digits, "self" or "sis_account_id:<id>"'),
        (config(feed={"name": "nächtlich"}), "feeds[0].name: must be 1-64 letters, digits, _ . or -"),
        (config(import_={"change_threshold": 0}), "feeds[0].import.change_threshold: must be at least 1"),
        (config(import_={"change_threshold": 101}), "feeds[0].import.change_threshold: must be at most 100"),
        (
            config(import_={"diffing_data_set_identifier": "x" * 129}),
            "feeds[0].import.diffing_data_set_identifier: must be at most 128 characters",
        ),
        (
            config(import_={"diffing_data_set_identifier": "x", "diff_row_count_threshold": 1_000_000_000}),
            "feeds[0].import.diff_row_count_threshold: must be at most 999999999",
        ),
        (
            config(import_={"batch_mode": True, "batch_mode_term_id": "2026FA", "change_threshold": 5}),
            'feeds[0].import.batch_mode_term_id: must be a term id (digits) or "sis_term_id:<id>"',
        ),
    ],
)
def test_a_value_out_of_range_is_refused(tmp_path: Path, data: dict[str, Any], expected: str) -> None:
    assert problems(tmp_path, data) == [expected]


def test_a_required_key_that_is_missing_is_named(tmp_path: Path) -> None:
    data = config()
    del data["canvas"]["base_url"]
    del data["feeds"][0]["done_dir"]

    assert problems(tmp_path, data) == ["canvas.base_url: required", "feeds[0].done_dir: required"]


def test_every_problem_is_reported_at_once_each_with_its_dotted_key(tmp_path: Path) -> None:
    data = config(
        canvas={"base_url": "http://canvas.example.edu", "verify_tls": "no"},
        log={"format": "text"},
        import_={"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA"},
    )
    data["feeds"].append({"name": "second", "drop_dir": "/b/drop", "done_dir": "/b/done", "failed_dir": 3, "x": 1})
    path = write(tmp_path, data)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value).splitlines() == [
        f"{path}: canvas.base_url: http:// is allowed only for localhost, 127.0.0.0/8 and ::1; use https://",
        f"{path}: canvas.verify_tls: must be true or false, not a string",
        f"{path}: log.format: must be one of 'json' or 'console'",
        f"{path}: feeds[0].import.change_threshold: required when batch_mode is true",
        f"{path}: feeds[1].failed_dir: must be a path, not a number",
        f"{path}: feeds[1].x: unknown key; known: name, drop_dir, done_dir, failed_dir, work_dir, patterns, "
        "settle_seconds, empty_grace_seconds, rescan_seconds, watch, max_in_flight, max_pending_imports, supersede, "
        "preflight, shrink_guard_percent, skip_duplicates_hours, import, expect_file_every, expect_success_every, "
        "hooks, collect_seconds, collect_max_seconds, manifest, manifest_timeout_seconds, allow_params, term_from_name",
    ]


def test_a_problem_never_quotes_the_value_so_a_token_pasted_in_the_wrong_place_stays_out(
    tmp_path: Path,
) -> None:
    found = problems(tmp_path, config(canvas={"token_env": TOKEN, "verify_tls": TOKEN}))

    assert found == [
        "canvas.token_env: must be an environment variable's name, not the token",
        "canvas.verify_tls: must be true or false, not a string",
    ]
    assert not any(TOKEN in problem for problem in found)


# --- the file itself ----------------------------------------------------------------------------------------


def test_a_yaml_syntax_error_gives_its_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "canvas:\n  base_url: https://x.example\n  account_id: [1\nfeeds: []\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert (
        str(caught.value)
        == f"{path}: line 4, column 6: while parsing a flow sequence; expected ',' or ']', but got ':'"
    )


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    text = yaml.safe_dump(MINIMAL, sort_keys=False)
    line = len(text.splitlines()) + 1

    assert problems(tmp_path, text + "canvas: {}\n") == [f"line {line}, column 1: duplicate key 'canvas'"]


def test_a_missing_file_gives_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == f"{path}: cannot be read: No such file or directory"


@pytest.mark.parametrize(("text", "what"), [("", "an empty value"), ("- a\n- b\n", "a list")])
def test_a_file_that_is_not_a_mapping_gives_one_line(tmp_path: Path, text: str, what: str) -> None:
    assert problems(tmp_path, text) == [f"must be a mapping of keys (canvas:, feeds:, ...), not {what}"]


def test_a_file_that_is_not_utf8_gives_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"canvas:\n  base_url: caf\xe9\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == ["is not UTF-8 text"]


def test_parse_config_takes_loaded_data_for_tests_without_a_file(tmp_path: Path) -> None:
    settings = parse_config(MINIMAL, source=Path("inline"), config_dir=tmp_path)

    assert settings.feeds[0].drop_dir == tmp_path / "sis" / "drop"


# --- the token source and folders ---------------------------------------------------------------------------


def test_both_token_sources_are_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, config(canvas={"token_file": "canvas-token"})) == [
        "canvas.token_file: give only one of token_env and token_file"
    ]


def test_neither_token_source_is_refused(tmp_path: Path) -> None:
    data = config()
    del data["canvas"]["token_env"]

    assert problems(tmp_path, data) == ["canvas.token_env: required: give token_env or token_file"]


def test_a_ca_bundle_with_verify_tls_false_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, config(canvas={"verify_tls": False, "ca_bundle": "/etc/ca.pem"})) == [
        "canvas.ca_bundle: has no effect when verify_tls is false"
    ]


def test_the_four_folders_of_a_feed_must_differ(tmp_path: Path) -> None:
    data = config(feed={"done_dir": "sis/drop", "work_dir": "sis/failed"})

    assert problems(tmp_path, data) == [
        "feeds[0].done_dir: is the same folder as drop_dir",
        "feeds[0].failed_dir: is the same folder as work_dir",
    ]


def test_two_feeds_may_share_neither_a_name_nor_a_folder(tmp_path: Path) -> None:
    data = config()
    data["feeds"].append({"name": "nightly", "drop_dir": "sis/done", "done_dir": "b/done", "failed_dir": "b/failed"})

    assert problems(tmp_path, data) == [
        "feeds[1].name: feeds[0] has this name already",
        f"feeds[1].drop_dir: {tmp_path}/sis/done is feeds[0].done_dir already",
        f"feeds[1].work_dir: {tmp_path}/sis/work-nightly is feeds[0].work_dir already",
    ]


def test_two_feeds_beside_one_another_get_separate_work_folders(tmp_path: Path) -> None:
    data = config()
    data["feeds"].append({"name": "hourly", "drop_dir": "sis/drop2", "done_dir": "sis/d2", "failed_dir": "sis/f2"})

    assert [feed.work_dir.name for feed in load(tmp_path, data).feeds] == ["work-nightly", "work-hourly"]


def test_the_state_file_and_lock_dir_stay_out_of_feed_folders(tmp_path: Path) -> None:
    data = config(state_file="sis/drop/state.json", lock_dir="sis/done")

    assert problems(tmp_path, data) == [
        "state_file: must not be in a feed's folder",
        "lock_dir: must not be a feed's folder",
    ]


# --- Canvas option combinations -----------------------------------------------------------------------------

UNLESS_OVERRIDE = "has no effect unless override_sis_stickiness is true (Canvas ignores it)"
BATCH_AND_DIFFING = "cannot be used with batch mode (Canvas ignores diffing then)"
BATCH = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA", "change_threshold": 10}


def test_batch_mode_with_a_term_and_a_threshold_is_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, config(import_=BATCH)).feeds[0].import_.batch_mode is True


def test_batch_mode_without_change_threshold_is_refused(tmp_path: Path) -> None:
    assert import_problems(tmp_path, {"batch_mode": True, "batch_mode_term_id": 3}) == [
        "feeds[0].import.change_threshold: required when batch_mode is true"
    ]


def test_batch_mode_without_a_term_or_multi_term_batch_mode_is_refused(tmp_path: Path) -> None:
    assert import_problems(tmp_path, {"batch_mode": True, "change_threshold": 10}) == [
        "feeds[0].import.batch_mode_term_id: required when batch_mode is true (else Canvas answers 400)"
    ]


def test_multi_term_batch_mode_takes_the_place_of_a_term(tmp_path: Path) -> None:
    options = {"batch_mode": True, "multi_term_batch_mode": True, "change_threshold": 10}

    assert load(tmp_path, config(import_=options)).feeds[0].import_.multi_term_batch_mode is True


def test_multi_term_batch_mode_without_change_threshold_is_refused(tmp_path: Path) -> None:
    assert import_problems(tmp_path, {"multi_term_batch_mode": True}) == [
        "feeds[0].import.change_threshold: required with multi_term_batch_mode (else Canvas answers 400)"
    ]


def test_multi_term_batch_mode_false_is_refused_because_canvas_tests_it_by_presence(tmp_path: Path) -> None:
    assert import_problems(tmp_path, {"multi_term_batch_mode": False, "change_threshold": 10}) == [
        "feeds[0].import.multi_term_batch_mode: false is not allowed: Canvas turns batch mode on when it is sent"
    ]


def test_multi_term_batch_mode_with_a_term_is_refused_because_canvas_uses_the_term(tmp_path: Path) -> None:
    assert import_problems(tmp_path, {**BATCH, "multi_term_batch_mode": True}) == [
        "feeds[0].import.multi_term_batch_mode: Canvas ignores it when batch_mode_term_id is given; keep one"
    ]


def test_batch_mode_false_with_multi_term_batch_mode_is_refused(tmp_path: Path) -> None:
    options = {"batch_mode": False, "multi_term_batch_mode": True, "change_threshold": 10}

    assert import_problems(tmp_path, options) == [
        "feeds[0].import.batch_mode: is false, but multi_term_batch_mode turns batch mode on"
    ]


def test_a_term_without_batch_mode_is_refused_as_having_no_effect(tmp_path: Path) -> None:
    assert import_problems(tmp_path, {"batch_mode_term_id": "sis_term_id:2026FA"}) == [
        "feeds[0].import.batch_mode_term_id: has no effect unless batch_mode is true"
    ]


@pytest.mark.parametrize("batch", [BATCH, {"multi_term_batch_mode": True, "change_threshold": 10}])
def test_batch_mode_with_a_diffing_identifier_is_refused(tmp_path: Path, batch: dict[str, Any]) -> None:
    assert import_problems(tmp_path, {**batch, "diffing_data_set_identifier": "users"}) == [
        f"feeds[0].import.diffing_data_set_identifier: {BATCH_AND_DIFFING}"
    ]


@pytest.mark.parametrize("key", ["add_sis_stickiness", "clear_sis_stickiness"])
def test_stickiness_options_without_override_are_refused(tmp_path: Path, key: str) -> None:
    expected = [f"feeds[0].import.{key}: {UNLESS_OVERRIDE}"]

    assert import_problems(tmp_path, {key: True}) == expected
    assert import_problems(tmp_path, {key: True, "override_sis_stickiness": False}) == expected
    assert load(tmp_path, config(import_={key: True, "override_sis_stickiness": True})).feeds[0].import_


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("diffing_remaster_data_set", True),
        ("diffing_drop_status", "inactive"),
        ("diffing_user_remove_status", "suspended"),
        ("diff_row_count_threshold", 500),
    ],
)
def test_diffing_options_without_a_diffing_identifier_are_refused(tmp_path: Path, key: str, value: object) -> None:
    assert import_problems(tmp_path, {key: value}) == [
        f"feeds[0].import.{key}: has no effect without diffing_data_set_identifier"
    ]
    assert load(tmp_path, config(import_={key: value, "diffing_data_set_identifier": "users"})).feeds[0]


def test_an_enrollment_drop_status_without_batch_mode_is_refused(tmp_path: Path) -> None:
    assert import_problems(tmp_path, {"batch_mode_enrollment_drop_status": "completed"}) == [
        "feeds[0].import.batch_mode_enrollment_drop_status: has no effect unless batch mode is on"
    ]


def test_every_broken_combination_of_one_feed_is_reported_at_once(tmp_path: Path) -> None:
    options = {"batch_mode": True, "diffing_data_set_identifier": "users", "add_sis_stickiness": True}

    assert import_problems(tmp_path, options) == [
        "feeds[0].import.batch_mode_term_id: required when batch_mode is true (else Canvas answers 400)",
        "feeds[0].import.change_threshold: required when batch_mode is true",
        f"feeds[0].import.add_sis_stickiness: {UNLESS_OVERRIDE}",
        f"feeds[0].import.diffing_data_set_identifier: {BATCH_AND_DIFFING}",
    ]


# --- the form fields sent to Canvas -------------------------------------------------------------------------


def test_form_fields_hold_only_the_options_set_in_a_stable_order_as_canvas_reads_them(tmp_path: Path) -> None:
    options = {
        "change_threshold": 10,
        "skip_deletes": False,
        "batch_mode_term_id": 1234,
        "batch_mode": True,
        "batch_mode_enrollment_drop_status": "inactive",
        "update_sis_id_if_login_claimed": True,
    }
    import_options = load(tmp_path, config(import_=options)).feeds[0].import_

    assert import_options.form_fields() == [
        ("batch_mode", "true"),
        ("batch_mode_term_id", "1234"),
        ("change_threshold", "10"),
        ("skip_deletes", "false"),
        ("update_sis_id_if_login_claimed", "true"),
        ("batch_mode_enrollment_drop_status", "inactive"),
    ]
    assert import_options.set_options() == {
        "batch_mode": True,
        "batch_mode_term_id": "1234",
        "change_threshold": 10,
        "skip_deletes": False,
        "update_sis_id_if_login_claimed": True,
        "batch_mode_enrollment_drop_status": "inactive",
    }


def test_form_fields_of_a_diffing_feed(tmp_path: Path) -> None:
    options = {
        "diffing_data_set_identifier": "campus-users",
        "diffing_remaster_data_set": False,
        "diffing_drop_status": "deleted_last_completed",
        "diffing_user_remove_status": "suspended",
        "diff_row_count_threshold": 999_999_999,
        "change_threshold": 5,
        "override_sis_stickiness": True,
        "clear_sis_stickiness": True,
    }

    assert load(tmp_path, config(import_=options)).feeds[0].import_.form_fields() == [
        ("change_threshold", "5"),
        ("override_sis_stickiness", "true"),
        ("clear_sis_stickiness", "true"),
        ("diffing_data_set_identifier", "campus-users"),
        ("diffing_remaster_data_set", "false"),
        ("diffing_drop_status", "deleted_last_completed"),
        ("diffing_user_remove_status", "suspended"),
        ("diff_row_count_threshold", "999999999"),
    ]


# --- read_token ---------------------------------------------------------------------------------------------


def canvas_with(tmp_path: Path, **canvas: Any) -> Any:
    data = config()
    del data["canvas"]["token_env"]
    data["canvas"].update(canvas)
    return load(tmp_path, data).canvas


def test_the_token_is_read_from_its_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVAS_TOKEN", f" {TOKEN}\n")

    assert read_token(canvas_with(tmp_path, token_env="CANVAS_TOKEN")) == TOKEN


def test_a_relative_token_file_is_read_from_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "canvas-token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))

    assert read_token(canvas_with(tmp_path, token_file="canvas-token")) == TOKEN


def test_an_absolute_token_file_is_read_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "token").write_text(TOKEN)

    assert read_token(canvas_with(tmp_path, token_file=str(tmp_path / "token"))) == TOKEN


def test_a_relative_token_file_without_credentials_directory_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    with pytest.raises(TokenError, match=r"canvas.token_file: canvas-token is relative, .*\$CREDENTIALS_DIRECTORY"):
        read_token(canvas_with(tmp_path, token_file="canvas-token"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "canvas.token_env: the environment variable CANVAS_TOKEN is not set"),
        (" \n", "canvas.token_env: the environment variable CANVAS_TOKEN is empty"),
        (
            f"{TOKEN} {TOKEN}",
            "canvas.token_env: the environment variable CANVAS_TOKEN holds spaces, line breaks or other "
            "characters a header cannot carry",
        ),
        (f"{TOKEN}\n{TOKEN}", None),
        (f"{TOKEN}é", None),
    ],
)
def test_a_bad_token_variable_names_the_key_and_the_variable_but_never_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CANVAS_TOKEN", raising=False)
    else:
        monkeypatch.setenv("CANVAS_TOKEN", value)

    with pytest.raises(TokenError) as caught:
        read_token(canvas_with(tmp_path, token_env="CANVAS_TOKEN"))

    message = str(caught.value)
    assert message.startswith("canvas.token_env: the environment variable CANVAS_TOKEN ")
    assert expected is None or message == expected
    assert TOKEN not in message and TOKEN not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


@pytest.mark.parametrize(
    ("content", "ending"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (
            f"{TOKEN}\n{TOKEN}\n".encode(),
            "holds spaces, line breaks or other characters a header cannot carry",
        ),
        (TOKEN.encode() + b"\xff", "is not UTF-8 text"),
        (TOKEN.encode() * 2000, "is larger than 65536 bytes; is it the token file?"),
    ],
)
def test_a_bad_token_file_names_the_key_and_the_file_but_never_the_token(
    tmp_path: Path, content: bytes | None, ending: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(TokenError) as caught:
        read_token(canvas_with(tmp_path, token_file=str(path)))

    assert str(caught.value) == f"canvas.token_file: {path} {ending}"
    assert caught.value.key == "canvas.token_file"
    assert caught.value.__cause__ is None and caught.value.__context__ is None


# --- check_runtime ------------------------------------------------------------------------------------------


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config whose folders, state folder and token all exist; returns the config file's path."""
    monkeypatch.setenv("CANVAS_TOKEN", TOKEN)
    for name in ("drop", "done", "failed"):
        (tmp_path / "sis" / name).mkdir(parents=True)
    (tmp_path / "state").mkdir()
    return write(tmp_path, config(state_file="state/state.json", lock_dir="lock"))


def entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_check_runtime_finds_nothing_wrong_and_leaves_no_probe_behind(machine: Path) -> None:
    settings = load_config(machine)

    assert check_runtime(settings) == []
    for folder in settings.feeds[0].folders().values():
        assert entries(folder) == []


def test_check_runtime_creates_a_missing_work_dir_with_mode_0750(machine: Path) -> None:
    work_dir = load_config(machine).feeds[0].work_dir
    assert not work_dir.exists()

    assert check_runtime(load_config(machine)) == []
    assert stat.S_IMODE(work_dir.stat().st_mode) == 0o750


def test_check_runtime_names_a_missing_folder_by_key(machine: Path) -> None:
    done_dir = machine.parent / "sis" / "done"
    done_dir.rmdir()

    assert check_runtime(load_config(machine)) == [f"feeds[0].done_dir: {done_dir} does not exist"]


def test_check_runtime_names_a_file_where_a_folder_should_be(machine: Path) -> None:
    failed_dir = machine.parent / "sis" / "failed"
    failed_dir.rmdir()
    failed_dir.write_text("")

    assert check_runtime(load_config(machine)) == [f"feeds[0].failed_dir: {failed_dir} is not a folder"]


def test_check_runtime_for_check_config_only_says_that_run_will_create_the_work_dir(machine: Path) -> None:
    settings = load_config(machine)
    work_dir = settings.feeds[0].work_dir

    assert check_runtime(settings, create_work_dirs=False) == []
    assert not work_dir.exists() and entries(work_dir.parent) == ["done", "drop", "failed"]  # no probe left either
    assert work_dirs_to_create(settings) == [
        f"feeds[0].work_dir: {work_dir} does not exist; `sisdaemon run` creates it (mode 0750)"
    ]


def test_check_runtime_accepts_a_missing_lock_dir_that_can_be_created(machine: Path) -> None:
    data = yaml.safe_load(machine.read_text())
    data["lock_dir"] = "run/lock/sisdaemon"

    assert check_runtime(load(machine.parent, data)) == []
    assert not (machine.parent / "run").exists()


def test_check_runtime_does_not_create_a_work_dir_whose_parent_is_missing(machine: Path) -> None:
    data = yaml.safe_load(machine.read_text())
    data["feeds"][0]["work_dir"] = "elsewhere/work"
    settings = load(machine.parent, data)

    assert check_runtime(settings) == [f"feeds[0].work_dir: {machine.parent}/elsewhere/work does not exist"]


def test_check_runtime_finds_one_folder_under_two_names(machine: Path) -> None:
    (machine.parent / "sis" / "failed").rmdir()
    (machine.parent / "sis" / "failed").symlink_to("done")

    assert check_runtime(load_config(machine)) == [
        f"feeds[0].failed_dir: {machine.parent}/sis/failed is the same folder as feeds[0].done_dir"
    ]


def test_check_runtime_says_when_folders_are_on_different_mounts(machine: Path) -> None:
    def rename_across_mounts(source: Path, target: Path) -> None:
        if target.parent.name == "failed":
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        os.rename(source, target)

    settings = load_config(machine)

    assert check_runtime(settings, rename=rename_across_mounts) == [
        f"feeds[0].failed_dir: files cannot be renamed between drop_dir and {settings.feeds[0].failed_dir}: "
        "not on one mount (a bind mount, as systemd's ReadWritePaths= makes, is another)"
    ]
    assert entries(settings.feeds[0].drop_dir) == []


def test_check_runtime_proves_renames_on_a_real_second_mount(machine: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(machine.parent).st_dev or not os.access(shm, os.W_OK):
        pytest.skip("needs a writable /dev/shm on another filesystem")
    failed_dir = shm / f"sisdaemon-test-{os.getpid()}-failed"
    failed_dir.mkdir()
    try:
        data = yaml.safe_load(machine.read_text())
        data["feeds"][0]["failed_dir"] = str(failed_dir)

        [problem] = check_runtime(load(machine.parent, data))

        assert problem.startswith(f"feeds[0].failed_dir: files cannot be renamed between drop_dir and {failed_dir}")
        assert entries(failed_dir) == [] and entries(machine.parent / "sis" / "drop") == []
    finally:
        failed_dir.rmdir()


def test_check_runtime_names_the_state_folder_lock_dir_token_and_ca_bundle(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CANVAS_TOKEN")
    data = yaml.safe_load(machine.read_text())
    (machine.parent / "a-file").write_text("")
    data.update(state_file="nowhere/state.json", lock_dir="a-file/lock")
    data["canvas"]["ca_bundle"] = "ca.pem"
    base = machine.parent

    assert check_runtime(load(base, data)) == [
        "canvas.token_env: the environment variable CANVAS_TOKEN is not set",
        f"canvas.ca_bundle: {base}/ca.pem is not a readable file",
        f"state_file: the folder {base}/nowhere does not exist",
        f"lock_dir: {base}/a-file/lock cannot be created: {base}/a-file is not a folder",
    ]


def test_check_runtime_never_includes_the_token(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVAS_TOKEN", f"{TOKEN} trailing-part")

    found = check_runtime(load_config(machine))

    assert len(found) == 1 and found[0].startswith("canvas.token_env: ")
    assert TOKEN not in found[0] and "trailing-part" not in found[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_runtime_names_a_folder_this_user_cannot_write(machine: Path) -> None:
    done_dir = machine.parent / "sis" / "done"
    done_dir.chmod(0o500)
    try:
        assert check_runtime(load_config(machine)) == [
            f"feeds[0].done_dir: {done_dir} is not readable and writable by this user"
        ]
    finally:
        done_dir.chmod(0o700)


def test_feed_settings_can_be_built_directly_in_other_tests(tmp_path: Path) -> None:
    feed = FeedSettings.model_validate(
        {
            "name": "a",
            "drop_dir": tmp_path / "drop",
            "done_dir": tmp_path / "done",
            "failed_dir": tmp_path / "failed",
        }
    )

    assert feed.work_dir == tmp_path / "work-a"


def test_percent_i_in_a_path_is_the_instance_named_by_the_config_file(tmp_path: Path) -> None:
    data = {
        "canvas": {"base_url": "https://canvas.example.edu", "account_id": "1", "token_env": "T"},
        "state_file": "/var/lib/sisdaemon/%i/state.json",
        "feeds": [{"name": "a", "drop_dir": "/srv/%i/drop", "done_dir": "/srv/%i/done", "failed_dir": "/srv/%i/f"}],
    }
    nightly = parse_config(data, source=tmp_path / "nightly.yaml", config_dir=tmp_path)
    grades = parse_config(data, source=tmp_path / "grades.yaml", config_dir=tmp_path)
    assert nightly.state_file == Path("/var/lib/sisdaemon/nightly/state.json")
    assert grades.state_file == Path("/var/lib/sisdaemon/grades/state.json")
    assert grades.feeds[0].drop_dir == Path("/srv/grades/drop")


@pytest.mark.parametrize("sets", [{"collect_seconds": 30}, {"manifest": "*.manifest"}])
def test_per_file_options_are_refused_on_a_feed_that_sends_sets_naming_both_keys(
    tmp_path: Path, sets: dict[str, Any]
) -> None:
    # A set is one import with the feed's options: a member's params file or a term from its name cannot apply (a
    # params file there would otherwise lie in drop/ unread).
    found = problems(
        tmp_path,
        config(
            feed={**sets, "allow_params": ["batch_mode_term_id"], "term_from_name": "enrollments_{term}.csv"},
            import_={"change_threshold": 10},
        ),
    )
    assert any(line.startswith("feeds[0].allow_params: cannot be used on a feed that sends sets") for line in found)
    assert any(line.startswith("feeds[0].term_from_name: cannot be used on a feed that sends sets") for line in found)
    assert load(tmp_path, config(feed={"allow_params": ["batch_mode_term_id"]})).feeds[0].allow_params  # alone: fine
