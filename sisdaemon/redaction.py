"""Secrets never shown: every token the process has read is redacted from every error text and log line.

The one list of secrets is kept here (process-wide, written under a lock): the Canvas client adds each token it
reads (a rotation included), error texts are redacted where they are made (:class:`sisdaemon.answers.CanvasError`),
log lines by the logging set-up (logs.py), and a download holding one is never saved.
"""

from __future__ import annotations

import re
import threading
import urllib.parse

#: The longest error text kept (characters): messages are stored in the state file and shown by ``status``.
MESSAGE_LIMIT = 500
#: Secrets shorter than this are not redacted (a toy token such as "x" would mangle every message).
SECRET_MIN_LENGTH = 8
REDACTED = "[redacted]"

# Every token this process has read, kept for the process's life: an answer may echo a token read before a
# rotation. The one piece of global state here, written under its lock.
_secrets: frozenset[str] = frozenset()
_secrets_lock = threading.Lock()
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)(?!\[redacted\])[^\s\"'<>,;)\]}]+")


def remember_secret(secret: str) -> None:
    """Redact ``secret`` from every error text for the rest of the process (see :func:`redact`).

    Called with each token the token provider returns, including after a rotation. Secrets shorter than
    :data:`SECRET_MIN_LENGTH` characters are ignored.
    """
    global _secrets
    secret = secret.strip()
    if len(secret) < SECRET_MIN_LENGTH:
        return
    variants = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    with _secrets_lock:
        _secrets = _secrets | variants


def redact(text: str) -> str:
    """``text`` with every remembered secret (:func:`remember_secret`, also percent-encoded) and any
    ``Bearer <credential>`` replaced by ``[redacted]``. Redact before cutting a text short, so that no start of a
    secret survives the cut."""
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: a variant may contain another
        text = text.replace(secret, REDACTED)
    return _BEARER.sub(rf"\1\2{REDACTED}", text)


#: How many bytes of a download are kept from one chunk to the next, so that a secret split between two is found.
LONGEST_SECRET_BYTES = 4096


def holds_secret(data: bytes) -> bool:
    """Whether ``data`` holds a remembered secret (:func:`remember_secret`). Not the ``Bearer`` pattern: a CSV may
    hold that word in its data."""
    text = data.decode("utf-8", "replace")
    return any(secret in text for secret in _secrets)


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with "…"."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
