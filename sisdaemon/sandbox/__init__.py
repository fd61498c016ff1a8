"""A local emulator of Canvas LMS's SIS Import API for tests, `sisdaemon demo` and people.

    from sisdaemon.sandbox import Sandbox
    with Sandbox(token="T", account_id=1, fast=True) as sb:
        ...  # talk to sb.url + "/api/v1/accounts/1/sis_imports"

See Sandbox for the options and the steering methods (faults, stick, finish_as).
"""

from __future__ import annotations

from sisdaemon.sandbox.faults import Fault, FaultPlan
from sisdaemon.sandbox.routes import ROUTES, RecordedRequest
from sisdaemon.sandbox.server import Sandbox

__all__ = ["ROUTES", "Fault", "FaultPlan", "RecordedRequest", "Sandbox"]
