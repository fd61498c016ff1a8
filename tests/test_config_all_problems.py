"""One run of check-config reports every problem it can find: field errors and the cross-key checks of the fields
that did validate, each naming its key (trial report, item 6: three rounds of check-config were needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from sisdaemon.config import ConfigError, load_config


def trial_config(tmp_path: Path) -> dict[str, Any]:
    """The reporter's config: every problem of its three rounds at once."""
    return {
        "canvas": {
            "base_url": "http://canvas.example.edu/api/v1",  # round 1 (http) and round 2 (/api/v1)
            "account_id": "1",
            "token_env": "CANVAS_TOKEN",
            "token_file": "canvas-token",  # round 3: both
        },
        "state_file": str(tmp_path / "state" / "state.json"),
        "lock_dir": str(tmp_path / "locks"),
        "feeds": [
            {
                "name": "trial1",
                "drop_dir": str(tmp_path / "drop"),
                "done_dir": str(tmp_path / "done"),
                "failed_dir": str(tmp_path / "drop"),  # round 2: failed_dir == drop_dir
                "settle_seconds": 0,  # round 1
                "preflight": "strict",  # round 1
                "import": {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA", "change_threshold": 0},
            }
        ],
    }


EXPECTED = [
    "canvas.base_url: http:// is allowed only for localhost, 127.0.0.0/8 and ::1; use https://; give the instance "
    "URL without /api/v1",
    "canvas.token_file: give only one of token_env and token_file",
    "feeds[0].settle_seconds: must be greater than 0",
    "feeds[0].preflight: must be one of 'off', 'warn' or 'reject'",
    "feeds[0].import.change_threshold: must be at least 1",
    "feeds[0].failed_dir: is the same folder as drop_dir",
]


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "trial1.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    try:
        load_config(path)
    except ConfigError as error:
        return error.problems
    raise AssertionError("the config was accepted")


def test_check_config_names_every_problem_of_the_reporters_three_rounds_in_one_run(tmp_path: Path) -> None:
    path = write(tmp_path, trial_config(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CANVAS_TOKEN": "x"},
    )
    assert result.returncode == 78
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(f"{path}: ")]
    assert sorted(line.removeprefix(f"{path}: ") for line in lines) == sorted(EXPECTED)


def test_a_cross_key_check_whose_key_failed_is_skipped_rather_than_guessed(tmp_path: Path) -> None:
    data = trial_config(tmp_path)
    data["feeds"][0]["import"]["change_threshold"] = "ten"  # batch_mode needs one: it is there, only wrong
    data["feeds"][0]["drop_dir"] = ""  # the folders that validated are still compared with each other
    data["feeds"][0]["done_dir"] = data["feeds"][0]["failed_dir"]
    found = problems_of(write(tmp_path, data))
    assert "feeds[0].import.change_threshold: must be a whole number, not a string" in found
    assert not any("required when batch_mode" in problem for problem in found)
    assert "feeds[0].failed_dir: is the same folder as done_dir" in found
    assert "feeds[0].drop_dir: must not be empty" in found


def test_model_checks_run_beside_field_errors_at_every_level(tmp_path: Path) -> None:
    data = trial_config(tmp_path)
    data["canvas"] = {
        "base_url": "https://canvas.example.edu",
        "account_id": "x y",
        "verify_tls": False,
        "ca_bundle": "ca.pem",
    }
    data["polling"] = {"interval_seconds": 10, "max_interval_seconds": 5, "clock_skew_seconds": -1}
    data["state_file"] = str(tmp_path / "done" / "state.json")  # inside a feed's folder, beside a feed's errors
    data["feeds"][0]["failed_dir"] = str(tmp_path / "failed")
    data["feeds"][0]["import"] = {"batch_mode": True, "skip_deletes": "yes"}
    found = problems_of(write(tmp_path, data))
    for expected in (
        'canvas.account_id: must be digits, "self" or "sis_account_id:<id>"',
        "canvas.token_env: required: give token_env or token_file",
        "canvas.ca_bundle: has no effect when verify_tls is false",
        "polling.clock_skew_seconds: must be greater than 0",
        "polling.max_interval_seconds: must be at least interval_seconds",
        "feeds[0].import.skip_deletes: must be true or false, not a string",
        "feeds[0].import.batch_mode_term_id: required when batch_mode is true (else Canvas answers 400)",
        "feeds[0].import.change_threshold: required when batch_mode is true",
        "feeds[0].settle_seconds: must be greater than 0",
    ):
        assert expected in found, found
    # state_file is checked against the feeds' folders only once every feed validated: not guessed here.
    assert not any(problem.startswith("state_file") for problem in found)
    data["feeds"][0].update(settle_seconds=1, preflight="warn", **{"import": {}})
    found = problems_of(write(tmp_path, data))
    assert (
        "state_file: must not be in a feed's folder" in found
        and "canvas.ca_bundle: has no effect when verify_tls is false" in found
    )
