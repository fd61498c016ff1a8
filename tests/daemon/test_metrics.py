"""Prometheus metrics and /healthz, scraped over HTTP from a real daemon and parsed with prometheus_client's parser."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sisdaemon import metrics_http
from sisdaemon.metrics import Metrics, Snapshot
from sisdaemon.metrics_http import MetricsServer
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import TOKEN, TOKEN_ENV, DaemonProcess, DaemonThread, Spool, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
BAD_HEADERS = b"course_id,randomness,smelly\ntest_1,TC 101,Test Course 101\n"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(base: str) -> Samples:
    """Every sample of ``base``/metrics: (name, sorted labels) -> value."""
    status, text = get(base + "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        number
        for (sample, sample_labels), number in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def scrape_until(base: str, condition: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``condition`` holds for the samples; return them."""

    def attempt() -> Samples | None:
        samples = scrape(base)
        return samples if condition(samples) else None

    result: Samples = wait_for(attempt, what=what)
    return result


def served_at(daemon: DaemonThread) -> str:
    server = wait_for(lambda: daemon.daemon.monitor.server, what="the metrics server")
    host, port = server.address
    return f"http://{host}:{port}"


@pytest.fixture
def metrics_spool(spool: Spool) -> Spool:
    spool.top["metrics"] = {"listen": "127.0.0.1:0"}
    return spool


def test_counters_and_gauges_change_as_files_go_through(
    metrics_spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool = metrics_spool
    daemon = run_daemon()
    base = served_at(daemon)
    wait_for(lambda: daemon.daemon.iterations > 1, what="the loop to turn")
    before = scrape(base)
    assert value(before, "sisdaemon_files_claimed_total", feed="nightly") == 0
    assert value(before, "sisdaemon_jobs_in_flight", feed="nightly") == 0
    assert value(before, "sisdaemon_healthy") == 1
    assert value(before, "sisdaemon_feed_held", feed="nightly") == 0
    assert value(before, "sisdaemon_feed_paused", feed="nightly") == 0
    assert value(before, "sisdaemon_start_time_seconds") > 0

    spool.drop_file("users.csv", USERS)
    spool.drop_file("bad.csv", BAD_HEADERS)
    wait_for(lambda: spool.all_filed(2), what="both files filed")
    after = scrape_until(base, lambda s: value(s, "sisdaemon_files_filed_total") == 2, "both counted as filed")

    assert value(after, "sisdaemon_files_seen_total", feed="nightly") == 2
    assert value(after, "sisdaemon_files_claimed_total", feed="nightly") == 2
    assert value(after, "sisdaemon_files_submitted_total", feed="nightly") == 2
    assert value(after, "sisdaemon_files_filed_total", feed="nightly", outcome="imported", folder="done") == 1
    failed = value(after, "sisdaemon_files_filed_total", outcome="failed_with_messages", folder="failed")
    assert failed == 1
    assert value(after, "sisdaemon_upload_bytes_total", feed="nightly") == len(USERS) + len(BAD_HEADERS)
    assert value(after, "sisdaemon_upload_duration_seconds_count", feed="nightly", result="created") == 2
    posts = value(after, "sisdaemon_canvas_requests_total", method="POST", route="accounts/:id/sis_imports")
    assert posts == 2
    assert value(after, "sisdaemon_canvas_requests_total", route="accounts/:id/sis_imports/:id", status_class="2xx") > 0
    assert value(after, "sisdaemon_canvas_request_duration_seconds_count", route="accounts/:id") >= 1
    assert value(after, "sisdaemon_jobs_in_flight", feed="nightly") == 0
    assert value(after, "sisdaemon_oldest_in_flight_age_seconds") == 0
    assert value(after, "sisdaemon_feed_last_success_timestamp_seconds", feed="nightly") > time.time() - 600
    assert value(after, "sisdaemon_feed_last_file_timestamp_seconds", feed="nightly") > time.time() - 600
    # No file name, id or token in any label.
    labels = {label for (_, pairs) in after for _, label in pairs}
    assert not any(".csv" in label or "bad" in label or TOKEN in label for label in labels)
    assert not any(any(character.isdigit() for character in label) for label in labels if "/" in label)
    assert get(base + "/healthz") == (200, "ok: the loop is turning\n")


def test_a_refused_token_makes_healthz_answer_503_and_counts_a_credential_fault(
    metrics_spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "a-token-canvas-refuses-0001")
    daemon = run_daemon()
    base = served_at(daemon)

    _, text = wait_for(lambda: (r := get(base + "/healthz"))[0] == 503 and r, what="healthz to answer 503")
    assert "credential fault" in text and "a-token-canvas-refuses" not in text
    samples = scrape(base)
    assert value(samples, "sisdaemon_fault", kind="credential") == 1
    assert value(samples, "sisdaemon_fault", kind="transient") == 0
    assert value(samples, "sisdaemon_canvas_faults_total", kind="credential") >= 1
    assert value(samples, "sisdaemon_canvas_requests_total", route="accounts/:id", status_class="4xx") >= 1
    assert value(samples, "sisdaemon_healthy") == 0


def test_a_daemon_process_serves_metrics_where_its_journal_says(
    metrics_spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    process = daemon_process()
    served = wait_for(
        lambda: next((event for event in process.events() if event.get("event") == "metrics_served"), None),
        what="metrics_served in the journal",
    )
    base = f"http://{served['listen']}"
    metrics_spool.drop_file("users.csv", USERS)
    samples = scrape_until(
        base, lambda s: value(s, "sisdaemon_files_filed_total", outcome="imported") == 1, "the file counted as imported"
    )
    assert value(samples, "sisdaemon_build_info") == 1
    assert get(base + "/nothing")[0] == 404
    assert process.terminate() == 0
    with pytest.raises(OSError):
        get(base + "/metrics")


def test_an_address_in_use_is_said_and_the_daemon_runs_on_without_metrics(
    metrics_spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_spool.top["metrics"] = {"listen": f"127.0.0.1:{taken.getsockname()[1]}"}
        daemon = run_daemon()
        metrics_spool.drop_file("users.csv", USERS)
        wait_for(lambda: metrics_spool.all_filed(1), what="the file filed")
        assert daemon.daemon.monitor.server is None


def test_a_client_that_sends_nothing_neither_blocks_a_scrape_nor_holds_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_http, "CONNECTION_DEADLINE", 0.5)
    metrics = Metrics(lambda: Snapshot(started_at=1.0), ["nightly"])
    server = MetricsServer("127.0.0.1:0", metrics.registry, lambda: (True, "fine"))
    server.start()
    try:
        host, port = server.address
        idle = [socket.create_connection((host, port), timeout=10) for _ in range(metrics_http.MAX_CONNECTIONS + 2)]
        try:
            started = time.monotonic()
            for connection in idle:
                assert connection.recv(1) == b""  # cut off by the deadline, or closed as one too many
            assert time.monotonic() - started < 8
            assert get(f"http://{host}:{port}/healthz") == (200, "ok: fine\n")
            samples = scrape(f"http://{host}:{port}")
            assert value(samples, "sisdaemon_files_seen_total", feed="nightly") == 0
        finally:
            for connection in idle:
                connection.close()
    finally:
        server.stop()


def test_the_metrics_of_two_daemons_in_one_process_stay_apart() -> None:
    first = Metrics(lambda: Snapshot(), ["a"])
    second = Metrics(lambda: Snapshot(), ["a"])
    first.file_seen("a")
    assert first.registry.get_sample_value("sisdaemon_files_seen_total", {"feed": "a"}) == 1
    assert second.registry.get_sample_value("sisdaemon_files_seen_total", {"feed": "a"}) == 0


def test_healthz_says_503_once_the_loop_has_not_turned_for_a_minute(
    metrics_spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    daemon = run_daemon()
    base = served_at(daemon)
    wait_for(lambda: get(base + "/healthz")[0] == 200, what="healthy")
    # As if the loop had hung a minute ago (the loop's own turns are on the monotonic clock).
    daemon.daemon.monitor.last_turn -= 10_000
    daemon.daemon.stop_event.set()  # the loop stops turning: nothing refreshes the pulse
    status, text = get(base + "/healthz")
    assert status == 503 and "the loop has not turned for" in text
