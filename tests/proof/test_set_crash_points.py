"""Every crash point of a set's path (docs/design.md "Crash protocol", sets): two files collected into one import,
run by a real ``sisdaemon run --once`` killed with SIGKILL right after its k-th side effect for every k, then started
again; after each, nothing is lost (each file in exactly one place, with its bytes) and nothing is sent twice (at
most one import), and every file of the set ends in done/ with its sidecar naming the set and the shared import.

The kills land where a set differs from one file: members half in drop/ and half in work/, a half-built zip, a zip
built but not recorded, members half filed.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class Point:
    k: int
    killed_at: str | None = None
    restarts: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def prepare(root: Path) -> tuple[object, Sandbox, Spool]:
    context = world(root, **FEED)
    sandbox, spool = context.__enter__()
    for name, data in FILES.items():
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


def reference(root: Path) -> list[str]:
    context, sandbox, spool = prepare(root)
    try:
        run = run_daemon(spool, *ONCE)
        assert run.returncode == 0, run.log.read_text()
        assert not check_set(spool, sandbox).problems, check_set(spool, sandbox).problems
    finally:
        context.__exit__(None, None, None)
    return [name for _, name in run.effects]


def kill_at(root: Path, k: int) -> Point:
    point = Point(k)
    context, sandbox, spool = prepare(root)
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
        elif run.returncode != 0:
            point.problems.append(f"exit {run.returncode} without a kill")
        point.problems.extend(check_set(spool, sandbox).problems)
    finally:
        context.__exit__(None, None, None)
    return point


@pytest.mark.slow
def test_a_kill_after_any_side_effect_of_a_set_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    names = reference(tmp_path / "reference")
    assert set(SET_EFFECTS) <= set(names)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        points = list(pool.map(lambda k: kill_at(tmp_path / f"k{k:03d}", k), range(1, len(names) + 1)))
    killed = Counter(point.killed_at for point in points if point.killed_at)
    failures = [f"k={point.k} ({point.killed_at}): {point.problems}" for point in points if point.problems]
    with capsys.disabled():
        print(f"\n[set crash points] N={len(names)}; {time.monotonic() - started:.0f} s")
        for point in points:
            print(f"  k={point.k:3d} {point.killed_at or '(ended)':24s} {point.restarts} {point.problems or 'OK'}")
    assert not sorted(set(names) - set(killed)), f"never killed at: {sorted(set(names) - set(killed))}"
    assert not failures, "\n".join(failures)
