"""What every ``sisdaemon`` command shares: the exit codes, loading and checking the config, the state owner's
check, error lines on stderr, and the ``-c/--config`` option. The exit codes are documented in cli.py's doc."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sisdaemon.config import ConfigError, Settings, TokenError, check_runtime, load_config, read_token
from sisdaemon.logs import journal_prefix, remember_secret
from sisdaemon.owner import check_owner

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


def argv_with_config(args: argparse.Namespace) -> list[str]:
    """The command's arguments as given, with ``-c`` made explicit (``sudo`` drops ``$SISDAEMON_CONFIG``)."""
    argv: list[str] = list(args.argv)
    given = any(arg in ("-c", "--config") or arg.startswith(("--config=", "-c")) for arg in argv)
    if not given and args.command in argv:
        at = argv.index(args.command) + 1
        argv[at:at] = ["-c", args.config]
    return argv


def load_settings(
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
            raise NotOwner(wrong.message(f"sisdaemon {args.command}", argv_with_config(args)))
    problems = check_runtime(settings, token=token_required, create_work_dirs=create_work_dirs)
    if problems:
        raise ConfigError(config_path, problems)
    if token_required:
        try:
            remember_secret(read_token(settings.canvas))
        except TokenError as error:
            raise ConfigError(config_path, [str(error)]) from None
    return settings


def error_lines(text: str) -> None:
    """Write ``text`` to stderr, each line at priority err when stderr is the journal."""
    prefix = journal_prefix(sys.stderr, "error")
    for line in text.splitlines():
        print(prefix + line, file=sys.stderr)


def config_error(error: ConfigError) -> int:
    error_lines(str(error))
    return EXIT_CONFIG


def not_owner(error: NotOwner) -> int:
    error_lines(str(error))
    return EXIT_NOPERM


def with_config(sub: argparse.ArgumentParser) -> None:
    """Give command ``sub`` its ``-c/--config`` option (default ``$SISDAEMON_CONFIG``)."""
    sub.add_argument(
        "-c",
        "--config",
        default=os.environ.get("SISDAEMON_CONFIG"),
        help="config file (default: $SISDAEMON_CONFIG)",
    )
    sub.set_defaults(parser=sub)  # for the usage error when neither is given


def with_max_wait(sub: argparse.ArgumentParser, what: str = "give up waiting") -> None:
    """Give command ``sub`` its ``--max-wait SECONDS`` option (default 3600); ``what`` it does when the time is up."""
    sub.add_argument(
        "--max-wait",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help=f"{what} (exit 3) after this long (default 3600)",
    )
