"""config.json / styles.csv that cannot be read, and option values of the wrong type or out of range."""

from __future__ import annotations

import json
import math

import pytest

from modules.styles import StyleDatabase
from sdwebui.config.options import OptionError, Options, default_templates

BAD_FILES = {
    "a JSON list": lambda path: path.write_text('["sd_model_checkpoint", "x"]'),
    "UTF-16": lambda path: path.write_text('{"samples_save": false}', encoding="utf-16"),
    "binary": lambda path: path.write_bytes(bytes(range(256)) * 4),
    "truncated": lambda path: path.write_text('{"samples_save": false, "eta_ddim": 0.'),
    "a directory": lambda path: (path.mkdir(), (path / "inside").write_text("x")),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_unreadable_config_starts_with_defaults_and_is_kept_aside(tmp_path, kind, caplog):
    path = tmp_path / "config.json"
    BAD_FILES[kind](path)
    options = Options(default_templates(), path)
    warnings = options.load()
    assert options.samples_save is True and options.items() == Options(default_templates()).items()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("config.json.bad-")]
    assert len(aside) == 1 and not path.exists()
    assert len(warnings) == 1 and aside[0].name in warnings[0] and aside[0].name in caplog.text
    options.set("samples_save", False)
    options.save()  # the next save writes a good file where the bad one was
    assert json.loads(path.read_text()) == {"samples_save": False}


def test_values_of_the_wrong_type_or_out_of_range_in_the_file_are_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "config.json"
    # JSON has no NaN, but Python's json module writes and reads it, as A1111's config.json may hold it
    path.write_text(
        '{"eta_ancestral": NaN, "CLIP_stop_at_last_layers": 99, "default_sampler": "Nope", '
        '"samples_format": "gif", "samples_filename_pattern": "[seed]-[lora]", "eta_ddim": 0.5, "my_ext": 3}'
    )
    options = Options(default_templates(), path)
    warnings = options.load()
    assert options.eta_ancestral == 1.0 and options.CLIP_stop_at_last_layers == 1
    assert options.default_sampler == "Euler a" and options.samples_format == "png"
    assert options.samples_filename_pattern == "[seed]"
    assert options.eta_ddim == 0.5 and options.get("my_ext") == 3  # good values and extensions' keys stay
    named = [
        "eta_ancestral",
        "CLIP_stop_at_last_layers",
        "default_sampler",
        "samples_format",
        "samples_filename",
    ]
    assert all(any(key in w for w in warnings) for key in named), warnings
    assert "CLIP_stop_at_last_layers" in caplog.text
    assert path.exists()  # a readable file with a bad value is not set aside


@pytest.mark.parametrize(
    "key, value",
    [
        ("eta_ancestral", math.nan),
        ("eta_ddim", math.inf),
        ("eta_ddim", 2.0),
        ("CLIP_stop_at_last_layers", 99),
        ("CLIP_stop_at_last_layers", 0),
        ("default_sampler", "Nope"),
        ("default_scheduler", "Nope"),
        ("samples_format", "gif"),
        ("samples_filename_pattern", "[seed]-[unknown_tag]"),
        ("sd_checkpoints_limit", 0),
        ("CLIP_stop_at_last_layers", None),
        ("samples_save", None),
    ],
)
def test_check_refuses_naming_the_key(key, value):
    options = Options(default_templates())
    with pytest.raises(OptionError) as err:
        options.check(key, value)
    assert err.value.key == key
    with pytest.raises(OptionError):
        options.set(key, value)
    assert options.get(key) == default_templates()[key].default


def test_check_accepts_good_values():
    options = Options(default_templates())
    assert options.check("CLIP_stop_at_last_layers", 2.0) == 2
    assert options.check("default_sampler", "DPM++ 2M") == "DPM++ 2M"
    assert options.check("samples_format", "webp") == "webp"
    assert options.check("samples_filename_pattern", "[seed]-[prompt_words]") == "[seed]-[prompt_words]"


STYLE_FILES = {
    "UTF-16": lambda path: path.write_text("name,prompt,negative_prompt\nx,y,z\n", encoding="utf-16"),
    "binary": lambda path: path.write_bytes(b"name,prompt\n\x00\x01\x02\xff\xfe" * 50),
    "no name column": lambda path: path.write_text("title,text\nx,y\n"),
    "a directory": lambda path: path.mkdir(),
}


@pytest.mark.parametrize("kind", list(STYLE_FILES))
def test_unreadable_styles_start_empty_and_are_kept_aside(tmp_path, kind, caplog):
    path = tmp_path / "styles.csv"
    STYLE_FILES[kind](path)
    db = StyleDatabase(path)
    assert db.all() == []
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("styles.csv.bad-")]
    assert len(aside) == 1 and not path.exists()
    assert len(db.load_warnings) == 1 and aside[0].name in caplog.text


def test_a_truncated_styles_file_keeps_its_complete_rows(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text('name,prompt,negative_prompt\ngood,"best, {prompt}",blurry\ncut,"half')
    db = StyleDatabase(path)
    assert db.get("good").prompt == "best, {prompt}" and db.load_warnings == []
