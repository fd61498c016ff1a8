"""Whole-call deadlines and cancellation for requests: no call to Canvas outlives its deadline or a stop.

requests' ``timeout=`` bounds each socket operation, not a call: a server that sends one byte every few seconds
holds a call for ever (issue 7, defect 1). Here every call is a :class:`Call` with a monotonic deadline. The
connections requests uses are urllib3's, made by a pool class that records each connection the calling thread
sends on (:func:`new_session` mounts it); at the deadline one thread that watches every call, or :meth:`Call.end`
from any other thread, shuts those sockets down, which ends a blocked read or send at once with an error. The HTTP
itself stays requests' and urllib3's.

Limits: a connection attempt still in ``connect()`` cannot be shut down (it has no socket yet); it is bounded by
the connect timeout, and the call ends as soon as it connects, before anything is sent.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection

#: Why a call ended before its answer: its deadline passed, or :meth:`Call.end` was asked to stop it.
DEADLINE = "deadline"
CANCELLED = "cancelled"

_current = threading.local()  # the Call the calling thread is making, seen by the connections it sends on


class Call:
    """One call in progress. ``seconds``: its whole budget; ``deadline``: when it ends (``time.monotonic()``).

    ``ended``: None, :data:`DEADLINE` or :data:`CANCELLED`. ``may_have_sent``: whether a connection was made for it,
    so that the request may have reached the server (for a POST: its outcome is then unknown).
    """

    def __init__(self, seconds: float, *, deadline: float | None = None) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds if deadline is None else deadline
        self.ended: str | None = None
        self.may_have_sent = False
        self._connections: list[urllib3.connection.HTTPConnection] = []
        # The sockets themselves: a connection lets go of its socket once an answer says "Connection: close",
        # while the answer's body is still read from it.
        self._sockets: list[socket.socket] = []
        self._lock = threading.RLock()  # re-entrant: end() may run in a signal handler on the calling thread

    def attach(self, connection: urllib3.connection.HTTPConnection, sock: socket.socket | None) -> None:
        """Record a connection this call uses and its socket (``sock``: None while it is not connected; once it
        is, bytes may go out next).

        Raises ConnectionAbortedError when the call has ended (nothing more is sent for it).
        """
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)
            if sock is not None and all(sock is not known for known in self._sockets):
                self._sockets.append(sock)
            ended = self.ended
            if sock is not None and ended is None:
                self.may_have_sent = True
        if ended is not None:
            raise ConnectionAbortedError(errno.ECONNABORTED, f"call ended ({ended})")

    def end(self, why: str) -> None:
        """End the call from any thread or a signal handler: shut down its sockets, so a blocked read or send fails.
        ``why``: :data:`DEADLINE` or :data:`CANCELLED` (the first reason given is kept)."""
        with self._lock:
            if self.ended is None:
                self.ended = why
            sockets = [*self._sockets, *(connection.sock for connection in self._connections)]
        for sock in sockets:
            if sock is not None:
                with contextlib.suppress(OSError):
                    # The plain socket's shutdown, also for a TLS socket (whose own shutdown would unset its state
                    # under the reading thread's feet): the blocked SSL read then sees the end of the stream.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watch:
    """One thread that ends every running :class:`Call` whose deadline passes (a thread per call, as
    ``threading.Timer`` makes, cost a thread's start and join per Canvas call: issue 9). Started at the first call;
    waits without a timeout while no call runs."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Call]] = []  # (deadline, token, call), soonest first
        self._running: set[int] = set()  # tokens of the calls whose ``with`` body has not ended
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, call: Call) -> int:
        """Watch ``call`` until :meth:`remove`; returns its token."""
        with self._changed:
            token = next(self._tokens)
            heapq.heappush(self._heap, (call.deadline, token, call))
            self._running.add(token)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="canvas-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == token:
                self._changed.notify()  # sooner than what the thread waits for
        return token

    def remove(self, token: int) -> None:
        """Stop watching a call. Once this returns, its :meth:`Call.end` for the deadline has run or never will
        (the thread ends calls while holding the lock taken here)."""
        with self._changed:
            self._running.discard(token)
            if len(self._heap) > 2 * len(self._running) + 64:  # calls that ended early, still in the heap
                self._heap = [entry for entry in self._heap if entry[1] in self._running]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._changed:
            while True:
                while self._heap and self._heap[0][1] not in self._running:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._changed.wait()
                    continue
                deadline, token, call = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._changed.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._running.discard(token)
                call.end(DEADLINE)  # quick: shuts sockets down, never waits on this lock


_watch = _Watch()


@contextlib.contextmanager
def running(call: Call) -> Iterator[Call]:
    """Make ``call`` the calling thread's current call for the ``with`` body, ended at its deadline (by one
    watching thread shared by every call)."""
    previous = getattr(_current, "call", None)
    _current.call = call
    token = _watch.add(call)
    try:
        yield call
    finally:
        _watch.remove(token)
        _current.call = previous


def _attach(connection: urllib3.connection.HTTPConnection) -> None:
    call: Call | None = getattr(_current, "call", None)
    if call is not None:
        call.attach(connection, connection.sock)


class _TrackedHTTPConnection(urllib3.connection.HTTPConnection):
    """urllib3's connection, recorded with the calling thread's :class:`Call` before it connects or sends."""

    def connect(self) -> None:
        _attach(self)
        super().connect()
        _attach(self)  # a call ended while connecting stops here, before anything is sent

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)  # a kept-alive connection (its socket recorded), or a new one about to connect
        super().request(*args, **kwargs)


class _TrackedHTTPSConnection(urllib3.connection.HTTPSConnection):
    """:class:`_TrackedHTTPConnection` for https."""

    def connect(self) -> None:
        _attach(self)
        super().connect()
        _attach(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _TrackedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter (no retries), with pools whose connections are recorded with the current call."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


def new_session() -> requests.Session:
    """A requests session whose calls made inside :func:`running` obey their :class:`Call`; it reads no proxy or
    .netrc settings from the environment (``trust_env`` off: no credentials or detours added behind our back)."""
    session = requests.Session()
    session.trust_env = False
    adapter = _TrackedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
