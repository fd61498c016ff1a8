"""config.example.yaml and docs/configuration.md stay true to the settings: every key shown, every value valid."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from sisdaemon.config import Settings, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
REFERENCE = ROOT / "docs" / "configuration.md"


def every_key(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Dotted keys of every setting, sections included: ``canvas``, ``canvas.base_url``, ``feeds[].import``."""
    keys = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        keys.append(key)
        inner = [arg for arg in (field.annotation, *typing.get_args(field.annotation)) if isinstance(arg, type)]
        nested = next((arg for arg in inner if issubclass(arg, BaseModel)), None)
        if nested is not None:
            keys += every_key(nested, key + ("[]." if key == "feeds" else "."))
    return keys


def uncommented(text: str) -> str:
    """The example with every indented commented-out ``key: value`` line switched on."""
    return re.sub(r"^(\s+)# (\w+:)", r"\1\2", text, flags=re.MULTILINE)


def test_the_example_loads_as_it_is() -> None:
    settings = load_config(EXAMPLE)

    assert [feed.name for feed in settings.feeds] == ["nightly"]
    assert settings.feeds[0].import_.form_fields() == [
        ("batch_mode", "true"),
        ("batch_mode_term_id", "sis_term_id:2026FA"),
        ("change_threshold", "10"),
    ]


@pytest.mark.parametrize("key", every_key())
def test_the_example_shows_every_key_with_a_comment(key: str) -> None:
    name = key.rsplit(".", 1)[-1].removesuffix("[]")
    lines = [line for line in EXAMPLE.read_text().splitlines() if re.match(rf"\s*(# )?(- )?{name}:", line)]

    assert lines, f"{key} is not in config.example.yaml"
    assert all("#" in line.split(f"{name}:", 1)[1] for line in lines), f"{key} has no comment"


def test_every_commented_out_value_in_the_example_is_of_a_valid_type_and_value() -> None:
    text = EXAMPLE.read_text()
    data = yaml.safe_load(uncommented(text))
    switched_on = len(re.findall(r"^\s+# \w+:", text, flags=re.MULTILINE))

    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(data)

    # Only rules between options remain (both token sources, batch mode with diffing, ...): no wrong type, no
    # value outside its set, no unknown key.
    assert {error["type"] for error in caught.value.errors()} == {"config"}
    assert switched_on == 22


def test_the_example_with_one_token_source_and_diffing_instead_of_batch_mode_loads(tmp_path: Path) -> None:
    text = uncommented(EXAMPLE.read_text())
    text = text.replace("  token_env: CANVAS_TOKEN", "  # token_env: CANVAS_TOKEN")
    batch = ("batch_mode", "batch_mode_term_id", "multi_term_batch_mode", "batch_mode_enrollment_drop_status")
    # A term from the file name turns batch mode on; per-file options do not go with a manifest's sets.
    for key in (*batch, "term_from_name", "manifest"):
        text = re.sub(rf"^(\s+){key}:", rf"\1# {key}:", text, flags=re.MULTILINE)

    settings = parse_config(yaml.safe_load(text), source=EXAMPLE, config_dir=tmp_path)

    assert settings.canvas.token_file == Path("canvas-token")
    assert settings.feeds[0].import_.diffing_data_set_identifier == "campus-users"


@pytest.mark.parametrize("key", every_key())
def test_the_reference_lists_every_key(key: str) -> None:
    assert f"| `{key}` |" in REFERENCE.read_text(), f"{key} is not in docs/configuration.md's table"
