"""Config drift: is the configuration file on disk the one the running daemon loaded, and would it start? (pure)

A sysadmin edits ``/etc/sisdaemon/<instance>.yaml``: the daemon notices a saved file and reloads it (daemon.py),
but a broken edit leaves it running on the version it loaded before, an edit that keeps the file's mtime and size
is not noticed, and some keys (``canvas``, a feed's folders, ...) wait for a restart (reload.py). Nothing of that
shows until the next restart fails. So the daemon records what it runs in its heartbeat file (heartbeat.py): the
file's path, the sha256 of the bytes it loaded, when, and the keys waiting for a restart (:class:`RunningConfig`);
``status`` and ``check`` read the file on disk, validate it with the loader (config/loading.py) and compare
(:func:`compare`). The findings never quote the file: a problem names its key, as the loader says it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The findings' codes, as ``status`` and the docs name them.
CONFIG_CHANGED = "config_changed"
CONFIG_WOULD_FAIL_AT_START = "config_would_fail_at_start"
CONFIG_NEEDS_RESTART = "config_needs_restart"


@dataclass(frozen=True)
class RunningConfig:
    """What a running daemon loaded: the config file's ``path``, the ``sha256`` of its bytes (64 hex digits),
    ``loaded_at`` (seconds since the epoch: at start, or at the last reload that applied), and
    ``pending_restart``: dotted keys the file changed that apply only at a restart (reload.py's plan)."""

    path: str
    sha256: str
    loaded_at: float
    pending_restart: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The record as the heartbeat file keeps it: ``{"path", "sha256", "loaded_at", "pending_restart"}``."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "loaded_at": self.loaded_at,
            "pending_restart": list(self.pending_restart),
        }

    @classmethod
    def from_dict(cls, data: object) -> RunningConfig | None:
        """The record from :meth:`to_dict`'s shape, or None when ``data`` is not one (read defensively: an older
        sisdaemon wrote none)."""
        if not isinstance(data, Mapping):
            return None
        path, sha256, loaded_at = data.get("path"), data.get("sha256"), data.get("loaded_at")
        pending = data.get("pending_restart", [])
        if not isinstance(path, str) or not isinstance(sha256, str) or not isinstance(pending, list):
            return None
        if isinstance(loaded_at, bool) or not isinstance(loaded_at, int | float):
            return None
        return cls(path, sha256, float(loaded_at), tuple(str(key) for key in pending))


@dataclass(frozen=True)
class Finding:
    """One thing to say: ``code`` (:data:`CONFIG_CHANGED`, :data:`CONFIG_WOULD_FAIL_AT_START`,
    :data:`CONFIG_NEEDS_RESTART`), ``critical`` (a start would fail) and ``text``, a sentence that starts with the
    code."""

    code: str
    critical: bool
    text: str


@dataclass(frozen=True)
class Drift:
    """The file on disk against what the daemon runs. ``path``: the file; ``file_sha256``: its bytes' sha256 now;
    ``running``: what the running daemon loaded (None: no daemon runs, or it records nothing); ``would_fail``: the
    loader's problems with the file on disk (``"<dotted.key>: <message>"``; empty when it loads); ``instance``:
    the unit's instance (the file's name without ``.yaml``), for the hints."""

    path: str
    file_sha256: str
    running: RunningConfig | None
    would_fail: tuple[str, ...]
    instance: str

    @property
    def changed(self) -> bool:
        """The file's bytes are not those the running daemon loaded (False when no daemon runs)."""
        return self.running is not None and self.running.sha256 != self.file_sha256

    @property
    def needs_restart(self) -> tuple[str, ...]:
        """Keys of the version the daemon runs that apply only at a restart (none while the file changed since:
        what that version holds is not what waits)."""
        if self.running is None or self.changed:
            return ()
        return self.running.pending_restart

    def findings(self) -> list[Finding]:
        """What ``status`` says, one sentence a line: a start that would fail (a summary, then one line per
        problem naming its key), a changed file, keys waiting for a restart; empty when the file on disk is what
        runs."""
        found: list[Finding] = []
        check = f"sisdaemon check-config -c {self.path}"
        if self.would_fail:
            now = (
                f"the daemon runs the version it loaded at {_iso(self.running.loaded_at)}"
                if self.running is not None
                else "no daemon runs on it now"
            )
            found.append(
                Finding(
                    CONFIG_WOULD_FAIL_AT_START,
                    True,
                    f"{CONFIG_WOULD_FAIL_AT_START}: {self.path} does not load: the next start of sisdaemon@"
                    f"{self.instance} would fail (exit 78); {now}; fix the file (`{check}` lists the problems)",
                )
            )
            found += [
                Finding(CONFIG_WOULD_FAIL_AT_START, True, f"{CONFIG_WOULD_FAIL_AT_START}: {p}") for p in self.would_fail
            ]
        if self.changed and self.running is not None:
            apply = (
                "fix it first"
                if self.would_fail
                else f"check it with `{check}`, then apply it with `systemctl reload sisdaemon@{self.instance}`"
            )
            found.append(
                Finding(
                    CONFIG_CHANGED,
                    False,
                    f"{CONFIG_CHANGED}: {self.path} changed on disk since the daemon loaded it at "
                    f"{_iso(self.running.loaded_at)} (sha256 {_short(self.running.sha256)}, now "
                    f"{_short(self.file_sha256)}): it runs the older version; {apply}",
                )
            )
        if keys := self.needs_restart:
            found.append(
                Finding(
                    CONFIG_NEEDS_RESTART,
                    False,
                    f"{CONFIG_NEEDS_RESTART}: {', '.join(keys)} changed in {self.path} but apply only at a restart "
                    f"(the daemon runs the values it started with): `systemctl restart sisdaemon@{self.instance}`",
                )
            )
        return found

    def probe_problems(self) -> list[Finding]:
        """What ``check`` says, shorter (its answer is one line): a start that would fail (critical, every problem
        in one sentence), a changed file, keys waiting for a restart."""
        found: list[Finding] = []
        if self.would_fail:
            found.append(
                Finding(
                    CONFIG_WOULD_FAIL_AT_START,
                    True,
                    f"config would fail at start ({self.path}): {'; '.join(self.would_fail)}",
                )
            )
        if self.changed and self.running is not None:
            found.append(
                Finding(
                    CONFIG_CHANGED,
                    False,
                    f"config changed on disk since the daemon loaded it at {_iso(self.running.loaded_at)}: "
                    f"systemctl reload sisdaemon@{self.instance}",
                )
            )
        if keys := self.needs_restart:
            found.append(
                Finding(
                    CONFIG_NEEDS_RESTART,
                    False,
                    f"config keys wait for a restart: {', '.join(keys)}: systemctl restart sisdaemon@{self.instance}",
                )
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        """``status --json``'s ``daemon.config``: ``{"path", "file_sha256", "running_sha256", "loaded_at",
        "config_changed", "config_would_fail_at_start", "config_needs_restart"}`` (``loaded_at`` ISO 8601 UTC;
        the running fields null when no daemon records one)."""
        running = self.running
        return {
            "path": self.path,
            "file_sha256": self.file_sha256,
            "running_sha256": running.sha256 if running else None,
            "loaded_at": _iso(running.loaded_at) if running else None,
            CONFIG_CHANGED: self.changed,
            CONFIG_WOULD_FAIL_AT_START: list(self.would_fail),
            CONFIG_NEEDS_RESTART: list(self.needs_restart),
        }


def compare(
    *, path: str, file_sha256: str, running: RunningConfig | None, problems: Sequence[str], instance: str
) -> Drift:
    """Judge the file on disk (``file_sha256``, and the loader's ``problems`` with it) against what the running
    daemon loaded (``running``: None when no daemon runs or it records nothing). Pure; see :class:`Drift`."""
    return Drift(path, file_sha256, running, tuple(problems), instance)


def _short(sha256: str) -> str:
    return sha256[:12]


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
