"""The gate in front of Canvas: faults and their backoff, throttling, a verified token, one upload per account.

Every call to Canvas that the daemon makes goes through :meth:`Gate.call`, which records a fault (and closes the gate
for a backoff computed by the pure policy in polling.py) or a recovery. :meth:`Gate.ready` says whether files may be
claimed and sent now; :meth:`Gate.may_upload` applies the one-POST-at-a-time rule of the crash protocol.

A fault is a lasting condition (logs.Conditions): the journal says when it starts (``canvas_unavailable``,
``canvas_throttled``, ``canvas_credential_fault``, ``canvas_configuration_fault``), when it changes
(``canvas_fault_changed``, then the new one's start line), with a reminder every few minutes while it lasts, and when
it ends (``canvas_recovered``); each retry in between is a debug line with the same fields.
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
from sisdaemon.jobs import iso
from sisdaemon.ledger import Ledger
from sisdaemon.logs import ConditionKey, Conditions
from sisdaemon.observer import QUIET, Observer

log = structlog.get_logger("sisdaemon")

T = TypeVar("T")

#: The journal's event for each kind of fault (the start of the condition; its end is ``canvas_recovered``).
FAULT_EVENTS = {
    FaultKind.CREDENTIAL: "canvas_credential_fault",
    FaultKind.CONFIGURATION: "canvas_configuration_fault",
    FaultKind.THROTTLED: "canvas_throttled",
}


def _same(moment: float | None) -> float | None:
    return moment


@dataclass
class Health:
    """The last fault of talking to Canvas, and when the next call may be made (seconds since the epoch)."""

    kind: FaultKind | None = None
    message: str = ""
    since: float | None = None
    count: int = 0
    retry_at: float = 0.0

    def as_dict(self, to_wall: Callable[[float | None], float | None] = _same) -> dict[str, Any] | None:
        """``{"kind", "message", "since", "count", "retry_at"}`` for the state file and ``status``; None when
        healthy. ``since`` (the first fault) and ``retry_at`` (the end of the backoff: the next call to Canvas) are
        turned into wall-clock seconds since the epoch by ``to_wall`` (the daemon clock's
        :meth:`~sisdaemon.clock.DaemonClock.to_wall`), for display only: the daemon measures the backoff on its own
        clock."""
        if self.kind is None:
            return None
        return {
            "kind": str(self.kind),
            "message": self.message,
            "since": to_wall(self.since),
            "count": self.count,
            "retry_at": to_wall(self.retry_at),
        }


class Gate:
    """Health and backoff in front of ``client``.

    ``ledger`` records the current fault for ``status``; ``policy`` gives the backoff's timing; ``notify`` sends a
    systemd STATUS line (sd_notify); ``jitter`` returns a number in [0, 1) (tests may fix it);
    ``on_verification_wanted`` wakes whoever checks the token (the flight worker) when the loop asks for a check.
    ``conditions`` says in the journal when a fault starts, changes and ends (the daemon's, shared by its parts);
    ``to_wall`` turns a reading of the daemon's clock into wall time, for the times the state shows ``status``.
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
        conditions: Conditions | None = None,
        to_wall: Callable[[float | None], float | None] = _same,
    ) -> None:
        self.observer = observer
        self.client = client
        self.ledger = ledger
        self.policy = policy
        self.notify = notify
        self.jitter = jitter
        self.on_verification_wanted = on_verification_wanted
        self.conditions = conditions or Conditions()
        self.to_wall = to_wall
        self._condition: ConditionKey | None = None  # the fault the journal said started, until it ends
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
        first; a NOT_FOUND answer is the caller's to judge and is not a fault: Canvas answered it, so a fault in
        progress ends)."""
        try:
            result = fn(*args)
        except CanvasError as error:
            if error.kind is FaultKind.NOT_FOUND:
                self.ok()
            else:
                self.fault(error, now)
            raise
        self.ok()
        return result

    def fault(self, error: CanvasError, now: float) -> None:
        """Record a fault of talking to Canvas and close the gate for a backoff (exponential with jitter, capped;
        slow and steady for credential and configuration faults). The journal says when a fault starts or changes
        (and reminds while it lasts); each retry is a debug line. The state's ``fault`` gets the next retry time
        each time, for ``status``."""
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
        event = FAULT_EVENTS.get(error.kind, "canvas_unavailable")
        level = "error" if error.kind in (FaultKind.CREDENTIAL, FaultKind.CONFIGURATION) else "warning"
        key = ("canvas_fault", str(error.kind), str(error))
        if self._condition is not None and self._condition != key:
            self.conditions.end(self._condition, "canvas_fault_changed", fault=self._condition[2], now=str(error))
        self._condition = key
        fields = {
            "error": str(error),
            "retry_in_seconds": round(delay, 2),
            "retry_at": iso(self.to_wall(health.retry_at)),
            "attempt": health.count,
        }
        if not self.conditions.start(key, event, level=level, **fields):
            log.debug(event, **fields)  # every retry, for whoever needs them: not a journal line each
        if new:
            self.notify(f"STATUS=Canvas fault ({error.kind}): {error}")
        self.ledger.set_fault(health.as_dict(self.to_wall))  # each time: `status` shows until when it waits

    def ok(self) -> None:
        """Record that Canvas answered: the gate opens and the recorded fault is cleared."""
        if self.health.kind is not None:
            if self._condition is not None:
                self.conditions.end(
                    self._condition, "canvas_recovered", after_faults=self.health.count, fault=self.health.message
                )
            self._condition = None
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
