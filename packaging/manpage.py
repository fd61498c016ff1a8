"""Write sisdaemon(1) in roff to stdout, from the command's own argparse parser (``sisdaemon.cli.build_parser``).

Run at package build time by packaging/debian/rules with the virtualenv's Python; tests/install/test_manpage.py
runs it too. The options and commands come from the parser, so the man page cannot drift from ``--help``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

os.environ.pop("SISDAEMON_CONFIG", None)  # the parser reads it for -c's default; the page must not depend on it

import sisdaemon
from sisdaemon import __version__
from sisdaemon.cli import (
    EXIT_CONFIG,
    EXIT_DATAERR,
    EXIT_FAILED,
    EXIT_FAULT,
    EXIT_LOCKED,
    EXIT_NOPERM,
    EXIT_OK,
    EXIT_USAGE,
    build_parser,
)


def roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote that would read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line if line[:1] in (".", "'") else line) for line in text.splitlines())


def options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else str(action.metavar or action.dest.upper())
            label = ", ".join(
                f"\\fB{roff(option)}\\fR" + (f" \\fI{roff(metavar)}\\fR" if metavar else "")
                for option in action.option_strings
            )
        else:
            label = f"\\fI{roff(str(action.metavar or action.dest))}\\fR"
        help_text = (action.help or "") % {"default": action.default, "prog": parser.prog}
        lines += [".TP", label, roff(help_text)]
    return lines


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def manpage() -> str:
    parser = build_parser()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    date = datetime.datetime.fromtimestamp(epoch, datetime.UTC) if epoch else datetime.datetime.now(datetime.UTC)
    out = [
        f'.TH SISDAEMON 1 "{date:%Y-%m-%d}" "sisdaemon {__version__}" "User Commands"',
        ".SH NAME",
        "sisdaemon \\- " + roff((sisdaemon.__doc__ or "").removeprefix("sisdaemon: ").strip().rstrip(".")),
        ".SH SYNOPSIS",
        "\\fBsisdaemon\\fR [\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        roff(
            "sisdaemon watches drop folders that upstream systems fill over SFTP or rsync, submits each finished SIS "
            "CSV or zip file to Canvas LMS's SIS Import API, follows the import until Canvas finishes it, and files "
            "the file under done/ or failed/ beside a JSON sidecar (<name>.result.json) that says what happened. "
            "Under systemd, the template unit sisdaemon@.service runs one instance per /etc/sisdaemon/<instance>.yaml."
        ),
        ".SH OPTIONS",
        *options(parser),
        ".SH COMMANDS",
    ]
    for name, help_text, sub in subcommands(parser):
        usage = " ".join(sub.format_usage().split()).removeprefix("usage: ")
        out += [".SS " + roff(name), roff(help_text[:1].upper() + help_text[1:]) + ".", ".PP", roff(usage)]
        out += options(sub)
    out += [
        ".SH EXIT STATUS",
        ".TP",
        str(EXIT_OK),
        "All went well (for run \\-\\-once and submit: every file ended in done/).",
        ".TP",
        str(EXIT_FAILED),
        "At least one file ended in failed/.",
        ".TP",
        str(EXIT_USAGE),
        roff("Usage error, among them no -c and no $SISDAEMON_CONFIG."),
        ".TP",
        str(EXIT_FAULT),
        roff(
            "A fault of the system, credential or configuration that did not clear; a file still held or settling "
            "when --once gave up; status cannot read the state."
        ),
        ".TP",
        str(EXIT_DATAERR),
        roff(
            "EX_DATAERR: the state file or a feed's history file is damaged (the journal's state_damaged names the "
            "file and field; no job is lost: its file is still in work/). The unit does not restart on it."
        ),
        ".TP",
        str(EXIT_LOCKED),
        roff(
            "EX_CANTCREAT: another sisdaemon already holds this state's lock or the Canvas account's lock; the "
            "message names the lock and its holder. The unit does not restart on it (RestartPreventExitStatus=)."
        ),
        ".TP",
        str(EXIT_NOPERM),
        roff(
            "EX_NOPERM: run, submit, pause, resume, retry or abort by a user who does not own the state folder (root "
            "included): only its owner writes the state. The message names both users and the command to use "
            "instead: runuser -u sisdaemon -- sisdaemon pause -c /etc/sisdaemon/nightly.yaml nightly (or sudo -u), "
            "or, for a command that reads the token from the service's credential, systemd-run --pipe --wait "
            "-p User=sisdaemon -p LoadCredentialEncrypted=canvas-token sisdaemon .... The unit does not restart on it."
        ),
        ".TP",
        str(EXIT_CONFIG),
        roff(
            "EX_CONFIG: configuration error, one line per problem naming the file and the key. The unit does not "
            "restart on it."
        ),
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBSISDAEMON_CONFIG\\fR",
        "The config file when \\fB\\-c\\fR is not given.",
        ".TP",
        "\\fBCREDENTIALS_DIRECTORY\\fR",
        roff("Where a relative canvas.token_file is read from; systemd sets it for LoadCredentialEncrypted=."),
        ".SH FILES",
        ".TP",
        "\\fI/etc/sisdaemon/<instance>.yaml\\fR",
        roff("The config of the instance sisdaemon@<instance>."),
        ".TP",
        "\\fI/etc/sisdaemon/example.yaml\\fR",
        roff("An example config for the folders the package makes."),
        ".TP",
        "\\fI/var/lib/sisdaemon/<instance>/\\fR",
        roff("State, history and the state lock of an instance."),
        ".TP",
        "\\fI/var/spool/sisdaemon/<feed>/\\fR",
        roff("drop/ (written by group sisdaemon-upload), work-<feed>/, done/ and failed/ (read by sisdaemon-ops)."),
        ".TP",
        "\\fI/etc/credstore.encrypted/canvas-token\\fR",
        roff("The Canvas API token (systemd-creds encrypt)."),
        ".SH SEE ALSO",
        "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsystemd-creds\\fR(1), \\fBsystemd.exec\\fR(5), "
        "\\fBtmpfiles.d\\fR(5), \\fBsysusers.d\\fR(5); /usr/share/doc/sisdaemon/",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manpage())
