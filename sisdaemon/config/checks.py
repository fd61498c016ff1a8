"""What the configuration needs from this machine: the token source, ``ca_bundle``, the state file's and locks'
folders, each feed's folders (``work_dir`` created when missing, for ``run`` and ``submit`` only) and that files can
be renamed between them, and (for ``check-config``) that each hook's program can be started.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from sisdaemon.config.schema import FeedSettings, Settings
from sisdaemon.config.token import TokenError, read_token


def check_runtime(
    settings: Settings,
    *,
    rename: Callable[[Path, Path], None] = os.rename,
    token: bool = True,
    create_work_dirs: bool = True,
    check_token: bool = True,
    check_hooks: bool = False,
) -> list[str]:
    """Check what the configuration needs from this machine; one ``"<dotted.key>: <message>"`` per problem.

    Checks the token source (never quoting the token), ``ca_bundle``, the state file's folder, ``lock_dir`` (or
    the folder it would be created in), each feed's folders, and (``check_hooks``: ``check-config``) that its hooks'
    programs exist and are executable (``run`` starts without them: a hook is a notification, and one missing at
    run time is said as ``hook_not_started``). A missing ``work_dir`` whose parent exists is
    created (mode 0750) when ``create_work_dirs`` is true (``run``, ``submit``); when it is false
    (``check-config``, which changes nothing on the machine) its parent must be writable instead, and
    :func:`work_dirs_to_create` says what ``run`` will make. Proves that files can be renamed between a feed's
    folders: a probe file ``.sisdaemon-probe-<pid>-<random>`` goes from drop_dir into each other folder (a
    missing work_dir's parent in its place) and back, and is removed, leaving nothing behind. ``rename`` is
    replaceable for tests. ``token=False`` accepts a token file that may yet appear (missing, empty, unreadable):
    ``run`` waits for it as for any credential fault. ``check_token=False``: the command never reads the token
    (``pause``, ``resume``, a request to a running daemon), so its source is not looked at: a relative
    ``token_file`` then needs no ``$CREDENTIALS_DIRECTORY``.
    """
    problems: list[str] = []
    try:
        if check_token:
            read_token(settings.canvas)
    except TokenError as error:
        if token or not error.may_appear:
            problems.append(str(error))
    ca_bundle = settings.canvas.ca_bundle
    if ca_bundle is not None and not (ca_bundle.is_file() and os.access(ca_bundle, os.R_OK)):
        problems.append(f"canvas.ca_bundle: {ca_bundle} is not a readable file")
    if settings.state_file.is_dir():
        problems.append(f"state_file: {settings.state_file} is a folder")
    elif problem := _folder_problem(settings.state_file.parent, os.W_OK | os.X_OK):
        if "does not exist" in problem and settings.state_file.parent.is_relative_to("/var/lib"):
            # Under the template unit, systemd makes the instance's StateDirectory= at its first start.
            problem += " (the unit's StateDirectory= makes it at the first start; before that, make it by hand)"
        problems.append(f"state_file: the folder {problem}")
    existing = settings.lock_dir  # created with its parents when the lock is taken: check the nearest that exists
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if problem := _folder_problem(existing, os.W_OK | os.X_OK):
        creatable = "" if existing == settings.lock_dir else f"{settings.lock_dir} cannot be created: "
        problems.append(f"lock_dir: {creatable}{problem}")
    seen: dict[tuple[int, int], str] = {}
    for index, feed in enumerate(settings.feeds):
        problems += _check_feed(f"feeds[{index}]", feed, seen, rename, create_work_dirs)
        if check_hooks:
            problems += hook_problems(f"feeds[{index}]", feed)
    return problems


def hook_problems(prefix: str, feed: FeedSettings) -> list[str]:
    """One ``"<prefix>.hooks.on_finished: ..."`` per hook whose program (an absolute path: the schema requires it)
    does not exist or is not an executable file for this user; ``[]`` when every hook can be started."""
    problems: list[str] = []
    for key in ("on_finished", "on_failed"):
        argv = getattr(feed.hooks, key)
        if not argv:
            continue
        program = Path(argv[0])
        if not os.path.lexists(program):
            problems.append(f"{prefix}.hooks.{key}: {program} does not exist")
        elif not program.is_file():
            problems.append(f"{prefix}.hooks.{key}: {program} is not a file")
        elif not os.access(program, os.X_OK):
            problems.append(f"{prefix}.hooks.{key}: {program} is not executable by this user")
    return problems


def work_dirs_to_create(settings: Settings) -> list[str]:
    """One ``"feeds[i].work_dir: <path> does not exist; ..."`` note per missing work folder that ``run`` (or
    ``submit``) will create at start because its parent exists; ``[]`` when there is none."""
    return [
        f"feeds[{index}].work_dir: {feed.work_dir} does not exist; `sisdaemon run` creates it (mode 0750)"
        for index, feed in enumerate(settings.feeds)
        if _to_create(feed.work_dir)
    ]


def _to_create(path: Path) -> bool:
    return not os.path.lexists(path) and path.parent.is_dir()


def _folder_problem(path: Path, access: int = os.R_OK | os.W_OK | os.X_OK) -> str | None:
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            return f"{path} is not a folder"
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as error:
        return f"{path}: {error.strerror}"
    if not os.access(path, access):
        return f"{path} is not {'readable and writable' if access & os.R_OK else 'writable'} by this user"
    return None


def _check_feed(
    prefix: str,
    feed: FeedSettings,
    seen: dict[tuple[int, int], str],
    rename: Callable[[Path, Path], None],
    create_work_dirs: bool,
) -> list[str]:
    problems: list[str] = []
    probed = feed.folders()
    for key, path in feed.folders().items():
        if key == "work_dir" and _to_create(path):
            if not create_work_dirs:
                # Made by `run`: its parent must let it be made, and renames into the parent prove the mount.
                if problem := _folder_problem(path.parent, os.W_OK | os.X_OK):
                    problems.append(f"{prefix}.{key}: {path} cannot be created: {problem}")
                probed[key] = path.parent
                continue
            try:
                os.mkdir(path, 0o750)
                os.chmod(path, 0o750)  # mkdir's mode is reduced by the umask
            except OSError as error:
                problems.append(f"{prefix}.{key}: {path} cannot be created: {error.strerror}")
                continue
        if problem := _folder_problem(path):
            problems.append(f"{prefix}.{key}: {problem}")
            continue
        status = os.stat(path)
        if (identity := (status.st_dev, status.st_ino)) in seen:  # one folder, two names (a symlink)
            problems.append(f"{prefix}.{key}: {path} is the same folder as {seen[identity]}")
        seen.setdefault(identity, f"{prefix}.{key}")
    return problems or _probe_renames(prefix, feed, probed, rename)


def _probe_renames(
    prefix: str, feed: FeedSettings, folders: dict[str, Path], rename: Callable[[Path, Path], None]
) -> list[str]:
    """Move a probe file from drop_dir into each other folder of ``folders`` and back; rename(2) fails across
    mounts (EXDEV).

    Round trips through drop_dir prove every pair: two folders that each share drop_dir's mount share theirs.
    """
    name = f".sisdaemon-probe-{os.getpid()}-{secrets.token_hex(4)}"  # a dot-name: the watcher leaves it
    home = where = feed.drop_dir / name
    try:
        os.close(os.open(home, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except OSError as error:
        return [f"{prefix}.drop_dir: cannot create a probe file in {feed.drop_dir}: {error.strerror}"]
    problems: list[str] = []
    try:
        for key, folder in list(folders.items())[1:]:
            try:
                rename(where, folder / name)
                where = folder / name
                rename(where, home)
                where = home
            except OSError as error:
                why = error.strerror
                if error.errno == errno.EXDEV:
                    why = "not on one mount (a bind mount, as systemd's ReadWritePaths= makes, is another)"
                problems.append(f"{prefix}.{key}: files cannot be renamed between drop_dir and {folder}: {why}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(where)
    return problems
