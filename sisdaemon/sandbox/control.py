"""Sandbox-only routes under `/sandbox/`, for tests that drive a sandbox running as a separate process.

They are not Canvas's: no token is needed, and they are neither recorded, throttled nor subject to faults.

    GET /sandbox/requests[?route=NAME]    {"requests": [...]}: every request recorded so far, oldest first
    PUT /sandbox/imports/:id/unstick      {"id": ID, "stuck_in": null}: let a stuck import go on
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sisdaemon.sandbox.responses import NOT_FOUND, json_response

PREFIX = "/sandbox/"

CONTROL_MAP = Map(
    [
        Rule("/sandbox/requests", endpoint="requests", methods=["GET"]),
        Rule("/sandbox/imports/<int:import_id>/unstick", endpoint="unstick", methods=["PUT", "POST"]),
    ],
    strict_slashes=False,
)


def is_control_path(path: str) -> bool:
    """True for the sandbox-only paths (`/sandbox/...`; `/sandbox-files/` is a Canvas-like file path)."""
    return path.startswith(PREFIX)


def control_answer(
    request: Request,
    recorded: Callable[[], list[dict[str, Any]]],
    unstick: Callable[[int], bool],
) -> Response:
    """Answer a sandbox-only request. `recorded()` gives the recorded requests as JSON objects; `unstick(id)`
    lets an import go on and says whether it exists."""
    adapter = CONTROL_MAP.bind_to_environ(request.environ)
    try:
        endpoint, args = adapter.match()
    except HTTPException:
        return json_response(404, NOT_FOUND)
    if endpoint == "requests":
        items = recorded()
        route = request.args.get("route")
        if route:
            items = [item for item in items if item["route"] == route]
        return json_response(200, {"requests": items})
    import_id = int(args["import_id"])
    if not unstick(import_id):
        return json_response(404, NOT_FOUND)
    return json_response(200, {"id": import_id, "stuck_in": None})
