"""Names, moves and sidecars on real temp folders."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sisdaemon import jobs, polling, spool
from sisdaemon.config import PollingSettings
from sisdaemon.jobs import Fingerprint


def test_the_attachment_name_carries_the_job_id_and_the_content_s_real_type(tmp_path: Path) -> None:
    zipped = tmp_path / "feed.CSV"
    zipped.write_bytes(b"PK\x03\x04rest")
    fd = os.open(zipped, os.O_RDONLY)
    try:
        assert spool.sniff_extension(fd) == "zip"
    finally:
        os.close(fd)
    assert spool.upload_filename("abc", "feed.CSV", "zip") == "abc_feed.zip"
    assert spool.upload_filename("abc", "weird name!.csv", "csv") == "abc_weird_name_.csv"


def test_a_move_never_replaces_an_existing_name(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("old")
    with pytest.raises(FileExistsError):
        spool.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "old" and (tmp_path / "a").exists()
    spool.move_durably(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "new" and not (tmp_path / "a").exists()


def test_a_symlink_is_never_followed_when_opened(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("secret")
    os.symlink(tmp_path / "target", tmp_path / "link.csv")
    with pytest.raises(OSError):
        spool.open_for_reading(tmp_path / "link.csv")


def test_a_fifo_does_not_block_the_open(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.csv")
    fd = spool.open_for_reading(tmp_path / "pipe.csv")
    try:
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def test_verifier_urls_never_reach_a_sidecar(tmp_path: Path) -> None:
    job = jobs.claim("abc", "nightly", "users.csv", Fingerprint(1, 5, 1, 1), seen_at=1e9, now=1e9)
    job = jobs.begin_attempt(job, tag=None, intent_at=None, now=1e9)
    sis_import = {
        "id": 7,
        "workflow_state": "imported_with_messages",
        "progress": 100,
        "data": {"counts": {"users": 1}, "statistics": {"total_state_changes": 1}},
        "processing_warnings": [["users.csv", "oops"]],
        "errors_attachment": {"id": 1, "url": "https://canvas.example/files/1/download?verifier=SECRET"},
        "csv_attachments": [{"filename": "abc_users.csv", "url": "https://canvas.example/files/2?verifier=S2"}],
    }
    job = jobs.post_created(job, sis_import, now=1e9, interval=1)
    job, _ = polling.on_poll(job, sis_import, now=1e9, server_now=1e9, policy=PollingSettings())
    job = jobs.finish(job, now=1e9, errors_csv_wait=120.0)
    path = spool.write_sidecar(tmp_path, job.work_name, spool.build_sidecar(job, base_url="https://c", account_id=1))
    text = path.read_text()
    assert "verifier" not in text
    sidecar = json.loads(text)
    assert sidecar["schema"] == 1 and sidecar["outcome"] == "imported_with_messages"
    assert sidecar["canvas"]["counts"] == {"users": 1}
    assert sidecar["canvas"]["processing_warnings"] == [["users.csv", "oops"]]
    assert sidecar["timeline"]["claimed_at"] == "2001-09-09T01:46:40Z"


def test_a_zip_s_csv_members_are_listed_as_canvas_lists_them(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("create/users.csv", "a")
        archive.writestr("create/.DS_Store", "a")
        archive.writestr("__MACOSX/create/._users.csv", "a")
        archive.writestr("readme.txt", "a")
        archive.writestr("Courses.CSV", "a")
    assert spool.zip_csv_members(path) == ("users.csv", "Courses.CSV")
    (tmp_path / "plain.csv").write_text("a,b\n")
    assert spool.zip_csv_members(tmp_path / "plain.csv") == ()


def test_a_writer_holding_the_file_open_is_seen_through_a_read_lease(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    with open(path, "wb") as writer:
        writer.write(b"user_id\n")
        fd = spool.open_for_reading(path)
        try:
            assert spool.writer_open(fd) is True
        finally:
            os.close(fd)
    fd = spool.open_for_reading(path)
    try:
        assert spool.writer_open(fd) is False
    finally:
        os.close(fd)


def test_a_name_too_long_for_its_prefix_is_shortened_keeping_its_extension() -> None:
    name = "u" * 240 + ".csv"
    work = jobs.work_name_for(name, "abcdef0123", 1e9)
    assert len(os.fsencode(work)) <= jobs.WORK_NAME_MAX and work.endswith("u~.csv")
    assert len(os.fsencode(spool.sidecar_name(work))) + len(".x.12345678.tmp") <= 255
    assert jobs.work_name_for("users.csv", "abcdef0123", 1e9).endswith("_abcdef0123_users.csv")


def test_names_that_are_not_utf8_are_shown_as_escapes() -> None:
    name = os.fsdecode(b"caf\xe9.csv")
    assert jobs.display_name(name) == "caf\\xe9.csv"
    assert "\\udce9" not in json.dumps(jobs.display_name(name))


def test_a_sidecar_keeps_no_file_uuid_which_is_canvas_s_download_verifier() -> None:
    stripped = spool.strip_verifiers({"csv_attachments": [{"id": 1, "uuid": "SECRET", "filename": "a.csv"}]})
    assert stripped == {"csv_attachments": [{"id": 1, "filename": "a.csv"}]}
