"""Each part of the daemon built alone, with only what it is passed: the ledger on real files, the gate in front of
a plain callable, the effects seam, the writer check."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import pytest

from sisdaemon import effects, jobs
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from sisdaemon.config import PollingSettings
from sisdaemon.gate import Gate
from sisdaemon.jobs import Fingerprint
from sisdaemon.ledger import Ledger
from sisdaemon.worker import FlightWorker
from sisdaemon.writers import WriterCheck

NOW = 1_800_000_000.0
POLICY = PollingSettings(interval_seconds=1, max_interval_seconds=8)


def a_job(job_id: str = "abc1234567", feed: str = "nightly") -> jobs.Job:
    return jobs.claim(job_id, feed, "users.csv", Fingerprint(1, 10, 2), seen_at=NOW, now=NOW)


def test_the_ledger_persists_a_job_before_put_returns_and_forgets_it_once_filed(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    ledger = Ledger(state_file)
    ledger.load(["nightly"])
    job = a_job()
    ledger.put(job)
    on_disk = json.loads(state_file.read_text())
    assert [item["job_id"] for item in on_disk["jobs"]] == [job.job_id]

    finished = jobs.reject(job, "empty_file", "empty", now=NOW)
    ledger.put(finished)
    ledger.record_finished(finished, counts=None)
    lines = [json.loads(line) for line in (tmp_path / "state.history.nightly.json").read_text().splitlines()]
    assert [line["record"]["job_id"] for line in lines if "record" in line] == [job.job_id]
    # The history line is on disk first; the state's drop waits for the next write (no step needs it on disk).
    assert ledger.jobs() == [] and [item["state"] for item in json.loads(state_file.read_text())["jobs"]] == [
        "finishing"
    ]
    assert ledger.flush()
    assert json.loads(state_file.read_text())["jobs"] == []

    again = Ledger(state_file)
    again.load(["nightly"])
    assert again.jobs() == []
    assert again.history("nightly").records[-1]["outcome"] == "rejected"


def test_a_change_put_later_is_written_by_the_next_write_or_a_flush_and_a_flush_with_none_writes_nothing(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "state.json"
    ledger = Ledger(state_file)
    ledger.load(["nightly"])
    first, second = a_job("abc1234567"), a_job("def1234567")
    ledger.put(first)
    ledger.put_later(dataclasses.replace(first, sha256="ab" * 32))
    assert json.loads(state_file.read_text())["jobs"][0]["sha256"] is None  # not written yet
    ledger.put(second)  # the next write carries it
    assert [item["sha256"] for item in json.loads(state_file.read_text())["jobs"]] == ["ab" * 32, None]
    written = state_file.stat().st_ino
    assert ledger.flush() and state_file.stat().st_ino == written  # nothing waited: no write
    ledger.put_later(dataclasses.replace(second, sha256="cd" * 32))
    assert ledger.flush() and state_file.stat().st_ino != written
    assert [item["sha256"] for item in json.loads(state_file.read_text())["jobs"]] == ["ab" * 32, "cd" * 32]


def test_the_ledger_keeps_a_change_in_memory_only_when_asked(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load(["nightly"])
    job = a_job()
    ledger.put(job)
    ledger.keep(jobs.observe_in_work(job, Fingerprint(1, 11, 3), NOW + 1, 10))
    assert ledger.job(job.job_id) is not None and ledger.job(job.job_id).size == 11  # type: ignore[union-attr]
    reread = Ledger(tmp_path / "state.json")
    reread.load(["nightly"])
    assert reread.job(job.job_id) == job


def test_the_ledger_says_whether_a_hold_is_new_and_releases_every_hold(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load(["nightly", "other"])
    assert ledger.hold("nightly", "bad option") is True
    assert ledger.hold("nightly", "bad option") is False
    assert ledger.held("nightly") == "bad option" and ledger.held("other") is None
    assert ledger.release_holds() == ["nightly"]
    assert ledger.held("nightly") is None


def test_the_ledger_knows_import_ids_from_histories_jobs_and_dead_imports(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load(["nightly"])
    ledger.note_import("nightly", 11)
    job = a_job()
    job = jobs.begin_attempt(job, tag=None, intent_at=None, now=NOW)
    job = jobs.post_created(job, {"id": 12, "workflow_state": "created"}, now=NOW, interval=1)
    job = jobs.back_to_claimed(job, "dead", now=NOW, settle_again=False)
    ledger.put(job)
    assert ledger.known_import_ids() == {11, 12}


def test_the_ledger_counts_jobs_per_feed_and_sees_a_post_of_unknown_outcome(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load(["nightly", "other"])
    ledger.put(a_job("a000000001"))
    ledger.put(a_job("a000000002", feed="other"))
    assert (ledger.jobs_of("nightly"), ledger.jobs_of("other")) == (1, 1)
    assert not ledger.any_submitting()
    job = ledger.job("a000000001")
    assert job is not None
    ledger.put(jobs.begin_attempt(job, tag=None, intent_at=None, now=NOW))
    assert ledger.any_submitting()


def unreachable_client() -> CanvasClient:
    """A client for a port nothing listens on (the gate only asks it to forget its token)."""
    return CanvasClient("http://127.0.0.1:9", "1", lambda: "token-never-sent", timeout=1)


def test_the_gate_closes_for_a_backoff_after_a_fault_and_opens_when_canvas_answers(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load([])
    notes: list[str] = []
    gate = Gate(unreachable_client(), ledger, POLICY, notify=notes.append, jitter=lambda: 0.0)

    def down() -> None:
        raise CanvasError(FaultKind.TRANSIENT, "connection refused")

    with pytest.raises(CanvasError):
        gate.call(NOW, down)
    assert not gate.is_open(NOW)
    assert gate.is_open(gate.health.retry_at)
    assert gate.health.retry_at - NOW == 1.0  # interval * 2 ** 1, halved by the least jitter
    assert ledger.state.fault is not None and ledger.state.fault["kind"] == "transient"
    assert notes == ["STATUS=Canvas fault (transient): connection refused"]

    assert gate.call(gate.health.retry_at, lambda: "answer") == "answer"
    assert gate.health.kind is None and ledger.state.fault is None
    assert json.loads((tmp_path / "state.json").read_text())["fault"] is None


def test_the_gate_backs_off_slowly_for_a_credential_fault_and_retries_at_once_after_a_reload(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load([])
    gate = Gate(unreachable_client(), ledger, POLICY, notify=lambda line: None, jitter=lambda: 0.5)

    def refused() -> None:
        raise CanvasError(FaultKind.CREDENTIAL, "401 Unauthorized", status=401)

    with pytest.raises(CanvasError):
        gate.call(NOW, refused)
    assert gate.health.retry_at == NOW + POLICY.max_interval_seconds
    gate.retry_now(NOW + 1)
    assert gate.is_open(NOW + 1)


def test_a_not_found_answer_is_not_a_fault_of_the_gate_and_ends_one_in_progress(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load([])
    gate = Gate(unreachable_client(), ledger, POLICY, notify=lambda line: None)

    def gone() -> None:
        raise CanvasError(FaultKind.NOT_FOUND, "404", status=404)

    def down() -> None:
        raise CanvasError(FaultKind.TRANSIENT, "connection refused")

    with pytest.raises(CanvasError):
        gate.call(NOW, gone)
    assert gate.health.kind is None and gate.is_open(NOW)
    with pytest.raises(CanvasError):
        gate.call(NOW, down)
    assert gate.health.kind is FaultKind.TRANSIENT and ledger.state.fault is not None
    with pytest.raises(CanvasError):
        gate.call(gate.health.retry_at, gone)  # Canvas answered (with its JSON 404): it is back
    assert gate.health.kind is None and ledger.state.fault is None


def test_the_gate_allows_one_upload_at_a_time_and_none_while_a_post_is_unknown(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load(["nightly"])
    gate = Gate(unreachable_client(), ledger, POLICY, notify=lambda line: None)
    assert gate.may_upload()
    gate.uploading = "a000000001"
    assert not gate.may_upload()
    gate.uploading = None
    ledger.put(jobs.begin_attempt(a_job(), tag=None, intent_at=None, now=NOW))
    assert not gate.may_upload()


def test_every_side_effect_reaches_the_observers_in_order_with_its_number() -> None:
    seen: list[tuple[int, str]] = []
    remove = effects.observe(lambda number, name: seen.append((number, name)))
    try:
        before = effects.count()
        effects.happened("test.one")
        effects.happened("test.two")
    finally:
        remove()
    effects.happened("test.unobserved")
    assert seen == [(before + 1, "test.one"), (before + 2, "test.two")]


def test_the_effects_log_from_the_environment_records_each_side_effect(tmp_path: Path) -> None:
    log_path = tmp_path / "effects.log"
    removers_before = len(effects._observers)
    effects.install_from_environment({"SISDAEMON_EFFECTS_LOG": str(log_path)})
    try:
        effects.happened("test.logged")
    finally:
        for observer in effects._observers[removers_before:]:
            effects._observers.remove(observer)
    number, name = log_path.read_text().split()
    assert name == "test.logged" and int(number) == effects.count()


def test_a_failpoint_that_is_not_a_positive_number_is_refused() -> None:
    with pytest.raises(ValueError, match="SISDAEMON_FAILPOINT"):
        effects.install_from_environment({"SISDAEMON_FAILPOINT": "0"})


def test_the_writer_check_sees_an_open_writer_of_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    writer = open(path, "wb")  # noqa: SIM115 - held open on purpose
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            assert WriterCheck()(fd) is True  # the daemon owns this file: a lease tells
        finally:
            os.close(fd)
    finally:
        writer.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert WriterCheck()(fd) is False
        blind = WriterCheck(lambda fd: None)
        assert blind(fd) is None and blind.blind
    finally:
        os.close(fd)


class FilingFlight:
    """A flight whose every step files its job (the ledger forgets it), as a finished import's last step does."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect_uploads(self, now: float) -> None:
        pass

    def after_turn(self) -> None:
        pass

    def step(self, job: jobs.Job, now: float) -> None:
        finished = jobs.reject(job, "empty_file", "empty", now=now)
        self.ledger.put(finished)
        self.ledger.record_finished(finished, counts=None)


def test_the_flight_worker_wakes_the_loop_when_a_job_is_filed_so_a_waiting_file_takes_its_place(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load(["nightly"])
    gate = Gate(unreachable_client(), ledger, POLICY, notify=lambda line: None)
    loop_wake = threading.Event()
    worker = FlightWorker(
        FilingFlight(ledger),
        ledger,
        gate,
        wake=threading.Event(),
        loop_wake=loop_wake,
        clock=lambda: NOW,
    )
    worker._turn()
    assert not loop_wake.is_set()  # nothing in flight, nothing filed: the loop sleeps on
    ledger.put(a_job())
    worker._turn()
    assert ledger.jobs() == [] and loop_wake.is_set()


def test_the_flight_worker_leaves_a_job_alone_while_the_loop_is_still_claiming_it(tmp_path: Path) -> None:
    # The loop records a claim before it renames the file into work/, and refuses a 0-byte file or a FIFO only after
    # that rename: a flight step in between once uploaded an empty file the loop then filed as empty_file.
    ledger = Ledger(tmp_path / "state.json")
    ledger.load(["nightly"])
    gate = Gate(unreachable_client(), ledger, POLICY, notify=lambda line: None)
    worker = FlightWorker(
        FilingFlight(ledger),
        ledger,
        gate,
        wake=threading.Event(),
        loop_wake=threading.Event(),
        clock=lambda: NOW,
    )
    job = a_job()
    with ledger.claiming(job.job_id):
        ledger.put(job)
        assert ledger.flight_jobs() == []
        worker._turn()
        assert ledger.jobs() == [job], "not stepped while its claim is being made"
    assert ledger.flight_jobs() == [job]
    worker._turn()
    assert ledger.jobs() == [], "stepped (and filed) once the claim is whole"
