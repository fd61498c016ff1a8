"""The state and history files on real folders: damaged shapes are refused by name, valid ones load back."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sisdaemon import history as history_module
from sisdaemon import jobs, polling
from sisdaemon.jobs import AbortReason, Fingerprint, JobState, Outcome
from sisdaemon.state import HISTORY_LIMIT, History, State, StateError, StateStore, history_path

NOW = 1_800_000_000.0


def a_job(job_id: str = "ab12", **changes: Any) -> jobs.Job:
    job = jobs.claim(job_id, "nightly", "users.csv", Fingerprint(7, 100, 5), seen_at=NOW - 20, now=NOW)
    return dataclasses.replace(job, **changes)


def job_dict(job_id: str = "ab12", **changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(a_job(job_id).to_dict()))
    data.update(changes)
    return data


def write(path: Path, value: Any) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
    return path


# --- the state file -----------------------------------------------------------------------------------------


def test_a_saved_state_with_every_kind_of_value_loads_back_equal(tmp_path: Path) -> None:
    busy = a_job(
        "cd34",
        name="caf\udce9.csv",  # a non-UTF-8 byte in a dropped name, kept by Python as a lone surrogate
        state=JobState.SUBMITTED,
        attempts=2,
        tag=1_000_000_123,
        old_tags=(1_000_000_001,),
        dead_import_ids=(5, 6),
        import_id=7,
        sis_import={"id": 7, "workflow_state": "created", "data": {"counts": {"users": 3}}},
        progress="12%",
        abort_reason=AbortReason.TIMED_OUT,
        outcome=Outcome.FAILED,
        notes=("one", "two"),
        zip_members=("users.csv",),
        poll_interval=5,
    )
    state = State(
        jobs={"ab12": a_job(), "cd34": busy},
        tags_echoed=True,
        held={"nightly": "HTTP 400: bad option"},
        account_id=1,
        fault={"kind": "transient", "message": "HTTP 502", "since": NOW, "count": 2},
    )
    store = StateStore(tmp_path / "state.json")
    store.save(state)

    assert store.load() == state


def test_a_jobs_stored_form_is_every_field_as_json_and_the_state_file_one_compact_line(tmp_path: Path) -> None:
    mapping = {"by": "ops", "at": "2026-01-01T00:00:00Z", "nested": {"list": [1, 2], "none": None}}
    busy = a_job(
        "ef56",
        state=JobState.SUBMITTED,
        old_tags=(1_000_000_001,),
        dead_import_ids=(5,),
        abort_reason=AbortReason.FILE_CHANGED,
        outcome=Outcome.IMPORTED,
        notes=("one",),
        zip_members=("users.csv",),
        **{
            name: mapping
            for name in ("sis_import", "retry_of", "aborted_by", "preflight", "scan", "guard", "diff", "duplicate_of")
        },
        released_by=mapping,
    )
    stored = busy.to_dict()
    # The same JSON as the deep copy dataclasses.asdict made before (issue 9 made it shallow), and it loads back.
    assert json.dumps(stored, sort_keys=True) == json.dumps(dataclasses.asdict(busy), sort_keys=True)
    assert jobs.Job.from_dict(json.loads(json.dumps(stored))) == busy
    assert stored["sis_import"] is busy.sis_import  # shared, not copied

    store = StateStore(tmp_path / "state.json")
    store.save(State(jobs={"ef56": busy}))
    text = store.path.read_text()
    assert text.endswith("}\n") and text.count("\n") == 1 and '": ' not in text and ", " not in text
    assert store.load() == State(jobs={"ef56": busy})


def test_a_state_file_in_the_format_already_on_disk_still_loads(tmp_path: Path) -> None:
    on_disk = {
        "version": 1,
        "jobs": [job_dict()],
        "tags_echoed": None,
        "held": {},
        "account_id": None,
        "fault": None,
    }
    loaded = StateStore(write(tmp_path / "state.json", on_disk)).load()
    assert list(loaded.jobs) == ["ab12"] and loaded.jobs["ab12"] == a_job()


def test_a_missing_state_file_is_a_fresh_state(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "state.json").load() == State()


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ([], "top level"),
        ("x", "top level"),
        (None, "top level"),
        ({"version": 1, "jobs": None}, "jobs"),
        ({"version": 1, "jobs": "abc"}, "jobs"),
        ({"version": 1, "jobs": [42]}, "jobs[0]"),
        (
            {"version": 1, "jobs": [{k: v for k, v in job_dict().items() if k != "fingerprint"}]},
            "jobs.ab12.fingerprint",
        ),
        ({"version": 1, "jobs": [job_dict(size="big")]}, "jobs.ab12.size"),
        ({"version": 1, "jobs": [job_dict(state="lost")]}, "jobs.ab12.state"),
        ({"version": 1, "jobs": [job_dict(fingerprint={"ino": 1})]}, "jobs.ab12.fingerprint.size"),
        ({"version": 1, "jobs": [job_dict(old_tags="1,2")]}, "jobs.ab12.old_tags"),
        ({"version": 1, "jobs": [{k: v for k, v in job_dict().items() if k != "job_id"}]}, "jobs[0].job_id"),
        ({"version": 1, "tags_echoed": "yes"}, "tags_echoed"),
        ({"version": 1, "held": ["nightly"]}, "held"),
        ({"version": 1, "account_id": "1"}, "account_id"),
        ({"version": 1, "fault": {"kind": "transient", "message": 5}}, "fault.message"),
        ({"jobs": []}, "version"),
        ({"version": 1, "jobz": []}, "jobz"),
    ],
)
def test_a_state_file_of_the_wrong_shape_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, content: Any, names: str
) -> None:
    path = write(tmp_path / "state.json", json.dumps(content))
    with pytest.raises(StateError) as caught:
        StateStore(path).load()
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert f": {names}: " in message
    assert "\n" not in message


def test_a_job_missing_a_field_is_named_by_its_job_id(tmp_path: Path) -> None:
    content = {"version": 1, "jobs": [{k: v for k, v in job_dict().items() if k != "fingerprint"}]}
    path = write(tmp_path / "state.json", content)
    with pytest.raises(StateError) as caught:
        StateStore(path).load()
    assert str(caught.value).startswith(f"{path}: jobs.ab12.fingerprint: field required")


def test_a_state_file_that_is_not_json_or_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for content in (b"{", b"", b'{"version": 1, "held": {"\xff": "x"}}'):
        path.write_bytes(content)
        with pytest.raises(StateError, match=f"^{path}: "):
            StateStore(path).load()


def test_a_state_file_of_another_version_is_refused_by_version(tmp_path: Path) -> None:
    path = write(tmp_path / "state.json", {"version": 2, "jobs": []})
    with pytest.raises(StateError, match="state version 2 is not 1"):
        StateStore(path).load()


# --- the history file ---------------------------------------------------------------------------------------


def a_record(job_id: str = "ab12", **changes: Any) -> dict[str, Any]:
    record = {
        "job_id": job_id,
        "file": "users.csv",
        "work_name": f"20270115T080000Z_{job_id}_users.csv",
        "import_id": 7,
        "outcome": "imported",
        "folder": "done",
        "finished_at": NOW,
        "sha256": "0" * 64,
        "size": 100,
        "reason_code": None,
    }
    record.update(changes)
    return record


def test_a_saved_history_loads_back_with_its_records_ids_and_counts(tmp_path: Path) -> None:
    path = history_path(tmp_path / "state.json", "nightly")
    history = History(path)
    history.note_import(7)
    history.add(a_record(), {"users": 3}, success=True)
    history.add(a_record("cd34", file="caf\udce9.csv", outcome="failed", folder="failed"), None, success=False)
    history.save()

    again = History(path)
    assert again.records == history.records
    assert again.import_ids == [7]
    assert again.last_counts == {"users": 3}
    assert (again.last_file_at, again.last_success_at) == (NOW, NOW)


def test_a_history_file_in_the_format_already_on_disk_still_loads(tmp_path: Path) -> None:
    on_disk = {
        "version": 1,
        "records": [a_record(), {"job_id": "old1", "file": "a.csv", "import_id": None, "finished_at": 17}],
        "import_ids": [7],
        "last_counts": {"users": 3},
        "last_file_at": NOW,
        "last_success_at": None,
    }
    history = History(write(tmp_path / "state.history.nightly.json", on_disk))
    assert [record["job_id"] for record in history.records] == ["ab12", "old1"]
    assert history.import_ids == [7]


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ([], "top level"),
        ("x", "top level"),
        ({}, "version"),
        ({"records": None}, "version"),
        ({"version": 1, "records": None}, "records"),
        ({"version": 1, "records": [{"file": "a.csv"}]}, "records[0].job_id"),
        ({"version": 1, "records": [a_record(import_id="seven")]}, "records.ab12.import_id"),
        ({"version": 1, "import_ids": "abc"}, "import_ids"),
        ({"version": 1, "import_ids": [1, "2"]}, "import_ids[1]"),
        ({"version": 1, "last_counts": {"users": "many"}}, "last_counts.users"),
        ({"version": 1, "last_success_at": "yesterday"}, "last_success_at"),
    ],
)
def test_a_history_file_of_the_wrong_shape_is_damaged_never_silently_empty(
    tmp_path: Path, content: Any, names: str
) -> None:
    path = write(tmp_path / "state.history.nightly.json", json.dumps(content))
    with pytest.raises(StateError) as caught:
        History(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert f": {names}: " in message


# --- through the real command -------------------------------------------------------------------------------


def run_with(
    tmp_path: Path, *, state: str | None = None, history: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``sisdaemon run`` in a subprocess on a config whose Canvas is never reached (the files are read first)."""
    for name in ("drop", "done", "failed"):
        (tmp_path / name).mkdir()
    state_file = tmp_path / "state" / "state.json"
    state_file.parent.mkdir()
    if state is not None:
        state_file.write_text(state, encoding="utf-8")
    if history is not None:
        history_path(state_file, "nightly").write_text(history, encoding="utf-8")
    config = {
        "canvas": {"base_url": "http://127.0.0.1:9", "account_id": "1", "token_env": "SISDAEMON_TEST_TOKEN"},
        "state_file": str(state_file),
        "lock_dir": str(tmp_path / "locks"),
        "feeds": [
            {
                "name": "nightly",
                "drop_dir": str(tmp_path / "drop"),
                "done_dir": str(tmp_path / "done"),
                "failed_dir": str(tmp_path / "failed"),
            }
        ],
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    environment = {**os.environ, "SISDAEMON_TEST_TOKEN": "7~TestTokenForTheDamagedStateRun0123456789"}
    return subprocess.run(
        [sys.executable, "-m", "sisdaemon", "run", "-c", str(config_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("content", ["[]", '"x"', '{"version": 1, "jobs": [{"job_id": "ab12"}]}'])
def test_run_on_a_damaged_state_file_exits_65_not_restarted_with_one_line_naming_the_file(
    tmp_path: Path, content: str
) -> None:
    result = run_with(tmp_path, state=content)

    assert result.returncode == 65, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["state_damaged"]
    assert "state.json: " in lines[0]["error"]


def test_run_on_a_damaged_history_file_exits_65_naming_the_file_and_field(tmp_path: Path) -> None:
    result = run_with(tmp_path, history='{"version": 1, "records": null}')

    assert result.returncode == 65, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["state_damaged"]
    assert "state.history.nightly.json: records: " in lines[0]["error"]


# --- recording a finished job is idempotent -----------------------------------------------------------------


def test_a_job_recorded_again_after_a_restart_adds_no_second_record(tmp_path: Path) -> None:
    path = history_path(tmp_path / "state.json", "nightly")
    first = History(path)
    first.add(a_record(), {"users": 3}, success=True)
    first.save()  # ... killed here, before the state file dropped the job: the restart files it again

    again = History(path)
    again.add(a_record(finished_at=NOW + 60), {"users": 3}, success=True)
    again.save()

    final = History(path)
    assert [record["job_id"] for record in final.records] == ["ab12"]
    assert final.records[0]["finished_at"] == NOW
    assert (final.last_file_at, final.last_success_at) == (NOW, NOW)
    assert final.last_counts == {"users": 3}


def test_a_second_add_of_the_same_job_in_one_run_changes_nothing(tmp_path: Path) -> None:
    history = History(history_path(tmp_path / "state.json", "nightly"))
    history.add(a_record(), {"users": 3}, success=True)
    history.add(a_record("cd34", finished_at=NOW + 10), {"users": 5}, success=True)
    before = history.to_dict()

    history.add(a_record(finished_at=NOW + 20, outcome="failed"), {"users": 9}, success=False)

    assert history.to_dict() == before
    assert [record["job_id"] for record in history.records] == ["ab12", "cd34"]


def test_duplicate_records_left_by_an_older_version_are_read_once(tmp_path: Path) -> None:
    content = {"version": 1, "records": [a_record(), a_record("cd34"), a_record(finished_at=NOW + 5)]}
    history = History(write(tmp_path / "state.history.nightly.json", content))
    assert [(record["job_id"], record["finished_at"]) for record in history.records] == [("ab12", NOW), ("cd34", NOW)]


# --- the history is appended to, a line per change ----------------------------------------------------------


def test_a_finished_file_costs_one_appended_line_whatever_the_history_already_holds(tmp_path: Path) -> None:
    path = history_path(tmp_path / "state.json", "nightly")
    history = History(path)
    history.add(a_record("first"), {"users": 1}, success=True)
    history.save()
    growth = []
    for number in range(HISTORY_LIMIT - 10):
        before = path.stat().st_size
        history.add(a_record(f"job{number:05d}"), {"users": number}, success=True)
        history.save()
        growth.append(path.stat().st_size - before)
    assert max(growth) - min(growth) <= 2  # the job ids' lengths are the same: each append is one line's bytes
    assert max(growth) < 400
    assert History(path).records == history.records


def test_the_history_is_compacted_now_and_then_keeping_the_newest_records_and_the_summary(tmp_path: Path) -> None:
    path = history_path(tmp_path / "state.json", "nightly")
    history = History(path)
    for number in range(HISTORY_LIMIT * 3):
        history.note_import(number)
        history.add(a_record(f"job{number:05d}", finished_at=NOW + number), {"users": number}, success=True)
        history.save()
    lines = path.read_text().splitlines()
    assert len(lines) <= history_module.COMPACT_AFTER  # rewritten whole once it had that many lines
    again = History(path)
    assert len(again.records) == HISTORY_LIMIT
    assert again.records[-1]["job_id"] == f"job{HISTORY_LIMIT * 3 - 1:05d}"
    assert again.import_ids == list(range(HISTORY_LIMIT * 2, HISTORY_LIMIT * 3))
    assert again.last_counts == {"users": HISTORY_LIMIT * 3 - 1}
    assert again.last_success_at == NOW + HISTORY_LIMIT * 3 - 1
    assert again.to_dict() == history.to_dict()


def test_a_torn_last_line_left_by_a_kill_is_ignored_on_read_and_cut_off_by_the_next_append(tmp_path: Path) -> None:
    path = history_path(tmp_path / "state.json", "nightly")
    history = History(path)
    history.add(a_record("ab12"), {"users": 3}, success=True)
    history.save()
    whole = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'{"record":{"job_id":"cd34","fi')  # the kill came in the middle of an append

    again = History(path)
    assert [record["job_id"] for record in again.records] == ["ab12"]
    again.add(a_record("cd34"), None, success=False)
    again.save()

    assert path.read_bytes().startswith(whole)
    assert [record["job_id"] for record in History(path).records] == ["ab12", "cd34"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_damaged_line_that_is_not_the_last_is_damage_named_by_its_line(tmp_path: Path) -> None:
    path = history_path(tmp_path / "state.json", "nightly")
    history = History(path)
    history.add(a_record("ab12"), None, success=False)
    history.add(a_record("cd34"), None, success=False)
    history.save()
    lines = path.read_text().splitlines()
    lines[1] = '{"record": {"job_id": 12}}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StateError, match=r"state.history.nightly.json: line 2.record.job_id: "):
        History(path)


def test_a_version_1_history_is_rewritten_in_lines_at_its_first_save(tmp_path: Path) -> None:
    content = {"version": 1, "records": [a_record()], "import_ids": [7], "last_counts": {"users": 3}}
    path = write(tmp_path / "state.history.nightly.json", content)
    history = History(path)
    history.add(a_record("cd34"), {"users": 4}, success=True)
    history.save()
    assert json.loads(path.read_text().splitlines()[0]) == {"version": 2}
    again = History(path)
    assert [record["job_id"] for record in again.records] == ["ab12", "cd34"]
    assert (again.import_ids, again.last_counts) == ([7], {"users": 4})


def test_the_history_finds_the_record_the_polling_estimate_uses_as_a_pass_over_its_records_would(
    tmp_path: Path,
) -> None:
    chance = random.Random(9)
    history = History(tmp_path / "state.history.nightly.json")
    names = ["users.csv", "courses.csv", "enrollments.csv", None]
    for number in range(HISTORY_LIMIT * 2 + 500):  # records dropped at the limit, and many names seen once
        name = chance.choice(names) if number % 3 else f"once-{number}.csv"
        timed = chance.random() < 0.6
        record = {"job_id": f"j{number}", "file": name, "size": 100, "running_seconds": number if timed else None}
        history.add(record, None, success=True)
        if number % 97 == 0 or number > HISTORY_LIMIT * 2 + 480:
            for asked in ["users.csv", "courses.csv", "nothing.csv", f"once-{number - 3}.csv"]:
                expected = polling.expected_running_seconds(history.records, asked, 100)
                assert polling.scaled_running_seconds(history.timed_record(asked), 100) == expected, (number, asked)
    assert len(history._timed_by_file) <= 2 * HISTORY_LIMIT + 1
