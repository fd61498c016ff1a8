"""The operator's commands on the command line: pause, resume, retry, abort (what they do: ops.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sisdaemon.cli_base import NotOwner, config_error, load_settings, not_owner, with_config, with_max_wait
from sisdaemon.config import ConfigError, Settings
from sisdaemon.logs import configure_logging


def _load_for_operator(args: argparse.Namespace, *, token: bool) -> Settings | int:
    """The settings for an operator command (it writes state: only the state folder's owner runs it), or the exit
    code of why not. ``token``: also check the token, which is needed when no daemon runs and this command runs
    the job itself. Logging goes to stderr, as for ``submit``."""
    try:
        settings = load_settings(args, token_required=False)
        if token:
            from sisdaemon.state import is_locked, state_lock_path

            if not is_locked(state_lock_path(settings.state_file)):
                settings = load_settings(args, token_required=True)
    except ConfigError as error:
        return config_error(error)
    except NotOwner as error:
        return not_owner(error)
    configure_logging("console" if sys.stderr.isatty() else settings.log.format, settings.log.level, sys.stderr)
    return settings


def cmd_pause(args: argparse.Namespace) -> int:
    """Stop taking new files from a feed (imports in flight go on), or (resume) start again."""
    from sisdaemon.ops import pause_or_resume

    settings = _load_for_operator(args, token=False)
    if isinstance(settings, int):
        return settings
    return pause_or_resume(settings, args.command, args.feed, getattr(args, "reason", None))


def cmd_retry(args: argparse.Namespace) -> int:
    """Send files from failed/ again, claimed straight into the work folder."""
    from sisdaemon.ops import retry_or_abort

    if bool(args.files) == bool(args.all_failed):
        args.parser.error("give FILE… or --all-failed (not both)")
    settings = _load_for_operator(args, token=True)
    if isinstance(settings, int):
        return settings
    request = {
        "action": "retry",
        "files": [os.path.abspath(name) if os.sep in name else name for name in args.files],
        "all_failed": args.all_failed,
        "feed": args.feed,
        "force": args.force,
    }
    return retry_or_abort(settings, Path(args.config), request, wait=args.wait, max_wait=args.max_wait)


def cmd_abort(args: argparse.Namespace) -> int:
    """Ask Canvas to abort an import the daemon tracks; its file then goes to failed/ (aborted_by_operator)."""
    from sisdaemon.ops import retry_or_abort

    settings = _load_for_operator(args, token=True)
    if isinstance(settings, int):
        return settings
    request = {"action": "abort", "target": args.target}
    return retry_or_abort(settings, Path(args.config), request, wait=args.wait, max_wait=args.max_wait)


def add_parsers(commands: Any) -> None:
    """The operator's commands: pause, resume, retry, abort (each journaled with the invoking user)."""

    def with_wait(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("--wait", action="store_true", help=f"wait until {what} filed, printing where")
        with_max_wait(sub)

    pause = commands.add_parser(
        "pause", help="stop taking new files from a feed (imports in flight go on); kept across restarts"
    )
    with_config(pause)
    pause.add_argument("feed", help="the feed's name")
    pause.add_argument("--reason", help="why (shown by status and journaled)")
    pause.set_defaults(func=cmd_pause)

    resume = commands.add_parser("resume", help="take files from a paused feed again")
    with_config(resume)
    resume.add_argument("feed", help="the feed's name")
    resume.set_defaults(func=cmd_pause)

    retry = commands.add_parser(
        "retry",
        help="send files from failed/ again (claimed straight into the work folder; the old sidecar is kept as "
        "<name>.result.retried.json)",
    )
    with_config(retry)
    retry.add_argument("files", nargs="*", metavar="FILE", help="a file in a feed's failed folder (path or name)")
    retry.add_argument("--all-failed", action="store_true", help="every file in failed/ (at most 100 at a time)")
    retry.add_argument("--feed", help="only this feed's failed folder")
    retry.add_argument(
        "--force",
        action="store_true",
        help="release a file the shrink guard held (reason_code shrink_guard): it is sent once without the guard, "
        "and its sidecar names who released it",
    )
    with_wait(retry, "they are")
    retry.set_defaults(func=cmd_retry)

    abort = commands.add_parser(
        "abort", help="ask Canvas to abort an import in flight; its file goes to failed/ (aborted_by_operator)"
    )
    with_config(abort)
    abort.add_argument("target", metavar="JOB_ID|IMPORT_ID", help="the job id or Canvas import id (see status)")
    with_wait(abort, "it is")
    abort.set_defaults(func=cmd_abort)
