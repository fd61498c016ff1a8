"""The claim order, holds, supersede and pending imports as pure decisions (order.py), the settle tracker's order
and its count of settling types (settle.py), and reading a dropped file's SIS types from real files (headers.py)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

from sisdaemon import headers, order
from sisdaemon.jobs import Fingerprint
from sisdaemon.order import UNKNOWN_RANK, Kind, Waiting, holder, kind_of, supersede_plan
from sisdaemon.settle import Observation, SettleTracker

USERS = Kind(frozenset({"user"}))
ENROLLMENTS = Kind(frozenset({"enrollment"}))
COURSES = Kind(frozenset({"course"}))
SECTIONS = Kind(frozenset({"section"}))
ACCOUNTS = Kind(frozenset({"account"}))

USERS_CSV = b"user_id,login_id,status\nu1,l1,active\n"
ENROLLMENTS_CSV = b"course_id,user_id,role,status\nc1,u1,student,active\n"
COURSES_CSV = b"course_id,short_name,long_name,status\nc1,C1,Course 1,active\n"


# --- order.py ----------------------------------------------------------------------------------------------------


def test_ranks_follow_canvas_importer_order_and_unknown_goes_last() -> None:
    in_order = [ACCOUNTS, COURSES, SECTIONS, USERS, ENROLLMENTS]
    assert [kind.rank for kind in in_order] == sorted(kind.rank for kind in in_order)
    assert order.rank(None) == UNKNOWN_RANK > ENROLLMENTS.rank
    # a zip ranks by its earliest member
    assert Kind(frozenset({"enrollment", "user"})).rank == USERS.rank
    assert Kind(frozenset({"enrollment", "user"})).shown() == "user+enrollment"


def test_kind_of_keeps_only_canvas_types() -> None:
    assert kind_of(["user", "nonsense"]) == USERS
    assert kind_of(["nonsense"]) is None
    assert kind_of([]) is None


def test_a_ready_file_is_held_only_by_an_earlier_type_still_settling() -> None:
    assert holder(ENROLLMENTS, [USERS], supersede=False) == USERS
    assert holder(ENROLLMENTS, [USERS, COURSES, ENROLLMENTS], supersede=False) == COURSES  # the earliest is named
    assert holder(USERS, [ENROLLMENTS], supersede=False) is None  # a later type never holds an earlier one
    assert holder(USERS, [USERS], supersede=False) is None  # the same type goes oldest first
    assert holder(USERS, [], supersede=False) is None
    assert holder(None, [USERS], supersede=False) == USERS  # an unknown ready file waits for the known ones


def test_on_a_supersede_feed_a_newer_snapshot_still_settling_holds_the_older_one() -> None:
    assert holder(USERS, [USERS], supersede=True) == USERS
    assert holder(None, [], supersede=True) is None
    assert holder(USERS, [ENROLLMENTS], supersede=True) is None


def test_a_hold_ends_after_settle_seconds() -> None:
    assert order.hold_ends(100.0, 10.0) == 110.0


def test_only_the_newest_file_of_each_kind_is_kept() -> None:
    ready = [
        Waiting("users_mon.csv", 1, USERS),
        Waiting("users_wed.csv", 3, USERS),
        Waiting("users_tue.csv", 2, USERS),
        Waiting("enrollments.csv", 1, ENROLLMENTS),
        Waiting("mystery.csv", 1, None),
        Waiting("mystery2.csv", 2, None),
    ]
    plan = supersede_plan(iter(ready))  # any iterable, read once
    assert set(plan) == {"users_mon.csv", "users_tue.csv"}
    assert {newer.name for newer in plan.values()} == {"users_wed.csv"}


def test_supersede_breaks_an_mtime_tie_by_name_and_groups_zips_by_their_set_of_types() -> None:
    both = Kind(frozenset({"user", "enrollment"}))
    plan = supersede_plan(
        [Waiting("b.csv", 5, USERS), Waiting("a.csv", 5, USERS), Waiting("x.zip", 1, both), Waiting("y.zip", 2, both)]
    )
    assert {name: newer.name for name, newer in plan.items()} == {"a.csv": "b.csv", "x.zip": "y.zip"}
    assert supersede_plan([Waiting("u.csv", 1, USERS), Waiting("x.zip", 2, both)]) == {}  # not the same types


def test_the_account_limit_is_the_smallest_feed_value_and_finishing_jobs_do_not_count() -> None:
    assert order.account_limit([4, 2, 3]) == 2
    assert order.account_limit([]) == order.DEFAULT_MAX_PENDING
    states = ["claimed", "submitting", "submitted", "finishing"]
    assert order.pending_imports(states) == 3
    assert not order.account_has_room(states, [3])
    assert order.account_has_room(states, [4])


def test_claim_order_sorts_by_type_then_age() -> None:
    ready = [
        Waiting("e.csv", 1, ENROLLMENTS),
        Waiting("u2.csv", 5, USERS),
        Waiting("?", 0, None),
        Waiting("u1", 9, USERS),
    ]
    assert [item.name for item in order.ordered(ready)] == ["u2.csv", "u1", "e.csv", "?"]


# --- settle.py: ready files in Canvas's order, settling kinds counted --------------------------------------------


def observed(name: str, size: int = 10, mtime: int = 1, ino: int = 1) -> Observation:
    return Observation(name, Fingerprint(ino, size, mtime, 0), True, "file")


def tracker_with(kinds: dict[str, Kind | None], calls: list[tuple[str, bool]] | None = None) -> SettleTracker:
    def classify(seen: Observation, settled: bool) -> Kind | None:
        if calls is not None:
            calls.append((seen.name, settled))
        return kinds.get(seen.name)

    return SettleTracker(settle=1.0, empty_grace=5.0, classify=classify)


def test_ready_files_come_out_in_canvas_order_then_oldest_first() -> None:
    tracker = tracker_with({"e.csv": ENROLLMENTS, "u.csv": USERS, "c.csv": COURSES, "u_old.csv": USERS})
    files = {
        "e.csv": observed("e.csv", mtime=1, ino=1),
        "u.csv": observed("u.csv", mtime=4, ino=2),
        "c.csv": observed("c.csv", mtime=3, ino=3),
        "u_old.csv": observed("u_old.csv", mtime=2, ino=4),
        "what.csv": observed("what.csv", mtime=0, ino=5),
    }
    tracker.update(files, 0.0)
    tracker.update(files, 1.0)
    assert [item.name for item in tracker.ready()] == ["c.csv", "u_old.csv", "u.csv", "e.csv", "what.csv"]
    taken = []
    while (item := tracker.first_ready()) is not None:
        taken.append(item.name)
        tracker.forget(item.name)
    assert taken == ["c.csv", "u_old.csv", "u.csv", "e.csv", "what.csv"]


def test_a_file_is_classified_once_per_fingerprint_and_again_when_ready_only_if_unknown() -> None:
    calls: list[tuple[str, bool]] = []
    tracker = tracker_with({"u.csv": USERS}, calls)
    tracker.observe("u.csv", observed("u.csv", size=10), 0.0)
    tracker.observe("u.csv", observed("u.csv", size=10), 0.5)  # unchanged: not read again
    tracker.observe("u.csv", observed("u.csv", size=10), 1.0)  # ready: its kind is known already
    assert calls == [("u.csv", False)]
    tracker.observe("h.csv", observed("h.csv", size=5, ino=2), 0.0)  # first line not in yet: unknown
    tracker.observe("h.csv", observed("h.csv", size=5, ino=2), 1.0)
    assert calls[1:] == [("h.csv", False), ("h.csv", True)]
    empty = SettleTracker(1.0, 0.5, classify=lambda seen, settled: calls.append(("empty", settled)) or None)
    empty.observe("e.csv", observed("e.csv", size=0), 0.0)
    assert ("empty", False) not in calls  # a 0-byte file is never read


def test_settling_kinds_are_counted_until_ready_changed_or_gone() -> None:
    tracker = tracker_with({"u1.csv": USERS, "u2.csv": USERS, "e.csv": ENROLLMENTS, "x.csv": None})
    tracker.observe("u1.csv", observed("u1.csv", ino=1), 0.0)
    tracker.observe("u2.csv", observed("u2.csv", ino=2), 0.0)
    tracker.observe("e.csv", observed("e.csv", ino=3), 0.0)
    tracker.observe("x.csv", observed("x.csv", ino=4), 0.0)
    assert set(tracker.settling_kinds()) == {USERS, ENROLLMENTS}  # unknown kinds are not counted
    tracker.observe("u1.csv", observed("u1.csv", ino=1), 1.0)  # ready
    assert set(tracker.settling_kinds()) == {USERS, ENROLLMENTS}  # u2 still settles
    tracker.observe("u2.csv", None, 1.0)  # gone
    assert tracker.settling_kinds() == [ENROLLMENTS]
    tracker.observe("e.csv", observed("e.csv", size=20, ino=3), 1.0)  # changed: counted once, not twice
    assert tracker.settling_kinds() == [ENROLLMENTS]
    tracker.update({"u1.csv": observed("u1.csv", ino=1)}, 1.5)  # a full scan without it
    assert tracker.settling_kinds() == []
    tracker.forget("u1.csv")
    assert tracker.ready() == [] and len(tracker) == 0


# --- headers.py: real files ------------------------------------------------------------------------------------


def test_a_csv_header_names_its_type(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(b"\xef\xbb\xbf" + USERS_CSV)  # a BOM is fine
    assert headers.kind_of_file(path, settled=False) == USERS
    path.write_bytes(b" Course_ID , User_ID,role,status\r\n")  # as Canvas reads it: stripped, any case, CRLF
    assert headers.kind_of_file(path, settled=False) == ENROLLMENTS


def test_a_first_line_still_being_written_has_no_type_until_the_file_settles(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(b"user_id,login_id,status")  # no line break yet
    assert headers.kind_of_file(path, settled=False) is None
    assert headers.kind_of_file(path, settled=True) == USERS  # settled: a header-only file without a line break


def test_files_of_no_known_type(tmp_path: Path) -> None:
    cases = {
        "latin1.csv": "user_id,login_id,caf\xe9\n".encode("latin-1"),
        "unknown.csv": b"a,b,c\n1,2,3\n",
        "empty.csv": b"",
        "huge_header.csv": b"user_id,login_id," + b"x" * (headers.HEADER_BYTES + 10) + b"\n",
        "broken.zip": b"PK\x03\x04 not really a zip",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert headers.kind_of_file(tmp_path / name, settled=True) is None, name
    assert headers.kind_of_file(tmp_path / "missing.csv", settled=True) is None
    os.mkfifo(tmp_path / "fifo.csv")
    assert headers.kind_of_file(tmp_path / "fifo.csv", settled=True) is None  # never blocks


def test_a_zip_holds_the_types_of_its_csv_members(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("enrollments.csv", ENROLLMENTS_CSV)
        archive.writestr("nested/users.csv", USERS_CSV)
        archive.writestr("__MACOSX/._users.csv", b"junk")
        archive.writestr("readme.txt", COURSES_CSV)  # not a CSV name: Canvas skips it
    path = tmp_path / "set.zip"
    path.write_bytes(buffer.getvalue())
    kind = headers.kind_of_file(path, settled=True)
    assert kind == Kind(frozenset({"user", "enrollment"})) and kind.rank == USERS.rank
    path.write_bytes(buffer.getvalue()[:-30])  # still being written: no central directory yet
    assert headers.kind_of_file(path, settled=False) is None


# --- the config keys -------------------------------------------------------------------------------------------


def test_the_policy_keys_default_and_are_validated_naming_the_key(tmp_path: Path) -> None:
    from tests.test_config import MINIMAL, config, load, problems

    feed = load(tmp_path, MINIMAL).feeds[0]
    assert feed.max_pending_imports == 2 and feed.supersede is False
    feed = load(tmp_path, config(feed={"max_pending_imports": 5, "supersede": True})).feeds[0]
    assert feed.max_pending_imports == 5 and feed.supersede is True
    found = problems(tmp_path, config(feed={"max_pending_imports": 0, "supersede": "yes"}))
    assert found == [
        "feeds[0].max_pending_imports: must be at least 1",
        "feeds[0].supersede: must be true or false, not a string",
    ]


def test_a_reload_applies_the_policy_keys_at_once(tmp_path: Path) -> None:
    from sisdaemon.reload import plan_reload
    from tests.test_config import config, load

    running = load(tmp_path, config())
    new = load(tmp_path, config(feed={"max_pending_imports": 1, "supersede": True}))
    current = {feed.name: feed for feed in running.feeds}
    plan = plan_reload(running, current, new, busy_feeds=["nightly"])
    assert plan.changed == ("feeds[nightly]",) and plan.pending == ()
    assert plan.feeds["nightly"].max_pending_imports == 1 and plan.feeds["nightly"].supersede is True


def test_status_says_files_wait_for_the_account_s_pending_imports() -> None:
    from sisdaemon.waits import feed_wait

    common: dict[str, Any] = {"paused": None, "held": None, "fault": None, "in_flight": 2, "max_in_flight": 4}
    wait = feed_wait(waiting=8, pending=2, max_pending=2, **common)
    assert wait is not None and wait["reason"] == "max_pending_imports" and wait["until"] is None
    assert "2 file(s) of this Canvas account" in wait["text"] and "max_pending_imports 2" in wait["text"]
    assert feed_wait(waiting=8, pending=1, max_pending=2, **common) is None
    assert feed_wait(waiting=0, pending=2, max_pending=2, **common) is None  # nothing waits
    full = feed_wait(waiting=3, pending=4, max_pending=5, **{**common, "in_flight": 4})
    assert full is not None and full["reason"] == "feed_full"


def test_a_claimed_file_is_sent_only_while_fewer_than_max_pending_imports_of_the_account_are_in_canvas() -> None:
    # Claimed files do not count (a retry claims past the claim limit); being sent, queued or running do.
    assert order.in_canvas(["claimed", "submitting", "submitted", "finishing", "claimed"]) == 2
    assert order.may_send(["claimed", "claimed", "submitted"], [2, 3])
    assert not order.may_send(["submitting", "submitted", "claimed"], [2, 3])  # the smallest limit applies
    assert order.may_send(["finishing"] * 5, [1])
