"""The journal (issue 8): under systemd each log line carries its syslog priority, so `journalctl -p err` finds
the errors, and file names are written as UTF-8.

systemd connects a service's stdout and stderr to the journal and says so with ``$JOURNAL_STREAM=DEV:INODE`` of that
stream (systemd.exec(5)); a line starting ``<N>`` is then logged at priority N (sd-daemon(3)). The tests give a real
``sisdaemon run --once`` a file as stdout and stderr and set ``$JOURNAL_STREAM`` to that file's device and inode, as
systemd would to its socket.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, TOKEN_ENV, Spool

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}


def run_logged(spool: Spool, *args: str, journal: str | None) -> tuple[int, bytes]:
    """``sisdaemon ARGS -c CONFIG`` with stdout and stderr on one file; ``journal``: ``"self"`` sets
    ``$JOURNAL_STREAM`` to that file, another value is set as it is, None leaves it unset."""
    log = spool.root / "journal.log"
    with open(log, "wb") as out:
        status = os.fstat(out.fileno())
        env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
        env[TOKEN_ENV] = TOKEN
        if journal is not None:
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}" if journal == "self" else journal
        process = subprocess.run(
            [sys.executable, "-m", "sisdaemon", *args, "-c", str(spool.write_config())],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=DEADLINE * 2,
        )
    return process.returncode, log.read_bytes()


def parse(line: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(line)
    return event


def test_under_the_journal_every_line_starts_with_its_syslog_priority(spool: Spool, sandbox: Sandbox) -> None:
    sandbox.faults.add(route="users_self", status=401, count=1)  # a credential fault (error), then it clears
    spool.drop_file("users.csv", USERS)
    spool.drop_file("grades.csv", b"student_number,grade\n1,10\n")  # Canvas fails it: a failed file

    code, output = run_logged(spool, "run", "--once", journal="self")
    assert code == 1, output.decode()[-3000:]
    lines = output.decode("utf-8").splitlines()
    seen = set()
    for line in lines:
        match = re.fullmatch(r"<(\d)>(\{.*\})", line)
        assert match, line
        event = parse(match.group(2))
        assert int(match.group(1)) == PRIORITY[event["level"]], line
        seen.add(event["level"])
    assert {"error", "info", "debug"} <= seen
    assert any(line.startswith("<3>") and "canvas_credential_fault" in line for line in lines)


def test_outside_the_journal_or_under_one_inherited_for_another_stream_lines_are_plain_json(
    spool: Spool, sandbox: Sandbox
) -> None:
    spool.drop_file("users.csv", USERS)
    for journal in (None, "1:2"):  # unset; or set for a stream that is not ours (a shell started by a service)
        code, output = run_logged(spool, "run", "--once", journal=journal)
        assert code == 0, output.decode()[-3000:]
        lines = output.decode("utf-8").splitlines()
        assert lines and all(parse(line)["level"] in PRIORITY for line in lines)
        spool.drop_file(f"users-{journal}.csv", USERS)


def test_file_names_are_written_as_utf8_and_a_name_that_is_not_utf8_keeps_the_line_valid_json(
    spool: Spool, sandbox: Sandbox
) -> None:
    spool.drop_file("élèves.csv", USERS)
    (spool.drop / os.fsdecode(b"caf\xe9.csv")).write_bytes(USERS)

    code, output = run_logged(spool, "run", "--once", journal=None)
    assert code == 0, output.decode(errors="replace")[-3000:]
    text = output.decode("utf-8")  # strict: every byte is UTF-8
    assert "élèves.csv" in text and "\\u00e9" not in text
    events = [parse(line) for line in text.splitlines()]
    files = {event.get("file") for event in events}
    assert {"élèves.csv", "caf\\xe9.csv"} <= files


def test_a_configuration_error_under_the_journal_is_logged_at_priority_err(spool: Spool) -> None:
    spool.feed["colour"] = "blue"
    code, output = run_logged(spool, "run", journal="self")
    assert code == 78
    lines = output.decode().splitlines()
    assert lines and all(line.startswith(f"<3>{spool.config}: ") for line in lines), lines


def test_at_debug_every_name_left_in_drop_is_logged_once_with_why(spool: Spool, sandbox: Sandbox) -> None:
    spool.drop_file("users.csv", USERS)
    spool.drop_file(".users.csv.Xy12ab", USERS)  # rsync's temp name
    spool.drop_file("users.csv.filepart", USERS)  # WinSCP's
    spool.drop_file("notes.txt", b"not a feed file\n")
    (spool.drop / "archive.zip").mkdir()  # a folder with a name the patterns match

    code, output = run_logged(spool, "run", "--once", journal=None)
    assert code == 0, output.decode(errors="replace")[-3000:]
    events = [parse(line) for line in output.decode("utf-8").splitlines()]
    skipped = [(event["file"], event["reason"]) for event in events if event["event"] == "file_skipped"]
    assert sorted(skipped) == [
        (".users.csv.Xy12ab", "dot_name"),
        ("archive.zip", "folder"),
        ("notes.txt", "no_pattern_matches"),
        ("users.csv.filepart", "temp_name"),
    ], "each skipped name once, with its reason"
    assert all(event["level"] == "debug" for event in events if event["event"] == "file_skipped")
    assert any(event["event"] == "file_filed" and event.get("file") == "users.csv" for event in events)
