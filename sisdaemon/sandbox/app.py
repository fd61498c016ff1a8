"""The sandbox's WSGI application: Canvas's SIS Import API routes, auth, pagination, throttling and faults.

Routes and answers follow app/controllers/sis_imports_api_controller.rb; auth errors lib/api.rb and
application_controller.rb (docs/canvas-api.md §4); pagination lib/api.rb `paginate` / `build_links`.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sisdaemon.sandbox import options as opts
from sisdaemon.sandbox.control import control_answer, is_control_path
from sisdaemon.sandbox.faults import Fault, FaultPlan
from sisdaemon.sandbox.processor import Processor
from sisdaemon.sandbox.records import IMPORTING, NOT_COMPLETED, NOT_STARTED, WORKFLOW_STATES, SisImport, utc_now
from sisdaemon.sandbox.responses import (
    HTML_PAGE,
    INVALID_TOKEN,
    NOT_FOUND,
    UNAUTHENTICATED,
    UNAUTHORIZED,
    fault_body,
    file_chunks,
    json_response,
    link_header,
    page_params,
    parse_time,
    request_params,
)
from sisdaemon.sandbox.store import Store
from sisdaemon.sandbox.throttle import BODIES, Throttle
from sisdaemon.sandbox.uploads import SandboxRequest, receive_upload
from sisdaemon.sandbox.world import World

log = logging.getLogger("sisdaemon.sandbox")

ROUTES: tuple[str, ...] = (
    "account",
    "users_self",
    "create",
    "index",
    "show",
    "importing",
    "abort",
    "abort_all_pending",
    "restore_states",
    "errors",
    "progress",
    "file_download",
)

_A = "/api/v1/accounts/<account>"
URL_MAP = Map(
    [
        Rule("/api/v1/accounts/<account>", endpoint="account", methods=["GET"]),
        Rule("/api/v1/users/self", endpoint="users_self", methods=["GET"]),
        Rule(f"{_A}/sis_imports", endpoint="create", methods=["POST"]),
        Rule(f"{_A}/sis_imports.json", endpoint="create", methods=["POST"]),
        Rule(f"{_A}/sis_imports", endpoint="index", methods=["GET"]),
        Rule(f"{_A}/sis_imports/importing", endpoint="importing", methods=["GET"]),
        Rule(f"{_A}/sis_imports/abort_all_pending", endpoint="abort_all_pending", methods=["PUT"]),
        Rule(f"{_A}/sis_imports/<import_id>", endpoint="show", methods=["GET"]),
        Rule(f"{_A}/sis_imports/<import_id>/abort", endpoint="abort", methods=["PUT"]),
        Rule(f"{_A}/sis_imports/<import_id>/restore_states", endpoint="restore_states", methods=["PUT"]),
        Rule(f"{_A}/sis_imports/<import_id>/errors", endpoint="errors", methods=["GET"]),
        Rule(f"{_A}/sis_import_errors", endpoint="errors", methods=["GET"]),
        Rule("/api/v1/progress/<progress_id>", endpoint="progress", methods=["GET"]),
        Rule("/files/<file_id>/download", endpoint="file_download", methods=["GET"]),
        Rule("/sandbox-files/<file_uuid>/<name>", endpoint="file_download", methods=["GET"]),
    ],
    strict_slashes=False,
)


@dataclass
class RecordedRequest:
    """One request the sandbox received, as seen and answered.

    `query`: the query string (last value per key); `form`: non-file multipart fields; `attachment_filename`
    / `attachment_size` (bytes): the uploaded file (multipart part or raw body), if any; `status`: the
    status answered (None while in progress or when the connection was reset); `at`: arrival (UTC);
    `import_id`: the import a create made; `reset`: the connection was reset instead of answered.
    """

    method: str
    path: str
    route: str
    query: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    attachment_filename: str | None = None
    attachment_size: int | None = None
    status: int | None = None
    at: datetime = field(default_factory=utc_now)
    import_id: int | None = None
    reset: bool = False
    user_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as `GET /sandbox/requests` lists it (`at`: ISO 8601 UTC to the microsecond)."""
        return {
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "query": dict(self.query),
            "form": dict(self.form),
            "attachment_filename": self.attachment_filename,
            "attachment_size": self.attachment_size,
            "status": self.status,
            "at": self.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "import_id": self.import_id,
            "reset": self.reset,
            "user_id": self.user_id,
        }


@dataclass
class Settings:
    """How the sandbox answers: tokens (token -> user id, and which of them lack permission), the status of a
    permission refusal (401, or 403 as with Canvas's api_auth_error_updates), and `store_delay` seconds an
    upload stays `initializing` before the POST answers."""

    tokens: dict[str, int]
    unauthorized_users: set[int]
    forbidden_status: int = 401
    store_delay: float = 0.0
    ignored_options: frozenset[str] = frozenset()  # options this "Canvas" does not know: never applied


class _ResetConnection(ConnectionResetError):
    """Raised after the socket was reset: werkzeug treats it as a dropped connection."""


class SandboxApp:
    """The WSGI callable. Shares the Store, World and Processor with the Sandbox that made it."""

    def __init__(
        self,
        store: Store,
        world: World,
        processor: Processor,
        settings: Settings,
        faults: FaultPlan,
        throttle: Throttle,
        stopping: threading.Event,
    ) -> None:
        self.store = store
        self.world = world
        self.processor = processor
        self.settings = settings
        self.faults = faults
        self.throttle = throttle
        self.stopping = stopping
        self.requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self.upload_dir = store.data_dir / "uploads"
        self.upload_dir.mkdir(parents=True, exist_ok=True)

    # ---- WSGI --------------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = SandboxRequest(environ)
        request.upload_dir = self.upload_dir
        if is_control_path(request.path):
            # Sandbox-only: not recorded, not throttled, no faults.
            answer = control_answer(request, self._recorded_json, self._unstick)
            return answer(environ, start_response)
        adapter = URL_MAP.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
            route = str(endpoint)
        except HTTPException:
            route, args = "unknown", {}
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            route=route,
            query={key: value for key, value in request.args.items(multi=True)},
        )
        with self._requests_lock:
            self.requests.append(record)
        started = time.monotonic()
        response = self._respond(request, route, dict(args), record)
        self._cost_headers(request, route, record, response, started)
        record.status = response.status_code
        return response(environ, start_response)

    def _recorded_json(self) -> list[dict[str, Any]]:
        with self._requests_lock:
            records = list(self.requests)
        return [record.as_json() for record in records]

    def _unstick(self, import_id: int) -> bool:
        with self.store.lock:
            sis_import = self.store.imports.get(import_id)
            if sis_import is None:
                return False
            sis_import.stuck_in = None
            self.store.changed.notify_all()
            return True

    def _respond(self, request: Request, route: str, args: dict[str, Any], record: RecordedRequest) -> Response:
        token = self._token(request)
        # RequestThrottle is middleware in front of routing: unknown paths cost and are refused like the rest.
        if token is not None and not self.throttle.begin(token):
            self._drain(request)
            remaining = self.throttle.remaining(token)
            mode = self.throttle.mode or "403"
            response = Response(BODIES[mode], status=int(mode), content_type="text/plain; charset=utf-8")
            response.headers["X-Rate-Limit-Remaining"] = f"{remaining:.2f}"
            request.environ["sandbox.throttled"] = True
            return response
        fault = self.faults.take(route)
        request.environ["sandbox.fault"] = fault  # _create applies its stick / finish_as
        if fault is not None and fault.when == "before":
            if fault.delay:
                self._wait(fault.delay)
            if fault.replaces_answer:
                if fault.reset is None:
                    self._drain(request)
                record.reset = fault.reset is not None
                return self._fault_response(request, fault)
        response = self._dispatch(request, route, args, record)
        if fault is not None and fault.when == "after":
            if fault.delay:
                self._wait(fault.delay)
            if fault.replaces_answer:
                record.reset = fault.reset is not None
                return self._fault_response(request, fault)
        return response

    def _wait(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def _fault_response(self, request: Request, fault: Fault) -> Response:
        if fault.reset is not None:
            self._reset(request)
        status = fault.status if fault.status is not None else 200
        if fault.html:
            body: str | bytes = fault.body if fault.body is not None else HTML_PAGE
            response = Response(body, status=status, content_type=fault.content_type or "text/html; charset=utf-8")
        elif fault.body is not None:
            response = Response(
                fault.body, status=status, content_type=fault.content_type or "application/json; charset=utf-8"
            )
        elif 300 <= status < 400:
            response = Response(b"", status=status, content_type=fault.content_type or "text/html; charset=utf-8")
        else:
            response = json_response(status, fault_body(status))
            if status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="canvas-lms"'
        for key, value in fault.headers.items():
            response.headers[key] = value
        return response

    def _reset(self, request: Request) -> None:
        """Reset the TCP connection (RST, no answer): SO_LINGER (1, 0), then the socket's file descriptor is
        swapped for one end of a closed socketpair so werkzeug's own clean-up sees a dropped connection."""
        sock = request.environ.get("werkzeug.socket")
        if isinstance(sock, socket.socket) and sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            left, right = socket.socketpair()
            try:
                os.dup2(left.fileno(), sock.fileno())  # drops the last reference: the kernel sends RST
            finally:
                left.close()
                right.close()
        raise _ResetConnection("sandbox fault: connection reset")

    def _drain(self, request: Request) -> None:
        """Read and discard an unread request body, so the client sees the answer instead of a reset."""
        if request.environ.get("sandbox.body_read"):
            return
        request.environ["sandbox.body_read"] = True
        stream = request.stream
        while stream.read(1 << 16):
            pass

    def _cost_headers(
        self, request: Request, route: str, record: RecordedRequest, response: Response, started: float
    ) -> None:
        token = self._token(request)
        if token is None or request.environ.get("sandbox.throttled"):
            return
        body_bytes = request.content_length or 0
        cost = self.throttle.cost(route, body_bytes, time.monotonic() - started)
        remaining = self.throttle.end(token, cost)
        response.headers["X-Request-Cost"] = f"{cost}"
        response.headers["X-Rate-Limit-Remaining"] = f"{remaining:.2f}"

    # ---- auth and context --------------------------------------------------------------------------------

    @staticmethod
    def _token(request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return request.args.get("access_token")

    def _user(self, request: Request) -> tuple[int | None, Response | None]:
        token = self._token(request)
        if token is None:
            return None, None
        user_id = self.settings.tokens.get(token)
        if user_id is None:
            return None, json_response(401, INVALID_TOKEN, {"WWW-Authenticate": 'Bearer realm="canvas-lms"'})
        return user_id, None

    def _refuse(self, user_id: int | None) -> Response:
        if user_id is None:
            return json_response(401, UNAUTHENTICATED, {"WWW-Authenticate": 'Bearer realm="canvas-lms"'})
        return json_response(self.settings.forbidden_status, UNAUTHORIZED)

    def _allowed(self, user_id: int | None) -> bool:
        return user_id is not None and user_id not in self.settings.unauthorized_users

    # ---- dispatch ----------------------------------------------------------------------------------------

    def _dispatch(self, request: Request, route: str, args: dict[str, Any], record: RecordedRequest) -> Response:
        if route == "file_download":
            return self._file_download(request, args)
        user_id, error = self._user(request)
        record.user_id = user_id
        if error is not None:
            self._drain(request)
            return error
        if route == "unknown":
            return json_response(404, NOT_FOUND)
        if route == "users_self":
            if user_id is None:
                return self._refuse(None)
            with self.store.lock:
                user = self.store.users[user_id].as_json()
            user.update({"locale": None, "effective_locale": "en", "permissions": {}})
            return json_response(200, user)
        if route == "progress":
            if not self._allowed(user_id):
                return self._refuse(user_id)
            with self.store.lock:
                progress = (
                    self.store.progresses.get(int(args["progress_id"])) if args["progress_id"].isdigit() else None
                )
                if progress is None:
                    return json_response(404, NOT_FOUND)
                return json_response(200, progress.as_json(self.store.base_url))
        with self.store.lock:
            account_id = self.world.find_account(args["account"])
        if account_id is None:
            self._drain(request)
            return json_response(404, NOT_FOUND)
        if route == "account":
            if not self._allowed(user_id):
                return self._refuse(user_id)
            with self.store.lock:
                return json_response(200, self.world.account_json(account_id))
        if not self.world.is_root(account_id):
            self._drain(request)
            return json_response(400, {"errors": ["SIS imports can only be executed on root accounts"]})
        if not self._allowed(user_id):
            self._drain(request)
            return self._refuse(user_id)
        assert user_id is not None
        handler: Callable[[Request, dict[str, Any], int, RecordedRequest], Response] = getattr(self, f"_{route}")
        return handler(request, args, user_id, record)

    # ---- SIS import routes -------------------------------------------------------------------------------

    def _find(self, raw_id: str) -> SisImport | None:
        if not raw_id.isdigit():
            return None
        return self.store.imports.get(int(raw_id))

    def _show(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
        with self.store.lock:
            sis_import = self._find(args["import_id"])
            if sis_import is None:
                return json_response(404, NOT_FOUND)
            return json_response(200, self.store.import_json(sis_import))

    def _index(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
        since = parse_time(request.args.get("created_since"))
        before = parse_time(request.args.get("created_before"))
        states = [
            s
            for s in request.args.getlist("workflow_state[]") + request.args.getlist("workflow_state")
            if s in WORKFLOW_STATES
        ]
        with self.store.lock:
            items = list(reversed(self.store.ordered_imports()))
            if since is not None:
                items = [item for item in items if item.created_at > since]
            if before is not None:
                items = [item for item in items if item.created_at < before]
            if states:
                items = [item for item in items if item.workflow_state in states]
            page, per_page = page_params(request)
            chunk = items[(page - 1) * per_page : page * per_page]
            has_next = len(items) > page * per_page
            body = {"sis_imports": [self.store.import_json(item) for item in chunk]}
        return json_response(200, body, {"Link": link_header(request, page, per_page, has_next)})

    def _importing(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
        with self.store.lock:
            items = [item for item in reversed(self.store.ordered_imports()) if item.workflow_state in IMPORTING]
            return json_response(200, {"sis_imports": [self.store.import_json(item) for item in items]})

    def _abort(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
        with self.store.lock:
            sis_import = self._find(args["import_id"])
            if sis_import is None or sis_import.workflow_state not in NOT_COMPLETED:
                return json_response(404, NOT_FOUND)
            sis_import.workflow_state = "aborted"
            sis_import.touch()
            # abort_batch: the account's queue restarts 10 minutes later when others wait.
            if any(item.workflow_state == "created" for item in self.store.imports.values()):
                self.processor.paused_until = time.monotonic() + self.processor.speed.abort_requeue
            self.store.changed.notify_all()
            return json_response(200, self.store.import_json(sis_import))

    def _abort_all_pending(
        self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest
    ) -> Response:
        with self.store.lock:
            for sis_import in self.store.imports.values():
                if sis_import.workflow_state in NOT_STARTED:
                    sis_import.workflow_state = "aborted"
                    sis_import.progress = 100
            self.store.changed.notify_all()
        return json_response(200, {"aborted": True})

    def _restore_states(
        self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest
    ) -> Response:
        params = request_params(request)
        undelete_only = opts.value_to_boolean(params.get("undelete_only"))
        unconclude_only = opts.value_to_boolean(params.get("unconclude_only"))
        batch_mode = opts.value_to_boolean(params.get("batch_mode"))
        with self.store.lock:
            sis_import = self._find(args["import_id"])
            if sis_import is None:
                return json_response(404, NOT_FOUND)
            if undelete_only and unconclude_only:
                return json_response(400, "cannot set both undelete_only and unconclude_only")
            progress = self.store.new_progress(sis_import.id, user_id)
            sis_import.workflow_state = "restoring"
            sis_import.touch()
            self.processor.restore_later(
                sis_import,
                progress.id,
                undelete_only=undelete_only,
                unconclude_only=unconclude_only,
                batch_mode=batch_mode,
            )
            return json_response(200, progress.as_json(self.store.base_url))

    def _errors(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
        only_failures = opts.value_to_boolean(request.args.get("failure"))
        with self.store.lock:
            if "import_id" in args:
                sis_import = self._find(args["import_id"])
                if sis_import is None:
                    return json_response(404, NOT_FOUND)
                errors = list(sis_import.errors)
            else:
                errors = [error for item in self.store.ordered_imports() for error in item.errors]
            if only_failures:
                errors = [error for error in errors if error.failure]
            errors.reverse()  # created_at DESC
            page, per_page = page_params(request)
            chunk = errors[(page - 1) * per_page : page * per_page]
            has_next = len(errors) > page * per_page
            body = {"sis_import_errors": [error.as_json() for error in chunk]}
        return json_response(200, body, {"Link": link_header(request, page, per_page, has_next)})

    def _create(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
        received = receive_upload(request, self.store, self.upload_dir)
        record.form = dict(received.form)
        if received.stored is not None:
            record.attachment_filename = received.stored.filename
            record.attachment_size = received.stored.size
        if received.refusal is not None:
            return json_response(received.refusal.status, received.refusal.body)
        upload, params = received.stored, received.params
        assert upload is not None
        if self.settings.ignored_options:  # an older Canvas that does not know an option ignores it silently
            params = {key: value for key, value in params.items() if key not in self.settings.ignored_options}
        with self.store.lock:
            checked = opts.check_before_create(params, self.world.find_term)
        if isinstance(checked, opts.Refusal):
            return json_response(checked.status, checked.body)
        with self.store.lock:
            sis_import = SisImport(
                id=self.store.new_import_id(), account_id=self.world.root_account_id, user_id=user_id, upload=upload
            )
            if self.store.next_stick:
                sis_import.stuck_in = self.store.next_stick.pop(0)
            if self.store.next_finish_as:
                sis_import.finish_as = self.store.next_finish_as.pop(0)
            fault = request.environ.get("sandbox.fault")
            if isinstance(fault, Fault):
                sis_import.stuck_in = fault.stick or sis_import.stuck_in
                sis_import.finish_as = fault.finish_as or sis_import.finish_as
            self.store.add_import(sis_import)
            record.import_id = sis_import.id
        # Canvas stores the upload (to S3) while the batch is `initializing`.
        if self.settings.store_delay:
            self._wait(self.settings.store_delay)
        with self.store.lock:
            while sis_import.stuck_in == "initializing" and not self.stopping.is_set():
                self.store.changed.wait(0.1)
            refusal = opts.apply_options(sis_import, params, checked)
            if refusal is not None:
                return json_response(refusal.status, refusal.body)
            sis_import.workflow_state = "created"
            sis_import.queued_at = utc_now()
            sis_import.touch(sis_import.queued_at)
            self.store.changed.notify_all()
            return json_response(200, self.store.import_json(sis_import))

    # ---- files -------------------------------------------------------------------------------------------

    def _file_download(self, request: Request, args: dict[str, Any]) -> Response:
        """`/files/:id/download?verifier=` answers a redirect to the file's own path (as Canvas redirects to
        its file store); that path serves the bytes."""
        with self.store.lock:
            if "file_uuid" in args:
                stored = next((f for f in self.store.files.values() if f.uuid == args["file_uuid"]), None)
                if stored is None or stored.display_name != args["name"]:
                    return json_response(404, NOT_FOUND)
                return Response(
                    file_chunks(stored.path),
                    status=200,
                    content_type="text/csv; charset=utf-8"
                    if stored.display_name.lower().endswith(".csv")
                    else "application/octet-stream",
                    headers={"Content-Length": str(stored.path.stat().st_size)},
                    direct_passthrough=True,
                )
            stored = self.store.files.get(int(args["file_id"])) if args["file_id"].isdigit() else None
            if stored is None:
                return json_response(404, NOT_FOUND)
            user_id, error = self._user(request)
            if request.args.get("verifier") != stored.uuid and not self._allowed(user_id):
                return error or self._refuse(user_id)
            location = f"{self.store.base_url}/sandbox-files/{stored.uuid}/{stored.display_name}"
            return Response(b"", status=302, headers={"Location": location}, content_type="text/html; charset=utf-8")
