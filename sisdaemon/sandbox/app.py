"""The sandbox's WSGI application: every request recorded, then throttled, faulted, authenticated and routed.

It answers the account, users/self, progress and file routes itself and hands the SIS import routes to
ImportRoutes (sisdaemon.sandbox.import_routes); the routes and the record are in sisdaemon.sandbox.routes.
Answers follow app/controllers/sis_imports_api_controller.rb; auth errors lib/api.rb and
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
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from sisdaemon.sandbox.control import control_answer, is_control_path
from sisdaemon.sandbox.faults import Fault, FaultPlan
from sisdaemon.sandbox.import_routes import ImportRoutes
from sisdaemon.sandbox.processor import Processor
from sisdaemon.sandbox.responses import (
    HTML_PAGE,
    INVALID_TOKEN,
    NOT_FOUND,
    UNAUTHENTICATED,
    UNAUTHORIZED,
    echo_in_json,
    echo_in_text,
    fault_body,
    file_chunks,
    json_response,
)
from sisdaemon.sandbox.routes import URL_MAP, RecordedRequest, Settings
from sisdaemon.sandbox.store import Store
from sisdaemon.sandbox.throttle import BODIES, Throttle
from sisdaemon.sandbox.uploads import SandboxRequest
from sisdaemon.sandbox.world import World

log = logging.getLogger("sisdaemon.sandbox")


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
        self.imports = ImportRoutes(store, world, processor, settings, stopping, self.upload_dir)

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
                return self._trickled(self._fault_response(request, fault), fault)
        response = self._dispatch(request, route, args, record)
        if fault is not None and fault.when == "after":
            if fault.delay:
                self._wait(fault.delay)
            if fault.replaces_answer:
                record.reset = fault.reset is not None
                return self._trickled(self._fault_response(request, fault), fault)
        return self._trickled(response, fault)

    def _trickled(self, response: Response, fault: Fault | None) -> Response:
        """``response`` sent one byte every ``fault.trickle`` seconds (its whole length announced), or as it is.
        The trickle ends early when the client goes away or the sandbox stops."""
        if fault is None or not fault.trickle:
            return response
        data = response.get_data()
        every = fault.trickle
        stopping = self.stopping

        def drip() -> Iterable[bytes]:
            for index in range(len(data)):
                yield data[index : index + 1]
                if index + 1 < len(data) and stopping.wait(every):
                    return

        slow = Response(drip(), status=response.status_code, headers=response.headers, direct_passthrough=True)
        slow.headers["Content-Length"] = str(len(data))
        return slow

    def _wait(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def _fault_response(self, request: Request, fault: Fault) -> Response:
        if fault.reset is not None:
            self._reset(request)
        status = fault.status if fault.status is not None else 200
        echo = request.headers.get("Authorization", "") if fault.echo_authorization else None
        if fault.html:
            body: str | bytes = fault.body if fault.body is not None else HTML_PAGE
            if echo is not None:
                body = echo_in_text(body, echo, html=True)
            response = Response(body, status=status, content_type=fault.content_type or "text/html; charset=utf-8")
        elif fault.body is not None:
            response = Response(
                fault.body if echo is None else echo_in_text(fault.body, echo, html=False),
                status=status,
                content_type=fault.content_type or "application/json; charset=utf-8",
            )
        elif 300 <= status < 400:
            page = b"" if echo is None else echo_in_text(b"<html><body>Moved</body></html>", echo, html=True)
            response = Response(page, status=status, content_type=fault.content_type or "text/html; charset=utf-8")
        else:
            response = json_response(
                status, fault_body(status) if echo is None else echo_in_json(fault_body(status), echo)
            )
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
        if route == "permissions":
            return self._permissions(request, user_id)
        if route == "term":
            if not self._allowed(user_id):
                return self._refuse(user_id)
            with self.store.lock:
                term = self.world.term_json(args["term_id"])
            return json_response(200, term) if term is not None else json_response(404, NOT_FOUND)
        if not self.world.is_root(account_id):
            self._drain(request)
            return json_response(400, {"errors": ["SIS imports can only be executed on root accounts"]})
        if not self._allowed(user_id):
            self._drain(request)
            return self._refuse(user_id)
        assert user_id is not None
        if route == "create" and user_id in self.settings.manage_sis_only_users:
            self._drain(request)
            return self._refuse(user_id)  # the POST needs import_sis; manage_sis alone is not enough
        handler: Callable[[Request, dict[str, Any], int, RecordedRequest], Response] = getattr(self.imports, route)
        return handler(request, args, user_id, record)

    def _permissions(self, request: Request, user_id: int | None) -> Response:
        """``GET /api/v1/accounts/:id/permissions?permissions[]=...``: ``{name: true | false}`` for each asked
        (accounts_controller.rb#permissions, ``rights_status``); an unknown name is false. Any user the account's
        admins include may ask; the sandbox answers every valid token."""
        if user_id is None:
            return self._refuse(None)
        names = request.args.getlist("permissions[]")
        granted = set() if user_id in self.settings.unauthorized_users else {"import_sis", "manage_sis"}
        if user_id in self.settings.manage_sis_only_users:
            granted = {"manage_sis"}
        return json_response(200, {name: name in granted for name in names})

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
