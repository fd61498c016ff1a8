"""Config drift (drift.py), pure: the file on disk against what the running daemon loaded; and how the probe judges
it, and where the state of a config that does not load is found (config.state_file_of, on real files)."""

from __future__ import annotations

from pathlib import Path

from sisdaemon.config import read_config_file, state_file_of
from sisdaemon.drift import RunningConfig, compare
from sisdaemon.heartbeat import Beat
from sisdaemon.probe import CRITICAL, OK, WARNING, Facts, FeedFacts, Thresholds, judge

NOW = 1_800_000_000.0
OLD = "a" * 64
NEW = "b" * 64
PATH = "/etc/sisdaemon/nightly.yaml"


def running(sha256: str = OLD, pending: tuple[str, ...] = ()) -> RunningConfig:
    return RunningConfig(PATH, sha256, NOW - 3600, pending)


def test_the_file_the_daemon_loaded_is_no_drift() -> None:
    drift = compare(path=PATH, file_sha256=OLD, running=running(), problems=(), instance="nightly")
    assert not drift.changed and drift.findings() == [] and drift.probe_problems() == []
    assert drift.as_dict() == {
        "path": PATH,
        "file_sha256": OLD,
        "running_sha256": OLD,
        "loaded_at": "2027-01-15T07:00:00Z",
        "config_changed": False,
        "config_would_fail_at_start": [],
        "config_needs_restart": [],
    }


def test_a_changed_file_that_loads_is_a_warning_with_the_reload_to_run() -> None:
    drift = compare(path=PATH, file_sha256=NEW, running=running(), problems=(), instance="nightly")
    assert drift.changed
    [finding] = drift.findings()
    assert finding.code == "config_changed" and not finding.critical
    assert finding.text.startswith(f"config_changed: {PATH} changed on disk since the daemon loaded it at ")
    assert "sisdaemon check-config -c /etc/sisdaemon/nightly.yaml" in finding.text
    assert "systemctl reload sisdaemon@nightly" in finding.text
    [problem] = drift.probe_problems()
    assert not problem.critical and "systemctl reload sisdaemon@nightly" in problem.text


def test_a_file_that_no_longer_loads_names_each_problem_on_its_own_line_and_is_critical() -> None:
    problems = ("feeds[0].import.change_threshold: required when batch_mode is true", "feeds[0].colour: unknown key")
    drift = compare(path=PATH, file_sha256=NEW, running=running(), problems=problems, instance="nightly")
    found = drift.findings()
    assert [finding.code for finding in found] == ["config_would_fail_at_start"] * 3 + ["config_changed"]
    assert found[0].critical and "sisdaemon@nightly would fail (exit 78)" in found[0].text
    assert "the daemon runs the version it loaded at" in found[0].text
    assert [finding.text for finding in found[1:3]] == [f"config_would_fail_at_start: {p}" for p in problems]
    assert "fix it first" in found[3].text and "systemctl reload" not in found[3].text
    critical = drift.probe_problems()[0]
    assert critical.critical and critical.text == f"config would fail at start ({PATH}): {'; '.join(problems)}"


def test_with_no_daemon_running_only_a_start_that_would_fail_is_said() -> None:
    assert compare(path=PATH, file_sha256=NEW, running=None, problems=(), instance="x").findings() == []
    drift = compare(path=PATH, file_sha256=NEW, running=None, problems=("canvas: required",), instance="x")
    assert not drift.changed and "no daemon runs on it now" in drift.findings()[0].text


def test_keys_waiting_for_a_restart_are_said_while_the_file_is_the_one_loaded() -> None:
    waiting = running(pending=("canvas", "feeds[nightly].drop_dir"))
    drift = compare(path=PATH, file_sha256=OLD, running=waiting, problems=(), instance="nightly")
    [finding] = drift.findings()
    assert finding.code == "config_needs_restart" and not finding.critical
    assert "canvas, feeds[nightly].drop_dir" in finding.text and "systemctl restart sisdaemon@nightly" in finding.text
    # Once the file changed again, what the running version left waiting is not what the file holds: only the change.
    later = compare(path=PATH, file_sha256=NEW, running=waiting, problems=(), instance="nightly")
    assert [finding.code for finding in later.findings()] == ["config_changed"]


def test_the_running_config_record_round_trips_and_an_older_or_odd_record_is_none() -> None:
    record = running(pending=("lock_dir",))
    assert RunningConfig.from_dict(record.to_dict()) == record
    assert RunningConfig.from_dict(None) is None
    assert RunningConfig.from_dict({"path": PATH, "sha256": OLD, "loaded_at": True}) is None
    assert RunningConfig.from_dict({"path": PATH, "sha256": OLD}) is None


def facts(**kwargs: object) -> Facts:
    found = Facts(running=True, beat=Beat(pid=1, started_at=NOW - 60, turned_at=NOW - 1), feeds=[FeedFacts("a")])
    for key, value in kwargs.items():
        setattr(found, key, value)
    return found


def test_the_probe_warns_of_a_changed_file_and_is_critical_for_one_that_would_fail() -> None:
    same = compare(path=PATH, file_sha256=OLD, running=running(), problems=(), instance="nightly")
    assert judge(facts(drift=same), Thresholds(), NOW).code == OK
    changed = compare(path=PATH, file_sha256=NEW, running=running(), problems=(), instance="nightly")
    verdict = judge(facts(drift=changed), Thresholds(), NOW)
    assert verdict.code == WARNING and verdict.problems[0].startswith("config changed on disk since the daemon")
    broken = compare(path=PATH, file_sha256=NEW, running=running(), problems=("canvas: required",), instance="n")
    verdict = judge(facts(drift=broken), Thresholds(), NOW)
    assert verdict.code == CRITICAL and verdict.problems[0] == f"config would fail at start ({PATH}): canvas: required"
    # A config that no longer says where the state is: whether a daemon runs is not claimed either way.
    unknown = judge(Facts(running=False, state_known=False, drift=broken), Thresholds(), NOW)
    assert unknown.code == CRITICAL and not any("not running" in text for text in unknown.problems)


def test_the_state_of_a_config_that_does_not_load_is_found_from_its_state_file_key(tmp_path: Path) -> None:
    config = tmp_path / "nightly.yaml"
    config.write_text("state_file: state/%i.json\ncanvas: {base_url: 42}\n")
    assert state_file_of(read_config_file(config)) == tmp_path / "state" / "nightly.json"
    config.write_text("state_file: '/srv/state.json'  # here\ncanvas:\n\tbase_url: x\n")  # a tab: not YAML
    assert state_file_of(read_config_file(config)) == Path("/srv/state.json")
    config.write_text("canvas: [\n")
    assert state_file_of(read_config_file(config)) == Path("/var/lib/sisdaemon/state.json")  # the default
    config.write_text("state_file: 12\n")
    assert state_file_of(read_config_file(config)) is None
