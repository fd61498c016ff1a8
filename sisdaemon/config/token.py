"""The Canvas API token: read from ``canvas.token_env`` or ``canvas.token_file`` each time it is needed.

:class:`TokenError` names the key and the source, never the token.
"""

from __future__ import annotations

import os
from pathlib import Path

from sisdaemon.config.schema import CanvasSettings


class TokenError(Exception):
    """The Canvas token cannot be read: ``"<key>: <message>"``, naming the source, never the token itself.

    ``may_appear``: True when the token file may yet be written (missing, empty, unreadable: a rotation or a
    deployment under way), so a running daemon waits for it; False for what only a config change mends (an unset
    environment variable, a relative path without ``$CREDENTIALS_DIRECTORY``).
    """

    def __init__(self, key: str, message: str, *, may_appear: bool = False) -> None:
        self.key = key
        self.may_appear = may_appear
        super().__init__(f"{key}: {message}")


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
        raise TokenError(key, f"{source} is empty", may_appear=canvas.token_env is None)
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
        raise TokenError(key, f"{path} {problem}", may_appear=True)
    return text
