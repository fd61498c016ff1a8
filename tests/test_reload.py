"""Which config changes apply while running (a feed's import options) and which wait for a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sisdaemon.config import Settings, parse_config
from sisdaemon.daemon import restart_needed


def settings(tmp_path: Path, **feed: Any) -> Settings:
    data = {
        "canvas": {"base_url": "https://canvas.example.edu", "account_id": "1", "token_env": "T"},
        "log": {"level": "info"},
        "feeds": [
            {
                "name": "nightly",
                "drop_dir": str(tmp_path / "drop"),
                "done_dir": str(tmp_path / "done"),
                "failed_dir": str(tmp_path / "failed"),
                **feed,
            }
        ],
    }
    return parse_config(data, source=tmp_path / "config.yaml")


def test_new_import_options_need_no_restart(tmp_path: Path) -> None:
    old = settings(tmp_path)
    new = settings(tmp_path, **{"import": {"skip_deletes": True}})
    assert restart_needed(old, new) == []


def test_other_changes_are_named_as_needing_a_restart(tmp_path: Path) -> None:
    old = settings(tmp_path)
    new = settings(tmp_path, settle_seconds=30)
    assert restart_needed(old, new) == ["feeds[nightly]"]
    louder = parse_config(
        {**old.model_dump(by_alias=True, mode="json"), "log": {"level": "debug", "format": "json"}},
        source=tmp_path / "config.yaml",
    )
    assert restart_needed(old, louder) == ["log"]
