"""The shrink guard, duplicate detection and the diff summary (guard.py, pure), and the comparison they rest on
(sis_csv.compare, sis_csv.hashing) on real files in temp folders."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sisdaemon import guard, jobs, sis_csv
from sisdaemon.config import FeedSettings, ImportOptions
from sisdaemon.jobs import Fingerprint, JobState, Outcome
from sisdaemon.sandbox import diffing
from sisdaemon.sis_csv.compare import TEMP_PREFIX, compare_files, remove_stale_diff_dirs

USERS = "user_id,login_id,status\n"
ENROLLMENTS = "course_id,user_id,role,section_id,status\n"


def users(*ids: int, status: str = "active") -> bytes:
    return (USERS + "".join(f"U{i},login{i},{status}\n" for i in ids)).encode()


def record(
    job_id: str, rows: dict[str, int] | None, *, import_id: int | None = 1, at: float = 0.0, **extra: Any
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "work_name": f"20260101T000000Z_{job_id}_users.csv",
        "import_id": import_id,
        "folder": "done",
        "finished_at": at,
        "rows": rows,
        **extra,
    }


def feed(tmp_path: Path, **settings: Any) -> FeedSettings:
    return FeedSettings.model_validate(
        {
            "name": "nightly",
            "drop_dir": tmp_path / "drop",
            "done_dir": tmp_path / "done",
            "failed_dir": tmp_path / "failed",
            **settings,
        }
    )


def claimed(rows: dict[str, int], sha256: str = "a" * 64, **changes: Any) -> jobs.Job:
    job = jobs.claim("j1", "nightly", "users.csv", Fingerprint(1, 10, 1), seen_at=0.0, now=0.0)
    return jobs.dataclasses.replace(job, scan={"rows": rows, "types": sorted(rows)}, sha256=sha256, **changes)


# --- sis_csv: the hash taken on the way, the comparison ---------------------------------------------------------


def test_the_check_gives_the_files_sha256_for_a_csv_and_for_a_zip_it_reads_out_of_order(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    csv_path.write_bytes(users(*range(3000)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("z_users.csv", users(*range(3000)))  # read after a_ by the check (by name)
        archive.writestr("a_notes.txt", b"x" * 5000)
        archive.writestr("__MACOSX/._z_users.csv", b"junk")  # never opened by the check
    zip_path = tmp_path / "feed.zip"
    zip_path.write_bytes(buffer.getvalue())
    for path in (csv_path, zip_path):
        report = sis_csv.check_file(path)
        assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert report.types == {"user": 3000}


def test_a_comparison_counts_added_removed_and_changed_rows_by_canvas_keys(tmp_path: Path) -> None:
    before, after = tmp_path / "before.csv", tmp_path / "after.csv"
    before.write_bytes(users(1, 2, 3) + b",,\n")
    after.write_bytes(users(2, 4) + b"U3,login3,deleted\n" + b",login9,active\n")
    comparison = compare_files(before, after)
    user = comparison.types["user"]
    assert (user.before, user.after, user.added, user.removed, user.changed, user.unkeyed) == (3, 4, 1, 1, 1, 1)
    assert user.examples == {"added": ["U4"], "removed": ["U1"], "changed": ["U3"]}


def test_enrollments_are_keyed_by_all_of_canvas_key_columns_and_columns_in_another_order_are_the_same_row(
    tmp_path: Path,
) -> None:
    before, after = tmp_path / "before.csv", tmp_path / "after.csv"
    before.write_bytes((ENROLLMENTS + "C1,U1,student,S1,active\nC1,U2,student,S1,active\n").encode())
    after.write_bytes(b"status,section_id,role,user_id,course_id\nactive,S1,student,U1,C1\nactive,S1,teacher,U2,C1\n")
    enrollment = compare_files(before, after).types["enrollment"]
    assert (enrollment.added, enrollment.removed, enrollment.changed, enrollment.headers_differ) == (1, 1, 0, False)
    assert enrollment.examples["removed"] == ["course_id=C1 section_id=S1 role=student user_id=U2"]


def test_many_small_partitions_give_the_same_answer_as_one_and_leave_no_temp_files(tmp_path: Path) -> None:
    before, after = tmp_path / "before.csv", tmp_path / "after.zip"
    before.write_bytes(users(*range(5000)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("users.csv", users(*range(100, 5100)))
    after.write_bytes(buffer.getvalue())
    temp = tmp_path / "temp"
    temp.mkdir()
    one = compare_files(before, after, temp_dir=temp).as_dict()
    many = compare_files(before, after, temp_dir=temp, partition_bytes=1024).as_dict()
    assert one["types"] == many["types"]
    assert many["types"]["user"]["removed"] == 100 and many["types"]["user"]["added"] == 100
    assert many["types"]["user"]["examples"]["removed"] == ["U0", "U1", "U2", "U3", "U4"]  # the first by line
    assert list(temp.iterdir()) == []


def test_a_killed_comparisons_temp_folder_is_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}abc").mkdir()
    (tmp_path / f"{TEMP_PREFIX}abc" / "before-0.csv").write_text("x")
    (tmp_path / "keep.csv").write_text("x")
    assert remove_stale_diff_dirs(tmp_path) == [tmp_path / f"{TEMP_PREFIX}abc"]
    assert [path.name for path in tmp_path.iterdir()] == ["keep.csv"]


def test_the_sandbox_diffs_with_the_same_key_table() -> None:
    assert diffing.DIFF_KEYS is sis_csv.DIFF_KEYS


# --- guard: pure decisions ------------------------------------------------------------------------------------


def test_the_baseline_is_per_type_the_last_imported_file_that_held_it() -> None:
    records = [
        record("a", {"user": 10, "enrollment": 50}),
        record("b", {"user": 12}, import_id=2),
        record("c", {"user": 1}, import_id=None, folder="failed"),  # not imported
        record("d", None, import_id=4),  # from before counts were kept
    ]
    base = guard.baseline(records)
    assert {name: item["rows"] for name, item in base.items()} == {"user": 12, "enrollment": 50}
    assert base["enrollment"]["job_id"] == "a"


@pytest.mark.parametrize(
    ("after", "percent", "held"), [(80, 20, False), (79, 20, True), (0, 20, True), (0, 100, False), (50, 50, False)]
)
def test_a_fall_of_more_than_the_percentage_is_shrinkage(after: int, percent: int, held: bool) -> None:
    base = {"user": {"rows": 100, "file": "f", "import_id": 1}}
    assert bool(guard.shrinkage(base, {"user": after}, ["user"], percent)) is held


def test_a_type_the_new_file_does_not_hold_is_not_compared() -> None:
    base = {"user": {"rows": 100, "file": "f", "import_id": 1}, "course": {"rows": 5, "file": "f", "import_id": 1}}
    assert guard.shrinkage(base, {"user": 100}, ["user"], 20) == []


def test_a_duplicate_is_the_same_hash_imported_within_the_window() -> None:
    records = [record("a", None, sha256="x", at=1000.0), record("b", None, sha256="y", at=5000.0)]
    assert guard.duplicate_of(records, "x", 1000.0 + 3600, 1.0) is not None
    assert guard.duplicate_of(records, "x", 1000.0 + 3601, 1.0) is None
    assert guard.duplicate_of(records, "z", 5000.0, 1.0) is None
    assert guard.duplicate_of(records, "x", 1000.0, None) is None


def test_decide_holds_a_shrunk_file_passes_the_first_and_a_released_one(tmp_path: Path) -> None:
    batch = feed(
        tmp_path,
        **{"import": {"batch_mode": True, "batch_mode_term_id": "2", "change_threshold": 10}},
    )
    first = guard.decide(claimed({"enrollment": 0}), batch, [], diff=None, now=1.0)
    assert first.state is JobState.CLAIMED and first.guard is not None
    assert first.guard["note"].startswith("no baseline")
    history = [record("a", {"enrollment": 40})]
    held = guard.decide(claimed({"enrollment": 0}), batch, history, diff=None, now=1.0)
    assert held.state is JobState.FINISHING and held.reason_code == "shrink_guard" and held.folder == "failed"
    assert "enrollment rows fell from 40 to 0" in str(held.reason)
    released = guard.decide(
        claimed({"enrollment": 0}, released_by={"by": "ops", "at": "T"}), batch, history, diff=None, now=1.0
    )
    assert released.state is JobState.CLAIMED and released.guard is not None
    assert released.guard["released_by"] == {"by": "ops", "at": "T"}
    off = feed(tmp_path, shrink_guard_percent=0, **{"import": {"diffing_data_set_identifier": "x"}})
    assert guard.decide(claimed({"user": 0}), off, [record("a", {"user": 9})], diff=None, now=1.0).state is (
        JobState.CLAIMED
    )
    plain = feed(tmp_path)
    passed = guard.decide(claimed({"user": 0}), plain, [record("a", {"user": 9})], diff=None, now=1.0)
    assert passed.guard is None and passed.state is JobState.CLAIMED


def test_decide_skips_a_duplicate_into_done(tmp_path: Path) -> None:
    skipping = feed(tmp_path, skip_duplicates_hours=2)
    job = guard.decide(claimed({"user": 1}), skipping, [record("a", {"user": 1}, sha256="a" * 64)], diff=None, now=10)
    assert job.outcome is Outcome.DUPLICATE_SKIPPED and job.folder == "done"
    assert job.duplicate_of is not None and job.duplicate_of["import_id"] == 1


def test_what_canvas_would_drop_follows_batch_mode_and_diffing_rules(tmp_path: Path) -> None:
    before, after = tmp_path / "before.zip", tmp_path / "after.csv"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("users.csv", users(1, 2))
        archive.writestr("enrollments.csv", ENROLLMENTS + "C1,U1,student,S1,active\nC1,U2,student,S1,active\n")
    before.write_bytes(buffer.getvalue())
    after.write_bytes((ENROLLMENTS + "C1,U1,student,S1,active\n").encode())
    comparison = compare_files(before, after)
    batch = ImportOptions(
        batch_mode=True, batch_mode_term_id="2", change_threshold=10, batch_mode_enrollment_drop_status="inactive"
    )
    assert guard.canvas_would(comparison, batch) == {
        "enrollment": {
            "rows": 1,
            "status": "inactive",
            "examples": ["course_id=C1 section_id=S1 role=student user_id=U2"],
        }
    }  # users are left out of this file: batch mode leaves them alone
    diffing = ImportOptions(diffing_data_set_identifier="x", diffing_drop_status="completed")
    assert guard.canvas_would(comparison, diffing)["enrollment"]["status"] == "completed"
    assert guard.canvas_would(comparison, ImportOptions()) == {}


def test_canvas_verdict_reads_change_threshold_aborts_and_diffing_thresholds() -> None:
    aborted = {
        "batch_mode": True,
        "change_threshold": 10,
        "workflow_state": "aborted",
        "processing_warnings": [[None, "3 enrollments would be deleted and exceeds the set threshold of 10%"]],
    }
    verdict = jobs.canvas_verdict(aborted)
    assert verdict is not None and verdict["change_threshold_exceeded"].startswith("3 enrollments")
    finished = jobs.finish(
        jobs.dataclasses.replace(claimed({}), state=JobState.SUBMITTED, workflow_state="aborted", sis_import=aborted),
        now=1.0,
        errors_csv_wait=0,
    )
    assert finished.reason_code == "change_threshold"
    diffed = {"diffing_data_set_identifier": "x", "diffing_threshold_exceeded": True, "processing_warnings": []}
    assert (jobs.canvas_verdict(diffed) or {})["diffing_threshold_exceeded"] is True
    assert jobs.canvas_verdict({"workflow_state": "imported"}) is None
