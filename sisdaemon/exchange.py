"""One HTTP exchange with Canvas, after its headers came: the body read within the call's whole deadline
(deadline.py) and at most ``ANSWER_LIMIT`` bytes, and a failed or ended exchange as a CanvasError in plain, token-free
words (``connection refused to canvas.example.edu:443``), with whether a POST certainly never reached Canvas."""

from __future__ import annotations

import contextlib
import errno
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import requests
import urllib3.exceptions

from sisdaemon import deadline
from sisdaemon.answers import CanvasError, FaultKind

#: The largest answer read into memory (bytes); Canvas's pages are far smaller. A larger one is a fault, not a crash.
ANSWER_LIMIT = 32 * 1024 * 1024
#: Bytes per read of an answer's body.
CHUNK = 64 * 1024
#: What a failing exchange raises, from requests or from the urllib3 and socket layers below it.
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


class Answer:
    """An answer whose headers are read; its body is read through here, within the call's deadline."""

    def __init__(self, response: requests.Response, call: deadline.Call, label: str) -> None:
        self.response = response
        self._call = call
        self._label = label

    def chunks(self) -> Iterator[bytes]:
        """The body in chunks. Raises CanvasError (TRANSIENT) when the call fails, is ended, or the body stops
        short because the call was ended (a body without a length would otherwise look whole)."""
        iterator = self.response.iter_content(CHUNK)
        while True:
            try:
                chunk = next(iterator, None)
            except NETWORK_ERRORS as error:
                raise failure(self._call, self._label, error) from None
            if chunk is None:
                # urllib3 checks a Content-Length or chunked body's end itself; a body that ends when the connection
                # closes may instead have been cut short by the call's end.
                framed = "content-length" in self.response.headers or "chunked" in self.response.headers.get(
                    "transfer-encoding", ""
                )
                if self._call.ended and not framed:
                    raise failure(self._call, self._label, None)
                return
            if self._call.ended:
                raise failure(self._call, self._label, None)
            yield chunk

    def read_whole(self, limit: int = ANSWER_LIMIT) -> requests.Response:
        """Read the whole body (at most ``limit`` bytes) into the response, so that ``.content``, ``.text`` and
        ``.json()`` work as for a response read at once. Raises CanvasError."""
        data = bytearray()
        for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise CanvasError(FaultKind.TRANSIENT, f"{self._label}: answer larger than {limit} bytes")
        self.response._content = bytes(data)
        self.response._content_consumed = True  # type: ignore[attr-defined]  # requests' own flag for that
        return self.response

    def read_start(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (to classify a refusal); a failure to read it gives what came."""
        data = bytearray()
        with contextlib.suppress(CanvasError):
            for chunk in self.chunks():
                data += chunk
                if len(data) >= limit:
                    break
        return bytes(data[:limit])


def failure(call: deadline.Call, label: str, error: BaseException | None) -> CanvasError:
    """The CanvasError for an exchange that failed (``error``) or was ended (``call.ended``). ``created_nothing``
    is what a POST needs: true only when no connection was made for the call."""
    if call.ended == deadline.CANCELLED:
        return CanvasError(
            FaultKind.TRANSIENT, f"{label}: cancelled (sisdaemon is stopping)", created_nothing=not call.may_have_sent
        )
    if call.ended == deadline.DEADLINE:
        return CanvasError(
            FaultKind.TRANSIENT,
            f"{label}: no whole answer within {call.seconds:g} s",
            created_nothing=not call.may_have_sent,
        )
    assert error is not None
    never_made = isinstance(error, requests.RequestException) and _connection_never_made(error)
    return CanvasError(FaultKind.TRANSIENT, f"{label}: {describe(error)}", created_nothing=never_made)


def path_of(url: str) -> str:
    """The path of a URL, for messages (no query string, which can carry a verifier)."""
    return urllib.parse.urlsplit(url).path


def describe(error: BaseException) -> str:
    """A short, token-free description of a requests (or urllib3, or socket) exception."""
    if isinstance(error, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(error, requests.ReadTimeout):
        return "read timeout (no answer)"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS handshake failed"
    plain = _plain_connect_failure(error)
    if plain is not None:
        return plain
    if not isinstance(error, requests.RequestException | urllib3.exceptions.HTTPError):
        return type(error).__name__  # a socket error: its name says it (ConnectionResetError, ...)
    reason = error.args[0] if error.args else error
    reason = getattr(reason, "reason", reason)
    return f"{type(error).__name__}: {type(reason).__name__}"


#: What an operator reads for the OS errors a connection can fail with (errno names from errno(3)).
_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.ECONNRESET: "connection reset",
}


def _plain_connect_failure(error: BaseException) -> str | None:
    """``"connection refused to canvas.example.edu:443"`` (or ``"cannot resolve host ..."``, ``"no route to host
    ..."``) when a connection failed for one of those OS reasons, else None. The host and port come from the
    request's URL (never its query or headers)."""
    where = ""
    request = getattr(error, "request", None)
    url = getattr(request, "url", None)
    if isinstance(url, str):
        split = urllib.parse.urlsplit(url)
        where = f" to {split.hostname}:{split.port or (443 if split.scheme == 'https' else 80)}"
    seen: list[BaseException] = []
    pending: list[Any] = [error]
    while pending and len(seen) < 12:
        item = pending.pop(0)
        if not isinstance(item, BaseException) or any(item is known for known in seen):
            continue
        seen.append(item)
        if isinstance(item, socket.gaierror):
            return f"cannot resolve host{where.replace(' to ', ' ', 1)}"
        if isinstance(item, OSError) and item.errno in _CONNECT_ERRORS:
            return _CONNECT_ERRORS[item.errno] + where
        pending += [getattr(item, "reason", None), item.__cause__, item.__context__, *item.args[:1]]
    return None


def _connection_never_made(error: requests.RequestException) -> bool:
    """Whether a failed POST certainly never reached Canvas: connect timeout, refused connection, DNS or TLS
    handshake failure. A reset or timeout after connecting is not (the body may have been received)."""
    if isinstance(error, requests.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(error, requests.ConnectionError):
        reason = error.args[0] if error.args else None
        reason = getattr(reason, "reason", reason)
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False
