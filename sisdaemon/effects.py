"""The one seam every externally visible side effect passes through.

Each state or history write, rename, fsync, POST sent, answer read, errors CSV saved, sidecar written and file moved
calls :func:`happened` right after it took effect (docs/design.md "Crash protocol" lists their order). By default that
does nothing but count. Observers registered with :func:`observe` see each one; the crash-point tests use this to
kill a real daemon right after side effect *k*, for every *k*, without anyone listing the side effects by hand, so
one added later is covered too.

``SISDAEMON_FAILPOINT=K`` in the environment (read by :func:`install_from_environment`, which ``sisdaemon run``
calls) kills the process with SIGKILL right after its K-th side effect, and ``SISDAEMON_EFFECTS_LOG=PATH`` appends
one line per side effect (``<n> <name>``) to PATH before that: the crash-point test counts a run's effects, then
replays it killed at each one. Neither is set in production.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

Observer = Callable[[int, str], None]

_lock = threading.Lock()
_count = 0
_observers: list[Observer] = []


def happened(name: str) -> None:
    """Report that side effect ``name`` (e.g. ``"state.write"``, ``"spool.rename"``) has just taken effect.

    Observers are called in the reporting thread, in registration order, with the effect's 1-based number in this
    process and its name. An observer's exception is not caught: a test observer may stop the process on purpose.
    """
    global _count
    with _lock:
        _count += 1
        number = _count
        observers = list(_observers)
    for observer in observers:
        observer(number, name)


def observe(observer: Observer) -> Callable[[], None]:
    """Register ``observer``; returns a function that removes it again."""
    with _lock:
        _observers.append(observer)

    def remove() -> None:
        with _lock:
            if observer in _observers:
                _observers.remove(observer)

    return remove


def count() -> int:
    """How many side effects this process has reported so far."""
    with _lock:
        return _count


def install_from_environment(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Register the failpoint observers that ``SISDAEMON_EFFECTS_LOG`` and ``SISDAEMON_FAILPOINT`` ask for.

    Raises ValueError when ``SISDAEMON_FAILPOINT`` is not a positive whole number.
    """
    log_path = environ.get("SISDAEMON_EFFECTS_LOG")
    failpoint = environ.get("SISDAEMON_FAILPOINT")
    if log_path:

        def record(number: int, name: str) -> None:
            with open(log_path, "a", encoding="utf-8") as stream:
                stream.write(f"{number} {name}\n")
                stream.flush()
                os.fsync(stream.fileno())

        observe(record)
    if failpoint:
        stop_after = int(failpoint)
        if stop_after < 1:
            raise ValueError(f"SISDAEMON_FAILPOINT must be a positive whole number, not {failpoint!r}")

        def kill(number: int, name: str) -> None:
            if number == stop_after:
                os.kill(os.getpid(), signal.SIGKILL)

        observe(kill)
