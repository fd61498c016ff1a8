"""No token in error text, whatever Canvas or a proxy echoes back: a real server on 127.0.0.1:0 that echoes the
request's Authorization header (and the bare token) in its refusals."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sisdaemon import canvas
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from tests.loopback import Exchange, serving

FIRST = "7~FirstRedactionTokenAbcdefghijklmnopqrstuvwxyz0123456789"
SECOND = "7~SecondRedactionTokenZyxwvutsrqponmlkjihgfedcba9876543210"


class Echo:
    """Answers every request with ``status`` and a body built from every token seen so far (bare and with its
    Authorization header)."""

    def __init__(self, status: int, shape: str) -> None:
        self.status = status
        self.shape = shape
        self.seen: list[str] = []

    def __call__(self, exchange: Exchange) -> None:
        header = exchange.request.headers.get("authorization", "")
        self.seen.append(header.removeprefix("Bearer "))
        echoed = f"Authorization: {header}; tokens seen: {' '.join(self.seen)}"
        if self.shape == "json":
            exchange.answer(self.status, json.dumps({"errors": [{"message": f"rejected ({echoed})"}]}).encode())
        elif self.shape == "json-message":
            exchange.answer(self.status, json.dumps({"message": echoed}).encode())
        elif self.shape == "html-at-the-cut":  # the token straddles the 200 characters an HTML body is cut to
            body = "x" * 190 + " " + self.seen[-1] + " " + echoed + " <p>" * 600
            exchange.answer(self.status, body.encode(), "text/html")
        else:
            body = f"<html><body><h1>{self.status}</h1><pre>{echoed}</pre>{'<p>padding</p>' * 400}</body></html>"
            exchange.answer(self.status, body.encode(), "text/html")


def leaks(text: str, token: str) -> bool:
    """Whether ``text`` holds the token or a start of it long enough to matter (8 characters)."""
    return token[:8] in text


def error_text(error: CanvasError) -> str:
    return " ".join([str(error), repr(error), *(str(argument) for argument in error.args)])


class Tokens:
    """A token file that can be rotated: the client reads the current token through ``read``."""

    def __init__(self) -> None:
        self.current = FIRST

    def read(self) -> str:
        return self.current


@pytest.fixture
def upload(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "users.csv"
    path.write_text("user_id,login_id,status\nu1,u1,active\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


CASES = [
    (500, "json"),
    (400, "json-message"),
    (401, "json"),
    (403, "json"),
    (404, "json"),
    (502, "html"),
    (500, "html-at-the-cut"),
    (200, "html"),
]


@pytest.mark.parametrize(("status", "shape"), CASES)
def test_an_answer_echoing_the_token_gives_an_error_without_it(status: int, shape: str) -> None:
    tokens = Tokens()
    with serving(Echo(status, shape)) as server:
        client = CanvasClient(server.url, "1", tokens.read)
        with pytest.raises(CanvasError) as caught:
            client.get_self()
        client.close()

    assert server.requests[0].headers["authorization"] == f"Bearer {FIRST}"  # it was sent, and echoed
    text = error_text(caught.value)
    assert not leaks(text, FIRST)
    if status != 200 and shape != "html-at-the-cut":  # a 200 with HTML is reported without its body
        assert "[redacted]" in text


@pytest.mark.parametrize(("status", "shape"), [(400, "json"), (500, "html"), (502, "json")])
def test_an_upload_refusal_echoing_the_token_gives_an_error_without_it(status: int, shape: str, upload: int) -> None:
    with serving(Echo(status, shape)) as server:
        client = CanvasClient(server.url, "1", Tokens().read)
        with pytest.raises(CanvasError) as caught:
            client.create_sis_import(upload, "job_users.csv", [])
        client.close()

    assert not leaks(error_text(caught.value), FIRST)


def test_after_a_rotation_both_the_old_and_the_new_token_are_redacted() -> None:
    tokens = Tokens()
    echo = Echo(401, "json")
    with serving(echo) as server:
        client = CanvasClient(server.url, "1", tokens.read)
        with pytest.raises(CanvasError):
            client.get_self()
        tokens.current = SECOND  # the token file was replaced; the 401 made the client read it again
        with pytest.raises(CanvasError) as caught:
            client.get_self()
        client.close()

    assert echo.seen == [FIRST, SECOND]
    text = error_text(caught.value)
    assert not leaks(text, FIRST) and not leaks(text, SECOND)
    assert caught.value.kind is FaultKind.CREDENTIAL


def test_error_text_is_bounded_in_length() -> None:
    error = CanvasError(FaultKind.TRANSIENT, "HTTP 502: " + "x" * 5000)
    assert len(str(error)) <= 500
    assert str(error).endswith("…")
    assert len(repr(error)) < 600


def test_any_bearer_credential_is_redacted_even_one_never_read() -> None:
    text = canvas.redact("proxy says: Authorization: Bearer abc.def-ghi and bearer\tsomething-else, fine")
    assert "abc.def-ghi" not in text and "something-else" not in text
    assert text.startswith("proxy says: Authorization: Bearer [redacted]")
