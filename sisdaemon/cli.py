"""The ``sisdaemon`` command and its subcommands (run, submit, status, check, check-config, pause, resume, retry,
abort, validate, diff, sandbox, demo).

``main(argv) -> int``; only :func:`entry_point` exits. Exit codes: 0 all went well, 1 a file ended in failed/,
2 usage error (a missing ``-c`` among them), 3 a fault that did not clear (or ``status`` cannot read the state),
65 the state or a history file is damaged (EX_DATAERR), 73 another daemon holds the state or account lock
(EX_CANTCREAT), 77 a command that writes state run by a user other than the state folder's owner (EX_NOPERM), 78
configuration error (EX_CONFIG); the systemd unit does not restart on 65, 73, 77 and 78
(``RestartPreventExitStatus=``). ``check``, a monitoring probe, has the plugin codes instead:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (probe.py). structlog is configured here (sisdaemon.logs), once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from sisdaemon import __version__, cli_ops, cli_tools, effects
from sisdaemon.cli_base import (
    EXIT_CONFIG,
    EXIT_DATAERR,
    EXIT_FAILED,
    EXIT_FAULT,
    EXIT_LOCKED,
    EXIT_NOPERM,
    EXIT_OK,
    EXIT_USAGE,
    NotOwner,
    argv_with_config,
    config_error,
    credential_name,
    error_lines,
    load_checked,
    load_settings,
    not_owner,
    with_config,
    with_max_wait,
)
from sisdaemon.config import ConfigError, Settings, TokenError, read_config_file, read_token, settings_from
from sisdaemon.config.checks import work_dirs_to_create
from sisdaemon.logs import configure_logging, remember_secret
from sisdaemon.owner import check_owner, deciding_folder, instead_lines, user_name

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DATAERR",
    "EXIT_FAILED",
    "EXIT_FAULT",
    "EXIT_LOCKED",
    "EXIT_NOPERM",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "entry_point",
    "main",
]

# --- commands --------------------------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config file and the folders, locks and token it names; print what was found. Changes nothing
    on the machine: a missing work_dir is reported (``run`` creates it), and the rename probe is removed."""
    try:
        settings = load_settings(args, writes=False, create_work_dirs=False, hooks=True)
    except ConfigError as error:
        return config_error(error)
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
            f"{with_owner.owner}, who runs sisdaemon; to check as that user"
            + instead_lines(
                with_owner.owner,
                argv_with_config(args),
                credential=credential_name(settings),
                as_root=with_owner.user == "root",
            ),
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
        error_lines(f"{args.config}: canvas.base_url: Canvas could not be asked: {error}")
        return EXIT_FAULT
    finally:
        client.close()
    if problems:
        error_lines("\n".join(f"{args.config}: {problem}" for problem in problems))
        return EXIT_FAILED
    print(f"{args.config}: Canvas accepts the token, the account, the import_sis permission and every term")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """The service: watch, submit, poll, file. ``--once``: take what is there now, finish it all, exit."""
    from sisdaemon.daemon import Daemon
    from sisdaemon.state import LockHeld, StateError

    try:
        settings, config_file = load_checked(args, token_required=False)
    except ConfigError as error:
        return config_error(error)
    except NotOwner as error:
        return not_owner(error)
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
        config_file=config_file,
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
        return EXIT_DATAERR
    except OSError as error:
        log.error("start_failed", error=str(error))
    return EXIT_FAULT


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit one file now and wait for it: through the running daemon's drop folder, or by running the job."""
    from sisdaemon.submit import submit

    try:
        settings = load_settings(args)
    except ConfigError as error:
        return config_error(error)
    except NotOwner as error:
        return not_owner(error)
    # The result lines go to stdout; the daemon's log, when submit runs the job itself, to stderr.
    configure_logging("console" if sys.stderr.isatty() else settings.log.format, settings.log.level, sys.stderr)
    from sisdaemon.state import StateError

    try:
        return submit(
            settings, Path(args.config), Path(args.file), feed_name=args.feed, wait=args.wait, max_wait=args.max_wait
        )
    except StateError as error:
        structlog.get_logger("sisdaemon").error("state_damaged", error=str(error))
        return EXIT_DATAERR


def cmd_status(args: argparse.Namespace) -> int:
    """Claimed and in-flight jobs, and each feed's state, from the state and history files (no lock needed); and
    whether the running daemon runs the config file on disk (drift.py). A file that does not load: its problems on
    stderr, what can still be said (a daemon running on an earlier version) on stdout, exit 78."""
    from sisdaemon.status import collect, collect_unloadable, render_text

    path = Path(args.config)
    try:
        config_file = read_config_file(path)
    except ConfigError as error:
        return config_error(error)
    try:
        settings = settings_from(config_file)
    except ConfigError as error:
        code = config_error(error)
        try:
            report = collect_unloadable(config_file, error.problems)
        except OSError:  # the heartbeat or the lock is not readable by this user: the problems above say enough
            return code
    else:
        code = EXIT_OK
        state_file = settings.state_file
        try:
            report = collect(settings, config_file)
        except OSError as error:  # the state folder or a file in it is not readable by this user
            folder, status = deciding_folder(state_file)
            print(
                f"sisdaemon status: cannot read the state ({error.filename or state_file}: {error.strerror}) "
                f"as {user_name(os.geteuid())}; {folder} belongs to {user_name(status.st_uid)}: run it as that "
                "user, or as a member of the group that may read it (the package's sisdaemon-ops)",
                file=sys.stderr,
            )
            return EXIT_FAULT
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report))
    if code != EXIT_OK:
        return code
    return EXIT_FAULT if report["daemon"]["problems"] else EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sisdaemon.sandbox import cli as sandbox_cli

    code: int = sandbox_cli.run(args)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from sisdaemon.demo import run_demo

    return run_demo(Path(args.dir), fresh=not args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sisdaemon")
    parser.add_argument("--version", action="version", version=f"sisdaemon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    with_max_wait(run, "with --once: give up")
    run.set_defaults(func=cmd_run)

    sub = commands.add_parser("submit", help="submit one file and wait for its result")
    with_config(sub)
    sub.add_argument("file", help="the CSV or zip file to submit (left in place; a copy is submitted)")
    sub.add_argument("--feed", help="feed whose options and folders to use (default: the first)")
    sub.add_argument(
        "--wait",
        action="store_true",
        help="also print where the file stands each time that changes (submit always waits for the result)",
    )
    with_max_wait(sub)
    sub.set_defaults(func=cmd_submit)

    status = commands.add_parser("status", help="show feeds and in-flight jobs")
    with_config(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    cli_ops.add_parsers(commands)
    cli_tools.add_parsers(commands)
    sandbox = commands.add_parser("sandbox", help="run the local Canvas SIS Import API emulator")
    from sisdaemon.sandbox import cli as sandbox_cli

    sandbox_cli.add_arguments(sandbox)
    sandbox.set_defaults(func=cmd_sandbox)

    demo = commands.add_parser("demo", help="run the whole product on the built-in Canvas emulator")
    demo.add_argument("--dir", default="sisdaemon-demo", help="demo folder (default ./sisdaemon-demo)")
    demo.add_argument("--keep", action="store_true", help="keep what an earlier demo left in the folder")
    demo.set_defaults(func=cmd_demo)
    parser.description = description(list(commands.choices))
    return parser


def description(names: list[str]) -> str:
    """``sisdaemon --help``'s description: what it is, and every command by name (``names``, as the parser has
    them, so that none is left out)."""
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    return (
        "sisdaemon watches drop folders and submits each finished SIS CSV or zip file to Canvas LMS's SIS Import "
        f"API, filing it in done/ or failed/. Its commands are {listed}; `sisdaemon COMMAND --help` tells more."
    )


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
