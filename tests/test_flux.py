"""Flux.1 (dev, schnell) and SD3 on tiny random models: families, loading every layout, flow sampling,
parity with diffusers' pipelines, distilled guidance and CFG costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdwebui.engine.context import JobContext
from sdwebui.engine.flow.adapter import pack, unpack
from sdwebui.engine.flow.schedules import flow_sigmas, shift_value
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.rng import ImageRNG
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.dit import flux_keys
from sdwebui.models.dit.checkpoints import load_checkpoint
from sdwebui.models.dit.detect import detect_dit
from sdwebui.models.dit.loader import MissingPartError
from sdwebui.models.dit.t5_tokenizer import MissingTokenizerError
from sdwebui.models.families import FAMILIES, family_spec
from sdwebui.models.loader import DevicePolicy
from sdwebui.models.model import CheckpointInfo, ModelFamily
from tests import dit_fixtures as fx

SIZE = fx.SIZE


@pytest.fixture(scope="module")
def flux_dev(tmp_path_factory):
    return fx.tiny_dit_model(ModelFamily.FLUX_DEV, tmp_path_factory.mktemp("flux-dev"))


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return fx.tiny_dit_model(ModelFamily.SD3, tmp_path_factory.mktemp("sd3"))


def info(path) -> CheckpointInfo:
    return CheckpointInfo(path, path.stem, path.name, str(path), is_diffusers_folder=path.is_dir())


def run(model, **changes):
    base = dict(
        prompt="a photo of a cat",
        seed=7,
        steps=4,
        width=SIZE,
        height=SIZE,
        sampler_name="Euler",
        scheduler="Simple",
        cfg_scale=1.0,
    )
    base.update(changes)
    return generate(model, Txt2ImgRequest(**base), JobContext(), EngineSettings(save_images=False))


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_families_are_one_table():
    assert set(FAMILIES) == set(ModelFamily)
    dev, schnell, sd3_spec = (family_spec(f) for f in ("flux-dev", "flux-schnell", "sd3"))
    assert dev.latent_channels == sd3_spec.latent_channels == 16 and family_spec("sdxl").latent_channels == 4
    assert (dev.defaults.cfg_scale, dev.defaults.distilled_cfg_scale, dev.guidance_embeds) == (1.0, 3.5, True)
    assert schnell.defaults.steps == 4 and not schnell.guidance_embeds
    assert sd3_spec.encoder_names == ("clip_l", "clip_g", "t5xxl") and sd3_spec.flow_shift.shift == 3.0
    # Flux dev's shift grows with the image: exp(0.5) at 256 tokens (512 px), exp(1.15) at 4096 (1024 px)
    assert shift_value(dev.flow_shift, 256) == pytest.approx(np.exp(0.5))
    assert shift_value(dev.flow_shift, 4096) == pytest.approx(np.exp(1.15))


def test_every_flux_layout_loads_the_same_weights(flux_dev, tmp_path):
    parts = fx.write_parts(flux_dev, tmp_path / "text_encoder", tmp_path / "VAE")
    single = fx.write_flux_transformer_only(flux_dev, tmp_path / "ckpt" / "flux1-dev-tiny.safetensors")
    assert detect_dit(["model.diffusion_model.input_blocks.0.0.weight"]) is None  # a U-Net file
    with pytest.raises(MissingPartError, match="no VAE inside.*ae.safetensors") as error:
        load_checkpoint(info(single), DevicePolicy())
    assert error.value.field == "forge_additional_modules"
    with pytest.raises(
        MissingPartError, match="no clip_l and t5xxl text encoders inside.*models/text_encoder"
    ):
        load_checkpoint(info(single), DevicePolicy(), [parts["ae"]])
    loaded = load_checkpoint(info(single), DevicePolicy(), list(parts.values()))
    assert loaded.family == ModelFamily.FLUX_DEV and loaded.extra["modules"] == [
        "clip_l.safetensors",
        "t5xxl_fp16.safetensors",
        "ae.safetensors",
    ]
    all_in_one = fx.write_flux_all_in_one(flux_dev, tmp_path / "aio" / "flux1-dev-aio.safetensors")
    folder = fx.write_dit_diffusers_folder(flux_dev, tmp_path / "flux-diffusers")
    for model in (loaded, load_checkpoint(info(all_in_one)), load_checkpoint(info(folder))):
        assert model.family == ModelFamily.FLUX_DEV
        assert same_weights(model.unet, flux_dev.unet) and same_weights(model.vae, flux_dev.vae)
        for ours, theirs in zip(model.text_encoders, flux_dev.text_encoders, strict=True):
            assert same_weights(ours, theirs)
        assert model.tokenizers[-1]("a cat").input_ids == flux_dev.tokenizers[-1]("a cat").input_ids
    (tmp_path / "text_encoder" / "spiece.model").unlink()
    with pytest.raises(MissingTokenizerError, match=str(tmp_path / "text_encoder" / "spiece.model")):
        load_checkpoint(info(single), DevicePolicy(), list(parts.values()))


def test_full_size_flux_layout_matches_diffusers_converter():
    """The BFL key -> shape manifest of real flux1-dev / schnell from the shipped configs on the meta
    device: our rules and diffusers' converter (which hard-codes the full width) agree key for key."""
    import diffusers
    from diffusers.loaders import single_file_utils as sfu

    from sdwebui.models.components import family_config

    for family in (ModelFamily.FLUX_DEV, ModelFamily.FLUX_SCHNELL):
        with torch.device("meta"):
            module = diffusers.FluxTransformer2DModel.from_config(family_config(family)["transformer"])
        manifest = flux_keys.diffusers_to_bfl(module.state_dict())
        assert tuple(manifest["double_blocks.0.img_attn.qkv.weight"].shape) == (9216, 3072)
        assert tuple(manifest["single_blocks.37.linear1.weight"].shape) == (21504, 3072)
        assert tuple(manifest["img_in.weight"].shape) == (3072, 64)
        assert detect_dit(manifest).family == family
        theirs = sfu.convert_flux_transformer_checkpoint_to_diffusers(dict(manifest))
        ours = flux_keys.bfl_to_diffusers(manifest, module)
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in theirs.items()} == expected
        assert {k: tuple(v.shape) for k, v in ours.items()} == expected


FLUX_DEV_SHIFT = dict(base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def flux_pipeline_image(model, scheduler, steps: int):
    """diffusers' FluxPipeline on the model's parts with `scheduler`, from the same noise as `run` (seed 7)."""
    import diffusers

    encoders, tokenizers = model.text_encoders, model.tokenizers
    pipe = diffusers.FluxPipeline(
        scheduler, model.vae, encoders[0], tokenizers[0], encoders[1], tokenizers[1], model.unet
    )
    noise = ImageRNG([7], (16, SIZE // 8, SIZE // 8)).first()
    image = pipe(
        "a photo of a cat",
        height=SIZE,
        width=SIZE,
        num_inference_steps=steps,
        guidance_scale=3.5,
        latents=pack(noise),
        output_type="np",
        max_sequence_length=512,
    ).images[0]
    return pipe, image


def test_flux_dev_matches_diffusers_pipeline(flux_dev):
    """Same weights, noise and sigmas: our loop's image equals FluxPipeline's (Euler, Simple, shift by size)."""
    import diffusers

    ours = run(flux_dev, steps=4, distilled_cfg_scale=3.5)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, **FLUX_DEV_SHIFT)
    pipe, theirs = flux_pipeline_image(flux_dev, scheduler, 4)
    assert np.abs(pixels(ours) - np.round(theirs * 255)).max() <= 1
    assert pipe.scheduler.sigmas.numpy() == pytest.approx(
        flow_sigmas("simple", 4, shift_value(family_spec("flux-dev").flow_shift, 16)).numpy(), abs=1e-6
    )


def test_sd3_matches_diffusers_pipeline_with_cfg_and_negative(sd3):

    ours = run(sd3, steps=3, cfg_scale=4.5, negative_prompt="a dog")
    theirs = sd3_pipeline_image(sd3, [1.0, 2 / 3, 1 / 3])
    assert np.abs(pixels(ours) - np.round(theirs * 255)).max() <= 1
    assert "Schedule type: Simple, CFG scale: 4.5" in ours.infotexts[0]


def sd3_pipeline_image(sd3, sigmas, **extra):
    """diffusers' StableDiffusion3Pipeline on the tiny SD3 (shift 3), from `run`'s noise, CFG 4.5."""
    import diffusers

    pipe = diffusers.StableDiffusion3Pipeline(
        sd3.unet,
        diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        sd3.vae,
        sd3.text_encoders[0],
        sd3.tokenizers[0],
        sd3.text_encoders[1],
        sd3.tokenizers[1],
        sd3.text_encoders[2],
        sd3.tokenizers[2],
    )
    noise = ImageRNG([7], (16, SIZE // 8, SIZE // 8)).first()
    return pipe(
        "a photo of a cat",
        negative_prompt="a dog",
        height=SIZE,
        width=SIZE,
        sigmas=sigmas,
        guidance_scale=4.5,
        latents=noise,
        output_type="np",
        **extra,
    ).images[0]


def count_rows(model):
    rows = []
    handle = model.unet.register_forward_hook(
        lambda module, args, kwargs, out: rows.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
    )
    return rows, handle


def test_distilled_guidance_is_not_cfg(flux_dev):
    """CFG 1: one transformer forward per step, one row; distilled guidance changes the image for free."""
    rows, handle = count_rows(flux_dev)
    try:
        low = run(flux_dev, distilled_cfg_scale=1.0)
        assert rows == [1] * 4
        rows.clear()
        high = run(flux_dev, distilled_cfg_scale=6.0, negative_prompt="a dog")
        assert rows == [1] * 4  # a negative prompt costs nothing at CFG 1
        rows.clear()
        real = run(flux_dev, cfg_scale=3.0, negative_prompt="a dog")
        assert rows == [2] * 4  # real CFG: uncond + cond rows in the one call
    finally:
        handle.remove()
    assert np.abs(pixels(low) - pixels(high)).mean() > 0.5
    assert np.abs(pixels(real) - pixels(high)).mean() > 0.5
    info = high.infotexts[0]
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 1," in info and "Distilled CFG Scale: 6" in info


def test_unipc_matches_diffusers_pipeline(flux_dev):
    """UniPC on the flow: FluxPipeline with UniPCMultistepScheduler (flow sigmas, flow prediction, Flux's
    resolution shift) gives our image."""
    import diffusers

    scheduler = diffusers.UniPCMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", use_dynamic_shifting=True
    )  # FluxPipeline's mu from its defaults: Flux dev's shift by size
    _, theirs = flux_pipeline_image(flux_dev, scheduler, 5)
    ours = run(flux_dev, steps=5, sampler_name="UniPC", distilled_cfg_scale=3.5)
    assert np.abs(pixels(ours) - np.round(theirs * 255)).max() <= 1
    assert "Sampler: UniPC, Schedule type: Simple" in ours.infotexts[0]


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_dpmpp_2m_sde_matches_diffusers_scheduler(eta):
    """Step for step on the same sigmas and noise: our DPM++ 2M SDE equals diffusers' sde-dpmsolver++
    (midpoint, flow sigmas) at eta 1, and its eta 0 is the deterministic DPM++ 2M."""
    import diffusers

    from sdwebui.engine.flow.scheduler import FlowConfig, FlowScheduler

    def velocity(x, sigma):  # a smooth stand-in for the transformer
        return torch.tanh(x) * (1 + sigma) - 0.3

    sigma_steps = 9
    ours = FlowScheduler(FlowConfig("dpmpp_2m_sde", "simple", 3.0, eta))
    ours.set_timesteps(sigma_steps)
    algorithm = "sde-dpmsolver++" if eta else "dpmsolver++"
    theirs = diffusers.DPMSolverMultistepScheduler(
        algorithm_type=algorithm, use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0
    )
    theirs.set_timesteps(sigma_steps)
    theirs.sigmas = ours.sigmas.to(torch.float32)
    theirs.set_begin_index(0)
    start = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    a = b = start
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for i, t in enumerate(ours.timesteps):
        sigma = float(ours.sigmas[i])
        a = ours.step(velocity(a, sigma), t, a, generator=ga)[0]
        b = theirs.step(velocity(b, sigma), t, b, generator=gb, return_dict=False)[0]
        assert torch.allclose(a, b, atol=1e-4), i
    assert a.std() > 0.1


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ 2M SDE", "UniPC", "LCM"])
def test_samplers_differ_and_are_deterministic(flux_dev, sampler):
    first, again = run(flux_dev, sampler_name=sampler, steps=5), run(flux_dev, sampler_name=sampler, steps=5)
    assert np.array_equal(pixels(first), pixels(again))
    euler = run(flux_dev, steps=5)
    assert np.abs(pixels(first) - pixels(euler)).mean() > 0.1


def test_bad_flow_input_is_a_request_error(flux_dev):
    with pytest.raises(RequestError) as error:
        run(flux_dev, sampler_name="DDIM")
    assert error.value.field == "sampler_name" and "Euler a" in str(error.value)
    with pytest.raises(RequestError) as error:
        run(flux_dev, scheduler="Exponential")
    assert error.value.field == "scheduler"
    with pytest.raises(RequestError) as error:
        run(flux_dev, width=72)
    assert error.value.field == "width" and "multiple of 16" in str(error.value)

    class ControlNetUnit:  # a U-Net add-on (engine/addons.py): refused, not silently dropped
        def before_unet(self, call):
            pass

        def wrap_attention(self, name, processor):
            return None

    request = Txt2ImgRequest(
        prompt="a cat", steps=2, width=SIZE, height=SIZE, sampler_name="Euler", cfg_scale=1.0
    )
    with pytest.raises(
        RequestError, match="ControlNetUnit work on U-Net models only, not on Flux.1 dev"
    ) as error:
        generate(
            flux_dev,
            request,
            JobContext(),
            EngineSettings(save_images=False),
            EngineHooks(unet_addons=[ControlNetUnit()]),
        )
    assert error.value.field == "alwayson_scripts"


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["Simple", "SGM Uniform", "Karras", "Beta"])
@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "UniPC", "LCM"])
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_every_sampler_and_schedule(flux_dev, sampler, schedule, steps):
    result = run(flux_dev, sampler_name=sampler, scheduler=schedule, steps=steps)
    image = pixels(result)
    assert image.std() > 1 and f"Sampler: {sampler}, Schedule type: {schedule}" in result.infotexts[0]


def test_unpack_inverts_pack():
    x = torch.randn(2, 16, 6, 10)
    assert torch.equal(unpack(pack(x), 6, 10), x)


@pytest.fixture(scope="module")
def flux_parts(flux_dev, tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux-parts")
    return list(fx.write_parts(flux_dev, folder / "text_encoder", folder / "VAE").values())


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K"])
def test_gguf_transformer_stays_quantized_and_samples_close(flux_dev, flux_parts, tmp_path, quant):
    path = fx.write_flux_gguf(flux_dev, tmp_path / f"flux1-dev-{quant}.gguf", quant)
    model = load_checkpoint(info(path), DevicePolicy(), flux_parts)
    assert model.family == ModelFamily.FLUX_DEV
    weight = model.unet.single_transformer_blocks[0].proj_mlp.weight
    assert weight.quant_type.name == "Q8_0" and weight.dtype == torch.uint8  # 32-wide rows: Q8_0 blocks
    embedder = model.unet.time_text_embed.timestep_embedder.linear_1.weight  # 256-wide rows
    assert embedder.quant_type.name == quant
    stored = sum(p.numel() * p.element_size() for p in model.unet.parameters())
    full = sum(p.numel() * p.element_size() for p in flux_dev.unet.parameters())
    assert stored < 0.5 * full
    quantized, reference = pixels(run(model)), pixels(run(flux_dev))
    assert 0 < np.abs(quantized - reference).mean() < 3


def test_unknown_gguf_quant_type_and_nf4_are_clear_errors(flux_dev, flux_parts, tmp_path):
    from sdwebui.models.errors import CheckpointLoadError

    bad = fx.write_flux_gguf(flux_dev, tmp_path / "flux-iq2.gguf", "Q8_0", unsupported="IQ2_XXS")
    with pytest.raises(
        CheckpointLoadError, match="GGUF quantization type IQ2_XXS, which is not supported.*Q4_K"
    ):
        load_checkpoint(info(bad), DevicePolicy(), flux_parts)
    state = flux_keys.diffusers_to_bfl(flux_dev.unet.state_dict())
    state["double_blocks.0.img_attn.qkv.weight.quant_state.bitsandbytes__nf4"] = torch.zeros(
        4, dtype=torch.uint8
    )
    nf4 = tmp_path / "flux1-dev-bnb-nf4.safetensors"
    import safetensors.torch

    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(nf4))
    reason = "CUDA is not available" if not torch.cuda.is_available() else "bitsandbytes"
    with pytest.raises(CheckpointLoadError, match=f"bitsandbytes NF4 checkpoint.*{reason}.*GGUF"):
        load_checkpoint(info(nf4), DevicePolicy(), flux_parts)


def test_fp8_stored_weights_load_as_their_values(flux_dev, flux_parts, tmp_path):
    path = fx.write_flux_fp8(flux_dev, tmp_path / "flux1-dev-fp8.safetensors")
    model = load_checkpoint(info(path), DevicePolicy(), flux_parts)
    ours = model.unet.state_dict()
    for key, value in flux_dev.unet.state_dict().items():
        assert torch.equal(ours[key], value.to(torch.float8_e4m3fn).float()), key


def test_sd3_single_files_with_and_without_encoders(sd3, tmp_path):
    inside = fx.write_sd3_single_file(sd3, tmp_path / "a" / "sd3.5_medium-tiny.safetensors")
    bare = fx.write_sd3_single_file(
        sd3, tmp_path / "b" / "sd3.5_medium-noenc.safetensors", with_encoders=False
    )
    with pytest.raises(MissingPartError, match="no clip_l and clip_g and t5xxl text encoders"):
        load_checkpoint(info(bare), DevicePolicy())
    parts = fx.write_parts(sd3, tmp_path / "text_encoder", tmp_path / "VAE")
    encoders = [parts["clip_g"], parts["t5xxl"], parts["clip_l"]]  # any order: told apart by their keys
    folder = fx.write_dit_diffusers_folder(sd3, tmp_path / "sd3-diffusers")
    loads = (
        (info(inside), DevicePolicy()),
        (info(bare), DevicePolicy(), encoders),
        (info(folder), DevicePolicy()),
    )
    for model in (load_checkpoint(*args) for args in loads):
        assert model.family == ModelFamily.SD3 and same_weights(model.unet, sd3.unet)
        assert same_weights(model.vae, sd3.vae)
        for ours, theirs in zip(model.text_encoders, sd3.text_encoders, strict=True):
            assert same_weights(ours, theirs)


def test_full_size_sd35_layout_matches_diffusers_converter():
    import diffusers
    from diffusers.loaders import single_file_utils as sfu

    from sdwebui.models.components import family_config
    from sdwebui.models.dit import sd3_keys

    config = family_config(ModelFamily.SD3)["transformer"]
    medium = dict(
        config,
        num_layers=24,
        num_attention_heads=24,
        caption_projection_dim=1536,
        pos_embed_max_size=384,
        dual_attention_layers=list(range(13)),
    )
    for transformer_config in (config, medium):  # SD3.5 large, SD3.5 medium
        with torch.device("meta"):
            module = diffusers.SD3Transformer2DModel.from_config(transformer_config)
        manifest = {
            f"model.diffusion_model.{k}": v
            for k, v in sd3_keys.diffusers_to_original(module.state_dict()).items()
        }
        assert detect_dit(manifest).family == ModelFamily.SD3
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        theirs = sfu.convert_sd3_transformer_checkpoint_to_diffusers(dict(manifest))
        assert {k: tuple(v.shape) for k, v in theirs.items()} == expected
        ours = sd3_keys.original_to_diffusers(manifest, module)
        assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    key = "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
    assert tuple(manifest[key].shape) == (4608, 1536)


def test_hires_fix_and_prompt_editing_on_flux(flux_dev):
    from sdwebui.engine.hires import HiresFix

    result = run(
        flux_dev, prompt="a [dog:cat:2]", steps=3, hires=HiresFix(hr_scale=2.0, denoising_strength=0.5)
    )
    assert result.images[0].image.size == (2 * SIZE, 2 * SIZE)
    info = result.infotexts[0]
    assert "Hires upscale: 2, Hires upscaler: Latent" in info and "Distilled CFG Scale: 3.5" in info
    edited, plain = run(flux_dev, prompt="a [dog:cat:2]"), run(flux_dev, prompt="a cat")
    assert np.abs(pixels(edited) - pixels(plain)).mean() > 0.1


def test_family_defaults_when_not_given(tmp_path):
    """resolve() marks what the front end left out; the job takes it from the family (schnell: 4 steps,
    CFG 1), while a given value wins."""
    from sdwebui.config.options import Options, default_templates
    from sdwebui.config.resolve import RawFields, resolve

    schnell = fx.tiny_dit_model(ModelFamily.FLUX_SCHNELL, tmp_path)
    options = Options(default_templates())
    raw = RawFields(prompt="a cat", seed=3, width=SIZE, height=SIZE, sampler_name="Euler")
    request = resolve(raw, options).request
    assert request.family_defaults == ("steps", "cfg_scale", "distilled_cfg_scale")
    rows, handle = count_rows(schnell)
    try:
        result = generate(schnell, request, JobContext(), EngineSettings(save_images=False))
        assert rows == [1] * 4  # 4 steps at CFG 1
        rows.clear()
        given = resolve(RawFields(**{**vars(raw), "steps": 2, "cfg_scale": 3.0}), options).request
        assert given.family_defaults == ("distilled_cfg_scale",)
        generate(schnell, given, JobContext(), EngineSettings(save_images=False))
        assert rows == [2] * 2
    finally:
        handle.remove()
    assert "Steps: 4, Sampler: Euler, Schedule type: Simple, CFG scale: 1," in result.infotexts[0]


def test_clip_skip_on_flux_takes_clip_l_from_an_earlier_layer(flux_dev, sd3):
    """Flux's CLIP-L gives only the pooled vector: clip skip 2 takes it one layer earlier (a new image);
    more than the tiny CLIP's 2 layers is a RequestError naming clip_skip, for SD3 too."""
    skipped, plain = run(flux_dev, clip_skip=2), run(flux_dev)
    assert np.abs(pixels(skipped) - pixels(plain)).mean() > 0.1
    assert np.array_equal(pixels(run(flux_dev, clip_skip=2)), pixels(skipped))
    assert "Clip skip: 2" in skipped.infotexts[0]
    for model, bad in ((flux_dev, 3), (sd3, 2)):
        with pytest.raises(RequestError, match="clip_skip.*must be from 1 to") as error:
            run(model, clip_skip=bad)
        assert error.value.field == "clip_skip"


class RecordingMover:
    """Says where modules really are and records the moves a placement asks for, making none (the compute
    device below may not exist on this machine)."""

    offload = torch.device("cpu")

    def __init__(self):
        self.moves = []

    def move(self, module, device):
        self.moves.append(device.type)

    def where(self, module):
        return next(module.parameters()).device


def test_a_moving_memory_mode_loads_cpu_first(flux_dev, flux_parts, tmp_path):
    """Under --medvram / --lowvram weights land on the CPU (a CUDA compute device is never touched while
    loading, so this loads on a machine without one); the job's placement brings each component to the
    device in its stage only."""
    from sdwebui.engine.memory.placement import CONDITIONING, DECODE, SAMPLING, Placement
    from sdwebui.engine.memory.plan import JobSize, plan_placement
    from sdwebui.engine.memory.settings import MemorySettings

    cuda = torch.device("cuda")
    policy = DevicePolicy(device=cuda, load_device=torch.device("cpu"))
    single = fx.write_flux_transformer_only(flux_dev, tmp_path / "flux1-dev.safetensors")
    gguf = fx.write_flux_gguf(flux_dev, tmp_path / "flux1-dev-Q8_0.gguf", "Q8_0")
    for path in (single, gguf):
        model = load_checkpoint(info(path), policy, flux_parts)
        assert model.device == cuda
        for module in (model.unet, model.vae, *model.text_encoders):
            assert {p.device.type for p in module.parameters()} == {"cpu"}
    plan = plan_placement(model, MemorySettings(mode="medvram"), JobSize(SIZE, SIZE, 1), None)
    mover = RecordingMover()
    placement = Placement(model, plan, mover=mover)
    placement.enter(CONDITIONING)
    assert mover.moves == ["cuda", "cuda"]  # the two text encoders, nothing else
    placement.enter(SAMPLING)
    placement.enter(DECODE)
    assert [t.component for t in placement.transfers] == ["text_encoders"] * 2 + ["unet", "vae"]


@pytest.mark.parametrize(
    ("flag", "load_device"), [([], None), (["--medvram"], "cpu"), (["--lowvram"], "cpu")]
)
def test_the_memory_flags_choose_cpu_first_loading(tmp_path, flag, load_device):
    from sdwebui.config import flags
    from sdwebui.services import build_services

    services = build_services(flags.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all", *flag]))
    try:
        policy = services.models.manager.policy
        assert (policy.load_device and policy.load_device.type) == load_device
    finally:
        services.shutdown()


def test_sd3_skip_layer_guidance_matches_diffusers_and_only_acts_when_enabled(sd3):
    """SLG (sd3_slg_* settings): equal to StableDiffusion3Pipeline's skip_guidance_layers; one more
    transformer call per step in its window; no change when off, outside the window or at CFG 1."""
    from sdwebui.config.options import Options, default_templates
    from sdwebui.config.resolve import RawFields, resolve
    from sdwebui.engine.flow.slg import SkipLayerGuidance

    overrides = {"sd3_slg_layers": "1", "sd3_slg_stop": 0.9}
    slg = resolve(
        RawFields(prompt="a cat"), Options(default_templates()), overrides
    ).settings.skip_layer_guidance
    assert slg == SkipLayerGuidance((1,), 2.8, 0.01, 0.9)

    def sampled(skip, **changes):
        settings = EngineSettings(save_images=False, skip_layer_guidance=skip)
        base = dict(
            prompt="a photo of a cat", negative_prompt="a dog", seed=7, steps=5, width=SIZE, height=SIZE
        )
        request = Txt2ImgRequest(**{**base, "sampler_name": "Euler", "scheduler": "Simple", **changes})
        return generate(sd3, request, JobContext(), settings)

    rows, handle = count_rows(sd3)
    try:
        guided = sampled(slg, cfg_scale=4.5)
        assert rows == [2] + [2, 1] * 4  # steps 1..4 (5 * 0.01 < i < 5 * 0.9): a cond-only call
    finally:
        handle.remove()
    plain = sampled(SkipLayerGuidance(), cfg_scale=4.5)
    assert np.abs(pixels(guided) - pixels(plain)).mean() > 0.5
    assert np.array_equal(
        pixels(sampled(SkipLayerGuidance((1,), 2.8, 0.5, 0.6), cfg_scale=4.5)), pixels(plain)
    )
    cfg1 = sampled(slg, cfg_scale=1.0)
    assert np.array_equal(pixels(cfg1), pixels(sampled(SkipLayerGuidance(), cfg_scale=1.0)))
    assert "SLG layers: 1, SLG scale: 2.8, SLG start: 0.01, SLG stop: 0.9" in guided.infotexts[0]
    assert "SLG" not in plain.infotexts[0] and "SLG" not in cfg1.infotexts[0]
    theirs = sd3_pipeline_image(
        sd3,
        [1.0, 0.8, 0.6, 0.4, 0.2],
        skip_guidance_layers=[1],
        skip_layer_guidance_scale=2.8,
        skip_layer_guidance_start=0.01,
        skip_layer_guidance_stop=0.9,
    )
    assert np.abs(pixels(guided) - np.round(theirs * 255)).max() <= 1
    with pytest.raises(RequestError, match="blocks \\[5\\] do not exist.*0..1") as error:
        sampled(SkipLayerGuidance((5,)), cfg_scale=4.5)
    assert error.value.field == "sd3_slg_layers"
    with pytest.raises(RequestError, match="override_settings.*block numbers"):
        resolve(RawFields(prompt="a cat"), Options(default_templates()), {"sd3_slg_layers": "a,b"})


PART_FILES = ["ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors"]


@pytest.fixture
def ui_backend(flux_dev, tmp_path):
    """The UI's backend over the real services, on a data dir with a transformer-only Flux dev + parts."""
    from sdwebui.config import flags
    from sdwebui.services import build_services
    from webui.backend import UiBackend

    data = tmp_path / "data"
    fx.write_flux_transformer_only(
        flux_dev, data / "models" / "Stable-diffusion" / "flux1-dev-tiny.safetensors"
    )
    fx.write_parts(flux_dev, data / "models" / "text_encoder", data / "models" / "VAE")
    services = build_services(flags.parse_args(["--data-dir", str(data), "--use-cpu", "all"]))
    yield UiBackend(services)
    services.shutdown()


def test_module_selector_sets_the_option_and_its_infotext_pastes_it_back(ui_backend):
    """The UI's "VAE / Text Encoder" selector (webui.module_selector): it lists the files /sd-modules lists
    and sets `forge_additional_modules`; a UI job without a sampler runs Flux's Euler on those parts and
    names them in its infotext (`Module 1: ae`), which pastes the same selection back."""
    from sdwebui.config.resolve import RawFields
    from sdwebui.engine.infotext_fields import parse_infotext
    from sdwebui.jobs.queue import JobError
    from webui.module_selector import OPTION, apply, current_value, module_names, pasted_modules

    backend = ui_backend
    names = module_names(backend)
    assert sorted(names) == PART_FILES
    assert current_value(backend)["value"] == [] and sorted(current_value(backend)["choices"]) == PART_FILES
    assert apply(backend, PART_FILES) == ""
    assert backend.options.get(OPTION) == PART_FILES and current_value(backend)["value"] == PART_FILES
    raw = RawFields(prompt="a cat", steps=2, width=64, height=64, seed=3, cfg_scale=1.0, save_images=False)
    result = backend.submit(backend.resolve(raw)).wait(600)
    info = result.infotexts[0]
    assert "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16" in info, info
    assert "Sampler: Euler," in info  # no sampler given: Flux's own
    assert pasted_modules(parse_infotext(info), names) == PART_FILES
    assert pasted_modules(parse_infotext("a cat\nSteps: 2, Module 2: clip_l, Module 1: gone"), names) == [
        "clip_l.safetensors"
    ]
    assert pasted_modules(parse_infotext("a cat\nSteps: 2, Seed: 1"), names) is None  # no change
    assert apply(backend, []) == "" and backend.options.get(OPTION) == []
    error = backend.submit(backend.resolve(raw))
    with pytest.raises(JobError, match="forge_additional_modules"):
        error.wait(600)


def test_ui_takes_the_model_familys_sampler_and_cfg(ui_backend):
    """Forge's presets, from the model: with a Flux dev checkpoint the page starts on Euler, CFG 1 and a
    shown Distilled CFG Scale of 3.5; back on an SD family it gets its own steps / CFG and the "Default
    sampler" setting, with the distilled slider hidden. The slider's value reaches the request."""
    from sdwebui.models.families import FamilyDefaults
    from webui.params import family_values
    from webui.ui_config import UiConfig

    flux = ui_backend.family_defaults()  # from the file's header: nothing is loaded yet
    assert (flux.sampler_name, flux.cfg_scale, flux.distilled_cfg_scale) == ("Euler", 1.0, 3.5)
    page_own = {"steps": 30, "cfg_scale": 6.0}  # ui-config.json's values
    sampler, steps, cfg, distilled = family_values(flux, page_own, "Euler a")
    assert (sampler, steps, cfg) == ("Euler", 20, 1.0)
    assert distilled["visible"] is True and distilled["value"] == 3.5
    sampler, steps, cfg, distilled = family_values(FamilyDefaults(), page_own, "DPM++ 2M")
    assert (sampler, steps, cfg, distilled["visible"]) == ("DPM++ 2M", 30, 6.0, False)
    import gradio as gr

    from webui.params import build_params_for

    with gr.Blocks():
        params = build_params_for("txt2img", UiConfig(None), ui_backend)
    assert params.distilled_cfg_scale.visible and params.distilled_cfg_scale.value == 3.5
    assert params.sampler_name.value == "Euler"  # the callable, evaluated on each page load
    assert params.width.value == 1024  # the family's size (the header has no U-Net to read it from)
    values = {component: component.value for component in params.components()}
    values[params.sampler_name], values[params.distilled_cfg_scale] = "Euler", 2.5
    assert params.request_fields(values)["distilled_cfg_scale"] == 2.5
