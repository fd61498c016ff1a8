"""The commands that only read: validate, check (the monitoring probe), diff."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import Any

from sisdaemon.cli_base import config_error, with_config
from sisdaemon.config import ConfigError, load_config, read_config_file, settings_from
from sisdaemon.config.durations import parse_duration


def cmd_validate(args: argparse.Namespace) -> int:
    """Check files as Canvas would read them (sisdaemon.sis_csv); exit 1 when one would fail, 0 otherwise."""
    from sisdaemon.validate import run_validate

    return run_validate([Path(name) for name in args.files], as_json=args.json)


def cmd_check(args: argparse.Namespace) -> int:
    """A monitoring probe (Nagios/Icinga): one line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    from sisdaemon import probe

    try:
        thresholds = probe.Thresholds(
            stuck_warning=parse_duration(args.stuck_warning),
            stuck_critical=parse_duration(args.stuck_critical),
            heartbeat=parse_duration(args.heartbeat),
            failed_since=_since(args.failed_since) if args.failed_since else None,
        )
        config_file = read_config_file(Path(args.config))
    except ValueError as error:
        print(f"SISDAEMON UNKNOWN - {error}")
        return probe.UNKNOWN
    except ConfigError as error:  # not readable (missing, no permission): nothing can be judged
        print(f"SISDAEMON UNKNOWN - configuration: {'; '.join(error.problems)} ({error.path})")
        return probe.UNKNOWN
    try:
        settings = settings_from(config_file)
    except ConfigError as error:  # read, but it would fail at start: CRITICAL, with a running daemon's facts
        facts = probe.gather_unloadable(config_file, error.problems)
        verdict = probe.judge(facts, thresholds, time.time())
    else:
        verdict = probe.check(settings, thresholds, config_file=config_file)
    print(verdict.line())
    return verdict.code


def _since(text: str) -> float:
    """``--failed-since``: an ISO 8601 time (``2026-11-30T06:00Z``, a date alone is its midnight UTC) or a duration
    that long ago (``24h``). Raises ValueError naming the option."""
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        message = f"--failed-since: {text!r} is neither a time (2026-11-30T06:00Z) nor a duration (24h)"
        raise ValueError(message) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare a file with the last file its feed imported (or ``--against`` another file); see sisdaemon.diff."""
    from sisdaemon.diff import run_diff

    settings = None
    if args.config:
        try:
            settings = load_config(Path(args.config))
        except ConfigError as error:
            return config_error(error)
    against = Path(args.against) if args.against else None
    return run_diff(settings, Path(args.file), feed_name=args.feed, against=against, as_json=args.json)


def add_parsers(commands: Any) -> None:
    """The parsers of validate, check and diff."""
    validate = commands.add_parser(
        "validate",
        help="check SIS CSV or zip files as Canvas would read them; exit 1 if Canvas would fail one (no config needed)",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="a CSV or zip file")
    validate.add_argument("--json", action="store_true", help="print JSON: one report per file")
    validate.set_defaults(func=cmd_validate)
    probe = commands.add_parser(
        "check",
        help="monitoring probe (Nagios/Icinga): one line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
        description="Read the state (never writing it) and judge the daemon: running with its loop turning, Canvas "
        "faults, held and paused feeds, imports stuck, stale feeds, files in failed/, and the config file on disk "
        "against the one the daemon runs (changed: WARNING; would fail at start: CRITICAL). Runs as any user who may "
        "read the state (the sisdaemon-ops group). Durations: 90s, 30m, 4h, 1d.",
    )
    with_config(probe)
    probe.add_argument(
        "--stuck-warning", default="4h", metavar="DURATION", help="a file claimed longer than this: WARNING (4h)"
    )
    probe.add_argument(
        "--stuck-critical", default="24h", metavar="DURATION", help="a file claimed longer than this: CRITICAL (24h)"
    )
    probe.add_argument(
        "--heartbeat",
        default="2m",
        metavar="DURATION",
        help="the daemon's loop not turning for this long: CRITICAL (2m)",
    )
    probe.add_argument(
        "--failed-since",
        metavar="TIME|DURATION",
        help="files filed in failed/ at or after this time (2026-11-30T06:00Z) or within this duration (24h): "
        "WARNING (default: counted in the perfdata only)",
    )
    probe.set_defaults(func=cmd_check)

    diff = commands.add_parser(
        "diff",
        help="compare a CSV or zip file with the last file its feed imported: rows added, removed and changed per SIS "
        "type, and what Canvas would delete (exit 0 compared, 1 unreadable, 2 no such feed, 3 nothing to compare with)",
    )
    with_config(diff)
    diff.add_argument("file", metavar="FILE", help="the CSV or zip file to compare")
    diff.add_argument(
        "--feed", help="the feed whose last imported file to compare with (default: the file's, or the only one)"
    )
    diff.add_argument("--against", metavar="EARLIER", help="compare with this file instead (no config needed)")
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.set_defaults(func=cmd_diff)
