from pathlib import Path

import numpy as np
import pytest
import torch

from sdwebui.engine.previews import (
    METHOD_CHEAP,
    PREVIEW_METHODS,
    UNAVAILABLE_METHODS,
    LivePreviewer,
    fit_latent_rgb,
    has_published_map,
    latent_preview,
    latent_to_rgb,
    published_map,
)
from sdwebui.models.model import ModelFamily


def _expected(rgb):
    return tuple(round((c + 1) / 2 * 255) for c in rgb)


def test_size_and_mode():
    image = latent_preview(torch.zeros(4, 8, 12), ModelFamily.SD1)
    assert image.mode == "RGB"
    assert image.size == (12, 8)
    assert image.getpixel((0, 0)) == (128, 128, 128)
    assert latent_preview(torch.zeros(1, 4, 8, 12), "sd2", size=(96, 64)).size == (96, 64)


@pytest.mark.parametrize(
    "family,expected",
    [
        (ModelFamily.SD1, (0.298, 0.207, 0.208)),
        (ModelFamily.SD2_V, (0.298, 0.207, 0.208)),
        (ModelFamily.SDXL, (0.3448, 0.4168, 0.4395)),
        ("sdxl-refiner", (0.3448, 0.4168, 0.4395)),
    ],
)
def test_first_channel_maps_to_its_coefficients(family, expected):
    latents = torch.zeros(4, 2, 2)
    latents[0] = 1.0
    pixel = latent_preview(latents, family).getpixel((1, 1))
    assert pixel == pytest.approx(_expected(expected), abs=1)


def test_known_sd_latent_colours():
    # a typical "sky blue" direction: channel 3 strongly negative gives blue-dominant output
    latents = torch.zeros(4, 1, 1)
    latents[3] = -1.0
    r, g, b = latent_preview(latents, ModelFamily.SD1).getpixel((0, 0))
    assert b > g > r
    assert (r, g, b) == pytest.approx(_expected((0.184, 0.271, 0.473)), abs=1)


def test_other_channel_counts_and_clamping():
    latents = torch.full((16, 3, 3), 5.0)
    assert latent_preview(latents, "sd1").getpixel((0, 0)) == (255, 255, 255)
    single = latent_to_rgb(torch.full((1, 2, 2), -1.0), "sd1")
    assert single.shape == (3, 2, 2) and torch.all(single == 0)
    nan = latent_to_rgb(torch.full((4, 2, 2), float("nan")), "sd1")
    assert torch.all(nan == 0.5)


def test_half_precision_input():
    assert latent_preview(torch.zeros(4, 4, 4, dtype=torch.float16), "sdxl").size == (4, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="expects \\[C, H, W\\]"):
        latent_preview(torch.zeros(8, 8), "sd1")
    with pytest.raises(ValueError, match="unknown model family 'flux'"):
        latent_preview(torch.zeros(4, 8, 8), "flux")


# --- per-model maps and preview methods (show_progress_type) ---

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default" / "shapes64.safetensors"


def _mean_error(rgb_map, model, latents, decoded) -> float:
    errors = [
        (rgb_map.apply(lat) - full).abs().mean().item() for lat, full in zip(latents, decoded, strict=True)
    ]
    return sum(errors) / len(errors)


def test_default_model_previews_get_colours_fitted_from_its_vae():
    """The embedded model's VAE is not SD's: SD's published map gave it wrong colours; the fitted one
    follows what its VAE decodes."""
    from sdwebui.engine import vae
    from sdwebui.models.default_model import dataset
    from sdwebui.models.discovery import checkpoint_info
    from sdwebui.models.loader import load_checkpoint

    model = load_checkpoint(checkpoint_info(DEFAULT_MODEL))
    assert model.family == ModelFamily.SD1 and not has_published_map(model)
    previewer = LivePreviewer()
    fitted = previewer.rgb_map(model)
    assert fitted.source.startswith("fitted") and previewer.rgb_map(model) is fitted  # fitted once
    images = [dataset.sample(7, index)[0] for index in range(16)]  # scenes like those the model draws
    latents = vae.encode(model, vae.pil_to_pixels(images))
    decoded = torch.nn.functional.avg_pool2d(vae.decode(model, latents), model.vae_scale_factor)
    fitted_error = _mean_error(fitted, model, latents, decoded)
    published_error = _mean_error(published_map("sd1"), model, latents, decoded)
    assert fitted_error < 0.2 and fitted_error < published_error / 2, (fitted_error, published_error)


def test_preview_methods_cheap_and_full():
    from sdwebui.engine.context import StepInfo
    from tests.tiny_models import tiny_loaded_model

    model = tiny_loaded_model("sd1")
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    info = StepInfo(0, 1, 1, 2, latents=latents)
    method = ["Approx cheap"]
    previewer = LivePreviewer(lambda: method[0])
    cheap = previewer(model, info)
    assert cheap.size == (8, 8)  # latent resolution
    expected = latent_preview(latents[0], "sd1", rgb_map=previewer.rgb_map(model))
    assert list(cheap.getdata()) == list(expected.getdata())
    method[0] = "Full"
    full = previewer(model, info)
    scale = model.vae_scale_factor
    assert full.size == (8 * scale, 8 * scale)  # the VAE's decode of the first image
    method[0] = "TAESD"
    with pytest.raises(ValueError, match="show_progress_type 'TAESD' is not available: needs the TAESD"):
        previewer(model, info)
    assert previewer(model, StepInfo(0, 1, 1, 2)) is None


def test_the_setting_offers_the_methods_this_build_has():
    from sdwebui.config.options import default_templates

    info = default_templates()["show_progress_type"]
    assert info.default == METHOD_CHEAP and list(info.choices) == list(PREVIEW_METHODS)
    assert not set(UNAVAILABLE_METHODS) & set(info.choices)


def test_fit_recovers_a_linear_decoder():
    """A decoder that is exactly linear per latent pixel is recovered by the least squares."""
    weights = torch.tensor([[0.5, -0.2, 0.1], [0.0, 0.4, -0.3], [0.2, 0.2, 0.2], [-0.1, 0.0, 0.6]])
    bias = torch.tensor([0.05, -0.1, 0.2])

    def encode(pixels):  # 4 independent channels per latent pixel: R, G, B, R*G
        rgb = torch.nn.functional.avg_pool2d(pixels, 2)
        return torch.cat([rgb, rgb[:, :1] * rgb[:, 1:2]], dim=1)

    def decode(latents):
        rgb = torch.einsum("bchw,cr->brhw", latents, weights) + bias[None, :, None, None]
        return (torch.nn.functional.interpolate(rgb, scale_factor=2) + 1) / 2

    fitted = fit_latent_rgb(encode, decode, scale_factor=2)
    assert torch.tensor(fitted.weights) == pytest.approx(weights, abs=1e-3)
    assert torch.tensor(fitted.bias) == pytest.approx(bias, abs=1e-3)


# --- TAESD (A1111's models/VAE-approx/taesd_decoder.*) ---


class _Clamp(torch.nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class _Block(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        conv = torch.nn.Conv2d
        relu = torch.nn.ReLU
        self.conv = torch.nn.Sequential(
            conv(channels, channels, 3, padding=1), relu(), conv(channels, channels, 3, padding=1), relu(),
            conv(channels, channels, 3, padding=1),
        )  # fmt: skip
        self.skip = torch.nn.Identity()
        self.fuse = torch.nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


def _a1111_taesd_decoder(seed: int = 0) -> torch.nn.Sequential:
    """A1111's sd_vae_taesd.decoder(), written out independently of sdwebui.models.taesd, random weights."""
    torch.manual_seed(seed)

    def conv(n_in, n_out, **kwargs):
        return torch.nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)

    layers = [_Clamp(), conv(4, 64), torch.nn.ReLU()]
    for _ in range(3):
        layers += [
            _Block(64),
            _Block(64),
            _Block(64),
            torch.nn.Upsample(scale_factor=2),
            conv(64, 64, bias=False),
        ]
    layers += [_Block(64), conv(64, 3)]
    return torch.nn.Sequential(*layers).eval()


@pytest.fixture
def taesd_models_dir(tmp_path):
    from safetensors.torch import save_file

    reference = _a1111_taesd_decoder()
    folder = tmp_path / "models" / "VAE-approx"
    folder.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()}, folder / "taesd_decoder.safetensors"
    )
    return tmp_path / "models", reference


def test_a1111_taesd_keys_map_onto_autoencoder_tiny():
    from diffusers import AutoencoderTiny

    from sdwebui.models.taesd import to_diffusers_keys

    reference = _a1111_taesd_decoder().state_dict()
    assert "1.weight" in reference and "3.conv.0.weight" in reference
    mapped = {k: tuple(v.shape) for k, v in to_diffusers_keys(reference, Path("x")).items()}
    assert mapped == {k: tuple(v.shape) for k, v in AutoencoderTiny().decoder.state_dict().items()}


def test_taesd_preview_is_the_decoders_output(taesd_models_dir):
    from sdwebui.engine.context import StepInfo
    from sdwebui.engine.previews import METHOD_TAESD, offered_methods
    from tests.tiny_models import tiny_loaded_model

    models_dir, reference = taesd_models_dir
    assert offered_methods(models_dir) == (*PREVIEW_METHODS, METHOD_TAESD)
    latents = torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(1)) * 2
    preview = LivePreviewer(lambda: "TAESD", models_dir)(
        tiny_loaded_model("sd1"), StepInfo(0, 1, 1, 2, latents)
    )
    with torch.no_grad():  # A1111: decoder(latents) * 2 - 1, shown as (x + 1) / 2: the raw output, clamped
        expected = (reference(latents[:1])[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
    assert preview.size == (40, 48)  # 8x the latents, as the VAE
    difference = np.abs(np.asarray(preview, dtype=np.float64) - expected)
    assert difference.max() <= 1 and difference.mean() < 0.05
    assert expected.std() > 5  # a real image, not flat


def test_taesd_from_a_pth_through_the_safe_loader(tmp_path):
    from sdwebui.models.taesd import TaesdDecoders, TaesdError

    folder = tmp_path / "VAE-approx"
    folder.mkdir()
    reference = _a1111_taesd_decoder(seed=3)
    torch.save(reference.state_dict(), folder / "taesdxl_decoder.pth")
    latents = torch.randn(1, 4, 4, 4)
    decoded = TaesdDecoders(tmp_path).decode("sdxl", latents)
    with torch.no_grad():
        assert decoded == pytest.approx(reference(latents).clamp(0, 1), abs=1e-5)
    torch.save({"1.weight": torch.zeros(64, 4, 3, 3)}, folder / "taesdxl_decoder.pth")
    with pytest.raises(TaesdError, match=r"taesdxl_decoder\.pth: not a TAESD decoder: Missing key"):
        TaesdDecoders(tmp_path).decode("sdxl", latents)
    (folder / "taesdxl_decoder.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(TaesdError, match=r"taesdxl_decoder\.pth: refused to unpickle"):
        TaesdDecoders(tmp_path).decode("sdxl", latents)


def test_taesd_refused_without_the_familys_file(taesd_models_dir, tmp_path):
    from types import SimpleNamespace

    from sdwebui.config.options import OptionError, Options, default_templates, preview_method_option
    from sdwebui.engine.context import StepInfo
    from sdwebui.engine.previews import offered_methods

    models_dir, _ = taesd_models_dir
    info = StepInfo(0, 1, 1, 2, torch.zeros(1, 4, 4, 4))
    sdxl = SimpleNamespace(family=ModelFamily.SDXL)  # only the SD1/SD2 decoder is installed
    expected = models_dir / "VAE-approx" / "taesdxl_decoder.pth"
    with pytest.raises(
        ValueError, match=f"'TAESD' is not available: needs the TAESD decoder weights {expected}"
    ):
        LivePreviewer(lambda: "TAESD", models_dir)(sdxl, info)
    empty = tmp_path / "empty"
    assert offered_methods(empty) == PREVIEW_METHODS

    def options_for(directory):
        template = default_templates()["show_progress_type"]
        return Options({"show_progress_type": preview_method_option(template, directory)})

    options_for(models_dir).set("show_progress_type", "TAESD")
    with pytest.raises(OptionError, match="show_progress_type: must be one of"):
        options_for(empty).set("show_progress_type", "TAESD")


def test_the_app_offers_taesd_when_its_decoder_is_installed(taesd_models_dir, tmp_path):
    """build_services: the setting offers and accepts TAESD (also from config.json) only with the file."""
    import json

    from modules import cmd_args
    from sdwebui.config.options import OptionError
    from sdwebui.services import build_services

    data_dir = taesd_models_dir[0].parent
    (data_dir / "config.json").write_text(json.dumps({"show_progress_type": "TAESD"}))
    with_file = build_services(cmd_args.parse_args(["--data-dir", str(data_dir)]))
    bare = build_services(cmd_args.parse_args(["--data-dir", str(tmp_path / "bare")]))
    try:
        assert with_file.options.show_progress_type == "TAESD"
        assert "TAESD" in with_file.options.data_labels["show_progress_type"].choices
        assert "TAESD" not in bare.options.data_labels["show_progress_type"].choices
        with pytest.raises(OptionError, match="show_progress_type: must be one of"):
            bare.options.set("show_progress_type", "TAESD")
    finally:
        with_file.jobs.shutdown()
        bare.jobs.shutdown()
