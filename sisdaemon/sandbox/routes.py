"""The sandbox's API surface: its routes by name (ROUTES, the names faults match), the URL map that picks one
for a request, what the sandbox records of each request, and the Settings that shape its answers.

Routes follow app/controllers/sis_imports_api_controller.rb.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from werkzeug.routing import Map, Rule

from sisdaemon.sandbox.records import utc_now

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
    "permissions",
    "term",
)

_A = "/api/v1/accounts/<account>"
URL_MAP = Map(
    [
        Rule("/api/v1/accounts/<account>", endpoint="account", methods=["GET"]),
        Rule(f"{_A}/permissions", endpoint="permissions", methods=["GET"]),
        Rule(f"{_A}/terms/<term_id>", endpoint="term", methods=["GET"]),
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
    upload stays `initializing` before the POST answers; `manage_sis_only_users` have manage_sis but not import_sis."""

    tokens: dict[str, int]
    unauthorized_users: set[int]
    forbidden_status: int = 401
    store_delay: float = 0.0
    ignored_options: frozenset[str] = frozenset()  # options this "Canvas" does not know: never applied
    manage_sis_only_users: set[int] = field(default_factory=set)  # manage_sis without import_sis: may not POST
