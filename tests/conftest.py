"""Fixtures shared by every test."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (watchdog's tests do the same)."""
    before = set(threading.enumerate())
    yield
    deadline = threading.Event()
    leaked: list[threading.Thread] = []
    for _ in range(50):  # up to 5 s for threads that are already stopping
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        if not leaked:
            break
        deadline.wait(0.1)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"
