from pathlib import Path

import pytest
import torch

from modules.previews import (
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
from modules.sd_models.model import ModelFamily


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
    from modules.default_model import dataset
    from modules.engine import vae
    from modules.sd_models.discovery import checkpoint_info
    from modules.sd_models.loader import load_checkpoint

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
    from modules.engine.context import StepInfo
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
    from modules.options import default_templates

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
