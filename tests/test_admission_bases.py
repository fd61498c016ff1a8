"""Admission keeps the diff and the shrink guard on the same earlier file of each SIS type: a check whose earlier
file of a type changed while it ran (another file of the feed filed meanwhile) is run again before its result is
used (trial report, item 2). Real files, a real checker thread, a real ledger."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sisdaemon import jobs, spool
from sisdaemon.admission import Admission
from sisdaemon.checker import Checker
from sisdaemon.config import FeedSettings
from sisdaemon.ledger import Ledger
from tests.daemon.conftest import wait_for

USERS = "user_id,login_id,status\n"


def users(*ids: int) -> bytes:
    return (USERS + "".join(f"U{i},login{i},active\n" for i in ids)).encode()


def filed(ledger: Ledger, feed: FeedSettings, job_id: str, name: str, data: bytes, rows: int, at: float) -> None:
    (feed.done_dir / name).write_bytes(data)
    record: dict[str, Any] = {
        "job_id": job_id,
        "work_name": name,
        "import_id": int(at),
        "folder": "done",
        "finished_at": at,
        "rows": {"user": rows},
    }
    ledger.history(feed.name).add(record, None, True)


def test_a_check_whose_earlier_users_file_changed_meanwhile_is_compared_again_with_the_newer_one(
    tmp_path: Path,
) -> None:
    for folder in ("drop", "work", "done", "failed"):
        (tmp_path / folder).mkdir()
    feed = FeedSettings.model_validate(
        {
            "name": "nightly",
            "drop_dir": tmp_path / "drop",
            "work_dir": tmp_path / "work",
            "done_dir": tmp_path / "done",
            "failed_dir": tmp_path / "failed",
            "preflight": "off",
            "shrink_guard_percent": 90,
            "import": {"diffing_data_set_identifier": "campus-users"},
        }
    )
    ledger = Ledger(tmp_path / "state.json")
    ledger.load([feed.name])
    filed(ledger, feed, "a000000001", "1_a000000001_users.csv", users(*range(1, 11)), 10, 1.0)
    wake = threading.Event()
    checker = Checker(wake)
    later: list[str] = []
    admission = Admission(
        {feed.name: feed}, ledger, checker, retry_later=lambda job_id, error, now: later.append(error)
    )

    path = feed.work_dir / "new_users.csv"
    path.write_bytes(users(1, 2, 3, 4))
    job = jobs.claim("b000000002", feed.name, "users.csv", spool.fingerprint_of(os.stat(path)), seen_at=5.0, now=5.0)
    os.rename(path, feed.work_dir / job.work_name)
    ledger.put(job)
    assert admission.waits_for_check(job, 5.0)
    wait_for(lambda: checker.running is None and wake.is_set(), what="the first check")
    # While it ran, a newer users file of the feed was imported: the guard's baseline for users is now that one.
    filed(ledger, feed, "a000000003", "3_a000000003_users.csv", users(1, 2, 3, 4, 5), 5, 3.0)
    wake.clear()
    admission.collect(6.0)
    current = ledger.job(job.job_id)
    assert current is not None and current.scan is None  # not applied: compared again
    wait_for(lambda: checker.running is None and wake.is_set(), what="the second check")
    admission.collect(7.0)
    checked = ledger.job(job.job_id)
    assert checked is not None and checked.scan is not None and checked.diff is not None and later == []
    user = checked.diff["types"]["user"]
    assert (user["against"], user["before"], user["after"], user["removed"]) == ("3_a000000003_users.csv", 5, 4, 1)
    assert checked.guard is not None and checked.guard["baseline"] == {"user": 5}
