"""The metrics server: ``GET /metrics`` (Prometheus's text format) and ``GET /healthz`` on one loopback address.

It runs in threads of its own and can never take the daemon down or hold it up: each connection has a deadline for
the whole exchange (a client that trickles its request is cut off), at most :data:`MAX_CONNECTIONS` are served at
once (more are closed at once), errors in a request end that request only, and :meth:`MetricsServer.stop` returns
within a second or two.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

log = structlog.get_logger("sisdaemon")

#: Seconds a connection may take in all (reading the request, writing the answer).
CONNECTION_DEADLINE = 10.0
#: Connections served at once; more are closed without an answer.
MAX_CONNECTIONS = 8

Health = Callable[[], tuple[bool, str]]
"""Returns (healthy, a sentence saying why or why not)."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; ``"[::1]:9464"`` -> ``("::1", 9464)``. Raises ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


def make_app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: ``/metrics`` from ``registry``, ``/healthz`` from ``health`` (200 or 503, one line
    of text), 404 for anything else."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result
        if path == "/healthz":
            try:
                healthy, reason = health()
            except Exception as error:  # a bug in the health check is an unhealthy answer, never a crash
                healthy, reason = False, f"health check failed: {type(error).__name__}"
            status = "200 OK" if healthy else "503 Service Unavailable"
            body = (("ok: " if healthy else "unhealthy: ") + reason + "\n").encode()
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [body]
        body = b"not found: try /metrics or /healthz\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _Handler(WSGIRequestHandler):
    """wsgiref's handler with a deadline for the whole connection, logging nothing to stderr."""

    timeout = CONNECTION_DEADLINE  # each read and write (socketserver sets it on the socket)

    def setup(self) -> None:
        # The whole exchange ends by its deadline, however slowly the client trickles: shut the socket down then.
        self._deadline = threading.Timer(CONNECTION_DEADLINE, self._cut_off)
        self._deadline.daemon = True
        self._deadline.start()
        super().setup()

    def _cut_off(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection (daemon threads), at most :data:`MAX_CONNECTIONS` at once."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed, never queued
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics_request_failed", client=str(client_address[0]))


class MetricsServer:
    """Serves ``registry`` and ``health`` on ``listen`` (``host:port``; port 0 picks a free one, see
    :attr:`address`). :meth:`start` raises OSError when the address cannot be bound."""

    def __init__(self, listen: str, registry: CollectorRegistry, health: Health) -> None:
        self.listen = listen
        self.app = make_app(registry, health)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) served, once started."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve in a thread. Raises OSError (address in use, not an address of this machine) or
        ValueError (``listen`` is not host:port)."""
        host, port = parse_listen(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        self._server = make_server(host, port, self.app, server_class=server_class, handler_class=_Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="sisdaemon-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (connections in progress end by their deadline)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
