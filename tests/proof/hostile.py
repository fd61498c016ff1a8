"""Hostile inputs for a drop folder, each with the end state README.md "Folders" and docs/design.md "Folders, names and
what is taken" give it.

:func:`make_hostile_inputs` writes them into a drop folder and returns their declarations; a test runs one daemon over
all of them and checks each ends as declared. Names are ``str`` as Python keeps file names (bytes that are not UTF-8
as lone surrogates, :func:`os.fsdecode`).

End states (``Expect.where``):

- ``done`` / ``failed``: taken and filed there, with ``outcome`` one of ``outcomes`` and ``reason_code`` as given;
  ``content`` (when set) is the exact bytes the import and the filed file must hold.
- ``canvas``: taken, sent whole, and filed by Canvas's verdict (done/ for ``imported*``, failed/ for ``failed*``).
- ``drop``: never taken: still in the drop folder under its own name, nothing sent for it.
- ``gone``: upstream deleted it before it settled: in no folder, nothing sent for it.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HEADER = b"user_id,login_id,first_name,last_name,email,status\n"

#: The sandbox's (and Canvas's) verdicts for files Canvas reads and refuses: a file-level failure.
FAILED_BY_CANVAS = frozenset({"failed", "failed_with_messages"})
IMPORTED = frozenset({"imported"})
IMPORTED_ANYHOW = frozenset({"imported", "imported_with_messages"})


def users(seed: str, count: int = 2) -> bytes:
    """A valid users.csv with ``count`` rows whose ids start with ``seed``."""
    return HEADER + b"".join(
        b"%s%d,%s%d,First,Last,%s%d@example.edu,active\n" % (seed.encode(), n, seed.encode(), n, seed.encode(), n)
        for n in range(count)
    )


@dataclass(frozen=True)
class Expect:
    """Where an input ends (``done``, ``failed``, ``drop`` or ``gone``) and, when filed, how."""

    where: str
    outcomes: frozenset[str] = frozenset()
    reason_code: str | None = None


TAKEN = Expect("done", IMPORTED)
LEFT = Expect("drop")
NOT_REGULAR = Expect("failed", frozenset({"rejected"}), "not_regular_file")
EMPTY = Expect("failed", frozenset({"rejected"}), "empty_file")
REFUSED_BY_CANVAS = Expect("failed", FAILED_BY_CANVAS, "canvas_errors")
#: Sent whole and filed by Canvas's verdict, whichever it is (the docs promise no verdict, only the folder that
#: follows from it): done/ for imported*, failed/ for failed*.
CANVAS_DECIDES = Expect("canvas", IMPORTED_ANYHOW | FAILED_BY_CANVAS)


@dataclass
class Hostile:
    """One hostile input: its name in drop/, what it is, where it must end, the bytes an import must hold (taken
    files), and what upstream does to it while it settles (``during(drop)``, run once the daemon watches)."""

    name: str
    what: str
    expect: Expect
    content: bytes | None = None
    during: Callable[[Path], None] | None = None


def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return buffer.getvalue()


def _zip_with_symlink_member(name: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
        info.create_system = 3  # unix: external_attr carries the mode
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    """A zip of about 24 KB that inflates to 24 MB (ratio about 1000:1): one users.csv of NUL bytes."""
    buffer = io.BytesIO()
    member = zipfile.ZipInfo("users.csv", date_time=(2026, 1, 1, 0, 0, 0))
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open(member, "w", force_zip64=True) as out,
    ):
        chunk = b"\0" * (1 << 20)
        for _ in range(24):
            out.write(chunk)
    return buffer.getvalue()


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


def _replace(name: str, data: bytes) -> Callable[[Path], None]:
    """Upstream writes the file again under a temp name and renames it over the old one (a new inode)."""

    def act(drop: Path) -> None:
        temp = drop / f".{name}.again"
        temp.write_bytes(data)
        os.rename(temp, drop / name)

    return act


def _truncate(name: str, size: int) -> Callable[[Path], None]:
    def act(drop: Path) -> None:
        os.truncate(drop / name, size)

    return act


def _delete(name: str) -> Callable[[Path], None]:
    def act(drop: Path) -> None:
        os.unlink(drop / name)

    return act


def _immutable(path: Path, data: bytes) -> bool:
    """Write ``path`` and make it immutable (chattr +i); False where the filesystem does not allow it."""
    path.write_bytes(data)
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    if not done:
        path.unlink()
    return done


def release_immutable(drop: Path) -> None:
    """Undo :func:`_immutable` so the test's temp folder can be removed."""
    path = drop / "immutable.csv"
    if path.exists() and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)


def make_hostile_inputs(drop: Path, outside: Path) -> list[Hostile]:
    """Write the hostile inputs into ``drop`` (``outside``: a folder beside it for link targets and the like) and
    return their declarations. At least 30; every one is in ``drop`` when this returns."""
    outside.mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    inputs: list[Hostile] = []

    def add(name: str, what: str, expect: Expect, data: bytes | None, **kwargs: object) -> None:
        if data is not None:
            _write(drop / name, data)
        content = data if expect.where in ("done", "canvas") else None
        inputs.append(Hostile(name, what, expect, kwargs.pop("content", content), **kwargs))  # type: ignore[arg-type]

    # --- contents Canvas must judge (sent whole; a fault of the file goes to failed/) -------------------------------
    add("empty.csv", "0 bytes", EMPTY, b"")
    add("junk.csv", "binary junk named .csv", REFUSED_BY_CANVAS, bytes(range(256)) * 64 + b"\xff\xfe\x80\x81")
    add(
        "utf16.csv",
        "UTF-16 with a BOM (Excel's 'Unicode Text')",
        REFUSED_BY_CANVAS,
        b"\xff\xfe" + users("w").decode().encode("utf-16-le"),
    )
    add(
        "nul.csv",
        "NUL bytes in the middle of rows",
        CANVAS_DECIDES,
        users("n").replace(b",First,", b",Fi\0rst,"),
    )
    add("oneline.csv", "a single 10 MB line with no newline", REFUSED_BY_CANVAS, b"a" * (10 * 1024 * 1024))
    add("bomb.zip", "a zip bomb: 24 KB inflating to 24 MB", Expect("failed", FAILED_BY_CANVAS, None), _zip_bomb())
    add("dotdot.zip", "a zip with a ../ member", CANVAS_DECIDES, _zip({"../../evil.csv": users("d")}))
    add(
        "absolute.zip",
        "a zip with an absolute member",
        CANVAS_DECIDES,
        _zip({"/tmp/sisdaemon-absolute-evil.csv": users("a")}),
    )
    add(
        "zipslink.zip",
        "a zip whose member is a symlink to /etc/passwd",
        Expect("failed", FAILED_BY_CANVAS),
        _zip_with_symlink_member("users.csv", "/etc/passwd"),
    )
    add("notazip.zip", "junk named .zip", Expect("failed", FAILED_BY_CANVAS), b"this is not a zip at all\n")
    add(
        "fakezip.csv",
        "a zip signature then junk, named .csv",
        Expect("failed", FAILED_BY_CANVAS),
        b"PK\x03\x04" + b"\x00\x01junk" * 100,
    )
    add("header-only.csv", "a header and no rows (a real input: sent)", TAKEN, HEADER)
    add("bom.csv", "UTF-8 with a BOM and CRLF line ends", TAKEN, b"\xef\xbb\xbf" + users("b").replace(b"\n", b"\r\n"))
    add(
        "realzip.csv",
        "a real zip of users.csv named .csv (sent as a zip, by content)",
        TAKEN,
        _zip({"users.csv": users("z")}),
    )
    add("UPPER.CSV", "an upper-case extension (patterns match any case)", TAKEN, users("u"))

    # --- names ---------------------------------------------------------------------------------------------------
    add("new\nline.csv", "a name with a newline", TAKEN, users("nl"))
    add("carriage\rreturn.csv", "a name with a carriage return", TAKEN, users("cr"))
    add(os.fsdecode(b"caf\xe9-latin1.csv"), "a name that is not UTF-8", TAKEN, users("l1"))
    add("-rf --no-preserve-root.csv", "a name with leading dashes", TAKEN, users("dash"))
    add("  spaced  name .csv", "a name with spaces, leading and inside", TAKEN, users("sp"))
    add("$(touch pwned);`id`.csv", "a name of shell metacharacters", TAKEN, users("sh"))
    add("\u202egnp.csv", "a name with a right-to-left override", TAKEN, users("rtl"))
    add("x" * 246 + ".csv", "a 250-byte name (NAME_MAX is 255: no room for the work prefix)", TAKEN, users("long"))
    add("y" * 251 + ".csv", "a 255-byte name, the longest there is", TAKEN, users("max"))
    add("\u00e9" * 125 + ".csv", "a 254-byte name of 2-byte UTF-8 characters", TAKEN, users("wide"))

    # --- never taken ---------------------------------------------------------------------------------------------
    add("users.csv.part", "a .part upload", LEFT, users("p1"))
    add("users.csv.filepart", "a WinSCP .filepart upload", LEFT, users("p2"))
    add("users.csv.tmp", "a .tmp upload", LEFT, users("p3"))
    add("users.csv~", "an editor's backup~", LEFT, users("p4"))
    add(".users.csv", "a dot-name", LEFT, users("p5"))
    add(".users.csv.Xa81bQ", "rsync's dot-temp file", LEFT, users("p6"))
    add("notes.txt", "a name no pattern matches", LEFT, users("p7"))
    add("users.csv ", "a trailing space after .csv (no pattern matches)", LEFT, users("p8"))
    add("USERS.CSV.PART", "an upper-case .PART upload", LEFT, users("p9"))
    add(".csv", "a name that is only the extension (a dot-name)", LEFT, users("p10"))
    (drop / "folder.csv").mkdir()
    (drop / "folder.csv" / "inner.csv").write_bytes(users("in"))
    add("folder.csv", "a folder named like a CSV (with a CSV inside)", LEFT, None)

    # --- not regular files: moved to failed/ as themselves -------------------------------------------------------
    (drop / "target.txt").write_bytes(users("tg"))
    os.symlink("target.txt", drop / "link-in.csv")
    add("link-in.csv", "a symlink to a file in the drop folder", NOT_REGULAR, None)
    inputs.append(Hostile("target.txt", "the in-link's target (no pattern: left)", LEFT))
    os.symlink("/etc/passwd", drop / "passwd.csv")
    add("passwd.csv", "a symlink out, to /etc/passwd", NOT_REGULAR, None)
    os.symlink(outside / "nowhere.csv", drop / "dangling.csv")
    add("dangling.csv", "a dangling symlink", NOT_REGULAR, None)
    os.symlink("loop.csv", drop / "loop.csv")
    add("loop.csv", "a symlink to itself", NOT_REGULAR, None)
    os.symlink(outside, drop / "dirlink.csv")
    add("dirlink.csv", "a symlink to a folder", NOT_REGULAR, None)
    os.mkfifo(drop / "pipe.csv")
    add("pipe.csv", "a FIFO (never opened for reading: it would block)", NOT_REGULAR, None)
    os.mknod(drop / "sock.csv", stat.S_IFSOCK | 0o600)  # a socket inode, as bind(2) leaves one
    add("sock.csv", "a Unix socket", NOT_REGULAR, None)
    if root:
        os.mknod(drop / "null.csv", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        add("null.csv", "a character device (like /dev/null)", NOT_REGULAR, None)

    # --- links and permissions -----------------------------------------------------------------------------------
    (outside / "original.csv").write_bytes(users("hl"))
    os.link(outside / "original.csv", drop / "hardlink.csv")
    add("hardlink.csv", "a hard link to a file outside the drop folder", TAKEN, None, content=users("hl"))
    _write(drop / "twin-a.csv", users("tw"))
    os.link(drop / "twin-a.csv", drop / "twin-b.csv")
    add("twin-a.csv", "one of two names of one inode in drop/", TAKEN, None, content=users("tw"))
    add("twin-b.csv", "the other name of that inode", TAKEN, None, content=users("tw"))
    unreadable = users("ur")
    _write(drop / "unreadable.csv", unreadable, 0o000)
    if root:  # root reads a mode-000 file: the daemon can read it, so it is taken
        add("unreadable.csv", "mode 000 (root reads it anyway)", TAKEN, None, content=unreadable)
    else:
        add("unreadable.csv", "mode 000: left alone and logged once", LEFT, None)
    add("setuid.csv", "mode 4777 (odd modes do not matter)", TAKEN, None, content=users("su"))
    _write(drop / "setuid.csv", users("su"), 0o4777)

    _write(drop / "future.csv", users("fu"))
    os.utime(drop / "future.csv", (4_102_444_800, 4_102_444_800))  # 2100: settling goes by the daemon's clock
    add("future.csv", "an mtime in 2100", TAKEN, None, content=users("fu"))
    _write(drop / "epoch.csv", users("ep"))
    os.utime(drop / "epoch.csv", (0, 0))
    add("epoch.csv", "an mtime of 0 (1970)", TAKEN, None, content=users("ep"))
    if root and shutil.which("chattr") and _immutable(drop / "immutable.csv", users("im")):
        # It can be read but never renamed (EPERM): the docs imply what they say of a file that cannot be read.
        add("immutable.csv", "immutable (chattr +i): readable, never movable", LEFT, None)

    # --- changed by upstream while it settles --------------------------------------------------------------------
    add("deleted.csv", "deleted while it settles", Expect("gone"), users("del"), during=_delete("deleted.csv"))
    add(
        "replaced.csv",
        "replaced while it settles (same name, new inode)",
        TAKEN,
        users("old"),
        content=users("new", 3),
        during=_replace("replaced.csv", users("new", 3)),
    )
    add(
        "truncated.csv",
        "truncated while it settles",
        TAKEN,
        users("tr", 4),
        content=users("tr", 4)[: len(users("tr", 2))],
        during=_truncate("truncated.csv", len(users("tr", 2))),
    )
    add("emptied.csv", "truncated to 0 bytes while it settles", EMPTY, users("em"), during=_truncate("emptied.csv", 0))

    def grow(drop: Path) -> None:
        with open(drop / "appended.csv", "ab") as out:
            out.write(b"late1,late1,First,Last,late1@example.edu,active\n")

    add(
        "appended.csv",
        "appended to while it settles",
        TAKEN,
        users("ap"),
        content=users("ap") + b"late1,late1,First,Last,late1@example.edu,active\n",
        during=grow,
    )
    return inputs
