"""The ``sisdaemon`` command: run, submit, status, check, check-config, pause, resume, retry, abort, validate, diff,
sandbox, demo.

``main(argv) -> int``; only :func:`entry_point` exits. Exit codes: 0 all went well, 1 a file ended in failed/,
2 usage error (a missing ``-c`` among them), 3 a fault that did not clear (or ``status`` cannot read the state),
73 another daemon holds the state or account lock (EX_CANTCREAT), 77 a command that writes state run by a user
other than the state folder's owner (EX_NOPERM), 78 configuration error (EX_CONFIG); the systemd unit does not
restart on 73, 77 and 78 (``RestartPreventExitStatus=``). ``check``, a monitoring probe, has the plugin codes instead:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (probe.py). structlog is configured here (sisdaemon.logs), once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from sisdaemon import __version__, effects
from sisdaemon.config import ConfigError, Settings, TokenError, check_runtime, load_config, read_token
from sisdaemon.config.checks import work_dirs_to_create
from sisdaemon.config.durations import parse_duration
from sisdaemon.logs import configure_logging, journal_prefix, remember_secret
from sisdaemon.owner import check_owner, deciding_folder, user_name

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FAULT = 3
EXIT_LOCKED = 73  # EX_CANTCREAT: the lock cannot be taken; restarting would only loop (RestartPreventExitStatus=)
EXIT_NOPERM = 77  # EX_NOPERM: not the state's owner; restarting would only loop (RestartPreventExitStatus=)
EXIT_CONFIG = 78


class NotOwner(Exception):
    """A command that writes state was run by a user who does not own the state folder (exit 77); the message
    names both users and the command line to use instead."""


def _argv_with_config(args: argparse.Namespace) -> list[str]:
    """The command's arguments as given, with ``-c`` made explicit (``sudo`` drops ``$SISDAEMON_CONFIG``)."""
    argv: list[str] = list(args.argv)
    given = any(arg in ("-c", "--config") or arg.startswith(("--config=", "-c")) for arg in argv)
    if not given and args.command in argv:
        at = argv.index(args.command) + 1
        argv[at:at] = ["-c", args.config]
    return argv


def _load(
    args: argparse.Namespace, *, token_required: bool = True, writes: bool = True, create_work_dirs: bool = True
) -> Settings:
    """Load and check the config named by ``args.config`` (static and run-time checks; the token too unless
    ``token_required`` is False). ``writes``: the command writes state, so only the state folder's owner may run it
    (checked before the machine, whose access checks hold for this user alone). ``create_work_dirs``: make a
    missing work_dir (``run``, ``submit``), or only check that it can be made (``check-config``).

    Raises ConfigError with every problem; NotOwner when ``writes`` and this user does not own the state."""
    config_path = Path(args.config)
    settings = load_config(config_path)
    if writes:
        try:
            wrong = check_owner(settings.state_file)
        except OSError as error:
            raise ConfigError(config_path, [f"state_file: {settings.state_file}: {error.strerror}"]) from None
        if wrong is not None:
            raise NotOwner(wrong.message(f"sisdaemon {args.command}", _argv_with_config(args)))
    problems = check_runtime(settings, token=token_required, create_work_dirs=create_work_dirs)
    if problems:
        raise ConfigError(config_path, problems)
    if token_required:
        try:
            remember_secret(read_token(settings.canvas))
        except TokenError as error:
            raise ConfigError(config_path, [str(error)]) from None
    return settings


def _error_lines(text: str) -> None:
    """Write ``text`` to stderr, each line at priority err when stderr is the journal."""
    prefix = journal_prefix(sys.stderr, "error")
    for line in text.splitlines():
        print(prefix + line, file=sys.stderr)


def _config_error(error: ConfigError) -> int:
    _error_lines(str(error))
    return EXIT_CONFIG


def _not_owner(error: NotOwner) -> int:
    _error_lines(str(error))
    return EXIT_NOPERM


# --- commands --------------------------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config file and the folders, locks and token it names; print what was found. Changes nothing
    on the machine: a missing work_dir is reported (``run`` creates it), and the rename probe is removed."""
    try:
        settings = _load(args, writes=False, create_work_dirs=False)
    except ConfigError as error:
        return _config_error(error)
    if args.online and (code := _check_online(args, settings)) != EXIT_OK:
        return code
    print(f"{args.config}: OK ({len(settings.feeds)} feed(s): {', '.join(f.name for f in settings.feeds)})")
    for note in work_dirs_to_create(settings):
        print(f"{args.config}: {note}")
    with_owner = check_owner(settings.state_file)
    if with_owner is not None:
        # The folders' access was judged for this user, not for the one that runs the service.
        print(
            f"{args.config}: note: checked as {with_owner.user}, but {with_owner.folder} belongs to "
            f"{with_owner.owner}, who runs sisdaemon; to check as that user: "
            + shlex.join(["sudo", "-u", with_owner.owner, "sisdaemon", *_argv_with_config(args)]),
            file=sys.stderr,
        )
    return EXIT_OK


def _check_online(args: argparse.Namespace, settings: Settings) -> int:
    """``check-config --online``: ask Canvas (online.py). One line per problem on stderr; returns 0, 1 (Canvas
    shows a problem) or 3 (Canvas could not be asked)."""
    from sisdaemon.canvas import CanvasClient
    from sisdaemon.daemon import token_source
    from sisdaemon.online import Unreachable, check_online

    canvas = settings.canvas
    client = CanvasClient(
        canvas.base_url,
        canvas.account_id,
        token_source(canvas),
        timeout=canvas.timeout_seconds,
        verify=canvas.requests_verify,
    )
    try:
        problems = check_online(settings, client)
    except Unreachable as error:
        _error_lines(f"{args.config}: canvas.base_url: Canvas could not be asked: {error}")
        return EXIT_FAULT
    finally:
        client.close()
    if problems:
        _error_lines("\n".join(f"{args.config}: {problem}" for problem in problems))
        return EXIT_FAILED
    print(f"{args.config}: Canvas accepts the token, the account, the import_sis permission and every term")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """The service: watch, submit, poll, file. ``--once``: take what is there now, finish it all, exit."""
    from sisdaemon.daemon import Daemon
    from sisdaemon.state import LockHeld, StateError

    try:
        settings = _load(args, token_required=False)
    except ConfigError as error:
        return _config_error(error)
    except NotOwner as error:
        return _not_owner(error)
    configure_logging(settings.log.format, settings.log.level)
    try:
        effects.install_from_environment()  # crash-point tests only: unset in production
    except ValueError as error:
        print(f"sisdaemon run: {error}", file=sys.stderr)
        return EXIT_USAGE
    log = structlog.get_logger("sisdaemon")
    try:
        remember_secret(read_token(settings.canvas))
    except TokenError as error:
        # A credential that is missing at start (mid-rotation, a credential not yet deployed) is a fault the
        # daemon waits out like any other credential fault: files wait, and the token is read again at each try.
        log.error("canvas_credential_fault", error=str(error), hint="files wait until the token can be read")
    daemon = Daemon(
        settings,
        config_path=Path(args.config),
        once=args.once,
        max_wait=args.max_wait,
        reconfigure_logging=lambda changed: configure_logging(changed.format, changed.level),
    )
    daemon.install_signal_handlers()
    try:
        return daemon.run()
    except LockHeld as error:
        log.error("already_running", error=str(error), pid=error.pid)
        return EXIT_LOCKED
    except StateError as error:
        log.error("state_damaged", error=str(error), hint="no job is lost: its file is still in work/")
    except OSError as error:
        log.error("start_failed", error=str(error))
    return EXIT_FAULT


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit one file now and wait for it: through the running daemon's drop folder, or by running the job."""
    from sisdaemon.submit import submit

    try:
        settings = _load(args)
    except ConfigError as error:
        return _config_error(error)
    except NotOwner as error:
        return _not_owner(error)
    # The result lines go to stdout; the daemon's log, when submit runs the job itself, to stderr.
    configure_logging("console" if sys.stderr.isatty() else settings.log.format, settings.log.level, sys.stderr)
    return submit(
        settings, Path(args.config), Path(args.file), feed_name=args.feed, wait=args.wait, max_wait=args.max_wait
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Claimed and in-flight jobs, and each feed's state, from the state and history files (no lock needed)."""
    from sisdaemon.status import collect, render_text

    try:
        settings = load_config(Path(args.config))
    except ConfigError as error:
        return _config_error(error)
    try:
        report = collect(settings)
    except OSError as error:  # the state folder or a file in it is not readable by this user
        folder, status = deciding_folder(settings.state_file)
        print(
            f"sisdaemon status: cannot read the state ({error.filename or settings.state_file}: {error.strerror}) "
            f"as {user_name(os.geteuid())}; {folder} belongs to {user_name(status.st_uid)}: run it as that user, or "
            "as a member of the group that may read it (the package's sisdaemon-ops)",
            file=sys.stderr,
        )
        return EXIT_FAULT
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report))
    return EXIT_FAULT if report["daemon"]["problems"] else EXIT_OK


def _load_for_operator(args: argparse.Namespace, *, token: bool) -> Settings | int:
    """The settings for an operator command (it writes state: only the state folder's owner runs it), or the exit
    code of why not. ``token``: also check the token, which is needed when no daemon runs and this command runs
    the job itself. Logging goes to stderr, as for ``submit``."""
    try:
        settings = _load(args, token_required=False)
        if token:
            from sisdaemon.state import is_locked, state_lock_path

            if not is_locked(state_lock_path(settings.state_file)):
                settings = _load(args, token_required=True)
    except ConfigError as error:
        return _config_error(error)
    except NotOwner as error:
        return _not_owner(error)
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
        settings = load_config(Path(args.config))
    except ValueError as error:
        print(f"SISDAEMON UNKNOWN - {error}")
        return probe.UNKNOWN
    except ConfigError as error:
        print(f"SISDAEMON UNKNOWN - configuration: {'; '.join(error.problems)} ({error.path})")
        return probe.UNKNOWN
    verdict = probe.check(settings, thresholds)
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
            return _config_error(error)
    against = Path(args.against) if args.against else None
    return run_diff(settings, Path(args.file), feed_name=args.feed, against=against, as_json=args.json)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sisdaemon.sandbox import cli as sandbox_cli

    code: int = sandbox_cli.run(args)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from sisdaemon.demo import run_demo

    return run_demo(Path(args.dir), fresh=not args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sisdaemon", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"sisdaemon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "-c",
            "--config",
            default=os.environ.get("SISDAEMON_CONFIG"),
            help="config file (default: $SISDAEMON_CONFIG)",
        )
        sub.set_defaults(parser=sub)  # for the usage error when neither is given

    check = commands.add_parser("check-config", help="validate a config file and the folders it names")
    with_config(check)
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask Canvas: the token is accepted, the account readable, its user may import (import_sis), each "
        "batch_mode_term_id exists (exit 1 when Canvas shows a problem, 3 when it cannot be asked)",
    )
    check.set_defaults(func=cmd_check_config)

    run = commands.add_parser("run", help="run the service in the foreground (what systemd runs)")
    with_config(run)
    run.add_argument(
        "--once", action="store_true", help="take what is in the drop folders now, finish every import, then exit"
    )
    run.add_argument(
        "--max-wait",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with --once: give up (exit 3) after this long (default 3600)",
    )
    run.set_defaults(func=cmd_run)

    sub = commands.add_parser("submit", help="submit one file and wait for its result")
    with_config(sub)
    sub.add_argument("file", help="the CSV or zip file to submit (left in place; a copy is submitted)")
    sub.add_argument("--feed", help="feed whose options and folders to use (default: the first)")
    sub.add_argument("--wait", action="store_true", help="print the import as it progresses until it is filed")
    sub.add_argument(
        "--max-wait",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="give up waiting (exit 3) after this long (default 3600)",
    )
    sub.set_defaults(func=cmd_submit)

    status = commands.add_parser("status", help="show feeds and in-flight jobs")
    with_config(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    add_operator_commands(commands, with_config)
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
        "faults, held and paused feeds, imports stuck, stale feeds, files in failed/. Runs as any user who may read "
        "the state (the sisdaemon-ops group). Durations: 90s, 30m, 4h, 1d.",
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

    sandbox = commands.add_parser("sandbox", help="run the local Canvas SIS Import API emulator")
    from sisdaemon.sandbox import cli as sandbox_cli

    sandbox_cli.add_arguments(sandbox)
    sandbox.set_defaults(func=cmd_sandbox)

    demo = commands.add_parser("demo", help="run the whole product on the built-in Canvas emulator")
    demo.add_argument("--dir", default="sisdaemon-demo", help="demo folder (default ./sisdaemon-demo)")
    demo.add_argument("--keep", action="store_true", help="keep what an earlier demo left in the folder")
    demo.set_defaults(func=cmd_demo)
    return parser


def add_operator_commands(commands: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """The operator's commands: pause, resume, retry, abort (each journaled with the invoking user)."""

    def with_wait(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("--wait", action="store_true", help=f"wait until {what} filed, printing where")
        sub.add_argument(
            "--max-wait",
            type=float,
            default=3600.0,
            metavar="SECONDS",
            help="give up waiting (exit 3) after this long (default 3600)",
        )

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); returns its exit code (see the module's doc)."""
    parser = build_parser()
    args_given = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(args_given)
        if hasattr(args, "config") and not args.config and not getattr(args, "against", None):
            args.parser.error("-c/--config not given and $SISDAEMON_CONFIG not set (or empty)")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args.argv = args_given
    result: int = args.func(args)
    return result


def entry_point() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `sisdaemon status | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)
