"""YAML configuration -> frozen, validated settings; every problem names the file and the dotted key.

- ``load_config(path)`` reads one YAML file into :class:`Settings` or raises :class:`ConfigError` listing
  every problem at once (``config.yaml: feeds[0].import.change_threshold: required when batch_mode is true``).
  It reads that file and nothing else. ``read_config_file`` and ``settings_from`` are its two halves, for a
  caller that also wants the bytes' sha256 (what a daemon runs: drift.py).
- ``check_runtime(settings)`` looks at the machine (folders, the rename probe, the token source) and returns
  one ``"<dotted.key>: <message>"`` string per problem, ``[]`` when all is well.
- ``read_token(settings.canvas)`` returns the Canvas API token, or raises :class:`TokenError`, whose message
  names the key and the source but never the token.

The parts: ``schema`` (the pydantic models and their validators; ``crosskeys``: their base, which reports the
checks between keys beside the field errors; ``import_rules``: Canvas's rules on import options), ``loading`` (the
YAML file and its error lines), ``checks`` (the machine) and ``token`` (the token source). Every key, its type and
default: ``docs/configuration.md`` and ``config.example.yaml``.
"""

from __future__ import annotations

from sisdaemon.config.checks import check_runtime
from sisdaemon.config.import_rules import DIFFING_OPTIONS
from sisdaemon.config.loading import (
    ConfigError,
    ConfigFile,
    instance_name,
    load_config,
    parse_config,
    read_config_file,
    settings_from,
    state_file_of,
)
from sisdaemon.config.schema import (
    FOLDER_KEYS,
    CanvasSettings,
    FeedSettings,
    HookSettings,
    ImportOptions,
    LogSettings,
    MetricsSettings,
    PollingSettings,
    Settings,
)
from sisdaemon.config.token import TokenError, read_token

__all__ = [
    "DIFFING_OPTIONS",
    "FOLDER_KEYS",
    "CanvasSettings",
    "ConfigError",
    "ConfigFile",
    "FeedSettings",
    "HookSettings",
    "ImportOptions",
    "LogSettings",
    "MetricsSettings",
    "PollingSettings",
    "Settings",
    "TokenError",
    "check_runtime",
    "instance_name",
    "load_config",
    "parse_config",
    "read_config_file",
    "read_token",
    "settings_from",
    "state_file_of",
]
