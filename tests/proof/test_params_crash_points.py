"""The two-file claim, proven at every crash point: a file dropped with its params file, run by a real ``sisdaemon
run --once`` killed with SIGKILL right after its k-th side effect for every k (the seam, sisdaemon/effects.py), then
started again. Among those points are the ones between the data file's and the params file's renames, into work/
at the claim and into done/ at filing. After each: nothing lost (each file in exactly one folder, the params file
beside its data file in done/), nothing twice (at most one import), and the one import carries the params file's
options (a restart sends what the claim recorded).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.proof.crashes import check_one_file, data_files, run_daemon, world

NAME = "users.csv"
PARAMS_NAME = "users.csv.params.yaml"
USERS = b"user_id,login_id,first_name,last_name,status\nu1,user1,Ada,One,active\n"
PARAMS = b"override_sis_stickiness: true\n"
FEED: dict[str, Any] = {"settle_seconds": 0.2, "allow_params": ["override_sis_stickiness"]}
WORKERS = int(os.environ.get("SISDAEMON_PROOF_WORKERS", "2"))
ONCE = ("--once", "--max-wait", "60")


@dataclass
class Point:
    k: int
    killed_at: str | None = None
    at_kill: dict[str, str] = field(default_factory=dict)  # file -> the folder it was in right after the kill
    problems: list[str] = field(default_factory=list)


def where(root: Path) -> dict[str, str]:
    """Which folder holds the data file and which its params file (``"-"``: none)."""
    found = {NAME: "-", PARAMS_NAME: "-"}
    for folder in ("drop", "work", "done", "failed"):
        for path in (root / folder).iterdir():
            for name in found:
                if path.name.endswith(name) and not path.name.startswith("."):
                    found[name] = folder
    return found


def check(root: Path, sandbox: Any, spool: Any) -> list[str]:
    problems = check_one_file(spool, sandbox, NAME, USERS).problems
    params = [
        path
        for folder in ("drop", "work", "done", "failed")
        for path in (root / folder).iterdir()
        if path.name.endswith(PARAMS_NAME)
    ]
    if len(params) != 1:
        problems.append(f"the params file is in {len(params)} places: {params}")
    else:
        data = data_files(spool.done)
        expected = [path.with_name(path.name + ".params.yaml") for path in data if path.name.endswith(NAME)]
        if params != expected:
            problems.append(f"the params file {params[0]} is not beside its data file {data}")
        elif params[0].read_bytes() != PARAMS:
            problems.append("the params file's bytes changed")
    imports = sandbox.imports()
    if len(imports) == 1 and imports[0].get("override_sis_stickiness") is not True:
        problems.append(f"the import lacks the params file's option: {imports[0].get('override_sis_stickiness')}")
    return problems


def kill_at(root: Path, k: int) -> Point:
    point = Point(k)
    context = world(root, **FEED)
    sandbox, spool = context.__enter__()
    try:
        spool.drop_file(PARAMS_NAME, PARAMS)
        spool.drop_file(NAME, USERS)
        run = run_daemon(spool, *ONCE, env={"SISDAEMON_FAILPOINT": str(k)})
        point.at_kill = where(root)
        if run.killed:
            point.killed_at = run.effects[-1][1] if run.effects else None
            for _ in range(3):
                if run_daemon(spool, *ONCE).returncode == 0:
                    break
            else:
                point.problems.append("restarts never finished")
        elif run.returncode != 0:
            point.problems.append(f"exit {run.returncode} without a kill")
        point.problems.extend(check(root, sandbox, spool))
    finally:
        context.__exit__(None, None, None)
    return point


@pytest.mark.slow
def test_a_kill_between_a_data_file_s_and_its_params_file_s_renames_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    context = world(tmp_path / "reference", **FEED)
    sandbox, spool = context.__enter__()
    try:
        spool.drop_file(PARAMS_NAME, PARAMS)
        spool.drop_file(NAME, USERS)
        reference = run_daemon(spool, *ONCE)
        assert reference.returncode == 0, reference.log.read_text()
        assert check(tmp_path / "reference", sandbox, spool) == []
    finally:
        context.__exit__(None, None, None)
    names = [name for _, name in reference.effects]
    # the claim: the state, the data file's rename, then the params file's; filing: the data file's, then the params'
    assert names.count("spool.renamed") == 4

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        points = list(pool.map(lambda k: kill_at(tmp_path / f"k{k:03d}", k), range(1, len(names) + 1)))

    with capsys.disabled():
        print(f"\n[params crash points] N={len(names)}; {time.monotonic() - started:.0f} s")
        for point in points:
            print(f"  k={point.k:3d} {point.killed_at or 'ended':22s} {point.at_kill} {point.problems or 'OK'}")
    failures = [f"k={point.k} ({point.killed_at}): {point.problems}" for point in points if point.problems]
    assert not failures, "\n".join(failures)
    between = {(point.at_kill[NAME], point.at_kill[PARAMS_NAME]) for point in points if point.killed_at}
    assert ("work", "drop") in between  # killed between the claim's two renames
    assert ("done", "work") in between  # killed between filing's two renames
