"""docs/operations.md stays true to the code: every reason_code the daemon can write is explained, and the example
alerting rules name only metrics the daemon exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.metrics_core import Metric

from sisdaemon.jobs import AbortReason, outcome_for
from sisdaemon.metrics import FeedSnapshot, Metrics, Snapshot

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
RULES = ROOT / "docs" / "alerting-rules.yml"
PACKAGE = ROOT / "sisdaemon"
TERMINAL_STATES = ("imported", "imported_with_messages", "failed", "failed_with_messages", "aborted")
#: How the code names a reason_code where it sets one by hand: reject(job, "x", ...), reason_code="x", or "x" as the
#: fallback of a refusal's reason_code.
WRITTEN = re.compile(r'reject\(\s*\w+,\s*"([a-z_]+)"|reason_code\s*=\s*"([a-z_]+)"|reason_code or "([a-z_]+)"')


def reason_codes_in_the_code() -> set[str]:
    codes = {
        code
        for state in TERMINAL_STATES
        for reason in (None, *AbortReason)
        if (code := outcome_for(state, reason)[2]) is not None
    }
    for path in PACKAGE.rglob("*.py"):
        if "sandbox" in path.parts:
            continue  # the emulator's own codes are Canvas's, not the daemon's
        for match in WRITTEN.finditer(path.read_text(encoding="utf-8")):
            codes.add(next(group for group in match.groups() if group))
    return codes


def documented_reason_codes() -> set[str]:
    text = OPERATIONS.read_text(encoding="utf-8")
    table = text.split("## What a file in failed/ means", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))


def test_the_scan_finds_the_codes_it_should() -> None:
    found = reason_codes_in_the_code()
    assert {"empty_file", "not_regular_file", "too_large", "canvas_errors", "timed_out", "refused"} <= found


def test_every_reason_code_the_daemon_can_write_is_explained_in_operations_md() -> None:
    missing = reason_codes_in_the_code() - documented_reason_codes()
    assert not missing, f"reason_code(s) not in docs/operations.md's table: {sorted(missing)}"


def exported_names() -> set[str]:
    """Every metric and sample name the daemon's registry exports."""
    feed = FeedSnapshot("nightly", last_file_at=1.0, last_success_at=1.0)
    metrics = Metrics(lambda: Snapshot(feeds=(feed,), started_at=1.0), ["nightly"])
    metrics.job_event("filed", "nightly", "imported", "done")
    metrics.upload_ended("nightly", 10, 0.1, "created")
    metrics.canvas_request("GET", "users/self", 200, 0.1)
    metrics.throttle_wait("throttled", 1.0)
    metrics.canvas_fault("transient")
    metrics.hook_ran("nightly", "on_finished", "ok")
    names: set[str] = set()
    family: Metric
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_in_the_example_alerting_rules_is_exported() -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    exported = exported_names()
    [group] = rules["groups"]
    alerts = {rule["alert"] for rule in group["rules"]}
    assert {"SisdaemonFeedStale", "SisdaemonFilesInFailed", "SisdaemonImportStuck", "SisdaemonCredentialFault"} <= (
        alerts
    )
    for rule in group["rules"]:
        named = set(re.findall(r"\bsisdaemon_\w+", rule["expr"]))
        assert named, rule["alert"]
        assert named <= exported, f"{rule['alert']}: {sorted(named - exported)} not exported"


def test_every_metric_in_the_operations_table_is_exported_and_every_exported_one_is_in_it() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(sisdaemon_\w+)` \|", text, flags=re.MULTILINE))
    exported = exported_names()
    assert documented <= exported, sorted(documented - exported)
    families = {name for name in exported if not name.endswith(("_bucket", "_count", "_sum", "_created"))}
    counters = {name.removesuffix("_total") for name in families if name.endswith("_total")}
    undocumented = {name for name in families - counters if name not in documented}
    assert not undocumented, sorted(undocumented)
