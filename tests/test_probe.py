"""The probe's verdict (probe.judge), pure: facts and thresholds in, exit code, problems and perfdata out."""

from __future__ import annotations

from pathlib import Path

from sisdaemon.heartbeat import Beat
from sisdaemon.probe import CRITICAL, OK, UNKNOWN, WARNING, Facts, FeedFacts, Thresholds, judge, oldest_waiting

NOW = 1_800_000_000.0


def running(**kwargs: object) -> Facts:
    facts = Facts(running=True, beat=Beat(pid=1, started_at=NOW - 60, turned_at=NOW - 1), feeds=[FeedFacts("a")])
    for key, value in kwargs.items():
        setattr(facts, key, value)
    return facts


def test_a_healthy_daemon_is_ok_with_its_perfdata() -> None:
    verdict = judge(running(), Thresholds(), NOW)
    assert verdict.code == OK
    assert verdict.line() == (
        "SISDAEMON OK - 1 feed(s) fresh, daemon running, 0 in flight | in_flight=0 oldest_in_flight=0s;14400;86400;0 "
        "held=0 paused=0 stale=0 failed=0 heartbeat_age=1s;;120;0"
    )


def test_a_held_feed_or_a_credential_fault_is_critical_a_paused_feed_or_canvas_down_a_warning() -> None:
    assert judge(running(held={"a": "404 for the term"}), Thresholds(), NOW).code == CRITICAL
    assert judge(running(fault={"kind": "credential", "message": "401"}), Thresholds(), NOW).code == CRITICAL
    paused = judge(running(paused={"a": {"reason": "term change", "by": "ops", "at": NOW}}), Thresholds(), NOW)
    assert paused.code == WARNING and paused.problems == ("feed a paused: term change",)
    assert judge(running(fault={"kind": "transient", "message": "503"}), Thresholds(), NOW).code == WARNING


def test_the_most_severe_problem_comes_first() -> None:
    verdict = judge(running(running=False, paused={"a": {}}), Thresholds(), NOW)
    assert verdict.code == CRITICAL
    assert verdict.problems[0].startswith("daemon not running") and verdict.problems[1] == "feed a paused"


def test_a_stale_feed_counts_from_the_daemon_s_start_when_it_never_had_a_file() -> None:
    fresh = running(feeds=[FeedFacts("a", expect_file_every=3600)])
    assert judge(fresh, Thresholds(), NOW).code == OK
    stale = judge(fresh, Thresholds(heartbeat=7200), NOW + 3600)
    assert stale.code == WARNING
    assert stale.problems == ("feed a: no file since the daemon started 1h 1m ago (expected every 1h)",)


def test_an_unreadable_state_is_unknown() -> None:
    verdict = judge(Facts(unreadable="cannot read the state: /x: Permission denied"), Thresholds(), NOW)
    assert verdict.code == UNKNOWN and verdict.line().startswith("SISDAEMON UNKNOWN - cannot read the state")


def test_files_waiting_in_drop_past_the_stuck_thresholds_warn_then_turn_critical() -> None:
    # Files nothing takes (a manifest that never came, a paused feed, a backlog) must not leave the probe green.
    def waited(seconds: float) -> Facts:
        return running(feeds=[FeedFacts("a", oldest_waiting_at=NOW - seconds)])

    assert judge(waited(3600), Thresholds(), NOW).code == OK
    warned = judge(waited(5 * 3600), Thresholds(), NOW)
    assert warned.code == WARNING and warned.problems == ("files waiting in drop/ for 5h (feeds a): see status",)
    assert judge(waited(25 * 3600), Thresholds(), NOW).code == CRITICAL


def test_the_oldest_waiting_file_is_the_oldest_one_the_feed_would_take(tmp_path: Path) -> None:
    assert oldest_waiting(tmp_path, ("*.csv",)) is None
    for name in ("users.csv", ".users.csv.tmp", "notes.txt", "users.csv.params.yaml"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub.csv").mkdir()
    taken = (tmp_path / "users.csv").stat().st_ctime
    assert oldest_waiting(tmp_path, ("*.csv",)) == taken
    assert oldest_waiting(tmp_path / "gone", ("*.csv",)) is None
