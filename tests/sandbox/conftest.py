"""Fixtures for the sandbox's tests: a running Sandbox on 127.0.0.1:0, canvasapi and requests clients."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from canvasapi import Canvas

from sisdaemon.sandbox import Sandbox

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sandbox"
TOKEN = "sandbox-test-token"
OTHER_TOKEN = "sandbox-other-token"
UNAUTHORIZED_TOKEN = "sandbox-teacher-token"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fast sandbox with one term (2026FA), a second admin's token and a token lacking permission."""
    with Sandbox(
        token=TOKEN,
        account_id=1,
        fast=True,
        terms=["2026FA"],
        other_token=OTHER_TOKEN,
        unauthorized_token=UNAUTHORIZED_TOKEN,
    ) as sb:
        yield sb


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[requests.Session]:
    """A requests session authorised with TOKEN; use `api.get(sandbox.url + path)`."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


@pytest.fixture
def canvas(sandbox: Sandbox) -> Canvas:
    """canvasapi's client on the sandbox (its warning about http:// URLs silenced: loopback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Canvas(sandbox.url, TOKEN)


def fixture_path(name: str) -> Path:
    """A file under tests/fixtures/sandbox/."""
    return FIXTURES / name
