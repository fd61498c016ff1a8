"""Per-file options on real folders, a real daemon process (``sisdaemon run --once``) and the sandbox: params files
and terms from file names reach Canvas as the import's options, or refuse their file before anything is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sisdaemon.config import load_config
from sisdaemon.params_files import ORPHAN_SECONDS, ParamsFiles
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import OTHER_TOKEN, TOKEN, TOKEN_ENV, DaemonProcess, Spool, creates

USERS = b"user_id,login_id,first_name,last_name,status\nu1,user1,Ada,One,active\nu2,user2,Bo,Two,active\n"
ONCE = ("--once", "--max-wait", "60")
#: The sandbox's active terms: Canvas ids 2 and 3 (1 is the Default Term).
TERMS = {"2026FA": 2, "2026SP": 3}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(token=TOKEN, account_id=1, fast=True, terms=list(TERMS), other_token=OTHER_TOKEN) as server:
        yield server


def run_once(spool: Spool, daemon_process: Callable[..., DaemonProcess]) -> DaemonProcess:
    process = daemon_process(*ONCE)
    process.wait(90)
    return process


def beside(path: Path) -> tuple[dict[str, Any], Path]:
    """The sidecar of a filed file, and its params file's path."""
    return json.loads(path.with_name(path.name + ".result.json").read_text()), path.with_name(
        path.name + ".params.yaml"
    )


def filed_data(spool: Spool, folder: str) -> list[Path]:
    return [path for path in spool.filed(folder) if not path.name.endswith(".params.yaml")]


def test_a_params_file_and_a_term_from_the_name_reach_canvas_as_the_import_s_options(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update(
        {
            "import": {"change_threshold": 10},
            "term_from_name": "enrollments_{term}.csv",
            "allow_params": ["batch_mode", "batch_mode_term_id", "override_sis_stickiness"],
        }
    )
    params = b"batch_mode: true\nbatch_mode_term_id: sis_term_id:2026SP\noverride_sis_stickiness: true\n"
    spool.drop_file("courses.csv.params.yaml", params)  # the params file first, then its data file
    spool.drop_file("courses.csv", USERS)
    spool.drop_file("enrollments_2026FA.csv", USERS)

    process = run_once(spool, daemon_process)

    assert process.process.returncode == 0, process.output()
    posts = {request.attachment_filename.split("_", 1)[1]: request for request in creates(sandbox)}
    assert sorted(posts) == ["courses.csv", "enrollments_2026FA.csv"]
    assert posts["enrollments_2026FA.csv"].form["batch_mode"] == "true"
    assert posts["enrollments_2026FA.csv"].form["batch_mode_term_id"] == "sis_term_id:2026FA"
    assert posts["courses.csv"].form["batch_mode_term_id"] == "sis_term_id:2026SP"
    assert posts["courses.csv"].form["override_sis_stickiness"] == "true"
    imports = {item["id"]: item for item in sandbox.imports()}
    by_term = {
        imports[request.import_id]["batch_mode_term_id"]: imports[request.import_id] for request in posts.values()
    }
    assert sorted(by_term) == [TERMS["2026FA"], TERMS["2026SP"]]
    assert all(item["batch_mode"] is True for item in by_term.values())
    assert by_term[TERMS["2026SP"]]["override_sis_stickiness"] is True
    assert by_term[TERMS["2026FA"]]["override_sis_stickiness"] is None
    # Asked of Canvas before the upload: only the name's term (the params file's is its own, asked too).
    asked = sorted(request.path.rsplit("/", 1)[1] for request in sandbox.requests if request.route == "term")
    assert set(asked) == {"sis_term_id:2026FA", "sis_term_id:2026SP"}

    done = {path.name.split("_", 2)[2]: path for path in filed_data(spool, "done")}
    assert sorted(done) == ["courses.csv", "enrollments_2026FA.csv"]
    courses, courses_params = beside(done["courses.csv"])
    assert courses_params.read_bytes() == params  # filed beside its data file, under its name
    assert courses["import_options"] == {
        "options": {
            "batch_mode": True,
            "batch_mode_term_id": "sis_term_id:2026SP",
            "change_threshold": 10,
            "override_sis_stickiness": True,
        },
        "sources": {
            "batch_mode": "params_file",
            "batch_mode_term_id": "params_file",
            "change_threshold": "feed",
            "override_sis_stickiness": "params_file",
        },
        "params_file": courses_params.name,
        "warnings": [  # batch mode came from the params file: the warning never says "no batch mode" then
            "the file name does not match term_from_name 'enrollments_{term}.csv': no term was taken from it"
        ],
    }
    enrollments, enrollments_params = beside(done["enrollments_2026FA.csv"])
    assert not enrollments_params.exists()
    assert enrollments["import_options"]["sources"]["batch_mode_term_id"] == "file_name"
    assert enrollments["import_options"]["params_file"] is None
    assert list(spool.drop.iterdir()) == [] and list(spool.work.iterdir()) == []


def test_a_params_file_with_a_key_not_allowed_refuses_its_file_and_both_go_to_failed(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed["allow_params"] = ["override_sis_stickiness"]
    params = b"override_sis_stickiness: true\nskip_deletes: true\n"
    spool.drop_file("users.csv.params.yaml", params)
    spool.drop_file("users.csv", USERS)

    process = run_once(spool, daemon_process)

    assert process.process.returncode == 1, process.output()
    assert creates(sandbox) == []
    [data] = filed_data(spool, "failed")
    sidecar, params_path = beside(data)
    assert data.read_bytes() == USERS and params_path.read_bytes() == params
    assert sidecar["outcome"] == "rejected" and sidecar["reason_code"] == "params_refused"
    assert sidecar["reason"] == (
        "params file users.csv.params.yaml: line 2: skip_deletes: not allowed by the feed's allow_params "
        "(override_sis_stickiness)"
    )
    assert sidecar["import_options"]["params_file"] == params_path.name
    assert spool.filed("done") == [] and list(spool.drop.iterdir()) == [] and list(spool.work.iterdir()) == []
    assert any(event.get("event") == "params_refused" for event in process.events())

    # Sent again without its params file, it could run with other options: retry refuses it, naming the params file.
    retry = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "retry", "-c", str(spool.config), str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, TOKEN_ENV: TOKEN},
    )
    assert retry.returncode == 2, retry.stdout + retry.stderr
    assert f"dropped with a params file ({data.name}.params.yaml)" in retry.stdout
    assert data.exists() and creates(sandbox) == []


def test_a_params_file_is_refused_when_the_feed_allows_none(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed["patterns"] = ["*"]  # even a pattern that matches everything never takes the params file itself
    spool.drop_file("users.csv.params.yaml", b"")
    spool.drop_file("users.csv", USERS)

    process = run_once(spool, daemon_process)

    assert process.process.returncode == 1, process.output()
    assert creates(sandbox) == []
    [data] = filed_data(spool, "failed")
    sidecar, params_path = beside(data)
    assert sidecar["reason_code"] == "params_refused" and params_path.exists()
    assert sidecar["reason"] == (
        "params file users.csv.params.yaml: this feed takes no params file (its allow_params is empty)"
    )


def test_an_unknown_term_from_the_name_is_refused_before_any_upload(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"import": {"change_threshold": 10}, "term_from_name": "enrollments_{term}.csv"})
    spool.drop_file("enrollments_2099XX.csv", USERS)

    process = run_once(spool, daemon_process)

    assert process.process.returncode == 1, process.output()
    assert creates(sandbox) == []  # nothing was sent
    assert [request.path for request in sandbox.requests if request.route == "term"] == [
        "/api/v1/accounts/1/terms/sis_term_id:2099XX"
    ]
    [data] = filed_data(spool, "failed")
    sidecar, _ = beside(data)
    assert sidecar["outcome"] == "rejected" and sidecar["reason_code"] == "unknown_term"
    assert sidecar["reason"].startswith(
        "enrollments_2099XX.csv: batch_mode_term_id sis_term_id:2099XX (from its file name (term_from_name)) is not "
        "an active term of the Canvas account (Canvas answered 404"
    )
    assert sidecar["attempts"] == 0


def test_canvas_failing_while_the_term_is_asked_delays_the_file_and_never_refuses_it(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"import": {"change_threshold": 10}, "term_from_name": "enrollments_{term}.csv"})
    sandbox.faults.add(route="term", status=503, count=2)
    sandbox.faults.add(route="term", status=403, body="403 Forbidden (Rate Limit Exceeded)\n", count=1)
    spool.drop_file("enrollments_2026FA.csv", USERS)

    process = run_once(spool, daemon_process)

    assert process.process.returncode == 0, process.output()
    assert len([request for request in sandbox.requests if request.route == "term"]) == 4
    [post] = creates(sandbox)
    assert post.form["batch_mode_term_id"] == "sis_term_id:2026FA"
    assert len(filed_data(spool, "done")) == 1 and spool.filed("failed") == []


# --- the drop folder's side, on real files with the daemon's clock given ---------------------------------------------


def test_a_params_file_still_being_written_holds_its_data_file(spool: Spool) -> None:
    spool.feed["allow_params"] = ["override_sis_stickiness"]
    feed = load_config(spool.write_config()).feeds[0]  # settle_seconds 1.0
    params = ParamsFiles()
    spool.drop_file("users.csv", USERS)
    spool.drop_file("users.csv.params.yaml", b"override_sis_stickiness: true\n")

    first = params.prepare(feed, "users.csv", 100.0)
    assert first.hold_until == 101.0 and first.file_options is None
    (spool.drop / "users.csv.params.yaml").write_bytes(b"override_sis_stickiness: false\n")  # written again
    assert params.prepare(feed, "users.csv", 100.9).hold_until == 101.9
    ready = params.prepare(feed, "users.csv", 101.9)

    assert ready.hold_until is None and ready.refusal is None
    assert ready.file_options is not None
    assert ready.file_options["options"] == {"override_sis_stickiness": False}
    assert ready.file_options["params_ino"] == (spool.drop / "users.csv.params.yaml").stat().st_ino


def test_a_params_file_without_its_data_file_is_said_once_and_never_taken(spool: Spool) -> None:
    feed = load_config(spool.write_config()).feeds[0]
    params = ParamsFiles()
    spool.drop_file("users.csv.params.yaml", b"")
    skipped = {"users.csv.params.yaml": "params_file"}

    with capture_logs() as logs:
        params.scanned(feed, skipped, {}, 0.0)
        params.scanned(feed, skipped, {}, ORPHAN_SECONDS - 1)
        params.scanned(feed, skipped, {}, ORPHAN_SECONDS)
        params.scanned(feed, skipped, {}, ORPHAN_SECONDS + 60)

    orphaned = [line for line in logs if line["event"] == "params_file_orphaned"]
    assert len(orphaned) == 1 and orphaned[0]["log_level"] == "info"
    assert orphaned[0]["file"] == "users.csv.params.yaml"
    assert (spool.drop / "users.csv.params.yaml").exists()


def test_a_name_too_long_for_a_params_file_beside_it_has_none(spool: Spool) -> None:
    feed = load_config(spool.write_config()).feeds[0]
    name = "u" * 240 + ".csv"  # legal (NAME_MAX 255), but its params file's name would not be
    spool.drop_file(name, USERS)

    prepared = ParamsFiles().prepare(feed, name, 0.0)

    assert prepared.hold_until is None and prepared.refusal is None and prepared.file_options is None


@pytest.mark.parametrize("misnamed", ["enrollments.params.yaml", "enrollments.csv.params.yml"])
def test_a_misnamed_params_file_refuses_its_data_file_instead_of_sending_it_with_the_feeds_options(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], misnamed: str
) -> None:
    # Found by a new sysadmin: with a typo in its params file's name, a term's file went as a batch import for the
    # feed's default term. Nothing is sent on a guess: the file is refused, naming both names.
    spool.feed["allow_params"] = ["batch_mode_term_id"]
    spool.drop_file(misnamed, b'batch_mode_term_id: "sis_term_id:2026SP"\n')
    spool.drop_file("enrollments.csv", USERS)

    process = run_once(spool, daemon_process)

    assert process.process.returncode == 1, process.output()
    assert creates(sandbox) == []
    [data] = filed_data(spool, "failed")
    sidecar = json.loads(data.with_name(data.name + ".result.json").read_text())
    assert sidecar["reason_code"] == "params_refused"
    assert f"a params file named {misnamed} lies beside enrollments.csv" in sidecar["reason"]
    assert "enrollments.csv.params.yaml exactly" in sidecar["reason"]
    assert (spool.drop / misnamed).exists()  # left for the operator to rename or remove


def test_a_params_file_left_over_from_an_earlier_file_of_its_name_is_not_applied_to_the_next(spool: Spool) -> None:
    # Found by a new sysadmin: a params file written after its file was claimed waited in drop/ and was applied to
    # the next night's file of that name. It is said when it appears, and the next file is refused, not sent with it.
    spool.feed["allow_params"] = ["override_sis_stickiness"]
    feed = load_config(spool.write_config()).feeds[0]
    params = ParamsFiles()
    params.claimed(feed.name, "enrollments.csv", 100.0)
    spool.drop_file("enrollments.csv.params.yaml", b"override_sis_stickiness: true\n")
    skipped = {"enrollments.csv.params.yaml": "params_file"}
    with capture_logs() as logs:
        params.scanned(feed, skipped, {}, 104.0)
    [late] = [line for line in logs if line["event"] == "params_file_after_its_file"]
    assert late["log_level"] == "warning" and late["after_seconds"] == 4

    spool.drop_file("enrollments.csv", USERS)  # the next night's file
    next_night = 104.0 + 86_400
    prepared = params.prepare(feed, "enrollments.csv", next_night + 5, seen_at=next_night)
    assert prepared.refusal is not None and "left over" in prepared.refusal
    assert prepared.file_options is not None and prepared.file_options["params_file"] == "enrollments.csv.params.yaml"

    fresh = ParamsFiles()  # written just before its file, as the README says: applied
    fresh.scanned(feed, skipped, {}, 200.0)
    ready = fresh.prepare(feed, "enrollments.csv", 212.0, seen_at=201.0)
    assert ready.refusal is None and ready.file_options is not None
    assert ready.file_options["options"] == {"override_sis_stickiness": True}
