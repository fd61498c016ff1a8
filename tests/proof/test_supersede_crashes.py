"""Superseding under SIGKILL: three waiting snapshots of one SIS type on a ``supersede: true`` feed, a real
``sisdaemon run --once`` killed right after each side effect up to the import's POST (the claims, the superseded
files' filing, the newest file's claim), then started again; after each, nothing is lost (every file whole in done/),
nothing is sent twice and no superseded file is ever sent (one import, of the newest file), and every sidecar says
what happened (docs/design.md "Crash protocol"; tests/proof/crashes.py runs the daemon)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import Spool, creates
from tests.proof.crashes import (
    FILED_NAME,
    Findings,
    data_files,
    history_records,
    jobs_in_state,
    run_daemon,
    stale_temp_files,
    world,
)

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
SNAPSHOTS = {f"users_{day}.csv": USERS.replace(b"Ada", day.encode()) for day in ("fri", "sat", "sun")}
NEWEST = "users_sun.csv"
FEED = {"settle_seconds": 0.2, "supersede": True}
ONCE = ("--once", "--max-wait", "60")
WORKERS = int(os.environ.get("SISDAEMON_PROOF_WORKERS", "2"))


def prepare(root: Path) -> tuple[object, Sandbox, Spool]:
    context = world(root, **FEED)
    sandbox, spool = context.__enter__()
    for index, (name, data) in enumerate(SNAPSHOTS.items()):  # the newest last by mtime
        path = spool.drop_file(name, data)
        os.utime(path, ns=(1_700_000_000_000_000_000 + index * 86_400 * 10**9,) * 2)
    return context, sandbox, spool


def check_superseded(spool: Spool, sandbox: Sandbox) -> Findings:
    """After the runs: each snapshot whole in done/ once, the newest imported once, the others superseded and never
    sent, no job left, one history record each, no temp file left."""
    found = Findings()
    for folder in ("drop", "work", "failed"):
        found.expect(not data_files(spool.root / folder), f"{folder}/ holds {data_files(spool.root / folder)}")
    filed = {}
    for path in data_files(spool.done):
        match = FILED_NAME.fullmatch(path.name)
        found.expect(match is not None, f"odd filed name {path.name}")
        if match is not None:
            found.expect(match["name"] not in filed, f"{match['name']} filed twice")
            filed[match["name"]] = path
    found.expect(sorted(filed) == sorted(SNAPSHOTS), f"filed: {sorted(filed)}")
    posts = [request for request in creates(sandbox) if request.import_id is not None]
    found.expect(len(posts) == 1 and len(sandbox.imports()) == 1, f"{len(posts)} imports made")
    found.expect(
        all(str(request.attachment_filename).endswith("_" + NEWEST) for request in creates(sandbox)),
        f"sent: {[request.attachment_filename for request in creates(sandbox)]}",
    )
    for name, path in filed.items():
        found.expect(path.read_bytes() == SNAPSHOTS[name], f"{name}: bytes differ")
        sidecar_path = path.with_name(path.name + ".result.json")
        if not sidecar_path.exists():
            found.problems.append(f"{name}: no sidecar")
            continue
        sidecar = json.loads(sidecar_path.read_text())
        if name == NEWEST:
            found.expect(sidecar["outcome"] == "imported", f"{name}: outcome {sidecar['outcome']}")
        else:
            found.expect(sidecar["outcome"] == "superseded", f"{name}: outcome {sidecar['outcome']}")
            found.expect(
                (sidecar.get("superseded_by") or {}).get("file") == NEWEST, f"{name}: {sidecar.get('superseded_by')}"
            )
            found.expect("canvas" not in sidecar, f"{name}: superseded but has a Canvas import")
    found.expect(jobs_in_state(spool) == [], f"jobs left: {jobs_in_state(spool)}")
    job_ids = [record["job_id"] for record in history_records(spool)]
    found.expect(len(job_ids) == len(set(job_ids)) == 3, f"history records: {job_ids}")
    stale = stale_temp_files(spool.state_file.parent) + stale_temp_files(spool.done)
    found.expect(not stale, f"stale temp files: {stale}")
    return found


def reference(root: Path) -> list[str]:
    """One run without a kill: it supersedes two and imports one; its side effects' names in order."""
    context, sandbox, spool = prepare(root)
    try:
        run = run_daemon(spool, *ONCE)
        assert run.returncode == 0, run.log.read_text()
        assert not check_superseded(spool, sandbox).problems
        assert len([event for event in run.events() if event.get("event") == "file_superseded"]) == 2
    finally:
        context.__exit__(None, None, None)  # type: ignore[attr-defined]
    return [name for _, name in run.effects]


def kill_at(root: Path, k: int) -> tuple[int, str | None, list[str]]:
    """Kill the run after its k-th side effect, start it again until it ends; (k, the effect killed at, problems)."""
    context, sandbox, spool = prepare(root)
    problems: list[str] = []
    try:
        run = run_daemon(spool, *ONCE, env={"SISDAEMON_FAILPOINT": str(k)})
        killed_at = run.effects[-1][1] if run.killed and run.effects else None
        if run.killed:
            for _ in range(3):
                if run_daemon(spool, *ONCE).returncode == 0:
                    break
            else:
                problems.append("the restarts never finished")
        elif run.returncode != 0:
            problems.append(f"exit {run.returncode} without a kill")
        problems += check_superseded(spool, sandbox).problems
    finally:
        context.__exit__(None, None, None)  # type: ignore[attr-defined]
    return k, killed_at, problems


@pytest.mark.slow
def test_a_kill_after_any_side_effect_while_superseding_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    names = reference(tmp_path / "reference")
    # Every effect up to the POST and up to the two superseded files' history records, whichever comes later: the
    # claims and the superseded filings (the flight worker may file them before or after the newest file's POST).
    appended = [index for index, name in enumerate(names) if name == "history.appended"]
    assert len(appended) == 3, names  # two superseded, then the newest imported
    last = max(names.index("canvas.post_sent"), appended[1]) + 1
    wanted = {"spool.renamed", "sidecar.replaced", "history.appended", "state.replaced"}

    def kill_each(points: range) -> list[tuple[int, str | None, list[str]]]:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            return list(pool.map(lambda k: kill_at(tmp_path / f"k{k:03d}", k), points))

    points = kill_each(range(1, last + 1))
    killed = [killed_at for _, killed_at, _ in points if killed_at]
    assert len(killed) >= last - 2, f"only {len(killed)} of {last} runs were killed"  # timing may shorten a run
    # The threads' order varies from run to run: under load a killed run may reach the superseded files' filing a few
    # effects later than the reference run did. Kill further on, four points at a time, until every kind was hit.
    further = last
    while not wanted <= {killed_at for _, killed_at, _ in points} and further < last + 24:
        points += kill_each(range(further + 1, further + 5))
        further += 4
    killed_kinds = sorted({killed_at for _, killed_at, _ in points if killed_at})
    assert wanted <= set(killed_kinds), f"killed at {killed_kinds} (reference: {names})"
    failures = [f"k={k} ({killed_at}): {problems}" for k, killed_at, problems in points if problems]
    assert not failures, "\n".join(failures)
