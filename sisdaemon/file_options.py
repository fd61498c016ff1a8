"""Per-file options (pure): a file's Canvas sis_import options from its feed, its name and its params file.

A file's options start as its feed's ``import`` options (source ``feed``). A feed with ``term_from_name`` takes the
batch-mode term from the file name (``enrollments_{term}.csv`` -> ``batch_mode_term_id: sis_term_id:<term>``, and
``batch_mode: true``; source ``file_name``). A params file dropped beside the file (``<file name>.params.yaml``)
sets the keys the feed's ``allow_params`` lists (source ``params_file``), and wins over both. The result is checked
by the same rules as a feed's ``import`` section (config/schema.py ``ImportOptions``: Canvas's own combinations,
docs/canvas-api.md §1). Anything wrong refuses the file (``reason_code: params_refused``) with a reason naming the
params file, the key and its line.

What is worked out is kept in the job (``Job.file_options``, a JSON mapping; :func:`work_out`), so a restart sends
the same options. Nothing here touches the disk; params_files.py reads and moves the params file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from sisdaemon.config import FeedSettings, ImportOptions
from sisdaemon.config.loading import StrictLoader, describe_problem
from sisdaemon.config.term_pattern import term_in_name

#: A params file's name: its data file's whole name, then this (``enrollments.csv.params.yaml``). A name ending in it
#: (in any case) is never taken as a data file, whatever the feed's patterns.
PARAMS_SUFFIX = ".params.yaml"
#: The largest params file read (bytes): a few option lines; anything larger is refused, not read.
PARAMS_LIMIT = 64 * 1024

FEED, FILE_NAME, PARAMS_FILE = "feed", "file_name", "params_file"
"""Where an option came from, as the sidecar's ``import_options.sources`` says."""

_SOURCES_SAID = {FEED: "the feed's import section", FILE_NAME: "the file name (term_from_name)"}


class ParamsRefused(Exception):
    """A params file (or the options it leads to) that cannot be used; ``str()`` is the sidecar's ``reason``."""


def is_params_name(name: str) -> bool:
    """Whether a drop-folder name is a params file's (ends in ``.params.yaml``, ignoring case)."""
    return name.lower().endswith(PARAMS_SUFFIX)


def params_name_for(name: str) -> str:
    """The params file's name for the data file ``name``: ``users.csv`` -> ``users.csv.params.yaml``."""
    return name + PARAMS_SUFFIX


def data_name_for(params_name: str) -> str:
    """The data file's name a params file belongs to: ``users.csv.params.yaml`` -> ``users.csv``."""
    return params_name[: -len(PARAMS_SUFFIX)]


def parse_params(text: bytes, params_name: str, allowed_keys: Iterable[str]) -> dict[str, tuple[Any, int]]:
    """The options a params file sets: ``{key: (value as YAML gives it, line)}`` (lines from 1).

    The file is a YAML mapping of Canvas's sis_import option names to values, read as the configuration is
    (``true``/``false`` the only booleans, a key given twice an error); an empty file sets nothing. Values are
    checked later, with the feed's options (:func:`work_out`).

    Raises ParamsRefused naming ``params_name``, and the key and line where there is one: ``allowed_keys`` is empty
    (the feed takes no params file, whatever it holds), not UTF-8, bad YAML, not a mapping, a key that is not one of
    Canvas's sis_import options, or one the feed's ``allow_params`` leaves out.
    """
    allowed = set(allowed_keys)
    if not allowed:
        raise ParamsRefused(f"params file {params_name}: this feed takes no params file (its allow_params is empty)")
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamsRefused(f"params file {params_name}: is not UTF-8 text") from None
    loader = StrictLoader(source)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}" if mark else ""
        problem = "; ".join(filter(None, (error.context, error.problem)))
        raise ParamsRefused(f"params file {params_name}{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise ParamsRefused(f"params file {params_name}: not valid YAML: {' '.join(str(error).split())}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise ParamsRefused(f"params file {params_name}, line 1: must be a mapping of option: value lines")
    lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
    problems = []
    for key in data:
        line = lines.get(str(key), 1)
        if key not in ImportOptions.model_fields:
            problems.append(f"line {line}: {key!s}: unknown key, not one of Canvas's sis_import options")
        elif key not in allowed:
            listed = ", ".join(sorted(allowed))
            problems.append(f"line {line}: {key}: not allowed by the feed's allow_params ({listed})")
    if problems:
        raise ParamsRefused(f"params file {params_name}: " + "; ".join(problems))
    return {str(key): (value, lines.get(str(key), 1)) for key, value in data.items()}


def work_out(
    feed: FeedSettings,
    name: str,
    params: Mapping[str, tuple[Any, int]] | None = None,
    params_name: str | None = None,
) -> dict[str, Any]:
    """A file's options and where each came from, as kept in the job and shown in the sidecar:
    ``{"options": {Canvas name: value}, "sources": {Canvas name: "feed" | "file_name" | "params_file"},
    "params_file": params_name or None, "warnings": [text], "per_file": bool}``.

    ``name``: the file's own name (as dropped; for ``sisdaemon submit`` the operator's name). ``params``: what
    :func:`parse_params` read, or None without a params file. ``per_file`` is true when a params file or the file
    name set something, or the name should have and did not (a warning). Raises ParamsRefused when the options
    together break Canvas's rules or a value is wrong, naming the key, its line and where it came from.
    """
    options: dict[str, Any] = dict(feed.import_.set_options())
    sources = dict.fromkeys(options, FEED)
    warnings: list[str] = []
    unmatched = False  # term_from_name is set and the name does not match it (a warning, below)
    if feed.term_from_name is not None:
        term = term_in_name(feed.term_from_name, name)
        if term is None:
            unmatched = True
        else:
            if options.get("batch_mode") is not True:
                options["batch_mode"], sources["batch_mode"] = True, FILE_NAME
            options["batch_mode_term_id"], sources["batch_mode_term_id"] = f"sis_term_id:{term}", FILE_NAME
    for key, (value, _) in (params or {}).items():
        options[key], sources[key] = value, PARAMS_FILE
    try:
        checked = ImportOptions.model_validate(options)
    except ValidationError as error:
        problems = []
        for detail in error.errors(include_url=False):
            key = str(detail["loc"][0]) if detail["loc"] else ""
            said = describe_problem(detail)
            if sources.get(key) == PARAMS_FILE and params is not None:
                problems.append(f"line {params[key][1]}: {said}")
            else:
                problems.append(f"{said} (from {_SOURCES_SAID.get(sources.get(key, FEED), 'the feed')})")
        where = f"params file {params_name}: " if params_name else "this file's options: "
        raise ParamsRefused(where + "; ".join(problems)) from None
    effective = checked.set_options()
    if unmatched:  # say what was sent instead: a params file may have set batch mode itself
        sent = "no term was taken from it" if params else "sent with the feed's own options"
        no_batch = "" if params or effective.get("batch_mode") else " (no batch mode)"
        warnings.append(f"the file name does not match term_from_name {feed.term_from_name!r}: {sent}{no_batch}")
    return {
        "options": effective,
        "sources": {key: sources[key] for key in effective},
        "params_file": params_name,
        "warnings": warnings,
        "per_file": params is not None or any(source != FEED for source in sources.values()) or bool(warnings),
    }


def from_feed(feed: FeedSettings) -> dict[str, Any]:
    """A file's options when nothing of its own sets any: the feed's ``import`` options as they are now (in the
    shape :func:`work_out` returns, ``per_file`` false)."""
    options = feed.import_.set_options()
    return {
        "options": options,
        "sources": dict.fromkeys(options, FEED),
        "params_file": None,
        "warnings": [],
        "per_file": False,
    }


def for_attempt(recorded: Mapping[str, Any] | None, feed: FeedSettings, name: str) -> dict[str, Any]:
    """The options an upload of the file ``name`` sends: those recorded at the claim when the file has its own (a
    params file, a term from its name: a restart or a reload sends the same), else the feed's as they are now
    (:func:`from_feed`), with the term its name gives where the feed has ``term_from_name`` (a file claimed without
    it: ``sisdaemon retry``, or a claim recorded before the feed had one). Should the name's term not go with the
    feed's options (config/schema.py keeps that from happening), the feed's are sent, with the reason as a warning."""
    if recorded and recorded.get("per_file") and "options" in recorded:
        return dict(recorded)
    if feed.term_from_name is not None:
        try:
            return work_out(feed, name)
        except ParamsRefused as refused:
            return {**from_feed(feed), "warnings": [str(refused)], "per_file": True}
    return from_feed(feed)


def per_file_term(file_options: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """``(batch_mode_term_id, where it came from)`` when the file's term is its own (from its name or its params
    file, not the feed's config), else None: such a term is checked against Canvas's terms before the upload."""
    if not file_options:
        return None
    term = (file_options.get("options") or {}).get("batch_mode_term_id")
    source = (file_options.get("sources") or {}).get("batch_mode_term_id")
    if term is None or source not in (FILE_NAME, PARAMS_FILE):
        return None
    return str(term), str(source)


def form_fields(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The options as the POST's form fields (as ``ImportOptions.form_fields``): booleans ``"true"``/``"false"``,
    integers as digits, strings as they are; in the order given."""
    return [
        (name, ("true" if value else "false") if isinstance(value, bool) else str(value))
        for name, value in options.items()
    ]


def sidecar_section(file_options: Mapping[str, Any], params_in_folder: str | None) -> dict[str, Any]:
    """The sidecar's ``import_options``: ``{"options", "sources", "params_file", "warnings"}``; ``params_file`` is
    the params file's name beside the sidecar (``<filed name>.params.yaml``), or None."""
    return {
        "options": dict(file_options.get("options") or {}),
        "sources": dict(file_options.get("sources") or {}),
        "params_file": params_in_folder,
        "warnings": list(file_options.get("warnings") or []),
    }
