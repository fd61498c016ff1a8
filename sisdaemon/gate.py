"""The gate in front of Canvas: faults and their backoff, throttling, a verified token, one upload per account.

Every call to Canvas that the daemon makes goes through :meth:`Gate.call`, which records a fault (and closes the gate
for a backoff computed by the pure policy in polling.py) or a recovery. :meth:`Gate.ready` says whether files may be
claimed and sent now; :meth:`Gate.may_upload` applies the one-POST-at-a-time rule of the crash protocol.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from sisdaemon import polling
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from sisdaemon.config import PollingSettings
from sisdaemon.ledger import Ledger
from sisdaemon.observer import QUIET, Observer

log = structlog.get_logger("sisdaemon")

T = TypeVar("T")


@dataclass
class Health:
    """The last fault of talking to Canvas, and when the next call may be made (seconds since the epoch)."""

    kind: FaultKind | None = None
    message: str = ""
    since: float | None = None
    count: int = 0
    retry_at: float = 0.0

    def as_dict(self) -> dict[str, Any] | None:
        """``{"kind", "message", "since", "count"}`` for the state file and ``status``; None when healthy."""
        if self.kind is None:
            return None
        return {"kind": str(self.kind), "message": self.message, "since": self.since, "count": self.count}


class Gate:
    """Health and backoff in front of ``client``.

    ``ledger`` records the current fault for ``status``; ``policy`` gives the backoff's timing; ``notify`` sends a
    systemd STATUS line (sd_notify); ``jitter`` returns a number in [0, 1) (tests may fix it);
    ``on_verification_wanted`` wakes whoever checks the token (the flight worker) when the loop asks for a check.
    """

    def __init__(
        self,
        client: CanvasClient,
        ledger: Ledger,
        policy: PollingSettings,
        *,
        notify: Callable[[str], Any],
        jitter: Callable[[], float] = random.random,
        on_verification_wanted: Callable[[], Any] = lambda: None,
        observer: Observer = QUIET,
    ) -> None:
        self.observer = observer
        self.client = client
        self.ledger = ledger
        self.policy = policy
        self.notify = notify
        self.jitter = jitter
        self.on_verification_wanted = on_verification_wanted
        self.health = Health()
        self.own_user_id: int | None = None
        self.uploading: str | None = None  # the job whose upload runs now (one POST per account at a time)
        #: Set by the loop when files wait for a verified token; the flight worker then checks (one HTTP call).
        self.verification_wanted = threading.Event()
        self._verified_at = float("-inf")

    def is_open(self, now: float) -> bool:
        """Whether Canvas may be called now (no fault, or its backoff is over)."""
        return self.health.kind is None or now >= self.health.retry_at

    def call(self, now: float, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` (a client method), recording a fault or a recovery. Raises CanvasError (recorded
        first; a NOT_FOUND answer is the caller's to judge and is not a fault)."""
        try:
            result = fn(*args)
        except CanvasError as error:
            if error.kind is not FaultKind.NOT_FOUND:
                self.fault(error, now)
            raise
        self.ok()
        return result

    def fault(self, error: CanvasError, now: float) -> None:
        """Record a fault of talking to Canvas and close the gate for a backoff (exponential with jitter, capped;
        slow and steady for credential and configuration faults)."""
        health = self.health
        new = health.kind is not error.kind or health.message != str(error)
        health.count = health.count + 1 if not new or health.kind is not None else 1
        if health.kind is None:
            health.since = now
        health.kind = error.kind
        health.message = str(error)
        if error.kind is FaultKind.CREDENTIAL:
            self.client.forget_token()  # the token file may be replaced before the next try
        delay = polling.retry_delay(error.kind, health.count, self.policy, jitter=self.jitter())
        health.retry_at = now + delay
        self.observer.canvas_fault(str(error.kind))
        if error.kind is FaultKind.THROTTLED:
            self.observer.throttle_wait("throttled", delay)
        event = {
            FaultKind.CREDENTIAL: "canvas_credential_fault",
            FaultKind.CONFIGURATION: "canvas_configuration_fault",
            FaultKind.THROTTLED: "canvas_throttled",
        }.get(error.kind, "canvas_unavailable")
        level = log.error if error.kind in (FaultKind.CREDENTIAL, FaultKind.CONFIGURATION) else log.warning
        level(event, error=str(error), retry_in_seconds=round(delay, 2), attempt=health.count)
        if new:
            self.notify(f"STATUS=Canvas fault ({error.kind}): {error}")
            self.ledger.set_fault(health.as_dict())

    def ok(self) -> None:
        """Record that Canvas answered: the gate opens and the recorded fault is cleared."""
        if self.health.kind is not None:
            log.info("canvas_recovered", after_faults=self.health.count, fault=self.health.message)
            self.notify("STATUS=watching drop folders")
        self.health = Health()
        self.ledger.set_fault(None)

    def verified(self, now: float) -> bool:
        """Whether files may be claimed now, without calling Canvas (the loop's thread never waits on Canvas): the
        gate is open and Canvas accepted the token within ``max_interval_seconds``. When not, asks the flight
        worker to check (:attr:`verification_wanted`) and returns False."""
        recently = now - self._verified_at < max(self.policy.max_interval_seconds, 1.0)
        if self.is_open(now) and self.health.kind is None and recently:
            return True
        if not self.verification_wanted.is_set():
            self.verification_wanted.set()
            self.on_verification_wanted()
        return False

    def ready(self, now: float) -> bool:
        """Whether files may be claimed and sent: Canvas accepted our token recently (one cheap check, at most
        every ``max_interval_seconds`` while there is work) and no fault is waiting out its backoff."""
        if not self.is_open(now):
            return False
        if self.health.kind is None and now - self._verified_at < max(self.policy.max_interval_seconds, 1.0):
            return True
        try:
            me = self.call(now, self.client.check_access)
        except CanvasError:
            return False
        self.own_user_id = me.get("id")
        self._verified_at = now
        self.verification_wanted.clear()
        return True

    def may_upload(self) -> bool:
        """The crash protocol's rule: no upload runs and no POST's outcome is unknown (one per account)."""
        return self.uploading is None and not self.ledger.any_submitting()

    def retry_now(self, now: float) -> None:
        """Let a credential or configuration fault be tried again at once (the config or token changed)."""
        if self.health.kind in (FaultKind.CONFIGURATION, FaultKind.CREDENTIAL):
            self.health.retry_at = now
