"""The check of a file's own batch-mode term before its upload (``term_from_name`` or a params file).

Canvas looks a ``batch_mode_term_id`` up among the account's active terms and answers 404 when there is none
(docs/canvas-api.md §1), which for the feed's own term is a configuration fault (the feed is held). A term a file
brings itself is that file's fault: it is asked of Canvas first (``GET /api/v1/accounts/:id/terms/:term``, the call
``check-config --online`` makes, with the client's whole-call deadline), and an unknown one refuses the file
(``reason_code: unknown_term``) before anything is sent. A Canvas fault or throttling while asking is the gate's
(the file waits), never a refusal. Terms Canvas knows are kept for :data:`KNOWN_SECONDS` (one client, one account).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sisdaemon import file_options, jobs
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from sisdaemon.gate import Gate
from sisdaemon.jobs import Job
from sisdaemon.spool import submitted_name

#: How long a term Canvas showed is taken as known without asking again (seconds, the daemon's clock).
KNOWN_SECONDS = 300.0

_FROM = {file_options.FILE_NAME: "its file name (term_from_name)", file_options.PARAMS_FILE: "its params file"}


def unknown_term_reason(name: str, term: str, source: str, answer: str) -> str:
    """The sidecar's ``reason`` for a term Canvas does not know (pure)."""
    return (
        f"{name}: batch_mode_term_id {term} (from {_FROM.get(source, source)}) is not an active term of the Canvas "
        f"account ({answer}); nothing was sent"
    )


class TermCheck:
    """Asks Canvas whether a term exists, through ``gate`` (which records a fault and closes for its backoff)."""

    def __init__(self, gate: Gate, client: CanvasClient, *, known_seconds: float = KNOWN_SECONDS) -> None:
        self.gate = gate
        self.client = client
        self.known_seconds = known_seconds
        self._known: dict[str, float] = {}  # term -> when Canvas last showed it

    def answer(self, term: str, now: float) -> str | None:
        """None when ``term`` is an active term of the account; else why not (Canvas's 404, or the term shows
        ``workflow_state: deleted``). Raises CanvasError for any other answer (a fault: the caller waits)."""
        shown_at = self._known.get(term)
        if shown_at is not None and 0 <= now - shown_at < self.known_seconds:
            return None
        try:
            found: Mapping[str, Any] = self.gate.call(now, self.client.get_term, term)
        except CanvasError as error:
            if error.kind is FaultKind.NOT_FOUND:
                self._known.pop(term, None)
                return f"Canvas answered 404: {error}"
            raise
        if found.get("workflow_state") == "deleted":
            return "the term is deleted in Canvas"
        self._known[term] = now
        return None

    def refusal(self, job: Job, now: float) -> Job | None:
        """``job`` refused as ``unknown_term`` when its own term (file_options.per_file_term) is not an active term
        of the account; None when it has no term of its own or Canvas knows it. Raises CanvasError (a fault)."""
        own = file_options.per_file_term(job.file_options)
        if own is None:
            return None
        term, source = own
        why = self.answer(term, now)
        if why is None:
            return None
        reason = unknown_term_reason(jobs.display_name(submitted_name(job.name)), term, source, why)
        return jobs.reject(job, "unknown_term", reason, now=now)
