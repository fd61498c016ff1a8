"""The loopback sink: the smallest stand-in for Canvas that an upload needs, which discards every body it is sent.

Every uploader of the benchmark (sisdaemon, requests, canvasapi, curl) talks to the same sink process, so that no
figure pays for the other side: it reads a request body into one reused buffer and throws it away. It answers the
calls a daemon makes around an upload (``users/self``, the account, one row of the index, the POST, the import's
show, which says ``imported`` at once unless a trace says otherwise) with Canvas's shapes (docs/canvas-api.md §2), and
echoes ``diff_row_count_threshold`` from the query string or the multipart form, as Canvas does.

    python -m benchmarks.sink [--port 0]      # prints "PORT <n>" once it listens, then serves until killed
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import http.server
import itertools
import json
import re
import sys
import threading
import time
import urllib.parse
from typing import Any

_BUFFER = 1 << 20
_TAG = re.compile(rb'name="diff_row_count_threshold"\r\n\r\n(\d+)\r\n')


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class _Imports:
    """The imports the sink has answered, by id: their created time and tag; every show says ``imported``."""

    def __init__(self, run_seconds: float) -> None:
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.created: dict[int, tuple[float, int | None]] = {}
        self.run_seconds = run_seconds
        self.calls: dict[str, int] = {}

    def new(self, tag: int | None) -> dict[str, Any]:
        with self.lock:
            import_id = next(self.ids)
            self.created[import_id] = (time.time(), tag)
        return self.show(import_id, fresh=True)

    def show(self, import_id: int, *, fresh: bool = False) -> dict[str, Any]:
        created, tag = self.created.get(import_id, (time.time(), None))
        elapsed = time.time() - created
        done = not fresh and elapsed >= self.run_seconds
        return {
            "id": import_id,
            "created_at": _iso(created),
            "started_at": None if fresh else _iso(created),
            "ended_at": _iso(created + self.run_seconds) if done else None,
            "updated_at": _iso(time.time()),
            "workflow_state": "imported" if done else ("created" if fresh else "importing"),
            "progress": 100 if done else min(99, int(100 * elapsed / max(self.run_seconds, 1e-9))),
            "data": {"import_type": "instructure_csv", "counts": {"users": 1}},
            "batch_mode": None,
            "batch_mode_term_id": None,
            "diff_row_count_threshold": tag,
        }


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _discard_body(self) -> bytes:
        """Read the body and throw it away; returns its first bytes (where a multipart form's fields are)."""
        first = b""
        buffer = self.server.buffer_for_thread()
        view = memoryview(buffer)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                remaining = size
                while remaining:
                    got = self.rfile.readinto(view[: min(remaining, _BUFFER)])
                    if not got:
                        return first
                    if len(first) < 65536:
                        first += bytes(view[: min(got, 65536)])
                    remaining -= got
                self.rfile.readline()
                if size == 0:
                    return first
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            got = self.rfile.readinto(view[: min(remaining, _BUFFER)])
            if not got:
                break
            if not first:
                first = bytes(view[: min(got, 65536)])
            remaining -= got
        return first

    def _answer(self, value: Any, status: int = 200) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Date", email.utils.formatdate(usegmt=True))
        self.end_headers()
        self.wfile.write(body)

    def _count(self, what: str) -> None:
        with self.server.imports.lock:
            self.server.imports.calls[what] = self.server.imports.calls.get(what, 0) + 1

    def do_POST(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        first = self._discard_body()
        self._count("POST")
        query = urllib.parse.parse_qs(parts.query)
        tag: int | None = None
        if "diff_row_count_threshold" in query:
            tag = int(query["diff_row_count_threshold"][0])
        elif (found := _TAG.search(first)) is not None:
            tag = int(found[1])
        self._answer(self.server.imports.new(tag))

    do_PUT = do_POST

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        self._count("GET")
        if path == "/sink/calls":
            with self.server.imports.lock:
                self._answer(dict(self.server.imports.calls))
            return
        if path.endswith("/users/self"):
            self._answer({"id": 1, "name": "benchmark"})
        elif re.fullmatch(r"/api/v1/accounts/[^/]+", path):
            self._answer({"id": 1, "name": "benchmark", "root_account_id": None})
        elif path.endswith("/sis_imports"):
            self._answer({"sis_imports": []})
        elif (found := re.fullmatch(r"/api/v1/accounts/[^/]+/sis_imports/(\d+)", path)) is not None:
            self._answer(self.server.imports.show(int(found[1])))
        else:
            self._answer({"errors": [{"message": "The specified resource does not exist."}]}, 404)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, run_seconds: float) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.imports = _Imports(run_seconds)
        self._local = threading.local()

    def buffer_for_thread(self) -> bytearray:
        buffer: bytearray | None = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = bytearray(_BUFFER)
        return buffer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sink", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--run-seconds", type=float, default=0.0, help="how long each import 'runs' (default 0)")
    args = parser.parse_args(argv)
    server = _Server(args.port, args.run_seconds)
    print(f"PORT {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
