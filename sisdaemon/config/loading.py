"""Reading the configuration file: YAML (duplicate keys refused, YAML 1.2 booleans) -> :class:`Settings`.

:func:`load_config` reads one file (:func:`read_config_file`, then :func:`settings_from`: the bytes are read once
and their sha256 kept, so that what a daemon runs can be told from the file on disk), :func:`parse_config`
validates loaded data; all raise :class:`ConfigError`,
which turns pydantic's errors into one ``"<dotted.key>: <message>"`` line per problem, prefixed with the file.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from sisdaemon.config.schema import ConfigPath, Settings


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` holds every reason, each ``"<dotted.key>: <message>"``.

    ``str(error)`` is one line per problem, prefixed with the file: ``config.yaml: canvas.base_url: ...``.
    """

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.path}: {problem}" for problem in self.problems)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but only true/false are booleans (YAML 1.2: ``yes``, ``no``, ``on``, ``off`` stay
    strings, which a boolean key refuses) and a key given twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    message = f"duplicate key {key_node.value!r}"
                    raise yaml.constructor.ConstructorError(None, None, message, key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), None)


@dataclass(frozen=True)
class ConfigFile:
    """A configuration file as read once: its ``path``, its bytes (``data``), their ``sha256`` (64 hex digits) and
    the file's ``stamp`` (mtime in ns, size) taken before the read, so that a write during the read shows as a
    changed stamp at the next look. What a daemon runs is told by ``sha256``; the file is never quoted."""

    path: Path
    data: bytes
    sha256: str
    stamp: tuple[int, int]


def read_config_file(path: Path) -> ConfigFile:
    """Read the configuration file's bytes (one open, ``fstat`` then read).

    Raises:
        ConfigError: the file cannot be read (``cannot be read: <why>``).
    """
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            data = handle.read()
    except OSError as error:
        raise ConfigError(path, [f"cannot be read: {error.strerror or error}"]) from None
    return ConfigFile(path, data, hashlib.sha256(data).hexdigest(), (status.st_mtime_ns, status.st_size))


def settings_from(file: ConfigFile) -> Settings:
    """Validate a file read by :func:`read_config_file` into :class:`Settings` (relative paths in it are taken from
    the file's folder).

    Raises:
        ConfigError: every problem, one a line: not UTF-8; a YAML syntax error (``line L, column C: ...``); each
            key unknown, missing, of a wrong type or value, or in conflict.
    """
    data = _yaml_data(file)
    return parse_config(data, source=file.path, config_dir=Path(os.path.abspath(file.path)).parent)


def load_config(path: Path) -> Settings:
    """Read one YAML file into :class:`Settings`; relative paths in it are taken from the file's folder.

    Raises:
        ConfigError: every problem, one a line: the file cannot be read; a YAML syntax error
            (``line L, column C: ...``); each key unknown, missing, of a wrong type or value, or in conflict.
    """
    return settings_from(read_config_file(path))


def _yaml_data(file: ConfigFile) -> object:
    """The file's YAML as Python data. Raises ConfigError (not UTF-8, a YAML syntax error)."""
    path = file.path
    try:
        text = file.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, ["is not UTF-8 text"]) from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, [where + "; ".join(filter(None, (error.context, error.problem)))]) from None
    except yaml.YAMLError as error:
        raise ConfigError(path, [" ".join(str(error).split())]) from None


#: A top-level ``state_file:`` line, for a file whose YAML does not parse (``state_file_of``).
_STATE_FILE_LINE = re.compile(r"""^state_file:[ \t]*(["']?)([^"'#\r\n]*?)\1[ \t]*(?:#.*)?$""", re.MULTILINE)


def state_file_of(file: ConfigFile) -> Path | None:
    """Where the state file of a configuration that does not load would be, as far as the file tells: its
    ``state_file`` key (from a top-level ``state_file:`` line when the YAML itself does not parse), resolved as
    the loader resolves it, or the default when the file names none. None when that key is itself wrong or the
    file is not UTF-8. For ``status`` and ``check``, which look for a daemon still running on an older version."""
    try:
        text = file.data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    default = Settings.model_fields["state_file"].default
    raw: object = default
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        if (match := _STATE_FILE_LINE.search(text)) is not None:
            raw = match.group(2)
    else:
        if isinstance(data, dict):
            raw = data.get("state_file", default)
    instance = instance_name(file.path)
    context = {"config_dir": str(Path(os.path.abspath(file.path)).parent), "instance": instance}
    try:
        return TypeAdapter(ConfigPath).validate_python(raw, context=context)
    except ValidationError:
        return None


def instance_name(source: Path) -> str:
    """The instance that ``%i`` stands for: the config file's name without ``.yaml`` (systemd's ``%i``)."""
    return source.name.rsplit(".", 1)[0] if source.name.endswith((".yaml", ".yml")) else source.name


def parse_config(data: object, *, source: Path, config_dir: Path | None = None) -> Settings:
    """Validate loaded YAML data (a dict) into :class:`Settings`; tests of other modules can use it directly.

    ``source`` names the file in errors; ``%i`` in a path is its name without ``.yaml`` (the instance). Relative
    paths are resolved against ``config_dir`` (default: the working directory).

    Raises:
        ConfigError: listing every problem, each ``"<dotted.key>: <message>"``.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, [f"must be a mapping of keys (canvas:, feeds:, ...), not {_kind(data)}"])
    # The instance name that "%i" in a path stands for: the config file's name without its extension, as the template
    # unit runs /etc/sisdaemon/%i.yaml.
    context = {"config_dir": str(config_dir) if config_dir else None, "instance": instance_name(source)}
    try:
        return Settings.model_validate(data, context=context)
    except ValidationError as error:
        raise ConfigError(source, [_describe(detail) for detail in error.errors(include_url=False)]) from None


def _kind(value: object) -> str:
    if value is None:
        return "an empty value"
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list"}
    return kinds.get(type(value), "a mapping" if isinstance(value, dict) else f"a {type(value).__name__}")


def _number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value  # 0, not 0.0


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _describe(detail: Any) -> str:
    """One ``"<dotted.key>: <message>"`` line for a pydantic error, never quoting the value."""
    loc, ctx, got = tuple(detail["loc"]), detail.get("ctx") or {}, _kind(detail.get("input"))
    messages = {
        "missing": "required",
        "bool_type": f"must be true or false, not {got}",
        "int_type": f"must be a whole number, not {got}",
        "float_type": f"must be a number, not {got}",
        "string_type": f"must be a string, not {got}",
        "is_instance_of": f"must be a path, not {got}",
        "model_type": f"must be a mapping (key: value lines), not {got}",
        "tuple_type": f"must be a list, not {got}",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "finite_number": "must be a finite number",
        "greater_than": f"must be greater than {_number(ctx.get('gt'))}",
        "greater_than_equal": f"must be at least {_number(ctx.get('ge'))}",
        "less_than_equal": f"must be at most {_number(ctx.get('le'))}",
        "too_short": "must not be empty",
        "string_too_short": "must not be empty",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
    }
    message = messages.get(detail["type"], detail["msg"])
    if detail["type"] == "extra_forbidden":
        known = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        message = f"unknown key (did you mean {close[0]}?)" if close else f"unknown key; known: {', '.join(known)}"
    return f"{_dotted(loc)}: {message}"


def _keys_at(loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed at a location: ``("feeds", 0, "import")`` gives ImportOptions' keys."""
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, str) and model is not None:
            field = next((f for name, f in model.model_fields.items() if (f.alias or name) == part), None)
            model = _model_in(field.annotation) if field else None
    return [field.alias or name for name, field in model.model_fields.items()] if model else []


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in typing.get_args(annotation) if (found := _model_in(arg))), None)


#: The loader of the configuration (YAML 1.2 booleans, duplicate keys refused), for other YAML the daemon reads
#: (a params file: file_options.py).
StrictLoader = _Loader


def describe_problem(detail: Any) -> str:
    """One ``"<dotted.key>: <message>"`` line for one of pydantic's error details (``ValidationError.errors()``),
    never quoting the value: as the configuration's problems are said."""
    return _describe(detail)
