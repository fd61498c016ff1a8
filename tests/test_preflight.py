"""The pre-flight check (sisdaemon.sis_csv: preflight, archive, problems) on small generated inputs and the public
samples: each problem is named with its file, line and column, fatal only where Canvas would fail the file."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sisdaemon import cli, sis_csv
from sisdaemon.sis_csv import Problem, Report

FIXTURES = Path(__file__).parent / "fixtures" / "sandbox"
USERS = "user_id,login_id,first_name,status\n"


def check_bytes(data: bytes, tmp_path: Path, name: str = "users.csv") -> Report:
    path = tmp_path / name
    path.write_bytes(data)
    return sis_csv.check_file(path)


def only(report: Report, code: str) -> Problem:
    found = [problem for problem in report.problems if problem.code == code]
    assert len(found) == 1, report.problems
    return found[0]


def test_a_clean_users_csv_passes_and_its_rows_are_counted(tmp_path: Path) -> None:
    report = check_bytes((USERS + "u1,l1,Ann,active\nu2,l2,Bo,suspended\n").encode(), tmp_path)
    assert report.problems == []
    assert not report.fatal
    assert report.types == {"user": 2}


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    report = check_bytes(b"\xef\xbb\xbf" + (USERS + "u1,l1,Ann,active\n").encode(), tmp_path)
    assert report.problems == []
    assert report.csvs == {"users.csv": "user"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_utf16_is_named_as_such_with_or_without_its_byte_order_mark(tmp_path: Path, encoding: str) -> None:
    report = check_bytes((USERS + "u1,l1,Ann,active\n").encode(encoding), tmp_path)
    problem = only(report, "utf16")
    assert problem.fatal and "UTF-16" in problem.message and problem.canvas == "Invalid UTF-8"


def test_windows_1252_is_named_with_its_line_and_column(tmp_path: Path) -> None:
    report = check_bytes((USERS + "u1,l1,Ann,active\nu2,l2,Zoë,active\n").encode("cp1252"), tmp_path)
    problem = only(report, "windows_1252")
    assert (problem.fatal, problem.line, problem.column) == (True, 3, "first_name")
    assert "Windows-1252" in problem.message and "0xEB" in problem.message
    assert problem.render().startswith('users.csv, line 3, column "first_name": FATAL:')


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"PK\x03\x04rest-of-an-xlsx", "zip archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1", "Excel"),
        (b"ab\x00\x01\x02cd" * 9, "NUL"),
    ],
)
def test_binary_content_named_csv_is_named_as_binary(tmp_path: Path, head: bytes, what: str) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(head)
    report = sis_csv.Report("users.csv")
    with path.open("rb") as stream:
        sis_csv.check_csv("users.csv", stream, report)
    problem = only(report, "binary")
    assert problem.fatal and what in problem.message


@pytest.mark.parametrize(("delimiter", "word"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_semicolon_or_tab_file_says_so(tmp_path: Path, delimiter: str, word: str) -> None:
    text = (USERS + "u1,l1,Ann,active\n").replace(",", delimiter)
    problem = only(check_bytes(text.encode(), tmp_path), "delimiter")
    assert problem.fatal and problem.line == 1 and word in problem.message
    assert problem.canvas == "Couldn't find Canvas CSV import headers"


def test_an_unterminated_quote_is_fatal_at_the_row_that_opens_it(tmp_path: Path) -> None:
    rows = "".join(f"u{i},l{i},Ann,active\n" for i in range(5))
    report = check_bytes((USERS + rows + 'u9,l9,"Ann,active\n' + rows).encode(), tmp_path)
    problem = only(report, "unterminated_quote")
    assert (problem.fatal, problem.line, problem.canvas) == (True, 7, "Malformed CSV")


def test_text_after_a_closing_quote_is_malformed(tmp_path: Path) -> None:
    report = check_bytes((USERS + 'u1,l1,"Ann"x,active\n').encode(), tmp_path)
    problem = only(report, "malformed")
    assert problem.fatal and problem.line == 2


def test_ragged_rows_and_a_last_row_cut_short_are_warnings(tmp_path: Path) -> None:
    data = USERS + "u1,l1,Ann,active,extra\nu2,l2,Bo,active\nu3,l3"
    report = check_bytes(data.encode(), tmp_path)
    assert not report.fatal
    ragged = [problem for problem in report.problems if problem.code == "ragged_row"]
    assert [(p.line, p.column) for p in ragged] == [(2, "column 5"), (4, "first_name")]
    cut = only(report, "cut_short")
    assert cut.line == 4 and "cut short" in cut.message


def test_a_last_row_without_a_line_break_but_whole_is_fine(tmp_path: Path) -> None:
    assert check_bytes((USERS + "u1,l1,Ann,active").encode(), tmp_path).problems == []


def test_an_unknown_status_is_a_warning_naming_the_status_column(tmp_path: Path) -> None:
    report = check_bytes((USERS + "u1,l1,Ann,enrolled\n").encode(), tmp_path)
    problem = only(report, "unknown_status")
    assert (problem.fatal, problem.line, problem.column) == (False, 2, "status")
    assert '"enrolled"' in problem.message


def test_a_row_canvas_skips_carries_canvas_own_message(tmp_path: Path) -> None:
    report = check_bytes((USERS + ",l1,Ann,active\n").encode(), tmp_path)
    assert only(report, "row_skipped").canvas == "No user_id given for a user"


def test_a_missing_required_column_is_fatal(tmp_path: Path) -> None:
    problem = only(check_bytes(b"user_id,login_id,first_name\nu1,l1,Ann\n", tmp_path), "missing_columns")
    assert problem.fatal and "status" in problem.message


def test_header_cells_with_surrounding_spaces_are_recognised_as_canvas_strips_them(tmp_path: Path) -> None:
    report = check_bytes(b" user_id , login_id ,status \nu1,l1,active\n", tmp_path)
    assert report.problems == [] and report.types == {"user": 1}


def test_a_header_of_no_known_type_is_fatal(tmp_path: Path) -> None:
    problem = only(check_bytes(b"id,name\n1,x\n", tmp_path), "no_headers")
    assert problem.fatal and "id,name" in problem.message


@pytest.mark.parametrize("importer", sis_csv.IMPORTERS)
def test_every_type_canvas_knows_is_recognised_from_its_required_columns(tmp_path: Path, importer: str) -> None:
    columns = [column[0] if isinstance(column, tuple) else column for column in sis_csv.REQUIRED_COLUMNS[importer]]
    if importer == "section":
        columns.append("course_id")
    report = check_bytes((",".join(dict.fromkeys(columns)) + "\n").encode(), tmp_path)
    assert report.csvs == {"users.csv": importer}
    assert not report.fatal


def test_a_multibyte_character_split_across_read_blocks_is_no_error(tmp_path: Path) -> None:
    data = (USERS + "u1,l1,Zoë Ærø 雪,active\n" * 50).encode()
    for size in (1, 2, 3, 5, 7):
        report = sis_csv.Report("users.csv")
        sis_csv.check_csv("users.csv", io.BytesIO(data), report, chunk_size=size)
        assert report.problems == [], size


def test_warnings_of_one_kind_are_kept_up_to_a_bound_and_the_rest_counted(tmp_path: Path) -> None:
    report = check_bytes((USERS + "u,l,A,gone\n" * 100).encode(), tmp_path)
    assert len(report.problems) == sis_csv.problems.KEPT_PER_KIND
    assert report.left_out == {"unknown_status": 100 - sis_csv.problems.KEPT_PER_KIND}


class _Rows(io.RawIOBase):
    """A users.csv of ``count`` rows made as it is read (the test itself holds no file in memory)."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._index = 0
        self._pending = USERS.encode()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while len(self._pending) < len(buffer) and self._index < self._count:
            block = "".join(f"u{i},login{i},Zoë,active\n" for i in range(self._index, self._index + 1000))
            self._index += 1000
            self._pending += block.encode()
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


_MEASURE = """
import io, resource, sys, time
sys.path.insert(0, sys.argv[2])
from test_preflight import _Rows
from sisdaemon import cli, sis_csv
report = sis_csv.Report("users.csv")
started = time.monotonic()
sis_csv.check_csv("users.csv", io.BufferedReader(_Rows(int(sys.argv[1]))), report)
assert report.problems == [] and report.types == {"user": int(sys.argv[1])}, report.as_dict()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic() - started)
"""


def _peak_kib(rows: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(rows), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(done.stdout.split()[0])


def test_a_million_row_users_csv_is_checked_in_constant_memory() -> None:
    # ~27 MB of rows; the peak resident size of the process that checks them grows by less than 8 MB over one
    # that checks a thousand.
    assert _peak_kib(1_000_000) - _peak_kib(1_000) < 8 * 1024


def test_a_check_stops_when_asked() -> None:
    report = sis_csv.Report("users.csv")
    with pytest.raises(sis_csv.Cancelled):
        sis_csv.check_csv("users.csv", io.BufferedReader(_Rows(100_000)), report, should_stop=lambda: True)


# --- zips ------------------------------------------------------------------------------------------------------


def make_zip(tmp_path: Path, members: dict[str, bytes], name: str = "feed.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def test_a_zip_of_good_csvs_passes_and_names_its_members(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path,
        {
            "users.csv": (USERS + "u1,l1,Ann,active\n").encode(),
            "sub/terms.csv": b"term_id,name,status\nT1,Fall,active\n",
        },
    )
    report = sis_csv.check_file(path)
    assert report.problems == []
    assert report.csvs == {"feed.zip: sub/terms.csv": "term", "feed.zip: users.csv": "user"}


def test_junk_and_unknown_members_are_warnings(tmp_path: Path) -> None:
    users = (USERS + "u1,l1,Ann,active\n").encode()
    path = make_zip(
        tmp_path, {"users.csv": users, "__MACOSX/._users.csv": b"\x00\x05", ".DS_Store": b"x", "a.txt": b"x"}
    )
    report = sis_csv.check_file(path)
    assert not report.fatal
    assert sorted(p.code for p in report.problems) == ["zip_junk", "zip_junk", "zip_unknown_file"]
    assert only(report, "zip_unknown_file").canvas == "Skipping unknown file type"


@pytest.mark.parametrize("member", ["../users.csv", "/etc/users.csv", "a/../../users.csv"])
def test_member_names_that_leave_the_folder_are_fatal(tmp_path: Path, member: str) -> None:
    path = make_zip(tmp_path, {member: (USERS + "u1,l1,Ann,active\n").encode()})
    problem = only(sis_csv.check_file(path), "zip_unsafe_name")
    assert problem.fatal and problem.file == f"feed.zip: {member}"


def test_a_zip_beyond_canvas_size_ratio_is_fatal(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"users.csv": (USERS + "u1,l1,Ann,active\n" * 20_000).encode()})
    assert only(sis_csv.check_file(path), "zip_too_large").fatal


def test_a_truncated_zip_is_fatal(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"users.csv": (USERS + "u1,l1,Ann,active\n").encode()})
    path.write_bytes(path.read_bytes()[:60])
    assert only(sis_csv.check_file(path), "zip_damaged").fatal


def test_a_zip_member_with_a_bad_crc_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "feed.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("users.csv", (USERS + "u1,l1,Ann,active\n").encode())
    data = bytearray(path.read_bytes())
    at = data.index(b"u1,l1")
    data[at] = ord("x")
    path.write_bytes(bytes(data))
    problem = only(sis_csv.check_file(path), "zip_damaged")
    assert problem.fatal and problem.file == "feed.zip: users.csv"


def test_a_zip_with_no_recognised_csv_is_fatal(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"notes.txt": b"hello", "x.csv": b""})
    assert only(sis_csv.check_file(path), "zip_no_csv").fatal


def test_a_broken_csv_in_a_zip_is_named_by_zip_and_member(tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"good.csv": (USERS + "u,l,A,active\n").encode(), "bad.csv": b"user_id;login_id\n"})
    assert only(sis_csv.check_file(path), "delimiter").file == "feed.zip: bad.csv"


# --- the public samples ------------------------------------------------------------------------------------------

BROKEN_SAMPLES = {
    "canvas-lms-specs/invalid_utf8.csv": "windows_1252",
    "canvas-lms-specs/malformed_late.csv": "unterminated_quote",
    "canvas-lms-specs/unknown_headers.csv": "no_headers",
}


SAMPLES = sorted(str(path.relative_to(FIXTURES)) for path in FIXTURES.glob("*/*.csv"))


@pytest.mark.parametrize("sample", [*SAMPLES, "canvas-contrib/demodata/create.zip"])
def test_the_public_samples_pass_where_valid_and_broken_ones_are_named(sample: str) -> None:
    report = sis_csv.check_file(FIXTURES / sample)
    fatal = [problem.code for problem in report.problems if problem.fatal]
    if sample in BROKEN_SAMPLES:
        assert fatal == [BROKEN_SAMPLES[sample]]
    else:
        assert fatal == []
        assert report.csvs


# --- sisdaemon validate --------------------------------------------------------------------------------------------


def test_validate_prints_each_problem_and_exits_1_when_canvas_would_fail_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "users.csv"
    good.write_bytes((USERS + "u1,l1,Ann,on_leave\n").encode())
    bad = make_zip(tmp_path, {"users.csv": (USERS + "u1,l1,Ann,active\n").encode(), "../x.csv": b"a,b\n"})
    assert cli.main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert f'{good}, line 2, column "status": warning:' in out and "OK to send" in out
    assert cli.main(["validate", str(good), str(bad)]) == 1
    assert f"{bad}: ../x.csv: FATAL:" in capsys.readouterr().out


def test_validate_json_gives_every_report_and_names_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zipped = make_zip(tmp_path, {"sub/users.csv": (USERS + "u1,l1,Ann,active\n").encode(), ".DS_Store": b"x"})
    assert cli.main(["validate", "--json", str(zipped)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is True
    [report] = answer["files"]
    assert report["rows"] == {"user": 1} and report["csvs"] == {f"{zipped}: sub/users.csv": "user"}
    assert [problem["code"] for problem in report["problems"]] == ["zip_junk"]
    assert cli.main(["validate", "--json", str(tmp_path / "missing.csv")]) == 1
    assert json.loads(capsys.readouterr().out)["files"][0]["error"] == "No such file or directory"
