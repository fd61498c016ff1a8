"""What every ``sisdaemon`` command shares: the exit codes, loading and checking the config, the state owner's
check, error lines on stderr, and the ``-c/--config`` option. The exit codes are documented in cli.py's doc."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sisdaemon.config import (
    ConfigError,
    ConfigFile,
    Settings,
    TokenError,
    check_runtime,
    read_config_file,
    read_token,
    settings_from,
)
from sisdaemon.logs import journal_prefix, remember_secret
from sisdaemon.owner import check_owner, deciding_folder, instead_lines, user_name

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FAULT = 3
EXIT_DATAERR = 65  # EX_DATAERR: the state or a history file is damaged; restarting would only loop
EXIT_LOCKED = 73  # EX_CANTCREAT: the lock cannot be taken; restarting would only loop (RestartPreventExitStatus=)
EXIT_NOPERM = 77  # EX_NOPERM: not the state's owner; restarting would only loop (RestartPreventExitStatus=)
EXIT_CONFIG = 78


class NotOwner(Exception):
    """A command that writes state was run by a user who does not own the state folder (exit 77); the message
    names both users and the command line to use instead."""


def argv_with_config(args: argparse.Namespace) -> list[str]:
    """The command's arguments as given, with ``-c`` made explicit (``sudo`` drops ``$SISDAEMON_CONFIG``) and the
    config's path absolute (``systemd-run`` runs the command in ``/``)."""
    argv: list[str] = list(args.argv)
    config = os.path.abspath(args.config)
    for at, arg in enumerate(argv):
        if arg in ("-c", "--config") and at + 1 < len(argv):
            argv[at + 1] = config
        elif arg.startswith("--config="):
            argv[at] = f"--config={config}"
        elif arg.startswith("-c") and arg != "-c":
            argv[at] = f"-c{config}"
    given = any(arg in ("-c", "--config") or arg.startswith(("--config=", "-c")) for arg in argv)
    if not given and args.command in argv:
        at = argv.index(args.command) + 1
        argv[at:at] = ["-c", config]
    return argv


def credential_name(settings: Settings) -> str | None:
    """The systemd credential the token is read from (a relative ``canvas.token_file``, read from
    ``$CREDENTIALS_DIRECTORY``), or None when the token comes from elsewhere."""
    token_file = settings.canvas.token_file
    return str(token_file) if token_file is not None and not token_file.is_absolute() else None


def _with_recipe(problem: str, settings: Settings, args: argparse.Namespace) -> str:
    """A token problem that a command run by hand meets for want of the service's credential, with how to run the
    command as the service runs (README: Install on a server)."""
    credential = credential_name(settings)
    if credential is None or os.environ.get("CREDENTIALS_DIRECTORY") or not problem.startswith("canvas.token_file"):
        return problem
    try:
        owner = user_name(deciding_folder(settings.state_file)[1].st_uid)
    except OSError:
        owner = "sisdaemon"
    how = instead_lines(owner, argv_with_config(args), credential=credential, as_root=False)
    return f"{problem}; sisdaemon {args.command} needs the token here: run it as {owner}{how}"


def load_settings(args: argparse.Namespace, **checks: bool) -> Settings:
    """:func:`load_checked`'s settings alone (the same keyword arguments, the same errors)."""
    return load_checked(args, **checks)[0]


def load_checked(
    args: argparse.Namespace,
    *,
    token_required: bool = True,
    token_used: bool = True,
    writes: bool = True,
    create_work_dirs: bool = True,
    hooks: bool = False,
) -> tuple[Settings, ConfigFile]:
    """Load and check the config named by ``args.config`` (static and run-time checks; the token too unless
    ``token_required`` is False). ``token_used``: the command reads the token at all (False for ``pause``,
    ``resume`` and a request to a running daemon: the token's source is then not looked at). ``writes``: the
    command writes state, so only the state folder's owner may run it (checked before the machine, whose access
    checks hold for this user alone). ``create_work_dirs``: make a missing work_dir (``run``, ``submit``), or only
    check that it can be made (``check-config``). ``hooks``: also check that each hook's program can be started
    (``check-config``; ``run`` starts without it).

    Raises ConfigError with every problem (a token that cannot be read for want of the service's credential says
    how to run the command with it); NotOwner when ``writes`` and this user does not own the state. Returns the
    settings and the file as read (its sha256: what a daemon started with them runs)."""
    config_path = Path(args.config)
    config_file = read_config_file(config_path)
    settings = settings_from(config_file)
    if writes:
        try:
            wrong = check_owner(settings.state_file)
        except OSError as error:
            raise ConfigError(config_path, [f"state_file: {settings.state_file}: {error.strerror}"]) from None
        if wrong is not None:
            credential = credential_name(settings) if token_used else None
            raise NotOwner(wrong.message(f"sisdaemon {args.command}", argv_with_config(args), credential=credential))
    problems = check_runtime(
        settings, token=token_required, create_work_dirs=create_work_dirs, check_token=token_used, check_hooks=hooks
    )
    if problems:
        raise ConfigError(config_path, [_with_recipe(problem, settings, args) for problem in problems])
    if token_required and token_used:
        try:
            remember_secret(read_token(settings.canvas))
        except TokenError as error:
            raise ConfigError(config_path, [_with_recipe(str(error), settings, args)]) from None
    return settings, config_file


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
