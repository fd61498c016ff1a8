"""What the parts tell whoever watches the daemon (the metrics): an :class:`Observer` is passed in, never a global.

Each part that sees something worth counting (the intake a new file, the upload worker an upload, the Canvas client a
request, the gate a fault) calls its observer; :data:`QUIET` does nothing and is every part's default, so a part
built without one (tests, ``sisdaemon submit``) behaves as before. Calls come from any of the daemon's threads and
must return at once: an observer never does I/O and never raises.

Labels an observer receives are bounded sets (feed names from the config, Canvas's templated routes, fault kinds,
outcomes): never a file name, an id or a token.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    """The events a watcher of the daemon hears. Units: seconds and bytes."""

    def file_seen(self, feed: str) -> None:
        """A new file appeared in ``feed``'s drop folder (once per file while it is tracked)."""

    def job_event(self, event: str, feed: str, outcome: str | None, folder: str | None) -> None:
        """A job of ``feed`` was ``claimed``, ``submitted`` or ``filed`` (then with its ``outcome``, e.g.
        ``imported`` or ``rejected``, and ``folder``, ``done`` or ``failed``)."""

    def upload_ended(self, feed: str, size_bytes: int, seconds: float, result: str) -> None:
        """An upload (the POST of one file) ended after ``seconds``: ``result`` is ``created``, ``error`` or
        ``changed`` (the file changed before it was sent)."""

    def canvas_request(self, method: str, route: str, status: int | None, seconds: float) -> None:
        """One HTTP exchange with Canvas ended: ``route`` is templated (``accounts/:id/sis_imports/:id``);
        ``status`` is None when no answer came (refused, reset, past its deadline, cancelled)."""

    def throttle_wait(self, reason: str, seconds: float) -> None:
        """Calls to Canvas wait ``seconds`` for throttling: ``rate_limit_low`` (X-Rate-Limit-Remaining ran low) or
        ``throttled`` (Canvas refused a call as over its rate limit)."""

    def canvas_fault(self, kind: str) -> None:
        """A call to Canvas failed with a fault of ``kind`` (``transient``, ``throttled``, ``credential``, ...)."""

    def hook_ran(self, feed: str, hook: str, result: str) -> None:
        """A hook (``on_finished``, ``on_failed``) of ``feed`` ended: ``ok``, ``failed``, ``timed_out``,
        ``not_started`` or ``dropped`` (hooks.py)."""


class Quiet:
    """An observer that hears everything and does nothing (the default)."""

    def file_seen(self, feed: str) -> None:
        return None

    def job_event(self, event: str, feed: str, outcome: str | None, folder: str | None) -> None:
        return None

    def upload_ended(self, feed: str, size_bytes: int, seconds: float, result: str) -> None:
        return None

    def canvas_request(self, method: str, route: str, status: int | None, seconds: float) -> None:
        return None

    def throttle_wait(self, reason: str, seconds: float) -> None:
        return None

    def canvas_fault(self, kind: str) -> None:
        return None

    def hook_ran(self, feed: str, hook: str, result: str) -> None:
        return None


QUIET: Observer = Quiet()
"""The observer of a part built without one."""
