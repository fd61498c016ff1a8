"""A set's zip on real files (sisdaemon/bundle.py, bundler.py): built whole and deterministic, refused when a member
changed since its claim (naming it, with its fingerprint now), given up on a stop, and the member records updated by
the pure rule (sets.observe_members)."""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from pathlib import Path
from typing import BinaryIO

import pytest

from sisdaemon import bundle, jobs, set_retry, sets, spool
from sisdaemon.bundler import Bundler
from sisdaemon.jobs import Fingerprint, Job

USERS = b"user_id,login_id,first_name,last_name,status\nu1,l1,A,B,active\n"
ENROLLMENTS = b"course_id,user_id,role,status\nc1,u1,student,active\n"


def claimed_set(work: Path) -> Job:
    """A set of two members, claimed and already in ``work``."""
    members = []
    for name, data in (("users.csv", USERS), ("enrollments.csv", ENROLLMENTS)):
        path = work / name
        path.write_bytes(data)
        members.append(sets.Member(name, spool.fingerprint_of(path.lstat()).without_ctime(), 90.0))
    job = sets.claim_set("abc123", "nightly", members, manifest=None, now=100.0)
    for member in sets.members_of(job):
        (work / str(member["name"])).rename(work / str(member["work_name"]))
    return job


def test_a_sets_zip_is_built_whole_and_the_same_set_gives_the_same_bytes(tmp_path: Path) -> None:
    job = claimed_set(tmp_path)
    zipped = bundle.build_zip(job, tmp_path)
    first = (tmp_path / job.work_name).read_bytes()
    with zipfile.ZipFile(tmp_path / job.work_name) as archive:
        assert archive.namelist() == ["users.csv", "enrollments.csv"] and archive.read("users.csv") == USERS
    assert zipped.zip_members == ("users.csv", "enrollments.csv") and zipped.fingerprint.size == len(first)
    built = sets.built(job, zipped.fingerprint, zipped.hashes, zipped.zip_members)
    hashes = [member["sha256"] for member in sets.members_of(built)]
    assert hashes == [hashlib.sha256(USERS).hexdigest(), hashlib.sha256(ENROLLMENTS).hexdigest()]
    bundle.build_zip(job, tmp_path)  # built again (a kill before it was recorded): replaced, same bytes
    assert (tmp_path / job.work_name).read_bytes() == first


def test_a_member_changed_since_its_claim_is_named_and_nothing_is_built(tmp_path: Path) -> None:
    job = claimed_set(tmp_path)
    [member] = [m for m in sets.members_of(job) if m["name"] == "users.csv"]
    path = tmp_path / str(member["work_name"])
    with open(path, "ab") as writer:
        writer.write(b"u2,l2,C,D,active\n")
    with pytest.raises(bundle.MemberChanged) as raised:
        bundle.build_zip(job, tmp_path)
    assert raised.value.changed == {"users.csv": spool.fingerprint_of(path.lstat()).without_ctime()}
    assert "users.csv" in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(str(m["work_name"]) for m in sets.members_of(job))


def test_a_member_written_to_while_it_is_zipped_is_caught_after_its_read(tmp_path: Path) -> None:
    job = claimed_set(tmp_path)
    path = tmp_path / str(sets.members_of(job)[0]["work_name"])

    def read_then_write(source: BinaryIO, size: int) -> bytes:
        block = source.read(size)
        with open(path, "ab") as writer:  # a writer that goes on while the member is read, and keeps going
            writer.write(b"u2,l2,C,D,active\n")
        return block

    with pytest.raises(bundle.MemberChanged) as raised:
        bundle.build_zip(job, tmp_path, read=read_then_write)
    assert list(raised.value.changed) == ["users.csv"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", "_set.zip"))]


def test_the_zip_worker_reports_a_stopped_build_and_leaves_no_temp_zip(tmp_path: Path) -> None:
    job = claimed_set(tmp_path)
    wake, reading, go_on = threading.Event(), threading.Event(), threading.Event()

    def held(source: BinaryIO, size: int) -> bytes:
        reading.set()
        go_on.wait(30)
        return source.read(size)

    bundler = Bundler(wake, read=held)
    assert bundler.start(job, tmp_path) and not bundler.start(job, tmp_path)  # one build at a time
    assert reading.wait(30)
    bundler.stop()
    go_on.set()
    assert wake.wait(30)
    [result] = list(bundler.results())
    assert result.error == "stopped" and result.zipped is None and bundler.running is None
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", "_set.zip"))]
    assert not bundler.start(job, tmp_path)  # stopped for good


def test_a_build_gives_up_as_soon_as_the_daemons_stop_event_is_set_without_waiting_for_stop(tmp_path: Path) -> None:
    # The daemon's stop event is set by a signal handler; the flight worker calls Bundler.stop() only when its turn
    # ends. A build that reads on meanwhile must still give up at its next piece (in CI it once ran to the end and
    # left a finished zip behind a stopped daemon).
    job = claimed_set(tmp_path)
    wake, reading, go_on, stopping = threading.Event(), threading.Event(), threading.Event(), threading.Event()

    def held(source: BinaryIO, size: int) -> bytes:
        reading.set()
        go_on.wait(30)
        return source.read(size)

    bundler = Bundler(wake, read=held, stopping=stopping)
    assert bundler.start(job, tmp_path)
    assert reading.wait(30)
    stopping.set()
    go_on.set()
    assert wake.wait(30)
    [result] = list(bundler.results())
    assert result.error == "stopped" and result.zipped is None
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", "_set.zip"))]
    assert not bundler.start(job, tmp_path)


def test_a_changed_member_is_recorded_anew_and_the_set_settles_again_before_its_zip_is_built() -> None:
    members = [sets.Member("users.csv", Fingerprint(11, 40, 5), 90.0), sets.Member("e.csv", Fingerprint(12, 60, 6), 90)]
    job = sets.claim_set("abc123", "nightly", members, manifest=None, now=100.0)
    same = sets.observe_members(job, {"users.csv": Fingerprint(11, 40, 5, 77)}, now=101, settle=2)
    assert same == job  # a rename changes ctime only
    changed = sets.observe_members(job, {"users.csv": Fingerprint(11, 90, 8, 77)}, now=101, settle=2)
    assert changed.stable_since == 101 and changed.size == 150 and not sets.is_built(changed)
    assert sets.member_fingerprints(changed)["users.csv"] == Fingerprint(11, 90, 8)
    assert sets.observe_members(changed, {}, now=102, settle=2) == changed  # still settling
    settled = sets.observe_members(changed, {"users.csv": Fingerprint(11, 90, 8)}, now=103, settle=2)
    assert settled.stable_since is None and settled.next_action_at == 103


def test_a_retried_sets_files_are_found_in_failed_taken_into_work_with_it_and_their_old_sidecars_set_aside(
    tmp_path: Path,
) -> None:
    failed, work = tmp_path / "failed", tmp_path / "work"
    failed.mkdir()
    work.mkdir()
    old = sets.built(claimed_set(failed), Fingerprint(1, 2, 3), {}, ())
    zip_name = old.work_name
    (failed / zip_name).write_bytes(b"PK zip")
    zip_sidecar = sets.set_sidecar({"file": {"name": "set.zip"}, "job_id": old.job_id}, old)
    for member in sets.members_of(old):
        sidecar = sets.member_sidecar({"job_id": old.job_id}, member, old)
        (failed / spool.sidecar_name(str(member["work_name"]))).write_text(json.dumps(sidecar))
    (failed / str(sets.members_of(old)[1]["work_name"])).unlink()  # an operator took enrollments.csv away
    assert sets.is_set_zip(zip_sidecar) and not sets.is_set_zip(sets.member_sidecar({}, sets.members_of(old)[0], old))

    claimed = jobs.claim("new123", "nightly", "set.zip", Fingerprint(9, 6, 1), seen_at=200.0, now=200.0)
    job = set_retry.with_members(claimed, failed, zip_name, zip_sidecar)
    [member] = sets.members_of(job)
    assert member["name"] == "users.csv" and member["from"] == sets.members_of(old)[0]["work_name"]
    assert member["work_name"] == jobs.work_name_for("users.csv", "new123", 200.0) and sets.is_built(job)
    assert any("enrollments.csv" in note for note in job.notes)
    assert set_retry.take_members(job, failed, work) == job
    assert (work / str(member["work_name"])).read_bytes() == USERS
    assert (failed / spool.retried_sidecar_name(str(member["from"]))).exists()
    assert set_retry.take_members(job, failed, work) == job  # again after a kill: nothing left to do
    assert set_retry.taken_names(job) == {member["from"]}


def test_recovery_of_a_refused_set_half_filed_keeps_the_members_already_in_failed(tmp_path: Path) -> None:
    drop, work, failed = tmp_path / "drop", tmp_path / "work", tmp_path / "failed"
    for folder in (drop, work, failed):
        folder.mkdir()
    job = claimed_set(work)
    first, second = sets.members_of(job)
    (work / str(first["work_name"])).rename(failed / str(first["work_name"]))  # filed before a kill
    assert bundle.recover_claim(job, drop, work, failed) == job  # in its place: not "gone from drop/"
    (work / str(second["work_name"])).rename(failed / str(second["work_name"]))
    assert bundle.recover_claim(job, drop, work, failed) == job
    gone = bundle.recover_claim(job, drop, work)  # a claim (not being filed) whose members left work/: gone
    assert sets.members_of(gone) == [] and len(gone.notes) == 2


def test_a_member_changed_since_the_zip_was_built_is_named_and_one_already_filed_is_not_looked_at(
    tmp_path: Path,
) -> None:
    job = claimed_set(tmp_path)
    assert bundle.changed_since_built(job, tmp_path) is None
    users, enrollments = (tmp_path / str(member["work_name"]) for member in sets.members_of(job))
    with open(users, "ab") as late:
        late.write(b"u2,l2,A,B,active\n")
    why = bundle.changed_since_built(job, tmp_path)
    assert why is not None and "users.csv: size" in why and "enrollments.csv" not in why
    enrollments.unlink()  # filed already (a kill mid-filing): not looked at
    users.unlink()
    assert bundle.changed_since_built(job, tmp_path) is None
