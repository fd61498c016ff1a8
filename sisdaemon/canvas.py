"""Canvas's SIS Import API client: streaming upload, status, listing, abort, errors CSV, throttling.

What answers mean (fault kinds, CanvasError, classification) is in answers.py and the secrets' redaction in
redaction.py; both are re-exported here for the callers.

Facts come from docs/canvas-api.md (sis_imports_api_controller.rb, sis_batch.rb, request_throttle.rb) and docs/design.md
"Talking to Canvas". Every call has a deadline for the whole call (connect, send, the full answer; deadline.py) and
can be cancelled from another thread; no redirect is followed on API calls; an HTML or non-JSON answer is never a
success; no request is ever retried here (the daemon's core decides).
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
import structlog
import urllib3.exceptions
import urllib3.filepost

from sisdaemon import deadline, effects
from sisdaemon.answers import (
    ECHO,
    CanvasError,
    FaultKind,
    canvas_message,
    classify,
    is_loopback,
    parse_link_next,
    post_outcome_known,
    unapplied_options,
)
from sisdaemon.exchange import ANSWER_LIMIT, NETWORK_ERRORS, Answer, failure, path_of
from sisdaemon.observer import QUIET, Observer
from sisdaemon.redaction import (
    LONGEST_SECRET_BYTES,
    MESSAGE_LIMIT,
    REDACTED,
    bounded,
    holds_secret,
    redact,
    remember_secret,
)
from sisdaemon.upload_body import UPLOAD_BLOCK, BodyDigest, UploadBody, multipart_frame

# Re-exported for the callers: what answers mean (answers.py), the secrets' redaction (redaction.py) and the
# upload's body (upload_body.py).
__all__ = [
    "ANSWER_LIMIT",
    "API",
    "ECHO",
    "MESSAGE_LIMIT",
    "RATE_LIMIT_LOW",
    "RATE_LIMIT_OUTFLOW",
    "REDACTED",
    "UPLOAD_BLOCK",
    "BodyDigest",
    "CanvasClient",
    "CanvasError",
    "FaultKind",
    "bounded",
    "canvas_message",
    "classify",
    "is_loopback",
    "parse_link_next",
    "post_outcome_known",
    "redact",
    "remember_secret",
    "unapplied_options",
]

log = structlog.get_logger("sisdaemon")

API = "/api/v1"
#: Rate-limit headroom below which calls slow down (Canvas's high-water mark is 600; request_throttle.rb).
RATE_LIMIT_LOW = 150.0
#: Canvas's bucket drains 10 units a second (request_throttle.rb defaults).
RATE_LIMIT_OUTFLOW = 10.0


class CanvasClient:
    """A client for one Canvas account's SIS imports.

    ``base_url``: the instance (no /api/v1). ``account``: "1", "self" or "sis_account_id:X" until
    :meth:`resolve_account` makes it numeric. ``token``: a callable returning the token, called again after a
    401 (the token file may have been replaced); each token it returns is redacted from every error text
    (:func:`remember_secret`). ``timeout``: seconds for the whole of each API call (connect, send, the full
    answer) and of each errors-CSV download; ``upload_timeout``: seconds for the whole of an upload (Canvas stores
    the file before answering). A call past its deadline raises a TRANSIENT CanvasError. ``verify``: what
    requests' ``verify=`` takes. ``wait``: how to pause (seconds) when the rate limit runs low, e.g. a stop
    event's ``wait``. ``observer`` hears each exchange (its templated route, status and seconds) and each pause for
    the rate limit (observer.py).

    :meth:`cancel`, from any thread, ends the calls in progress within about a second (for a stop).
    """

    def __init__(
        self,
        base_url: str,
        account: str,
        token: Callable[[], str],
        *,
        timeout: float = 60.0,
        upload_timeout: float = 1800.0,
        verify: bool | str = True,
        wait: Callable[[float], Any] | None = None,
        observer: Observer = QUIET,
    ) -> None:
        self.observer = observer
        self.base_url = base_url.rstrip("/")
        self.host = urllib.parse.urlsplit(self.base_url).hostname or ""
        self.account = account
        self._token_source = token
        self._token: str | None = None
        self.timeout = timeout
        self.upload_timeout = upload_timeout
        self.verify = verify
        self._cancel_event = threading.Event()
        self._wait = wait or self._cancel_event.wait
        self._session = deadline.new_session()
        self._lock = threading.RLock()  # re-entrant: cancel() may run in a signal handler on this thread
        self._calls: set[deadline.Call] = set()  # calls in progress, ended by cancel(); under _lock
        self._cancelled = False
        self._server_offset: float | None = None  # Canvas's clock minus ours, from the last Date header
        self.rate_limit_remaining: float | None = None
        self._slowing = False  # calls wait for the rate limit's headroom (said once when it starts and ends)

    # --- plumbing ------------------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """End every call in progress with a TRANSIENT CanvasError within about a second, and refuse new calls
        (at once, sending nothing) until :meth:`resume`. Safe from any thread and from a signal handler.

        A POST ended this way is of unknown outcome (``created_nothing=False``) once its connection was made.
        Cancelling stays in force so that a stop that races with the start of a call still stops it.
        """
        with self._lock:
            self._cancelled = True
            calls = list(self._calls)
        self._cancel_event.set()
        for call in calls:
            call.end(deadline.CANCELLED)

    def resume(self) -> None:
        """Allow calls again after :meth:`cancel`."""
        with self._lock:
            self._cancelled = False
        self._cancel_event.clear()

    def close(self) -> None:
        """:meth:`cancel` every call, then close the kept-alive connections. The client makes no calls after."""
        self.cancel()
        self._session.close()

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            self._token = self._token_source()
            remember_secret(self._token)  # redacted from every error text from now on, even after a rotation
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}

    def forget_token(self) -> None:
        """Read the token again before the next call (after a 401)."""
        self._token = None

    def server_now(self) -> float:
        """Canvas's current time (seconds since the epoch), from the last ``Date`` header; ours if none yet."""
        return time.time() + (self._server_offset or 0.0)

    def server_now_iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.server_now()))

    def _note(self, response: requests.Response) -> None:
        date = response.headers.get("Date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                self._server_offset = email.utils.parsedate_to_datetime(date).timestamp() - time.time()
        remaining = response.headers.get("X-Rate-Limit-Remaining")
        if remaining is not None:
            with contextlib.suppress(ValueError):
                self.rate_limit_remaining = float(remaining)

    def throttle_pause(self) -> float:
        """Seconds to pause before the next call: enough for the bucket to drain back above the low mark."""
        remaining = self.rate_limit_remaining
        if remaining is None or remaining >= RATE_LIMIT_LOW:
            return 0.0
        return min((RATE_LIMIT_LOW - max(remaining, 0.0)) / RATE_LIMIT_OUTFLOW, 15.0)

    def _say_headroom(self, pause: float) -> None:
        """One journal line when calls start slowing down for the rate limit (``pause``: seconds before this call)
        and one when they stop: not a line per call."""
        if pause and not self._slowing:
            self._slowing = True
            log.warning(
                "canvas_rate_limit_low",
                rate_limit_remaining=self.rate_limit_remaining,
                pause_seconds=round(pause, 1),
                hint=f"each call waits until Canvas's rate-limit headroom is back above {RATE_LIMIT_LOW:g}; the "
                "token's limit is shared with every other integration using it",
            )
        elif not pause and self._slowing:
            self._slowing = False
            log.info("canvas_rate_limit_recovered", rate_limit_remaining=self.rate_limit_remaining)

    def _url(self, path: str) -> str:
        return f"{self.base_url}{API}/{path.lstrip('/')}"

    @contextlib.contextmanager
    def _exchange(
        self,
        session: requests.Session,
        method: str,
        url: str,
        *,
        label: str,
        route: str,
        seconds: float,
        ends_at: float | None = None,
        read_timeout: float | None = None,
        **options: Any,
    ) -> Iterator[Answer]:
        """Send one request and yield its answer (headers read, body not yet), all within ``seconds`` (or by
        ``ends_at``, a ``time.monotonic()`` instant, when several exchanges share one budget) and ended early by
        :meth:`cancel`. ``label``: how error texts name the call; ``route``: how the observer names it (templated,
        never an id). ``options``: for ``session.request``.

        Raises CanvasError (TRANSIENT) when the call fails, passes its deadline or is cancelled, including while
        the body is read through the yielded :class:`Answer`.
        """
        call = deadline.Call(seconds, deadline=ends_at)
        with self._lock:
            if self._cancelled:
                raise CanvasError(FaultKind.TRANSIENT, f"{label}: cancelled (sisdaemon is stopping)")
            self._calls.add(call)
        response: requests.Response | None = None
        started = time.monotonic()
        try:
            with deadline.running(call):
                try:
                    response = session.request(
                        method,
                        url,
                        stream=True,
                        timeout=(min(self.timeout, seconds), read_timeout or self.timeout),
                        allow_redirects=False,
                        verify=self.verify,
                        **options,
                    )
                except NETWORK_ERRORS as error:
                    raise failure(call, label, error) from None
                if call.ended:
                    raise failure(call, label, None)
                yield Answer(response, call, label)
        finally:
            if response is not None:
                response.close()  # releases a fully read connection for reuse, closes any other
            with self._lock:
                self._calls.discard(call)
            self.observer.canvas_request(
                method, route, response.status_code if response is not None else None, time.monotonic() - started
            )

    def _request(self, method: str, url: str, *, route: str, params: Any = None) -> requests.Response:
        """One API call, its answer read whole (:data:`ANSWER_LIMIT`) within ``timeout``. ``route``: the call's
        templated path, for the observer. Raises CanvasError."""
        pause = self.throttle_pause()
        self._say_headroom(pause)
        if pause:
            self.observer.throttle_wait("rate_limit_low", pause)
            self._wait(pause)
        label = f"{method} {path_of(url)}"
        with self._exchange(
            self._session,
            method,
            url,
            label=label,
            route=route,
            seconds=self.timeout,
            params=params,
            headers=self._headers(),
        ) as answer:
            response = answer.read_whole()
        self._note(response)
        if response.status_code == 401:
            self.forget_token()
        return response

    def _json(
        self, method: str, url: str, *, route: str, params: Any = None, not_found: FaultKind = FaultKind.NOT_FOUND
    ) -> Any:
        return self._json_and_response(method, url, route=route, params=params, not_found=not_found)[0]

    def _json_and_response(
        self, method: str, url: str, *, route: str, params: Any = None, not_found: FaultKind = FaultKind.NOT_FOUND
    ) -> tuple[Any, requests.Response]:
        response = self._request(method, url, route=route, params=params)
        content_type = response.headers.get("Content-Type", "")
        if response.status_code == 200 and "json" in content_type:
            try:
                return response.json(), response
            except ValueError:
                pass
        kind, message = classify(response.status_code, content_type, redact(response.text)[:2000])
        if kind is FaultKind.NOT_FOUND:
            kind = not_found
        raise CanvasError(kind, f"{method} {path_of(url)}: {message}", status=response.status_code)

    # --- calls ---------------------------------------------------------------------------------------------------

    def get_self(self) -> dict[str, Any]:
        """``GET /api/v1/users/self``: the token's own user (``id``, ``name``, ...). Cheap; used before uploads."""
        result: dict[str, Any] = self._json("GET", self._url("users/self"), route="users/self")
        return result

    def check_access(self) -> dict[str, Any]:
        """Two cheap GETs that prove the token works and may import: ``users/self`` (the token's user, returned)
        and one row of ``accounts/:id/sis_imports`` (needs the import_sis or manage_sis permission, as the POST
        does). A refused token or a missing permission is thus found before any upload. Raises CanvasError."""
        me = self.get_self()
        self._json(
            "GET",
            self._url(f"accounts/{self.account}/sis_imports"),
            route="accounts/:id/sis_imports",
            params={"per_page": 1},
            not_found=FaultKind.CONFIGURATION,
        )
        return me

    def resolve_account(self) -> dict[str, Any]:
        """``GET /api/v1/accounts/:account``: the Account (``id``, ``uuid``, ``name``, ...); from then on calls use
        its numeric id. A 404 is a configuration fault. Raises CanvasError."""
        data: dict[str, Any] = self._json(
            "GET", self._url(f"accounts/{self.account}"), route="accounts/:id", not_found=FaultKind.CONFIGURATION
        )
        self.account = str(int(data["id"]))
        return data

    def permissions(self, names: Sequence[str]) -> dict[str, Any]:
        """``GET /api/v1/accounts/:account/permissions?permissions[]=...``: ``{name: true | false}`` for the
        token's user in the account (accounts_controller.rb#permissions; an unknown name is false). Raises
        CanvasError (a 404: CONFIGURATION)."""
        result: dict[str, Any] = self._json(
            "GET",
            self._url(f"accounts/{self.account}/permissions"),
            route="accounts/:id/permissions",
            params=[("permissions[]", name) for name in names],
            not_found=FaultKind.CONFIGURATION,
        )
        return result

    def get_term(self, term: str) -> dict[str, Any]:
        """``GET /api/v1/accounts/:account/terms/:term`` (a Canvas id or ``sis_term_id:X``; terms_api_controller.rb
        #show): the term. Raises CanvasError (NOT_FOUND when the account has no such term)."""
        path = f"accounts/{self.account}/terms/{urllib.parse.quote(term, safe=':')}"
        result: dict[str, Any] = self._json("GET", self._url(path), route="accounts/:id/terms/:id")
        return result

    def get_sis_import(self, import_id: int) -> dict[str, Any]:
        """``GET .../sis_imports/:id``: the SisImport. Raises CanvasError."""
        result: dict[str, Any] = self._json(
            "GET", self._url(f"accounts/{self.account}/sis_imports/{import_id}"), route="accounts/:id/sis_imports/:id"
        )
        return result

    def list_sis_imports(self, created_since: str | None = None) -> Iterator[dict[str, Any]]:
        """``GET .../sis_imports`` newest first, 100 a page, following ``Link: rel="next"`` on the same host."""
        params: dict[str, Any] | None = {"per_page": 100}
        if created_since:
            assert params is not None
            params["created_since"] = created_since
        url: str | None = self._url(f"accounts/{self.account}/sis_imports")
        while url:
            page, response = self._json_and_response("GET", url, route="accounts/:id/sis_imports", params=params)
            yield from page.get("sis_imports", []) if isinstance(page, dict) else []
            params = None  # the next link carries them
            next_url = parse_link_next(response.headers.get("Link"))
            url = next_url if next_url and urllib.parse.urlsplit(next_url).hostname == self.host else None

    def importing_sis_imports(self) -> list[dict[str, Any]]:
        """``GET .../sis_imports/importing``: the account's imports Canvas runs now (``importing`` or
        ``cleanup_batch``, whoever sent them; one at a time per account), unpaginated (docs/canvas-api.md §1, §5).
        Raises CanvasError."""
        page = self._json(
            "GET",
            self._url(f"accounts/{self.account}/sis_imports/importing"),
            route="accounts/:id/sis_imports/importing",
        )
        found = page.get("sis_imports", []) if isinstance(page, dict) else []
        return [item for item in found if isinstance(item, dict)]

    def abort_sis_import(self, import_id: int) -> dict[str, Any] | None:
        """``PUT .../sis_imports/:id/abort``: the reloaded SisImport, or None when Canvas answers 404 (it had
        already finished, or it does not exist; docs/canvas-api.md §1)."""
        try:
            result: dict[str, Any] = self._json(
                "PUT",
                self._url(f"accounts/{self.account}/sis_imports/{import_id}/abort"),
                route="accounts/:id/sis_imports/:id/abort",
            )
        except CanvasError as error:
            if error.kind is FaultKind.NOT_FOUND:
                return None
            raise
        return result

    def create_sis_import(
        self,
        fd: int,
        filename: str,
        fields: Sequence[tuple[str, str]],
        *,
        digest: BodyDigest | None = None,
    ) -> dict[str, Any]:
        """``POST .../sis_imports``: a streamed multipart upload of the open file ``fd``, read once from its start in
        :data:`UPLOAD_BLOCK` reads, with memory flat whatever its size.

        Each option is a form field and the file is the part ``attachment`` named ``filename``: Canvas keeps that
        name for the import's attachment (its admin UI, ``processing_errors`` and ``csv_attachments`` show it) and
        processes only .csv and .zip names; the name carries the job id, which the untagged lost-answer rules need.
        Canvas also takes the file as the whole body with ``extension=`` (PreventNonMultipartParse), but then names
        it ``sis_import.<extension>``; the framing costs nothing measurable (docs/performance.md), so multipart it
        is. ``fields``: the options; ``import_type`` is added.
        ``digest``: fed every byte of the file as it is sent (the sha256 without a second pass). A fresh connection
        is used, so a stale keep-alive socket never hides a sent request. The whole call (connect, the upload,
        Canvas's answer) ends by ``upload_timeout``. Returns the SisImport (HTTP 200).

        Raises CanvasError: ``created_nothing`` says whether the import certainly does not exist. A 413 (the file
        is too large for Canvas or its proxy) is :attr:`FaultKind.FILE` with ``reason_code="too_large"`` and
        ``created_nothing=True``: a fault of this file only (it goes to failed/; the feed goes on). A call past
        its deadline or cancelled is TRANSIENT, of unknown outcome once its connection was made; so is a file that
        ends before the size it had when the call began.
        """
        extension = filename.rsplit(".", 1)[-1]
        content_type = "application/zip" if extension == "zip" else "text/csv"
        options = [("import_type", "instructure_csv"), *fields]
        size = os.fstat(fd).st_size
        boundary = urllib3.filepost.choose_boundary()
        head, tail = multipart_frame(boundary, options, filename, content_type)
        payload = UploadBody(fd, size, head=head, tail=tail, digest=digest)
        headers = {**self._headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        url = self._url(f"accounts/{self.account}/sis_imports")
        with (
            contextlib.closing(payload),  # the digest's thread ends however the call does
            deadline.new_session() as session,
            self._exchange(
                session,
                "POST",
                url,
                label=f"POST {path_of(url)}",
                route="accounts/:id/sis_imports",
                seconds=self.upload_timeout,
                read_timeout=self.upload_timeout,
                data=payload,
                headers=headers,
            ) as answer,
        ):
            response = answer.read_whole()
        effects.happened("canvas.post_answered")
        self._note(response)
        content = response.headers.get("Content-Type", "")
        body = redact(response.text)[:4000]
        if response.status_code == 200 and "json" in content:
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("id"), int):
                return data
        if response.status_code == 401:
            self.forget_token()
        kind, message = classify(response.status_code, content, body)
        if kind is FaultKind.NOT_FOUND:
            kind = FaultKind.CONFIGURATION  # the account, or an unknown batch_mode_term_id (api_find)
        known = post_outcome_known(response.status_code, content, body)
        if not known:
            kind = FaultKind.TRANSIENT
        raise CanvasError(
            kind,
            f"POST {path_of(url)}: {message}",
            status=response.status_code,
            created_nothing=known,
            reason_code="too_large" if kind is FaultKind.FILE else None,
        )

    def download(self, url: str, target: Path, *, max_redirects: int = 3, temp_dir: Path | None = None) -> None:
        """Save a file Canvas serves (the errors CSV) to ``target`` via a temp file in ``temp_dir`` (default: its
        folder; the daemon gives the work folder, on the same mount).

        Follows up to ``max_redirects`` redirects, https only (http only to loopback), sending the token only to
        Canvas's own host. The whole download, redirects included, ends by ``timeout`` (errors CSVs are small; one
        that does not arrive in time is fetched again on a later poll); nothing is left behind on failure.
        Raises CanvasError: a 403 "Rate Limit Exceeded" is THROTTLED; a 401/403 from another host (the file store
        refusing its signed address, which expires) is TRANSIENT, not a credential fault; a call past its deadline
        or cancelled is TRANSIENT.
        """
        ends_at = time.monotonic() + self.timeout
        for _ in range(max_redirects + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname)):
                raise CanvasError(FaultKind.CONFIGURATION, "errors CSV: refusing a non-https download address")
            headers = self._headers() if parts.hostname == self.host else {}
            with self._exchange(
                self._session,
                "GET",
                url,
                label="errors CSV download",
                route="errors_csv" if parts.hostname == self.host else "errors_csv_file_store",
                seconds=self.timeout,
                ends_at=ends_at,
                headers=headers,
            ) as answer:
                response = answer.response
                if response.is_redirect:
                    url = urllib.parse.urljoin(url, response.headers.get("Location", ""))
                    continue
                if response.status_code != 200:
                    # The body decides between throttling and a refusal (a 403 "Rate Limit Exceeded" is throttling).
                    body = answer.read_start(4096).decode("utf-8", "replace")
                    kind, message = classify(response.status_code, response.headers.get("Content-Type", ""), body)
                    if kind is FaultKind.CREDENTIAL and parts.hostname != self.host:
                        # The file store (no token sent there) refused its own signed address: it may have expired;
                        # reading the import again gives a fresh one. Not a fault of our token.
                        kind, message = FaultKind.TRANSIENT, f"{message} from the file store"
                    raise CanvasError(kind, f"errors CSV download: {message}", status=response.status_code)
                content_type = response.headers.get("Content-Type", "")
                if "html" in content_type.lower():
                    # A login page or a proxy's answer, not Canvas's CSV: never saved (it may echo the request).
                    raise CanvasError(FaultKind.TRANSIENT, f"errors CSV download: got {content_type}, not a CSV file")
                # The temp file is named as state.write_atomic names its own, in ``temp_dir`` (the work folder) when
                # given, so that a kill mid-download leaves it where start-up cleans up, never in done/.
                if temp_dir is not None and not target.parent.is_dir():  # name the missing folder, not the temp
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(target.parent))
                temp = (temp_dir or target.parent) / f".{target.name}.{secrets.token_hex(4)}.tmp"
                try:
                    with open(temp, "wb") as handle:
                        tail = b""
                        for chunk in answer.chunks():
                            # What is saved must hold no credential, even split across two chunks.
                            if holds_secret(tail + chunk):
                                raise CanvasError(
                                    FaultKind.TRANSIENT,
                                    "errors CSV download: the answer echoes a credential; not saved",
                                )
                            handle.write(chunk)
                            tail = (tail + chunk)[-LONGEST_SECRET_BYTES:]
                        handle.flush()
                        os.fsync(handle.fileno())
                    os.replace(temp, target)
                except BaseException:
                    with contextlib.suppress(OSError):
                        temp.unlink()
                    raise
                effects.happened("errors_csv.saved")
                return
        raise CanvasError(FaultKind.CONFIGURATION, f"errors CSV download: more than {max_redirects} redirects")
