"""Every crash point of a set's path (docs/design.md "Crash protocol", sets): three files collected into one
import, and a manifest's set refused whole (``manifest_incomplete``), each run by a real ``sisdaemon run --once``
killed with SIGKILL right after its k-th side effect for every k, then started again. After each kill, nothing is lost
(each file in exactly one place, with its bytes) and nothing is sent twice (at most one import; none for a refused
set), and every file of the set ends where it belongs (done/, or failed/ for the refused set) with its sidecar
naming the set (and the shared import, or what was missing).

The kills land where a set differs from one file: members half in drop/ and half in work/, a half-built zip, a zip
built but not recorded, members half filed; a refusal recorded but its files still in drop/, half renamed, half
filed in failed/.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import Spool, creates
from tests.proof.crashes import (
    FILED_NAME,
    Findings,
    data_files,
    entries,
    history_records,
    jobs_in_state,
    run_daemon,
    sha256,
    stale_temp_files,
    world,
)

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
ENROLLMENTS = b"course_id,user_id,role,section_id,status\nc1,u1,student,,active\n"
COURSES = b"course_id,short_name,long_name,account_id,term_id,status\nc1,C 101,Course 101,,,active\n"
FILES = {"enrollments.csv": ENROLLMENTS, "users.csv": USERS, "courses.csv": COURSES}
FEED = {"settle_seconds": 0.2, "collect_seconds": 0.3}
WORKERS = int(os.environ.get("SISDAEMON_PROOF_WORKERS", "2"))
ONCE = ("--once", "--max-wait", "60")
#: The effects a set adds to one file's path: each must have been killed at.
SET_EFFECTS = ("bundle.zip_written",)
#: A manifest's set refused whole: it lists a file that never comes (tests/daemon/test_sets.py has it end to end).
MANIFEST_FEED = {"settle_seconds": 0.2, "manifest": "*.manifest", "manifest_timeout_seconds": 0.5}
MANIFEST = b"users.csv\ncourses.csv\nenrollments.csv\n"
REFUSED_FILES = {"users.csv": USERS, "courses.csv": COURSES, "nightly.manifest": MANIFEST}


@dataclass
class Point:
    k: int
    killed_at: str | None = None
    restarts: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    """A set's path to kill at every side effect: the feed's settings, the files dropped, the invariants after the
    kill and the restarts, and the exit code of a run that was not killed (``run --once``: 1 when it filed a file in
    failed/)."""

    feed: dict[str, Any]
    files: dict[str, bytes]
    check: Callable[[Spool, Sandbox], Findings]
    exit_code: int = 0


def prepare(root: Path, scenario: Scenario) -> tuple[Any, Sandbox, Spool]:
    context = world(root, **scenario.feed)
    sandbox, spool = context.__enter__()
    for name, data in scenario.files.items():
        spool.drop_file(name, data)
    return context, sandbox, spool


def check_set(spool: Spool, sandbox: Sandbox) -> Findings:
    """The invariants after a kill and the restarts, for the set of :data:`FILES`."""
    found = Findings()
    for name, data in FILES.items():
        places = [path for where in ("drop", "work", "done", "failed") for path in data_files(spool.root / where)]
        mine = [path for path in places if path.name == name or path.name.endswith(f"_{name}")]
        found.expect(len(mine) == 1, f"{name} is in {len(mine)} places: {mine}")
        found.expect(all(path.read_bytes() == data for path in mine), f"{name}'s bytes changed")
        found.expect(all(path.parent == spool.done for path in mine), f"{name} is not in done/: {mine}")
    zips = [path for path in data_files(spool.done) if path.name.endswith("_set.zip")]
    found.expect(len(zips) == 1, f"{len(zips)} set zips in done/")
    found.expect(not entries(spool.work), f"work/ is not empty: {entries(spool.work)}")
    posts = [request for request in creates(sandbox) if request.import_id is not None]
    imports = sandbox.imports()
    found.expect(len(posts) == 1 and len(imports) == 1, f"{len(posts)} creates made imports, {len(imports)} imports")
    sidecars = [json.loads(path.read_text()) for path in sorted(spool.done.glob("*.result.json"))]
    found.expect(len(sidecars) == len(FILES) + 1, f"{len(sidecars)} sidecars in done/")
    set_ids = {sidecar.get("set", {}).get("id") for sidecar in sidecars}
    found.expect(len(set_ids) == 1 and None not in set_ids, f"sidecars name sets {set_ids}")
    for sidecar in sidecars:
        name = sidecar["file"]["name"]
        if name in FILES:
            found.expect(sidecar["file"]["sha256"] == sha256(FILES[name]), f"{name}'s sidecar sha256 is wrong")
        if imports:
            found.expect(sidecar.get("canvas", {}).get("import_id") == imports[0]["id"], f"{name}'s sidecar import id")
    for path in data_files(spool.done):
        match = FILED_NAME.fullmatch(path.name)
        found.expect(match is not None and match["job"] in set_ids, f"odd filed name {path.name}")
    found.expect(jobs_in_state(spool) == [], f"jobs left in the state: {jobs_in_state(spool)}")
    records = history_records(spool)
    found.expect(len(records) == 1, f"{len(records)} history records for one set")
    stale = stale_temp_files(spool.done) + stale_temp_files(spool.work) + stale_temp_files(spool.state_file.parent)
    found.expect(not stale, f"stale temp files: {stale}")
    return found


def check_refused(spool: Spool, sandbox: Sandbox) -> Findings:
    """The invariants after a kill and the restarts, for the manifest's set of :data:`REFUSED_FILES` refused whole:
    each file in failed/ with its bytes and a sidecar saying ``manifest_incomplete`` and what was missing; nothing
    sent; one history record."""
    found = Findings()
    for name, data in REFUSED_FILES.items():
        places = [path for where in ("drop", "work", "done", "failed") for path in data_files(spool.root / where)]
        mine = [path for path in places if path.name == name or path.name.endswith(f"_{name}")]
        found.expect(len(mine) == 1, f"{name} is in {len(mine)} places: {mine}")
        found.expect(all(path.read_bytes() == data for path in mine), f"{name}'s bytes changed")
        found.expect(all(path.parent == spool.failed for path in mine), f"{name} is not in failed/: {mine}")
    found.expect(not entries(spool.work), f"work/ is not empty: {entries(spool.work)}")
    found.expect(creates(sandbox) == [] and sandbox.imports() == [], "something of a refused set was sent")
    sidecars = [json.loads(path.read_text()) for path in sorted(spool.failed.glob("*.result.json"))]
    found.expect(len(sidecars) == len(REFUSED_FILES), f"{len(sidecars)} sidecars in failed/")
    set_ids = {sidecar.get("set", {}).get("id") for sidecar in sidecars}
    found.expect(len(set_ids) == 1 and None not in set_ids, f"sidecars name sets {set_ids}")
    for sidecar in sidecars:
        name = sidecar["file"]["name"]
        found.expect(sidecar.get("reason_code") == "manifest_incomplete", f"{name}'s reason_code")
        found.expect(sidecar.get("set", {}).get("missing") == ["enrollments.csv"], f"{name}'s sidecar set.missing")
        members = sorted(sidecar.get("set", {}).get("members") or [])
        found.expect(members == ["courses.csv", "users.csv"], f"{name}'s sidecar names the set's files {members}")
        found.expect(not sidecar.get("notes"), f"{name}'s sidecar notes {sidecar.get('notes')}")
        found.expect(sidecar.get("file", {}).get("size") == len(REFUSED_FILES.get(name, b"")), f"{name}'s size")
    for path in data_files(spool.failed):
        match = FILED_NAME.fullmatch(path.name)
        found.expect(match is not None and match["job"] in set_ids, f"odd filed name {path.name}")
    found.expect(jobs_in_state(spool) == [], f"jobs left in the state: {jobs_in_state(spool)}")
    records = history_records(spool)
    found.expect(len(records) == 1, f"{len(records)} history records for one refused set")
    stale = stale_temp_files(spool.failed) + stale_temp_files(spool.work) + stale_temp_files(spool.state_file.parent)
    found.expect(not stale, f"stale temp files: {stale}")
    return found


COLLECTED = Scenario(FEED, FILES, check_set)
REFUSED = Scenario(MANIFEST_FEED, REFUSED_FILES, check_refused, exit_code=1)


def reference(root: Path, scenario: Scenario) -> list[str]:
    context, sandbox, spool = prepare(root, scenario)
    try:
        run = run_daemon(spool, *ONCE)
        assert run.returncode == scenario.exit_code, run.log.read_text()
        assert not scenario.check(spool, sandbox).problems, scenario.check(spool, sandbox).problems
    finally:
        context.__exit__(None, None, None)
    return [name for _, name in run.effects]


def kill_at(root: Path, k: int, scenario: Scenario) -> Point:
    point = Point(k)
    context, sandbox, spool = prepare(root, scenario)
    try:
        run = run_daemon(spool, *ONCE, env={"SISDAEMON_FAILPOINT": str(k)})
        if run.killed:
            point.killed_at = run.effects[-1][1] if run.effects else None
            for _ in range(3):
                again = run_daemon(spool, *ONCE)
                point.restarts.append(again.returncode)
                if again.returncode in (0, 1):
                    break
            else:
                point.problems.append(f"restarts never finished: exit codes {point.restarts}")
        elif run.returncode != scenario.exit_code:
            point.problems.append(f"exit {run.returncode} without a kill")
        point.problems.extend(scenario.check(spool, sandbox).problems)
    finally:
        context.__exit__(None, None, None)
    return point


def kill_everywhere(root: Path, scenario: Scenario, label: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Kill a run of ``scenario`` after each of its side effects in turn; returns the effects of a whole run."""
    started = time.monotonic()
    names = reference(root / "reference", scenario)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        points = list(pool.map(lambda k: kill_at(root / f"k{k:03d}", k, scenario), range(1, len(names) + 1)))
    killed = Counter(point.killed_at for point in points if point.killed_at)
    failures = [f"k={point.k} ({point.killed_at}): {point.problems}" for point in points if point.problems]
    with capsys.disabled():
        print(f"\n[{label} crash points] N={len(names)}; {time.monotonic() - started:.0f} s")
        for point in points:
            print(f"  k={point.k:3d} {point.killed_at or '(ended)':24s} {point.restarts} {point.problems or 'OK'}")
    assert not sorted(set(names) - set(killed)), f"never killed at: {sorted(set(names) - set(killed))}"
    assert not failures, "\n".join(failures)
    return names


@pytest.mark.slow
def test_a_kill_after_any_side_effect_of_a_set_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = kill_everywhere(tmp_path, COLLECTED, "set", capsys)
    assert set(SET_EFFECTS) <= set(names)


@pytest.mark.slow
def test_a_kill_after_any_side_effect_of_refusing_an_incomplete_manifest_set_loses_nothing_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = kill_everywhere(tmp_path, REFUSED, "manifest refusal", capsys)
    assert names.count("spool.renamed") >= 2 * len(REFUSED_FILES)  # each file out of drop/, then into failed/
