"""A set's zip on a real daemon against the sandbox: it is built by the zip worker in a thread of its own, so other
jobs go on meanwhile; a member that its writer changed after the claim settles again and goes whole into the zip
(docs/design.md "Sets of files")."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import structlog
import yaml

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, DaemonThread, Spool, creates, wait_for
from tests.daemon.test_sets import ENROLLMENTS, USERS

SECTIONS = b"section_id,course_id,name,status\ns1,c1,Section 1,active\n"


class HeldReader:
    """The zip worker's reader, held at its first piece until :meth:`release`: a build that takes as long as the
    test wants, without a timing assumption."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.released = threading.Event()

    def __call__(self, source: BinaryIO, size: int) -> bytes:
        self.reading.set()
        self.released.wait(DEADLINE + 30)  # longer than any wait_for: a test that needs the build to end fails first
        return source.read(size)

    def release(self) -> None:
        self.released.set()


def hold_builds(daemon: DaemonThread) -> HeldReader:
    reader = HeldReader()
    daemon.daemon.flight.sets.bundler.read = reader
    return reader


def with_a_second_feed(spool: Spool, root: Path) -> dict[str, Path]:
    """Add a feed ``other`` (no sets) with its own folders under ``root``; returns its folders."""
    spool.write_config()
    [first] = yaml.safe_load(spool.config.read_text())["feeds"]
    folders = {key: root / key for key in ("drop", "work", "done", "failed")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    other = {**first, "name": "other", **{f"{key}_dir": str(path) for key, path in folders.items()}}
    other.pop("collect_seconds", None)
    spool.top["feeds"] = [first, other]
    return folders


def test_while_a_sets_zip_is_built_another_feeds_file_is_sent_polled_and_filed(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed.update({"settle_seconds": 0.3, "collect_seconds": 0.5})
    other = with_a_second_feed(spool, spool.root / "other")
    daemon = run_daemon()
    reader = hold_builds(daemon)
    try:
        spool.drop_file("users.csv", USERS)
        spool.drop_file("enrollments.csv", ENROLLMENTS)
        assert reader.reading.wait(DEADLINE), "the set's zip was never started"
        (other["drop"] / "sections.csv").write_bytes(SECTIONS)
        # The zip worker is held in the middle of the set's zip: the flight worker still sends, polls and files the
        # other feed's file (a zip built in the flight worker's thread would hold it up until the build ended).
        wait_for(lambda: list(other["done"].glob("*_sections.csv")), what="the other feed's file in done/")
        assert len(creates(sandbox)) == 1 and not list(spool.done.iterdir())
        assert not list(spool.work.glob("*_set.zip"))  # the set's zip is still being written under its temp name
    finally:
        reader.release()
    wait_for(lambda: len(spool.filed("done")) == 3, what="the set's two files and its zip in done/")
    assert len(creates(sandbox)) == 2
    names = {sidecar["file"]["name"] for sidecar in spool.sidecars("done")}
    assert names == {"users.csv", "enrollments.csv", "set.zip"}
    assert daemon.stop() == 0


def test_a_daemon_stopped_while_a_sets_zip_is_built_leaves_no_temp_zip_and_builds_it_again_after_a_restart(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed.update({"settle_seconds": 0.3, "collect_seconds": 0.5})
    daemon = run_daemon()
    reader = hold_builds(daemon)
    spool.drop_file("users.csv", USERS)
    spool.drop_file("enrollments.csv", ENROLLMENTS)
    assert reader.reading.wait(DEADLINE), "the set's zip was never started"
    daemon.daemon.request_stop()
    reader.release()  # the piece in hand comes back; the build sees the stop at once and gives up
    assert daemon.join() == 0
    wait_for(lambda: daemon.daemon.flight.sets.bundler.running is None, what="the zip worker to give up")
    assert not [path.name for path in spool.work.iterdir() if path.name.endswith((".tmp", "_set.zip"))]
    assert creates(sandbox) == []
    run_daemon()
    wait_for(lambda: len(spool.filed("done")) == 3, what="the set imported after the restart")
    assert len(creates(sandbox)) == 1


def test_a_member_its_writer_changed_after_the_claim_settles_again_and_goes_whole_into_the_zip(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    whole = USERS + b"".join(f"u{n},l{n},A,B,a{n}@example.edu,active\n".encode() for n in range(2, 300))
    spool.feed.update({"settle_seconds": 0.3, "collect_seconds": 0.5})
    with structlog.testing.capture_logs() as logs:
        daemon = run_daemon()
        daemon.daemon.writer_check.probe = lambda fd: None  # NFS, or no CAP_LEASE: an open writer is not seen
        reader = hold_builds(daemon)
        writer = open(spool.drop / "users.csv", "wb")  # noqa: SIM115 - an in-place upload that stalls past settling
        try:
            writer.write(whole[:2000])
            writer.flush()
            spool.drop_file("enrollments.csv", ENROLLMENTS)
            assert reader.reading.wait(DEADLINE), "the set was never claimed and its zip started"
            writer.write(whole[2000:])  # the stalled writer goes on, through its handle, into the claimed file
        finally:
            writer.close()
            reader.release()
        wait_for(lambda: len(spool.filed("done")) == 3, what="the set's two files and its zip in done/")
        assert daemon.stop() == 0
    events: list[dict[str, Any]] = list(logs)
    [post] = creates(sandbox)
    [zipped] = [path for path in spool.filed("done") if path.name.endswith("_set.zip")]
    with zipfile.ZipFile(io.BytesIO(zipped.read_bytes())) as archive:
        assert archive.read("users.csv") == whole  # not the part written before the stall
    sidecars = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("done")}
    assert sidecars["users.csv"]["file"]["size"] == len(whole)
    assert sidecars["set.zip"]["canvas"]["import_id"] == sandbox.imports()[0]["id"] and post.import_id is not None
    said = [event for event in events if event["event"] == "set_member_changed_after_claim"]
    assert len(said) == 1 and said[0]["files"] == ["users.csv"], said
    assert not [event for event in events if event["event"] == "filesystem_error"]


def test_a_member_its_writer_changed_after_the_zip_was_sent_files_the_set_in_failed_as_a_partial_import(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    # A writer that stalls past settling, the claim and the zip, then goes on through its open handle: Canvas was
    # sent part of the file. As for a single file (changed_during_import), the set goes to failed/, never done/.
    spool.feed.update({"settle_seconds": 0.3, "collect_seconds": 0.5})
    sandbox.stick_next("importing")
    daemon = run_daemon()
    daemon.daemon.writer_check.probe = lambda fd: None  # NFS, or no CAP_LEASE: an open writer is not seen
    spool.drop_file("users.csv", USERS)
    spool.drop_file("enrollments.csv", ENROLLMENTS)
    [created] = wait_for(lambda: sandbox.imports(), what="the set's import")
    wait_for(lambda: sandbox.get_import(created["id"])["workflow_state"] == "importing", what="Canvas to run it")
    [member] = [path for path in spool.work.iterdir() if path.name.endswith("_users.csv")]
    with open(member, "ab") as late:
        late.write(b"u9,l9,A,B,a9@example.edu,active\n")
    sandbox.unstick(created["id"])
    wait_for(lambda: len(spool.filed("failed")) == 3, what="the set's two files and its zip in failed/")
    assert daemon.stop() == 0
    sidecars = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("failed")}
    assert sidecars["set.zip"]["reason_code"] == "changed_during_import"
    assert "users.csv" in sidecars["set.zip"]["reason"] and "since its zip was built" in sidecars["set.zip"]["reason"]
    assert sidecars["enrollments.csv"]["reason_code"] == "changed_during_import"
    assert spool.filed("done") == [] and len(creates(sandbox)) == 1
