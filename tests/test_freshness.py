"""Feed freshness, the pure decision (freshness.py), and the durations it is configured with."""

from __future__ import annotations

import pytest

from sisdaemon.config.durations import format_duration, parse_duration
from sisdaemon.freshness import FILE, SUCCESS, judge, newest

HOUR = 3600.0
START = 1_800_000_000.0


def verdicts(**kwargs: float | None) -> dict[str, bool]:
    arguments: dict[str, float | None] = {
        "started_at": START,
        "last_file_at": None,
        "last_success_at": None,
        "expect_file_every": 26 * HOUR,
        "expect_success_every": None,
        **kwargs,
    }
    now = arguments.pop("now")
    assert now is not None
    return {verdict.expectation: verdict.stale for verdict in judge("nightly", now=now, **arguments)}  # type: ignore[arg-type]


def test_a_fresh_install_is_not_stale_before_one_window_has_passed_since_the_start() -> None:
    assert verdicts(now=START + 25 * HOUR) == {FILE: False}
    assert verdicts(now=START + 27 * HOUR) == {FILE: True}


def test_a_feed_is_stale_once_its_window_passed_since_its_last_file_and_fresh_again_with_a_new_one() -> None:
    last = START - 30 * HOUR  # an earlier run's file: the window runs from it, not from this start
    assert verdicts(now=START + HOUR, last_file_at=last) == {FILE: True}
    assert verdicts(now=START + HOUR, last_file_at=START + 0.5 * HOUR) == {FILE: False}


def test_success_has_its_own_window_and_a_failed_file_does_not_reset_it() -> None:
    result = verdicts(
        now=START + 50 * HOUR,
        last_file_at=START + 49 * HOUR,
        last_success_at=START + HOUR,
        expect_success_every=48 * HOUR,
    )
    assert result == {FILE: False, SUCCESS: True}


def test_without_a_window_or_anything_to_count_from_nothing_is_judged() -> None:
    assert verdicts(now=START, expect_file_every=None) == {}
    assert verdicts(now=START + 100 * HOUR, started_at=None) == {}


def test_the_sentence_says_how_long_and_what_was_expected() -> None:
    [verdict] = judge(
        "nightly",
        now=START + 27 * HOUR,
        started_at=START,
        last_file_at=START,
        last_success_at=None,
        expect_file_every=26 * HOUR,
        expect_success_every=None,
    )
    assert verdict.sentence() == "feed nightly: no file for 1d 3h (expected every 1d 2h)"
    assert verdict.due_at == START + 26 * HOUR


def test_newest_ignores_unknown_times() -> None:
    assert newest(None, 3.0, 1.0) == 3.0
    assert newest(None) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("26h", 26 * HOUR), ("90m", 5400), ("1d12h", 36 * HOUR), ("45s", 45), ("1w", 7 * 24 * HOUR), ("1.5h", 5400)],
)
def test_a_duration_is_a_number_with_a_unit_parts_adding_up(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["26", "26 hours", "h", "", "-1h", "0h", "1y"])
def test_anything_else_is_refused_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than 0"):
        parse_duration(text)


def test_a_duration_reads_shortly() -> None:
    assert [format_duration(value) for value in (12, 300, 26 * HOUR, 27 * HOUR + 65)] == ["12s", "5m", "1d 2h", "1d 3h"]
