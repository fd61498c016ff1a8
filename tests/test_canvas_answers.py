"""How the client reads Canvas's (and proxies') refusals, against a real HTTP server on 127.0.0.1:0."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from tests.loopback import Exchange, serving

TOKEN = "7~FirstTokenAbcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture
def upload(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "users.csv"
    path.write_text("user_id,login_id,status\nu1,u1,active\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def client_for(url: str, token: str = TOKEN, **options: float) -> CanvasClient:
    return CanvasClient(url, "1", lambda: token, **options)


def test_a_413_from_the_create_route_is_a_fault_of_the_file_that_created_nothing(upload: int) -> None:
    def too_large(exchange: Exchange) -> None:
        exchange.answer(413, b"<html><h1>413 Request Entity Too Large</h1></html>", "text/html")

    with serving(too_large) as server:
        client = client_for(server.url)
        with pytest.raises(CanvasError) as caught:
            client.create_sis_import(upload, "job_users.csv", [])
        client.close()

    error = caught.value
    assert error.kind is FaultKind.FILE
    assert (error.status, error.created_nothing, error.reason_code) == (413, True, "too_large")
    assert "too large" in str(error)


def test_a_throttled_errors_csv_download_is_throttling_not_a_credential_fault(tmp_path: Path) -> None:
    def throttled(exchange: Exchange) -> None:
        exchange.answer(403, b"403 Forbidden (Rate Limit Exceeded)\n", "text/plain; charset=utf-8")

    with serving(throttled) as server:
        client = client_for(server.url)
        with pytest.raises(CanvasError) as caught:
            client.download(f"{server.url}/files/9/download?verifier=abc", tmp_path / "errors.csv")
        client.close()

    assert caught.value.kind is FaultKind.THROTTLED
    assert not (tmp_path / "errors.csv").exists()


def test_a_refused_errors_csv_download_from_canvas_itself_is_still_a_credential_fault(tmp_path: Path) -> None:
    def refused(exchange: Exchange) -> None:
        exchange.answer(401, json.dumps({"errors": [{"message": "Invalid access token."}]}).encode())

    with serving(refused) as server:
        client = client_for(server.url)
        with pytest.raises(CanvasError) as caught:
            client.download(f"{server.url}/files/9/download", tmp_path / "errors.csv")
        client.close()

    assert caught.value.kind is FaultKind.CREDENTIAL


def test_a_file_store_refusing_a_redirected_download_is_not_a_fault_of_the_token(tmp_path: Path) -> None:
    def expired(exchange: Exchange) -> None:
        exchange.answer(
            403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", "application/xml"
        )

    with serving(expired) as store:

        def redirect(exchange: Exchange) -> None:
            exchange.answer(302, b"", "text/html", Location=f"{store.url.replace('127.0.0.1', 'localhost')}/f?sig=x")

        with serving(redirect) as canvas:
            client = client_for(canvas.url)
            with pytest.raises(CanvasError) as caught:
                client.download(f"{canvas.url}/files/9/download", tmp_path / "errors.csv")
            client.close()

    assert caught.value.kind is FaultKind.TRANSIENT
    assert "authorization" not in store.requests[0].headers  # the token stays with Canvas's host


def test_a_refused_connection_is_named_plainly_with_its_host_and_port() -> None:
    import socket

    from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: the kernel refuses the connection
    client = CanvasClient(f"http://127.0.0.1:{port}", "1", lambda: "t", timeout=5, upload_timeout=5, verify=True)
    try:
        client.check_access()
    except CanvasError as error:
        assert str(error) == f"GET /api/v1/users/self: connection refused to 127.0.0.1:{port}"
        assert error.kind is FaultKind.TRANSIENT and error.created_nothing
    else:
        raise AssertionError("a closed port answered")
    finally:
        client.close()


def test_calls_slowed_for_the_rate_limit_are_said_once_when_it_starts_and_once_when_it_ends() -> None:
    headroom = iter(["90.0", "120.0", "600.0", "600.0"])

    def answer(exchange: Exchange) -> None:
        exchange.answer(200, b'{"id": 1, "name": "Root"}', X_Rate_Limit_Remaining=next(headroom))

    paused: list[float] = []
    with serving(answer) as server, structlog.testing.capture_logs() as lines:
        client = CanvasClient(server.url, "1", lambda: TOKEN, wait=paused.append)
        try:
            for _ in range(4):
                client.resolve_account()
        finally:
            client.close()
    said = [(line["event"], line["log_level"]) for line in lines]
    assert said == [("canvas_rate_limit_low", "warning"), ("canvas_rate_limit_recovered", "info")]
    assert lines[0]["rate_limit_remaining"] == 90.0 and lines[0]["pause_seconds"] == 6.0
    assert paused == [6.0, 3.0]  # (150 - 90) / 10 and (150 - 120) / 10: Canvas drains 10 units a second


@pytest.mark.parametrize(
    ("content_type", "body", "kind"),
    [
        ("application/json; charset=utf-8", b'{"errors":[{"message":"The specified resource does not exist."}]}', "nf"),
        ("text/html", b"<html><h1>404 Not Found</h1><p>nginx</p></html>", "config"),
    ],
)
def test_only_canvas_json_404_means_the_import_is_not_there_a_proxys_page_is_a_configuration_fault(
    content_type: str, body: bytes, kind: str
) -> None:
    def not_found(exchange: Exchange) -> None:
        exchange.answer(404, body, content_type)

    with serving(not_found) as server:
        client = client_for(server.url)
        with pytest.raises(CanvasError) as caught:
            client.get_sis_import(42)
        client.close()

    expected = FaultKind.NOT_FOUND if kind == "nf" else FaultKind.CONFIGURATION
    assert caught.value.kind is expected and caught.value.status == 404
    if kind == "config":
        assert "canvas.base_url" in str(caught.value) and "text/html" in str(caught.value)
