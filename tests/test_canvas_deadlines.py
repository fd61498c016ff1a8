"""Every call to Canvas ends by its whole-call deadline, and at once when cancelled, whatever the server does:
a real HTTP server on 127.0.0.1:0 that trickles its answer one byte every half second."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sisdaemon import deadline
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from tests.loopback import Exchange, LoopbackServer, serving

TOKEN = "7~DeadlineTestTokenAbcdefghijklmnopqrstuvwxyz0123456789"
BODY = json.dumps({"id": 1, "name": "Ada"}).encode()  # 24 bytes: 12 s at one byte every 0.5 s
EVERY = 0.5


def trickled_body(exchange: Exchange) -> None:
    """Headers at once, then the body one byte at a time."""
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
    )
    if exchange.send(head.encode()):
        exchange.trickle(BODY, EVERY)


def trickled_unframed_body(exchange: Exchange) -> None:
    """Headers at once, then a body whose end is the connection's close (no length): cut short, it would look whole."""
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    if exchange.send(head.encode() + BODY[:-3]):
        exchange.trickle(BODY[-3:], EVERY * 4)


def trickled_headers(exchange: Exchange) -> None:
    """The whole answer one byte at a time, from the status line on."""
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: "
        + "p" * 10
        + f"\r\nContent-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
    )
    exchange.trickle(head.encode() + BODY, EVERY)


def prompt(exchange: Exchange) -> None:
    exchange.answer(200, BODY)


def client_for(server: LoopbackServer, **options: float) -> CanvasClient:
    return CanvasClient(server.url, "1", lambda: TOKEN, **options)


@pytest.fixture
def upload(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "users.csv"
    path.write_text("user_id,login_id,status\n" + "u1,u1,active\n" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def failure_of(call: Callable[[], object]) -> tuple[CanvasError, float]:
    """The CanvasError ``call`` raises, and how long it took (seconds)."""
    started = time.monotonic()
    with pytest.raises(CanvasError) as caught:
        call()
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize(
    "answer", [trickled_body, trickled_headers, trickled_unframed_body], ids=["body", "headers", "unframed-body"]
)
def test_a_trickled_answer_ends_the_call_at_its_whole_call_deadline(answer: Callable[[Exchange], None]) -> None:
    with serving(answer) as server:
        client = client_for(server, timeout=1.5)
        error, elapsed = failure_of(client.get_self)
        client.close()

    assert elapsed < 1.5 + 1.0
    assert error.kind is FaultKind.TRANSIENT
    assert "no whole answer within 1.5 s" in str(error)


def test_a_trickled_answer_to_an_upload_ends_at_the_upload_deadline_with_its_outcome_unknown(upload: int) -> None:
    with serving(trickled_body) as server:
        client = client_for(server, timeout=30, upload_timeout=1.5)
        error, elapsed = failure_of(lambda: client.create_sis_import(upload, "job_users.csv", [("x", "1")]))
        client.close()

    assert server.requests[0].method == "POST"
    assert elapsed < 1.5 + 1.0
    assert error.kind is FaultKind.TRANSIENT
    assert error.created_nothing is False  # the request was sent: the import may exist


def test_a_trickled_errors_csv_ends_the_download_at_its_deadline_and_leaves_no_file(tmp_path: Path) -> None:
    with serving(trickled_body) as server:
        client = client_for(server, timeout=1.5)
        error, elapsed = failure_of(lambda: client.download(f"{server.url}/files/1/download", tmp_path / "e.csv"))
        client.close()

    assert elapsed < 1.5 + 1.0
    assert error.kind is FaultKind.TRANSIENT
    assert list(tmp_path.iterdir()) == []


def cancel_when_received(server: LoopbackServer, client: CanvasClient, cancelled_at: list[float]) -> threading.Thread:
    """A thread that cancels ``client``'s calls once the server has the request (as a SIGTERM handler would)."""

    def cancel() -> None:
        if server.received.wait(10):
            cancelled_at.append(time.monotonic())
            client.cancel()

    thread = threading.Thread(target=cancel, name="canceller")
    thread.start()
    return thread


@pytest.mark.parametrize("answer", [trickled_body, trickled_headers], ids=["body", "headers"])
def test_cancel_from_another_thread_ends_a_call_in_progress_within_a_second(answer: Callable[[Exchange], None]) -> None:
    cancelled_at: list[float] = []
    with serving(answer) as server:
        client = client_for(server, timeout=60)
        canceller = cancel_when_received(server, client, cancelled_at)
        error, _ = failure_of(client.get_self)
        ended_at = time.monotonic()
        canceller.join()
        client.close()

    assert ended_at - cancelled_at[0] < 1.0
    assert error.kind is FaultKind.TRANSIENT
    assert "cancelled" in str(error)


def test_cancel_ends_an_upload_in_progress_with_its_outcome_unknown(upload: int) -> None:
    cancelled_at: list[float] = []
    with serving(trickled_body) as server:
        client = client_for(server, timeout=60, upload_timeout=60)
        canceller = cancel_when_received(server, client, cancelled_at)
        error, _ = failure_of(lambda: client.create_sis_import(upload, "job_users.csv", []))
        ended_at = time.monotonic()
        canceller.join()
        client.close()

    assert ended_at - cancelled_at[0] < 1.0
    assert (error.kind, error.created_nothing) == (FaultKind.TRANSIENT, False)


def test_a_cancelled_client_sends_nothing_until_resumed(upload: int) -> None:
    with serving(prompt) as server:
        client = client_for(server, timeout=5)
        client.cancel()
        error, elapsed = failure_of(client.get_self)
        post_error, _ = failure_of(lambda: client.create_sis_import(upload, "job_users.csv", []))
        assert server.requests == []
        assert elapsed < 0.5 and "cancelled" in str(error)
        assert (post_error.kind, post_error.created_nothing) == (FaultKind.TRANSIENT, True)

        client.resume()
        assert client.get_self() == {"id": 1, "name": "Ada"}
        client.close()


def test_prompt_answers_still_come_back_whole_call_after_call() -> None:
    with serving(prompt) as server:
        client = client_for(server, timeout=5)
        results = [client.get_self() for _ in range(3)]
        client.close()

    assert results == [{"id": 1, "name": "Ada"}] * 3
    assert all(request.headers["authorization"] == f"Bearer {TOKEN}" for request in server.requests)


def test_cancel_from_a_signal_handler_ends_a_call_of_the_main_thread_within_a_second() -> None:
    """What a SIGTERM handler does: it runs on the main thread, between two steps of the call it interrupts."""
    cancelled_at: list[float] = []
    with serving(trickled_body) as server:
        client = client_for(server, timeout=60)

        def on_alarm(signum: int, frame: object) -> None:
            cancelled_at.append(time.monotonic())
            client.cancel()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            error, _ = failure_of(client.get_self)
            ended_at = time.monotonic()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        client.close()

    assert ended_at - cancelled_at[0] < 1.0
    assert "cancelled" in str(error)


def test_cancel_from_a_signal_handler_that_lands_while_a_lock_is_held_does_not_deadlock() -> None:
    """The handler may run while the interrupted main thread holds the client's or the call's lock."""
    with serving(prompt) as server:
        client = client_for(server, timeout=5)
        ended: list[bool] = []

        def cancel_in_handler(signum: int, frame: object) -> None:
            client.cancel()
            ended.append(True)

        previous = signal.signal(signal.SIGUSR1, cancel_in_handler)
        try:
            with client._lock:  # as if the signal came in the middle of starting a call
                signal.raise_signal(signal.SIGUSR1)
            call = deadline.Call(5)
            with call._lock:  # ... or in the middle of a call recording its connection
                signal.signal(signal.SIGUSR1, lambda signum, frame: call.end(deadline.CANCELLED))
                signal.raise_signal(signal.SIGUSR1)
        finally:
            signal.signal(signal.SIGUSR1, previous)
        client.close()

    assert ended == [True] and call.ended == deadline.CANCELLED
