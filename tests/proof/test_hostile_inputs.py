"""One real daemon over a drop folder full of hostile inputs and a few good files: each ends as documented, the good
files are imported once each, nothing is lost, nothing outside the spool is touched, and the daemon stays up."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sisdaemon.jobs import display_name
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonProcess, Spool, creates, wait_for
from tests.proof.hostile import IMPORTED_ANYHOW, make_hostile_inputs, release_immutable, users

#: Generous: a 10 MB upload and some forty imports on a loaded 2-core machine.
FILED_DEADLINE = 150.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def filed_entries(spool: Spool) -> dict[str, list[tuple[str, Path, dict[str, Any]]]]:
    """Every filed entry in done/ and failed/ by its original (display) name: (folder, path, sidecar)."""
    found: dict[str, list[tuple[str, Path, dict[str, Any]]]] = {}
    for folder in ("done", "failed"):
        for sidecar_path in (spool.root / folder).glob("*.result.json"):
            sidecar = json.loads(sidecar_path.read_text())
            path = sidecar_path.with_name(sidecar_path.name.removesuffix(".result.json"))
            found.setdefault(sidecar["file"]["name"], []).append((folder, path, sidecar))
    return found


def names_everywhere(spool: Spool) -> Counter[str]:
    """Every input's (display) name, counted once per place it is in: drop/ by name, work/ by its work name's tail,
    done/ and failed/ by their sidecars."""
    counted: Counter[str] = Counter(display_name(entry.name) for entry in os.scandir(spool.drop))
    counted.update(display_name(entry.name.split("_", 2)[2]) for entry in os.scandir(spool.work))
    counted.update({name: len(entries) for name, entries in filed_entries(spool).items()})
    return counted


def kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    for test, name in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "device"),
        (stat.S_ISREG, "file"),
    ):
        if test(mode):
            return name
    return "other"


@pytest.mark.slow
def test_hostile_inputs_each_end_as_documented_and_nothing_else_is_affected(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], request: pytest.FixtureRequest
) -> None:
    spool.feed.update(settle_seconds=3.0, empty_grace_seconds=4.0, max_in_flight=4)
    spool.polling["errors_csv_wait_seconds"] = 2
    outside = spool.root / "outside"
    passwd_before = Path("/etc/passwd").read_bytes()
    inputs = make_hostile_inputs(spool.drop, outside)
    request.addfinalizer(lambda: release_immutable(spool.drop))
    good = {f"good-{n}.csv": users(f"good{n}", 3) for n in range(3)}
    for name, data in good.items():
        spool.drop_file(name, data)
    assert len(inputs) >= 30
    started = time.monotonic()
    daemon = daemon_process()
    wait_for(lambda: any(e.get("event") == "daemon_started" for e in daemon.events()), what="the daemon to start")
    changed_at = dt.datetime.now(dt.UTC)
    for item in inputs:
        if item.during is not None:
            item.during(spool.drop)  # within settle_seconds of the daemon's first scan

    expected_filed = [item for item in inputs if item.expect.where in ("done", "failed", "canvas")]
    total = len(expected_filed) + len(good)

    def filed_count() -> int:
        return sum(len(entries) for entries in filed_entries(spool).values())

    wait_for(lambda: filed_count() >= total, timeout=FILED_DEADLINE, what=f"{total} files filed")
    # A canary dropped now is taken only after everything left in drop/ has been settled and looked at again.
    spool.drop_file("canary.csv", users("canary", 1))
    wait_for(lambda: "canary.csv" in filed_entries(spool), what="the canary filed")
    alive = daemon.process.poll() is None
    exit_code = daemon.terminate()
    elapsed = time.monotonic() - started

    entries = filed_entries(spool)
    problems: list[str] = []
    for item in inputs:
        shown = display_name(item.name)
        mine = entries.get(shown, [])
        where = item.expect.where
        if where in ("drop", "gone"):
            if mine:
                problems.append(f"{item.what} ({shown!r}): taken to {mine[0][0]}/, expected {where}")
            in_drop = os.path.lexists(spool.drop / item.name)
            if in_drop != (where == "drop"):
                problems.append(f"{item.what} ({shown!r}): in drop/ is {in_drop}, expected {where}")
            continue
        if len(mine) != 1:
            problems.append(f"{item.what} ({shown!r}): filed {len(mine)} times, expected once in {where}/")
            continue
        folder, path, sidecar = mine[0]
        got = (folder, sidecar["outcome"], sidecar.get("reason_code"))
        if where == "canvas":
            where = "done" if sidecar["outcome"] in IMPORTED_ANYHOW else "failed"
        wrong_reason = item.expect.reason_code not in (None, sidecar.get("reason_code"))
        if folder != where or sidecar["outcome"] not in item.expect.outcomes or wrong_reason:
            problems.append(f"{item.what} ({shown!r}): ended {got}, expected {item.expect}")
        if item.expect.reason_code == "not_regular_file" and kind(path) == "file":
            problems.append(f"{item.what} ({shown!r}): filed as a regular file, not as itself")
        if item.content is not None and (
            sidecar["file"]["sha256"] != sha256(item.content) or path.read_bytes() != item.content
        ):
            problems.append(f"{item.what} ({shown!r}): imported bytes differ from the final upload")
        if item.during is not None and item.expect.where == "done":
            seen = dt.datetime.fromisoformat(sidecar["timeline"]["seen_at"].replace("Z", "+00:00"))
            if seen >= changed_at:
                problems.append(f"{item.what}: first seen after the change, so the test proved nothing")
    for item in inputs:  # the table of end states, for the record (pytest -s shows it)
        found = entries.get(display_name(item.name), [])
        end = f"{found[0][0]}/ {found[0][2]['outcome']} {found[0][2].get('reason_code') or ''}" if found else "-"
        print(f"{item.what[:60]:60} {item.expect.where:6} {end}")
    assert problems == []

    # The good files: each imported exactly once, whole.
    stored = Counter()
    with sandbox.store.lock:
        for item in sandbox.store.ordered_imports():
            if item.upload is not None:
                stored[sha256(item.upload.path.read_bytes())] += 1
    for name, data in good.items():
        [(folder, _, sidecar)] = entries[name]
        assert (folder, sidecar["outcome"]) == ("done", "imported")
        assert stored[sha256(data)] == 1, name
    # One POST per import filed, none more.
    imported = [s for found in entries.values() for _, _, s in found if (s.get("canvas") or {}).get("import_id")]
    assert len(creates(sandbox)) == len(imported)

    # Nothing lost: every name is in exactly one place; work/ is empty; only the deleted file is gone.
    expected_names = Counter(display_name(item.name) for item in inputs if item.expect.where != "gone")
    expected_names.update([*good, "canary.csv"])
    assert names_everywhere(spool) == expected_names
    assert list(spool.work.iterdir()) == []

    # Nothing outside the spool touched.
    assert Path("/etc/passwd").read_bytes() == passwd_before
    assert (spool.drop / "target.txt").read_bytes() == users("tg")
    assert (outside / "original.csv").read_bytes() == users("hl")
    assert not Path("/tmp/sisdaemon-absolute-evil.csv").exists()
    assert not (spool.root.parent / "evil.csv").exists() and not (spool.root / "evil.csv").exists()
    assert sorted(p.name for p in (spool.drop / "folder.csv").iterdir()) == ["inner.csv"]

    # The daemon stayed up, stopped cleanly on SIGTERM, and logged no traceback or failed step.
    assert alive and exit_code == 0
    output = daemon.output()
    assert "Traceback" not in output
    assert not [e for e in daemon.events() if e.get("event") in ("job_step_failed", "unhandled_error")]
    print(f"\n{len(inputs)} hostile inputs + {len(good)} good files + canary: {elapsed:.1f} s")


def test_a_file_that_cannot_be_moved_out_of_the_drop_folder_is_logged_once_not_at_every_scan(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], request: pytest.FixtureRequest
) -> None:
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr to make a file immutable")
    stuck = spool.drop / "immutable.csv"
    stuck.write_bytes(users("im"))
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    request.addfinalizer(lambda: release_immutable(spool.drop))
    daemon = daemon_process()
    for n in range(3):  # three files settled and filed one after the other: several seconds of scans
        spool.drop_file(f"canary{n}.csv", users(f"canary{n}", 1))
        wait_for(lambda n=n: f"canary{n}.csv" in filed_entries(spool), what=f"canary{n}.csv filed")
    assert daemon.terminate() == 0
    assert stuck.exists() and len(creates(sandbox)) == 3
    said = [e for e in daemon.events() if e.get("file") == "immutable.csv" and e.get("level") in ("error", "warning")]
    assert len(said) <= 1, f"{len(said)} lines about one immovable file: {said[:2]}"
