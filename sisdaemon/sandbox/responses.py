"""Canvas's answer bodies and the small pieces every route shares: JSON answers, pagination (lib/api.rb
`paginate` / `build_links`), time parsing (CanvasTime.try_parse) and file streaming."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from sisdaemon.sandbox import options as opts

NOT_FOUND = opts.NOT_FOUND_BODY
INVALID_TOKEN = {"errors": [{"message": "Invalid access token."}]}
UNAUTHENTICATED = {"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}
UNAUTHORIZED = {"status": "unauthorized", "errors": [{"message": "user not authorized to perform that action"}]}
HTML_PAGE = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Log In to Canvas</title></head>'
    "<body><h1>Canvas LMS</h1><p>This page is an HTML answer planted by the sisdaemon sandbox.</p>"
    "</body></html>\n"
)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer as Canvas sends it (`application/json; charset=utf-8`)."""
    response = Response(json.dumps(body), status=status, content_type="application/json; charset=utf-8")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def fault_body(status: int) -> Any:
    """The Canvas-like JSON body of a planned fault with this status."""
    if status == 401:
        return INVALID_TOKEN
    if status == 403:
        return UNAUTHORIZED
    if status == 404:
        return NOT_FOUND
    if status >= 500:
        return {
            "errors": [{"message": "An error occurred.", "error_code": "internal_server_error"}],
            "error_report_id": 1,
        }
    return {"errors": [{"message": f"sandbox fault {status}"}]}


def _credential(authorization: str) -> str:
    """The credential in an Authorization header value (``Bearer T`` -> ``T``)."""
    scheme, _, rest = authorization.partition(" ")
    return rest.strip() if rest else scheme


def echo_in_json(body: Any, authorization: str) -> Any:
    """A fault's JSON body carrying the request's Authorization header back (a proxy or error page that echoes the
    request): in its first error message, as the header line and as the bare credential, and in an ``echo``
    object."""
    credential = _credential(authorization)
    line = f"Authorization: {authorization}"
    echoed = dict(body) if isinstance(body, dict) else {"errors": [{"message": str(body)}]}
    errors = echoed.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = dict(errors[0])
        first["message"] = f"{first.get('message', '')} (request had {line}; token={credential})"
        echoed["errors"] = [first, *errors[1:]]
    else:
        echoed["errors"] = [{"message": f"request had {line}; token={credential}"}]
    echoed["echo"] = {"authorization": authorization, "token": credential}
    return echoed


def echo_in_text(body: str | bytes, authorization: str, *, html: bool) -> str | bytes:
    """A text or HTML body with the request's Authorization header and bare credential written into it."""
    credential = _credential(authorization)
    if html:
        extra = f"<pre>Authorization: {authorization}</pre><p>token={credential}</p>"
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        text = text.replace("</body>", f"{extra}</body>") if "</body>" in text else text + extra
    else:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        text = f"{text}\nAuthorization: {authorization}\ntoken={credential}\n"
    return text.encode("utf-8") if isinstance(body, bytes) else text


def file_chunks(path: Path) -> Iterable[bytes]:
    """A file's bytes in 64 KiB pieces (downloads stream)."""
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 16):
            yield chunk


def request_params(request: Request) -> dict[str, str]:
    """Query and form fields as one dict (Rails' params; the form wins)."""
    params = {k: v for k, v in request.args.items(multi=True)}
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        params.update({k: v for k, v in request.form.items(multi=True)})
    return params


def parse_time(value: str | None) -> datetime | None:
    """CanvasTime.try_parse: an ISO 8601 time (no zone = UTC); anything unparsable is None (filter ignored)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace(" ", "+") if "T" in value else value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def page_params(request: Request) -> tuple[int, int]:
    """lib/api.rb: per_page default 10, at most 100; a non-positive value is the default; page from 1."""
    per_page = opts.ruby_to_i(request.args.get("per_page"))
    per_page = 10 if per_page <= 0 else min(per_page, 100)
    page = opts.ruby_to_i(request.args.get("page"))
    return (page if page > 0 else 1), per_page


def link_header(request: Request, page: int, per_page: int, has_next: bool) -> str:
    """`<url>; rel="current",<url>; rel="next",<url>; rel="prev",<url>; rel="first"` (no `last` when the
    total is not counted), each URL absolute with the original query less page/per_page/access_token."""
    kept = [
        (k, v) for k, v in request.args.items(multi=True) if k not in {"page", "per_page", "access_token", "api_key"}
    ]
    base = request.base_url

    def url(number: int) -> str:
        return f"{base}?{urlencode([*kept, ('page', str(number)), ('per_page', str(per_page))])}"

    links = [f'<{url(page)}>; rel="current"']
    if has_next:
        links.append(f'<{url(page + 1)}>; rel="next"')
    if page > 1:
        links.append(f'<{url(page - 1)}>; rel="prev"')
    links.append(f'<{url(1)}>; rel="first"')
    return ",".join(links)
