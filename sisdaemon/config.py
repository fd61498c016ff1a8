"""YAML configuration -> frozen, validated settings; every problem names the file and the dotted key.

- ``load_config(path)`` reads one YAML file into :class:`Settings` or raises :class:`ConfigError` listing
  every problem at once (``config.yaml: feeds[0].import.change_threshold: required when batch_mode is true``).
  It reads that file and nothing else.
- ``check_runtime(settings)`` looks at the machine (folders, the rename probe, the token source) and returns
  one ``"<dotted.key>: <message>"`` string per problem, ``[]`` when all is well.
- ``read_token(settings.canvas)`` returns the Canvas API token, or raises :class:`TokenError`, whose message
  names the key and the source but never the token.

Every key, its type and default: ``docs/configuration.md`` and ``config.example.yaml``.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import ipaddress
import os
import re
import secrets
import stat
import typing
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

FOLDER_KEYS = ("drop_dir", "work_dir", "done_dir", "failed_dir")
"""A feed's four folders, in the order a file passes through them."""
DIFFING_OPTIONS = ("diffing_remaster_data_set", "diffing_drop_status", "diffing_user_remove_status")
"""Options Canvas reads only with a diffing_data_set_identifier (diff_row_count_threshold too)."""

Problems = list[tuple[tuple[str | int, ...], str]]


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


class TokenError(Exception):
    """The Canvas token cannot be read: ``"<key>: <message>"``, naming the source, never the token itself."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


# --- field types --------------------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    # A PydanticCustomError keeps the message as it is (a ValueError would get a "Value error, " prefix).
    raise PydanticCustomError("config", "{message}", {"message": message})


def _raise_all(title: str, problems: Problems) -> None:
    """Report several cross-field problems at once, each at its own key (relative to the model checked).

    pydantic-core merges a ValidationError raised in a validator into the outer one, prefixing the locations.
    """
    if problems:
        details = [
            InitErrorDetails(type=PydanticCustomError("config", "{message}", {"message": text}), loc=loc, input=None)
            for loc, text in problems
        ]
        raise ValidationError.from_exception_data(title, details)


def _to_path(value: object) -> object:
    if isinstance(value, str):
        if not value.strip():
            _fail("must not be empty")
        if value.startswith("~"):
            _fail("~ is not expanded here; give the full path")
    # Anything but a string or a path is left to the strict Path check, which names its type.
    return Path(value) if isinstance(value, str | PurePath) else value


def _absolute(value: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the config file's folder (without a file: the working directory)."""
    base = (info.context or {}).get("config_dir") or os.getcwd()
    return Path(os.path.normpath(os.path.join(base, value)))


def _list_to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _int_to_str(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _matching(pattern: str, message: str) -> AfterValidator:
    def check(value: str) -> str:
        return value if re.fullmatch(pattern, value, re.ASCII) else _fail(message)  # ASCII: \d is not "١٢"

    return AfterValidator(check)


def _is_loopback(host: str) -> bool:
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8, ::1
    except ValueError:
        return False


def _base_url(value: str) -> str:
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        _fail("is not a valid URL")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        _fail("must be an https:// URL, e.g. https://myschool.instructure.com")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        _fail("http:// is allowed only for localhost, 127.0.0.0/8 and ::1; use https://")
    if parts.username is not None or parts.query or parts.fragment:
        _fail("must not contain a user name, password, ?query or #fragment")
    path = parts.path.rstrip("/")
    if path.lower().endswith("/api/v1"):
        _fail("give the instance URL without /api/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


ConfigPath = Annotated[Path, BeforeValidator(_to_path), AfterValidator(_absolute)]
"""A path; a relative one is resolved against the config file's folder."""
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A duration in seconds, a finite number > 0 (YAML ints are accepted)."""
_TERM_ID_MESSAGE = 'must be a term id (digits) or "sis_term_id:<id>"'
TermId = Annotated[str, BeforeValidator(_int_to_str), _matching(r"\d+|sis_term_id:.+", _TERM_ID_MESSAGE)]
"""A Canvas term: its id (a YAML int is taken as its digits) or ``sis_term_id:<id>``."""
_ACCOUNT_ID_MESSAGE = 'must be digits, "self" or "sis_account_id:<id>"'
AccountId = Annotated[str, BeforeValidator(_int_to_str), _matching(r"\d+|self|sis_account_id:.+", _ACCOUNT_ID_MESSAGE)]
"""A Canvas account: its id (a YAML int is taken as its digits), ``self`` or ``sis_account_id:<id>``."""
EnvName = Annotated[str, _matching(r"[A-Za-z_]\w*", "must be an environment variable's name, not the token")]
FeedName = Annotated[str, _matching(r"[A-Za-z0-9][\w.-]{0,63}", "must be 1-64 letters, digits, _ . or -")]
Pattern = Annotated[str, _matching(r"[^/]+", "must be a file name pattern without /")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# --- the settings -------------------------------------------------------------------------------------------


class ImportOptions(_Frozen):
    """Canvas's SIS import options for one feed (docs/canvas-api.md §1); ``None`` means not set, and so not sent.

    Canvas tests some options by presence rather than value, so only the options set are sent, each as its own
    form field. A combination Canvas refuses or silently ignores is a configuration error.
    """

    batch_mode: bool | None = None
    batch_mode_term_id: TermId | None = None
    multi_term_batch_mode: bool | None = None
    change_threshold: Annotated[int, Field(ge=1, le=100)] | None = None
    skip_deletes: bool | None = None
    override_sis_stickiness: bool | None = None
    add_sis_stickiness: bool | None = None
    clear_sis_stickiness: bool | None = None
    update_sis_id_if_login_claimed: bool | None = None
    diffing_data_set_identifier: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    diffing_remaster_data_set: bool | None = None
    diffing_drop_status: Literal["deleted", "completed", "inactive", "deleted_last_completed"] | None = None
    diffing_user_remove_status: Literal["deleted", "suspended"] | None = None
    batch_mode_enrollment_drop_status: Literal["deleted", "completed", "inactive"] | None = None
    # 1,000,000,000 and up are reserved: the daemon sends 1e9 + a random number as an attempt tag (docs/design.md).
    diff_row_count_threshold: Annotated[int, Field(ge=1, le=999_999_999)] | None = None

    @model_validator(mode="after")
    def _check_combinations(self) -> ImportOptions:
        # The rules follow sis_imports_api_controller.rb#create (docs/canvas-api.md §1).
        problems: Problems = []
        batch, multi = self.batch_mode is True, self.multi_term_batch_mode is not None
        diffing, override = self.diffing_data_set_identifier is not None, self.override_sis_stickiness is True

        def refuse(key: str, message: str) -> None:
            problems.append(((key,), message))

        if self.batch_mode is False and multi:
            refuse("batch_mode", "is false, but multi_term_batch_mode turns batch mode on")
        if self.batch_mode_term_id is not None and not batch:
            refuse("batch_mode_term_id", "has no effect unless batch_mode is true")
        if batch and self.batch_mode_term_id is None and not multi:
            refuse("batch_mode_term_id", "required when batch_mode is true (else Canvas answers 400)")
        if self.multi_term_batch_mode is False:
            refuse("multi_term_batch_mode", "false is not allowed: Canvas turns batch mode on when it is sent")
        elif multi and batch and self.batch_mode_term_id is not None:
            refuse("multi_term_batch_mode", "Canvas ignores it when batch_mode_term_id is given; keep one")
        if self.change_threshold is None and batch:
            refuse("change_threshold", "required when batch_mode is true")
        elif self.change_threshold is None and multi:
            refuse("change_threshold", "required with multi_term_batch_mode (else Canvas answers 400)")
        for key in ("add_sis_stickiness", "clear_sis_stickiness"):
            if getattr(self, key) is not None and not override:
                refuse(key, "has no effect unless override_sis_stickiness is true (Canvas ignores it)")
        if diffing and (batch or multi):
            refuse("diffing_data_set_identifier", "cannot be used with batch mode (Canvas ignores diffing then)")
        for key in (*DIFFING_OPTIONS, "diff_row_count_threshold"):
            if getattr(self, key) is not None and not diffing:
                refuse(key, "has no effect without diffing_data_set_identifier")
        if self.batch_mode_enrollment_drop_status is not None and not (batch or multi):
            refuse("batch_mode_enrollment_drop_status", "has no effect unless batch mode is on")
        _raise_all(type(self).__name__, problems)
        return self

    def set_options(self) -> dict[str, object]:
        """The options set, by Canvas name, typed (``bool``, ``int`` or ``str``), in a stable order."""
        return {name: value for name, value in self if value is not None}

    def form_fields(self) -> list[tuple[str, str]]:
        """The options set as form fields, e.g. ``[("batch_mode", "true"), ("change_threshold", "10")]``.

        Booleans are ``"true"``/``"false"``, integers plain digits, strings as given; the order is stable.
        """
        return [
            (name, ("true" if value else "false") if isinstance(value, bool) else str(value))
            for name, value in self.set_options().items()
        ]


class CanvasSettings(_Frozen):
    """Where Canvas is and how to reach it. Timeouts are in seconds.

    ``token_env`` names an environment variable, ``token_file`` a file (a relative one is read from
    ``$CREDENTIALS_DIRECTORY``, as systemd's ``LoadCredential=`` gives); exactly one of the two is set.
    """

    base_url: Annotated[str, AfterValidator(_base_url)]
    account_id: AccountId
    token_env: EnvName | None = None
    token_file: Annotated[Path, BeforeValidator(_to_path)] | None = None
    timeout_seconds: Seconds = 60
    upload_timeout_seconds: Seconds = 1800
    verify_tls: bool = True
    ca_bundle: ConfigPath | None = None

    @model_validator(mode="after")
    def _check_combinations(self) -> CanvasSettings:
        problems: Problems = []
        if self.token_env is None and self.token_file is None:
            problems.append((("token_env",), "required: give token_env or token_file"))
        if self.token_env is not None and self.token_file is not None:
            problems.append((("token_file",), "give only one of token_env and token_file"))
        if self.ca_bundle is not None and not self.verify_tls:
            problems.append((("ca_bundle",), "has no effect when verify_tls is false"))
        _raise_all(type(self).__name__, problems)
        return self

    @property
    def host(self) -> str:
        """The host, lower-cased, with its port if the URL gives one: ``"127.0.0.1:8080"``, ``"[::1]"``."""
        parts = urlsplit(self.base_url)
        host = f"[{parts.hostname}]" if ":" in str(parts.hostname) else str(parts.hostname)  # IPv6
        return f"{host}:{parts.port}" if parts.port is not None else host

    @property
    def requests_verify(self) -> bool | str:
        """What requests' ``verify=`` takes: the CA bundle's path when one is given, else ``verify_tls``."""
        return str(self.ca_bundle) if self.ca_bundle is not None else self.verify_tls


class PollingSettings(_Frozen):
    """How imports are polled, and how long the crash protocol waits (docs/design.md). All in seconds, > 0."""

    interval_seconds: Seconds = 5
    max_interval_seconds: Seconds = 60
    queued_timeout_seconds: Seconds = 21600
    running_timeout_seconds: Seconds = 86400
    resend_after_seconds: Seconds = 900
    clock_skew_seconds: Seconds = 300
    initializing_dead_seconds: Seconds = 600
    errors_csv_wait_seconds: Seconds = 120

    @model_validator(mode="after")
    def _check_interval(self) -> PollingSettings:
        if self.max_interval_seconds < self.interval_seconds:
            _raise_all("polling", [(("max_interval_seconds",), "must be at least interval_seconds")])
        return self


class LogSettings(_Frozen):
    """Log lines: ``json`` (one object a line, for journald) or ``console``; the lowest level written."""

    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class FeedSettings(_Frozen):
    """One drop folder and what happens to its files. Paths are absolute; times are in seconds.

    ``work_dir`` defaults to ``<drop_dir's parent>/work-<name>``. ``import_`` is the YAML key ``import``.
    """

    name: FeedName
    drop_dir: ConfigPath
    done_dir: ConfigPath
    failed_dir: ConfigPath
    work_dir: ConfigPath = Path()  # a placeholder, replaced from drop_dir when not given
    patterns: Annotated[
        tuple[Pattern, ...],
        BeforeValidator(_list_to_tuple),
        Field(min_length=1),
    ] = ("*.csv", "*.zip")
    settle_seconds: Seconds = 10
    empty_grace_seconds: Seconds = 300
    rescan_seconds: Seconds = 60
    watch: Literal["events", "poll"] = "events"
    max_in_flight: Annotated[int, Field(ge=1)] = 4
    import_: ImportOptions = Field(default_factory=ImportOptions, alias="import")

    @model_validator(mode="after")
    def _default_work_dir_and_distinct_folders(self) -> FeedSettings:
        if "work_dir" not in self.model_fields_set:
            # Frozen, but still being built: nobody has seen this object yet.
            object.__setattr__(self, "work_dir", self.drop_dir.parent / f"work-{self.name}")
        problems: Problems = []
        seen: dict[Path, str] = {}
        for key, path in self.folders().items():
            if path in seen:
                problems.append(((key,), f"is the same folder as {seen[path]}"))
            seen.setdefault(path, key)
        _raise_all(type(self).__name__, problems)
        return self

    def folders(self) -> dict[str, Path]:
        """The four folders by key, in the order a file passes through them (drop, work, done, failed)."""
        return {key: getattr(self, key) for key in FOLDER_KEYS}

    def matches(self, name: str) -> bool:
        """Whether a file name matches one of ``patterns``, ignoring case."""
        return any(fnmatchcase(name.casefold(), pattern.casefold()) for pattern in self.patterns)


class Settings(_Frozen):
    """The whole configuration file, checked as far as can be without looking at the machine."""

    canvas: CanvasSettings
    state_file: ConfigPath = Path("/var/lib/sisdaemon/state.json")
    lock_dir: ConfigPath = Path("/run/lock/sisdaemon")
    polling: PollingSettings = Field(default_factory=PollingSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    feeds: Annotated[tuple[FeedSettings, ...], BeforeValidator(_list_to_tuple), Field(min_length=1)]

    @field_validator("feeds")
    @classmethod
    def _feeds_apart(cls, feeds: tuple[FeedSettings, ...]) -> tuple[FeedSettings, ...]:
        problems: Problems = []
        names: dict[str, int] = {}
        folders: dict[Path, str] = {}
        for index, feed in enumerate(feeds):
            if feed.name in names:
                problems.append(((index, "name"), f"feeds[{names[feed.name]}] has this name already"))
            names.setdefault(feed.name, index)
            for key, path in feed.folders().items():
                if path in folders:
                    problems.append(((index, key), f"{path} is {folders[path]} already"))
                folders.setdefault(path, f"feeds[{index}].{key}")
        _raise_all("feeds", problems)
        return feeds

    @model_validator(mode="after")
    def _state_and_locks_apart_from_feeds(self) -> Settings:
        feed_folders = {path for feed in self.feeds for path in feed.folders().values()}
        problems: Problems = []
        if self.state_file.parent in feed_folders:
            problems.append((("state_file",), "must not be in a feed's folder"))
        if self.lock_dir in feed_folders:
            problems.append((("lock_dir",), "must not be a feed's folder"))
        _raise_all("Settings", problems)
        return self


# --- reading the file ---------------------------------------------------------------------------------------


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


def load_config(path: Path) -> Settings:
    """Read one YAML file into :class:`Settings`; relative paths in it are taken from the file's folder.

    Raises:
        ConfigError: every problem, one a line: the file cannot be read; a YAML syntax error
            (``line L, column C: ...``); each key unknown, missing, of a wrong type or value, or in conflict.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, ["is not UTF-8 text"]) from None
    except OSError as error:
        raise ConfigError(path, [f"cannot be read: {error.strerror or error}"]) from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, [where + "; ".join(filter(None, (error.context, error.problem)))]) from None
    except yaml.YAMLError as error:
        raise ConfigError(path, [" ".join(str(error).split())]) from None
    return parse_config(data, source=path, config_dir=Path(os.path.abspath(path)).parent)


def parse_config(data: object, *, source: Path, config_dir: Path | None = None) -> Settings:
    """Validate loaded YAML data (a dict) into :class:`Settings`; tests of other modules can use it directly.

    ``source`` names the file in errors. Relative paths are resolved against ``config_dir`` (default: the
    working directory).

    Raises:
        ConfigError: listing every problem, each ``"<dotted.key>: <message>"``.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, [f"must be a mapping of keys (canvas:, feeds:, ...), not {_kind(data)}"])
    context = {"config_dir": str(config_dir) if config_dir else None}
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


# --- the machine --------------------------------------------------------------------------------------------


def check_runtime(settings: Settings, *, rename: Callable[[Path, Path], None] = os.rename) -> list[str]:
    """Check what the configuration needs from this machine; one ``"<dotted.key>: <message>"`` per problem.

    Checks the token source (never quoting the token), ``ca_bundle``, the state file's folder, ``lock_dir`` (or
    the folder it would be created in) and each feed's folders, creating ``work_dir`` (mode 0750) when only it is
    missing. Proves that files can be renamed between a feed's folders: a probe file
    ``.sisdaemon-probe-<pid>-<random>`` goes from drop_dir into each other folder and back, and is removed.
    ``rename`` is replaceable for tests.
    """
    problems: list[str] = []
    try:
        read_token(settings.canvas)
    except TokenError as error:
        problems.append(str(error))
    ca_bundle = settings.canvas.ca_bundle
    if ca_bundle is not None and not (ca_bundle.is_file() and os.access(ca_bundle, os.R_OK)):
        problems.append(f"canvas.ca_bundle: {ca_bundle} is not a readable file")
    if settings.state_file.is_dir():
        problems.append(f"state_file: {settings.state_file} is a folder")
    elif problem := _folder_problem(settings.state_file.parent, os.W_OK | os.X_OK):
        problems.append(f"state_file: the folder {problem}")
    existing = settings.lock_dir  # created with its parents when the lock is taken: check the nearest that exists
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if problem := _folder_problem(existing, os.W_OK | os.X_OK):
        creatable = "" if existing == settings.lock_dir else f"{settings.lock_dir} cannot be created: "
        problems.append(f"lock_dir: {creatable}{problem}")
    seen: dict[tuple[int, int], str] = {}
    for index, feed in enumerate(settings.feeds):
        problems += _check_feed(f"feeds[{index}]", feed, seen, rename)
    return problems


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
    prefix: str, feed: FeedSettings, seen: dict[tuple[int, int], str], rename: Callable[[Path, Path], None]
) -> list[str]:
    problems: list[str] = []
    for key, path in feed.folders().items():
        if key == "work_dir" and not os.path.lexists(path) and path.parent.is_dir():
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
    return problems or _probe_renames(prefix, feed, rename)


def _probe_renames(prefix: str, feed: FeedSettings, rename: Callable[[Path, Path], None]) -> list[str]:
    """Move a probe file from drop_dir into each other folder and back; rename(2) fails across mounts (EXDEV).

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
        for key, folder in list(feed.folders().items())[1:]:
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


# --- the token ----------------------------------------------------------------------------------------------


def read_token(canvas: CanvasSettings) -> str:
    """The Canvas API token from ``token_env`` or ``token_file``, without surrounding whitespace.

    A relative ``token_file`` is read from ``$CREDENTIALS_DIRECTORY``. Call it whenever the token is needed,
    so that a rotated token file is picked up.

    Raises:
        TokenError: the variable is unset or empty; the file is missing, unreadable, empty or too large; or
            the token holds characters an HTTP header cannot carry. The message never contains the token.
    """
    if canvas.token_env is not None:
        key, source = "canvas.token_env", f"the environment variable {canvas.token_env}"
        value = os.environ.get(canvas.token_env)
        if value is None:
            raise TokenError(key, f"{source} is not set")
    else:
        key, path = "canvas.token_file", _token_path(canvas)
        source, value = str(path), _read_token_file(key, path)
    token = value.strip()
    if not token:
        raise TokenError(key, f"{source} is empty")
    if not all("!" <= character <= "~" for character in token):
        raise TokenError(key, f"{source} holds spaces, line breaks or other characters a header cannot carry")
    return token


def _token_path(canvas: CanvasSettings) -> Path:
    path = canvas.token_file
    assert path is not None  # CanvasSettings requires token_env or token_file
    if path.is_absolute():
        return path
    if not (directory := os.environ.get("CREDENTIALS_DIRECTORY")):
        message = f"{path} is relative, so it is read from $CREDENTIALS_DIRECTORY, which is not set"
        raise TokenError("canvas.token_file", message + " (systemd's LoadCredential= sets it)")
    return Path(directory) / path


def _read_token_file(key: str, path: Path, limit: int = 65536) -> str:
    # Each TokenError is raised outside the except block, so that no exception holding the file's bytes
    # (a UnicodeDecodeError does) rides along as its __context__.
    data, problem = b"", None
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        problem = "does not exist"
    except OSError as error:
        problem = f"cannot be read: {error.strerror}"
    if len(data) > limit:
        problem = f"is larger than {limit} bytes; is it the token file?"
    text = ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        problem = problem or "is not UTF-8 text"
    if problem:
        raise TokenError(key, f"{path} {problem}")
    return text
