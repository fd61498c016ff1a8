"""Durations written as people write them in a config file: ``26h``, ``90m``, ``1d12h``, ``45s``, ``2w``.

A pydantic type (:data:`Duration`) for the schema, and the parser behind it; both give seconds (a float).
"""

from __future__ import annotations

import re

#: Seconds in each unit a duration may use.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])", re.ASCII)
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+", re.ASCII)
DURATION_HINT = 'must be a duration such as "26h", "90m", "1d12h" or "45s" (units s, m, h, d, w)'


def parse_duration(text: str) -> float:
    """``"26h"`` -> 93600.0; parts add up (``"1d12h"`` -> 129600.0); spaces between parts are allowed.

    Raises ValueError (:data:`DURATION_HINT`) for anything else, or for a duration of 0.
    """
    compact = "".join(text.split()).lower()
    if not _WHOLE.fullmatch(compact):
        raise ValueError(DURATION_HINT)
    seconds = sum(float(number) * UNITS[unit] for number, unit in _PART.findall(compact))
    if seconds <= 0:
        raise ValueError("must be longer than 0")
    return seconds


def format_duration(seconds: float) -> str:
    """A short reading of ``seconds`` for people: ``"1d 2h"``, ``"26h"`` stays ``"1d 2h"``, ``"5m"``, ``"12s"``."""
    remaining = round(max(seconds, 0))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    if remaining or not parts:
        parts.append(f"{remaining}s")
    return " ".join(parts[:2])
