"""Shared by the crash-point and kill-soak proofs: a fresh world (sandbox + spool), runs of the real daemon, the
invariants checked after a crash and a restart, and the JSON report the docs are written from."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import OTHER_TOKEN, TOKEN, DaemonProcess, Spool, creates

#: The env var naming a JSON file the proofs add their figures to (for docs/reliability.md); unset: not written.
REPORT_ENV = "SISDAEMON_PROOF_REPORT"
#: A filed name: ``<UTC stamp>_<job id>_<original name>`` (docs/design.md "Folders, names and what is taken").
FILED_NAME = re.compile(r"(?P<stamp>\d{8}T\d{6}Z)_(?P<job>[0-9a-f]+)_(?P<name>.+)", re.DOTALL)
SIDE_FILES = (".result.json", ".errors.csv")
#: The problem :func:`check_one_file` reports for a sidecar whose ``file.sha256`` is null (a known defect, see
#: tests/proof/test_crash_points.py).
NO_HASH = "sidecar sha256 is null"
#: The start of the problem :func:`check_one_file` reports for a temp file left in done/ or failed/ (a known defect).
STALE_FILED = "stale temp files beside the filed file"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def world(root: Path, **feed: Any) -> Iterator[tuple[Sandbox, Spool]]:
    """A sandbox as tests/daemon's fixture makes it, and a spool under ``root`` pointed at it (``feed``: extra
    feed settings)."""
    with Sandbox(
        token=TOKEN,
        account_id=1,
        fast=True,
        terms=["2026FA"],
        other_token=OTHER_TOKEN,
        unauthorized_token="unauthorized-token",
    ) as sandbox:
        spool = Spool(root, sandbox.url, feed=dict(feed))
        for folder in (spool.drop, spool.work, spool.done, spool.failed, spool.state_file.parent):
            folder.mkdir(parents=True)
        spool.write_config()
        yield sandbox, spool


@dataclass
class Run:
    """One finished ``sisdaemon run`` process: its exit code and the side effects it reported (``(n, name)``)."""

    returncode: int
    effects: list[tuple[int, str]]
    log: Path
    seconds: float

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found


def run_daemon(spool: Spool, *args: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> Run:
    """Run ``sisdaemon run -c CONFIG ARGS`` to its end with ``SISDAEMON_EFFECTS_LOG`` set (a new log per run)."""
    effects_log = spool.root / f"effects-{time.monotonic_ns()}.log"
    started = time.monotonic()
    process = DaemonProcess(spool, *args, env={**(env or {}), "SISDAEMON_EFFECTS_LOG": str(effects_log)})
    try:
        code = process.wait(timeout)
    finally:
        if process.process.poll() is None:
            process.kill()
    return Run(code, read_effects(effects_log), process.log, time.monotonic() - started)


def read_effects(path: Path) -> list[tuple[int, str]]:
    """The ``<n> <name>`` lines of an effects log (an absent log: no effects)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        found.append((int(number), name))
    return found


def jobs_in_state(spool: Spool) -> list[dict[str, Any]]:
    try:
        return json.loads(spool.state_file.read_text())["jobs"]  # type: ignore[no-any-return]
    except FileNotFoundError:
        return []


def history_records(spool: Spool, feed: str = "nightly") -> list[dict[str, Any]]:
    """The history's records exactly as written (the loader drops duplicates; the file must not hold any)."""
    path = spool.state_file.with_name(f"{spool.state_file.stem}.history.{feed}.json")
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    # JSON lines (history.py): every "record" line, torn last line left out as the loader leaves it out.
    lines = [json.loads(line) for line in text.split("\n")[:-1]]
    return [line["record"] for line in lines if "record" in line]


def entries(folder: Path) -> list[Path]:
    """Every entry of ``folder``, dot-names included, sorted."""
    return sorted(folder.iterdir())


def data_files(folder: Path) -> list[Path]:
    """The filed data files of ``folder``: no sidecars, no errors CSVs, no dot-names."""
    return [path for path in entries(folder) if not path.name.endswith(SIDE_FILES) and not path.name.startswith(".")]


def stale_temp_files(folder: Path) -> list[str]:
    """Names in ``folder`` left by an interrupted atomic write or download (``.*.tmp``, ``.*.part``)."""
    return [
        path.name for path in entries(folder) if path.name.startswith(".") and path.name.endswith((".tmp", ".part"))
    ]


@dataclass
class Findings:
    """What a check found wrong, as sentences (empty: all invariants hold)."""

    problems: list[str] = field(default_factory=list)

    def expect(self, condition: object, problem: str) -> None:
        if not condition:
            self.problems.append(problem)


def check_one_file(spool: Spool, sandbox: Sandbox, name: str, original: bytes, *, folder: str = "done") -> Findings:
    """The invariants after a crash and a restart, for one dropped file ``name`` with bytes ``original``.

    The file is in exactly one place (``folder``), with its bytes; at most one import reached Canvas for it; its
    sidecar exists and matches the file and the import; no job is left in the state; the history holds one record
    of it; no stale temp file is left beside the state.
    """
    found = Findings()
    places = {
        where: [path for path in data_files(spool.root / where) if path.name.endswith(name)]
        for where in ("drop", "work", "done", "failed")
    }
    everywhere = [path for paths in places.values() for path in paths]
    found.expect(len(everywhere) == 1, f"the file is in {len(everywhere)} places: {everywhere}")
    found.expect(len(places[folder]) == 1, f"the file is not in {folder}/: {places}")
    found.expect(not entries(spool.work), f"work/ is not empty: {entries(spool.work)}")
    posts = [request for request in creates(sandbox) if request.import_id is not None]
    imports = sandbox.imports()
    found.expect(len(posts) <= 1 and len(imports) <= 1, f"{len(posts)} creates made imports, {len(imports)} imports")
    if len(places[folder]) == 1:
        filed = places[folder][0]
        match = FILED_NAME.fullmatch(filed.name)
        found.expect(match is not None and match["name"] == name, f"odd filed name {filed.name}")
        found.expect(filed.read_bytes() == original, "the filed bytes differ from the dropped ones")
        sidecar_path = filed.with_name(filed.name + ".result.json")
        if not sidecar_path.exists():
            found.problems.append(f"no sidecar beside {filed.name}")
        else:
            sidecar = json.loads(sidecar_path.read_text())
            if sidecar["file"]["sha256"] is None:
                found.problems.append(NO_HASH)
            else:
                found.expect(sidecar["file"]["sha256"] == sha256(original), "sidecar sha256 differs from the file's")
            found.expect(sidecar["file"]["size"] == len(original), "sidecar size differs from the file's")
            found.expect(match is None or sidecar["job_id"] == match["job"], "sidecar job_id differs from the name's")
            if len(imports) == 1:
                found.expect(
                    sidecar.get("canvas", {}).get("import_id") == imports[0]["id"],
                    f"sidecar import_id {sidecar.get('canvas', {}).get('import_id')} is not {imports[0]['id']}",
                )
                found.expect(
                    posts and posts[0].attachment_filename == f"{sidecar['job_id']}_{name}",
                    "the import's attachment is not named after the sidecar's job",
                )
            errors_csv = sidecar.get("canvas", {}).get("errors_csv")
            found.expect(
                errors_csv is None or (filed.parent / errors_csv).exists(), f"sidecar names a missing {errors_csv}"
            )
    found.expect(jobs_in_state(spool) == [], f"jobs left in the state: {jobs_in_state(spool)}")
    job_ids = [record["job_id"] for record in history_records(spool)]
    found.expect(len(job_ids) == len(set(job_ids)), f"duplicate history records: {job_ids}")
    found.expect(len(job_ids) == 1, f"{len(job_ids)} history records for one file")
    hashes = {record.get("sha256") for record in history_records(spool)}
    found.expect(hashes <= {sha256(original), None}, f"history sha256 differs from the file's: {hashes}")
    stale = stale_temp_files(spool.state_file.parent)
    found.expect(not stale, f"stale temp files beside the state: {stale}")
    stale = stale_temp_files(spool.done) + stale_temp_files(spool.failed)
    found.expect(not stale, f"{STALE_FILED}: {stale}")
    return found


def write_report(section: str, figures: dict[str, Any]) -> Path | None:
    """Merge ``figures`` under ``section`` into the JSON file ``$SISDAEMON_PROOF_REPORT`` names (atomically);
    None when the variable is not set."""
    target = os.environ.get(REPORT_ENV)
    if not target:
        return None
    path = Path(target)
    try:
        report = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        report = {}
    report[section] = figures
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.replace(temp, path)
    return path
