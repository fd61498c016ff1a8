"""What is taken from the drop folder, and when: settling, temp names, links, special and empty files."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import TOKEN, DaemonThread, Spool, creates, wait_for

HEADER = b"user_id,login_id,first_name,last_name,email,status\n"


def rows(start: int, count: int) -> bytes:
    return b"".join(b"u%d,user%d,F,L,u%d@example.edu,active\n" % (n, n, n) for n in range(start, start + count))


def test_a_file_written_slowly_in_pieces_gives_one_import_of_its_final_bytes(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["settle_seconds"] = 1.5
    daemon = run_daemon()
    pause = threading.Event()
    path = spool.drop / "users.csv"
    with open(path, "wb") as writer:  # a slow SFTP upload straight into the final name
        writer.write(HEADER)
        for piece in range(6):
            writer.write(rows(piece * 10, 10))
            writer.flush()
            pause.wait(0.4)  # shorter than the settle time: the file never looks finished
    final = path.read_bytes()
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file filed")
    daemon.stop()
    [post] = creates(sandbox)
    assert post.attachment_size == len(final)
    [filed] = spool.filed("done")
    assert filed.read_bytes() == final
    assert spool.sidecars("done")[0]["canvas"]["counts"]["users"] == 60


def test_an_rsync_style_temp_file_renamed_into_place_gives_one_import_under_its_final_name(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    daemon = run_daemon()
    temp = spool.drop / ".users.csv.Xa81bQ"  # rsync's temp name: never taken
    temp.write_bytes(HEADER + rows(0, 3))
    os.utime(temp, (1_000_000_000, 1_000_000_000))  # rsync -a keeps the source's old mtime
    pause = threading.Event()
    pause.wait(1.5)  # longer than settle: a wrongly taken temp file would be claimed by now
    assert temp.exists() and creates(sandbox) == []
    os.rename(temp, spool.drop / "users.csv")
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file filed")
    daemon.stop()
    assert len(creates(sandbox)) == 1
    assert spool.sidecars("done")[0]["file"]["name"] == "users.csv"


def test_a_file_hard_linked_into_the_drop_folder_is_seen(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    daemon = run_daemon()
    outside = spool.root / "upload.tmp"
    outside.write_bytes(HEADER + rows(0, 2))
    os.link(outside, spool.drop / "users.csv")  # OpenSSH's sftp-server renames by link + unlink
    outside.unlink()
    wait_for(lambda: len(spool.filed("done")) == 1, what="the linked file filed")
    daemon.stop()


def test_ignored_names_and_sub_folders_are_left_alone(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    names = ["users.csv.part", "users.csv.filepart", "users.csv.tmp", "users.csv~", ".hidden.csv", "notes.txt"]
    for name in names:
        (spool.drop / name).write_bytes(HEADER + rows(0, 1))
    (spool.drop / "archive.csv").mkdir()
    assert run_daemon(once=True).join() == 0
    assert sorted(path.name for path in spool.drop.iterdir()) == sorted([*names, "archive.csv"])
    assert creates(sandbox) == []


def test_special_files_go_to_failed_as_themselves_never_followed(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    secret = spool.root / "secret.csv"
    secret.write_bytes(HEADER + rows(0, 1))
    os.symlink(secret, spool.drop / "link.csv")
    os.mkfifo(spool.drop / "pipe.csv")
    assert run_daemon(once=True).join() == 1
    assert creates(sandbox) == []
    sidecars = spool.sidecars("failed")
    assert sorted(item["file"]["name"] for item in sidecars) == ["link.csv", "pipe.csv"]
    assert {item["reason_code"] for item in sidecars} == {"not_regular_file"}
    links = [path for path in spool.filed("failed") if path.name.endswith("link.csv")]
    assert links and links[0].is_symlink() and secret.exists()


def test_an_empty_file_is_refused_only_after_its_grace_period(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["empty_grace_seconds"] = 5.0  # well past the 1 s pause below, even on a loaded machine
    daemon = run_daemon()
    (spool.drop / "late.csv").write_bytes(b"")
    pause = threading.Event()
    pause.wait(1.0)
    (spool.drop / "late.csv").write_bytes(HEADER + rows(0, 1))  # the uploader created it first, wrote it later
    (spool.drop / "empty.csv").write_bytes(b"")
    wait_for(lambda: len(spool.filed("done")) == 1 and len(spool.filed("failed")) == 1, what="both filed")
    daemon.stop()
    [refused] = spool.sidecars("failed")
    assert refused["file"]["name"] == "empty.csv" and refused["outcome"] == "rejected"
    assert refused["reason_code"] == "empty_file"
    assert len(creates(sandbox)) == 1


def test_a_header_only_file_is_a_real_input_and_is_sent(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.drop_file("users.csv", HEADER)
    assert run_daemon(once=True).join() == 0
    assert len(creates(sandbox)) == 1


def test_the_backlog_is_taken_oldest_first(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    for index, name in enumerate(["c.csv", "a.csv", "b.csv"]):
        path = spool.drop_file(name, HEADER + rows(index, 1))
        os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))
    spool.feed["max_in_flight"] = 1
    assert run_daemon(once=True).join() == 0
    order = [request.attachment_filename.split("_", 1)[1] for request in creates(sandbox)]
    assert order == ["c.csv", "a.csv", "b.csv"]


def test_a_drop_folder_deleted_and_made_again_is_watched_again(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    daemon = run_daemon()
    wait_for(
        lambda: (
            daemon.daemon.ready.is_set() and all(scan.watcher._observer for scan in daemon.daemon.intake.scans.values())
        ),
        what="the watch to start",
    )
    spool.drop.rmdir()
    spool.drop.mkdir()
    spool.drop_file("users.csv", HEADER + rows(0, 1))
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file in the new folder filed")
    daemon.stop()


def test_a_file_that_changes_while_it_is_uploaded_is_aborted_and_sent_again_whole(
    spool: Spool, tmp_path: Path, run_daemon: Callable[..., DaemonThread]
) -> None:
    with Sandbox(token=TOKEN, account_id=1, fast=True, store_delay=2.0) as slow:
        spool.url = slow.url
        daemon = run_daemon()
        daemon.daemon.writer_check.probe = lambda fd: None  # a filesystem without leases (NFS): settling alone decides
        # The partial upload's import waits in Canvas's queue, so the abort lands before it runs (when Canvas runs
        # it first, the file goes to failed/ as changed_during_import: tests/daemon/test_hardening.py).
        slow.stick_next("created")
        with open(spool.drop / "users.csv", "wb") as writer:  # a writer that stalls longer than settle_seconds
            writer.write(HEADER + rows(0, 5))
            writer.flush()
            wait_for(
                lambda: any(item["workflow_state"] == "initializing" for item in slow.imports()),
                what="the upload of the partial file",
            )
            writer.write(rows(5, 5))
        final = HEADER + rows(0, 10)
        wait_for(lambda: len(spool.filed("done")) == 1, what="the whole file filed")
        daemon.stop()
        states = [item["workflow_state"] for item in slow.imports()]
        assert len(states) == 2 and states[1] == "imported"
        [filed] = spool.filed("done")
        assert filed.read_bytes() == final
        [sidecar] = spool.sidecars("done")
        assert sidecar["attempts"] == 2 and sidecar["file"]["size"] == len(final)
        uploads = [request for request in slow.requests if request.route == "create"]
        assert uploads[-1].attachment_size == len(final)


def test_a_file_is_taken_on_its_event_long_before_the_periodic_rescan(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["rescan_seconds"] = 3600.0
    daemon = run_daemon()
    wait_for(lambda: daemon.daemon.iterations > 1, what="the start-up scan")
    spool.drop_file("users.csv", HEADER + rows(0, 1))
    wait_for(lambda: len(spool.filed("done")) == 1, timeout=30, what="the file taken on its inotify event")
    daemon.stop()


def test_the_loop_sleeps_while_an_upload_holds_up_other_claimed_files(
    spool: Spool, run_daemon: Callable[..., DaemonThread]
) -> None:
    with Sandbox(token=TOKEN, account_id=1, fast=True, store_delay=3.0) as slow:
        spool.url = slow.url
        spool.feed["max_pending_imports"] = 3  # all three claimed at once, two waiting for the first's upload
        for index in range(3):
            spool.drop_file(f"users{index}.csv", HEADER + rows(index, 1))
        daemon = run_daemon()
        wait_for(lambda: len(list(spool.work.iterdir())) == 3, what="three files claimed")
        wait_for(lambda: daemon.daemon.gate.uploading, what="the first upload")
        before = daemon.daemon.iterations
        wait_for(lambda: not daemon.daemon.gate.uploading, what="the first upload to end")
        turns = daemon.daemon.iterations - before
        assert turns < 100, f"the loop turned {turns} times during one 3 s upload"
        daemon.stop()


def test_a_writer_that_stalls_longer_than_settle_with_the_file_open_is_waited_for(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    daemon = run_daemon()
    with open(spool.drop / "users.csv", "wb") as writer:  # an SFTP session that stalls mid-file
        writer.write(HEADER + rows(0, 5))
        writer.flush()
        wait_for(lambda: daemon.daemon.iterations > 1, what="the daemon to scan")
        pause = threading.Event()
        pause.wait(3.0)  # three times settle_seconds: settling alone would take the file now
        assert creates(sandbox) == [] and (spool.drop / "users.csv").exists()
        writer.write(rows(5, 5))
    wait_for(lambda: len(spool.filed("done")) == 1, what="the whole file filed")
    daemon.stop()
    [post] = creates(sandbox)
    assert post.attachment_size == len(HEADER + rows(0, 10))


def test_a_legal_but_very_long_name_and_a_name_that_is_not_utf8_are_filed(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    long_name = "u" * 240 + ".csv"
    spool.drop_file(long_name, HEADER + rows(0, 1))
    latin1 = os.fsdecode(b"caf\xe9.csv")
    (spool.drop / latin1).write_bytes(HEADER + rows(1, 1))
    spool.drop_file("innocent.csv", HEADER + rows(2, 1))
    assert run_daemon(once=True).join() == 0
    assert len(spool.filed("done")) == 3 and len(creates(sandbox)) == 3
    texts = [path.read_bytes().decode("utf-8") for path in spool.done.glob("*.result.json")]
    assert all("\\ud" not in text for text in texts)  # no lone surrogates: strict JSON parsers read them
    names = sorted(json.loads(text)["file"]["name"] for text in texts)
    assert names == sorted(["caf\\xe9.csv", "innocent.csv", long_name])


def test_poll_mode_finds_a_new_file_by_the_names_its_polls_bring_not_by_a_full_scan(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed.update({"watch": "poll", "rescan_seconds": 3600.0})  # NFS: polls every 5 s; no full scan after start
    daemon = run_daemon()
    wait_for(lambda: daemon.daemon.intake.scans["nightly"].scans == 1, what="the start-up scan")
    spool.drop_file("users.csv", HEADER + rows(0, 1))
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file found by polling")
    daemon.stop()
    assert daemon.daemon.intake.scans["nightly"].scans == 1
