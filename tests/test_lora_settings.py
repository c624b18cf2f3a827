"""A1111's Lora settings with their effects, and the cards panel's data (webui.extra_networks) through the
real services: the tag a card adds (alias or file name, preferred weight, activation and negative text),
which cards show for the loaded model's version, "Add network to prompt" (sd_lora), the read-networks
limit, and name.json written only beside a listed file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdwebui.engine.requests import RequestError
from sdwebui.models.lora.sidecars import UserMetadata
from tests import test_lora
from tests.lora_fixtures import save_safetensors
from tests.test_lora import lora_tensors, pixels, request, run
from webui import extra_networks as en

data_dir, services = test_lora.data_dir, test_lora.services  # the same fixtures: a data dir with "style"


def card(services, name: str) -> en.Card:
    return next(c for c in en.lora_cards(services) if c.name == name)


def test_card_text_follows_the_user_metadata_and_lora_preferred_name(services):
    # style.json: activation text "oil paint", preferred weight 0.7; the file's ss_output_name: painterly
    assert card(services, "style").prompt == "<lora:painterly:0.7> oil paint"
    services.options.set("lora_preferred_name", "Filename")
    assert card(services, "style").prompt == "<lora:style:0.7> oil paint"
    services.options.set("lora_preferred_name", "Alias from file")
    en.save_details(services, "lora", "style", UserMetadata(negative_text="blurry"))
    services.options.set("extra_networks_default_multiplier", 0.6)
    styled = card(services, "style")
    assert (styled.prompt, styled.negative) == ("<lora:painterly:0.6>", "(blurry:1)")
    assert styled.relative == "styles/style.safetensors" and styled.preview.name == "style.preview.png"
    with pytest.raises(RequestError, match="lora_preferred_name"):
        services.options.check("lora_preferred_name", "Nickname")


def test_cards_hide_other_versions_unless_lora_show_all(services, data_dir):
    lora_dir = data_dir / "models" / "Lora"
    save_safetensors(
        lora_tensors(seed=1), lora_dir / "xl.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"}
    )
    save_safetensors(lora_tensors(seed=2), lora_dir / "unknown.safetensors")  # no metadata: version unknown
    services.loras.refresh()
    names = lambda: sorted(c.name for c in en.lora_cards(services))  # noqa: E731
    assert names() == ["style", "unknown", "xl"]  # no model loaded yet: every card
    services.models.load(None)  # the tiny SD1 checkpoint
    assert names() == ["style", "unknown"]
    services.options.set("lora_hide_unknown_for_versions", ["SD1"])
    assert names() == ["style"]
    services.options.set("lora_show_all", True)
    assert names() == ["style", "unknown", "xl"]
    with pytest.raises(RequestError, match="lora_hide_unknown_for_versions"):
        services.options.check("lora_hide_unknown_for_versions", ["SD9"])


def test_sd_lora_adds_its_network_to_every_prompt(services):
    added = run(services, "a red cube", override_settings={"sd_lora": "style"})
    written = run(services, "a red cube<lora:style:1>")
    assert added.images[0].prompt == "a red cube<lora:style:1>" and "Lora hashes" in added.infotexts[0]
    assert np.array_equal(pixels(added), pixels(written))
    # a prompt naming it already is left as written
    named = run(services, "a red cube <lora:style:0.5>", override_settings={"sd_lora": "style"})
    assert named.images[0].prompt == "a red cube <lora:style:0.5>"
    with pytest.raises(RequestError, match="unknown LoRA 'gone'") as refused:
        services.submit_generation(request("cube", override_settings={"sd_lora": "gone"}))
    assert refused.value.field == "sd_lora"


def test_lora_in_memory_limit_bounds_the_read_networks(services, data_dir):
    save_safetensors(lora_tensors(seed=4), data_dir / "models" / "Lora" / "other.safetensors")
    library = services.loras
    library.refresh()
    model = services.models.load(None)
    style, other = library.find("style"), library.find("other")
    first = library.network(style, model, keep=1)
    assert library.network(style, model, keep=1) is first  # kept: not read again
    library.network(other, model, keep=1)
    assert library.network(style, model, keep=1) is not first  # evicted by the limit of one


def test_user_metadata_is_written_only_beside_a_listed_file(services, data_dir):
    json_path = data_dir / "models" / "Lora" / "styles" / "style.json"
    data = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**data, "sd version": "SD1", "modelId": 42}))
    en.save_details(services, "lora", "style", UserMetadata(activation_text="ink", preferred_weight=0.8))
    saved = json.loads(json_path.read_text())
    assert saved["activation text"] == "ink" and saved["preferred weight"] == 0.8
    assert saved["sd version"] == "SD1" and saved["modelId"] == 42  # what the dialog does not show is kept
    assert card(services, "style").prompt == "<lora:painterly:0.8> ink"
    for kind, name in (
        ("lora", "../x"),
        ("lora", str(data_dir / "models" / "x.safetensors")),
        ("nope", "style"),
    ):
        with pytest.raises(LookupError):
            en.save_details(services, kind, name, UserMetadata(notes="x"))
    assert not (data_dir / "models" / "x.json").exists()
    json_path.unlink()
    json_path.symlink_to(data_dir / "elsewhere.json")
    with pytest.raises(LookupError, match="not a regular file"):
        en.save_details(services, "lora", "style", UserMetadata(notes="x"))
    assert not (data_dir / "elsewhere.json").exists()
