"""Which earlier file each SIS type of a new file is compared with (guard.diff_bases, the shrink guard's baseline),
the per-type comparison with several earlier files (sis_csv.compare_types), and the summary that names them: a file
of users is never compared with a file of courses imported since (trial report, item 2)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from sisdaemon import guard
from sisdaemon.config import ImportOptions
from sisdaemon.sis_csv import compare_files, compare_types, held_types
from sisdaemon.sis_csv.compare import TEMP_PREFIX

USERS = "user_id,login_id,status\n"
COURSES = "course_id,short_name,long_name,status\n"
BATCH = ImportOptions(batch_mode=True, batch_mode_term_id="1", change_threshold=10)


def users(*ids: int) -> bytes:
    return (USERS + "".join(f"U{i},login{i},active\n" for i in ids)).encode()


def courses(*ids: int) -> bytes:
    return (COURSES + "".join(f"C{i},C{i},Course {i},active\n" for i in ids)).encode()


def write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def imported(job_id: str, name: str, rows: dict[str, int] | None, import_id: int) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "work_name": name,
        "import_id": import_id,
        "folder": "done",
        "finished_at": float(import_id),
        "rows": rows,
    }


HISTORY = [
    imported("j1", "1_j1_busers.csv", {"user": 10}, 1),
    imported("j2", "2_j2_bcourses.csv", {"course": 2}, 2),
]


def test_each_type_is_based_on_the_last_imported_file_that_held_it_as_the_shrink_guard_counts() -> None:
    compared, not_compared = guard.diff_bases(HISTORY, ["user"], Path("/done"), exists=lambda path: True)
    assert compared["user"]["file"] == "1_j1_busers.csv" and compared["user"]["import_id"] == 1
    assert not_compared == {}
    # The same function is the shrink guard's baseline: both name the same earlier file for a type.
    assert guard.baseline(HISTORY)["user"]["file"] == compared["user"]["file"]
    assert guard.base_paths(compared, Path("/done")) == {"user": Path("/done/1_j1_busers.csv")}


def test_a_type_never_imported_is_the_first_file_with_it_and_a_base_gone_from_done_is_said() -> None:
    compared, not_compared = guard.diff_bases(HISTORY[:1], ["user", "course"], Path("/done"), exists=lambda p: False)
    assert compared == {}
    assert not_compared["course"] == "first file with course rows in this feed: nothing to compare with"
    assert "1_j1_busers.csv, is no longer in done/" in not_compared["user"]


def test_before_the_new_files_types_are_known_every_baseline_type_is_given() -> None:
    compared, _ = guard.diff_bases(HISTORY, None, Path("/done"), exists=lambda path: True)
    assert sorted(compared) == ["course", "user"]


def test_each_type_is_compared_with_its_own_earlier_file_and_types_the_new_file_lacks_are_left_out(
    tmp_path: Path,
) -> None:
    done = tmp_path / "done"
    base_users = write(done, "1_busers.csv", users(*range(1, 11)))
    base_courses = write(done, "2_bcourses.csv", courses(1, 2))
    new = write(tmp_path, "busers2.csv", users(1, 2))
    comparison = compare_types({"user": base_users, "course": base_courses}, new, temp_dir=tmp_path)
    assert list(comparison.types) == ["user"]
    user = comparison.types["user"]
    assert (user.before, user.after, user.removed, user.against) == (10, 2, 8, str(base_users))
    assert "course" in comparison.left_out  # the new file holds no courses: Canvas does not touch them
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))

    both = write(tmp_path, "users3.csv", users(1, 2, 3))
    mixed = tmp_path / "mixed"
    write(mixed, "users.csv", users(1, 2, 3))
    write(mixed, "courses.csv", courses(2, 3))
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.write(mixed / "users.csv", "users.csv")
        out.write(mixed / "courses.csv", "courses.csv")
    assert held_types(archive) == {"user", "course"} and held_types(both) == {"user"}
    names = {base_users: "1_busers.csv", base_courses: "2_bcourses.csv"}
    per_type = compare_types({"user": base_users, "course": base_courses}, archive, names=names, temp_dir=tmp_path)
    assert {name: diff.against for name, diff in per_type.types.items()} == {
        "user": "1_busers.csv",
        "course": "2_bcourses.csv",
    }
    assert (per_type.types["user"].removed, per_type.types["course"].removed) == (7, 1)
    assert (per_type.types["course"].added, per_type.types["user"].added) == (1, 0)


def test_against_one_file_compares_only_the_types_both_hold(tmp_path: Path) -> None:
    earlier = write(tmp_path, "bcourses.csv", courses(1, 2))
    new = write(tmp_path, "busers2.csv", users(1, 2))
    comparison = compare_files(earlier, new, temp_dir=tmp_path)
    assert comparison.types == {}
    assert set(comparison.left_out) == {"course", "user"}
    summary = guard.diff_summary(comparison, {}, {}, BATCH)
    assert "canvas_would" not in summary  # nothing compared like for like: nothing said about deletions


def test_the_summary_names_the_earlier_file_of_each_type_and_the_types_not_compared(tmp_path: Path) -> None:
    done = tmp_path / "done"
    write(done, "1_j1_busers.csv", users(*range(1, 11)))
    write(done, "2_j2_bcourses.csv", courses(1, 2))
    new = write(tmp_path, "busers2.csv", users(1, 2))
    compared, not_compared = guard.diff_bases(HISTORY, sorted(held_types(new)), done)
    comparison = compare_types(guard.base_paths(compared, done), new, names={}, temp_dir=tmp_path)
    summary = guard.diff_summary(comparison, compared, not_compared, BATCH)
    assert summary["against"] == [{"file": "1_j1_busers.csv", "job_id": "j1", "import_id": 1, "types": ["user"]}]
    assert summary["types"]["user"]["against"] == "1_j1_busers.csv"
    assert (summary["types"]["user"]["before"], summary["types"]["user"]["removed"]) == (10, 8)
    assert "course" not in summary["types"] and summary["canvas_would"] == {}  # batch mode deletes no users
    assert guard.summary_line(summary).startswith("since 1_j1_busers.csv: user 10 -> 2 rows (0 added, 8 removed")

    first = write(tmp_path, "bcourses.csv", courses(1, 2))
    compared, not_compared = guard.diff_bases(HISTORY[:1], sorted(held_types(first)), done)
    comparison = compare_types(guard.base_paths(compared, done), first, temp_dir=tmp_path)
    summary = guard.diff_summary(comparison, compared, not_compared, BATCH)
    assert summary["types"] == {} and summary["against"] == [] and "canvas_would" not in summary
    assert summary["not_compared"] == {"course": "first file with course rows in this feed: nothing to compare with"}
    assert guard.summary_line(summary) == f"course: {summary['not_compared']['course']}"
