"""Reading the state and history files and checking their shapes: a damaged file is refused naming the file and
the field, never taken for an empty one (shared by state.py and history.py)."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


class StateError(Exception):
    """The state or history file cannot be read (damaged JSON, wrong version); the message names the file."""


def read_json(path: Path) -> Any:
    """Read a JSON file; None when it does not exist. Raises StateError naming the file when it is not UTF-8 or not
    JSON, OSError when it cannot be read."""
    return read_json_or(path, None)


ABSENT: Any = object()


def read_json_or(path: Path, absent: Any) -> Any:
    """:func:`read_json`, returning ``absent`` for a missing file (so that a file holding ``null`` is not taken
    for a missing one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return absent
    except UnicodeDecodeError as error:
        raise StateError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise StateError(f"{path}: not valid JSON ({error}); move it aside to start afresh") from error


# --- the files' shapes ---------------------------------------------------------------------------------------
# Checked on load with pydantic in strict mode (an int is not a string, "yes" is not a boolean), so that a damaged
# file is refused naming the file and the field instead of failing later with a traceback. Parsed by json.loads
# first: dropped names with non-UTF-8 bytes are kept as lone surrogates, which pydantic's own JSON parser refuses.


def _disk_type(hint: Any) -> Any:
    """The type a dataclass field has once written as JSON: tuples are lists, enums their values, nested
    dataclasses objects checked the same way."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return list[_disk_type(arguments[0])]  # type: ignore[misc]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_disk_type(argument) for argument in arguments)]  # noqa: UP007 (built at run time)
    if origin in (dict, Mapping):
        return dict[_disk_type(arguments[0]), _disk_type(arguments[1])]  # type: ignore[misc]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return Literal[tuple(member.value for member in hint)]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return record_model(hint)
    return hint


def record_model(cls: type[Any]) -> type[BaseModel]:
    """A strict pydantic model of a dataclass as :func:`dataclasses.asdict` writes it, derived from its fields, so
    a field added to :class:`Job` is checked without being listed here. Unknown keys are ignored, as
    ``Job.from_dict`` ignores them."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            default: Any = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = ...
        fields[item.name] = (_disk_type(hints[item.name]), default)
    model: type[BaseModel] = create_model(
        f"{cls.__name__}OnDisk", __config__=ConfigDict(strict=True, extra="ignore"), **fields
    )
    return model


def check_shape(path: Path, shape: type[BaseModel], data: Any, where: str = "") -> None:
    """Validate ``data`` against ``shape``. Raises StateError ``"<path>: <dotted field>: <problem>"`` (the first
    three problems, on one line)."""
    if not where and not isinstance(data, dict):
        raise StateError(f"{path}: top level: expected a JSON object, found {_json_kind(data)}")
    try:
        shape.model_validate(data)
    except ValidationError as error:
        raise _damaged(path, error, where) from None


def _damaged(path: Path, error: ValidationError, where: str) -> StateError:
    problems = []
    details = error.errors(include_url=False)
    for detail in details[:3]:
        field_name = _dotted(where, detail["loc"]) or "top level"
        message = detail["msg"][:1].lower() + detail["msg"][1:]
        if detail["type"] not in ("missing", "extra_forbidden"):
            message += f" (found {_json_kind(detail.get('input'))})"
        problems.append(f"{field_name}: {message}")
    if len(details) > 3:
        problems.append(f"and {len(details) - 3} more problems")
    return StateError(f"{path}: {'; '.join(problems)}")


def _dotted(where: str, location: Iterable[int | str]) -> str:
    """``jobs.ab12`` + ``("fingerprint", "size")`` -> ``jobs.ab12.fingerprint.size``; list indexes as ``[0]``."""
    text = where
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _json_kind(value: Any) -> str:
    """What a JSON value is, shortly (never its whole text: a damaged file may be large)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "…"
        return f"the string {json.dumps(shown)}"
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else type(value).__name__


def entry_name(collection: str, index: int, entry: Any) -> str:
    """``jobs.ab12`` for an entry with a usable ``job_id``, else ``jobs[0]``."""
    job_id = entry.get("job_id") if isinstance(entry, dict) else None
    if isinstance(job_id, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", job_id):
        return f"{collection}.{job_id}"
    return f"{collection}[{index}]"
