"""The configuration's schema: the pydantic models (:class:`Settings` and its sections) with their validators.

Each model is frozen, strict and refuses unknown keys. Every problem is reported in one run, each at its own key, so
that the loader (``sisdaemon.config.loading``) can name every one by its dotted key: the checks between a model's
keys are its ``_cross_key_problems``, run beside the field errors on the fields that validated (config/crosskeys.py).
Every key, its type and default: ``docs/configuration.md`` and ``config.example.yaml``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from fnmatch import fnmatchcase
from pathlib import Path, PurePath
from typing import Annotated, Literal, NoReturn
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sisdaemon.config.crosskeys import CheckedModel, Problems, Unknown, Validated, checks, raise_all
from sisdaemon.config.durations import DURATION_HINT, parse_duration
from sisdaemon.config.import_rules import import_option_problems
from sisdaemon.config.term_pattern import compile_term_pattern

FOLDER_KEYS = ("drop_dir", "work_dir", "done_dir", "failed_dir")
"""A feed's four folders, in the order a file passes through them."""


# --- field types --------------------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    # A PydanticCustomError keeps the message as it is (a ValueError would get a "Value error, " prefix).
    raise PydanticCustomError("config", "{message}", {"message": message})


def _to_path(value: object) -> object:
    if isinstance(value, str):
        if not value.strip():
            _fail("must not be empty")
        if value.startswith("~"):
            _fail("~ is not expanded here; give the full path")
    # Anything but a string or a path is left to the strict Path check, which names its type.
    return Path(value) if isinstance(value, str | PurePath) else value


def _absolute(value: Path, info: ValidationInfo) -> Path:
    """Put the instance name in for ``%i`` (systemd's specifier: the config file's name without ``.yaml``, as the
    template unit runs ``/etc/sisdaemon/%i.yaml``), then resolve a relative path against the config file's folder
    (without a file: the working directory)."""
    context = info.context or {}
    if "%i" in str(value):
        instance = context.get("instance")
        if not instance:
            _fail("%i (the instance: the config file's name) needs a config file")
        value = Path(str(value).replace("%i", instance))
    base = context.get("config_dir") or os.getcwd()
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
    """The instance URL without a trailing /; every problem of it in one message."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        _fail("is not a valid URL")
    problems = []
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problems.append("must be an https:// URL, e.g. https://myschool.instructure.com")
    elif parts.scheme == "http" and not _is_loopback(parts.hostname):
        problems.append("http:// is allowed only for localhost, 127.0.0.0/8 and ::1; use https://")
    if parts.username is not None or parts.query or parts.fragment:
        problems.append("must not contain a user name, password, ?query or #fragment")
    path = parts.path.rstrip("/")
    if path.lower().endswith("/api/v1"):
        problems.append("give the instance URL without /api/v1")
    if problems:
        _fail("; ".join(problems))
    return f"{parts.scheme}://{parts.netloc}{path}"


ConfigPath = Annotated[Path, BeforeValidator(_to_path), AfterValidator(_absolute)]
"""A path; ``%i`` stands for the instance (the config file's name without ``.yaml``); a relative path is resolved
against the config file's folder."""
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


def _to_seconds(value: object) -> object:
    """A duration string (``"26h"``) -> seconds; a number is taken as seconds and left to the strict check."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as error:
            _fail(str(error))
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(DURATION_HINT)
    return value


Duration = Annotated[float, BeforeValidator(_to_seconds), Field(gt=0, allow_inf_nan=False)]
"""A duration: ``"26h"``, ``"90m"``, ``"1d12h"`` (config/durations.py), or a number of seconds; kept as seconds."""


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        _fail('must be host:port, e.g. "127.0.0.1:9464" or "[::1]:9464"')
    return value


Argv = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_list_to_tuple), Field(min_length=1)]
"""A command as a list: the program (an absolute path) and its arguments; never run through a shell."""


def _absolute_program(argv: tuple[str, ...]) -> tuple[str, ...]:
    if not argv[0].startswith("/"):
        _fail("the program (the list's first item) must be an absolute path; the command is run without a shell")
    return argv


# --- the settings -------------------------------------------------------------------------------------------


class ImportOptions(CheckedModel):
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

    @classmethod
    def _cross_key_problems(cls, values: Validated) -> Problems:
        return import_option_problems(values)

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


def _import_option_name(value: str) -> str:
    if value not in ImportOptions.model_fields:
        _fail(f"{value!r} is not one of Canvas's sis_import options: {', '.join(ImportOptions.model_fields)}")
    return value


def _term_pattern(value: str) -> str:
    try:
        compile_term_pattern(value)
    except ValueError as error:
        _fail(str(error))
    return value


ParamName = Annotated[str, AfterValidator(_import_option_name)]
"""The name of one of Canvas's sis_import options that :class:`ImportOptions` knows (a params file may set it)."""
TermPattern = Annotated[str, AfterValidator(_term_pattern)]
"""A file name pattern with one ``{term}`` (config/term_pattern.py)."""


class CanvasSettings(CheckedModel):
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

    @classmethod
    def _cross_key_problems(cls, values: Validated) -> Problems:
        v = values
        return checks(
            (
                "token_env",
                lambda: v.token_env is None and v.token_file is None,
                "required: give token_env or token_file",
            ),
            (
                "token_file",
                lambda: v.token_env is not None and v.token_file is not None,
                "give only one of token_env and token_file",
            ),
            (
                "ca_bundle",
                lambda: v.ca_bundle is not None and not v.verify_tls,
                "has no effect when verify_tls is false",
            ),
        )

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


class PollingSettings(CheckedModel):
    """How imports are polled, and how long the crash protocol waits (docs/design.md). All in seconds, > 0."""

    interval_seconds: Seconds = 5
    max_interval_seconds: Seconds = 60
    queued_timeout_seconds: Seconds = 21600
    running_timeout_seconds: Seconds = 86400
    resend_after_seconds: Seconds = 900
    clock_skew_seconds: Seconds = 300
    initializing_dead_seconds: Seconds = 600
    errors_csv_wait_seconds: Seconds = 120
    import_not_found_seconds: Seconds = 3600

    @classmethod
    def _cross_key_problems(cls, values: Validated) -> Problems:
        v = values
        return checks(
            (
                "max_interval_seconds",
                lambda: v.max_interval_seconds < v.interval_seconds,
                "must be at least interval_seconds",
            )
        )


class LogSettings(CheckedModel):
    """Log lines: ``json`` (one object a line, for journald) or ``console``; the lowest level written."""

    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsSettings(CheckedModel):
    """Prometheus metrics (``/metrics``) and a health check (``/healthz``) over HTTP; off when the section is absent."""

    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9464"


class HookSettings(CheckedModel):
    """Commands run after a file is filed, each with the sidecar's path as its last argument (docs/configuration.md).

    ``on_finished``: after a file went to done/; ``on_failed``: after a file went to failed/. ``timeout_seconds``:
    a hook still running then is killed.
    """

    on_finished: Annotated[Argv, AfterValidator(_absolute_program)] | None = None
    on_failed: Annotated[Argv, AfterValidator(_absolute_program)] | None = None
    timeout_seconds: Seconds = 60


class FeedSettings(CheckedModel):
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
    # At most this many files of the Canvas account are claimed and not yet finished in Canvas (being sent, queued or
    # running); the rest wait in drop/. Every feed shares the daemon's one account: the smallest value applies.
    max_pending_imports: Annotated[int, Field(ge=1)] = 2
    # Full-snapshot feeds: of several ready files with the same SIS types, only the newest is imported; the older
    # ones go to done/ unsent (outcome superseded, the newer file named in their sidecar's superseded_by).
    supersede: bool = False
    # What the pre-flight check (sisdaemon.sis_csv) does before a file is sent: "reject" files Canvas would fail
    # (failed/, reason_code preflight, never sent), "warn" (send it all the same; the problems go in the sidecar),
    # "off" (not checked).
    preflight: Literal["off", "warn", "reject"] = "reject"
    # The shrink guard (batch-mode and diffing feeds only): a file whose row count of a SIS type falls by more than
    # this percentage since the feed's last imported file is held in failed/ (reason_code shrink_guard), unsent until
    # `sisdaemon retry --force`. 0 or null: off.
    shrink_guard_percent: Annotated[int, Field(ge=0, le=100)] | None = 20
    # A file whose sha256 equals that of a file this feed imported within this many hours goes to done/ unsent
    # (outcome duplicate_skipped). null (the default): every file is sent.
    skip_duplicates_hours: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    import_: ImportOptions = Field(default_factory=ImportOptions, alias="import")
    expect_file_every: Duration | None = None
    expect_success_every: Duration | None = None
    hooks: HookSettings = Field(default_factory=HookSettings)
    # Sets of related files as one import (sets.py; README "Feed policies"): files that become ready within
    # collect_seconds of each other go to Canvas as one zip; the set is taken once none followed for collect_seconds,
    # or collect_max_seconds after its first file at the latest. 0: off.
    collect_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0
    collect_max_seconds: Seconds = 300
    # A manifest (e.g. "*.done") lists the files of a set, one name a line; nothing is taken before it, and a set
    # still missing a file manifest_timeout_seconds after its manifest settled goes to failed/ whole.
    manifest: Pattern | None = None
    manifest_timeout_seconds: Seconds = 3600
    # Per-file options (file_options.py): the import options a `<file>.params.yaml` dropped beside a file may set for
    # that file (empty: a params file refuses its file), and a pattern taking the batch-mode term from the file name.
    allow_params: Annotated[tuple[ParamName, ...], BeforeValidator(_list_to_tuple)] = ()
    term_from_name: TermPattern | None = None

    @model_validator(mode="after")
    def _default_work_dir_and_manifest_pattern(self) -> FeedSettings:
        # Frozen, but still being built: nobody has seen this object yet. (The checks ran before, in CheckedModel's wrap
        # validator: they take the same default, _work_dir.)
        object.__setattr__(self, "work_dir", _work_dir(self.work_dir, self.drop_dir, self.name))
        if self.manifest is not None and not self.matches(self.manifest):
            # A manifest is detected and settled like any dropped file: its pattern joins the feed's patterns.
            object.__setattr__(self, "patterns", (*self.patterns, self.manifest))
        return self

    @classmethod
    def _cross_key_problems(cls, values: Validated) -> Problems:
        problems = _set_problems(values)
        folders: dict[str, Path] = {}
        for key in FOLDER_KEYS:
            try:
                folders[key] = (
                    _work_dir(values.work_dir, values.drop_dir, values.name)
                    if key == "work_dir"
                    else getattr(values, key)
                )
            except Unknown:
                continue  # a folder that did not validate is compared with none
        seen: dict[Path, str] = {}
        for key, path in folders.items():
            if path in seen:
                problems.append(((key,), f"is the same folder as {seen[path]}"))
            seen.setdefault(path, key)
        try:
            term_from_name, options = values.term_from_name, values.import_
        except Unknown:
            term_from_name = None  # a key that did not validate: the check is skipped
        if term_from_name is not None:
            # A term from the file name turns batch mode on for that file: what batch mode needs must be there.
            if options.batch_mode is False:
                problems.append((("term_from_name",), "needs batch mode, but import.batch_mode is false"))
            if options.change_threshold is None:
                problems.append((("term_from_name",), "needs import.change_threshold (it turns batch mode on)"))
            if options.multi_term_batch_mode is not None:
                problems.append((("term_from_name",), "cannot be used with import.multi_term_batch_mode"))
            if options.diffing_data_set_identifier is not None:
                problems.append((("term_from_name",), "cannot be used with import.diffing_data_set_identifier"))
        return problems

    def folders(self) -> dict[str, Path]:
        """The four folders by key, in the order a file passes through them (drop, work, done, failed)."""
        return {key: getattr(self, key) for key in FOLDER_KEYS}

    def matches(self, name: str) -> bool:
        """Whether a file name matches one of ``patterns``, ignoring case."""
        return any(fnmatchcase(name.casefold(), pattern.casefold()) for pattern in self.patterns)


def _work_dir(work_dir: Path, drop_dir: Path, name: str) -> Path:
    """A feed's work folder: ``work_dir`` when given, else ``<drop_dir's parent>/work-<name>`` (a given one is
    absolute, so the placeholder ``Path()`` means not given)."""
    return work_dir if work_dir != Path() else drop_dir.parent / f"work-{name}"


def _set_problems(feed: Validated) -> Problems:
    """The combinations of a feed's set keys that cannot work (collect_seconds, manifest and their bounds)."""
    return checks(
        (
            "collect_seconds",
            lambda: feed.manifest is not None and feed.collect_seconds,
            "has no effect with manifest: its manifest says which files go together",
        ),
        (
            "collect_max_seconds",
            lambda: feed.collect_seconds and feed.collect_max_seconds < feed.collect_seconds,
            "must be at least collect_seconds",
        ),
        (
            "manifest",
            lambda: feed.manifest is not None and feed.manifest.casefold().endswith((".csv", ".zip")),
            "must not name .csv or .zip files: those are the files a manifest lists",
        ),
        (
            "allow_params",
            lambda: bool(feed.allow_params) and (feed.collect_seconds or feed.manifest is not None),
            "cannot be used on a feed that sends sets (collect_seconds or manifest): a set goes to Canvas as one "
            "import with the feed's options, so one file's params file cannot apply",
        ),
        (
            "term_from_name",
            lambda: feed.term_from_name is not None and (feed.collect_seconds or feed.manifest is not None),
            "cannot be used on a feed that sends sets (collect_seconds or manifest): a set goes to Canvas as one "
            "import with the feed's options; set import.batch_mode_term_id instead",
        ),
    )


class Settings(CheckedModel):
    """The whole configuration file, checked as far as can be without looking at the machine."""

    canvas: CanvasSettings
    state_file: ConfigPath = Path("/var/lib/sisdaemon/state.json")
    lock_dir: ConfigPath = Path("/run/lock/sisdaemon")
    polling: PollingSettings = Field(default_factory=PollingSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: MetricsSettings | None = None
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
        raise_all("feeds", problems)
        return feeds

    @classmethod
    def _cross_key_problems(cls, values: Validated) -> Problems:
        v = values

        def feed_folders() -> set[Path]:
            return {path for feed in v.feeds for path in feed.folders().values()}

        return checks(
            ("state_file", lambda: v.state_file.parent in feed_folders(), "must not be in a feed's folder"),
            ("lock_dir", lambda: v.lock_dir in feed_folders(), "must not be a feed's folder"),
        )
