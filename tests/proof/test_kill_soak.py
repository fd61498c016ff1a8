"""Kill soak: a real ``sisdaemon run`` (not --once) killed with SIGKILL again and again — at seeded random times and
right after log lines of interest — while a mixed stream of files arrives and Canvas now and then loses an answer
or fails with a 5xx. After the last kill it is started once more and drains; then nothing is lost, nothing is
imported twice, and every sidecar matches its file and its import (issue 7, "The proof").

The seed is printed; ``SISDAEMON_SOAK_SEED=N`` replays the same plan (files, faults, kill times and triggers). The
interleaving with the daemon still depends on timing, as a real crash's does.
"""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonProcess, Spool, wait_for
from tests.proof.crashes import (
    FILED_NAME,
    data_files,
    entries,
    history_records,
    jobs_in_state,
    sha256,
    stale_temp_files,
    world,
    write_report,
)

SEED_ENV = "SISDAEMON_SOAK_SEED"
KILLS = int(os.environ.get("SISDAEMON_SOAK_KILLS", "40"))
FILES = int(os.environ.get("SISDAEMON_SOAK_FILES", "60"))
#: Log lines a kill may be timed right after (each is written just after the step it names).
TRIGGERS = (
    "file_claimed",
    "upload_started",
    "import_submitted",
    "post_outcome_unknown",
    "import_finished",
    "file_filed",
)
#: How long a timed kill waits for its log line before it kills anyway.
TRIGGER_WAIT = 6.0
#: Settling: short, so a daemon killed every few seconds still gets files through; a slow writer's pauses are shorter.
FEED = {"settle_seconds": 0.6, "rescan_seconds": 1.0}
SLOW_PAUSE = 0.15
DRAIN_DEADLINE = 120.0
HEADER = b"user_id,login_id,first_name,last_name,email,status\n"


def users(tag: str, rows: int, warn: bool = False) -> bytes:
    """A users.csv of ``rows`` rows whose ids carry ``tag`` (so every file's content is its own)."""
    lines = [
        b"%s_%d,login_%s_%d,First,Last,%s_%d@example.edu,active\n" % (tag.encode(), n, tag.encode(), n, tag.encode(), n)
        for n in range(rows)
    ]
    if warn:
        lines.append(b"%s_nologin,,No,Login,%s_nl@example.edu,active\n" % (tag.encode(), tag.encode()))
    return HEADER + b"".join(lines)


def a_zip(tag: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("users.csv", users(tag, 20))
        archive.writestr(
            "courses.csv",
            b"course_id,short_name,long_name,status\n%s_c1,C1,Course %s,active\n" % (tag.encode(), tag.encode()),
        )
    return buffer.getvalue()


@dataclass
class Arrival:
    """One file of the stream: its name, bytes, how it is written, the pause before it and the fault planned."""

    name: str
    kind: str  # small, large, zip, slow
    data: bytes
    how: str  # "rename" (dot-name, then renamed in), "in_place" (one write), "slow" (chunks with pauses, in place)
    pause: float
    fault: dict[str, Any] | None


def plan_arrivals(rng: random.Random) -> list[Arrival]:
    kinds = ["small"] * (FILES - 13) + ["large"] * 3 + ["zip"] * 6 + ["slow"] * 4
    rng.shuffle(kinds)
    arrivals = []
    for index, kind in enumerate(kinds):
        tag = f"s{index:03d}"
        if kind == "small":
            data, how, name = (
                users(tag, rng.randint(1, 40), warn=rng.random() < 0.3),
                rng.choice(["rename", "in_place"]),
                f"{tag}_users.csv",
            )
        elif kind == "large":
            data, how, name = users(tag, rng.randint(35_000, 55_000)), "rename", f"{tag}_big_users.csv"
        elif kind == "zip":
            data, how, name = a_zip(tag), "rename", f"{tag}_batch.zip"
        else:
            data, how, name = users(tag, rng.randint(2_000, 6_000)), "slow", f"{tag}_slow_users.csv"
        roll = rng.random()
        fault: dict[str, Any] | None = None
        if roll < 0.15:
            fault = {"route": "create", "reset": "after", "count": 1}  # created, the answer lost
        elif roll < 0.25:
            fault = {"route": "create", "status": 502, "when": "after", "count": 1}  # created, answered 502
        elif roll < 0.33:
            fault = {"route": "show", "status": 503, "count": 2}
        elif roll < 0.38:
            fault = {"route": "index", "status": 500, "count": 1}
        arrivals.append(Arrival(name, kind, data, how, rng.uniform(0.0, 2.0), fault))
    return arrivals


@dataclass
class Stream:
    """The writer thread: drops the planned files one after another; plans the faults as it goes."""

    spool: Spool
    sandbox: Sandbox
    arrivals: list[Arrival]
    rng: random.Random
    dropped: list[Arrival] = field(default_factory=list)
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="soak-writer", daemon=True)

    def _run(self) -> None:
        try:
            for arrival in self.arrivals:
                if self.stop.wait(arrival.pause):  # the seeded pause between arrivals is part of the scenario
                    return
                if arrival.fault:
                    self.sandbox.faults.add(**arrival.fault)
                self._write(arrival)
                self.dropped.append(arrival)
        except BaseException as error:  # surfaced by the test
            self.error = error

    def _write(self, arrival: Arrival) -> None:
        target = self.spool.drop / arrival.name
        if arrival.how == "rename":
            self.spool.drop_file(arrival.name, arrival.data)
        elif arrival.how == "in_place":
            target.write_bytes(arrival.data)
        else:
            chunks = self.rng.randint(4, 8)
            size = -(-len(arrival.data) // chunks)
            with open(target, "wb") as handle:
                for start in range(0, len(arrival.data), size):
                    handle.write(arrival.data[start : start + size])
                    handle.flush()
                    self.stop.wait(SLOW_PAUSE)  # a slow writer: part of the scenario

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


class LogTail:
    """New JSON events of a daemon's log, read from where the last look ended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""

    def new_events(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self.offset)
                chunk = stream.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        lines = (self.rest + chunk).split(b"\n")
        self.rest = lines.pop()
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found


def kill_when(process: DaemonProcess, rng: random.Random) -> str:
    """Kill ``process`` with SIGKILL at a seeded random time or right after a seeded log line; says which."""
    if rng.random() < 0.5:
        delay = rng.uniform(0.3, 3.0)
        threading.Event().wait(delay)  # a random kill time: part of the scenario, not a synchronisation
        return kill(process, f"random {delay:.1f}s")
    trigger = rng.choice(TRIGGERS)
    tail = LogTail(process.log)
    end = time.monotonic() + TRIGGER_WAIT
    pause = threading.Event()
    while time.monotonic() < end:
        if any(event.get("event") == trigger for event in tail.new_events()):
            return kill(process, f"after {trigger}")
        if process.process.poll() is not None:
            break
        pause.wait(0.01)
    return kill(process, f"after {trigger} (not seen within {TRIGGER_WAIT:.0f} s)")


def trigger_of(how: str) -> str:
    """``random 1.2s`` -> ``random``; ``after upload_started (not seen ...)`` -> ``upload_started, not seen``."""
    if how.startswith("random"):
        return "random"
    trigger = how.split()[1]
    return f"{trigger}, not seen" if "not seen" in how else trigger


#: Log lines counted over every daemon of the soak (what the kills and faults made it do).
COUNTED = (
    "file_claimed",
    "claim_completed",
    "post_outcome_unknown",
    "lost_import_found",
    "import_submitted",
    "lost_import_ambiguous",
    "post_resend",
    "file_changed_after_claim",
    "file_changed_before_upload",
    "file_changed_during_upload",
    "partial_file_imported",
    "claimed_file_missing",
    "finished_file_missing",
    "job_step_failed",
    "file_filed",
    "orphan_in_work",
)


def events_seen(spool: Spool) -> dict[str, int]:
    counted: Counter[str] = Counter()
    for log in spool.root.glob("daemon-*.log"):
        for event in LogTail(log).new_events():
            if event.get("event") in COUNTED:
                counted[event["event"]] += 1
    return dict(counted)


def kill(process: DaemonProcess, how: str) -> str:
    """SIGKILL ``process``; a daemon that had ended by itself is a finding (its exit code is in the answer)."""
    code = process.process.poll()
    process.kill()
    return how if code is None else f"{how}: it had exited by itself with {code}"


@pytest.mark.slow
def test_a_daemon_killed_again_and_again_loses_nothing_and_imports_nothing_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1, 2**31))
    with capsys.disabled():
        print(f"\n[kill soak] seed {seed} (replay: {SEED_ENV}={seed})")
    rng = random.Random(seed)
    arrivals = plan_arrivals(rng)
    started = time.monotonic()
    with world(tmp_path, **FEED) as (sandbox, spool):
        stream = Stream(spool, sandbox, arrivals, random.Random(rng.random()))
        stream.thread.start()
        kills: list[str] = []
        try:
            for _ in range(KILLS):
                kills.append(kill_when(DaemonProcess(spool), rng))
        except BaseException:
            stream.stop.set()
            raise
        killing = time.monotonic() - started
        last = DaemonProcess(spool)
        try:
            stream.thread.join(DRAIN_DEADLINE)
            assert stream.error is None and stream.done, f"the writer failed: {stream.error!r}"
            tail, seen = LogTail(last.log), set()

            def drained() -> bool:
                seen.update(event.get("event") for event in tail.new_events())
                filed = len(data_files(spool.done)) + len(data_files(spool.failed))
                return "daemon_started" in seen and filed >= len(arrivals) and not jobs_in_state(spool)

            wait_for(
                drained,
                timeout=DRAIN_DEADLINE,
                what="every file filed after the last kill",
            )
        finally:
            code = last.terminate() if last.process.poll() is None else last.process.returncode
        figures = check(spool, sandbox, arrivals)
        figures.update(
            seed=seed,
            kills=len(kills),
            kill_triggers=dict(Counter(trigger_of(how) for how in kills)),
            kill_list=kills,
            daemon_events=events_seen(spool),
            exited_by_itself=[how for how in kills if "exited by itself" in how],
            last_exit=code,
            killing_seconds=round(killing, 1),
            seconds=round(time.monotonic() - started, 1),
        )
    write_report("kill_soak", figures)
    with capsys.disabled():
        print(
            f"[kill soak] seed {seed}: {figures['files']} files ({figures['kinds']}), {figures['kills']} kills "
            f"{figures['kill_triggers']}, lost {figures['lost']}, duplicated {figures['duplicated']}, "
            f"imports {figures['imports']}, in failed/ {figures['in_failed']}, {figures['seconds']} s"
        )
        print(f"  daemon log lines: {figures['daemon_events']}")
        for problem in figures["problems"]:
            print(f"  problem: {problem}")
        for note in figures["known_defects"]:
            print(f"  known defect: {note}")
    assert code == 0, f"the last daemon stopped with {code}"
    assert not figures["exited_by_itself"], figures["exited_by_itself"]
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and not figures["problems"], figures["problems"]


def check(spool: Spool, sandbox: Sandbox, arrivals: list[Arrival]) -> dict[str, Any]:
    """The soak's figures and every broken promise found (``problems``); known defects are listed apart."""
    problems: list[str] = []
    known: list[str] = []
    wanted = {arrival.name: arrival for arrival in arrivals}
    places: dict[str, list[tuple[str, Path, str | None]]] = {}  # name -> (folder, path, job id)
    for folder in ("drop", "work", "done", "failed"):
        for path in data_files(spool.root / folder):
            match = FILED_NAME.fullmatch(path.name)
            name, job = (match["name"], match["job"]) if match and folder != "drop" else (path.name, None)
            places.setdefault(name, []).append((folder, path, job))
    lost = 0
    for name, arrival in wanted.items():
        here = places.get(name, [])
        if [folder for folder, _, _ in here] not in (["done"], ["failed"]):
            lost += 1
            problems.append(f"{name} ({arrival.kind}) is in {[folder for folder, _, _ in here] or 'no folder'}")
    problems.extend(f"{name} in {here} was never dropped" for name, here in places.items() if name not in wanted)
    for extra in ("work", "drop"):
        leftovers = [path.name for path in entries(spool.root / extra)]
        if leftovers:
            problems.append(f"left in {extra}/: {leftovers}")

    with sandbox.store.lock:
        imports = {
            item.id: (item.workflow_state, item.upload.filename, sha256(item.upload.path.read_bytes()))
            for item in sandbox.store.ordered_imports()
            if item.upload is not None
        }
        without_upload = [item.id for item in sandbox.store.ordered_imports() if item.upload is None]
    if without_upload:
        problems.append(f"imports without an upload: {without_upload}")
    per_content = Counter(digest for _, _, digest in imports.values())
    duplicated = [arrival.name for arrival in arrivals if per_content[sha256(arrival.data)] > 1]
    problems.extend(f"{name} was imported {per_content[sha256(wanted[name].data)]} times" for name in duplicated)
    contents = {sha256(arrival.data) for arrival in arrivals}
    strays = {number: item for number, item in imports.items() if item[2] not in contents}
    if strays:
        problems.append(f"imports of content never dropped whole (partial uploads?): {strays}")

    for name, here in places.items():
        if name not in wanted:
            continue
        for folder, path, job in here:
            if folder not in ("done", "failed"):
                continue
            sidecar_path = path.with_name(path.name + ".result.json")
            if not sidecar_path.exists():
                problems.append(f"{path.name}: no sidecar")
                continue
            sidecar = json.loads(sidecar_path.read_text())
            data = wanted[name].data
            if folder == "failed":  # every file of the stream is good: the right folder is done/
                problems.append(f"{path.name}: in failed/ ({sidecar.get('reason_code')}: {sidecar.get('reason')})")
            if path.read_bytes() != data:
                problems.append(f"{path.name}: the filed bytes differ from the dropped ones")
            if sidecar["job_id"] != job or sidecar["file"]["size"] != len(data):
                problems.append(f"{path.name}: sidecar job_id/size {sidecar['job_id']}/{sidecar['file']['size']}")
            if sidecar["file"]["sha256"] is None:
                problems.append(f"{path.name}: sidecar sha256 is null")
            elif sidecar["file"]["sha256"] != sha256(data):
                problems.append(f"{path.name}: sidecar sha256 differs from the file's")
            number = (sidecar.get("canvas") or {}).get("import_id")
            if number not in imports:
                problems.append(f"{path.name}: sidecar import_id {number} is not an import of the sandbox")
                continue
            state, filename, digest = imports[number]
            if not filename.startswith(f"{job}_") or digest != sha256(data):
                problems.append(f"{path.name}: import {number} ({filename}) is not this file's")
            if state != sidecar["canvas"]["workflow_state"]:
                problems.append(f"{path.name}: import {number} is {state}, the sidecar says otherwise")

    if jobs_in_state(spool):
        problems.append(f"jobs left in the state: {jobs_in_state(spool)}")
    job_ids = [record["job_id"] for record in history_records(spool)]
    if len(job_ids) != len(set(job_ids)):
        problems.append(f"duplicate history records: {[job for job, n in Counter(job_ids).items() if n > 1]}")
    if len(set(job_ids)) != len(arrivals):
        problems.append(f"{len(set(job_ids))} jobs in the history for {len(arrivals)} files")
    stale = stale_temp_files(spool.state_file.parent)
    if stale:
        problems.append(f"stale temp files beside the state: {stale}")
    problems.extend(
        f"stale temp file in done/ or failed/: {name}"
        for name in stale_temp_files(spool.done) + stale_temp_files(spool.failed) + stale_temp_files(spool.work)
    )
    return {
        "files": len(arrivals),
        "kinds": dict(Counter(arrival.kind for arrival in arrivals)),
        "faults_planned": dict(
            Counter(f"{a.fault['route']}:{a.fault.get('status') or 'reset'}" for a in arrivals if a.fault)
        ),
        "lost": lost,
        "duplicated": len(duplicated),
        "imports": len(imports),
        "in_failed": sum(1 for here in places.values() for folder, _, _ in here if folder == "failed"),
        "problems": problems,
        "known_defects": known,
    }
