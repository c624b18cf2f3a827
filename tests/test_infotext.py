import io
import random
import re

import pytest
from PIL import Image

from sdwebui.engine.infotext_fields import parse_infotext
from sdwebui.outputs.infotext import create_infotext, exif_with, png_info_with, read_infotext

BASIC = {
    "Steps": 20,
    "Sampler": "Euler a",
    "Schedule type": "Karras",
    "CFG scale": 7,
    "Seed": 1,
    "Size": "512x512",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Version": "v1.10.1",
}


def test_create_exact_a1111_format():
    text = create_infotext("a cat", "blurry", BASIC)
    assert text == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )


def test_create_omits_empty_negative_and_none_values_and_quotes():
    params = {
        "Steps": 20,
        "CFG scale": 7.0,
        "Denoising strength": None,
        "Lora hashes": "add_detail: 7c6bad76eb54, lcm: 47a8d4e5b7",
        "Tiling": "Tiling",  # A1111 writes entries whose value equals the key bare
        "Note": 'he said "hi", twice',
        "Multi": "line one\nline two",
    }
    text = create_infotext("p", "", params)
    assert text == (
        "p\nSteps: 20, CFG scale: 7.0, "
        'Lora hashes: "add_detail: 7c6bad76eb54, lcm: 47a8d4e5b7", Tiling, '
        'Note: "he said \\"hi\\", twice", Multi: "line one\\nline two"'
    )
    assert "Negative prompt" not in text


def test_non_ascii_is_not_escaped():
    assert create_infotext("猫", "", {"A key": "ü, ß", "B": 1, "C": 2}).endswith('A key: "ü, ß", B: 1, C: 2')


def _expected(prompt, negative, params):
    expected = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in params.items():
        match = re.fullmatch(r"(\d+)x(\d+)", str(value))
        if match:
            expected[f"{key}-1"], expected[f"{key}-2"] = match.groups()
        else:
            expected[key] = str(value)
    return expected


WORDS = [
    "cat",
    "(masterpiece:1.2)",
    "[dog:cat:0.5]",
    "a, b",
    "x: y",
    'say "hi"',
    "ü",
    "猫",
    "<lora:add:0.7>",
    "\\(x\\)",
]
KEYS = [
    "Steps",
    "Sampler",
    "CFG scale",
    "Seed",
    "Size",
    "Model hash",
    "Lora hashes",
    "Hires upscale",
    "ADetailer model",
]


def _random_text(rnd, lines=1):
    return "\n".join(" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 5))) for _ in range(lines))


@pytest.mark.parametrize("seed", range(60))
def test_parse_create_round_trip(seed):
    rnd = random.Random(seed)
    prompt = _random_text(rnd, rnd.randint(1, 3))
    negative = _random_text(rnd, rnd.randint(1, 2)) if rnd.random() < 0.7 else ""
    keys = rnd.sample(KEYS, rnd.randint(3, len(KEYS)))
    params = {}
    for key in keys:
        if key == "Size":
            params[key] = f"{rnd.randrange(64, 2049, 8)}x{rnd.randrange(64, 2049, 8)}"
        elif rnd.random() < 0.5:
            params[key] = str(rnd.randint(0, 2**32))
        else:
            params[key] = _random_text(rnd, rnd.randint(1, 2))
    text = create_infotext(prompt, negative, params)
    assert parse_infotext(text, fill_defaults=False) == _expected(prompt, negative, params)


def test_round_trip_value_starting_with_quote():
    params = {"Steps": "20", "Quoted": '"only quotes"', "Seed": "1"}
    assert parse_infotext(create_infotext("p", "", params), fill_defaults=False)["Quoted"] == '"only quotes"'


REAL_SDXL = """masterpiece, best quality, 1girl, (red hair:1.2), looking at viewer,
cinematic lighting, <lora:add_detail:0.6>
Negative prompt: (worst quality, low quality:1.4), bad hands,
watermark
Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3521963851, Size: 832x1216, \
Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Denoising strength: 0.35, Clip skip: 2, \
Hires upscale: 1.5, Hires steps: 15, Hires upscaler: 4x-UltraSharp, \
Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be15", \
Version: v1.10.1"""


def test_parse_real_sdxl_hires_infotext():
    res = parse_infotext(REAL_SDXL)
    assert res["Prompt"] == (
        "masterpiece, best quality, 1girl, (red hair:1.2), looking at viewer,\ncinematic lighting, <lora:add_detail:0.6>"
    )
    assert res["Negative prompt"] == "(worst quality, low quality:1.4), bad hands,\nwatermark"
    assert res["Steps"] == "30"
    assert res["Sampler"] == "DPM++ 2M" and res["Schedule type"] == "Karras"
    assert res["CFG scale"] == "6.5"
    assert res["Seed"] == "3521963851"
    assert (res["Size-1"], res["Size-2"]) == ("832", "1216")
    assert res["Clip skip"] == "2"
    assert res["Hires upscale"] == "1.5" and res["Hires upscaler"] == "4x-UltraSharp"
    assert res["Hires resize-1"] == 0  # A1111's default when no explicit hires size
    assert res["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert res["TI hashes"] == "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be15"
    assert res["Version"] == "v1.10.1"
    assert res["RNG"] == "GPU"


REAL_LEGACY = """a photograph of an astronaut riding a horse
Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: 6ce0161689, \
Model: v1-5-pruned-emaonly, Hires resize: 1024x1536, Hires upscaler: Latent, Version: v1.6.0"""


def test_parse_legacy_combined_sampler_and_defaults():
    res = parse_infotext(REAL_LEGACY)
    assert res["Sampler"] == "DPM++ 2M"
    assert res["Schedule type"] == "Karras"
    assert res["Negative prompt"] == ""
    assert res["Clip skip"] == "1"
    assert (res["Hires resize-1"], res["Hires resize-2"]) == ("1024", "1536")
    raw = parse_infotext(REAL_LEGACY, fill_defaults=False)
    assert raw["Sampler"] == "DPM++ 2M Karras" and "Clip skip" not in raw and "Schedule type" not in raw


def test_parse_keeps_unknown_sampler_and_alias():
    text = "p\nSteps: 1, Sampler: Restart Karras 2, Seed: 5"
    assert parse_infotext(text)["Sampler"] == "Restart Karras 2"
    assert parse_infotext("p\nSteps: 1, Sampler: k_euler_a, Seed: 5")["Sampler"] == "k_euler_a"


def test_parse_old_hires_first_pass_size():
    text = "p\nSteps: 20, Sampler: Euler, Seed: 1, Size: 1024x1024, First pass size: 0x0"
    res = parse_infotext(text)
    assert (res["Size-1"], res["Size-2"]) == (512, 512)
    assert (res["Hires resize-1"], res["Hires resize-2"]) == (1024, 1024)


def test_parse_prompt_only_and_few_params():
    res = parse_infotext("just a prompt\nSteps: 20")  # fewer than 3 params: A1111 treats it as prompt text
    assert res["Prompt"] == "just a prompt\nSteps: 20"
    assert parse_infotext("  ")["Prompt"] == ""


def test_parse_hypernet_appended_to_prompt():
    res = parse_infotext("p\nSteps: 20, Seed: 1, Hypernet: anime, Hypernet strength: 0.8")
    assert res["Prompt"] == "p<hypernet:anime:0.8>"


def _saved(image, fmt, **kwargs):
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    buf.seek(0)
    return Image.open(buf)


def test_png_chunk_round_trip_including_unicode():
    text = create_infotext("猫, ü\nline 2", "bad", BASIC)
    image = _saved(Image.new("RGB", (8, 8)), "PNG", pnginfo=png_info_with(text))
    assert image.info["parameters"] == text
    assert read_infotext(image) == text


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_round_trip(fmt):
    text = create_infotext("a cat, 猫", "bad", BASIC)
    image = _saved(Image.new("RGB", (8, 8)), fmt, exif=exif_with(text))
    assert read_infotext(image) == text


def test_read_infotext_none_and_jpeg_comment():
    assert read_infotext(_saved(Image.new("RGB", (8, 8)), "PNG")) is None
    assert read_infotext(_saved(Image.new("RGB", (8, 8)), "JPEG", comment=b"p\nSteps: 1")) == "p\nSteps: 1"
