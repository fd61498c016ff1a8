"""sisdaemon.sis_csv: Canvas's SIS CSV rules as pure, streaming functions."""

from __future__ import annotations

import io

import pytest

from sisdaemon import sis_csv
from tests.sandbox.conftest import fixture_path


@pytest.mark.parametrize(
    ("header", "importer"),
    [
        ("user_id,login_id,status", "user"),
        ("User_ID,Login_ID,Status", "user"),
        ("account_id,parent_account_id,name,status", "account"),
        ("term_id,name,status", "term"),
        ("course_id,short_name,long_name,status", "course"),
        ("abstract_course_id,short_name,long_name,status", "abstract_course"),
        ("section_id,course_id,name,status", "section"),  # section wins over enrollment-ish columns
        ("xlist_course_id,section_id,status", "xlist"),
        ("course_id,user_id,role,status", "enrollment"),
        ("user_id,login_id,existing_user_id", "login"),
        ("user_id,account_id,role,status", "admin"),
        ("group_id,name,status", "group"),
        ("group_id,user_id,status", "group_membership"),
        ("group_category_id,category_name,status", "group_category"),
        ("old_id,new_id,type", "change_sis_id"),
        ("observer_id,student_id,status", "user_observer"),
        ("tag_set_id,course_id,set_name,status", "differentiation_tag_set"),
        ("course_id,randomness,smelly", None),
        (" user_id , login_id,status", "user"),  # header cells are stripped and downcased (csv_base_importer.rb)
    ],
)
def test_the_header_row_picks_the_first_matching_importer(header: str, importer: str | None) -> None:
    assert sis_csv.detect_importer(header.split(",")) == importer


def test_missing_columns_names_one_of_groups() -> None:
    assert sis_csv.missing_columns("enrollment", ["course_id", "user_id"]) == ["role|role_id", "status"]
    assert sis_csv.missing_columns("user", ["user_id", "login_id", "status"]) == []


def test_a_utf8_character_split_at_a_chunk_border_is_not_an_error() -> None:
    data = fixture_path("canvas-lms/utf8.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data[:4096].decode("utf-8")  # the first 4096-byte chunk ends inside a two-byte character
    assert sis_csv.check_utf8(io.BytesIO(data), chunk_size=4096)
    assert sis_csv.check_utf8(io.BytesIO(data), chunk_size=1)
    records = list(sis_csv.iter_records(io.BytesIO(data), chunk_size=4096))
    assert len(records) == 10


def test_invalid_utf8_is_found_incrementally() -> None:
    data = fixture_path("canvas-lms-specs/invalid_utf8.csv").read_bytes()
    assert not sis_csv.check_utf8(io.BytesIO(data), chunk_size=7)
    with pytest.raises(sis_csv.CsvFileError, match="Invalid UTF-8"):
        list(sis_csv.iter_records(io.BytesIO(data)))
    assert not sis_csv.check_utf8(io.BytesIO("é".encode()[:1]))  # truncated at EOF


def test_a_bom_is_dropped() -> None:
    data = fixture_path("canvas-lms/with_bom.csv").read_bytes()
    assert data.startswith(sis_csv.UTF8_BOM)
    header = sis_csv.read_header(io.BytesIO(data))
    assert header is not None and header[0] == "user_id"
    assert sis_csv.read_header(
        io.BytesIO(sis_csv.UTF8_BOM + b"a,b\n"),
    ) == ["a", "b"]
    tiny = list(sis_csv.iter_utf8_text(iter([b"\xef", b"\xbb", b"\xbfx"])))
    assert "".join(tiny) == "x"


def test_malformed_csv_is_found_at_the_end() -> None:
    data = fixture_path("canvas-lms-specs/malformed_late.csv").read_bytes()
    with pytest.raises(sis_csv.CsvFileError, match="Malformed CSV"):
        list(sis_csv.iter_records(io.BytesIO(data)))
    with pytest.raises(sis_csv.CsvFileError):
        list(sis_csv.iter_records(io.BytesIO(b'a,b\n"x"y,z\n')))


def test_records_keep_line_numbers_skip_blank_lines_and_allow_quoted_newlines() -> None:
    data = b'a,b\r\n\r\n"one\ntwo",x\r\n3,"4,5"\r'
    records = list(sis_csv.iter_records(io.BytesIO(data), chunk_size=3))
    assert [(r.line, r.fields) for r in records] == [(1, ["a", "b"]), (4, ["one\ntwo", "x"]), (5, ["3", "4,5"])]


def test_a_row_maps_like_rubys_csv_row() -> None:
    row = sis_csv.row_dict(["Course_ID", "user_id", "role"], [" C1 ", "U1"])
    assert row == {"course_id": "C1", "user_id": "U1", "role": None}
    assert sis_csv.is_blank_row(sis_csv.row_dict(["a", "b"], ["", ""]))


def test_row_checks_give_canvas_messages() -> None:
    assert (
        sis_csv.row_problem("user", {"user_id": "", "login_id": "x", "status": "active"})
        == "No user_id given for a user"
    )
    assert (
        sis_csv.row_problem("user", {"user_id": "u", "login_id": "x", "status": "gone"}) == "Improper status for user u"
    )
    assert sis_csv.row_problem("course", {"course_id": "C", "short_name": "s", "long_name": "l", "status": "x"}) == (
        'Improper status "x" for course C'
    )
    assert (
        sis_csv.row_problem("enrollment", {"course_id": "C", "user_id": "U", "role": "x", "status": "active"}) is None
    )
    assert sis_csv.check_enrollment_role({"role": "cheater"}) == 'Improper role "cheater" for an enrollment'
    assert sis_csv.row_warnings("term", {"term_id": "T", "start_date": "2012-13-05 00:00:00"}) == [
        "Bad date format for term T"
    ]
    assert sis_csv.row_warnings("term", {"term_id": "T", "start_date": "2013-05-03 00:00:00-06:00"}) == []


def test_zip_entries_canvas_ignores() -> None:
    assert sis_csv.is_ignored_zip_entry("__MACOSX/create/._.DS_Store")
    assert sis_csv.is_ignored_zip_entry("create/.DS_Store")
    assert not sis_csv.is_ignored_zip_entry("create/user.csv")
