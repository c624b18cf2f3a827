"""Settings the engine must honour (saving, styles, VAE hash) and requests it must refuse (extra networks);
the default-model choice that skips a checkpoint which cannot be loaded."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from PIL import Image

from modules.styles import PromptStyle, StyleDatabase
from sdwebui.engine.context import JobContext
from sdwebui.engine.generate import generate
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.jobs.managed_models import ManagedModels
from sdwebui.models import discovery
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.hashing import sha256_file
from sdwebui.models.manager import ModelManager
from sdwebui.outputs.infotext import read_infotext
from tests import tiny_models


def request(**changes) -> Txt2ImgRequest:
    base = dict(prompt="a red cube", seed=777, steps=2, width=64, height=64, sampler_name="Euler")
    base.update(changes)
    return Txt2ImgRequest(**base)


def saved_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("extension", ["png", "jpg", "webp"])
def test_saving_settings_name_format_and_infotext(tmp_path, tiny_sd1_model, extension):
    settings = EngineSettings(
        outputs_root=tmp_path,
        samples_format=extension,
        filename_pattern="[seed]-[prompt_words]-[steps]-[model_name]",
        add_number=False,
    )
    result = generate(tiny_sd1_model, request(n_iter=2), JobContext(), settings)
    files = saved_files(tmp_path)
    assert [f.name for f in files] == [
        f"777-a red cube-2-tiny-sd1.{extension}",
        f"778-a red cube-2-tiny-sd1.{extension}",
    ]
    assert files[0].parent.parent.name == "txt2img-images"
    with Image.open(files[1]) as image:
        assert read_infotext(image) == result.infotexts[1]
    assert result.saved_paths == [str(f) for f in files]


def test_enable_pnginfo_off_writes_no_infotext(tmp_path, tiny_sd1_model):
    settings = EngineSettings(outputs_root=tmp_path, enable_pnginfo=False, filename_pattern="[seed]")
    generate(tiny_sd1_model, request(), JobContext(), settings)
    (path,) = saved_files(tmp_path)
    assert re.fullmatch(r"\d{5}-777\.png", path.name)
    with Image.open(path) as image:
        assert read_infotext(image) is None
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # the umask's mode, not mkstemp's 0600


def test_styles_are_applied_once(tmp_path, tiny_sd1_model):
    styles = StyleDatabase(tmp_path / "styles.csv")
    styles.save_style(PromptStyle("best", "best, {prompt}", "blurry"))
    settings = EngineSettings(save_images=False, styles=styles)
    result = generate(
        tiny_sd1_model, request(styles=["best"], negative_prompt="ugly"), JobContext(), settings
    )
    assert result.prompts == ["best, a red cube"] and result.negative_prompts == ["ugly, blurry"]
    assert result.infotexts[0].startswith("best, a red cube\nNegative prompt: ugly, blurry\n")


@pytest.mark.parametrize(
    "field, changes",
    [
        ("prompt", {"prompt": "a cat <lora:detail:0.8>"}),
        ("negative_prompt", {"negative_prompt": "<hypernet:anime:1>, blurry"}),
    ],
)
def test_extra_network_tags_are_refused_naming_them(tiny_sd1_model, field, changes):
    with pytest.raises(RequestError) as err:
        generate(tiny_sd1_model, request(**changes), JobContext(), EngineSettings(save_images=False))
    assert err.value.field == field
    assert re.search(r"<(lora|hypernet):[^>]+>", err.value.reason)


def test_a_style_cannot_smuggle_an_extra_network_tag(tmp_path, tiny_sd1_model):
    styles = StyleDatabase(tmp_path / "styles.csv")
    styles.save_style(PromptStyle("lora", "{prompt}, <lora:x:1>"))
    with pytest.raises(RequestError, match="<lora:x:1>"):
        generate(tiny_sd1_model, request(styles=["lora"]), JobContext(), EngineSettings(styles=styles))


def test_vae_hash_reaches_the_infotext(tmp_path, tiny_model_factory):
    folder = tmp_path / "models" / "Stable-diffusion"
    tiny_models.write_single_file(tiny_model_factory("sd1"), folder / "alpha.safetensors")
    vae_path = tiny_models.write_vae_file(
        tiny_models.tiny_loaded_model("sd1", seed=7).vae, tmp_path / "models" / "VAE" / "other.safetensors"
    )
    manager = ModelManager(
        [folder], [tmp_path / "models" / "VAE"], tmp_path / "cache.json", include_default_dir=False
    )
    model = manager.load("alpha", vae="other.safetensors")
    result = generate(model, request(), JobContext(), EngineSettings(save_images=False))
    digest = sha256_file(vae_path)[:10]
    assert f"VAE hash: {digest}, VAE: other.safetensors" in result.infotexts[0]
    manager.set_vae("None")
    plain = generate(model, request(), JobContext(), EngineSettings(save_images=False))
    assert "VAE hash" not in plain.infotexts[0] and "VAE:" not in plain.infotexts[0]


def _broken(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not a safetensors file" * 10)
    return path


def test_default_model_skips_a_checkpoint_that_cannot_be_loaded(tmp_path, tiny_model_factory, caplog):
    folder = tmp_path / "models" / "Stable-diffusion"
    _broken(folder / "0-broken.safetensors")  # sorts first
    tiny_models.write_single_file(tiny_model_factory("sd1"), folder / "alpha.safetensors")
    manager = ModelManager([folder], [], tmp_path / "cache.json", include_default_dir=False)
    models = ManagedModels(manager)
    model = models.load(None)
    assert model.info.name == "alpha"
    assert len(models.notices) == 1 and "0-broken.safetensors" in models.notices[0]
    assert "0-broken.safetensors" in caplog.text
    models.unload()
    assert models.load(None).info.name == "alpha"  # after /unload-checkpoint too


def test_the_embedded_model_is_the_last_fallback(tmp_path):
    folder = tmp_path / "models" / "Stable-diffusion"
    broken = _broken(folder / "only.safetensors")
    models = ManagedModels(ModelManager([folder], [], tmp_path / "cache.json"), preferred=str(broken))
    model = models.load(None)
    assert Path(model.info.path).is_relative_to(discovery.DEFAULT_MODEL_DIR)
    assert "only.safetensors" in models.notices[0]


def test_no_loadable_checkpoint_is_a_load_error_naming_each(tmp_path):
    folder = tmp_path / "models" / "Stable-diffusion"
    _broken(folder / "a.safetensors")
    _broken(folder / "b.safetensors")
    models = ManagedModels(ModelManager([folder], [], tmp_path / "cache.json", include_default_dir=False))
    with pytest.raises(CheckpointLoadError, match=r"a\.safetensors.*b\.safetensors"):
        models.load(None)


def test_a_config_naming_a_missing_checkpoint_falls_back_and_says_so(tmp_path, tiny_model_factory, caplog):
    from modules import cmd_args
    from sdwebui.services import build_services

    folder = tmp_path / "models" / "Stable-diffusion"
    tiny_models.write_single_file(tiny_model_factory("sd1"), folder / "alpha.safetensors")
    (tmp_path / "config.json").write_text('{"sd_model_checkpoint": "gone.safetensors [0123456789]"}')
    services = build_services(cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"]))
    try:
        model = services.load_plain_model()
        assert model.info.name == "alpha"
        assert services.options.sd_model_checkpoint == model.info.title
        (notice,) = services.all_notices()
        assert "gone.safetensors" in notice and "gone.safetensors" in caplog.text
        assert services.load_plain_model() is model  # no second attempt at the missing file
        assert len(services.all_notices()) == 1
    finally:
        services.jobs.shutdown()


def test_clip_skip_beyond_the_models_layers_is_a_request_error(tiny_sd1_model):
    layers = tiny_sd1_model.text_encoders[0].config.num_hidden_layers
    with pytest.raises(RequestError) as err:
        generate(
            tiny_sd1_model, request(clip_skip=layers + 1), JobContext(), EngineSettings(save_images=False)
        )
    assert err.value.field == "clip_skip" and f"from 1 to {layers}" in str(err.value)


@pytest.mark.parametrize(
    ("sampler", "eta", "written"),
    [
        ("DDIM", 0.5, "Eta DDIM: 0.5"),
        ("DDIM", 0.0, None),
        ("Euler a", 1.0, None),
    ],
)
def test_eta_is_in_the_infotext_when_it_differs_from_the_samplers_default(
    tiny_sd1_model, sampler, eta, written
):
    result = generate(
        tiny_sd1_model,
        request(sampler_name=sampler, eta=eta),
        JobContext(),
        EngineSettings(save_images=False),
    )
    (infotext,) = result.infotexts
    if written:
        assert written in infotext
    else:
        assert "Eta" not in infotext
