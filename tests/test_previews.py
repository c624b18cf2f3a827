import pytest
import torch

from modules.previews import latent_preview, latent_to_rgb
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
