"""ControlNet / T2I-Adapter units through `generate` on the tiny SD1 / SDXL models (engine surface)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sdwebui.engine.addons import UNetCall
from sdwebui.engine.context import JobContext
from sdwebui.engine.controlnet.units import ControlImage, ControlMode, ControlNetUnit, HiResOption, ResizeMode
from sdwebui.engine.generate import generate
from sdwebui.engine.hooks import EngineHooks
from sdwebui.engine.requests import Img2ImgRequest, RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.controlnet import ControlNetLibrary, ControlNets
from tests.controlnet_fixtures import (
    sidecar_of,
    tiny_controlnet,
    tiny_t2i_adapter,
    tiny_t2i_adapter_xl,
    tiny_union_controlnet,
    write_controlnet_dir,
    write_diffusers_file,
    write_ldm_controlnet,
    write_original_t2i,
)

SIZE = 64


@pytest.fixture(scope="module")
def controlnets(tmp_path_factory) -> ControlNets:
    folder = tmp_path_factory.mktemp("ControlNet")
    write_ldm_controlnet(tiny_controlnet("sd1"), "sd1", folder / "tiny_sd1_canny.pth")
    write_ldm_controlnet(tiny_controlnet("sd1", seed=1), "sd1", folder / "tiny_sd1_depth.safetensors")
    write_controlnet_dir(tiny_controlnet("sdxl"), folder / "tiny_sdxl_canny")
    write_controlnet_dir(tiny_union_controlnet("sdxl"), folder / "tiny_sdxl_union")
    write_diffusers_file(tiny_t2i_adapter(), folder / "t2iadapter_tiny_sd1.safetensors")
    write_diffusers_file(tiny_t2i_adapter_xl(), folder / "t2iadapter_tiny_sdxl.safetensors")
    return ControlNets(ControlNetLibrary([folder]))


def square(size: int = SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).rectangle([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill="white")
    return image


def unit(model: str = "tiny_sd1_canny", **changes) -> ControlNetUnit:
    base = dict(enabled=True, module="none", model=model, images=(ControlImage(square()),))
    base.update(changes)
    return ControlNetUnit(**base)


def run(model, controlnets, units=(), hooks=None, request_type=Txt2ImgRequest, **changes):
    fields = dict(prompt="a cat", negative_prompt="", seed=7, steps=3, width=SIZE, height=SIZE)
    fields.update(changes)
    req = request_type(sampler_name="Euler", controlnet_units=list(units), **fields)
    settings = EngineSettings(save_images=False, controlnets=controlnets)
    return generate(model, req, JobContext(), settings, hooks)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


_PLAIN: dict[str, np.ndarray] = {}


@pytest.fixture
def plain(tiny_sd1_model, controlnets) -> np.ndarray:
    """The image without ControlNet (computed once per module)."""
    if "sd1" not in _PLAIN:
        _PLAIN["sd1"] = pixels(run(tiny_sd1_model, controlnets))
    return _PLAIN["sd1"]


def test_a_unit_changes_the_image_and_writes_the_extension_infotext(tiny_sd1_model, controlnets, plain):
    result = run(tiny_sd1_model, controlnets, [unit()])
    assert np.abs(pixels(result) - plain).max() > 8
    info = result.images[0].infotext
    title = controlnets.find("tiny_sd1_canny").title
    assert f'ControlNet 0: "Module: none, Model: {title}, Weight: 1.0, Resize Mode: Crop and Resize' in info
    assert "Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced" in info


def test_weight_zero_and_disabled_give_exactly_the_plain_image(tiny_sd1_model, controlnets, plain):
    assert np.array_equal(pixels(run(tiny_sd1_model, controlnets, [unit(weight=0.0)])), plain)
    assert np.array_equal(pixels(run(tiny_sd1_model, controlnets, [unit(enabled=False)])), plain)


def test_control_modes_differ(tiny_sd1_model, controlnets):
    images = [pixels(run(tiny_sd1_model, controlnets, [unit(control_mode=mode)])) for mode in ControlMode]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(images[i] - images[j]).max() > 0


class Recorder:
    """An add-on after ControlNet's that sees what residuals each U-Net call received."""

    def __init__(self):
        self.calls: list[tuple[int, torch.Tensor | None]] = []

    def before_unet(self, call: UNetCall) -> None:
        mid = call.mid_block_additional_residual
        self.calls.append((call.step, None if mid is None else mid.detach().clone()))

    def wrap_attention(self, name, processor):
        return None


def test_guidance_window_and_modes_act_on_the_right_steps_and_rows(tiny_sd1_model, controlnets):
    recorder = Recorder()
    hooks = EngineHooks(unet_addons=[recorder])
    run(tiny_sd1_model, controlnets, [unit(guidance_start=0.3, guidance_end=0.7)], hooks=hooks, steps=4)
    acted = [step for step, mid in recorder.calls if mid is not None]
    assert acted == [2]  # 2/4 = 0.5 lies in the window; 0, 0.25 and 0.75 do not

    recorder.calls.clear()
    run(tiny_sd1_model, controlnets, [unit(control_mode=ControlMode.CONTROL)], hooks=hooks, steps=1)
    mid = recorder.calls[0][1]
    assert mid.shape[0] == 2  # uncond row first, then cond
    assert torch.count_nonzero(mid[0]) == 0 and torch.count_nonzero(mid[1]) > 0


def test_soft_weights_of_my_prompt_is_more_important(tiny_sd1_model, controlnets):
    """Residual i of n gets weight * 0.825 ** (12 - i): the mid one (i = n - 1) is the largest."""
    seen = {}

    class Down(Recorder):
        def before_unet(self, call):
            seen[len(seen)] = [d.detach().clone() for d in call.down_block_additional_residuals]

    hooks = EngineHooks(unet_addons=[Down()])
    run(tiny_sd1_model, controlnets, [unit()], hooks=hooks, steps=1)
    run(tiny_sd1_model, controlnets, [unit(control_mode=ControlMode.PROMPT)], hooks=hooks, steps=1)
    balanced, soft = seen[0], seen[1]
    for i, (b, s) in enumerate(zip(balanced, soft, strict=True)):
        torch.testing.assert_close(s, b * 0.825 ** (12 - i))


def test_two_units_sum_and_differ_from_each_alone(tiny_sd1_model, controlnets):
    one = pixels(run(tiny_sd1_model, controlnets, [unit()]))
    other = pixels(run(tiny_sd1_model, controlnets, [unit("tiny_sd1_depth")]))
    both = pixels(run(tiny_sd1_model, controlnets, [unit(), unit("tiny_sd1_depth")]))
    assert np.abs(both - one).max() > 0 and np.abs(both - other).max() > 0
    assert controlnets.cache.loads <= 3  # each file loaded once for all these jobs (+ the adapter elsewhere)


def test_t2i_adapter_changes_the_image(tiny_sd1_model, controlnets, plain):
    result = run(tiny_sd1_model, controlnets, [unit("t2iadapter_tiny_sd1")])
    assert np.abs(pixels(result) - plain).max() > 0


def test_resize_modes_and_pixel_perfect_change_the_map(tiny_sd1_model, controlnets):
    wide = Image.new("RGB", (128, 32), "black")
    ImageDraw.Draw(wide).rectangle([0, 0, 20, 31], fill="white")
    images = [
        pixels(run(tiny_sd1_model, controlnets, [unit(images=(ControlImage(wide),), resize_mode=mode)]))
        for mode in ResizeMode
    ]
    assert np.abs(images[0] - images[1]).max() > 0 and np.abs(images[1] - images[2]).max() > 0
    # pixel perfect: the preprocessor resolution maps the image 1:1 onto 64x64 (cover: 32 * 2, fit: 32 / 2)
    for mode, resolution in ((ResizeMode.CROP_AND_RESIZE, 64), (ResizeMode.RESIZE_AND_FILL, 16)):
        perfect = unit(module="canny", images=(ControlImage(wide),), resize_mode=mode, pixel_perfect=True)
        info = run(tiny_sd1_model, controlnets, [perfect], steps=1).images[0].infotext
        assert f"Processor Res: {resolution}," in info and "Pixel Perfect: True" in info


def test_img2img_unit_without_image_uses_the_init_image(tiny_sd1_model, controlnets):
    init = square()
    changes = dict(request_type=Img2ImgRequest, init_images=[init], denoising_strength=0.6)
    implicit = pixels(run(tiny_sd1_model, controlnets, [unit(images=())], **changes))
    explicit = pixels(run(tiny_sd1_model, controlnets, [unit(images=(ControlImage(init),))], **changes))
    plain = pixels(run(tiny_sd1_model, controlnets, **changes))
    assert np.array_equal(implicit, explicit) and np.abs(implicit - plain).max() > 0


def test_a_batch_of_control_images_one_per_image(tiny_sd1_model, controlnets):
    maps = (ControlImage(square()), ControlImage(Image.new("RGB", (SIZE, SIZE), "white")))
    batch = run(tiny_sd1_model, controlnets, [unit(images=maps)], batch_size=2, seed=7, subseed=1)
    first = run(tiny_sd1_model, controlnets, [unit(images=maps[:1])], batch_size=2, seed=7, subseed=1)
    a, b = (np.asarray(i.image, dtype=np.int16) for i in batch.images)
    a1, b1 = (np.asarray(i.image, dtype=np.int16) for i in first.images)
    assert np.array_equal(a, a1) and not np.array_equal(b, b1)


def test_hires_option_low_res_only_skips_the_second_pass(tiny_sd1_model, controlnets):
    from sdwebui.engine.hires import HiresFix

    recorder = Recorder()

    class Passes(Recorder):
        def before_unet(self, call):
            recorder.calls.append((call.pass_index, call.mid_block_additional_residual))

    hires = HiresFix(hr_scale=2.0, hr_second_pass_steps=1, denoising_strength=0.5)
    run(
        tiny_sd1_model,
        controlnets,
        [unit(hr_option=HiResOption.LOW_RES_ONLY)],
        hooks=EngineHooks(unet_addons=[Passes()]),
        steps=1,
        hires=hires,
    )
    acted = {(p, mid is not None) for p, mid in recorder.calls}
    assert acted == {(0, True), (1, False)}


def test_sd1_controlnet_on_sdxl_is_a_request_error(tiny_sdxl_model, controlnets):
    with pytest.raises(RequestError) as info:
        run(tiny_sdxl_model, controlnets, [unit()])
    assert info.value.field == "alwayson_scripts.controlnet.args[0].model"
    assert "SD 1.x" in str(info.value) and "SDXL" in str(info.value)


def test_sdxl_controlnet_on_sdxl(tiny_sdxl_model, controlnets):
    plain = pixels(run(tiny_sdxl_model, controlnets))
    assert np.abs(pixels(run(tiny_sdxl_model, controlnets, [unit("tiny_sdxl_canny")])) - plain).max() > 0


def test_sdxl_t2i_adapter_acts_on_sdxl_and_is_refused_on_sd1(tiny_sdxl_model, tiny_sd1_model, controlnets):
    assert controlnets.find("t2iadapter_tiny_sdxl").layout.base == "sdxl"
    seen: list[list[tuple[int, ...]]] = []

    class Features(Recorder):
        def before_unet(self, call: UNetCall) -> None:
            seen.append([tuple(f.shape) for f in call.down_intrablock_additional_residuals or ()])

    plain = pixels(run(tiny_sdxl_model, controlnets))
    hooks = EngineHooks(unet_addons=[Features()])
    adapted = pixels(run(tiny_sdxl_model, controlnets, [unit("t2iadapter_tiny_sdxl")], hooks=hooks))
    assert np.abs(adapted - plain).max() > 8
    # 64 px: latent 8x8; levels at 1/16, 1/16 and 1/32 of the image, uncond and cond rows
    assert seen[0] == [(2, 32, 4, 4), (2, 64, 4, 4), (2, 64, 2, 2)]
    soft = pixels(
        run(tiny_sdxl_model, controlnets, [unit("t2iadapter_tiny_sdxl", control_mode=ControlMode.PROMPT)])
    )
    assert np.abs(soft - adapted).max() > 0
    assert np.array_equal(
        pixels(run(tiny_sdxl_model, controlnets, [unit("t2iadapter_tiny_sdxl", weight=0.0)])), plain
    )
    with pytest.raises(RequestError, match="SDXL"):
        run(tiny_sd1_model, controlnets, [unit("t2iadapter_tiny_sdxl")])


def test_union_controlnet_takes_its_control_type(tiny_sdxl_model, controlnets):
    def union(**changes):
        return pixels(run(tiny_sdxl_model, controlnets, [unit("tiny_sdxl_union", **changes)]))

    assert not np.array_equal(union(union_control_type="Depth"), union(union_control_type="Hard Edge"))
    assert np.array_equal(union(module="canny"), union(module="canny", union_control_type="Hard Edge"))
    with pytest.raises(RequestError) as info:
        union(union_control_type="Sketch")
    assert info.value.field == "alwayson_scripts.controlnet.args[0].union_control_type"


def test_unit_without_image_in_txt2img_names_the_field(tiny_sd1_model, controlnets):
    with pytest.raises(RequestError) as info:
        run(tiny_sd1_model, controlnets, [dataclasses.replace(unit(), images=())])
    assert info.value.field == "alwayson_scripts.controlnet.args[0].image"


def test_loaded_layouts_equal_the_source_weights(tmp_path):
    net = tiny_controlnet("sd1")
    for path in (tmp_path / "a.pth", tmp_path / "b.safetensors"):
        write_ldm_controlnet(net, "sd1", path)
    write_diffusers_file(net, tmp_path / "c.safetensors", sidecar_of(net))
    write_controlnet_dir(net, tmp_path / "d")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    library = ControlNetLibrary([tmp_path])
    store = ControlNets(library)
    want = net.state_dict()
    for name in "abcd":
        got = store.get(name, torch.device("cpu"), torch.float32).module.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    adapter = tiny_t2i_adapter()
    write_original_t2i(adapter, tmp_path / "t2iadapter_orig.pth")
    library.refresh()
    got = store.get("t2iadapter_orig", torch.device("cpu"), torch.float32).module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in adapter.state_dict().items())
    junk = next(e for e in library.entries() if e.name == "junk")
    assert not junk.usable and "safetensors" in junk.error
    assert [t.split(" [")[0] for t in library.titles()] == ["a", "b", "c", "d", "t2iadapter_orig"]
    assert all(len(t.split(" [")[1]) == 9 for t in library.titles())  # 8 hex + "]"


def test_ip_adapter_and_reference_units_run_through_the_request(tiny_sd1_model, tmp_path, plain):
    """The engine's ControlNet step builds cn-extra's add-ons from the units: an IP-Adapter file listed in
    models/ControlNet (with its encoder from models/clip_vision) and a model-free reference_only unit."""
    from tests.ip_adapter_fixtures import write_clip_vision, write_ip_adapter

    folder, clip = tmp_path / "ControlNet", tmp_path / "clip_vision"
    folder.mkdir()
    write_ip_adapter(folder / "ip-adapter_sd15.safetensors", tiny_sd1_model.unet)
    write_clip_vision(clip, "clip_h")
    store = ControlNets(ControlNetLibrary([folder]), clip_vision_dir=clip)
    assert store.find("ip-adapter_sd15").layout.kind == "ip_adapter"
    ip = unit("ip-adapter_sd15", module="ip-adapter_clip_h")
    result = run(tiny_sd1_model, store, [ip])
    assert np.abs(pixels(result) - plain).max() > 0
    assert 'ControlNet 0: "Module: ip-adapter_clip_h, Model: ip-adapter_sd15 [' in result.images[0].infotext
    reference = run(tiny_sd1_model, store, [unit("None", module="reference_only")])
    assert np.abs(pixels(reference) - plain).max() > 0
    assert 'ControlNet 0: "Module: reference_only, Model: None' in reference.images[0].infotext


def test_canny_gets_soft_weights_in_the_hires_pass_whatever_the_mode(tiny_sd1_model, controlnets):
    from sdwebui.engine.hires import HiresFix

    seen: dict[str, list[torch.Tensor]] = {}

    class Second(Recorder):
        def __init__(self, key):
            self.key = key

        def before_unet(self, call):
            if call.pass_index == 1:
                seen[self.key] = [d.detach().clone() for d in call.down_block_additional_residuals]

    hires = HiresFix(hr_scale=2.0, hr_second_pass_steps=1, denoising_strength=0.5)
    for mode in (ControlMode.BALANCED, ControlMode.PROMPT):
        hooks = EngineHooks(unet_addons=[Second(mode.name)])
        run(
            tiny_sd1_model,
            controlnets,
            [unit(module="canny", control_mode=mode, hr_option=HiResOption.HIGH_RES_ONLY)],
            hooks=hooks,
            steps=1,
            hires=hires,
        )
    for balanced, prompt in zip(seen["BALANCED"], seen["PROMPT"], strict=True):
        torch.testing.assert_close(balanced, prompt)


class X0Recorder:
    """An add-on after ControlNet's: the predicted x0 of each U-Net call once the units' fixes are applied."""

    def __init__(self):
        self.x0: list[torch.Tensor] = []

    def before_unet(self, call: UNetCall) -> None:
        pass

    def wrap_attention(self, name, processor):
        return None

    def after_unet(self, call: UNetCall, output: torch.Tensor) -> torch.Tensor:
        self.x0.append(call.prediction.to_x0(call.x[:, : output.shape[1]].float(), output.float()))
        return output


def _last_x0(model, controlnets, units) -> torch.Tensor:
    recorder = X0Recorder()
    run(model, controlnets, units, hooks=EngineHooks(unet_addons=[recorder]))
    return recorder.x0[-1]


def _encoded(model, image: Image.Image) -> torch.Tensor:
    from sdwebui.engine import vae

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    return vae.encode(model, pixels)


def test_tile_colorfix_gives_x0_the_control_images_low_frequencies(tiny_sd1_model, controlnets):
    from sdwebui.engine.controlnet.preprocessors.colorfix import box_blur

    gaps = {}
    for colour in ("red", "blue"):
        image = Image.new("RGB", (SIZE, SIZE), colour)
        low = box_blur(_encoded(tiny_sd1_model, image), 3)
        for module in ("tile_resample", "tile_colorfix"):
            x0 = _last_x0(
                tiny_sd1_model,
                controlnets,
                [unit(module=module, threshold_a=3, images=(ControlImage(image),))],
            )
            # the per-channel mean: the lowest frequency, what colorfix takes from the control image
            gaps[colour, module] = (box_blur(x0, 3).mean((2, 3)) - low.mean((2, 3))).abs().max().item()
    for colour in ("red", "blue"):
        assert gaps[colour, "tile_colorfix"] < 0.25 * gaps[colour, "tile_resample"], gaps


def test_inpaint_only_keeps_the_unit_images_x0_outside_the_mask(tiny_sd1_model, controlnets):
    image = Image.new("RGB", (SIZE, SIZE), "green")
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle([24, 24, 39, 39], fill=255)
    x0 = _last_x0(
        tiny_sd1_model, controlnets, [unit(module="inpaint_only", images=(ControlImage(image, mask),))]
    )
    origin = _encoded(tiny_sd1_model, image)
    # latent pixels 0..1 and 6..7 lie outside the max-pooled mask (10 wide, stride 8): the unit image's x0
    outside = torch.ones(SIZE // 8, SIZE // 8, dtype=torch.bool)
    outside[2:6, 2:6] = False
    assert torch.allclose(x0[:, :, outside], origin.expand_as(x0)[:, :, outside], atol=1e-4)
    assert (x0[:, :, 3:5, 3:5] - origin[:, :, 3:5, 3:5]).abs().max() > 1e-2


def test_low_vram_keeps_the_model_off_the_device_except_while_its_unit_runs(
    tiny_sd1_model, controlnets, plain
):
    from sdwebui.engine.memory.placement import using_mover
    from tests.test_memory import HOST, FakeDeviceMover

    module = controlnets.get("tiny_sd1_canny", tiny_sd1_model.device, tiny_sd1_model.dtype).module
    seen: list[torch.device] = []

    class Where(Recorder):
        def before_unet(self, call: UNetCall) -> None:  # after ControlNet's: where its model is between calls
            seen.append(mover.where(module))

    mover = FakeDeviceMover()
    hooks = EngineHooks(unet_addons=[Where()])
    with using_mover(mover):
        low = pixels(
            run(tiny_sd1_model, controlnets, [unit(low_vram=True, guidance_end=0.5)], hooks=hooks, steps=4)
        )
    assert seen == [HOST] * 4  # parked first, back to the host after each call
    # parked once, then on and off again for each of the 3 steps of the window (0, 0.25, 0.5)
    assert mover.count(module) == 1 + 2 * 3
    assert mover.where(module) == HOST
    seen.clear()
    with using_mover(mover):  # without low_vram it comes back once and stays
        normal = pixels(run(tiny_sd1_model, controlnets, [unit(guidance_end=0.5)], hooks=hooks, steps=4))
    assert mover.count(module) == 1 + 2 * 3 + 1 and seen[-1] == tiny_sd1_model.device
    assert np.array_equal(low, normal)


def test_a_model_based_annotator_runs_in_the_job_at_the_pixel_perfect_resolution(
    tiny_sd1_model, tmp_path, plain
):
    """A unit's lineart module reads its file from the store's annotator folder; its map is the detected map."""
    from sdwebui.engine.controlnet.preprocessors import PreprocessParams, lineart, run_preprocessor

    folder, annotators = tmp_path / "ControlNet", tmp_path / "ControlNetAnnotators"
    write_ldm_controlnet(tiny_controlnet("sd1"), "sd1", folder / "tiny_sd1_lineart.pth")
    (annotators / "lineart").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(lineart.LineGenerator(width=8, residual_blocks=1).state_dict(), annotators / lineart.REALISTIC)
    store = ControlNets(ControlNetLibrary([folder]), annotator_dir=annotators)
    wide = Image.new("RGB", (128, 64), "black")
    ImageDraw.Draw(wide).rectangle([40, 10, 90, 50], fill="white")
    line = unit(
        "tiny_sd1_lineart", module="lineart_realistic", images=(ControlImage(wide),), pixel_perfect=True
    )
    result = run(tiny_sd1_model, store, [line])
    assert (
        "Module: lineart_realistic" in result.images[0].infotext
        and "Processor Res: 64," in result.images[0].infotext
    )
    expected = run_preprocessor("lineart", wide, PreprocessParams(resolution=64), annotator_dir=annotators)
    assert np.array_equal(np.asarray(result.extra_images[0]), np.asarray(expected))
    assert np.abs(pixels(result) - plain).max() > 0
