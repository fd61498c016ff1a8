"""The set decisions on their own (sisdaemon/sets.py): when a collected set is taken, what a manifest says and when
its set is taken or refused, and the set's job and sidecars."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from sisdaemon import jobs, sets
from sisdaemon.config.schema import FeedSettings
from sisdaemon.jobs import Fingerprint, JobState
from sisdaemon.sets import Candidate, ManifestError, Member


def collect(ready: list[Candidate], *, now: float, settling: bool = False) -> sets.Collected:
    return sets.collect(ready, settling=settling, now=now, collect_seconds=5, collect_max_seconds=60)


def test_a_set_waits_while_files_keep_becoming_ready_within_the_window() -> None:
    ready = [Candidate("enrollments.csv", 100), Candidate("users.csv", 103)]
    decided = collect(ready, now=106)
    assert decided.take == () and decided.wake_at == 108


def test_a_set_is_taken_once_no_file_followed_for_collect_seconds() -> None:
    ready = [Candidate("enrollments.csv", 100), Candidate("users.csv", 103)]
    assert collect(ready, now=108).take == ("enrollments.csv", "users.csv")


def test_a_file_still_settling_keeps_the_window_open_up_to_the_maximum() -> None:
    ready = [Candidate("enrollments.csv", 100), Candidate("users.csv", 101)]
    waiting = collect(ready, now=120, settling=True)
    assert waiting.take == () and waiting.wake_at == 160
    assert collect(ready, now=160, settling=True).take == ("enrollments.csv", "users.csv")


def test_a_steady_trickle_cannot_hold_a_set_past_collect_max_seconds() -> None:
    ready = [Candidate(f"part{index}.csv", 100 + 4 * index) for index in range(16)]  # one every 4 s, window 5 s
    assert collect(ready[:15], now=159).take == ()
    assert collect(ready, now=160).take == tuple(item.name for item in ready)


def test_a_set_of_one_is_sent_as_the_file_itself() -> None:
    decided = collect([Candidate("users.csv", 100)], now=105)
    assert decided.take == () and decided.alone == ("users.csv",)


def test_zips_and_files_to_be_refused_are_taken_alone_at_once() -> None:
    ready = [Candidate("bundle.zip", 100), Candidate("empty.csv", 100, plain=False), Candidate("users.csv", 100)]
    decided = collect(ready, now=101)
    assert decided.alone == ("bundle.zip", "empty.csv") and decided.take == () and decided.wake_at == 105


def test_at_most_max_set_files_go_in_one_set() -> None:
    ready = [Candidate(f"f{index:03}.csv", 100) for index in range(sets.MAX_SET_FILES + 5)]
    assert len(collect(ready, now=200).take) == sets.MAX_SET_FILES


def takes(name: str) -> bool:
    return name.casefold().endswith(".csv")


def test_a_manifest_lists_names_one_a_line_with_blank_lines_and_comments() -> None:
    text = b"\xef\xbb\xbf# tonight's export\nusers.csv\n\n  courses.csv  \r\nusers.csv\n# end\n"
    assert sets.parse_manifest(text, takes=takes) == ("users.csv", "courses.csv")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"../etc/users.csv\n", "line 1: '../etc/users.csv' is a path"),
        (b"users.csv\nsub\\x.csv\n", "line 2: 'sub\\\\x.csv' is a path"),
        (b"bundle.zip\n", "not a .csv file"),
        (b".hidden.csv\n", "not a name this feed takes"),
        (b"# nothing\n\n", "lists no file"),
        (b"users\xc3(.csv\n", "not UTF-8"),
        (b"\xff\xfe\x00\xd8\n\x00", "not UTF-16"),  # a BOM, then a lone surrogate
        (b"x" * (sets.MANIFEST_MAX_BYTES + 1), "larger than"),
    ],
)
def test_a_manifest_that_cannot_be_used_is_refused_naming_the_line(text: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("\\", "\\\\").replace(".", r"\.").replace("(", r"\(")):
        sets.parse_manifest(text, takes=takes)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_manifest_with_its_bom_as_powershell_5_writes_it_is_read(encoding: str) -> None:
    text = "users.csv\r\ncourses.csv\r\n"
    data = text.encode(encoding)
    if encoding != "utf-16":  # the plain codec writes its BOM itself
        data = (codecs.BOM_UTF16_LE if encoding.endswith("le") else codecs.BOM_UTF16_BE) + data
    assert sets.parse_manifest(data, takes=takes) == ("users.csv", "courses.csv")


def test_a_manifest_naming_a_file_outside_the_feeds_patterns_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"line 1: 'users\.csv' is not a name this feed takes"):
        sets.parse_manifest(b"users.csv\n", takes=lambda name: name.startswith("sis_"))


def test_a_manifests_set_is_taken_only_when_every_listed_file_is_ready() -> None:
    listed = ("users.csv", "courses.csv")
    kwargs = {"manifest_ready_at": 100.0, "timeout": 600.0}
    waiting = sets.manifest_set(listed, ready={"users.csv"}, settling={"courses.csv"}, now=200, **kwargs)
    assert waiting.action == "wait" and waiting.unsettled == ("courses.csv",) and waiting.wake_at == 700
    taken = sets.manifest_set(listed, ready={"users.csv", "courses.csv", "other.csv"}, settling=(), now=200, **kwargs)
    assert taken.action == "take" and taken.present == listed


def test_a_manifests_set_still_missing_a_file_after_the_timeout_is_refused_whole() -> None:
    listed = ("users.csv", "courses.csv", "sections.csv")
    decided = sets.manifest_set(
        listed, ready={"users.csv"}, settling={"sections.csv"}, manifest_ready_at=100, now=700, timeout=600
    )
    assert decided.action == "refuse"
    assert decided.present == ("users.csv",) and decided.missing == ("courses.csv",)
    assert decided.unsettled == ("sections.csv",)
    reason = sets.incomplete_reason("tonight.done", decided, 600)
    assert "missing: courses.csv" in reason and "sections.csv" in reason and "tonight.done" in reason


def test_files_no_manifest_lists_wait_for_one() -> None:
    manifests = {"a.done": ["users.csv"]}
    assert sets.unlisted(["users.csv", "courses.csv", "a.done"], manifests) == ["courses.csv"]


def feed(**keys: object) -> FeedSettings:
    return FeedSettings.model_validate(
        {"name": "nightly", "drop_dir": "/srv/drop", "done_dir": "/srv/done", "failed_dir": "/srv/failed", **keys}
    )


def test_a_manifest_pattern_joins_the_patterns_so_manifests_are_detected() -> None:
    settings = feed(manifest="*.done")
    assert settings.matches("tonight.done") and sets.is_manifest(settings, "TONIGHT.DONE")
    assert sets.grouped(settings) and not sets.grouped(feed())
    assert not sets.is_manifest(settings, "users.csv")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"manifest": "*.done", "collect_seconds": 5}, "collect_seconds"),
        ({"collect_seconds": 30, "collect_max_seconds": 10}, "collect_max_seconds"),
        ({"manifest": "*.csv"}, "manifest"),
    ],
)
def test_set_keys_that_cannot_work_together_are_configuration_errors(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        feed(**keys)


def a_set(manifest: str | None = None) -> jobs.Job:
    members = [
        Member("enrollments.csv", Fingerprint(11, 40, 5), 90.0),
        Member("users.csv", Fingerprint(12, 60, 6), 95.0),
    ]
    if manifest:
        members.append(Member(manifest, Fingerprint(13, 30, 7), 96.0))
    return sets.claim_set("abc123", "nightly", members, manifest=manifest, now=100.0)


def test_a_set_job_names_each_member_and_its_zip_before_any_leaves_drop() -> None:
    job = a_set("tonight.done")
    assert job.name == sets.SET_NAME and job.work_name.endswith("_abc123_set.zip") and job.seen_at == 90
    assert job.size == 100 and not sets.is_built(job) and sets.is_set(job)
    assert [m["name"] for m in sets.members_of(job, sets.CSV)] == ["enrollments.csv", "users.csv"]
    [manifest] = sets.members_of(job, sets.MANIFEST)
    assert manifest["work_name"].endswith("_abc123_tonight.done")
    again = jobs.Job.from_dict(job.to_dict())
    assert again == job


def test_a_built_set_records_its_zip_and_each_members_hash() -> None:
    job = sets.built(a_set(), Fingerprint(99, 120, 8, 9), {"users.csv": "ab" * 32}, ("enrollments.csv", "users.csv"))
    assert sets.is_built(job) and job.fingerprint == Fingerprint(99, 120, 8) and job.size == 120
    assert [m["sha256"] for m in sets.members_of(job)] == [None, "ab" * 32]
    assert sets.summary(job)["zip"] == job.work_name


def test_a_member_that_could_not_be_taken_is_left_out_with_a_note() -> None:
    job = sets.without_member(a_set(), "users.csv", "users.csv could not be taken")
    assert [m["name"] for m in sets.members_of(job)] == ["enrollments.csv"] and job.size == 40
    assert job.notes == ("users.csv could not be taken",)


def test_a_refused_manifest_set_goes_to_failed_naming_the_missing_files() -> None:
    decided = sets.Listed("refuse", ("enrollments.csv", "users.csv"), missing=("courses.csv",))
    job = sets.refuse_incomplete(a_set("tonight.done"), decided, "why", now=200.0)
    assert job.state is JobState.FINISHING and job.folder == "failed" and job.reason_code == "manifest_incomplete"
    summary = sets.summary(job)
    assert summary["missing"] == ["courses.csv"] and summary["zip"] is None and summary["manifest"] == "tonight.done"


def test_each_member_sidecar_names_the_set_and_the_shared_import() -> None:
    job = sets.built(a_set(), Fingerprint(99, 120, 8), {"users.csv": "cd" * 32})
    shared = {"file": {"name": "set.zip"}, "job_id": job.job_id, "canvas": {"import_id": 7}, "outcome": "imported"}
    member = sets.members_of(job)[1]
    own = sets.member_sidecar(shared, member, job)
    assert own["file"] == {"name": "users.csv", "size": 60, "sha256": "cd" * 32, "role": "csv"}
    assert own["canvas"] == {"import_id": 7} and own["set"]["id"] == "abc123"
    assert own["set"]["members"] == ["enrollments.csv", "users.csv"]
    assert sets.set_sidecar(shared, job)["set"]["zip"] == job.work_name
    assert Path(job.work_name).suffix == ".zip"


def test_retry_of_a_member_alone_is_refused_naming_the_set_and_what_to_do_instead() -> None:
    job = sets.built(a_set(), Fingerprint(99, 120, 8), {})
    shared = {"file": {"name": "set.zip"}, "job_id": job.job_id, "reason_code": "canvas_errors"}
    member = sets.member_sidecar(shared, sets.members_of(job)[0], job)
    refusal = sets.retry_refusal(member)
    assert refusal is not None and "set abc123 (enrollments.csv, users.csv)" in refusal
    assert f"retry the set's zip {job.work_name}" in refusal
    assert sets.retry_refusal(sets.set_sidecar(shared, job)) is None  # the zip itself is sent again as one import
    assert sets.retry_refusal({"file": {"name": "users.csv"}}) is None
    alone = {"file": {"name": "m.done", "role": "manifest"}, "reason_code": "manifest_invalid", "set": {"id": "f1"}}
    assert sets.retry_refusal(alone) == (  # a manifest refused alone lists no member: no empty brackets
        "a member of set f1, refused whole (manifest_invalid): drop the whole set again, files and manifest"
    )
