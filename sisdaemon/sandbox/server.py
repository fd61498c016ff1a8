"""`Sandbox`: the local Canvas SIS Import API, served on loopback by werkzeug in a thread."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sisdaemon.sandbox.app import SandboxApp
from sisdaemon.sandbox.faults import FaultPlan
from sisdaemon.sandbox.processor import Processor, Speed
from sisdaemon.sandbox.records import TERMINAL_STATES, WORKFLOW_STATES, User
from sisdaemon.sandbox.routes import RecordedRequest, Settings
from sisdaemon.sandbox.store import Store
from sisdaemon.sandbox.throttle import Throttle
from sisdaemon.sandbox.world import World

log = logging.getLogger("sisdaemon.sandbox")

# Default speed when not `fast`: rows a second, and how long an import stays `created` before it starts.
DEFAULT_ROWS_PER_SECOND = 200.0
SLOW_START_DELAY = 1.0
SLOW_ERRORS_DELAY = 1.0


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler, logging through `sisdaemon.sandbox` at debug level instead of stderr."""

    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug("%s %s", type, message % args if args else message)


class Sandbox:
    """A local stand-in for Canvas's SIS Import API (one root account), for tests, demos and people.

    `token`: the valid access token (user id 1, who may import); `other_token`: a token of another user (id 2)
    who may also import; `unauthorized_token`: a valid token (user id 3) lacking permission, answered with
    `forbidden_status` (401, or 403 as with Canvas's api_auth_error_updates) "user not authorized to perform
    that action". `manage_sis_only_token`: a valid token (user id 4) whose role has `manage_sis` but not
    `import_sis`: it may read imports, not create one. `account_id`: the root account's Canvas id. `terms`:
    sis_term_ids that exist as active terms (Canvas ids 2, 3, ... in order; 1 is the Default Term). `fast`: imports
    run without pauses (tests;
    an import finishes within about a second); otherwise at `rows_per_second` (default 200) after a 1 s wait
    in `created`. `store_delay`: seconds an upload stays `initializing` before the POST answers `created`.
    `throttle`: None (never refuse; cost headers only), "403" or "429" (Canvas's leaky bucket refuses in that
    style). `abort_requeue_seconds`: how long the queue pauses after an abort while others wait (Canvas: 600).
    `echo_diff_row_count_threshold`: False plays an older Canvas whose SisImport JSON has no such key.
    `ignore_options`: POST options this Canvas silently ignores (never applied; echoed as not set).

    Use as a context manager or with start()/stop(). `url` is "http://127.0.0.1:PORT" (no /api/v1).
    """

    def __init__(
        self,
        token: str = "T",
        account_id: int = 1,
        fast: bool = True,
        rows_per_second: float | None = None,
        terms: Iterable[str] | None = None,
        other_token: str | None = None,
        unauthorized_token: str | None = None,
        manage_sis_only_token: str | None = None,
        store_delay: float = 0.0,
        throttle: str | None = None,
        *,
        forbidden_status: int = 401,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        abort_requeue_seconds: float = 0.0,
        account_name: str = "Sandbox University",
        echo_diff_row_count_threshold: bool = True,
        ignore_options: Iterable[str] = (),
    ) -> None:
        if forbidden_status not in (401, 403):
            raise ValueError("forbidden_status must be 401 or 403")
        self.host = host
        self.port = port
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="sisdaemon-sandbox-")) if data_dir is None else data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir)
        self.store.echo_diff_row_count_threshold = echo_diff_row_count_threshold
        self.world = World(account_id, account_name, list(terms or []))
        tokens = {token: 1}
        self.store.users[1] = User(1, "Sandbox Admin", "sandbox.admin@example.edu")
        if other_token is not None:
            tokens[other_token] = 2
            self.store.users[2] = User(2, "Other Admin", "other.admin@example.edu")
        unauthorized: set[int] = set()
        if unauthorized_token is not None:
            tokens[unauthorized_token] = 3
            self.store.users[3] = User(3, "Sandbox Teacher", "sandbox.teacher@example.edu")
            unauthorized.add(3)
        manage_sis_only: set[int] = set()
        if manage_sis_only_token is not None:
            tokens[manage_sis_only_token] = 4
            self.store.users[4] = User(4, "SIS Manager", "sis.manager@example.edu")
            manage_sis_only.add(4)
        if fast:
            speed = Speed(None, 0.0, 0.05, abort_requeue_seconds)
        else:
            rate = rows_per_second or DEFAULT_ROWS_PER_SECOND
            speed = Speed(rate, SLOW_START_DELAY, SLOW_ERRORS_DELAY, abort_requeue_seconds)
        self.processor = Processor(self.store, self.world, speed)
        self.faults = FaultPlan()
        self.throttle = Throttle(throttle)
        self.settings = Settings(
            tokens, unauthorized, forbidden_status, store_delay, frozenset(ignore_options), manage_sis_only
        )
        self._stopping = threading.Event()
        self.app = SandboxApp(
            self.store, self.world, self.processor, self.settings, self.faults, self.throttle, self._stopping
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ---- life ------------------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind host:port (0 = any free port), serve in a thread, start the import worker; returns self."""
        server = make_server(self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler)
        self._server = server
        self.port = server.server_port
        self.store.base_url = self.url
        self.processor.start()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-http", daemon=False
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and the worker threads, wait for them, and remove the sandbox's own data folder."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.processor.stop()
        self._server = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, `http://HOST:PORT` (no /api/v1)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    # ---- reading back ----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy of the list; the records are live)."""
        with self.app._requests_lock:
            return list(self.app.requests)

    def imports(self) -> list[dict[str, Any]]:
        """The SisImport JSON of every import, any state, oldest first."""
        with self.store.lock:
            return [self.store.import_json(item) for item in self.store.ordered_imports()]

    def get_import(self, import_id: int) -> dict[str, Any]:
        """One import's SisImport JSON (KeyError if there is none)."""
        with self.store.lock:
            return self.store.import_json(self.store.imports[import_id])

    def wait_for(
        self,
        import_id: int,
        states: Iterable[str] = TERMINAL_STATES,
        timeout: float = 10.0,
        errors_attachment: bool = False,
    ) -> dict[str, Any]:
        """Wait until an import is in one of `states` (and, if asked, has its errors_attachment); returns its
        JSON. Raises TimeoutError after `timeout` seconds."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        with self.store.lock:
            while True:
                sis_import = self.store.imports.get(import_id)
                if (
                    sis_import is not None
                    and sis_import.workflow_state in wanted
                    and (not errors_attachment or sis_import.errors_attachment is not None)
                ):
                    return self.store.import_json(sis_import)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    state = sis_import.workflow_state if sis_import else "missing"
                    raise TimeoutError(f"import {import_id} is {state}, not one of {sorted(wanted)}")
                self.store.changed.wait(min(remaining, 0.1))

    # ---- steering ----------------------------------------------------------------------------------------

    def stick(self, import_id: int, state: str) -> None:
        """Keep an import in `state` ("initializing", "created", "importing" or "cleanup_batch") once it gets
        there, until unstick()."""
        if state not in WORKFLOW_STATES:
            raise ValueError(f"unknown workflow_state {state!r}")
        with self.store.lock:
            self.store.imports[import_id].stuck_in = state
            self.store.changed.notify_all()

    def unstick(self, import_id: int) -> None:
        """Let a stuck import go on."""
        with self.store.lock:
            self.store.imports[import_id].stuck_in = None
            self.store.changed.notify_all()

    def forget_import(self, import_id: int) -> None:
        """Lose an import as a Canvas refreshed from production or restored from a backup would: from now on
        ``GET .../sis_imports/:id`` and its abort answer 404, and the queue never runs it. KeyError if there is none."""
        with self.store.lock:
            sis_import = self.store.imports.pop(import_id)
            # A processor holding it lets go at its next look; whatever it still does to it is seen by no one.
            sis_import.stuck_in = None
            sis_import.workflow_state = "aborted"
            self.store.changed.notify_all()

    def stick_next(self, state: str) -> None:
        """stick() the next import created (e.g. "initializing": its POST does not answer until unstick)."""
        with self.store.lock:
            self.store.next_stick.append(state)

    def finish_as(self, import_id: int, state: str) -> None:
        """Make an import end in `state`: "imported", "imported_with_messages", "failed",
        "failed_with_messages" or "aborted"."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state!r} is not a terminal workflow_state")
        with self.store.lock:
            self.store.imports[import_id].finish_as = state

    def finish_next_as(self, state: str) -> None:
        """finish_as() for the next import created."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state!r} is not a terminal workflow_state")
        with self.store.lock:
            self.store.next_finish_as.append(state)
