"""LoRA end to end: folders, `<lora:...>` prompt tags, per-job patches through the lease, infotext, API."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from modules import cmd_args
from sdwebui.engine.context import JobContext
from sdwebui.engine.extra_networks import LoraNetworksPatch, LoraTag, parse_lora_tag
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.jobs.queue import JobError
from sdwebui.models.lease import ModelLease
from sdwebui.models.lora import DeltaCache
from sdwebui.models.lora.library import LoraLibrary
from sdwebui.outputs.infotext import parse_infotext
from sdwebui.services import build_services
from tests import tiny_models
from tests.api_server import start_server, write_tiny_checkpoints
from tests.lora_fixtures import (
    TE_TARGET,
    kohya_name,
    lora_factors,
    save_code_pickle,
    save_safetensors,
    with_prefix,
)

UNET_TARGETS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "conv_in",
)


def lora_tensors(seed: int = 0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A kohya LoRA for the tiny SD1 layout: a few U-Net modules and one text-encoder projection."""
    model = tiny_models.tiny_loaded_model("sd1")
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for path in UNET_TARGETS:
        parts = lora_factors(model.unet.get_submodule(path).weight, 4, generator)
        tensors.update(with_prefix(kohya_name(path), {k: v * scale for k, v in parts.items()}))
    te_weight = model.text_encoders[0].get_submodule(TE_TARGET.removeprefix("text_model.")).weight
    tensors.update(with_prefix(kohya_name(TE_TARGET, "lora_te_"), lora_factors(te_weight, 4, generator)))
    return tensors


def payload_sha256(path: Path) -> str:
    """AutoV3, computed here independently: sha256 of what follows the safetensors header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()


def request(prompt: str = "a red cube", **changes) -> Txt2ImgRequest:
    base = dict(prompt=prompt, seed=321, steps=2, width=64, height=64, sampler_name="Euler")
    return Txt2ImgRequest(**{**base, **changes})


def pixels(result, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].image)


@pytest.fixture
def data_dir(tmp_path):
    write_tiny_checkpoints(tmp_path)
    lora_dir = tmp_path / "models" / "Lora"
    save_safetensors(
        lora_tensors(), lora_dir / "styles" / "style.safetensors", {"ss_output_name": "painterly"}
    )
    (lora_dir / "styles" / "style.json").write_text(
        json.dumps({"activation text": "oil paint", "preferred weight": 0.7, "notes": "tiny test"})
    )
    (lora_dir / "styles" / "style.preview.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    # a file outside the folders that a prompt must not reach by a relative path
    save_safetensors(lora_tensors(seed=5), tmp_path / "models" / "x.safetensors")
    return tmp_path


@pytest.fixture
def services(data_dir):
    app = build_services(cmd_args.parse_args(["--data-dir", str(data_dir), "--use-cpu", "all"]))
    yield app
    app.shutdown()


def run(services, prompt: str, **changes):
    return services.submit_generation(request(prompt, **changes)).wait(300)


def test_a_lora_changes_the_image_for_its_job_only(services, data_dir):
    plain = run(services, "a red cube")
    shared = services.models.current
    before = {k: v.clone() for k, v in shared.unet.state_dict().items()}
    te_before = {k: v.clone() for k, v in shared.text_encoders[0].state_dict().items()}
    styled = run(services, "a red cube <lora:style:1>")
    assert not np.array_equal(pixels(plain), pixels(styled)), "the LoRA changed nothing"
    # the shared weights are bit-identical after the job, and the next plain job gives the old image
    assert all(torch.equal(v, shared.unet.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, shared.text_encoders[0].state_dict()[k]) for k, v in te_before.items())
    assert np.array_equal(pixels(run(services, "a red cube")), pixels(plain))
    # weight 0 is no LoRA at all; by alias (ss_output_name) is the same network as by file name
    assert np.array_equal(pixels(run(services, "a red cube <lora:style:0>")), pixels(plain))
    assert np.array_equal(pixels(run(services, "a red cube <lora:painterly:1>")), pixels(styled))
    assert np.array_equal(pixels(run(services, "a red cube <lyco:style:1>")), pixels(styled))
    # the tag stays in the infotext's prompt; Lora hashes names it with the AutoV3 short hash
    fields = parse_infotext(styled.infotexts[0])
    assert fields["Prompt"] == "a red cube <lora:style:1>"
    expected = payload_sha256(data_dir / "models" / "Lora" / "styles" / "style.safetensors")[:12]
    assert fields["Lora hashes"] == f"style: {expected}"
    assert 'Lora hashes: "style: ' in styled.infotexts[0] and "Lora hashes" not in plain.infotexts[0]
    # on the CPU the dense differences are kept within the cache's limit; the hash went to cache.json
    assert 0 < services.lora_cache.bytes <= services.lora_cache.limit_bytes
    lora_file = str((data_dir / "models" / "Lora" / "styles" / "style.safetensors").resolve())
    cached = json.loads((data_dir / "cache.json").read_text())["hashes-addnet"][lora_file]
    assert cached["sha256"][:12] == expected


def test_text_encoder_and_unet_weights_apply_separately(services):
    plain = run(services, "a red cube")
    both = run(services, "a red cube <lora:style:1>")
    unet_only = run(services, "a red cube <lora:style:0:1>")
    te_only = run(services, "a red cube <lora:style:1:unet=0>")
    named = run(services, "a red cube <lora:style:1:unet=0:te=0>")
    assert np.array_equal(pixels(named), pixels(plain))
    images = [pixels(x) for x in (plain, both, unet_only, te_only)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j]), (i, j)


def test_lora_infotext_hashes_follow_the_setting(services):
    off = run(services, "cube <lora:style:1>", override_settings={"lora_add_hashes_to_infotext": False})
    assert "Lora hashes" not in off.infotexts[0] and "<lora:style:1>" in off.infotexts[0]


@pytest.mark.parametrize(
    ("prompt", "named"),
    [("cube <lora:missing:1>", "missing"), ("cube <lora:../x:1>", "../x"), ("<lora:x:1>", "'x'")],
)
def test_an_unknown_or_outside_name_is_refused_before_queueing(services, prompt, named):
    with pytest.raises(RequestError, match="unknown LoRA") as caught:
        services.submit_generation(request(prompt))
    assert caught.value.field == "prompt" and named in str(caught.value)


def test_bad_lora_arguments_are_refused_before_queueing(services):
    for prompt, message in [
        ("cube <lora:style:heavy>", "'heavy' is not a number"),
        ("cube <lora:style:1:dyn=4>", "unsupported argument"),
    ]:
        with pytest.raises(RequestError, match=message) as caught:
            services.submit_generation(request(prompt))
        assert caught.value.field == "prompt"


def test_other_tags_and_negative_lora_tags_fail_the_job_naming_them(services):
    # other kinds are left to extension scripts (they may take their tags out); the engine refuses the rest
    for changes, message in [
        ({"prompt": "cube <hypernet:thing:1>"}, "not supported in this build: remove <hypernet:thing:1>"),
        ({"prompt": "cube", "negative_prompt": "<lora:style:1>"}, "prompt only: remove <lora:style:1>"),
    ]:
        with pytest.raises(JobError, match=message):
            services.submit_generation(request(**changes)).wait(300)


def test_tag_syntax_as_a1111():
    assert parse_lora_tag("<lora:a>") == LoraTag("a", 1.0, 1.0)
    assert parse_lora_tag("<lora:a:0.5>") == LoraTag("a", 0.5, 0.5)
    assert parse_lora_tag("<lora:a:0.5:0.2>") == LoraTag("a", 0.5, 0.2)
    assert parse_lora_tag("<lora:a:1:unet=0.5:te=0.8>") == LoraTag("a", 0.8, 0.5)
    assert parse_lora_tag("<lora:a:te=0.3>") == LoraTag("a", 0.3, 0.3)  # the U-Net follows te


def test_the_library_lists_sub_folders_user_metadata_and_previews(data_dir):
    library = LoraLibrary([data_dir / "models" / "Lora", data_dir / "models" / "LyCORIS"])
    (entry,) = library.entries()
    assert (entry.name, entry.alias, entry.relative) == ("style", "painterly", "styles/style.safetensors")
    assert entry.user.activation_text == "oil paint" and entry.user.preferred_weight == 0.7
    assert entry.user.notes == "tiny test" and entry.preview.name == "style.preview.png"
    assert library.find("painterly") == entry and library.find("../x") is None
    assert library.find(str(data_dir / "models" / "x.safetensors")) is None


def test_each_batch_gets_the_networks_of_its_first_prompt(services, data_dir):
    """A script giving batch 2 a LoRA: batch 1 is as without, batch 2 as a LoRA job of its seed."""
    model = services.models.load(None)
    settings = EngineSettings(save_images=False)
    library = services.loras
    patch = LoraNetworksPatch(lambda name, m: library.network(library.find(name), m), DeltaCache())
    with ModelLease(model, [patch]) as view:
        with_lora = generate(view, request("cube <lora:style:1>", seed=11), JobContext(), settings)
    without = generate(model, request("cube", seed=10), JobContext(), settings)

    def process_batch(args):
        if args.batch_number == 1:
            args.prompts = ["cube <lora:style:1>"]

    with ModelLease(model, [patch]) as view:
        hooks = EngineHooks(process_batch=process_batch)
        mixed = generate(view, request("cube", seed=10, n_iter=2), JobContext(), settings, hooks)
    assert np.array_equal(pixels(mixed, 0), pixels(without))
    assert np.array_equal(pixels(mixed, 1), pixels(with_lora))
    assert "Lora hashes" not in mixed.images[0].infotext and "Lora hashes" in mixed.images[1].infotext

    # within a batch the first prompt's networks apply to every image (A1111); the others' tags are only text
    def second_image_tagged(args):
        args.prompts = ["cube", "cube <lora:style:1>"]

    plain_pair = generate(model, request("cube", seed=10, batch_size=2), JobContext(), settings)
    with ModelLease(model, [patch]) as view:
        hooks = EngineHooks(process_batch=second_image_tagged)
        pair = generate(view, request("cube", seed=10, batch_size=2), JobContext(), settings, hooks)
    assert all(np.array_equal(pixels(pair, i), pixels(plain_pair, i)) for i in range(2))
    assert pair.images[1].prompt == "cube <lora:style:1>" and "Lora hashes" not in pair.images[1].infotext


def test_over_http_loras_list_refresh_and_errors(data_dir):
    with start_server(data_dir) as server:
        listed = requests.get(f"{server.api}/loras", timeout=30).json()
        assert [(x["name"], x["alias"]) for x in listed] == [("style", "painterly")]
        assert listed[0]["metadata"]["ss_output_name"] == "painterly"
        assert Path(listed[0]["path"]).name == "style.safetensors"
        extra = data_dir / "models" / "LyCORIS" / "second.safetensors"
        save_safetensors(lora_tensors(seed=3), extra)
        assert requests.post(f"{server.api}/refresh-loras", timeout=30).status_code == 200
        names = [x["name"] for x in requests.get(f"{server.api}/loras", timeout=30).json()]
        assert names == ["style", "second"]
        body = dict(prompt="cube <lora:nowhere:1>", steps=2, width=64, height=64, seed=1)
        refused = requests.post(f"{server.api}/txt2img", json=body, timeout=300)
        assert refused.status_code == 422 and "nowhere" in refused.text
        done = requests.post(
            f"{server.api}/txt2img", json={**body, "prompt": "cube <lora:second:0.5>"}, timeout=300
        )
        assert done.status_code == 200, done.text
        info = json.loads(done.json()["info"])
        assert info["prompt"] == "cube <lora:second:0.5>"
        assert f'Lora hashes: "second: {payload_sha256(extra)[:12]}"' in info["infotexts"][0]


def test_lora_dir_flag_links_out_and_foreign_files(data_dir, tmp_path_factory):
    extra = tmp_path_factory.mktemp("more-loras")
    save_safetensors(lora_tensors(seed=2), extra / "extra.safetensors")
    save_safetensors({"some_other_model.weight": torch.zeros(2, 2)}, extra / "foreign.safetensors")
    (data_dir / "models" / "Lora" / "link.safetensors").symlink_to(data_dir / "models" / "x.safetensors")
    flags = ["--data-dir", str(data_dir), "--use-cpu", "all", "--lora-dir", str(extra)]
    app = build_services(cmd_args.parse_args(flags))
    try:
        assert [e.name for e in app.loras.entries()] == ["style", "extra", "foreign"]  # no link leading out
        with pytest.raises(RequestError, match="unknown LoRA 'link'"):
            app.submit_generation(request("cube <lora:link:1>"))
        assert app.submit_generation(request("cube <lora:extra:1>")).wait(300).images
        with pytest.raises(JobError, match=r"foreign\.safetensors: no key matches a module"):
            app.submit_generation(request("cube <lora:foreign:1>")).wait(300)
    finally:
        app.shutdown()


def test_a_pickled_lora_with_code_is_refused_and_never_run(services, data_dir):
    marker = data_dir / "pwned.txt"
    save_code_pickle(data_dir / "models" / "Lora" / "evil.pt", marker)
    services.loras.refresh()
    assert "evil" in [e.name for e in services.loras.entries()] and not marker.exists()
    with pytest.raises(JobError, match=r"LoRA 'evil': .*evil\.pt: refused to unpickle"):
        services.submit_generation(request("cube <lora:evil:1>")).wait(300)
    assert not marker.exists()


def test_without_the_lora_patch_any_tag_in_a_batch_is_refused(tiny_sd1_model):
    """A model leased without LoRA support (an engine caller of its own) never encodes a tag as text."""

    def second_image_tagged(args):
        args.prompts = ["cube", "cube <lora:style:1>"]

    hooks = EngineHooks(process_batch=second_image_tagged)
    with pytest.raises(RequestError, match="remove <lora:style:1>"):
        generate(
            tiny_sd1_model,
            request("cube", batch_size=2),
            JobContext(),
            EngineSettings(save_images=False),
            hooks,
        )
