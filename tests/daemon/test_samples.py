"""`run --once` on the public sample files (copied in tests/fixtures/sandbox, see SOURCES.md) and a zip of several:
each ends in done/ or failed/ with a sidecar that says what Canvas (here the sandbox) said."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonThread, Spool

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sandbox"
#: The samples Canvas itself fails at file level (canvas-lms-specs/expected_messages.json "first_error").
FAILED = {
    "canvas-lms-specs__malformed_late.csv",
    "canvas-lms-specs__invalid_utf8.csv",
    "canvas-lms-specs__unknown_headers.csv",
}


def test_every_public_sample_and_a_zip_of_several_end_filed_with_a_faithful_sidecar(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    samples = sorted(path for path in FIXTURES.rglob("*") if path.suffix.lower() in (".csv", ".zip"))
    assert len(samples) >= 30
    for index, path in enumerate(samples):
        name = str(path.relative_to(FIXTURES)).replace("/", "__")
        shutil.copyfile(path, spool.drop / name)
        os.utime(spool.drop / name, (1_700_000_000 + index, 1_700_000_000 + index))
    with zipfile.ZipFile(spool.drop / "zz_docs_bundle.zip", "w") as bundle:
        for path in sorted((FIXTURES / "canvas-lms-docs").glob("*.csv")):
            bundle.write(path, f"bundle/{path.name}")
    spool.feed["max_in_flight"] = 8
    assert run_daemon(once=True, max_wait=120).join() == 1

    sidecars = {}
    for folder in ("done", "failed"):
        for path in (spool.root / folder).glob("*.result.json"):
            sidecar = json.loads(path.read_text())
            filed = path.with_name(path.name.removesuffix(".result.json"))
            assert filed.stat().st_size == sidecar["file"]["size"]
            sidecars[sidecar["file"]["name"]] = (folder, sidecar)
    assert len(sidecars) == len(samples) + 1
    assert {name for name, (folder, _) in sidecars.items() if folder == "failed"} == FAILED
    imports = {item["id"]: item for item in sandbox.imports()}
    assert len(imports) == len(sidecars)  # one import per file, none twice
    for name, (folder, sidecar) in sidecars.items():
        canvas = sidecar["canvas"]
        truth = imports[canvas["import_id"]]
        assert canvas["workflow_state"] == truth["workflow_state"], name
        assert canvas["counts"] == truth["data"]["counts"], name
        assert canvas["processing_errors"] == truth.get("processing_errors", []), name
        assert canvas["processing_warnings"] == truth.get("processing_warnings", []), name
        messages = canvas["processing_errors"] or canvas["processing_warnings"]
        assert bool(canvas["errors_csv"]) == bool(messages), name
        if messages:
            errors_csv = (spool.root / folder / canvas["errors_csv"]).read_text()
            assert errors_csv.startswith("sis_import_id,file,message,row"), name
    bundle = sidecars["zz_docs_bundle.zip"][1]["canvas"]
    assert bundle["counts"]["accounts"] == 3 and bundle["counts"]["users"] == 3
    assert [a["filename"] for a in bundle["sis_import"]["csv_attachments"]]  # the members, not the zip
