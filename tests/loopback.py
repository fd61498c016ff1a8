"""A raw HTTP/1.1 server on 127.0.0.1:0 in a thread, for tests that need answers no real framework would send:
trickled bytes, echoed headers, odd statuses. One request per connection; every thread stops on :meth:`close`."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass
class Request:
    """What the client sent: the request line's method and target, headers (lower-case names), the body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    """One connection being answered. ``stop`` is set when the server closes: long answers must end then."""

    sock: socket.socket
    request: Request
    stop: threading.Event

    def send(self, data: bytes) -> bool:
        """Send ``data``; False when the client has gone (reset, closed)."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def answer(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        """A whole answer at once, with Content-Length, closing the connection after it."""
        extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
        head = (
            f"HTTP/1.1 {status} Whatever\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n"
        )
        self.send(head.encode("latin-1") + body)

    def trickle(self, data: bytes, every: float) -> None:
        """Send ``data`` one byte every ``every`` seconds, until done, the client leaves, or the server stops."""
        for index in range(len(data)):
            if not self.send(data[index : index + 1]) or self.stop.wait(every):
                return


Handler = Callable[[Exchange], None]


@dataclass
class LoopbackServer:
    """Serves ``handler`` for each request; ``requests`` lists what arrived, ``received`` is set at each one."""

    handler: Handler
    requests: list[Request] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._serve, name="loopback-accept")
        self._acceptor.start()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._one, args=(sock,), name="loopback-answer")
            self._threads.append(thread)
            thread.start()

    def _one(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(10)
            try:
                request = read_request(sock)
            except OSError:
                return
            if request is None:
                return
            self.requests.append(request)
            self.received.set()
            self.handler(Exchange(sock, request, self.stop))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stop.set()
        self._acceptor.join()
        for thread in self._threads:
            thread.join()
        self._listener.close()


def read_request(sock: socket.socket) -> Request | None:
    """Read one request (headers, then a Content-Length body); None if the client left first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(min(65536, length - len(body)))
        if not chunk:
            return None
        body += chunk
    return Request(method, target, headers, body)


@contextlib.contextmanager
def serving(handler: Handler) -> Iterator[LoopbackServer]:
    server = LoopbackServer(handler)
    try:
        yield server
    finally:
        server.close()
