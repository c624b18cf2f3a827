"""styles.csv database: A1111 columns, {prompt} placeholder semantics, save round trip, unknown names."""

from __future__ import annotations

import pytest

from modules.styles import PromptStyle, StyleDatabase, merge_prompts
from sdwebui.engine.requests import RequestError


def test_merge_prompts_semantics():
    assert merge_prompts("masterpiece, {prompt}, 8k", "a cat") == "masterpiece, a cat, 8k"
    assert merge_prompts("oil painting", "a cat") == "a cat, oil painting"
    assert merge_prompts("oil painting", "") == "oil painting"
    assert merge_prompts("", "a cat") == "a cat"


def test_load_apply_save_round_trip(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(
        'name,prompt,negative_prompt\nwrap,"best, {prompt}",blurry\nplain,watercolor,\n,ignored,\n',
        encoding="utf-8",
    )
    db = StyleDatabase(path)
    assert db.names() == ["wrap", "plain"]
    assert db.apply_to_prompt("a dog", ["wrap", "plain"]) == "best, a dog, watercolor"
    assert db.apply_to_negative_prompt("ugly", ["wrap"]) == "ugly, blurry"
    db.save_style(PromptStyle("new", "x, {prompt}", "y"))
    assert db.delete("plain") is True and db.delete("plain") is False
    again = StyleDatabase(path)
    assert [(s.name, s.prompt, s.negative_prompt) for s in again.all()] == [
        ("wrap", "best, {prompt}", "blurry"),
        ("new", "x, {prompt}", "y"),
    ]


def test_unknown_style_names_the_field(tmp_path):
    db = StyleDatabase(tmp_path / "missing.csv")
    assert db.all() == []
    with pytest.raises(RequestError) as err:
        db.apply_to_prompt("a", ["nope"])
    assert err.value.field == "styles" and "nope" in err.value.reason
