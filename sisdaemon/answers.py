"""What Canvas's answers mean: the kinds of fault, the one error type, classification of statuses and bodies,
which POST outcomes are known, and how Canvas echoes each import option (docs/canvas-api.md, docs/design.md
"Talking to Canvas"). Pure: no HTTP here (canvas.py sends the requests).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import requests

from sisdaemon.redaction import bounded, redact


class FaultKind(StrEnum):
    """What a failed call means for the daemon (docs/design.md "Errors")."""

    TRANSIENT = "transient"  # connection refused/reset, timeout, 5xx: back off and retry
    THROTTLED = "throttled"  # 429, or 403 "Rate Limit Exceeded": back off and retry
    CREDENTIAL = "credential"  # 401, 403 not authorized / SIS imports not enabled: re-read the token, retry slowly
    CONFIGURATION = "configuration"  # redirect, HTML, 400 bad option, 404 account/term: hold the feed
    NOT_FOUND = "not_found"  # 404 for one import (e.g. abort of a finished import): the caller decides
    FILE = "file"  # 413 from the create route: this file is too large for Canvas; failed/, the feed goes on


class CanvasError(Exception):
    """A call to Canvas that did not succeed.

    ``kind``: a :class:`FaultKind`; ``status``: the HTTP status or None; ``created_nothing``: for a POST, True when
    Canvas certainly created no import (docs/design.md "A POST's outcome is known"). ``reason_code``: for a fault of
    the file (:attr:`FaultKind.FILE`), the sidecar's machine word (``"too_large"`` for a 413), else None.

    This is the one place where a failed call becomes text: the message is passed through :func:`redact` (every
    token the process has read, any ``Bearer`` credential) and cut to :data:`MESSAGE_LIMIT` characters, so its
    ``str``, ``repr`` and ``args`` never hold a token, whatever the answer echoed.
    """

    def __init__(
        self,
        kind: FaultKind,
        message: str,
        *,
        status: int | None = None,
        created_nothing: bool = True,
        reason_code: str | None = None,
    ) -> None:
        super().__init__(bounded(redact(message)))
        self.kind = kind
        self.status = status
        self.created_nothing = created_nothing
        self.reason_code = reason_code


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is localhost or a loopback address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def canvas_message(body: str) -> str:
    """The human message in one of Canvas's error bodies (``errors`` list of dicts or strings, ``message``,
    ``error_message``, ``error``), or the start of the body; secrets redacted before any cut (:func:`redact`)."""
    body = redact(body)
    try:
        data = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:200]
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0]
            return str(first.get("message", first) if isinstance(first, dict) else first)
        for key in ("message", "error_message", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return " ".join(str(data).split())[:200]


def classify(status: int, content_type: str, body: str) -> tuple[FaultKind, str]:
    """The fault kind and a message for a non-success HTTP answer (pure; docs/canvas-api.md §4).

        403 is throttling only with "Rate Limit Exceeded" in its body; otherwise it is a permission refusal ("user not
        authorized", "SIS imports are not enabled"). 401 is always a credential fault. A 404 with Canvas's JSON body
    (``{"errors": [{"message": "The specified resource does not exist."}]}``) is NOT_FOUND, left to the caller; a 404 of
    another kind (an HTML page: a proxy, a wrong path in canvas.base_url) is a configuration fault, so that a broken
    proxy never reads as "Canvas lost this import".
        413 is a fault of the file sent (Canvas, or a proxy in front of it, refuses a body that large): FaultKind.FILE;
        it only comes from the create route, where it creates nothing (:func:`post_outcome_known`).
    """
    message = canvas_message(body)
    if status == 413:
        return FaultKind.FILE, f"HTTP 413: the file is too large for Canvas ({message or 'no body'})"
    if 300 <= status < 400:
        return FaultKind.CONFIGURATION, f"HTTP {status} redirect: check canvas.base_url ({message or 'no body'})"
    if status == 429 or (status == 403 and "Rate Limit Exceeded" in body):
        return FaultKind.THROTTLED, f"HTTP {status}: throttled by Canvas"
    if status in (401, 403):
        return FaultKind.CREDENTIAL, f"HTTP {status}: {message}"
    if status == 404:
        if "json" in content_type:
            return FaultKind.NOT_FOUND, f"HTTP 404: {message}"
        return (
            FaultKind.CONFIGURATION,
            f"HTTP 404 with {content_type or 'no content type'}, not Canvas's JSON: check canvas.base_url and any "
            f"proxy before Canvas ({message or 'no body'})",
        )
    if status >= 500:
        return FaultKind.TRANSIENT, f"HTTP {status}: {message}"
    if status == 200 and "json" not in content_type:
        return FaultKind.CONFIGURATION, f"HTTP 200 with {content_type or 'no content type'} instead of JSON"
    return FaultKind.CONFIGURATION, f"HTTP {status}: {message}"


def post_outcome_known(status: int, content_type: str, body: str) -> bool:
    """Whether a POST answer that is not a success means Canvas created nothing (docs/design.md crash protocol).

    Known: 400, 401, 403, 404 with Canvas's JSON body, 413, 429, a redirect, and a throttling 403. Anything else
    (5xx, a non-JSON answer, any other status) is unknown: the import may exist.
    """
    if 300 <= status < 400 or status in (413, 429):
        return True
    if status == 403 and "Rate Limit Exceeded" in body:
        return True
    if status in (400, 401, 403, 404):
        try:
            json.loads(body)
        except ValueError:
            return False
        return "json" in content_type
    return False


# Canvas echoes each option its own way (sis_batch.rb as_json; docs/canvas-api.md §2): the answer's key, and how a sent
# value compares with the echoed one. None as key: not echoed, cannot be checked.
def _bool_echo(sent: Any, echoed: Any) -> bool:
    return bool(sent) == bool(echoed)


def _same(sent: Any, echoed: Any) -> bool:
    return bool(sent == echoed or str(sent) == str(echoed))


def _term_echo(sent: Any, echoed: Any) -> bool:
    # A `sis_term_id:X` comes back as Canvas's numeric term id, which the daemon cannot know beforehand.
    text = str(sent)
    return echoed is not None if not text.isdigit() else str(echoed) == text


ECHO: Mapping[str, tuple[str | None, Callable[[Any, Any], bool]]] = {
    "batch_mode": ("batch_mode", _bool_echo),
    "batch_mode_term_id": ("batch_mode_term_id", _term_echo),
    "multi_term_batch_mode": ("multi_term_batch_mode", _bool_echo),
    "override_sis_stickiness": ("override_sis_stickiness", _bool_echo),
    "add_sis_stickiness": ("add_sis_stickiness", _bool_echo),
    "clear_sis_stickiness": ("clear_sis_stickiness", _bool_echo),
    "update_sis_id_if_login_claimed": ("update_sis_id_if_login_claimed", _bool_echo),
    "skip_deletes": ("skip_deletes", _bool_echo),
    "diffing_data_set_identifier": ("diffing_data_set_identifier", _same),
    "diffing_remaster_data_set": ("diffing_remaster", _bool_echo),
    "diffing_drop_status": ("diffing_drop_status", _same),
    "diffing_user_remove_status": ("diffing_user_remove_status", _same),
    "batch_mode_enrollment_drop_status": (None, _same),
    "change_threshold": ("change_threshold", _same),
    "diff_row_count_threshold": ("diff_row_count_threshold", _same),
}


def unapplied_options(options: Mapping[str, Any], sis_import: Mapping[str, Any]) -> list[str]:
    """Names of the sent ``options`` that Canvas's answer shows it did not apply (pure).

    An option whose key is missing from the answer (an older Canvas) cannot be checked and is not reported.
    """
    missing = []
    for name, sent in options.items():
        key, same = ECHO.get(name, (name, _same))
        if key is None or key not in sis_import:
            continue
        if not same(sent, sis_import[key]):
            missing.append(name)
    return missing


def parse_link_next(header: str | None) -> str | None:
    """The ``rel="next"`` URL of a Link header (Canvas joins links with "," and no space; docs/canvas-api.md §4)."""
    if not header:
        return None
    for link in requests.utils.parse_header_links(header):
        if link.get("rel") == "next":
            return link.get("url")
    return None
