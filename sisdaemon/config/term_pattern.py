"""``term_from_name``: a file name pattern with one ``{term}`` placeholder, read as a regular expression (pure).

The pattern is the whole dropped file name (``enrollments_{term}.csv``): ``{term}`` stands for the term's SIS id
(one or more characters), ``*`` for any run of characters (none included), ``?`` for one character; everything else
is literal and matched ignoring case, as the feed's ``patterns`` are. The term keeps the case the file name gives
it. No ``eval``, no user-written regular expression: each literal part is escaped (:func:`re.escape`).
"""

from __future__ import annotations

import re

PLACEHOLDER = "{term}"


def compile_term_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression for ``pattern``, with the group ``term``.

    ``{term}`` becomes a lazy group of one or more characters, so ``enrollments_{term}.csv`` takes ``2026FA`` from
    ``enrollments_2026FA.csv``; ``*`` becomes ``.*`` and ``?`` ``.``. Raises ValueError (the message says what is
    wrong) when ``{term}`` is not there exactly once, when another ``{`` or ``}`` is left, or when the pattern holds
    a ``/``.
    """
    if "/" in pattern:
        raise ValueError("must be a file name pattern without /")
    if pattern.count(PLACEHOLDER) != 1:
        raise ValueError('must hold "{term}" exactly once, e.g. "enrollments_{term}.csv"')
    before, after = pattern.split(PLACEHOLDER)
    if any(brace in before + after for brace in "{}"):
        raise ValueError('"{term}" is the only placeholder; no other { or } is allowed')
    return re.compile(f"{_glob(before)}(?P<term>.+?){_glob(after)}", re.IGNORECASE | re.DOTALL)


def _glob(text: str) -> str:
    return "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in text)


def term_in_name(pattern: str, name: str) -> str | None:
    """The term ``pattern`` takes from the whole of ``name``, or None when the name does not match.

    A term of white space only, or with a white space at either end, is no term (None): an SIS id never has one.
    Raises ValueError for a bad pattern (:func:`compile_term_pattern`).
    """
    match = compile_term_pattern(pattern).fullmatch(name)
    if match is None:
        return None
    term = match.group("term")
    return term if term.strip() == term and term else None
