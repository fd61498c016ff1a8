"""``sisdaemon diff FILE [--feed F] [--against EARLIER] [--json]``: what a file changes since its feed imported the
same SIS types, before Canvas sees it.

Each SIS type the file holds is compared with the feed's last imported file that held that type (it stays in
done/ until retention removes it; the feed's history says which: :func:`sisdaemon.guard.diff_bases`, the shrink
guard's own baseline), so a file of users is compared with the last file of users, never with a file of courses
imported since. Types the file does not hold are not compared (Canvas does not touch them); a type the feed never
imported is said as such. Rows are keyed as Canvas keys them when it diffs (:func:`sisdaemon.sis_csv.compare_types`:
the files streamed, memory bounded), and for a batch-mode or diffing feed the rows Canvas would delete or set to the
drop status are named (guard.canvas_would). ``--against EARLIER`` compares with that one file, on the types both
hold. CSVs and zips alike.

Exit codes: 0 compared; 1 a file cannot be read; 2 no such feed (or several feeds and none named); 3 nothing to
compare with (the feed imported none of the file's types yet, or those files are no longer in done/); 78 a bad
config.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sisdaemon import guard, sis_csv
from sisdaemon.config import FeedSettings, ImportOptions, Settings
from sisdaemon.sis_csv.compare import KINDS
from sisdaemon.state import History, StateError, history_path

EXIT_OK = 0
EXIT_UNREADABLE = 1
EXIT_REFUSED = 2
EXIT_NOTHING = 3


def feed_for(settings: Settings, path: Path, name: str | None) -> FeedSettings | str:
    """The feed named ``name``; else the one whose folders hold ``path``; else the only feed. A str says why
    none."""
    feeds = {feed.name: feed for feed in settings.feeds}
    if name is not None:
        return feeds.get(name) or f"no feed named {name!r} (feeds: {', '.join(feeds)})"
    folder = os.path.abspath(path.parent)
    for feed in settings.feeds:
        if folder in {os.path.abspath(where) for where in feed.folders().values()}:
            return feed
    if len(feeds) == 1:
        return settings.feeds[0]
    return f"several feeds ({', '.join(feeds)}): name one with --feed"


def earlier_files(
    settings: Settings, feed: FeedSettings, path: Path
) -> tuple[dict[str, Path], dict[str, dict[str, Any]], dict[str, str]] | str:
    """Per SIS type ``path`` holds, the feed's last imported file in done/ that held it (:func:`guard.diff_bases`):
    ``(type -> its path, type -> its history entry, type -> why not compared)``, or why there is none at all.
    Raises StateError for a damaged history, OSError or zipfile.BadZipFile for a file that cannot be read."""
    records = History(history_path(settings.state_file, feed.name)).records
    if next(guard.imported(records), None) is None:
        return f"feed {feed.name} has imported no file yet: nothing to compare with"
    types = sorted(sis_csv.held_types(path))
    if not types:
        return f"{path} holds no SIS CSV Canvas knows: nothing to compare"
    compared, not_compared = guard.diff_bases(records, types, feed.done_dir)
    if not compared:
        return "nothing to compare with: " + "; ".join(f"{name}: {why}" for name, why in not_compared.items())
    return guard.base_paths(compared, feed.done_dir), compared, not_compared


def render(comparison: sis_csv.Comparison, summary: Mapping[str, Any]) -> str:
    """The comparison for people: the earlier file(s), one block per SIS type compared, the types not compared and
    why, then what Canvas would delete (said only when a type was compared)."""
    several = len({diff.against for diff in comparison.types.values()}) > 1
    if several:
        lines = [f"comparing {comparison.after}, each type with the last imported file that held it"]
    else:
        lines = [f"comparing {comparison.after} with {comparison.before or 'no earlier file'}"]
    for name, diff in comparison.types.items():
        head = f"{name}: {diff.before} -> {diff.after} rows"
        if several:
            lines.append(f"{name}: compared with {diff.against}")
        if not diff.key:
            lines.append(f"{head} (Canvas does not key {name} rows: counts only)")
            continue
        lines.append(
            f"{head} (key {', '.join(diff.key)}): {diff.added} added, {diff.removed} removed, {diff.changed} changed"
        )
        for kind in KINDS:
            shown = diff.examples.get(kind) or []
            if shown:
                more = getattr(diff, kind) - len(shown)
                lines.append(f"  {kind}: {'; '.join(shown)}" + (f" (and {more} more)" if more > 0 else ""))
        if diff.headers_differ:
            lines.append("  the two files' columns differ: Canvas does not diff this type (the file applies whole)")
        if diff.unkeyed or diff.duplicates:
            lines.append(f"  not compared: {diff.unkeyed} row(s) without an id, {diff.duplicates} repeated id(s)")
    for name, why in (summary.get("not_compared") or {}).items():
        lines.append(f"{name}: not compared: {why}")
    for problem in comparison.problems:
        lines.append(f"problem: {problem}")
    would = summary.get("canvas_would")
    if would:
        for name, item in would.items():
            lines.append(f"Canvas would set {item['rows']} {name} row(s) to {item['status']}")
    elif would is not None:
        lines.append("Canvas would delete nothing that the earlier file held of these types")
    return "\n".join(lines)


def run_diff(
    settings: Settings | None, path: Path, *, feed_name: str | None, against: Path | None, as_json: bool
) -> int:
    """Compare ``path`` with ``against`` or (with ``settings``) its feed's last imported file; print the result
    (``as_json``: ``{"comparison": Comparison.as_dict(), "summary": guard.diff_summary(...)}``). Returns the exit
    code (see the module's doc)."""
    options = ImportOptions()
    compared: dict[str, dict[str, Any]] = {}
    not_compared: dict[str, str] = {}
    bases: dict[str, Path] = {}
    feed: FeedSettings | str | None = None
    if settings is not None and (against is None or feed_name is not None):
        feed = feed_for(settings, path, feed_name)
        if isinstance(feed, str):
            print(f"sisdaemon diff: {feed}", file=sys.stderr)
            return EXIT_REFUSED
        options = feed.import_
    if against is None:
        assert isinstance(feed, FeedSettings) and settings is not None
        try:
            found = earlier_files(settings, feed, path)
        except StateError as error:
            print(f"sisdaemon diff: {error}", file=sys.stderr)
            return EXIT_NOTHING
        except (OSError, zipfile.BadZipFile) as error:
            print(f"sisdaemon diff: cannot read {getattr(error, 'filename', None) or path}: {error}", file=sys.stderr)
            return EXIT_UNREADABLE
        if isinstance(found, str):
            print(f"sisdaemon diff: {found}", file=sys.stderr)
            return EXIT_NOTHING
        bases, compared, not_compared = found
    try:
        if against is not None:
            comparison = sis_csv.compare_files(against, path, before_name=str(against), after_name=str(path))
            compared = {name: {"file": str(against)} for name in comparison.types}
        else:
            names = {base: str(base) for base in bases.values()}
            comparison = sis_csv.compare_types(bases, path, names=names, after_name=str(path))
    except (OSError, zipfile.BadZipFile) as error:
        print(f"sisdaemon diff: cannot read {getattr(error, 'filename', None) or path}: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    summary = guard.diff_summary(comparison, compared, not_compared, options)
    if not guard.watched(options):
        summary.pop("canvas_would", None)  # neither batch mode nor diffing: Canvas deletes nothing a file leaves out
    if as_json:
        print(json.dumps({"comparison": comparison.as_dict(), "summary": summary}, indent=2))
    else:
        print(render(comparison, summary))
    return EXIT_OK
