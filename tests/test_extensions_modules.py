"""The A1111 modules added for community extensions (issue 20) behave as documented, in a bound app:
upscaler (shared.sd_upscalers with a real model file), hashes, safe, modelloader, timer, cache, ui,
ui_common, extras, shared_items, sd_samplers_common, launch_utils, and the new names of processing,
prompt_parser, images, sd_models and shared."""

from __future__ import annotations

import hashlib
import io
import os
import pickle

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from modules import (
    cache,
    extras,
    hashes,
    images,
    img2img,
    launch_utils,
    modelloader,
    processing,
    prompt_parser,
    safe,
    script_callbacks,
    scripts,
    sd_hijack,
    sd_models,
    sd_samplers_common,
    shared,
    shared_items,
    timer,
    ui,
    ui_common,
    upscaler,
)
from sdwebui.engine import upscaling
from sdwebui.models.model import ModelFamily
from tests import tiny_models
from tests.sample_extensions.harness import make_app, reset_scripts


def _esrgan(scale: int):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(scale)
    return ESRGAN(num_filters=8, num_blocks=1, scale=scale)


def _embedding(path, width: int, count: int = 3):
    """A1111's textual-inversion file layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = torch.randn(count, width, generator=torch.Generator().manual_seed(width))
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": path.stem,
                "step": 10, "sd_checkpoint": None, "sd_checkpoint_name": None}, path)  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory, _tiny_model_cache):
    data = tmp_path_factory.mktemp("modules") / "data"
    (data / "models" / "ESRGAN").mkdir(parents=True)
    save_file(_esrgan(2).state_dict(), data / "models" / "ESRGAN" / "tiny2x.safetensors")
    _embedding(data / "embeddings" / "fits.pt", width=32)  # the tiny SD1 text encoder's width
    _embedding(data / "embeddings" / "wide.pt", width=48)
    if ModelFamily.SD1 not in _tiny_model_cache:
        _tiny_model_cache[ModelFamily.SD1] = tiny_models.tiny_loaded_model(ModelFamily.SD1, seed=0)
    services, _ = make_app(data, _tiny_model_cache[ModelFamily.SD1], "--disable-extra-extensions")
    yield services, data
    services.jobs.shutdown()
    reset_scripts()


def _image(width=16, height=12) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def test_sd_upscalers_hold_upscaler_data_whose_scaler_upscales(app):
    services, data = app
    names = [u.name for u in shared.sd_upscalers]
    assert names == ["None", "Lanczos", "Nearest", "tiny2x"]
    model = shared.sd_upscalers[3]
    assert isinstance(model, upscaler.UpscalerData) and model.scale == 2
    assert model.data_path == str(data / "models" / "ESRGAN" / "tiny2x.safetensors")
    image = _image()
    out = model.scaler.upscale(image, 2, model.data_path)  # Ultimate SD upscale's call
    expected = upscaling.upscale(image, 2.0, "tiny2x", services.upscalers())
    assert out.size == (32, 24) and np.array_equal(np.asarray(out), np.asarray(expected))
    assert not np.array_equal(np.asarray(out), np.asarray(image.resize((32, 24), Image.Resampling.LANCZOS)))
    lanczos = shared.sd_upscalers[1].scaler.upscale(image, 2, None)
    assert np.array_equal(np.asarray(lanczos), np.asarray(image.resize((32, 24), Image.Resampling.LANCZOS)))
    assert shared.sd_upscalers[0].scaler.upscale(image, 2, None) is image


def test_hashes_cache_and_addnet(app, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(3)}, path)
    raw = path.read_bytes()
    assert hashes.sha256_from_cache(str(path), "w") is None
    assert (
        hashes.sha256(str(path), "w") == hashlib.sha256(raw).hexdigest() == hashes.calculate_sha256(str(path))
    )
    assert hashes.sha256_from_cache(str(path), "w") == hashlib.sha256(raw).hexdigest()  # the app's cache
    header = int.from_bytes(raw[:8], "little")
    assert (
        hashes.sha256(str(path), "w", use_addnet_hash=True) == hashlib.sha256(raw[8 + header :]).hexdigest()
    )
    assert hashes.sha256(str(tmp_path / "missing"), "x") is None


class Odd:
    def __init__(self):
        self.value = 3


def test_safe_load_refuses_code_unless_extra_allows(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"t": torch.ones(2), "odd": Odd()}, path)
    with pytest.raises(pickle.UnpicklingError):
        safe.load(str(path))
    with safe.Extra(lambda module, name: Odd if name == "Odd" else None):
        assert safe.load(str(path))["odd"].value == 3
    torch.save({"t": torch.ones(2)}, path)
    assert torch.equal(safe.load(str(path))["t"], torch.ones(2)) and safe.unsafe_torch_load is torch.load


def test_modelloader_finds_files_and_never_downloads(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.pth", "sub/b.safetensors", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = modelloader.load_models(str(tmp_path), ext_filter=[".pth", ".safetensors"])
    assert [os.path.relpath(p, tmp_path) for p in found] == ["a.pth", "sub/b.safetensors"]
    url = "https://example.invalid/models/a.pth"
    assert modelloader.load_file_from_url(url, model_dir=str(tmp_path)) == str(tmp_path / "a.pth")
    with pytest.raises(modelloader.OfflineDownloadError, match=f"z.pth is not in {tmp_path}"):
        modelloader.load_file_from_url(url, model_dir=str(tmp_path), file_name="z.pth")
    assert modelloader.friendly_name(url) == "a"


def test_timer_and_cache(app, tmp_path):
    t = timer.Timer()
    with t.subcategory("load"):
        t.record("one")
    assert set(t.records) == {"load/one", "load"} and t.summary().startswith(f"{t.total:.1f}s")
    source = tmp_path / "f.txt"
    source.write_text("1")
    calls = []
    value = cache.cached_data_for_file("sect", "f", str(source), lambda: calls.append(1) or {"n": len(calls)})
    assert value == {"n": 1}
    assert cache.cached_data_for_file("sect", "f", str(source), lambda: {"n": 99}) == {"n": 1}
    os.utime(source, (os.path.getmtime(source) + 10,) * 2)
    assert cache.cached_data_for_file("sect", "f", str(source), lambda: {"n": 2}) == {"n": 2}
    assert cache.cache_filename().is_file() and '"n": 2' in cache.cache_filename().read_text()


def test_ui_helpers():
    assert ui.gr_show(False) == {"__type__": "update", "visible": False}
    assert ui_common.plaintext_to_html("a<b\nc") == "<p>a&lt;b<br>\nc</p>"
    assert ui.plaintext_to_html is ui_common.plaintext_to_html and ui.save_style_symbol == "\U0001f4be"
    calls = []
    with gr.Blocks() as demo:
        box = gr.Dropdown(choices=["a"], label="Model")
        button = ui.create_refresh_button(box, lambda: calls.append(1), lambda: {"choices": ["a", "b"]}, "r")
        panel = ui_common.create_output_panel("mytab", "")
    assert button.value == ui.refresh_symbol and button.elem_id == "r"
    refresh = next(dep for dep in demo.fns.values() if box in dep.outputs)
    assert refresh.fn() == {"__type__": "update", "choices": ["a", "b"]} and calls == [1]
    assert panel.gallery.elem_id == "mytab_gallery" and not panel.generation_info.visible
    assert f"torch: {torch.__version__}" in ui.versions_html()
    assert launch_utils.git_tag() != "" and launch_utils.is_installed("torch")


def test_processing_prompt_parser_and_images_names():
    rgba = Image.new("RGBA", (4, 2), (10, 20, 30, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 200))
    mask = processing.create_binary_mask(rgba)
    assert mask.mode == "L" and list(mask.getdata()) == [0, 255, 0, 0, 0, 0, 0, 0]
    assert processing.opt_f == 8 and processing.opt_C == 4
    noise = processing.create_random_tensors([4, 8, 8], seeds=[1, 2])
    assert noise.shape == (2, 4, 8, 8) and torch.equal(
        noise, processing.create_random_tensors([4, 8, 8], [1, 2])
    )
    assert not torch.equal(noise[0], noise[1])
    flat = images.flatten(rgba, "#ff0000")
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (255, 0, 0)
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    schedules = [
        prompt_parser.ScheduledPromptConditioning(5, a),
        prompt_parser.ScheduledPromptConditioning(20, b),
    ]
    end, cond = schedules[0]
    assert end == 5 and cond is a
    assert torch.equal(prompt_parser.reconstruct_cond_batch([schedules, schedules], 7), torch.stack([b, b]))
    multi = prompt_parser.MulticondLearnedConditioning(
        (1,), [[prompt_parser.ComposableScheduledPromptConditioning(schedules, 0.5)]]
    )
    assert multi.batch[0][0].weight == 0.5


def test_shared_names_and_model_data(app):
    services, data = app
    assert shared.config_filename == str(data / "config.json") == shared.cmd_opts.ui_settings_file
    assert shared.ui_config_file == str(data / "ui-config.json")
    assert shared.cmd_opts.hypernetwork_dir == str(data / "models" / "hypernetworks")
    assert shared.cmd_opts.gfpgan_models_path == str(data / "models" / "GFPGAN")
    assert shared.hide_dirs == {"visible": True} and shared.batch_cond_uncond is True
    for name, default in (("img2img_background_color", "#ffffff"), ("grid_format", "png"), ("temp_dir", ""),
                          ("outdir_save", "log/images"), ("upcast_attn", False), ("uni_pc_order", 3)):  # fmt: skip
        assert getattr(shared.opts, name) == default, name
        assert "the app itself does not apply it" in shared.opts.data_labels[name].label
    found = list(shared.walk_files(str(data / "models"), allowed_extensions=[".safetensors"]))
    assert str(data / "models" / "ESRGAN" / "tiny2x.safetensors") in found
    assert all(f.endswith(".safetensors") for f in found)
    sd_models.reload_model_weights()
    assert sd_models.model_data.was_loaded_at_least_once
    assert sd_models.model_data.get_sd_model().sd_model_hash == shared.sd_model.sd_model_hash
    assert shared_items.list_checkpoint_tiles() == sd_models.checkpoint_tiles()
    assert shared_items.sd_vae_items()[:2] == ["Automatic", "None"]


def test_samplers_common_decodes_with_the_models_vae(app):
    latents = torch.zeros(1, 4, 8, 8)
    pixels = sd_samplers_common.samples_to_images_tensor(latents)
    assert pixels.shape == (1, 3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    back = sd_samplers_common.images_tensor_to_samples((pixels + 1) / 2)
    assert back.shape == (1, 4, 8, 8)
    assert sd_samplers_common.sample_to_image(latents).size == (64, 64)

    class P:
        steps, denoising_strength = 20, 0.5

    assert sd_samplers_common.setup_img2img_steps(P()) == (20, 10)
    assert issubclass(sd_samplers_common.InterruptedException, BaseException)


def test_extras_run_pnginfo():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 2")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG", pnginfo=info)
    _, geninfo, html = extras.run_pnginfo(Image.open(buffer))
    assert geninfo == "a cat\nSteps: 2" and "<b>parameters</b>" in html and "a cat<br>" in html
    assert extras.run_pnginfo(None) == ("", "", "")


def test_model_hijack_embedding_db_is_the_apps_library(app):
    services, data = app
    sd_models.reload_model_weights()
    db = sd_hijack.model_hijack.embedding_db
    assert set(db.word_embeddings) == {"fits"} and set(db.skipped_embeddings) == {"wide"}
    fits = db.word_embeddings["fits"]
    assert fits.filename == str(data / "embeddings" / "fits.pt") and tuple(fits.vec.shape) == (3, 32)
    assert fits.shape == 32 and fits.vectors == 3 and fits.step == 10
    _embedding(data / "embeddings" / "later.pt", width=32)
    db.load_textual_inversion_embeddings(force_reload=True)
    assert set(db.word_embeddings) == {"fits", "later"}
    model = shared.sd_model
    sd_hijack.model_hijack.hijack(model)
    sd_hijack.model_hijack.undo_hijack(model)
    assert sd_hijack.model_hijack.get_prompt_lengths("a cat") == (2, 75)


def test_ui_common_save_files_copies_to_outdir_save(app, tmp_path):
    services, data = app
    sources = []
    for n in range(2):
        sources.append(tmp_path / f"img{n}.png")
        Image.new("RGB", (4, 4), (n, 0, 0)).save(sources[-1])
    info = '{"prompt": "a cat", "all_seeds": [5, 6], "width": 4, "height": 4, "index_of_first_image": 0}'
    files, note = ui_common.save_files(info, [(str(p), None) for p in sources], True, -1)
    folder = data / "log" / "images"
    assert files["value"] == [str(folder / "images.zip"), str(folder / "img0.png"), str(folder / "img1.png")]
    assert note == "<p>Saved: img1.png</p>"
    rows = (folder / "log.csv").read_text().splitlines()
    assert rows[0].startswith("prompt,seed") and rows[2].startswith("a cat,6,4,4")
    files, _ = ui_common.save_files(info, [{"path": str(p)} for p in sources], False, 1)  # the selected one
    assert files["value"] == [str(folder / "img1-1.png")]


def test_img2img_process_batch_runs_each_file_into_the_output_folder(app, tmp_path):
    (tmp_path / "in").mkdir()
    for name, color in (("a", "red"), ("b", "blue")):
        Image.new("RGB", (64, 64), color).save(tmp_path / "in" / f"{name}.png")
    p = processing.StableDiffusionProcessingImg2Img(
        prompt="a cat",
        seed=3,
        steps=2,
        width=64,
        height=64,
        sampler_name="Euler",
        denoising_strength=0.5,
        do_not_save_samples=True,
        init_images=[Image.new("RGB", (64, 64))],
    )
    processed = img2img.process_batch(p, str(tmp_path / "in"), str(tmp_path / "out"), "", None)
    out = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert out == ["a.png", "b.png"] and len(processed.images) == 1
    assert "Denoising strength: 0.5" in Image.open(tmp_path / "out" / "a.png").info["parameters"]


class StepProbe(scripts.Script):
    """Before sampling, overrides p.sampler's callback_state on the instance or sets its stop_at (mode)."""

    mode, calls = "off", []

    def title(self):
        return "Step probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process_before_every_sampling(self, p, *args, **kwargs):
        if StepProbe.mode == "callback_state":
            p.sampler.callback_state = lambda d: StepProbe.calls.append(d["i"])
        elif StepProbe.mode == "stop_at":
            p.sampler.stop_at = 0  # A1111's: callback_state stops the sampling after step 0


def _probe_job(mode: str) -> tuple[list[tuple], processing.Processed]:
    """A 3-step job with StepProbe: per step (its index, shared.state.sampling_step, whether the engine ran
    with the sampler_step / cfg_combine hooks installed)."""
    StepProbe.mode, StepProbe.calls = mode, []
    runner = scripts.ScriptRunner([scripts.ScriptClassData(StepProbe, "/x/probe.py", "/x", None, "probe")])
    runner.ensure_ui()
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt="a cat", seed=1, steps=3, width=64, height=64, sampler_name="Euler"
    )
    engine_hooks, seen = [], []

    def engine_run(request, hooks):  # the app's own run of this job, its hooks kept to look at
        engine_hooks.append(hooks)
        return shared.current_job().run(request, hooks)

    def after_cfg(params):
        hooks = engine_hooks[0]
        installed = (hooks.sampler_step is not None, hooks.cfg_combine is not None)
        seen.append((params.sampling_step, shared.state.sampling_step, *installed))

    p.scripts, p.script_args, p.engine_run = runner, [0], engine_run
    script_callbacks.on_cfg_after_cfg(after_cfg)
    try:
        return seen, processing.process_images(p)
    finally:
        script_callbacks.remove_callbacks_for_function(after_cfg)


def test_per_step_sampler_hooks_only_where_an_extension_overrides(app):
    seen, processed = _probe_job("off")
    # nothing overridden: no per-step hook; sampling_step follows the engine's progress
    assert seen == [(0, 0, False, False), (1, 1, False, False), (2, 2, False, False)]
    assert len(processed.images) == 1 and processed.images[0].size == (64, 64)
    seen, _ = _probe_job("callback_state")  # replaced on the instance before sampling: called every step
    assert seen == [(0, 0, True, False), (1, 1, True, False), (2, 2, True, False)]
    assert StepProbe.calls == [0, 1, 2]
    seen, processed = _probe_job("stop_at")  # A1111's own callback_state, called for its stop_at
    assert [s[0] for s in seen] == [0, 1] and all(s[2] for s in seen)
    assert len(processed.images) == 1  # interrupted after step 1: its estimate decoded
