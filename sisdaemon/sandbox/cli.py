"""`sisdaemon sandbox`: run the local Canvas SIS Import API until SIGTERM or SIGINT.

A test driving the process reads what it received back with `GET /sandbox/requests` and releases an import
a `stick=` fault holds with `PUT /sandbox/imports/:id/unstick` (sisdaemon.sandbox.control).

sisdaemon/cli.py calls add_arguments() on its `sandbox` sub-parser and run() with the parsed arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from sisdaemon.sandbox.faults import STICK_STATES, Fault, load_fault_plan, parse_fault_spec
from sisdaemon.sandbox.routes import ROUTES
from sisdaemon.sandbox.server import Sandbox

TOKEN_ENV = "SISDAEMON_SANDBOX_TOKEN"

FAULT_HELP = f"""\
plan a fault: ROUTE:ITEM[:ITEM...] (repeatable). ROUTE is one of {", ".join(ROUTES)} or any.
ITEMs: a status (502), before|after (default before: nothing is done; after: the work is done, then the
answer is replaced or lost), reset (reset the TCP connection instead of answering), html (an HTML page),
delay=SECONDS, count=N|all (default 1), body=TEXT, location=URL (for a 3xx); for create only,
stick={"|".join(STICK_STATES)} (the import it creates stays in that state until
PUT /sandbox/imports/ID/unstick; stick=initializing holds the POST's answer until then) and
finish_as=STATE (imported, imported_with_messages, failed_with_messages, failed or aborted: the import
ends in that state). Examples: create:502:after,
create:reset:before, show:html, any:429:count=3, create:delay=30:after, show:302:location=https://x/,
create:stick=created, create:finish_as=failed:count=2. Recorded requests: GET /sandbox/requests"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's options to `parser`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument(
        "--token", help=f"the access token to accept (default: ${TOKEN_ENV}, which keeps it out of `ps`)"
    )
    parser.add_argument("--account", type=int, default=1, help="the root account's Canvas id (default 1)")
    parser.add_argument(
        "--term", action="append", default=[], metavar="SIS_TERM_ID", help="an active term that exists (repeatable)"
    )
    parser.add_argument("--fast", action="store_true", help="run imports without pauses (tests)")
    parser.add_argument(
        "--rows-per-second", type=float, default=None, help="import speed when not --fast (default 200)"
    )
    parser.add_argument(
        "--store-delay", type=float, default=0.0, help="seconds an upload stays `initializing` before the POST answers"
    )
    parser.add_argument("--throttle", choices=["403", "429"], default=None, help="refuse like Canvas's leaky bucket")
    parser.add_argument("--other-token", help="a token of another user (id 2) who may import")
    parser.add_argument("--unauthorized-token", help="a valid token whose user (id 3) lacks permission")
    parser.add_argument(
        "--forbidden-status", type=int, choices=[401, 403], default=401, help="status of a permission refusal"
    )
    parser.add_argument(
        "--abort-requeue-seconds", type=float, default=0.0, help="queue pause after an abort (Canvas: 600)"
    )
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC", help=FAULT_HELP)
    parser.add_argument(
        "--fault-plan",
        type=Path,
        metavar="FILE",
        help='a JSON list of faults with --fault\'s fields: [{"route": "create", "status": 502}, '
        '{"route": "create", "finish_as": "failed", "count": 2}]',
    )
    parser.add_argument("--data-dir", type=Path, help="keep uploads and generated files here (default: a temp folder)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; print the URL as the first line of stdout. Returns the exit status
    (0 on a signal, 2 for a usage error)."""
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        print(f"sisdaemon sandbox: give --token or set {TOKEN_ENV}", file=sys.stderr)
        return 2
    try:
        faults: list[dict[str, Any]] = [parse_fault_spec(spec) for spec in args.fault]
        if args.fault_plan is not None:
            faults.extend(load_fault_plan(args.fault_plan))
    except (ValueError, OSError) as error:
        print(f"sisdaemon sandbox: {error}", file=sys.stderr)
        return 2
    try:
        for fault in faults:
            Fault(**fault)  # checked before anything is started
    except (TypeError, ValueError) as error:
        print(f"sisdaemon sandbox: bad fault: {error}", file=sys.stderr)
        return 2
    sandbox = Sandbox(
        token=token,
        account_id=args.account,
        fast=args.fast,
        rows_per_second=args.rows_per_second,
        terms=args.term,
        other_token=args.other_token,
        unauthorized_token=args.unauthorized_token,
        store_delay=args.store_delay,
        throttle=args.throttle,
        forbidden_status=args.forbidden_status,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        abort_requeue_seconds=args.abort_requeue_seconds,
    )
    for fault in faults:
        sandbox.faults.add(**fault)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    sandbox.start()
    try:
        print(sandbox.url, flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        sandbox.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
