"""Fault injection: answer chosen requests with an error status, an HTML page, a redirect, a delay or a reset
connection, before or after the sandbox did the real work (a lost answer); and steer the imports that create
requests make: stick one in a state, or end it in a chosen terminal state.

Faults are matched by route name (see sisdaemon.sandbox.routes.ROUTES, or "any") in the order they were added;
each matches `count` requests (None: every one) and is then used up.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sisdaemon.sandbox.records import TERMINAL_STATES

WHEN = ("before", "after")
# States an import can be stuck in (Sandbox.stick): it stays there until unstuck.
STICK_STATES = ("initializing", "created", "importing", "cleanup_batch")


@dataclass
class Fault:
    """One planned fault.

    `status`: answer with this HTTP status (a Canvas-like JSON body unless `body` is given); `html`: answer
    with an HTML page (status 200 unless `status` is given); `reset`: "before" or "after" — reset the TCP
    connection without answering; `delay`: seconds to wait before answering; `when`: "before" the real work
    (nothing is created) or "after" it (the work is done, then the answer is replaced, delayed or lost).
    `trickle`: send the answer (the fault's own, or the real one) one byte every `trickle` seconds, with its whole
    Content-Length announced (a slow proxy: each read gets a byte, the whole answer takes far longer than any
    per-read timeout). `echo_authorization`: the fault's own answer (a status or an HTML page) carries the
    request's Authorization header back, as the header line and as the bare credential (in a JSON body's first
    error message and an ``"echo"`` object, in an HTML page's text, appended to a body given as text), as a
    misbehaving proxy or error page does.
    `stick` (one of STICK_STATES) and `finish_as` (a terminal workflow_state), for route "create" only: the
    import the request creates is stuck in that state until unstuck (Sandbox.unstick, or
    `PUT /sandbox/imports/:id/unstick`), or ends in that state (Sandbox.stick / Sandbox.finish_as). A
    `stick="initializing"` create does not answer until then.
    """

    route: str = "any"
    status: int | None = None
    count: int | None = 1
    when: str = "before"
    reset: str | None = None
    delay: float = 0.0
    html: bool = False
    body: str | bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0
    echo_authorization: bool = False
    stick: str | None = None
    finish_as: str | None = None
    used: int = 0

    def __post_init__(self) -> None:
        if (self.stick is not None or self.finish_as is not None) and self.route != "create":
            raise ValueError(
                f"stick and finish_as steer the import a create makes: route must be 'create', not {self.route!r}"
            )
        if self.stick is not None and self.stick not in STICK_STATES:
            raise ValueError(f"stick must be one of {', '.join(STICK_STATES)}, not {self.stick!r}")
        if self.finish_as is not None and self.finish_as not in TERMINAL_STATES:
            raise ValueError(f"finish_as must be one of {', '.join(sorted(TERMINAL_STATES))}, not {self.finish_as!r}")
        if self.reset is not None:
            if self.reset not in WHEN:
                raise ValueError(f"reset must be 'before' or 'after', not {self.reset!r}")
            self.when = self.reset
        if self.when not in WHEN:
            raise ValueError(f"when must be 'before' or 'after', not {self.when!r}")
        if self.trickle < 0:
            raise ValueError("trickle must be a number of seconds, at least 0")
        if self.echo_authorization and (self.reset is not None or not self.replaces_answer):
            raise ValueError("echo_authorization needs an answer of the fault's own: a status or html")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None for every request)")

    @property
    def replaces_answer(self) -> bool:
        """True if this fault answers instead of the handler (a status, an HTML page or a reset)."""
        return self.reset is not None or self.status is not None or self.html


class FaultPlan:
    """The faults still to apply, thread-safe. `add` takes Fault's fields as keywords and returns the Fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, route: str = "any", **fields: Any) -> Fault:
        """Plan a fault for the next `count` requests on `route` (see Fault for the fields)."""
        fault = Fault(route=route, **fields)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget every planned fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        """The faults not yet used up, in order."""
        with self._lock:
            return list(self._faults)

    def take(self, route: str) -> Fault | None:
        """The first fault that matches `route` (counting this use), or None."""
        with self._lock:
            for fault in self._faults:
                if fault.route in (route, "any"):
                    fault.used += 1
                    if fault.count is not None and fault.used >= fault.count:
                        self._faults.remove(fault)
                    return fault
        return None


def parse_fault_spec(spec: str) -> dict[str, Any]:
    """Parse a CLI fault: `ROUTE:ITEM[:ITEM...]`, each ITEM one of a status (`502`), `before`/`after`,
    `reset` (reset at the chosen moment), `html`, `delay=SECONDS`, `count=N` (`count=all` for every request),
    `trickle=SECONDS` (one byte of the answer at a time), `echo_authorization` (the answer carries the request's
    Authorization header), `stick=STATE` and `finish_as=STATE` (create only: steer the import it creates),
    `body=TEXT`, `location=URL` (a Location header).

    Examples: `create:502:after`, `create:reset:before`, `show:html`, `any:403:count=3`,
    `create:delay=5:after`, `show:302:location=https://login.example/`, `create:stick=initializing`,
    `create:finish_as=failed:count=2`, `show:trickle=0.5:after`, `any:500:echo_authorization`. Returns
    FaultPlan.add's keywords (the values are checked there).
    """
    route, *items = spec.split(":")
    if not route or not items:
        raise ValueError(f"fault {spec!r}: expected ROUTE:ITEM[:ITEM...]")
    fields: dict[str, Any] = {"route": route}
    reset = False
    index = 0
    while index < len(items):
        item = items[index]
        key, _, value = item.partition("=")
        if key in ("body", "location"):
            # values may themselves contain ':' (URLs): take the rest of the spec
            value = ":".join([value, *items[index + 1 :]])
            index = len(items)
            if key == "body":
                fields["body"] = value
            else:
                fields.setdefault("headers", {})["Location"] = value
            continue
        if item.isdigit():
            fields["status"] = int(item)
        elif item in WHEN:
            fields["when"] = item
        elif item == "reset":
            reset = True
        elif item == "html":
            fields["html"] = True
        elif key == "delay":
            fields["delay"] = float(value)
        elif key == "trickle":
            fields["trickle"] = float(value)
        elif item == "echo_authorization":
            fields["echo_authorization"] = True
        elif key == "count":
            fields["count"] = None if value == "all" else int(value)
        elif key in ("stick", "finish_as") and value:
            fields[key] = value
        else:
            raise ValueError(f"fault {spec!r}: unknown item {item!r}")
        index += 1
    if reset:
        fields["reset"] = fields.pop("when", "before")
    return fields


def load_fault_plan(path: Path) -> list[dict[str, Any]]:
    """Read a JSON fault plan: a list of objects with FaultPlan.add's keywords, e.g.
    `[{"route": "create", "status": 502, "when": "after"}, {"route": "show", "html": true}]`."""
    plan = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(plan, list) or not all(isinstance(item, dict) for item in plan):
        raise ValueError(f"{path}: a fault plan is a JSON list of objects")
    return plan
