"""A job's other checkpoints (hires fix's hr_checkpoint_name, the SDXL refiner) get the job's LoRA networks and
ControlNet units, as in A1111: through the engine's request objects, and through the app for the refiner."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modules import cmd_args
from sdwebui.engine.context import JobContext
from sdwebui.engine.controlnet.units import ControlImage, ControlNetUnit, HiResOption
from sdwebui.engine.extra_networks import LoraNetworksPatch
from sdwebui.engine.generate import generate
from sdwebui.engine.hires import HiresFix
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.controlnet import ControlNetLibrary, ControlNets
from sdwebui.models.lease import ModelLease
from sdwebui.models.lora import DeltaCache
from sdwebui.models.lora.library import LoraLibrary
from sdwebui.models.model import CheckpointInfo, LoadedModel, ModelFamily
from sdwebui.outputs.infotext import parse_infotext
from sdwebui.services import build_services
from tests import tiny_models
from tests.api_server import write_settings
from tests.controlnet_fixtures import tiny_controlnet, write_ldm_controlnet
from tests.lora_fixtures import kohya_name, lora_factors, save_safetensors, with_prefix

SIZE = 64
CONV_IN = "conv_in"
SELF_ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def named(model: LoadedModel, name: str) -> LoadedModel:
    """`model` as the listed checkpoint `name` (its own cache keys and infotext name)."""
    info = CheckpointInfo(path=Path(name), name=name, title=f"{name}.safetensors", filename=name)
    return dataclasses.replace(model, info=info, extra={})


def lora_for(model: LoadedModel, paths: tuple[str, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        tensors.update(
            with_prefix(kohya_name(path), lora_factors(model.unet.get_submodule(path).weight, 4, generator))
        )
    return tensors


def dense(tensors: dict[str, torch.Tensor], path: str, weight: torch.Tensor) -> torch.Tensor:
    """The kohya difference of one module, computed here: up @ down (no alpha: scale 1)."""
    up, down = (tensors[f"{kohya_name(path)}.lora_{part}.weight"] for part in ("up", "down"))
    return (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)


def snapshot(model: LoadedModel) -> dict[str, torch.Tensor]:
    modules = {"unet": model.unet, **{f"te{i}": m for i, m in enumerate(model.text_encoders)}}
    return {f"{k}.{n}": t.clone() for k, m in modules.items() for n, t in m.state_dict().items()}


def identical(model: LoadedModel, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[k], v) for k, v in snapshot(model).items())


class Checkpoints:
    """The engine's PassCheckpoints over in-memory models, leased as the app leases them (ModelLease)."""

    def __init__(self, **models: LoadedModel):
        self.models = models

    def use(self, name, field_name, patches=()):
        if name not in self.models:
            raise RequestError(field_name, f"unknown checkpoint {name!r}")
        return ModelLease(self.models[name], patches)


@pytest.fixture(scope="module")
def sd1_pair(tmp_path_factory):
    """(job model alpha, hires checkpoint beta: another SD1 of the same layout, library, the LoRA's tensors)."""
    alpha = named(tiny_models.tiny_loaded_model("sd1", seed=0), "alpha")
    beta = named(tiny_models.tiny_loaded_model("sd1", seed=1), "beta")
    folder = tmp_path_factory.mktemp("Lora")
    tensors = lora_for(alpha, (CONV_IN, SELF_ATTN))
    save_safetensors(tensors, folder / "style.safetensors")
    return alpha, beta, LoraLibrary([folder]), tensors


def lora_patch(library: LoraLibrary) -> LoraNetworksPatch:
    def resolve(name, model):
        entry = library.find(name)
        return library.network(entry, model) if entry is not None else None

    return LoraNetworksPatch(resolve, DeltaCache())


def hires_request(prompt: str, checkpoint: str | None = "beta", **changes) -> Txt2ImgRequest:
    hires = HiresFix(
        hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.6, hr_checkpoint_name=checkpoint
    )
    fields = dict(prompt=prompt, seed=11, steps=2, width=SIZE, height=SIZE, sampler_name="Euler", hires=hires)
    return Txt2ImgRequest(**{**fields, **changes})


def fixed_hires_start(args) -> None:
    """The hires pass starts from the same latents whatever the first pass made: its result then shows only
    what the hires pass's own model does."""
    if args.pass_index == 1:
        args.latents = torch.randn(args.latents.shape, generator=torch.Generator().manual_seed(5))


def run_job(alpha, library, request, settings, hooks=None):
    with ModelLease(alpha, [lora_patch(library)]) as view:
        return generate(view, request, JobContext(), settings, hooks or EngineHooks())


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


def test_the_hires_checkpoint_gets_the_prompts_lora_and_is_restored(sd1_pair):
    alpha, beta, library, tensors = sd1_pair
    settings = EngineSettings(save_images=False, checkpoints=Checkpoints(beta=beta))
    seen: list[torch.Tensor] = []
    hook = beta.unet.register_forward_pre_hook(lambda *_: seen.append(beta.unet.conv_in.weight.clone()))
    before, job_before = snapshot(beta), snapshot(alpha)
    hooks = EngineHooks(before_later_pass=fixed_hires_start)
    try:
        styled = run_job(alpha, library, hires_request("a cube <lora:style:1>"), settings, hooks)
        during, seen[:] = list(seen), []
        plain = run_job(alpha, library, hires_request("a cube <lora:style:0>"), settings, hooks)
    finally:
        hook.remove()
    # in the hires pass beta's weights were its own plus the LoRA's difference, computed here
    expected = before[f"unet.{CONV_IN}.weight"] + dense(tensors, CONV_IN, beta.unet.conv_in.weight)
    assert during and all(torch.allclose(w, expected, atol=1e-6) for w in during)
    assert seen and all(torch.equal(w, before[f"unet.{CONV_IN}.weight"]) for w in seen)  # weight 0: none
    # the same hires start: the LoRA changed the hires pass's result
    assert np.abs(pixels(styled) - pixels(plain)).max() > 0
    assert identical(beta, before) and identical(alpha, job_before)  # bit-identical after the jobs
    assert parse_infotext(styled.infotexts[0])["Hires checkpoint"] == "beta"
    assert "Lora skipped" not in styled.infotexts[0]


def test_each_batch_gives_the_hires_checkpoint_the_networks_of_its_prompt(sd1_pair):
    alpha, beta, library, tensors = sd1_pair
    settings = EngineSettings(save_images=False, checkpoints=Checkpoints(beta=beta))
    original = beta.unet.conv_in.weight.clone()
    seen: list[tuple[int, torch.Tensor]] = []
    batch = [0]

    def process_batch(args):
        batch[0] = args.batch_number
        args.prompts = ["a cube <lora:style:0.5>" if args.batch_number == 0 else "a cube"]

    def record(*_):
        seen.append((batch[0], beta.unet.conv_in.weight.clone()))

    hook = beta.unet.register_forward_pre_hook(record)
    try:
        run_job(
            alpha,
            library,
            hires_request("a cube", n_iter=2),
            settings,
            EngineHooks(process_batch=process_batch),
        )
    finally:
        hook.remove()
    half = original + 0.5 * dense(tensors, CONV_IN, original)
    assert {b for b, _ in seen} == {0, 1}
    assert all(torch.allclose(w, half, atol=1e-6) for b, w in seen if b == 0)
    assert all(torch.equal(w, original) for b, w in seen if b == 1)
    assert torch.equal(beta.unet.conv_in.weight, original)


def test_naming_the_jobs_own_checkpoint_applies_the_lora_once(sd1_pair):
    alpha, _, library, _ = sd1_pair
    settings = EngineSettings(save_images=False, checkpoints=Checkpoints(alpha=alpha))
    named_twice = hires_request("a cube <lora:style:1>", "alpha", refiner_checkpoint="alpha")
    same = run_job(alpha, library, named_twice, settings)
    unnamed = run_job(alpha, library, hires_request("a cube <lora:style:1>", None), settings)
    assert np.array_equal(pixels(same), pixels(unnamed))
    fields = parse_infotext(same.infotexts[0])
    assert fields["Hires checkpoint"] == fields["Refiner"] == "alpha"


@pytest.fixture(scope="module")
def controlnets(tmp_path_factory) -> ControlNets:
    folder = tmp_path_factory.mktemp("ControlNet")
    write_ldm_controlnet(tiny_controlnet("sd1"), "sd1", folder / "tiny_sd1_canny.pth")
    return ControlNets(ControlNetLibrary([folder]))


def high_res_unit(option: HiResOption = HiResOption.HIGH_RES_ONLY) -> ControlNetUnit:
    image = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(image).rectangle([16, 16, 48, 48], fill="white")
    return ControlNetUnit(
        enabled=True,
        module="none",
        model="tiny_sd1_canny",
        images=(ControlImage(image),),
        hr_option=option,
    )


@pytest.mark.parametrize("checkpoint", ["beta", "alpha"])
def test_controlnet_acts_in_the_hires_pass_on_a_checkpoint_of_the_same_family(
    sd1_pair, controlnets, checkpoint
):
    """A "High res only" unit changes only the hires pass: with it the image differs, so it acted there."""
    alpha, beta, library, _ = sd1_pair
    checkpoints = Checkpoints(alpha=alpha, beta=beta)
    settings = EngineSettings(save_images=False, checkpoints=checkpoints, controlnets=controlnets)
    plain = run_job(alpha, library, hires_request("a cube", checkpoint), settings)
    controlled = run_job(
        alpha, library, hires_request("a cube", checkpoint, controlnet_units=[high_res_unit()]), settings
    )
    assert np.abs(pixels(controlled) - pixels(plain)).max() > 0


def test_controlnet_with_a_hires_checkpoint_of_another_family_fails_naming_it(
    sd1_pair, controlnets, tiny_sdxl_model
):
    alpha, _, library, _ = sd1_pair
    other = named(tiny_sdxl_model, "xl")
    settings = EngineSettings(save_images=False, checkpoints=Checkpoints(xl=other), controlnets=controlnets)
    with pytest.raises(RequestError) as info:
        run_job(alpha, library, hires_request("a cube", "xl", controlnet_units=[high_res_unit()]), settings)
    assert info.value.field == "hr_checkpoint_name"
    assert "xl is SDXL" in str(info.value) and "SD 1.x" in str(info.value)
    # a unit that stays out of the hires pass does not stop it
    low_res = hires_request("a cube", "xl", controlnet_units=[high_res_unit(HiResOption.LOW_RES_ONLY)])
    assert run_job(alpha, library, low_res, settings).images[0].image.size == (96, 96)


# -- the SDXL refiner through the app: a base LoRA fits the refiner in part, or not at all -------------------
CROSS_ATTN = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"  # width 64 in the base, 32 in the refiner
)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("refiner-lora")
    tiny_models.write_sdxl_base_and_refiner(data_dir / "models" / "Stable-diffusion")
    write_settings(data_dir, {"sd_checkpoints_limit": 2, "sd_model_checkpoint": "base.safetensors"})
    base = tiny_models.tiny_loaded_model(ModelFamily.SDXL, seed=0)
    partial = lora_for(base, (CONV_IN, CROSS_ATTN), seed=1)  # conv_in fits the refiner, to_k does not
    save_safetensors(partial, data_dir / "models" / "Lora" / "partial.safetensors")
    save_safetensors(
        lora_for(base, (CROSS_ATTN,), seed=2), data_dir / "models" / "Lora" / "xattn.safetensors"
    )
    services = build_services(cmd_args.parse_args(["--data-dir", str(data_dir), "--use-cpu", "all"]))
    yield services, partial
    services.shutdown()


def refiner_job(services, prompt: str):
    request = Txt2ImgRequest(
        prompt=prompt, seed=3, steps=4, width=SIZE, height=SIZE, sampler_name="Euler",
        refiner_checkpoint="refiner", refiner_switch_at=0.5,
    )  # fmt: skip
    return services.submit_generation(request).wait(300)


def test_the_refiner_gets_what_fits_and_names_a_lora_that_fits_nothing(app):
    services, partial = app
    refiner_job(services, "a cube")  # both checkpoints loaded (sd_checkpoints_limit 2)
    refiner = next(m for m in services.models.manager.loaded() if m.info.name == "refiner")
    before = snapshot(refiner)
    seen: list[torch.Tensor] = []
    hook = refiner.unet.register_forward_pre_hook(lambda *_: seen.append(refiner.unet.conv_in.weight.clone()))
    try:
        fits = refiner_job(services, "a cube <lora:partial:1>")
        during, seen[:] = list(seen), []
        skipped = refiner_job(services, "a cube <lora:xattn:1>")
    finally:
        hook.remove()
    # where it fits the refiner, the base LoRA applies; its cross-attention module is left out
    expected = before[f"unet.{CONV_IN}.weight"] + dense(partial, CONV_IN, refiner.unet.conv_in.weight)
    assert during and all(torch.allclose(w, expected, atol=1e-6) for w in during)
    assert "Lora skipped" not in fits.infotexts[0]
    # a LoRA that fits nothing in the refiner: the job runs, and its infotext names the file and the refiner
    assert seen and all(torch.equal(w, before[f"unet.{CONV_IN}.weight"]) for w in seen)
    fields = parse_infotext(skipped.infotexts[0])
    assert fields["Lora skipped"] == f"xattn.safetensors: {fields['Refiner']}"
    assert fields["Refiner"].startswith("refiner [") and fields["Lora hashes"].startswith("xattn: ")
    assert identical(refiner, before)
