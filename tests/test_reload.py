"""Which config changes apply while running and which wait for a restart (reload.plan_reload, pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sisdaemon.config import Settings, parse_config
from sisdaemon.reload import plan_reload


def settings(tmp_path: Path, *extra_feeds: dict[str, Any], log: str = "info", **feed: Any) -> Settings:
    def folders(name: str) -> dict[str, str]:
        return {key: str(tmp_path / name / key) for key in ("drop_dir", "done_dir", "failed_dir")}

    data = {
        "canvas": {"base_url": "https://canvas.example.edu", "account_id": "1", "token_env": "T"},
        "log": {"level": log},
        "feeds": [
            {"name": "nightly", **folders("nightly"), **feed},
            *[{**folders(f["name"]), **f} for f in extra_feeds],
        ],
    }
    return parse_config(data, source=tmp_path / "config.yaml")


def table(config: Settings) -> dict[str, Any]:
    return {feed.name: feed for feed in config.feeds}


def test_import_options_settling_patterns_and_log_level_apply_at_once(tmp_path: Path) -> None:
    old = settings(tmp_path)
    new = settings(tmp_path, log="debug", settle_seconds=30, patterns=["*.csv"], **{"import": {"skip_deletes": True}})
    plan = plan_reload(old, table(old), new, busy_feeds=[])
    assert plan.pending == () and set(plan.changed) == {"log", "feeds[nightly]"}
    assert plan.feeds["nightly"].settle_seconds == 30 and plan.feeds["nightly"].import_.skip_deletes is True


def test_a_feed_s_folders_and_the_canvas_account_wait_for_a_restart(tmp_path: Path) -> None:
    old = settings(tmp_path)
    moved = settings(tmp_path, drop_dir=str(tmp_path / "elsewhere"), watch="poll")
    plan = plan_reload(old, table(old), moved, busy_feeds=[])
    assert plan.pending == ("feeds[nightly].drop_dir", "feeds[nightly].work_dir", "feeds[nightly].watch")
    assert plan.feeds["nightly"].drop_dir == old.feeds[0].drop_dir  # runs on where it was until the restart
    other_account = parse_config(
        {
            **old.model_dump(by_alias=True, mode="json"),
            "canvas": {**old.canvas.model_dump(mode="json"), "account_id": "2"},
        },
        source=tmp_path / "config.yaml",
    )
    assert plan_reload(old, table(old), other_account, busy_feeds=[]).pending == ("canvas",)


def test_a_new_feed_is_added_and_a_removed_one_goes_only_when_nothing_is_in_flight(tmp_path: Path) -> None:
    old = settings(tmp_path, {"name": "grades"})
    new = settings(tmp_path, {"name": "terms"})
    plan = plan_reload(old, table(old), new, busy_feeds=[])
    assert plan.added == ("terms",) and plan.removed == ("grades",) and set(plan.feeds) == {"nightly", "terms"}
    busy = plan_reload(old, table(old), new, busy_feeds=["grades"])
    assert (
        busy.removed == () and "grades" in busy.feeds and busy.pending == ("feeds[grades] (removed; files in flight)",)
    )
