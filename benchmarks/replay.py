"""Replaying an import's progress through the pure polling policy (sisdaemon/polling.py): how many API calls it
spends and how late it notices the end, for imports of any length, in no time.

A trace is Canvas's answer as a function of the seconds since the POST: queued (``created``, progress 0) for
``queued`` seconds, then ``importing`` with ``progress`` = the share of row chunks done, an integer capped at 99,
then the terminal state at ``ended`` (Canvas's rule: docs/canvas-api.md §2). The traces here are modelled on that
rule with chunk timings of different shapes (no Canvas instance was reachable to record real ones):
``steady`` (every chunk alike), ``slow_end`` (users' chunks fast, enrollments' three times slower), ``fast_end``
(the reverse: the hardest case for an estimate from progress), and ``queued`` (two minutes behind another import).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sisdaemon import jobs, polling
from sisdaemon.config import PollingSettings
from sisdaemon.jobs import Fingerprint

START = 1_800_000_000.0  # the POST's answer, seconds since the epoch


def _iso(seconds: float) -> str:
    import time

    whole = math.floor(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1000):03d}Z"


@dataclass(frozen=True)
class Trace:
    """An import's life: ``queued`` seconds in ``created``, then ``running`` seconds importing, chunk weights
    ``weights`` (the share of the running time each chunk takes, in order)."""

    name: str
    queued: float
    running: float
    weights: tuple[float, ...]

    @property
    def ended(self) -> float:
        return self.queued + self.running

    def progress_at(self, elapsed_running: float) -> int:
        total = sum(self.weights)
        done, spent = 0, 0.0
        for weight in self.weights:
            spent += weight * self.running / total
            if spent > elapsed_running + 1e-9:
                break
            done += 1
        return min(99, done * 100 // len(self.weights))

    def answer(self, t: float) -> dict[str, Any]:
        """Canvas's SisImport ``t`` seconds after the POST's answer."""
        base = {"id": 1, "created_at": _iso(START), "workflow_state": "created", "progress": 0, "started_at": None}
        if t < self.queued:
            return base
        started = _iso(START + self.queued)
        if t >= self.ended:
            return {**base, "workflow_state": "imported", "progress": 100, "started_at": started}
        return {
            **base,
            "workflow_state": "importing",
            "progress": self.progress_at(t - self.queued),
            "started_at": started,
        }


def trace(name: str, running: float, *, queued: float = 0.0, chunks: int = 100) -> Trace:
    """One of the modelled shapes (see the module's docstring) lasting ``running`` seconds."""
    half = chunks // 2
    weights = {
        "steady": (1.0,) * chunks,
        "slow_end": (1.0,) * half + (3.0,) * (chunks - half),
        "fast_end": (3.0,) * half + (1.0,) * (chunks - half),
        "queued": (1.0,) * chunks,
    }[name]
    return Trace(name, queued, running, weights)


@dataclass(frozen=True)
class Replayed:
    """``calls``: API calls for the import (the POST and every poll); ``late``: seconds from Canvas's end to the
    poll that saw it."""

    calls: int
    late: float


def replay(
    subject: Trace,
    *,
    policy: PollingSettings | None = None,
    expected_running: float | None = None,
    fixed: float | None = None,
    limit: int = 10_000,
) -> Replayed:
    """Poll ``subject`` as the daemon does (``polling.first_poll_delay`` then ``polling.on_poll``), or every
    ``fixed`` seconds (a plain loop, for comparison), from the POST's answer until a terminal state."""
    policy = policy or PollingSettings()
    job = jobs.claim("j1", "feed", "users.csv", Fingerprint(1, 100, 1, 1), seen_at=START, now=START)
    job = jobs.begin_attempt(job, tag=None, intent_at=None, now=START)
    first = fixed if fixed is not None else polling.first_poll_delay(expected_running, policy)
    job = jobs.post_created(job, subject.answer(0.0), now=START, interval=first)
    calls = 1
    for _ in range(limit):
        t = job.next_action_at - START
        calls += 1
        answer = subject.answer(t)
        job, decision = polling.on_poll(
            job, answer, now=START + t, server_now=START + t, policy=policy, expected_running=expected_running
        )
        if decision.action == "finish":
            return Replayed(calls, t - subject.ended)
        if fixed is not None:
            job = jobs.move(job, job.state, next_action_at=START + t + fixed)
    raise RuntimeError(f"{subject.name}: no end after {limit} polls")


def old_policy(subject: Trace, policy: PollingSettings | None = None) -> Replayed:
    """The policy before issue 9: doubling from ``interval`` to ``max_interval`` whatever Canvas says."""
    policy = policy or PollingSettings()
    t, delay, calls = 0.0, 0.0, 1
    while True:
        delay = polling.next_interval(delay, policy)
        t += delay
        calls += 1
        if t >= subject.ended:
            return Replayed(calls, t - subject.ended)


SCENARIOS: list[tuple[str, Callable[[], Trace]]] = [
    (
        f"{shape} {seconds:g} s",
        (lambda shape=shape, seconds=seconds: trace(shape, seconds, queued=120.0 if shape == "queued" else 0.0)),
    )
    for seconds in (10.0, 60.0, 600.0)
    for shape in ("steady", "slow_end", "fast_end", "queued")
]


def run() -> dict[str, Any]:
    """Every scenario, without and with a history (the previous import of the file ran as long), beside the old
    doubling schedule and a fixed 3 s loop. Returns ``{scenario: {policy: {"calls", "late_seconds"}}}``."""
    result: dict[str, Any] = {}
    for name, make in SCENARIOS:
        subject = make()
        rows = {
            "just in time": replay(subject),
            "just in time, with history": replay(subject, expected_running=subject.running),
            "before (doubling 5-60 s)": old_policy(subject),
            "fixed 3 s loop": replay(subject, fixed=3.0),
        }
        result[name] = {
            key: {"calls": value.calls, "late_seconds": round(value.late, 2)} for key, value in rows.items()
        }
    return result


def table(result: dict[str, Any]) -> list[str]:
    policies = list(next(iter(result.values())))
    lines = [f"{'polling (calls / s late)':<22}" + "".join(f"{name:>29}" for name in policies)]
    for scenario, rows in result.items():
        cells = "".join(f"{rows[name]['calls']:>19} / {rows[name]['late_seconds']:>6.1f} s" for name in policies)
        lines.append(f"{scenario:<22}{cells}")
    return lines
