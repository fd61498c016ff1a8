"""canvasapi, the public Python client, drives the sandbox and every answer parses as it should."""

from __future__ import annotations

from pathlib import Path

import pytest
from canvasapi import Canvas
from canvasapi.exceptions import ResourceDoesNotExist
from canvasapi.progress import Progress
from canvasapi.sis_import import SisImport

from sisdaemon.sandbox import Sandbox

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,login1,Ann,Lee,ann@example.edu,active\n"


def _users_file(tmp_path: Path, name: str = "users.csv", body: bytes = USERS) -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


def test_create_sis_import_answers_created_and_the_import_then_finishes(
    sandbox: Sandbox, canvas: Canvas, tmp_path: Path
) -> None:
    account = canvas.get_account(1)
    sis_import = account.create_sis_import(str(_users_file(tmp_path)), diff_row_count_threshold=1_000_000_007)
    assert isinstance(sis_import, SisImport)
    assert sis_import.workflow_state == "created"
    assert sis_import.progress == 0
    assert sis_import.data == {"import_type": "instructure_csv"}
    assert sis_import.diff_row_count_threshold == 1_000_000_007
    assert sis_import.user["id"] == 1
    assert not hasattr(sis_import, "csv_attachments")  # Canvas lists none until processing starts

    sandbox.wait_for(sis_import.id)
    finished = account.get_sis_import(sis_import.id)
    assert finished.workflow_state == "imported"
    assert finished.progress == 100
    assert finished.data["counts"]["users"] == 1
    assert finished.data["supplied_batches"] == ["user"]
    assert finished.diff_row_count_threshold == 1_000_000_007
    assert [att["filename"] for att in finished.csv_attachments] == ["users.csv"]
    assert "verifier=" in finished.csv_attachments[0]["url"]


def test_get_sis_imports_follows_the_link_header_across_pages(sandbox: Sandbox, canvas: Canvas, tmp_path: Path) -> None:
    account = canvas.get_account(1)
    created = [account.create_sis_import(str(_users_file(tmp_path))).id for _ in range(7)]
    listed = [item.id for item in account.get_sis_imports(per_page=3)]
    assert listed == sorted(created, reverse=True)  # newest first, 3 pages followed
    pages = [r for r in sandbox.requests if r.route == "index"]
    assert [r.query.get("page", "1") for r in pages] == ["1", "2", "3"]


def test_get_sis_imports_running_lists_only_importing_ones(sandbox: Sandbox, canvas: Canvas, tmp_path: Path) -> None:
    account = canvas.get_account(1)
    sandbox.stick_next("importing")
    running = account.create_sis_import(str(_users_file(tmp_path)))
    queued = account.create_sis_import(str(_users_file(tmp_path)))
    sandbox.wait_for(running.id, {"importing"})
    assert [item.id for item in account.get_sis_imports_running()] == [running.id]
    assert sandbox.get_import(queued.id)["workflow_state"] == "created"  # one at a time per account
    sandbox.unstick(running.id)
    sandbox.wait_for(queued.id)


def test_abort_of_a_queued_import_answers_it_aborted_and_of_a_finished_one_404(
    sandbox: Sandbox, canvas: Canvas, tmp_path: Path
) -> None:
    account = canvas.get_account(1)
    sandbox.stick_next("created")
    queued = account.create_sis_import(str(_users_file(tmp_path)))
    aborted = queued.abort()
    assert isinstance(aborted, SisImport)
    assert aborted.workflow_state == "aborted"

    done = account.create_sis_import(str(_users_file(tmp_path)))
    sandbox.wait_for(done.id)
    with pytest.raises(ResourceDoesNotExist):
        done.abort()


def test_abort_sis_imports_pending_aborts_the_queued_ones(sandbox: Sandbox, canvas: Canvas, tmp_path: Path) -> None:
    account = canvas.get_account(1)
    sandbox.stick_next("importing")
    running = account.create_sis_import(str(_users_file(tmp_path)))
    sandbox.wait_for(running.id, {"importing"})
    queued = account.create_sis_import(str(_users_file(tmp_path)))
    assert account.abort_sis_imports_pending() is True
    assert sandbox.get_import(queued.id)["workflow_state"] == "aborted"
    assert sandbox.get_import(queued.id)["progress"] == 100
    assert sandbox.get_import(running.id)["workflow_state"] == "importing"
    sandbox.unstick(running.id)
    sandbox.wait_for(running.id)


def test_restore_states_answers_a_progress_and_restores(sandbox: Sandbox, canvas: Canvas, tmp_path: Path) -> None:
    account = canvas.get_account(1)
    sis_import = account.create_sis_import(str(_users_file(tmp_path)))
    sandbox.wait_for(sis_import.id)
    progress = account.get_sis_import(sis_import.id).restore_states()
    assert isinstance(progress, Progress)
    assert progress.context_type == "SisBatch"
    assert progress.tag == "sis_batch_state_restore"
    assert sandbox.wait_for(sis_import.id, {"restored"})["workflow_state"] == "restored"
