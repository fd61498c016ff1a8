"""The sandbox's SIS import routes (sis_imports_api_controller.rb): create, index, show, importing, abort,
abort_all_pending, restore_states and errors, each answered from the Store and the World.

SandboxApp calls them once a request has passed auth, throttling and faults and names the root account; each
takes the request, the URL's arguments, the user's id and the request's record.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from werkzeug.wrappers import Request, Response

from sisdaemon.sandbox import options as opts
from sisdaemon.sandbox.faults import Fault
from sisdaemon.sandbox.processor import Processor
from sisdaemon.sandbox.records import IMPORTING, NOT_COMPLETED, NOT_STARTED, WORKFLOW_STATES, SisImport, utc_now
from sisdaemon.sandbox.responses import NOT_FOUND, json_response, link_header, page_params, parse_time, request_params
from sisdaemon.sandbox.routes import RecordedRequest, Settings
from sisdaemon.sandbox.store import Store
from sisdaemon.sandbox.uploads import receive_upload
from sisdaemon.sandbox.world import World


class ImportRoutes:
    """The SIS import route handlers, by route name. Shares the Store, World and Processor with the app."""

    def __init__(
        self,
        store: Store,
        world: World,
        processor: Processor,
        settings: Settings,
        stopping: threading.Event,
        upload_dir: Path,
    ) -> None:
        self.store = store
        self.world = world
        self.processor = processor
        self.settings = settings
        self.stopping = stopping
        self.upload_dir = upload_dir

    def _find(self, raw_id: str) -> SisImport | None:
        if not raw_id.isdigit():
            return None
        return self.store.imports.get(int(raw_id))

    def show(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
        with self.store.lock:
            sis_import = self._find(args["import_id"])
            if sis_import is None:
                return json_response(404, NOT_FOUND)
            return json_response(200, self.store.import_json(sis_import))

    def index(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
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

    def importing(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
        with self.store.lock:
            items = [item for item in reversed(self.store.ordered_imports()) if item.workflow_state in IMPORTING]
            return json_response(200, {"sis_imports": [self.store.import_json(item) for item in items]})

    def abort(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
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

    def abort_all_pending(
        self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest
    ) -> Response:
        with self.store.lock:
            for sis_import in self.store.imports.values():
                if sis_import.workflow_state in NOT_STARTED:
                    sis_import.workflow_state = "aborted"
                    sis_import.progress = 100
            self.store.changed.notify_all()
        return json_response(200, {"aborted": True})

    def restore_states(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
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
            # The batch stays as it is until the restore job runs (restore_states_for_batch sets `restoring`).
            self.processor.restore_later(
                sis_import,
                progress.id,
                undelete_only=undelete_only,
                unconclude_only=unconclude_only,
                batch_mode=batch_mode,
            )
            return json_response(200, progress.as_json(self.store.base_url))

    def errors(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
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

    def create(self, request: Request, args: dict[str, Any], user_id: int, record: RecordedRequest) -> Response:
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
            self.stopping.wait(self.settings.store_delay)
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
